//! The web certificate (DESIGN §5 "Certificates"): checking an operator's PEM bundle before it
//! is installed (key matches, chain order, validity dates, name), the details of a
//! certificate, the CSR subject fields and CSR generation with the key kept in `state_dir`,
//! and the expiry notice shown 30 days ahead.
//!
//! Files under `state_dir/tls/`: `installed.pem` + `installed.key` (added by `web cert add`;
//! they win over `[tls]` files and the self-signed pair), `self-signed.pem` + `.key`,
//! `csr.pem` + `csr.key` (from `web cert gen-csr`; the key is used by `add` when the
//! bundle brings none).

use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// Installed certificate chain under `state_dir/tls`.
pub const INSTALLED_CERT: &str = "installed.pem";
/// Its key.
pub const INSTALLED_KEY: &str = "installed.key";
/// The CSR written by `gen-csr`.
pub const CSR_FILE: &str = "csr.pem";
/// The CSR's private key.
pub const CSR_KEY: &str = "csr.key";
/// Store key of the CSR subject fields.
pub const CSR_FIELDS_KEY: &str = "operate:csr-fields";
/// The expiry notice appears this many days ahead.
pub const EXPIRY_NOTICE_DAYS: i64 = 30;
/// Largest PEM bundle accepted.
pub const MAX_BUNDLE_BYTES: usize = 256 * 1024;

/// What a certificate says about itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CertDetails {
    pub subject: String,
    pub subject_alt_names: Vec<String>,
    pub issuer: String,
    /// Colon-separated hex.
    pub serial: String,
    /// RFC 3339.
    pub not_before: String,
    pub not_after: String,
    /// Seconds since the epoch (for scripts and the metric).
    pub not_after_unix: i64,
    pub key_type: String,
    /// SHA-256 of the DER certificate, colon-separated hex.
    pub fingerprint_sha256: String,
    /// Certificates in the chain (leaf included).
    pub chain_length: usize,
}

/// The subject fields a CSR is made from (`web cert details edit`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CsrFields {
    pub common_name: String,
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
    #[serde(default)]
    pub organization: String,
    #[serde(default)]
    pub organizational_unit: String,
    #[serde(default)]
    pub locality: String,
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub country: String,
}

/// A checked bundle, ready to install.
#[derive(Debug)]
pub struct Bundle {
    pub chain_pem: String,
    pub key_pem: String,
    pub details: CertDetails,
}

fn hex_colon(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_else(|_| t.to_string())
}

/// The directory of certificate files under `state_dir`.
pub fn tls_dir(state_dir: &Path) -> PathBuf {
    state_dir.join(crate::net::tls::SELF_SIGNED_DIR)
}

/// Parses every `CERTIFICATE` item of a PEM text.
pub fn parse_chain(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(pem).collect::<Result<_, _>>().map_err(|e| format!("unreadable PEM: {e}"))?;
    if chain.is_empty() {
        return Err("no certificate (-----BEGIN CERTIFICATE-----) in the file".into());
    }
    Ok(chain)
}

fn key_type(cert: &X509Certificate<'_>) -> String {
    use x509_parser::public_key::PublicKey;
    match cert.public_key().parsed() {
        Ok(PublicKey::RSA(rsa)) => format!("RSA {}", rsa.key_size()),
        Ok(PublicKey::EC(point)) => {
            let curve = cert
                .public_key()
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|oid| match oid.to_id_string().as_str() {
                    "1.2.840.10045.3.1.7" => "P-256".to_string(),
                    "1.3.132.0.34" => "P-384".to_string(),
                    other => other.to_string(),
                })
                .unwrap_or_else(|| "unknown curve".into());
            format!("EC {curve} ({} bits)", point.key_size())
        }
        Ok(_) if cert.public_key().algorithm.algorithm.to_id_string() == "1.3.101.112" => "Ed25519".into(),
        _ => cert.public_key().algorithm.algorithm.to_id_string(),
    }
}

