//! The Rivulet server: configuration, the HTTP/1.1 + h2c front, and the engine's clock.
//!
//! Architecture invariant: this is the only crate that does network I/O or reads the clock;
//! it turns requests into engine calls (`api`) and never interprets Kinesis semantics itself.

pub mod alarms;
pub mod api;
pub mod authz;
mod channels;
pub mod cluster;
pub mod config;
pub mod console;
pub mod http;
pub mod kms;
pub mod migrate;
pub mod observe;
pub mod plan;
mod queues;
pub mod sigv4;
pub mod subscribe;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use rivulet_engine::Engine;
use rivulet_engine::encryption::DataKeys;
use rivulet_engine::storage::RecordStore;
use rivulet_log::{Backend, FileBackend, MemBackend, Store};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::{ServeArgs, ServerConfig, Storage, TlsConfig};

/// Work as a boxed future, for the `rivulet` binary: its state machine's drop glue and
/// generics are compiled here, not again in the binary (a minute of a cold build's serial
/// tail).
pub type Task<T> = std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<T>> + Send>>;

/// How often lifecycle delays and retention are applied.
const TICK_INTERVAL: Duration = Duration::from_millis(50);
/// How often channels read their streams and write what is due.
const CHANNEL_STEP: Duration = Duration::from_millis(200);
/// How long in-flight requests get to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A running server.
pub struct Server {
    local_addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
    tls_certificate: Option<(std::path::PathBuf, bool)>,
    stop: watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<()>>,
    engine: Arc<Engine>,
    /// Cluster mode's tasks: following the metadata, answering forwarded requests.
    background: Vec<JoinHandle<()>>,
}

impl Server {
    /// [`Server::start`], boxed ([`Task`]).
    pub fn start_task(config: ServerConfig) -> Task<Server> {
        Box::pin(Server::start(config))
    }

