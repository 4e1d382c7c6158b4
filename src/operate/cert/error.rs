//! Why a certificate operation failed: generating the self-signed certificate
//! ([`CertError`]), reading a chain and its details ([`ChainError`]), checking an operator's
//! bundle ([`BundleError`]), checking the CSR subject fields ([`FieldsError`]) and writing a
//! CSR ([`CsrError`]). The messages are what the admin API and the CLI show, word for word.

use std::path::PathBuf;

/// A certificate that x509-parser could not read.
pub type X509ParseError = x509_parser::nom::Err<x509_parser::error::X509Error>;

/// Why the self-signed certificate could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
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

/// Why a certificate chain (PEM) or its leaf's details could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// The chain file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The text is not valid PEM.
    #[error("unreadable PEM: {0}")]
    Pem(#[source] rustls_pki_types::pem::Error),
    /// The PEM holds no `CERTIFICATE` item.
    #[error("no certificate (-----BEGIN CERTIFICATE-----) in the file")]
    NoCertificate,
    /// The chain has no certificate to describe.
    #[error("empty chain")]
    Empty,
    /// The leaf certificate is not valid X.509.
    #[error("unreadable certificate: {0}")]
    Unreadable(#[source] X509ParseError),
}

/// Why an operator's PEM bundle is refused; every message says what is wrong and what to do.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The bundle exceeds [`super::MAX_BUNDLE_BYTES`].
    #[error("the file is larger than {max} bytes")]
    TooLarge { max: usize },
    /// The chain could not be read.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// The bundle brings no key and the key left by `gen-csr` is not PEM.
    #[error("the gen-csr key is unreadable: {0}")]
    CsrKeyUnreadable(#[source] rustls_pki_types::pem::Error),
    /// Neither the bundle nor `gen-csr` supplies a private key.
    #[error("no private key in the file (and no key from `web cert gen-csr`): append the key PEM")]
    NoKey,
    /// rustls cannot sign with the key.
    #[error("unusable private key: {0}")]
    UnusableKey(#[source] rustls::Error),
    /// The key is not the leaf certificate's.
    #[error("the private key does not match the certificate (the first certificate must be the server's own)")]
    KeyMismatch,
    /// Certificate `position` (1 = leaf) is not valid X.509.
    #[error("certificate {position} is unreadable: {source}")]
    Unreadable {
        position: usize,
        #[source]
        source: X509ParseError,
    },
    /// Certificate `position` was not issued by the next one in the file.
    #[error(
        "chain out of order: certificate {position} ({subject}) was not issued by certificate {} ({next_subject}); order the file leaf first, then each issuer",
        .position + 1
    )]
    OutOfOrder { position: usize, subject: String, next_subject: String },
    /// Certificate `position` is not valid yet (`not_before` in RFC 3339).
    #[error("certificate {position} ({subject}) is not valid before {not_before}")]
    NotYetValid { position: usize, subject: String, not_before: String },
    /// Certificate `position` has expired (`not_after` in RFC 3339).
    #[error("certificate {position} ({subject}) expired at {not_after}")]
    Expired { position: usize, subject: String, not_after: String },
    /// The leaf's names do not cover `server.name`.
    #[error(
        "the certificate is for {} but server.name is {server_name:?}: get a certificate for that name, or change server.name",
        names_shown(.names)
    )]
    NameMismatch { names: Vec<String>, server_name: String },
}

fn names_shown(names: &[String]) -> String {
    if names.is_empty() { "no name".to_string() } else { names.join(", ") }
}

/// Why CSR subject fields are refused.
#[derive(Debug, thiserror::Error)]
pub enum FieldsError {
    /// The country is not two capital letters.
    #[error("country {country:?} must be two capital letters (ISO 3166), e.g. \"DE\"")]
    Country { country: String },
    /// The common name or a subject alternative name is not a DNS name.
    #[error("{name:?} is not a DNS name")]
    NotDnsName { name: String },
}

/// Why no CSR could be generated.
#[derive(Debug, thiserror::Error)]
pub enum CsrError {
    /// The fields have no common name.
    #[error("the CSR needs a common name: set it with `web cert details edit --cn NAME`")]
    NoCommonName,
    /// rcgen could not generate the key.
    #[error(transparent)]
    Key(rcgen::Error),
    /// rcgen refused a subject alternative name.
    #[error("invalid name: {0}")]
    InvalidName(#[source] rcgen::Error),
    /// rcgen could not sign or encode the request.
    #[error(transparent)]
    Serialize(rcgen::Error),
    /// The directory for the key and CSR could not be created.
    #[error("cannot create {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The CSR key could not be written.
    #[error("{source}")]
    WriteKey {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The CSR could not be written.
    #[error("cannot write the CSR: {0}")]
    WriteCsr(#[source] std::io::Error),
}