fn names_of(cert: &X509Certificate<'_>) -> Vec<String> {
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(dns) => names.push(dns.to_string()),
                GeneralName::IPAddress(ip) => match ip.len() {
                    4 => names.push(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*ip).unwrap_or([0; 4])).to_string()),
                    16 => names.push(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*ip).unwrap_or([0; 16])).to_string()),
                    _ => {}
                },
                _ => {}
            }
        }
    }
    names
}

/// Details of the first (leaf) certificate of `chain`.
pub fn details(chain: &[CertificateDer<'_>]) -> Result<CertDetails, String> {
    let leaf = chain.first().ok_or("empty chain")?;
    let (_, cert) = X509Certificate::from_der(leaf.as_ref()).map_err(|e| format!("unreadable certificate: {e}"))?;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, leaf.as_ref());
    Ok(CertDetails {
        subject: cert.subject().to_string(),
        subject_alt_names: names_of(&cert),
        issuer: cert.issuer().to_string(),
        serial: hex_colon(cert.raw_serial()),
        not_before: rfc3339(cert.validity().not_before.to_datetime()),
        not_after: rfc3339(cert.validity().not_after.to_datetime()),
        not_after_unix: cert.validity().not_after.timestamp(),
        key_type: key_type(&cert),
        fingerprint_sha256: hex_colon(digest.as_ref()),
        chain_length: chain.len(),
    })
}

/// Reads the details of a PEM chain file.
pub fn details_of_file(path: &Path) -> Result<CertDetails, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    details(&parse_chain(&pem)?)
}

/// Whether certificate name `pattern` (possibly `*.example.com`) covers `host`.
fn name_matches(pattern: &str, host: &str) -> bool {
    let (pattern, host) = (pattern.to_ascii_lowercase(), host.to_ascii_lowercase());
    match pattern.strip_prefix("*.") {
        Some(suffix) => host.split_once('.').is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
        None => pattern == host,
    }
}

/// Checks a PEM bundle (chain, and the key unless `fallback_key_pem` supplies it) for
/// `server_name` at `now`; every refusal says what is wrong and what to do.
pub fn check_bundle(pem: &[u8], server_name: &str, now: OffsetDateTime, fallback_key_pem: Option<&str>) -> Result<Bundle, String> {
    if pem.len() > MAX_BUNDLE_BYTES {
        return Err(format!("the file is larger than {MAX_BUNDLE_BYTES} bytes"));
    }
    let chain = parse_chain(pem)?;
    let (key, key_pem) = match PrivateKeyDer::from_pem_slice(pem) {
        Ok(key) => (key, pem_items(pem, "PRIVATE KEY")),
        Err(_) => match fallback_key_pem {
            Some(csr_key) => (
                PrivateKeyDer::from_pem_slice(csr_key.as_bytes()).map_err(|e| format!("the gen-csr key is unreadable: {e}"))?,
                csr_key.to_string(),
            ),
            None => return Err("no private key in the file (and no key from `web cert gen-csr`): append the key PEM".into()),
        },
    };
    let provider = crate::net::tls::provider();
    let signing_key = provider.key_provider.load_private_key(key).map_err(|e| format!("unusable private key: {e}"))?;
    let certified = rustls::sign::CertifiedKey::new(chain.clone(), signing_key);
    if certified.keys_match().is_err() {
        return Err("the private key does not match the certificate (the first certificate must be the server's own)".into());
    }
    let parsed: Vec<X509Certificate<'_>> = chain
        .iter()
        .enumerate()
        .map(|(i, der)| {
            X509Certificate::from_der(der.as_ref()).map(|(_, c)| c).map_err(|e| format!("certificate {} is unreadable: {e}", i + 1))
        })
        .collect::<Result<_, _>>()?;
    for (i, pair) in parsed.windows(2).enumerate() {
        if pair[0].issuer().as_raw() != pair[1].subject().as_raw() {
            return Err(format!(
                "chain out of order: certificate {} ({}) was not issued by certificate {} ({}); order the file leaf first, then each issuer",
                i + 1,
                pair[0].subject(),
                i + 2,
                pair[1].subject()
            ));
        }
    }
    for (i, cert) in parsed.iter().enumerate() {
        let (from, until) = (cert.validity().not_before.to_datetime(), cert.validity().not_after.to_datetime());
        if now < from {
            return Err(format!("certificate {} ({}) is not valid before {}", i + 1, cert.subject(), rfc3339(from)));
        }
        if now > until {
            return Err(format!("certificate {} ({}) expired at {}", i + 1, cert.subject(), rfc3339(until)));
        }
    }
    let leaf = &parsed[0];
    let mut names = names_of(leaf);
    if names.is_empty() {
        names.extend(leaf.subject().iter_common_name().filter_map(|cn| cn.as_str().ok()).map(str::to_string));
    }
    if !names.iter().any(|n| name_matches(n, server_name)) {
        return Err(format!(
            "the certificate is for {} but server.name is {server_name:?}: get a certificate for that name, or change server.name",
            if names.is_empty() { "no name".to_string() } else { names.join(", ") }
        ));
    }
    let chain_pem = pem_items(pem, "CERTIFICATE");
    Ok(Bundle { chain_pem, key_pem, details: details(&chain)? })
}

