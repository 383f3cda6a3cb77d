//! The `rivulet` binary: parses the command line and runs the server until Ctrl-C or SIGTERM.

use clap::{Parser, Subcommand};
use rivulet_server::Server;
use rivulet_server::config::{KmsArgs, LogFormat, ServeArgs};
use tracing_subscriber::EnvFilter;

/// mimalloc instead of glibc malloc: request decoding allocates per record, and glibc's
/// allocator was a fifth of the server's CPU under PutRecords (docs/benchmarks.md). Built
/// without transparent huge pages (`no_thp`), which would add about 6 MiB to idle memory.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The `rivulet` command line.
#[derive(Debug, Parser)]
#[command(
    name = "rivulet",
    version,
    about = "A durable server for the Amazon Kinesis Data Streams API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the Kinesis API.
    Serve(Box<ServeArgs>),
    /// Declare streams in a file (Terraform's aws_kinesis_stream names); print the plan and
    /// apply it to any Kinesis endpoint.
    Apply(rivulet_cli::apply::ApplyArgs),
    /// Put lines of stdin (or a file) as records.
    Put(rivulet_cli::put::PutArgs),
    /// Follow a stream's records, across every shard and through resharding.
    Tail(rivulet_cli::tail::TailArgs),
    /// Work with a queue's records from the shell (receive, acknowledge).
    #[command(subcommand)]
    Queue(rivulet_cli::queue::QueueCommand),
    /// How many shards a workload needs (provisioned), and what on-demand does with it.
    Plan(rivulet_server::plan::PlanArgs),
    /// The load generator behind docs/benchmarks.md, against any endpoint: JSON lines on
    /// stdout, a progress bar and a summary table on stderr.
    Bench(Box<rivulet_bench::BenchArgs>),
    /// Manage the built-in key service's keys (the file a server's --kms-keys names; a running
    /// server picks changes up at once).
    Kms(KmsArgs),
    /// Move a stopped single node's data dir into a new cluster deployment on NATS JetStream.
    Migrate(rivulet_server::migrate::MigrateArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(*args).await,
        Command::Kms(args) => rivulet_server::kms::run_cli(args),
        Command::Migrate(args) => rivulet_server::migrate::run_task(args).await,
        Command::Apply(args) => rivulet_cli::apply::run_task(args).await,
        Command::Bench(args) => rivulet_bench::run_task(*args).await,
        Command::Put(args) => rivulet_cli::put::run_task(args).await.map(|_| ()),
        Command::Tail(args) => rivulet_cli::tail::run_task(args).await.map(|_| ()),
        Command::Queue(command) => rivulet_cli::queue::run_task(command).await.map(|_| ()),
        Command::Plan(args) => {
            print!("{}", rivulet_server::plan::render(&args)?);
            Ok(())
        }
    }
}

async fn serve(args: rivulet_server::ServeArgs) -> anyhow::Result<()> {
    let config = args.resolve()?;
    let filter = EnvFilter::try_new(&config.log).unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    let started = std::time::Instant::now();
    let server = Server::start_task(config.clone()).await?;
    // One machine-readable line on stdout, for scripts and tests that start us on port 0.
    println!("rivulet listening on {}", server.local_addr());
    if let (Some(addr), Some((certificate, self_signed))) =
        (server.tls_addr(), server.tls_certificate())
    {
        println!("rivulet TLS listening on {addr}");
        if *self_signed {
            println!(
                "rivulet TLS self-signed certificate (trust it in clients): {}",
                certificate.display()
            );
        }
    }
    tracing::info!(
        listen = %server.local_addr(),
        storage = ?config.storage,
        ready_ms = started.elapsed().as_secs_f64() * 1000.0,
        "rivulet is serving the Kinesis API"
    );
    if let Some(path) = &config.streams
        && let Err(error) = apply_streams(&config, server.local_addr(), path).await
    {
        // The streams file was asked for: a server that cannot apply it stops, with the reason.
        server.shutdown_task().await?;
        return Err(error.context(format!("--streams {}", path.display())));
    }
    shutdown_signal().await;
    tracing::info!("shutting down: finishing in-flight requests and syncing the log");
    server.shutdown_task().await?;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// `serve --streams FILE`: applies the file to this server, over its own endpoint, as
/// `rivulet apply` would (with `--auth sigv4`, signed as the server's account).
async fn apply_streams(
    config: &rivulet_server::ServerConfig,
    addr: std::net::SocketAddr,
    path: &std::path::Path,
) -> anyhow::Result<()> {
    let file = rivulet_cli::apply::StreamsFile::load(path)?;
    let connection = rivulet_cli::Connection {
        endpoint_url: format!("http://{addr}"),
        region: Some(config.engine.region.clone()),
    };
    let credentials = match &config.credentials {
        None => None,
        Some(all) => {
            let own = all.of_account(&config.engine.account_id).ok_or_else(|| {
                anyhow::anyhow!("no credential of the server's account applies it")
            })?;
            Some(rivulet_cli::Credentials::new(
                own.access_key_id.clone(),
                own.secret_access_key.clone(),
                own.session_token.clone(),
                None,
                "rivulet-serve-streams",
            ))
        }
    };
    let report = rivulet_cli::apply::apply_file_task(connection, credentials, file).await?;
    for line in report.lines() {
        tracing::info!(streams = %path.display(), "{line}");
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
