//! `rivulet migrate --from DATA_DIR --to nats://…`: moves a single node's data dir into a new
//! cluster deployment (`rivulet_engine::migrate::copy_store` does the copying). The single
//! node must be stopped (its data dir is locked while it runs), and so must every node of the
//! deployment: the migration commits the metadata as the deployment's leader.
//!
//! Encrypted records need both key files: the single node's (`--from-kms-keys`) opens them,
//! and the deployment's shared one (`--kms-keys`) gets the single node's customer-managed keys
//! added, so that the copies are sealed again under the same KMS keys; streams under the
//! single node's AWS-managed key move to the deployment's own (derived from the file's
//! `managed_root`, added when missing).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use rivulet_engine::encryption::{DataKeys, KeyService};
use rivulet_engine::migrate::Reencrypt;
use rivulet_engine::storage::RecordStore;
use rivulet_log::{FileBackend, Store, StoreConfig};

use crate::config::{ServeArgs, Storage};
use crate::kms::{AWS_MANAGED_ALIAS, KeyFile, LocalKms};

/// `rivulet migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The stopped single node's data dir
    #[arg(long)]
    pub from: PathBuf,
    /// The deployment's NATS servers, comma-separated (what `serve --cluster` takes); it must
    /// hold no streams yet, and no Rivulet node may run on it
    #[arg(long)]
    pub to: String,
    /// Copies of every record and metadata key (1, 3 or 5) [default: 3]
    #[arg(long)]
    pub replicas: Option<usize>,
    /// The deployment's prefix [default: rivulet]
    #[arg(long)]
    pub nats_prefix: Option<String>,
    #[arg(long, requires = "nats_password")]
    pub nats_user: Option<String>,
    #[arg(long, requires = "nats_user")]
    pub nats_password: Option<String>,
    #[arg(long)]
    pub nats_token: Option<String>,
    #[arg(long)]
    pub nats_nkey: Option<PathBuf>,
    #[arg(long)]
    pub nats_creds: Option<PathBuf>,
    #[arg(long)]
    pub nats_tls_ca: Option<PathBuf>,
    #[arg(long, requires = "nats_tls_key")]
    pub nats_tls_cert: Option<PathBuf>,
    #[arg(long, requires = "nats_tls_cert")]
    pub nats_tls_key: Option<PathBuf>,
    /// The single node's key file (what its `serve --kms-keys` read), for encrypted records
    /// [default: the user's, as for `serve`]
    #[arg(long)]
    pub from_kms_keys: Option<PathBuf>,
    /// The deployment's key file, the one its nodes read with `--kms-keys`: needed when the
    /// data dir holds encrypted records. The single node's customer-managed keys are added to
    /// it (made when missing); give every node the result
    #[arg(long)]
    pub kms_keys: Option<PathBuf>,
    /// The region the single node served and the deployment serves [default: us-east-1]
    #[arg(long)]
    pub region: Option<String>,
}

/// [`run`], boxed ([`crate::Task`]).
pub fn run_task(args: MigrateArgs) -> crate::Task<()> {
    Box::pin(run(args))
}

