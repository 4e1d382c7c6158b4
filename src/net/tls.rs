//! Server TLS for every listener: the crypto provider, reading PEM certificate chains, keys,
//! client CA bundles and CRLs, and the one place a rustls [`ServerConfig`] is built — from a
//! [`TlsProfile`] (the certificate and key to serve, the ALPN list, client authentication).
//!
//! Every configuration offers TLS 1.2 and 1.3 with rustls' ECDHE AEAD suites in the server's
//! order, and session tickets for resumption. One crypto provider, aws-lc-rs, is used
//! throughout (DEPENDENCIES.md).
//!
//! Which web certificate the HTTP listeners serve (installed, configured or self-signed) is
//! decided by [`crate::operate::cert`]; this module only reads the files a profile names.
//!
//! # Reloading (certificate renewal, a new CRL)
//!
//! A listener holds its acceptor in an `ArcSwap<TlsAcceptor>` and loads it once per accepted
//! connection. [`TlsProfile::reload`] re-reads every file of the profile and swaps in a new
//! acceptor: handshakes started afterwards are checked against the new CA bundle and CRL,
//! connections already established keep running untouched. The new configuration has its
//! own session ticket keys and session cache, so a client cannot resume a session made under
//! the old one — a revoked client must complete a full handshake, and fails it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

pub mod client;

/// The ALPN protocols of the HTTP listeners, in the server's order of preference.
pub const ALPN_HTTP: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM certificate chain or key file could not be read or holds no usable item.
    #[error("cannot load {path}: {reason}")]
    Load { path: PathBuf, reason: String },
    /// The client CA bundle of a profile cannot be used.
    #[error("client CA bundle {path}: {problem}")]
    ClientCa { path: PathBuf, problem: PemProblem },
    /// The CA bundle a server's certificate must chain to cannot be used (client side).
    #[error("CA bundle {path}: {problem}")]
    ServerCa { path: PathBuf, problem: PemProblem },
    /// The CRL file of a profile cannot be used.
    #[error("CRL file {path}: {problem}")]
    Crl { path: PathBuf, problem: PemProblem },
    /// The key does not match the certificate, or rustls refused them.
    #[error("certificate and key rejected: {0}")]
    Rejected(#[from] rustls::Error),
}

/// What is wrong with a PEM file of trust material (CA bundle, CRL).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PemProblem {
    /// The file cannot be read, or is not PEM.
    #[error("cannot read it: {0}")]
    Unreadable(String),
    /// The file holds no block of the kind needed.
    #[error("no {0} block in it")]
    Empty(&'static str),
    /// A block is there but its content is not a valid certificate or CRL.
    #[error("invalid content: {0}")]
    Invalid(String),
}

/// Which clients must present a certificate, and what it is checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientAuth {
    /// No certificate is asked for (the HTTP listeners).
    None,
    /// A certificate is asked for; a client without one is let in, a client with one that
    /// does not verify (unknown issuer, revoked, expired) is refused.
    Optional(ClientTrust),
    /// A client without a certificate that verifies is refused.
    Required(ClientTrust),
}

/// What client certificates are verified against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTrust {
    /// PEM bundle of the CA certificates client certificates must chain to.
    pub ca: PathBuf,
    /// PEM file of CRLs (`X509 CRL` blocks; several allowed). With a CRL, revocation is
    /// checked for the whole chain below the trust anchor, and a certificate whose issuer has
    /// no CRL in the file is refused (its status is unknown): put the CRL of every issuing CA
    /// in the file. A CRL past its `nextUpdate` is still used (a stale refresh job must not
    /// lock every client out).
    pub crl: Option<PathBuf>,
}

/// Everything a listener's TLS is built from; [`TlsProfile::server_config`] reads the files.
///
/// A SIP listener fills it from its `[[sip.listener]]` keys:
/// `TlsProfile::sip(cert, key, ClientAuth::Required(ClientTrust { ca, crl }))`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsProfile {
    /// PEM certificate chain to serve (leaf first).
    pub cert: PathBuf,
    /// Its PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// ALPN protocols offered, in preference order; empty = no ALPN.
    pub alpn: Vec<Vec<u8>>,
    /// Client certificate authentication.
    pub client_auth: ClientAuth,
}

impl TlsProfile {
    /// The HTTP listeners' profile: ALPN `h2` then `http/1.1`, no client certificates.
    pub fn http(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        TlsProfile {
            cert: cert.into(),
            key: key.into(),
            alpn: ALPN_HTTP.iter().map(|p| p.to_vec()).collect(),
            client_auth: ClientAuth::None,
        }
    }

