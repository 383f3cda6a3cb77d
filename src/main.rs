//! The `rivulet` binary: parses the command line and runs the server until Ctrl-C or SIGTERM.

use clap::Parser;
use rivulet_server::Server;
use rivulet_server::config::{Cli, Command, LogFormat};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(*args).await,
        Command::Kms(args) => rivulet_server::kms::run_cli(args),
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
    let server = Server::start(config.clone()).await?;
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
    shutdown_signal().await;
    tracing::info!("shutting down: finishing in-flight requests and syncing the log");
    server.shutdown().await?;
    tracing::info!("stopped cleanly");
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