/// The PEM blocks of `kind` (`CERTIFICATE`, or any `… PRIVATE KEY`) in order.
fn pem_items(pem: &[u8], kind: &str) -> String {
    let text = String::from_utf8_lossy(pem);
    let mut out = String::new();
    let mut inside = false;
    for line in text.lines() {
        let line = line.trim_end();
        if line.starts_with("-----BEGIN ") && line.ends_with(&format!("{kind}-----")) {
            inside = true;
        }
        if inside {
            out.push_str(line);
            out.push('\n');
        }
        if inside && line.starts_with("-----END ") {
            inside = false;
        }
    }
    out
}

/// `WEB CERT EXPIRES AT: …` within [`EXPIRY_NOTICE_DAYS`] of `not_after_unix`,
/// `WEB CERT EXPIRED AT: …` after it, nothing before.
pub fn expiry_notice(not_after_unix: i64, now: OffsetDateTime) -> Option<String> {
    let at = OffsetDateTime::from_unix_timestamp(not_after_unix).ok()?;
    let shown =
        format!("{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC", at.year(), u8::from(at.month()), at.day(), at.hour(), at.minute(), at.second());
    if now >= at {
        Some(format!("WEB CERT EXPIRED AT: {shown}"))
    } else if at - now <= time::Duration::days(EXPIRY_NOTICE_DAYS) {
        Some(format!("WEB CERT EXPIRES AT: {shown}"))
    } else {
        None
    }
}

/// Writes a new ECDSA P-256 key and a CSR for `fields` into `dir`; returns the CSR PEM.
pub fn generate_csr(fields: &CsrFields, dir: &Path) -> Result<String, String> {
    if fields.common_name.trim().is_empty() {
        return Err("the CSR needs a common name: set it with `web cert details edit --cn NAME`".into());
    }
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
    let mut names = fields.subject_alt_names.clone();
    if !names.contains(&fields.common_name) {
        names.insert(0, fields.common_name.clone());
    }
    let mut params = rcgen::CertificateParams::new(names).map_err(|e| format!("invalid name: {e}"))?;
    let dn = &mut params.distinguished_name;
    dn.push(rcgen::DnType::CommonName, fields.common_name.as_str());
    for (kind, value) in [
        (rcgen::DnType::OrganizationName, &fields.organization),
        (rcgen::DnType::OrganizationalUnitName, &fields.organizational_unit),
        (rcgen::DnType::LocalityName, &fields.locality),
        (rcgen::DnType::StateOrProvinceName, &fields.state),
        (rcgen::DnType::CountryName, &fields.country),
    ] {
        if !value.is_empty() {
            dn.push(kind, value.as_str());
        }
    }
    let csr = params.serialize_request(&key).map_err(|e| e.to_string())?.pem().map_err(|e| e.to_string())?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    crate::net::tls::write_private(&dir.join(CSR_KEY), key.serialize_pem().as_bytes()).map_err(|e| e.to_string())?;
    std::fs::write(dir.join(CSR_FILE), &csr).map_err(|e| format!("cannot write the CSR: {e}"))?;
    Ok(csr)
}

