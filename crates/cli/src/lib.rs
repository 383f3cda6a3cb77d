//! `rivulet apply`, `rivulet put`, `rivulet tail` and `rivulet queue`: command-line clients that talk to any
//! Kinesis endpoint — a Rivulet server (the default, `http://127.0.0.1:4567`) or AWS — through
//! the AWS SDK, with the usual credential chain (environment, profile files, …). Against a
//! local endpoint without configured credentials, placeholder ones are used, since Rivulet
//! accepts any signature unless `--auth sigv4` is on.

use aws_sdk_kinesis::Client;
pub use aws_sdk_kinesis::config::Credentials;
use aws_sdk_kinesis::config::{BehaviorVersion, Region};

pub mod apply;
pub mod put;
pub mod queue;
pub mod tail;

/// A command's work as a boxed future, for the `rivulet` binary: its state machine's drop
/// glue and generics are compiled here, not again in the binary (which took a minute of a
/// cold build's serial tail). Not `Send`: `tail` holds stdout's lock while it waits.
pub type Task<T> = std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<T>>>>;

/// Where and how to connect, shared by every client command.
#[derive(Debug, Clone, clap::Args)]
pub struct Connection {
    /// The Kinesis endpoint [default: http://127.0.0.1:4567; for AWS, e.g.
    /// https://kinesis.us-east-1.amazonaws.com]
    #[arg(
        long,
        env = "RIVULET_ENDPOINT_URL",
        default_value = "http://127.0.0.1:4567"
    )]
    pub endpoint_url: String,
    /// The region [default: AWS_REGION, the profile's, or us-east-1]
    #[arg(long)]
    pub region: Option<String>,
}

fn is_local(endpoint: &str) -> bool {
    let host = endpoint
        .split("://")
        .nth(1)
        .unwrap_or(endpoint)
        .split(['/', ':'])
        .next()
        .unwrap_or("");
    matches!(
        host,
        "127.0.0.1" | "localhost" | "[::1]" | "::1" | "0.0.0.0"
    )
}

impl Connection {
    /// An SDK client for this endpoint. For a local endpoint only the environment and the
    /// profile files are asked for credentials (no instance-metadata lookups), and without
    /// any, placeholder ones are used.
    pub async fn client(&self) -> Client {
        self.client_with(None).await
    }

    /// [`Connection::client`], signing with `credentials` when given.
    pub async fn client_with(&self, credentials: Option<Credentials>) -> Client {
        let shared = self.sdk_config(credentials).await;
        let mut builder =
            aws_sdk_kinesis::config::Builder::from(&shared).endpoint_url(&self.endpoint_url);
        if shared.region().is_none() {
            builder = builder.region(Region::new("us-east-1"));
        }
        Client::from_conf(builder.build())
    }

    /// The SDK configuration (region, credentials) a client of this endpoint uses.
    pub async fn sdk_config(&self, credentials: Option<Credentials>) -> aws_config::SdkConfig {
        use aws_sdk_kinesis::config::ProvideCredentials;
        let local = is_local(&self.endpoint_url);
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        let region = self.region.clone().or_else(|| {
            // Locally, no instance metadata either: the environment or us-east-1.
            local.then(|| {
                std::env::var("AWS_REGION")
                    .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
                    .unwrap_or_else(|_| "us-east-1".into())
            })
        });
        if let Some(region) = region {
            loader = loader.region(Region::new(region));
        }
        if let Some(credentials) = credentials {
            loader = loader.credentials_provider(credentials);
        } else if local {
            let env = aws_config::environment::EnvironmentVariableCredentialsProvider::new();
            let profile = aws_config::profile::ProfileFileCredentialsProvider::builder().build();
            let credentials = match env.provide_credentials().await {
                Ok(found) => Some(found),
                Err(_) => profile.provide_credentials().await.ok(),
            };
            let credentials = credentials.unwrap_or_else(|| {
                Credentials::new("rivulet", "rivulet", None, None, "rivulet-local")
            });
            loader = loader.credentials_provider(credentials);
        }
        loader.load().await
    }
}

/// A progress line on stderr drawn with `template` (hidden when `quiet`).
pub(crate) fn spinner(quiet: bool, template: &str) -> indicatif::ProgressBar {
    if quiet {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template(template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}

/// The service's error code and message of an SDK error, for messages and decisions.
pub fn error_code<E>(error: &aws_sdk_kinesis::error::SdkError<E>) -> (String, String)
where
    E: aws_sdk_kinesis::error::ProvideErrorMetadata,
{
    use aws_sdk_kinesis::error::ProvideErrorMetadata;
    (
        error.code().unwrap_or("Unknown").to_string(),
        error
            .message()
            .map(str::to_string)
            .unwrap_or_else(|| format!("{error}")),
    )
}

/// An SDK error as a readable line.
pub fn describe<E>(error: aws_sdk_kinesis::error::SdkError<E>) -> anyhow::Error
where
    E: aws_sdk_kinesis::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let (code, message) = error_code(&error);
    anyhow::anyhow!("{code}: {message}")
}
