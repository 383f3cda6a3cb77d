//! `rivulet migrate --from DATA_DIR --to nats://…`: moves a single node's data dir into a new
//! cluster deployment (`rivulet_engine::migrate::copy_store` does the copying). The single
//! node must be stopped (its data dir is locked while it runs), and so must every node of the
//! deployment: the migration commits the metadata as the deployment's leader.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use rivulet_engine::storage::RecordStore;
use rivulet_log::{FileBackend, Store, StoreConfig};

use crate::config::{ServeArgs, Storage};

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
        ..ServeArgs::default()
    };
    let Storage::Cluster(mut settings) = serve.resolve()?.storage else {
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
    let copied = rivulet_engine::migrate::copy_store(&*source, &*target).await;
    target.shutdown();
    source.shutdown();
    let copied = copied.map_err(|error| anyhow::anyhow!("{}", error.message))?;
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