/// Validates CSR fields (the country is two letters; names are non-empty DNS names).
pub fn check_fields(fields: &CsrFields) -> Result<(), String> {
    let country_ok = fields.country.is_empty() || (fields.country.len() == 2 && fields.country.bytes().all(|b| b.is_ascii_uppercase()));
    if !country_ok {
        return Err(format!("country {:?} must be two capital letters (ISO 3166), e.g. \"DE\"", fields.country));
    }
    for name in std::iter::once(&fields.common_name).chain(&fields.subject_alt_names) {
        if name.len() > 253 || name.chars().any(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '*'))) {
            return Err(format!("{name:?} is not a DNS name"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn make(name: &str, from: OffsetDateTime, until: OffsetDateTime) -> (String, String) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
        params.not_before = from;
        params.not_after = until;
        (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
    }

    #[test]
    fn a_good_bundle_passes_and_each_fault_is_named() {
        let now = OffsetDateTime::now_utc();
        let (cert, key) = make("edge.example.com", now - time::Duration::days(1), now + time::Duration::days(90));
        let bundle = check_bundle(format!("{cert}{key}").as_bytes(), "edge.example.com", now, None).unwrap();
        assert_eq!(bundle.details.subject_alt_names, vec!["edge.example.com"]);
        assert!(bundle.details.key_type.starts_with("EC P-256"), "{}", bundle.details.key_type);

        let (_, other_key) = make("edge.example.com", now, now + time::Duration::days(1));
        let err = check_bundle(format!("{cert}{other_key}").as_bytes(), "edge.example.com", now, None).unwrap_err();
        assert!(err.contains("does not match"), "{err}");
        let err = check_bundle(format!("{cert}{key}").as_bytes(), "other.example.com", now, None).unwrap_err();
        assert!(err.contains("server.name"), "{err}");
        let (old, old_key) = make("edge.example.com", now - time::Duration::days(30), now - time::Duration::days(1));
        let err = check_bundle(format!("{old}{old_key}").as_bytes(), "edge.example.com", now, None).unwrap_err();
        assert!(err.contains("expired at"), "{err}");
        let err = check_bundle(cert.as_bytes(), "edge.example.com", now, None).unwrap_err();
        assert!(err.contains("no private key"), "{err}");
        assert!(check_bundle(cert.as_bytes(), "edge.example.com", now, Some(&key)).is_ok(), "the gen-csr key completes a bare chain");
    }

    #[test]
    fn wildcards_cover_one_label_only() {
        assert!(name_matches("*.example.com", "edge.example.com"));
        assert!(!name_matches("*.example.com", "a.b.example.com"));
        assert!(!name_matches("*.example.com", "example.com"));
        assert!(name_matches("Edge.Example.com", "edge.example.COM"));
    }

    #[test]
    fn the_expiry_notice_starts_30_days_ahead() {
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let day = 86_400;
        assert_eq!(expiry_notice(1_800_000_000 + 31 * day, now), None);
        assert!(expiry_notice(1_800_000_000 + 29 * day, now).unwrap().starts_with("WEB CERT EXPIRES AT: "));
        assert!(expiry_notice(1_800_000_000 - day, now).unwrap().starts_with("WEB CERT EXPIRED AT: "));
    }

    #[test]
    fn csr_fields_are_checked() {
        let mut fields = CsrFields { common_name: "edge.example.com".into(), country: "DE".into(), ..Default::default() };
        assert!(check_fields(&fields).is_ok());
        fields.country = "Germany".into();
        assert!(check_fields(&fields).is_err());
        fields.country.clear();
        fields.subject_alt_names = vec!["bad name".into()];
        assert!(check_fields(&fields).is_err());
    }
}