    /// Opens storage, recovers, binds the listener and starts serving.
    pub async fn start(config: ServerConfig) -> anyhow::Result<Server> {
        // The key service, shared by every account's engine. A cluster's nodes share one key
        // file, which none of them writes.
        let kms = Arc::new(match (&config.storage, &config.kms_keys) {
            (Storage::Cluster(_), Some(path)) => {
                kms::LocalKms::open_shared(path.clone(), &config.engine.region)?
            }
            _ => kms::LocalKms::open(config.kms_keys.clone(), &config.engine.region)?,
        });
        let backend: Arc<dyn Backend> = match &config.storage {
            Storage::Dir(dir) => {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating data dir {}", dir.display()))?;
                Arc::new(FileBackend::new(dir.clone()).context("opening data dir")?)
            }
            Storage::Memory | Storage::Cluster(_) => Arc::new(MemBackend::new()),
        };
        // The store's data keys, for encrypted streams: the embedded store seals whole batches,
        // the cluster's store each record. A cluster node without a key file has no key
        // service: starting encryption answers KMSNotFoundException (docs/cluster.md).
        let mut cluster = None;
        let (store, data_keys): (Arc<dyn RecordStore>, _) = match &config.storage {
            Storage::Cluster(settings) => {
                let store = rivulet_cluster::store::ClusterStore::open(settings)
                    .await
                    .context("opening the cluster's storage")?;
                cluster = Some(cluster::Cluster::new(store.clone()));
                let store: Arc<dyn RecordStore> = store;
                let data_keys = match &config.kms_keys {
                    Some(_) => Some(
                        DataKeys::open(store.clone(), kms.clone())
                            .map_err(|e| anyhow::anyhow!("loading data keys: {e}"))?,
                    ),
                    None => None,
                };
                (store, data_keys)
            }
            Storage::Dir(_) | Storage::Memory => {
                let store: Arc<dyn RecordStore> =
                    Store::open(backend, config.store).context("opening the log store")?;
                let data_keys = DataKeys::open(store.clone(), kms.clone())
                    .map_err(|e| anyhow::anyhow!("loading data keys: {e}"))?;
                (store, Some(data_keys))
            }
        };
        let engine = Arc::new(
            Engine::open_with_keys(store.clone(), config.engine.clone(), data_keys.clone())
                .map_err(|e| anyhow::anyhow!("opening the engine: {e}"))?,
        );
        // One engine per account: the server's own, and each other account the credentials
        // name, in its own namespace of the same store. Each sees only its own streams.
        let mut accounts = std::collections::HashMap::new();
        accounts.insert(config.engine.account_id.clone(), engine.clone());
        for account in config
            .credentials
            .as_ref()
            .map(|c| c.accounts())
            .unwrap_or_default()
        {
            if accounts.contains_key(&account) {
                continue;
            }
            let engine_config = rivulet_engine::EngineConfig {
                account_id: account.clone(),
                namespace: format!("acct-{account}/"),
                ..config.engine.clone()
            };
            let other = Engine::open_with_keys(store.clone(), engine_config, data_keys.clone())
                .map_err(|e| anyhow::anyhow!("opening account {account}: {e}"))?;
            accounts.insert(account, Arc::new(other));
        }
        let accounts = Arc::new(accounts);
        // Cluster mode: the leader writes, the others follow; each takes forwarded requests.
        let mut background = Vec::new();
        if let Some(cluster) = &cluster {
            for engine in accounts.values() {
                engine.set_writer(false);
            }
            background.push(tokio::spawn(rivulet_cluster::roles::follow(
                cluster.store.clone(),
                accounts.clone(),
            )));
            background.push(tokio::spawn(
                cluster.clone().serve_forwarded(accounts.clone()),
            ));
            // Throughput use (for limits per shard) and observations (for the cluster's
            // totals in metrics, the console, alarms and on-demand scaling).
            background.push(tokio::spawn(rivulet_cluster::roles::share_usage(
                cluster.store.clone(),
                accounts.clone(),
            )));
        }
        // Channels deliver on the engine that writes metadata (every engine on one node).
        for engine in accounts.values() {
            let store: Arc<dyn rivulet_channel::sink::ObjectStore> =
                match (&config.s3_endpoint, &config.bucket_dir) {
                    (Some(endpoint), _) => Arc::new(rivulet_channel::sink::S3Buckets::new(
                        endpoint.clone(),
                        engine.config().region.clone(),
                    )),
                    (None, Some(dir)) => Arc::new(rivulet_channel::sink::LocalBuckets::new(
                        dir.clone(),
                        engine.config().account_id.clone(),
                    )),
                    (None, None) => Arc::new(rivulet_channel::sink::NoBuckets),
                };
            let tables =
                rivulet_channel::tables::Tables::new(rivulet_channel::tables::TableSettings {
                    catalog_uri: config.iceberg_catalog.clone(),
                    catalog_credential: config.iceberg_catalog_credential.clone(),
                    s3_endpoint: config.s3_endpoint.clone(),
                    region: engine.config().region.clone(),
                    table_bucket_dir: config.table_bucket_dir.clone(),
                    schema_dir: config.schema_dir.clone(),
                });
            let delivery = Arc::new(
                rivulet_channel::Delivery::new(
                    engine.clone(),
                    store,
                    rivulet_channel::Settings {
                        time_scale: config.channel_time_scale,
                    },
                )
                .with_tables(Arc::new(tables)),
            );
            background.push(tokio::spawn(delivery.run(CHANNEL_STEP, http::now_ms)));
        }
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let local_addr = listener.local_addr()?;
        let mut tls_certificate = None;
        let tls_listener = match &config.tls {
            Some(settings) => {
                let generated_dir =
                    match &config.storage {
                        Storage::Dir(dir) => dir.join("tls"),
                        Storage::Memory | Storage::Cluster(_) => std::env::temp_dir().join(
                            format!("rivulet-tls-{}-{}", std::process::id(), local_addr.port()),
                        ),
                    };
                let tls = tls::setup(
                    settings.cert.as_deref(),
                    settings.key.as_deref(),
                    &generated_dir,
                )?;
                let listener = TcpListener::bind(settings.listen)
                    .await
                    .with_context(|| format!("binding {}", settings.listen))?;
                tls_certificate = Some((tls.certificate.clone(), tls.self_signed));
                Some((listener, tls.acceptor))
            }
            None => None,
        };
        let tls_addr = match &tls_listener {
            Some((listener, _)) => Some(listener.local_addr()?),
            None => None,
        };
        let (stop, stopped) = watch::channel(false);
        let alarms = Arc::new(
            alarms::Alarms::new(&config.alarms, config.alarm_webhook.clone(), http::now_ms())
                .context("alarms")?,
        );
        let ctx = http::Ctx {
            alarms,
            engine: engine.clone(),
            stopping: stopped.clone(),
            timing: config.subscription,
            credentials: config.credentials.clone(),
            accounts,
            policies: Arc::new(authz::PolicyCache::default()),
            peer: None,
            secure: false,
            cluster,
        };
        let task = tokio::spawn(run(listener, tls_listener, ctx, stopped, kms));
        Ok(Server {
            local_addr,
            tls_addr,
            tls_certificate,
            stop,
            task,
            engine,
            background,
        })
    }