/// Runs the migration and prints what it moved.
pub async fn run(args: MigrateArgs) -> anyhow::Result<()> {
    let serve = ServeArgs {
        cluster: Some(args.to),
        replicas: args.replicas,
        nats_prefix: args.nats_prefix,
        nats_user: args.nats_user,
        nats_password: args.nats_password,
        nats_token: args.nats_token,
        nats_nkey: args.nats_nkey,
        nats_creds: args.nats_creds,
        nats_tls_ca: args.nats_tls_ca,
        nats_tls_cert: args.nats_tls_cert,
        nats_tls_key: args.nats_tls_key,
        node_name: Some(format!("rivulet-migrate-{}", std::process::id())),
        region: args.region,
        ..ServeArgs::default()
    };
    let config = serve.resolve()?;
    let region = config.engine.region.clone();
    let Storage::Cluster(mut settings) = config.storage else {
        anyhow::bail!("--to names no NATS servers");
    };
    // Long enough for a deployment whose last node stopped without giving the lease back.
    settings.leader_wait = std::time::Duration::from_secs(10);
    if !args.from.is_dir() {
        anyhow::bail!("--from {}: no such data dir", args.from.display());
    }
    let backend = FileBackend::new(args.from.clone())
        .with_context(|| format!("opening {}", args.from.display()))?;
    let source: Arc<dyn RecordStore> = Store::open(Arc::new(backend), StoreConfig::default())
        .with_context(|| {
            format!(
                "opening {} (is a rivulet server still running on it?)",
                args.from.display()
            )
        })?;
    let target = rivulet_cluster::store::ClusterStore::open(&settings)
        .await
        .context("opening the deployment")?;
    if !target.is_leader() {
        target.shutdown();
        anyhow::bail!(
            "another Rivulet node ({}) leads this deployment: stop every node first",
            target.leader_node().unwrap_or_else(|| "unknown".into())
        );
    }
    let target_store: Arc<dyn RecordStore> = target.clone();
    let reencrypt = match rivulet_engine::migrate::kms_keys_used(&*source) {
        Ok(used) if used.is_empty() => Ok(None),
        Ok(used) => key_files(
            args.from_kms_keys,
            args.kms_keys,
            &region,
            used,
            (&source, &target_store),
        )
        .map(Some),
        Err(error) => Err(anyhow::anyhow!("{}", error.message)),
    };
    let copied = match reencrypt {
        Ok(reencrypt) => {
            rivulet_engine::migrate::copy_store(&*source, &*target, reencrypt.as_ref())
                .await
                .map_err(|error| anyhow::anyhow!("{}", error.message))
        }
        Err(error) => Err(error),
    };
    drop(target_store);
    target.shutdown();
    source.shutdown();
    let copied = copied?;
    println!(
        "migrated {} streams ({} shards, {} records) and {} other keys into {}",
        copied.streams, copied.shards, copied.records, copied.other_keys, settings.prefix
    );
    println!(
        "sequence numbers are the cluster's now: consumers resume from TRIM_HORIZON, not from \
         checkpointed sequence numbers; records keep their arrival times, but AT_TIMESTAMP and \
         retention count from when they were migrated"
    );
    Ok(())
}

/// The keyrings that re-seal encrypted records: the source's, over its key file, and the
/// deployment's, over its shared key file once the source's customer-managed keys are in it.
fn key_files(
    from: Option<PathBuf>,
    to: Option<PathBuf>,
    region: &str,
    used: Vec<String>,
    (source, target): (&Arc<dyn RecordStore>, &Arc<dyn RecordStore>),
) -> anyhow::Result<Reencrypt> {
    let from = from.or_else(crate::config::default_kms_keys).context(
        "the data dir holds encrypted records: give --from-kms-keys, the single node's key file",
    )?;
    let to = to.context(
        "the data dir holds encrypted records: give --kms-keys, the deployment's key file (the \
         one its nodes read with --kms-keys)",
    )?;
    if !from.is_file() {
        anyhow::bail!(
            "--from-kms-keys {}: no such key file (the data dir holds encrypted records)",
            from.display()
        );
    }
    let source_file = KeyFile::load(&from)?;
    let source_kms: Arc<dyn KeyService> = Arc::new(LocalKms::open(Some(from.clone()), region)?);
    let source_keys = DataKeys::open(source.clone(), source_kms)
        .map_err(|e| anyhow::anyhow!("loading the data dir's data keys: {}", e.message))?;
    let mut shared = KeyFile::load(&to)?;
    let added = shared.add_customer_keys(&source_file)?;
    let rooted = shared.ensure_managed_root()?;
    if added > 0 || rooted {
        shared.save(&to)?;
        println!(
            "added {added} customer-managed keys{} to {}: give every node this key file",
            if rooted { " and a managed_root" } else { "" },
            to.display()
        );
    }
    let target_kms = Arc::new(LocalKms::open_shared(to.clone(), region)?);
    let mut key_arns = std::collections::HashMap::new();
    for arn in used {
        let entry = source_file
            .keys
            .iter()
            .find(|key| key.arn() == arn)
            .with_context(|| {
                format!(
                    "the data dir's streams are encrypted under {arn}, which {} does not \
                     hold: give --from-kms-keys the key file the single node read",
                    from.display()
                )
            })?;
        let target_arn = if entry.aws_managed {
            if entry.region != region {
                anyhow::bail!(
                    "the single node's AWS-managed key {arn} is in region {}: give --region {}",
                    entry.region,
                    entry.region
                );
            }
            target_kms
                .resolve(&entry.account_id, AWS_MANAGED_ALIAS)
                .map_err(|e| anyhow::anyhow!("{}", e.message))?
        } else {
            arn.clone()
        };
        key_arns.insert(arn, target_arn);
    }
    let target_keys = DataKeys::open(target.clone(), target_kms)
        .map_err(|e| anyhow::anyhow!("loading the deployment's data keys: {}", e.message))?;
    Ok(Reencrypt {
        source: source_keys,
        target: target_keys,
        key_arns,
    })
}
