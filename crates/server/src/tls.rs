//! The TLS listener's settings: a certificate chain and key from PEM files, or — when none is
//! given — a self-signed certificate for `localhost` / `127.0.0.1`, generated once and kept as
//! PEM files whose path the binary prints (clients add it to their trust store). ALPN offers
//! `h2` and `http/1.1`, so the Rust SDK and the Java async client get HTTP/2.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// A ready TLS acceptor and where its certificate lives.
pub struct Tls {
    pub acceptor: TlsAcceptor,
    /// The certificate in PEM (the one to trust, when self-signed).
    pub certificate: PathBuf,
    /// Whether the certificate is our self-signed one.
    pub self_signed: bool,
}

/// Loads `cert` and `key`, or the self-signed pair in `generated_dir` (created if absent).
pub fn setup(cert: Option<&Path>, key: Option<&Path>, generated_dir: &Path) -> anyhow::Result<Tls> {
    let (cert, key, self_signed) = match (cert, key) {
        (Some(cert), Some(key)) => (cert.to_path_buf(), key.to_path_buf(), false),
        (None, None) => {
            let (cert, key) = self_signed_files(generated_dir)?;
            (cert, key, true)
        }
        _ => anyhow::bail!("--tls-cert and --tls-key must be given together"),
    };
    let chain = CertificateDer::pem_file_iter(&cert)
        .with_context(|| format!("reading certificate {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing certificate {}", cert.display()))?;
    let private_key = PrivateKeyDer::from_pem_file(&key)
        .with_context(|| format!("reading private key {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .context("certificate and key do not match")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Tls {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        certificate: cert,
        self_signed,
    })
}

/// `cert.pem` and `key.pem` in `dir`, generated the first time.
fn self_signed_files(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    if cert.exists() && key.exists() {
        return Ok((cert, key));
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let generated =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .context("generating a self-signed certificate")?;
    // The key first: a crash in between leaves no certificate without its key.
    write_private(&key, generated.signing_key.serialize_pem().as_bytes())?;
    std::fs::write(&cert, generated.cert.pem())
        .with_context(|| format!("writing {}", cert.display()))?;
    Ok((cert, key))
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