    /// The address the server listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The HTTPS address, when `--tls-listen` is set.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// The HTTPS certificate's PEM file, and whether it is the generated self-signed one.
    pub fn tls_certificate(&self) -> Option<&(std::path::PathBuf, bool)> {
        self.tls_certificate.as_ref()
    }

    /// The engine behind the server.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// [`Server::shutdown`], boxed ([`Task`]).
    pub fn shutdown_task(self) -> Task<()> {
        Box::pin(self.shutdown())
    }

    /// Stops accepting, lets in-flight requests finish, and syncs the log.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        self.task.await.context("server task")??;
        for task in &self.background {
            task.abort();
        }
        let store = self.engine.store().clone();
        tokio::task::spawn_blocking(move || store.shutdown())
            .await
            .context("final sync")?;
        Ok(())
    }
}

/// Accepts on the HTTPS listener, or never when there is none.
async fn accept_tls(
    listener: &Option<(TcpListener, tokio_rustls::TlsAcceptor)>,
) -> std::io::Result<(tokio::net::TcpStream, SocketAddr)> {
    match listener {
        Some((listener, _)) => listener.accept().await,
        None => std::future::pending().await,
    }
}

/// Serves connections and runs the maintenance tick until `stopped` turns true. `ctx` is
/// what every request shares (every account's engine among it); `kms` is re-read each tick.
async fn run(
    listener: TcpListener,
    tls_listener: Option<(TcpListener, tokio_rustls::TlsAcceptor)>,
    ctx: http::Ctx,
    mut stopped: watch::Receiver<bool>,
    kms: Arc<kms::LocalKms>,
) -> anyhow::Result<()> {
    let accounts = ctx.accounts.clone();
    let graceful = GracefulShutdown::new();
    let builder = {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder.http2().max_concurrent_streams(1000);
        builder
    };
    let mut tick = tokio::time::interval(TICK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stopped.changed() => break,
            _ = tick.tick() => {
                // Alarms are evaluated (and their webhooks called) once: by the leader in a
                // cluster.
                if ctx.cluster.as_ref().is_none_or(|cluster| cluster.is_leader()) {
                    let own = ctx.engine.config().account_id.clone();
                    let changes = ctx.alarms.evaluate(&accounts, &own, http::now_ms());
                    ctx.alarms.announce(changes);
                }
                let accounts = accounts.clone();
                let kms = kms.clone();
                let now = http::now_ms();
                let outcome = tokio::task::spawn_blocking(move || {
                    kms.reload_if_changed();
                    accounts.values().try_for_each(|engine| {
                        engine.tick(now)?;
                        rivulet_queue::Queues::of(engine).tick(engine);
                        Ok::<(), rivulet_engine::ApiError>(())
                    })
                })
                .await;
                if let Ok(Err(error)) = outcome {
                    tracing::error!(%error, "background maintenance failed");
                }
            }
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(error) => {
                        tracing::warn!(%error, "accept failed");
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let ctx = http::Ctx { peer: Some(peer.ip()), ..ctx.clone() };
                let service = hyper::service::service_fn(move |request| {
                    http::handle(ctx.clone(), request)
                });
                let connection = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(error) = connection.await {
                        tracing::debug!(%error, "connection ended with an error");
                    }
                });
            }
            accepted = accept_tls(&tls_listener) => {
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(error) => {
                        tracing::warn!(%error, "TLS accept failed");
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let Some((_, acceptor)) = &tls_listener else { continue };
                let acceptor = acceptor.clone();
                let ctx = http::Ctx { peer: Some(peer.ip()), secure: true, ..ctx.clone() };
                let builder = builder.clone();
                let watcher = graceful.watcher();
                // The handshake runs in the connection's task, never in the accept loop.
                tokio::spawn(async move {
                    let stream = match acceptor.accept(stream).await {
                        Ok(stream) => stream,
                        Err(error) => {
                            tracing::debug!(%error, "TLS handshake failed");
                            return;
                        }
                    };
                    let service = hyper::service::service_fn(move |request| {
                        http::handle(ctx.clone(), request)
                    });
                    let connection = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                    if let Err(error) = watcher.watch(connection).await {
                        tracing::debug!(%error, "TLS connection ended with an error");
                    }
                });
            }
        }
    }
    drop(listener);
    drop(tls_listener);
    // Queue long polls answer at once (empty), so their connections need not be waited for.
    for engine in accounts.values() {
        rivulet_queue::Queues::of(engine).stop();
    }
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests did not finish within the grace period");
    }
    Ok(())
}
