//! Configuration: flags, `RIVULET_*` environment variables and a TOML file, in that order of
//! precedence, over built-in defaults. One declarative list (the `ServeArgs` struct) drives
//! `--help`, the environment names and the file's keys.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use rivulet_engine::EngineConfig;
use serde::Deserialize;

/// Largest request body accepted: a 10 MiB PutRecords in base64 plus its JSON framing.
pub const BODY_BYTES_MAX: usize = 16 * 1024 * 1024;

/// `rivulet kms`.
#[derive(Debug, Args)]
pub struct KmsArgs {
    /// The key file [default: $XDG_CONFIG_HOME/rivulet/kms-keys.toml (or ~/.config/…)]
    #[arg(long, env = "RIVULET_KMS_KEYS", global = true)]
    pub kms_keys: Option<PathBuf>,
    #[command(subcommand)]
    pub command: KmsCommand,
}

/// What `rivulet kms` does.
#[derive(Debug, Subcommand)]
pub enum KmsCommand {
    /// Make the key file if it is missing, with the root that cluster nodes derive each
    /// account's alias/aws/kinesis key from (give every node of a cluster the same file).
    Init,
    /// Make a customer-managed key (prints its id and ARN).
    CreateKey {
        #[arg(long, default_value = "000000000000")]
        account_id: String,
        #[arg(long, default_value = "us-east-1")]
        region: String,
        #[arg(long, default_value = "")]
        description: String,
        /// An alias for it, e.g. alias/orders
        #[arg(long)]
        alias: Option<String>,
    },
    /// List the keys with their state and aliases.
    ListKeys,
    /// Allow a key's use again.
    EnableKey { key: String },
    /// Refuse a key's use: encrypted streams answer KMSDisabledException.
    DisableKey { key: String },
    /// New key material for new data keys; the old material still decrypts old data.
    RotateKey { key: String },
    /// Refuse a key's use (KMSInvalidStateException) until the deletion is cancelled.
    ScheduleKeyDeletion { key: String },
    /// Undo schedule-key-deletion; the key comes back disabled, as in KMS.
    CancelKeyDeletion { key: String },
    /// Decrypt an object a channel encrypted in a bucket folder (EncryptionConfiguration),
    /// writing its plaintext to stdout.
    OpenObject { path: PathBuf },
}

/// The key file used when none is named: in the user's configuration directory, never in a
/// data directory.
pub fn default_kms_keys() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))?;
    Some(base.join("rivulet").join("kms-keys.toml"))
}

