//! Client TLS toward servers the edge connects to on its own (the SIP edge's internal next hop
//! and partner edges): the one place such a rustls [`ClientConfig`] is built, from a
//! [`ClientProfile`] — what the server's certificate must chain to (a CA bundle, or the public
//! web PKI roots of `webpki-roots`), an optional CRL checked for the server's chain, and the
//! certificate the edge presents when the server asks for one (mutual TLS).
//!
//! The server name verified is the caller's (the host it connects to, or a configured name).
//! Same crypto provider and protocol versions as the server side ([`super::provider`]).
//! A connector is held in an `ArcSwap` and swapped by [`ClientProfile::reload`]: connections
//! opened afterwards see the new files, open ones are not touched.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::ClientConfig;
use rustls::client::WebPkiServerVerifier;
use rustls_pki_types::CertificateDer;
use tokio_rustls::TlsConnector;

use super::{PemProblem, TlsError, load_chain, load_crls, load_key, read_pem};

/// What a server's certificate must chain to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerTrust {
    /// The CA certificates of this PEM bundle, and only those.
    Ca(PathBuf),
    /// The public web PKI roots (Mozilla's list, from `webpki-roots`).
    WebPki,
}

/// Everything a client TLS configuration is built from; [`ClientProfile::connector`] reads the
/// files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientProfile {
    pub trust: ServerTrust,
    /// PEM file of CRLs checked for the server's chain (an issuer without a CRL in it makes the
    /// status unknown: refused, as on the server side).
    pub crl: Option<PathBuf>,
    /// The certificate chain and key presented when the server asks for one.
    pub identity: Option<(PathBuf, PathBuf)>,
}

impl ClientProfile {
    /// Reads the profile's files and builds the client configuration.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, TlsError> {
        let roots = match &self.trust {
            ServerTrust::WebPki => rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() },
            ServerTrust::Ca(path) => load_server_roots(path)?,
        };
        let crls = match &self.crl {
            Some(path) => load_crls(path)?,
            None => Vec::new(),
        };
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), super::provider()).with_crls(crls).build().map_err(
            |error| match (error, &self.crl, &self.trust) {
                (rustls::client::VerifierBuilderError::InvalidCrl(why), Some(path), _) => {
                    TlsError::Crl { path: path.clone(), problem: PemProblem::Invalid(rustls::Error::from(why).to_string()) }
                }
                (other, _, ServerTrust::Ca(path)) => {
                    TlsError::ServerCa { path: path.clone(), problem: PemProblem::Invalid(other.to_string()) }
                }
                (other, _, ServerTrust::WebPki) => TlsError::Load { path: PathBuf::from("webpki-roots"), reason: other.to_string() },
            },
        )?;
        let builder =
            ClientConfig::builder_with_provider(super::provider()).with_safe_default_protocol_versions()?.with_webpki_verifier(verifier);
        let config = match &self.identity {
            Some((cert, key)) => builder.with_client_auth_cert(load_chain(cert)?, load_key(key)?)?,
            None => builder.with_no_client_auth(),
        };
        Ok(Arc::new(config))
    }

    /// A connector for this profile (reads the files).
    pub fn connector(&self) -> Result<TlsConnector, TlsError> {
        Ok(TlsConnector::from(self.client_config()?))
    }

    /// Re-reads the profile's files and swaps the new connector into `current`; on an error
    /// `current` is left as it was.
    pub fn reload(&self, current: &ArcSwap<TlsConnector>) -> Result<(), TlsError> {
        current.store(Arc::new(self.connector()?));
        Ok(())
    }
}

/// Reads a PEM bundle of CA certificates that server certificates must chain to.
fn load_server_roots(path: &std::path::Path) -> Result<rustls::RootCertStore, TlsError> {
    let fail = |problem| TlsError::ServerCa { path: path.to_path_buf(), problem };
    let certs = read_pem::<CertificateDer<'static>>(path, "CERTIFICATE").map_err(fail)?;
    let mut roots = rustls::RootCertStore::empty();
    for (i, cert) in certs.into_iter().enumerate() {
        roots.add(cert).map_err(|e| fail(PemProblem::Invalid(format!("certificate {}: {e}", i + 1))))?;
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_builds_from_the_web_pki_or_a_ca_bundle_and_says_which_file_is_unusable() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let identity = rcgen::generate_simple_self_signed(vec!["edge.example".to_string()]).unwrap();
        std::fs::write(d.join("ca.pem"), identity.cert.pem()).unwrap();
        std::fs::write(d.join("edge.pem"), identity.cert.pem()).unwrap();
        std::fs::write(d.join("edge.key"), identity.signing_key.serialize_pem()).unwrap();
        std::fs::write(d.join("key-only.pem"), identity.signing_key.serialize_pem()).unwrap();
        let profile = |trust: ServerTrust, identity: bool| ClientProfile {
            trust,
            crl: None,
            identity: identity.then(|| (d.join("edge.pem"), d.join("edge.key"))),
        };
        assert!(profile(ServerTrust::WebPki, false).connector().is_ok());
        assert!(profile(ServerTrust::Ca(d.join("ca.pem")), true).connector().is_ok(), "a CA bundle and a client certificate");
        let missing = d.join("missing.pem");
        let err = profile(ServerTrust::Ca(missing.clone()), false).client_config().unwrap_err();
        assert!(matches!(&err, TlsError::ServerCa { path, problem: PemProblem::Unreadable(_) } if *path == missing), "{err:?}");
        let err = profile(ServerTrust::Ca(d.join("key-only.pem")), false).client_config().unwrap_err();
        assert!(matches!(&err, TlsError::ServerCa { problem: PemProblem::Empty("CERTIFICATE"), .. }), "{err:?}");
        assert!(err.to_string().starts_with("CA bundle "), "{err}");
        let mut no_key = profile(ServerTrust::WebPki, true);
        no_key.identity = Some((d.join("edge.pem"), missing));
        assert!(matches!(no_key.client_config(), Err(TlsError::Load { .. })));
    }
}
