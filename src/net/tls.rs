//! Server TLS: loading the operator's certificate, or generating and keeping a self-signed
//! ECDSA P-256 certificate for `server.name` in the state directory, and building the rustls
//! configuration (ALPN `h2`, `http/1.1`; TLS 1.2 and 1.3; session tickets for resumption).
//!
//! One crypto provider, aws-lc-rs, is used throughout (DEPENDENCIES.md).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Where the generated certificate lives under `state_dir`.
pub const SELF_SIGNED_DIR: &str = "tls";

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds no usable item.
    #[error("cannot load {path}: {reason}")]
    Load { path: PathBuf, reason: String },
    /// The key does not match the certificate, or rustls refused them.
    #[error("certificate and key rejected: {0}")]
    Rejected(#[from] rustls::Error),
    /// Writing the generated certificate failed.
    #[error("cannot write self-signed certificate to {path}: {source}")]
    Store {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// rcgen could not generate a certificate.
    #[error("cannot generate certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// A certificate chain with its key, as PEM files on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// True when this edge generated the certificate itself.
    pub self_signed: bool,
}

/// The process-wide crypto provider.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Returns the operator's certificate, or the self-signed one in `state_dir` (generated on
/// first use).
pub fn ensure_certificate(configured: Option<(&Path, &Path)>, state_dir: &Path, server_name: &str) -> Result<CertPaths, TlsError> {
    if let Some((cert, key)) = configured {
        return Ok(CertPaths { cert: cert.to_path_buf(), key: key.to_path_buf(), self_signed: false });
    }
    let dir = state_dir.join(SELF_SIGNED_DIR);
    let cert = dir.join("self-signed.pem");
    let key = dir.join("self-signed.key");
    if !(cert.is_file() && key.is_file()) {
        generate_self_signed(server_name, &cert, &key)?;
    }
    Ok(CertPaths { cert, key, self_signed: true })
}

/// Writes a new self-signed ECDSA P-256 certificate for `server_name` (and `localhost`).
pub fn generate_self_signed(server_name: &str, cert_path: &Path, key_path: &Path) -> Result<(), TlsError> {
    let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut names = vec![server_name.to_string()];
    if server_name != "localhost" {
        names.push("localhost".to_string());
    }
    let mut params = rcgen::CertificateParams::new(names)?;
    params.distinguished_name.push(rcgen::DnType::CommonName, server_name);
    let now = time_now();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(825);
    let cert = params.self_signed(&key_pair)?;
    let store_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TlsError::Store { path, source }
    };
    if let Some(dir) = cert_path.parent() {
        std::fs::create_dir_all(dir).map_err(store_err(dir))?;
    }
    write_private(key_path, key_pair.serialize_pem().as_bytes()).map_err(store_err(key_path))?;
    std::fs::write(cert_path, cert.pem()).map_err(store_err(cert_path))?;
    Ok(())
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

/// Writes a file readable only by its owner.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    file.write_all(bytes)
}

/// Reads a PEM certificate chain (leaf first).
pub fn load_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let load_err = |reason: String| TlsError::Load { path: path.to_path_buf(), reason };
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|e| load_err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| load_err(e.to_string()))?;
    if chain.is_empty() {
        return Err(load_err("no CERTIFICATE block".into()));
    }
    Ok(chain)
}

/// Reads a PEM private key (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Load { path: path.to_path_buf(), reason: e.to_string() })
}

/// Builds the server configuration for the HTTPS listeners.
pub fn server_config(paths: &CertPaths) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = load_chain(&paths.cert)?;
    let key = load_key(&paths.key)?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()?;
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(16 * 1024);
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_certificate_is_generated_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = ensure_certificate(None, dir.path(), "edge1.example.com").unwrap();
        assert!(first.self_signed);
        let pem = std::fs::read(&first.cert).unwrap();
        let second = ensure_certificate(None, dir.path(), "edge1.example.com").unwrap();
        assert_eq!(std::fs::read(&second.cert).unwrap(), pem, "restart must keep the certificate");
        let chain = load_chain(&first.cert).unwrap();
        let (_, x509) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
        let san = x509.subject_alternative_name().unwrap().unwrap();
        assert!(format!("{:?}", san.value).contains("edge1.example.com"));
        assert!(server_config(&first).is_ok());
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&first.key).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn mismatched_key_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        generate_self_signed("a.example", &a.join("c.pem"), &a.join("k.pem")).unwrap();
        generate_self_signed("b.example", &b.join("c.pem"), &b.join("k.pem")).unwrap();
        let mixed = CertPaths { cert: a.join("c.pem"), key: b.join("k.pem"), self_signed: false };
        assert!(matches!(server_config(&mixed), Err(TlsError::Rejected(_))));
        let missing = CertPaths { cert: dir.path().join("none.pem"), key: b.join("k.pem"), self_signed: false };
        assert!(matches!(server_config(&missing), Err(TlsError::Load { .. })));
    }
}