/// `rivulet serve` settings. Each is also `RIVULET_<NAME>` in the environment and `<name>` in
/// the `--config` TOML file.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeArgs {
    /// Address to serve HTTP/1.1 and h2c on [default: 127.0.0.1:4567]
    #[arg(long, env = "RIVULET_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Directory that holds the durable log and metadata [default: ./rivulet-data]
    #[arg(long, env = "RIVULET_DATA_DIR", conflicts_with = "in_memory")]
    pub data_dir: Option<PathBuf>,
    /// Cluster mode: keep records and metadata in NATS JetStream, on these comma-separated
    /// servers (`nats://host:port,…`; nats-server 2.14 or later with `sync_interval: always`),
    /// instead of a data dir [default: off]
    #[arg(long, env = "RIVULET_CLUSTER", conflicts_with_all = ["in_memory", "data_dir"])]
    pub cluster: Option<String>,
    /// Cluster mode: copies of every record and metadata key, each on its own NATS server
    /// (1, 3 or 5) [default: 3]
    #[arg(long, env = "RIVULET_REPLICAS")]
    pub replicas: Option<usize>,
    /// Cluster mode: this node's name [default: rivulet-<process id>]
    #[arg(long, env = "RIVULET_NODE_NAME")]
    pub node_name: Option<String>,
    /// Cluster mode: the prefix of every JetStream stream and subject of this deployment (letters,
    /// digits, `-` and `_`), so several share one NATS cluster [default: rivulet]
    #[arg(long, env = "RIVULET_NATS_PREFIX")]
    pub nats_prefix: Option<String>,
    /// Cluster mode: NATS user name (with --nats-password)
    #[arg(long, env = "RIVULET_NATS_USER", requires = "nats_password")]
    pub nats_user: Option<String>,
    /// Cluster mode: NATS password
    #[arg(long, env = "RIVULET_NATS_PASSWORD", requires = "nats_user")]
    pub nats_password: Option<String>,
    /// Cluster mode: NATS authentication token
    #[arg(long, env = "RIVULET_NATS_TOKEN")]
    pub nats_token: Option<String>,
    /// Cluster mode: a file holding this node's NKey seed (`SU…`), for NATS servers that list
    /// its public key among their users
    #[arg(long, env = "RIVULET_NATS_NKEY")]
    pub nats_nkey: Option<PathBuf>,
    /// Cluster mode: a NATS `.creds` file (a user JWT and its seed), for NATS servers in
    /// operator (JWT) mode, such as Synadia Cloud
    #[arg(long, env = "RIVULET_NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,
    /// Cluster mode: TLS to the NATS servers, whose certificates this CA (PEM) signed
    #[arg(long, env = "RIVULET_NATS_TLS_CA")]
    pub nats_tls_ca: Option<PathBuf>,
    /// Cluster mode: this node's TLS client certificate (PEM), for NATS servers that verify
    /// clients (with --nats-tls-key)
    #[arg(long, env = "RIVULET_NATS_TLS_CERT", requires = "nats_tls_key")]
    pub nats_tls_cert: Option<PathBuf>,
    /// Cluster mode: the key of --nats-tls-cert (PEM)
    #[arg(long, env = "RIVULET_NATS_TLS_KEY", requires = "nats_tls_cert")]
    pub nats_tls_key: Option<PathBuf>,
    /// Keep everything in memory (same semantics, nothing survives a restart)
    #[arg(long, env = "RIVULET_IN_MEMORY", num_args = 0..=1, default_missing_value = "true")]
    pub in_memory: Option<bool>,
    /// Account id in ARNs and messages [default: 000000000000]
    #[arg(long, env = "RIVULET_ACCOUNT_ID")]
    pub account_id: Option<String>,
    /// Region in ARNs and messages [default: us-east-1]
    #[arg(long, env = "RIVULET_REGION")]
    pub region: Option<String>,
    /// How long a new stream (and a newly registered consumer) stays CREATING, in ms
    /// [default: 500]
    #[arg(long, env = "RIVULET_CREATE_STREAM_MS")]
    pub create_stream_ms: Option<u64>,
    /// How long a deleted stream (and a deregistered consumer) stays DELETING, in ms
    /// [default: 500]
    #[arg(long, env = "RIVULET_DELETE_STREAM_MS")]
    pub delete_stream_ms: Option<u64>,
    /// How long resharding, mode and warm-throughput changes keep a stream UPDATING, in ms
    /// [default: 500]
    #[arg(long, env = "RIVULET_UPDATE_STREAM_MS")]
    pub update_stream_ms: Option<u64>,
    /// Open shards the account may have [default: 20000]
    #[arg(long, env = "RIVULET_SHARD_LIMIT")]
    pub shard_limit: Option<u32>,
    /// Shard throughput limits: `aws` (1 MiB/s and 1,000 records/s written, 2 MiB/s and 5
    /// calls/s read per shard; excess gets ProvisionedThroughputExceededException) or `off`
    /// [default: aws]
    #[arg(long, env = "RIVULET_LIMITS")]
    pub limits: Option<Limits>,
    /// Multiply every limited rate by this (e.g. 0.1 to provoke throttling in tests, 10 for
    /// headroom) [default: 1]
    #[arg(long, env = "RIVULET_LIMITS_SCALE")]
    pub limits_scale: Option<f64>,
    /// Speed up on-demand streams' clock: 60 makes AWS's 15-minute scaling step take 15 s
    /// and its 30-day peak window 12 h [default: 1, AWS's pace]
    #[arg(long, env = "RIVULET_ON_DEMAND_TIME_SCALE")]
    pub on_demand_time_scale: Option<f64>,
    /// Channels deliver to a folder per bucket under this dir (an S3 bucket ARN
    /// `arn:aws:s3:::NAME` is the folder NAME, which must exist) [default: <data-dir>/buckets;
    /// with --in-memory or --cluster, channels need it]
    #[arg(long, env = "RIVULET_BUCKET_DIR")]
    pub bucket_dir: Option<PathBuf>,
    /// Channels deliver to the buckets of this S3 endpoint instead of bucket folders
    /// (SeaweedFS, MinIO or AWS; path-style; credentials from AWS's standard sources:
    /// AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, profiles, instance metadata) [default: off]
    #[arg(long, env = "RIVULET_S3_ENDPOINT", conflicts_with = "bucket_dir")]
    pub s3_endpoint: Option<String>,
    /// Streaming tables (S3 Tables destinations) go through this Iceberg REST catalog, a table
    /// bucket's ARN being its warehouse, their data files on --s3-endpoint [default: a SQL
    /// catalog per table bucket folder under --table-bucket-dir]
    #[arg(long, env = "RIVULET_ICEBERG_CATALOG")]
    pub iceberg_catalog: Option<String>,
    /// CLIENT_ID:SECRET for the Iceberg REST catalog's OAuth2 token endpoint [default: none]
    #[arg(long, env = "RIVULET_ICEBERG_CATALOG_CREDENTIAL")]
    pub iceberg_catalog_credential: Option<String>,
    /// Table buckets as folders (each holds a sqlite catalog and its warehouse) when no
    /// --iceberg-catalog is given [default: <data-dir>/table-buckets]
    #[arg(long, env = "RIVULET_TABLE_BUCKET_DIR")]
    pub table_bucket_dir: Option<PathBuf>,
    /// JSON Schema documents for streaming tables: GSRSchemaARN
    /// arn:aws:glue:REGION:ACCOUNT:schema/REGISTRY/NAME names REGISTRY/NAME.json here
    /// [default: <data-dir>/schemas]
    #[arg(long, env = "RIVULET_SCHEMA_DIR")]
    pub schema_dir: Option<PathBuf>,
    /// Divide every channel's DataFreshnessInSeconds by this: 60 makes the 300-second minimum
    /// 5 s [default: 1, AWS's pace]
    #[arg(long, env = "RIVULET_CHANNEL_TIME_SCALE")]
    pub channel_time_scale: Option<u32>,
    /// Also serve HTTPS (HTTP/2 and HTTP/1.1 by ALPN) on this address [default: off]
    #[arg(long, env = "RIVULET_TLS_LISTEN")]
    pub tls_listen: Option<SocketAddr>,
    /// PEM certificate chain for --tls-listen [default: a self-signed one for localhost,
    /// generated under the data dir (or a temporary dir with --in-memory); its path is printed]
    #[arg(long, env = "RIVULET_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert
    #[arg(long, env = "RIVULET_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Request authentication: `off` (any well-formed SigV4 request is accepted) or `sigv4`
    /// (every signature is verified against --credentials) [default: off]
    #[arg(long, env = "RIVULET_AUTH")]
    pub auth: Option<Auth>,
    /// TOML file of `[[credentials]]` (access_key_id, secret_access_key, account_id,
    /// principal_arn, optional session_token and expires) for --auth sigv4
    #[arg(long, env = "RIVULET_CREDENTIALS")]
    pub credentials: Option<PathBuf>,
    /// TOML key file of the built-in key service (KMS keys for StartStreamEncryption; manage
    /// it with `rivulet kms`). Must lie outside the data dir [default: with --data-dir,
    /// $XDG_CONFIG_HOME/rivulet/kms-keys.toml (or ~/.config/…); with --in-memory, keys in
    /// memory]
    #[arg(long, env = "RIVULET_KMS_KEYS")]
    pub kms_keys: Option<PathBuf>,
    /// Log filter, in tracing's env-filter syntax [default: info]
    #[arg(long, env = "RIVULET_LOG")]
    pub log: Option<String>,
    /// Log lines as `text` or `json` (one JSON object per line, for log shippers)
    /// [default: text]
    #[arg(long, env = "RIVULET_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Size of each write-ahead journal file, in MiB (1 to 1024): the journal keeps at most
    /// about four, which bounds its disk use and what a restart after a crash replays
    /// [default: 64]
    #[arg(long, env = "RIVULET_JOURNAL_FILE_MIB")]
    pub journal_file_mib: Option<u64>,
    /// Apply this streams file (as `rivulet apply -f`) once the server is listening
    #[arg(long, env = "RIVULET_STREAMS")]
    pub streams: Option<PathBuf>,
    /// POST alarm state changes as JSON to this http:// URL [default: none]
    #[arg(long, env = "RIVULET_ALARM_WEBHOOK")]
    pub alarm_webhook: Option<String>,
    /// Metric alarms: `[[alarms]]` tables of the config file only (alarm_name, metric_name,
    /// statistic, period, evaluation_periods, comparison_operator, threshold, dimensions…)
    #[arg(skip)]
    #[serde(default)]
    pub alarms: Vec<crate::alarms::AlarmRule>,
    /// TOML file with any of these settings (keys in snake_case)
    #[arg(long, env = "RIVULET_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
}