    /// A SIP listener's profile (SIP over TLS has no ALPN), with its client authentication.
    pub fn sip(cert: impl Into<PathBuf>, key: impl Into<PathBuf>, client_auth: ClientAuth) -> Self {
        TlsProfile { cert: cert.into(), key: key.into(), alpn: Vec::new(), client_auth }
    }

    /// Reads every file of the profile (certificate, key, CA bundle, CRL) and builds a new
    /// server configuration; call it again to pick up changed files.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let chain = load_chain(&self.cert)?;
        let key = load_key(&self.key)?;
        let verifier = client_verifier(&self.client_auth)?;
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)?;
        config.alpn_protocols.clone_from(&self.alpn);
        // The server's order (the provider's: AES-256-GCM, AES-128-GCM, ChaCha20-Poly1305; all
        // AEAD with ECDHE) decides, not the client's: scanners (testssl.sh) rate a client-chosen
        // order HIGH, and a client cannot steer the pick towards the weakest suite offered.
        config.ignore_client_order = true;
        // Fresh ticket keys and session cache per configuration: after a reload no session of
        // the previous one resumes (a client revoked since must pass a full handshake).
        config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()?;
        config.session_storage = rustls::server::ServerSessionMemoryCache::new(16 * 1024);
        Ok(Arc::new(config))
    }

    /// A new acceptor for this profile (reads the files).
    pub fn acceptor(&self) -> Result<TlsAcceptor, TlsError> {
        Ok(TlsAcceptor::from(self.server_config()?))
    }

    /// Re-reads the profile's files and swaps the new acceptor into `current`: handshakes
    /// started afterwards use it, established connections are not touched. On an error
    /// `current` is left as it was.
    pub fn reload(&self, current: &ArcSwap<TlsAcceptor>) -> Result<(), TlsError> {
        current.store(Arc::new(self.acceptor()?));
        Ok(())
    }
}

/// The process-wide crypto provider.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The client certificate verifier of `auth` (reads the CA bundle and the CRL file).
fn client_verifier(auth: &ClientAuth) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let (trust, optional) = match auth {
        ClientAuth::None => return Ok(WebPkiClientVerifier::no_client_auth()),
        ClientAuth::Optional(trust) => (trust, true),
        ClientAuth::Required(trust) => (trust, false),
    };
    let roots = load_client_roots(&trust.ca)?;
    let crls = match &trust.crl {
        Some(path) => load_crls(path)?,
        None => Vec::new(),
    };
    let mut builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider()).with_crls(crls);
    if optional {
        builder = builder.allow_unauthenticated();
    }
    builder.build().map_err(|e| match e {
        rustls::server::VerifierBuilderError::InvalidCrl(why) => {
            // Only one CRL file feeds the verifier, so the fault is in that file.
            let path = trust.crl.clone().unwrap_or_default();
            TlsError::Crl { path, problem: PemProblem::Invalid(rustls::Error::from(why).to_string()) }
        }
        other => TlsError::ClientCa { path: trust.ca.clone(), problem: PemProblem::Invalid(other.to_string()) },
    })
}

/// Reads a PEM bundle of CA certificates into a root store; every certificate must parse.
pub fn load_client_roots(path: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let fail = |problem| TlsError::ClientCa { path: path.to_path_buf(), problem };
    let certs = read_pem::<CertificateDer<'static>>(path, "CERTIFICATE").map_err(fail)?;
    let mut roots = rustls::RootCertStore::empty();
    for (i, cert) in certs.into_iter().enumerate() {
        roots.add(cert).map_err(|e| fail(PemProblem::Invalid(format!("certificate {}: {e}", i + 1))))?;
    }
    Ok(roots)
}

/// Reads every `X509 CRL` block of a PEM file (their content is checked when the verifier is
/// built).
pub fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    read_pem::<CertificateRevocationListDer<'static>>(path, "X509 CRL")
        .map_err(|problem| TlsError::Crl { path: path.to_path_buf(), problem })
}

/// Every PEM block of type `T` in `path`; at least one.
fn read_pem<T: PemObject>(path: &Path, kind: &'static str) -> Result<Vec<T>, PemProblem> {
    let items = T::pem_file_iter(path)
        .map_err(|e| PemProblem::Unreadable(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PemProblem::Unreadable(e.to_string()))?;
    if items.is_empty() {
        return Err(PemProblem::Empty(kind));
    }
    Ok(items)
}

/// Writes a file readable only by its owner.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
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

#[cfg(test)]
mod tests;