/// The HTTPS listener's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    pub listen: SocketAddr,
    /// Certificate and key files; `None` means a generated self-signed pair.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// `--auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Auth {
    /// Signatures must be present and well formed, but are not checked.
    Off,
    /// Signatures are verified.
    Sigv4,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `--limits`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Limits {
    /// AWS's per-shard rates.
    Aws,
    /// No throughput limits.
    Off,
}

/// Where data lives.
#[derive(Debug, Clone)]
pub enum Storage {
    Dir(PathBuf),
    Memory,
    /// NATS JetStream (`--cluster`).
    Cluster(Box<rivulet_cluster::store::ClusterSettings>),
}

/// The settings a server runs with, every default applied.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// The HTTPS listener, if any.
    pub tls: Option<TlsConfig>,
    /// SubscribeToShard's heartbeat, lifetime and rate (AWS's; not a flag: tests shorten them).
    pub subscription: crate::subscribe::Timing,
    /// With `--auth sigv4`, the credentials signatures are checked against.
    pub credentials: Option<std::sync::Arc<crate::sigv4::Credentials>>,
    /// The key service's key file; `None` keeps keys in memory.
    pub kms_keys: Option<PathBuf>,
    pub storage: Storage,
    /// The log store's tuning (the journal file size is a setting; the rest are defaults).
    pub store: rivulet_log::StoreConfig,
    pub engine: EngineConfig,
    pub log: String,
    pub log_format: LogFormat,
    /// A streams file to apply at start (`serve --streams`).
    pub streams: Option<PathBuf>,
    /// Metric alarms and where their changes are POSTed.
    pub alarms: Vec<crate::alarms::AlarmRule>,
    pub alarm_webhook: Option<String>,
    /// Where channels' bucket folders are (`None`: channels FAIL for want of a bucket).
    pub bucket_dir: Option<PathBuf>,
    /// The S3 endpoint channels deliver to, instead of bucket folders.
    pub s3_endpoint: Option<String>,
    /// Where streaming tables go.
    pub iceberg_catalog: Option<String>,
    pub iceberg_catalog_credential: Option<String>,
    pub table_bucket_dir: Option<PathBuf>,
    pub schema_dir: Option<PathBuf>,
    /// Divides channels' DataFreshnessInSeconds.
    pub channel_time_scale: u32,
}

impl ServerConfig {
    /// An in-memory server on an ephemeral port with no lifecycle delays and no throughput
    /// limits: what tests want (the limit tests turn them on).
    pub fn for_tests() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: None,
            subscription: Default::default(),
            credentials: None,
            kms_keys: None,
            storage: Storage::Memory,
            store: rivulet_log::StoreConfig::default(),
            engine: EngineConfig {
                create_stream_ms: 0,
                delete_stream_ms: 0,
                update_stream_ms: 0,
                ..EngineConfig::default()
            },
            log: "warn".into(),
            log_format: LogFormat::Text,
            streams: None,
            alarms: Vec::new(),
            alarm_webhook: None,
            bucket_dir: None,
            s3_endpoint: None,
            iceberg_catalog: None,
            iceberg_catalog_credential: None,
            table_bucket_dir: None,
            schema_dir: None,
            channel_time_scale: 1,
        }
    }
}

fn load_file(path: &Path) -> anyhow::Result<ServeArgs> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
}

impl ServeArgs {
    /// Resolves flags and environment (already in `self`) over the file over the defaults.
    pub fn resolve(self) -> anyhow::Result<ServerConfig> {
        let file = match &self.config {
            Some(path) => load_file(path)?,
            None => ServeArgs::default(),
        };
        let defaults = EngineConfig::default();
        let in_memory = self.in_memory.or(file.in_memory).unwrap_or(false);
        let data_dir = self.data_dir.or(file.data_dir);
        if in_memory && data_dir.is_some() {
            anyhow::bail!("--in-memory and --data-dir exclude each other");
        }
        let cluster = self.cluster.or(file.cluster);
        let storage = if let Some(urls) = cluster {
            if in_memory || data_dir.is_some() {
                anyhow::bail!("--cluster excludes --in-memory and --data-dir");
            }
            let replicas = self.replicas.or(file.replicas).unwrap_or(3);
            if ![1, 3, 5].contains(&replicas) {
                anyhow::bail!("--replicas must be 1, 3 or 5, not {replicas}");
            }
            let prefix = self
                .nats_prefix
                .or(file.nats_prefix)
                .unwrap_or_else(|| "rivulet".into());
            let token_char = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
            if prefix.is_empty() || !prefix.bytes().all(token_char) {
                anyhow::bail!("--nats-prefix must be letters, digits, - and _, not {prefix:?}");
            }
            // Read now: a wrong path or file is a start-up error, not a connection that
            // never comes up.
            let pem = |path: PathBuf, what: &str| -> anyhow::Result<PathBuf> {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("{what} {}", path.display()))?;
                if !text.contains("-----BEGIN ") {
                    anyhow::bail!("{what} {} is not PEM", path.display());
                }
                Ok(path)
            };
            let tls_ca = match self.nats_tls_ca.or(file.nats_tls_ca) {
                Some(path) => Some(pem(path, "--nats-tls-ca")?),
                None => None,
            };
            let tls_client = match (
                self.nats_tls_cert.or(file.nats_tls_cert),
                self.nats_tls_key.or(file.nats_tls_key),
            ) {
                (Some(cert), Some(key)) => {
                    Some((pem(cert, "--nats-tls-cert")?, pem(key, "--nats-tls-key")?))
                }
                (None, None) => None,
                _ => anyhow::bail!("--nats-tls-cert and --nats-tls-key must be given together"),
            };
            let user = self.nats_user.or(file.nats_user);
            let password = self.nats_password.or(file.nats_password);
            let user = match (user, password) {
                (Some(user), Some(password)) => Some((user, password)),
                (None, None) => None,
                _ => anyhow::bail!("--nats-user and --nats-password must be given together"),
            };
            let token = self.nats_token.or(file.nats_token);
            let nkey_seed = self.nats_nkey.or(file.nats_nkey);
            let credentials = self.nats_creds.or(file.nats_creds);
            let ways = [
                user.is_some(),
                token.is_some(),
                nkey_seed.is_some(),
                credentials.is_some(),
            ];
            if ways.iter().filter(|given| **given).count() > 1 {
                anyhow::bail!(
                    "give one way to authenticate to NATS: --nats-user/--nats-password, \
                     --nats-token, --nats-nkey or --nats-creds"
                );
            }
            Storage::Cluster(Box::new(rivulet_cluster::store::ClusterSettings {
                urls: urls
                    .split(',')
                    .map(str::trim)
                    .filter(|url| !url.is_empty())
                    .map(str::to_string)
                    .collect(),
                replicas,
                node_name: self
                    .node_name
                    .or(file.node_name)
                    .unwrap_or_else(|| format!("rivulet-{}", std::process::id())),
                prefix,
                user,
                token,
                nkey_seed,
                credentials,
                tls_ca,
                tls_client,
                timeout: std::time::Duration::from_secs(10),
                leader_wait: std::time::Duration::from_secs(2),
                follow_lag: std::time::Duration::ZERO,
            }))
        } else if in_memory {
            Storage::Memory
        } else {
            Storage::Dir(data_dir.unwrap_or_else(|| PathBuf::from("./rivulet-data")))
        };
        let mut store = rivulet_log::StoreConfig::default();
        if let Some(mib) = self.journal_file_mib.or(file.journal_file_mib) {
            if !(1..=1024).contains(&mib) {
                anyhow::bail!("--journal-file-mib must be between 1 and 1024, not {mib}");
            }
            store.journal_file_bytes = mib << 20;
        }
        let ms = |flag: Option<u64>, file: Option<u64>, default: i64| -> anyhow::Result<i64> {
            match flag.or(file) {
                Some(v) => i64::try_from(v).context("delay too large"),
                None => Ok(default),
            }
        };
        let account_id = self
            .account_id
            .or(file.account_id)
            .unwrap_or(defaults.account_id);
        if account_id.len() != 12 || !account_id.bytes().all(|b| b.is_ascii_digit()) {
            anyhow::bail!("--account-id must be 12 digits, got {account_id:?}");
        }
        let scale = self.limits_scale.or(file.limits_scale).unwrap_or(1.0);
        if !(scale.is_finite() && scale > 0.0) {
            anyhow::bail!("--limits-scale must be a positive number, got {scale}");
        }
        let on_demand_time_scale = self
            .on_demand_time_scale
            .or(file.on_demand_time_scale)
            .unwrap_or(1.0);
        if !(on_demand_time_scale.is_finite() && on_demand_time_scale > 0.0) {
            anyhow::bail!(
                "--on-demand-time-scale must be a positive number, got {on_demand_time_scale}"
            );
        }
        let channel_time_scale = self
            .channel_time_scale
            .or(file.channel_time_scale)
            .unwrap_or(1);
        if channel_time_scale == 0 {
            anyhow::bail!("--channel-time-scale must be at least 1");
        }
        let s3_endpoint = self.s3_endpoint.or(file.s3_endpoint);
        let given_bucket_dir = self.bucket_dir.or(file.bucket_dir);
        if s3_endpoint.is_some() && given_bucket_dir.is_some() {
            anyhow::bail!("--s3-endpoint and --bucket-dir exclude each other");
        }
        let under_data_dir = |name: &str| match &storage {
            Storage::Dir(dir) => Some(dir.join(name)),
            Storage::Memory | Storage::Cluster(_) => None,
        };
        let table_bucket_dir = self
            .table_bucket_dir
            .or(file.table_bucket_dir)
            .or_else(|| under_data_dir("table-buckets"));
        let schema_dir = self
            .schema_dir
            .or(file.schema_dir)
            .or_else(|| under_data_dir("schemas"));
        let bucket_dir = given_bucket_dir.or(match &storage {
            Storage::Dir(dir) => Some(dir.join("buckets")),
            Storage::Memory | Storage::Cluster(_) => None,
        });
        let limits_scale = match self.limits.or(file.limits).unwrap_or(Limits::Aws) {
            Limits::Aws => Some(scale),
            Limits::Off => None,
        };
        let credentials = match self.auth.or(file.auth).unwrap_or(Auth::Off) {
            Auth::Off => None,
            Auth::Sigv4 => {
                let path = self
                    .credentials
                    .or(file.credentials)
                    .context("--auth sigv4 needs --credentials FILE")?;
                Some(std::sync::Arc::new(crate::sigv4::Credentials::load(&path)?))
            }
        };
        let kms_keys = match self.kms_keys.or(file.kms_keys) {
            Some(path) => Some(path),
            None => match &storage {
                Storage::Dir(_) => default_kms_keys(),
                Storage::Memory | Storage::Cluster(_) => None,
            },
        };
        if let (Some(keys), Storage::Dir(dir)) = (&kms_keys, &storage) {
            let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
            if absolute(keys).starts_with(absolute(dir)) {
                anyhow::bail!(
                    "the key file {} must not lie inside the data dir {}: master keys are \
                     never kept beside the data they protect",
                    keys.display(),
                    dir.display()
                );
            }
        }
        let tls_cert = self.tls_cert.or(file.tls_cert);
        let tls_key = self.tls_key.or(file.tls_key);
        if tls_cert.is_some() != tls_key.is_some() {
            anyhow::bail!("--tls-cert and --tls-key must be given together");
        }
        let tls = self.tls_listen.or(file.tls_listen).map(|listen| TlsConfig {
            listen,
            cert: tls_cert,
            key: tls_key,
        });
        Ok(ServerConfig {
            listen: self
                .listen
                .or(file.listen)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 4567))),
            tls,
            subscription: Default::default(),
            credentials,
            kms_keys,
            storage,
            store,
            engine: EngineConfig {
                account_id,
                region: self.region.or(file.region).unwrap_or(defaults.region),
                create_stream_ms: ms(
                    self.create_stream_ms,
                    file.create_stream_ms,
                    defaults.create_stream_ms,
                )?,
                delete_stream_ms: ms(
                    self.delete_stream_ms,
                    file.delete_stream_ms,
                    defaults.delete_stream_ms,
                )?,
                update_stream_ms: ms(
                    self.update_stream_ms,
                    file.update_stream_ms,
                    defaults.update_stream_ms,
                )?,
                shard_limit: self
                    .shard_limit
                    .or(file.shard_limit)
                    .unwrap_or(defaults.shard_limit),
                limits_scale,
                on_demand_time_scale,
                namespace: String::new(),
            },
            log: self.log.or(file.log).unwrap_or_else(|| "info".into()),
            log_format: self.log_format.or(file.log_format).unwrap_or_default(),
            alarms: if self.alarms.is_empty() {
                file.alarms
            } else {
                self.alarms
            },
            alarm_webhook: self.alarm_webhook.or(file.alarm_webhook),
            streams: self.streams.or(file.streams),
            bucket_dir: if s3_endpoint.is_some() {
                None
            } else {
                bucket_dir
            },
            s3_endpoint,
            iceberg_catalog: self.iceberg_catalog.or(file.iceberg_catalog),
            iceberg_catalog_credential: self
                .iceberg_catalog_credential
                .or(file.iceberg_catalog_credential),
            table_bucket_dir,
            schema_dir,
            channel_time_scale,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_file_beat_defaults() {
        let dir = std::env::temp_dir().join(format!("rivulet-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("rivulet.toml");
        std::fs::write(
            &path,
            "region = \"eu-west-1\"\nshard_limit = 7\nin_memory = true\n",
        )
        .unwrap();
        let args = ServeArgs {
            shard_limit: Some(9),
            config: Some(path),
            ..ServeArgs::default()
        };
        let config = args.resolve().unwrap();
        assert_eq!(config.engine.region, "eu-west-1");
        assert_eq!(config.engine.shard_limit, 9);
        assert!(matches!(config.storage, Storage::Memory));
        assert_eq!(config.listen.port(), 4567);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn on_demand_time_scale_defaults_to_aws_pace_and_must_be_positive() {
        let with = |scale| {
            ServeArgs {
                on_demand_time_scale: scale,
                in_memory: Some(true),
                ..ServeArgs::default()
            }
            .resolve()
        };
        assert_eq!(with(None).unwrap().engine.on_demand_time_scale, 1.0);
        assert_eq!(with(Some(60.0)).unwrap().engine.on_demand_time_scale, 60.0);
        for refused in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let error = with(Some(refused)).unwrap_err().to_string();
            assert!(error.contains("--on-demand-time-scale"), "{error}");
        }
    }

    #[test]
    fn journal_file_size_is_in_mib_within_bounds() {
        let with = |mib| {
            ServeArgs {
                journal_file_mib: Some(mib),
                in_memory: Some(true),
                ..ServeArgs::default()
            }
            .resolve()
        };
        assert_eq!(with(1).unwrap().store.journal_file_bytes, 1 << 20);
        let default = ServeArgs {
            in_memory: Some(true),
            ..ServeArgs::default()
        };
        assert_eq!(
            default.resolve().unwrap().store,
            rivulet_log::StoreConfig::default()
        );
        for refused in [0, 1025] {
            let error = with(refused).unwrap_err().to_string();
            assert!(error.contains("--journal-file-mib"), "{error}");
        }
    }

    #[test]
    fn cluster_settings_come_from_flags_and_are_checked() {
        let with = |args: ServeArgs| args.resolve();
        let config = with(ServeArgs {
            cluster: Some("nats://127.0.0.1:4222, nats://127.0.0.1:4223".into()),
            node_name: Some("n1".into()),
            ..ServeArgs::default()
        })
        .unwrap();
        let Storage::Cluster(settings) = config.storage else {
            panic!("cluster storage");
        };
        assert_eq!(
            settings.urls,
            ["nats://127.0.0.1:4222", "nats://127.0.0.1:4223"]
        );
        assert_eq!(settings.replicas, 3);
        assert_eq!(settings.prefix, "rivulet");
        assert_eq!(settings.node_name, "n1");
        let refused = [
            ServeArgs {
                cluster: Some("nats://a".into()),
                replicas: Some(2),
                ..ServeArgs::default()
            },
            ServeArgs {
                cluster: Some("nats://a".into()),
                nats_prefix: Some("a.b".into()),
                ..ServeArgs::default()
            },
            ServeArgs {
                cluster: Some("nats://a".into()),
                in_memory: Some(true),
                ..ServeArgs::default()
            },
            ServeArgs {
                cluster: Some("nats://a".into()),
                nats_user: Some("u".into()),
                ..ServeArgs::default()
            },
        ];
        for args in refused {
            assert!(with(args).is_err());
        }
    }

    #[test]
    fn unknown_file_keys_are_rejected() {
        let dir = std::env::temp_dir().join(format!("rivulet-config-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.toml");
        std::fs::write(&path, "regoin = \"x\"\n").unwrap();
        let args = ServeArgs {
            config: Some(path),
            ..ServeArgs::default()
        };
        assert!(args.resolve().is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn alarms_and_key_file_come_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rivulet.toml");
        std::fs::write(
            &path,
            r#"
in_memory = true
alarm_webhook = "http://127.0.0.1:9/hook"
log_format = "json"

[[alarms]]
alarm_name = "orders-throttled"
metric_name = "WriteProvisionedThroughputExceeded"
namespace = "AWS/Kinesis"
statistic = "Sum"
period = 60
evaluation_periods = 2
comparison_operator = "GreaterThanThreshold"
threshold = 0
dimensions = { StreamName = "orders" }
"#,
        )
        .unwrap();
        let config = ServeArgs {
            config: Some(path),
            ..ServeArgs::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(config.alarms.len(), 1);
        assert_eq!(config.alarms[0].dimensions["StreamName"], "orders");
        assert_eq!(
            config.alarm_webhook.as_deref(),
            Some("http://127.0.0.1:9/hook")
        );
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.kms_keys, None, "in memory: keys in memory");

        // A key file inside the data dir is refused.
        let data = dir.path().join("data");
        let refused = ServeArgs {
            data_dir: Some(data.clone()),
            kms_keys: Some(data.join("keys.toml")),
            ..ServeArgs::default()
        }
        .resolve()
        .unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("must not lie inside the data dir"),
            "{refused}"
        );
    }
}
