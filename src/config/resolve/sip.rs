//! `[[sip.listener]]`, `[sip]` and `[federation]` (DESIGN §4): the SIP listeners (TCP, or TLS
//! with the partners' CA and revocation list), the internal next hop, the organisation's own
//! domains, and the federation lists and thresholds.

use std::collections::BTreeSet;

use super::super::file::{FederationFile, PartnerFile, SipFile, SipListenerFile};
use super::super::sip::{
    AllowedPartner, ClientAuthMode, DEFAULT_MAX_SIP_MESSAGE_BYTES, FederationConfig, MAX_PARTNER_DOMAIN, NextHop, SipConfig,
    SipListenerConfig, SipTransport,
};
use super::server::socket_addr;
use super::{Checker, valid_host_name};

/// `[[sip.listener]]` and `[sip]`; `taken` holds the names of the HTTP listeners (names are
/// unique across both kinds).
pub(super) fn resolve_sip(c: &mut Checker<'_>, listeners: Vec<Option<SipListenerFile>>, raw: SipFile, taken: &[String]) -> SipConfig {
    let mut names: BTreeSet<String> = taken.iter().cloned().collect();
    let mut resolved = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let Some(listener) = listener else { continue };
        if let Some(listener) = resolve_listener(c, &format!("sip.listener[{i}]"), listener, &mut names) {
            resolved.push(listener);
        }
    }
    let local_domains = raw
        .local_domains
        .unwrap_or_default()
        .iter()
        .enumerate()
        .filter_map(|(i, d)| domain(c, &format!("sip.local_domains[{i}]"), d))
        .collect();
    let next_hop = match raw.next_hop.as_deref() {
        Some(text) => next_hop(c, text),
        None if !resolved.is_empty() => {
            c.err("sip.next_hop", "missing", "set the internal call control, e.g. next_hop = \"sip:cucm.corp.example:5060;transport=tcp\"");
            None
        }
        None => None,
    };
    let next_hop_ca = raw.next_hop_ca.as_deref().and_then(|text| ca_bundle(c, "sip.next_hop_ca", text));
    if next_hop_ca.is_some() && next_hop.as_ref().is_some_and(|hop| hop.transport != SipTransport::Tls) {
        c.err("sip.next_hop_ca", "has no effect on a TCP next hop", "set transport=tls (or sips:) in next_hop, or remove next_hop_ca");
    }
    let max_message_bytes =
        c.bounded("sip.max_message_bytes", raw.max_message_bytes, DEFAULT_MAX_SIP_MESSAGE_BYTES as u64, 1024, 1 << 20) as usize;
    SipConfig {
        listeners: resolved,
        local_domains,
        next_hop,
        next_hop_ca,
        record_route: raw.record_route.unwrap_or(true),
        max_message_bytes,
    }
}

fn resolve_listener(c: &mut Checker<'_>, path: &str, raw: SipListenerFile, names: &mut BTreeSet<String>) -> Option<SipListenerConfig> {
    let name = match raw.name {
        Some(name) if name.is_empty() || name.len() > 64 => {
            c.err(format!("{path}.name"), format!("{name:?} is not a usable name"), "use 1 to 64 characters");
            None
        }
        Some(name) if !names.insert(name.clone()) => {
            c.err(
                format!("{path}.name"),
                format!("{name:?} is used twice"),
                "give every listener ([[listener]] and [[sip.listener]]) its own name",
            );
            None
        }
        Some(name) => Some(name),
        None => {
            c.err(format!("{path}.name"), "missing", "name the listener, e.g. name = \"federation\"");
            None
        }
    };
    let address = socket_addr(c, &format!("{path}.address"), raw.address.as_deref());
    let transport = match raw.transport.as_deref() {
        None | Some("tls") => SipTransport::Tls,
        Some("tcp") => SipTransport::Tcp,
        Some(other) => {
            c.err(format!("{path}.transport"), format!("{other:?} is not a transport"), "use \"tcp\" or \"tls\" (UDP is not served)");
            SipTransport::Tls
        }
    };
    let client_auth = match (raw.client_auth.as_deref(), transport) {
        (None, SipTransport::Tls) => ClientAuthMode::Required,
        (None | Some("none"), _) => ClientAuthMode::None,
        (Some("optional"), SipTransport::Tls) => ClientAuthMode::Optional,
        (Some("required"), SipTransport::Tls) => ClientAuthMode::Required,
        (Some("optional" | "required"), SipTransport::Tcp) => {
            c.err(
                format!("{path}.client_auth"),
                "needs transport = \"tls\"",
                "client certificates exist only on TLS; set transport = \"tls\"",
            );
            ClientAuthMode::None
        }
        (Some(other), _) => {
            c.err(format!("{path}.client_auth"), format!("{other:?} is not a mode"), "use \"none\", \"optional\" or \"required\"");
            ClientAuthMode::None
        }
    };
    let ca = raw.ca.as_deref().map(|text| c.existing_file(&format!("{path}.ca"), text, "CA bundle (PEM)"));
    if ca.is_none() && client_auth != ClientAuthMode::None {
        c.err(
            format!("{path}.ca"),
            "missing",
            "name the PEM bundle of the CAs that sign partner certificates, or set client_auth = \"none\"",
        );
    }
    let crl = raw.crl.as_deref().map(|text| c.existing_file(&format!("{path}.crl"), text, "CRL (PEM)"));
    if crl.is_some() && client_auth == ClientAuthMode::None {
        c.err(
            format!("{path}.crl"),
            "has no effect without client certificates",
            "set client_auth = \"optional\" or \"required\", or remove crl",
        );
    }
    if transport == SipTransport::Tcp && (raw.cert.is_some() || raw.key.is_some()) {
        c.err(format!("{path}.cert"), "has no effect on a TCP listener", "set transport = \"tls\", or remove cert and key");
    }
    let cert_key = match (raw.cert.as_deref(), raw.key.as_deref()) {
        (Some(cert), Some(key)) => Some((
            c.existing_file(&format!("{path}.cert"), cert, "certificate (PEM)"),
            c.existing_file(&format!("{path}.key"), key, "key (PEM)"),
        )),
        (None, None) => None,
        _ => {
            c.err(path, "cert and key go together", "set both cert and key, or neither (the web certificate is used)");
            None
        }
    };
    Some(SipListenerConfig { name: name?, address: address?, transport, client_auth, ca, crl, cert_key })
}

/// `sip:host[:port][;transport=tcp|tls]` (or `sips:`, TLS): where requests are forwarded.
fn next_hop(c: &mut Checker<'_>, text: &str) -> Option<NextHop> {
    let hint = "write a SIP URI such as \"sip:cucm.corp.example:5060;transport=tcp\" (transport tcp or tls)";
    let (scheme_tls, rest) = if let Some(rest) = text.strip_prefix("sips:") {
        (true, rest)
    } else if let Some(rest) = text.strip_prefix("sip:") {
        (false, rest)
    } else {
        c.err("sip.next_hop", format!("{text:?} is not a sip: or sips: URI"), hint);
        return None;
    };
    let mut parts = rest.split(';');
    let hostport = parts.next().unwrap_or_default();
    let mut transport = if scheme_tls { SipTransport::Tls } else { SipTransport::Tcp };
    for parameter in parts {
        match parameter.to_ascii_lowercase().as_str() {
            "transport=tcp" if !scheme_tls => transport = SipTransport::Tcp,
            "transport=tls" => transport = SipTransport::Tls,
            "lr" => {}
            other => {
                c.err("sip.next_hop", format!("parameter {other:?} is not supported"), hint);
                return None;
            }
        }
    }
    let (host, port) = match hostport.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || hostport.starts_with('[') => match port.parse::<u16>() {
            Ok(port) if port > 0 => (host, port),
            _ => {
                c.err("sip.next_hop", format!("{port:?} is not a port"), hint);
                return None;
            }
        },
        _ => (hostport, if transport == SipTransport::Tls { 5061 } else { 5060 }),
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.parse::<std::net::IpAddr>().is_err() && !valid_host_name(bare) {
        c.err("sip.next_hop", format!("{host:?} is not a host"), hint);
        return None;
    }
    Some(NextHop { host: bare.to_ascii_lowercase(), port, transport })
}

/// A PEM bundle of CA certificates: it must exist and hold at least one `CERTIFICATE` block,
/// each a readable X.509 certificate (the trust of a TLS next hop is checked at `check`, not
/// discovered when the first request fails).
fn ca_bundle(c: &mut Checker<'_>, path: &str, text: &str) -> Option<std::path::PathBuf> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let file = c.existing_file(path, text, "CA bundle (PEM)");
    if !file.is_file() {
        return None;
    }
    let hint = "name a PEM file of CA certificates (-----BEGIN CERTIFICATE----- blocks)";
    let certificates = match CertificateDer::pem_file_iter(&file).and_then(Iterator::collect::<Result<Vec<_>, _>>) {
        Ok(certificates) => certificates,
        Err(error) => {
            c.err(path, format!("{text:?} cannot be read as PEM: {error}"), hint);
            return None;
        }
    };
    if certificates.is_empty() {
        c.err(path, format!("{text:?} holds no CERTIFICATE block"), hint);
        return None;
    }
    for (i, certificate) in certificates.iter().enumerate() {
        if x509_parser::parse_x509_certificate(certificate.as_ref()).is_err() {
            c.err(path, format!("{text:?}: certificate {} is not a valid X.509 certificate", i + 1), hint);
            return None;
        }
    }
    Some(file)
}

/// A domain name of the lists or `local_domains`, lower-cased.
fn domain(c: &mut Checker<'_>, path: &str, text: &str) -> Option<String> {
    if text.len() > MAX_PARTNER_DOMAIN || !valid_host_name(text) {
        c.err(
            path,
            format!("{text:?} is not a domain name"),
            format!("use a DNS name of at most {MAX_PARTNER_DOMAIN} characters, e.g. \"partner.example\""),
        );
        return None;
    }
    Some(text.to_ascii_lowercase())
}

/// `[federation]` with its allow and block lists.
pub(super) fn resolve_federation(
    c: &mut Checker<'_>,
    raw: FederationFile,
    allow: Vec<Option<PartnerFile>>,
    block: Vec<Option<PartnerFile>>,
) -> FederationConfig {
    let defaults = FederationConfig::default();
    let error_share = match raw.error_share {
        None => defaults.error_share,
        Some(share) if share > 0.0 && share <= 1.0 => share,
        Some(share) => {
            c.err("federation.error_share", format!("{share} is out of range"), "use a share above 0 and at most 1, e.g. 0.5");
            defaults.error_share
        }
    };
    let mut seen = BTreeSet::new();
    let mut allowed = Vec::new();
    for (i, entry) in allow.into_iter().enumerate() {
        let path = format!("federation.allow[{i}]");
        let Some(entry) = entry else { continue };
        let Some(name) = listed_domain(c, &path, entry.domain.as_deref(), &mut seen) else { continue };
        let edge = entry.edge.as_deref().and_then(|edge| domain(c, &format!("{path}.edge"), edge));
        allowed.push(AllowedPartner { domain: name, edge });
    }
    let mut seen = BTreeSet::new();
    let mut blocked = Vec::new();
    for (i, entry) in block.into_iter().enumerate() {
        let path = format!("federation.block[{i}]");
        let Some(entry) = entry else { continue };
        if entry.edge.is_some() {
            c.err(format!("{path}.edge"), "only allow entries have an edge", "remove edge from the block entry");
        }
        if let Some(name) = listed_domain(c, &path, entry.domain.as_deref(), &mut seen) {
            blocked.push(name);
        }
    }
    FederationConfig {
        discovery: raw.discovery.unwrap_or(defaults.discovery),
        discovered_rate: c.bounded("federation.discovered_rate", raw.discovered_rate, defaults.discovered_rate.into(), 1, 1_000_000) as u32,
        max_distinct_users: c.bounded(
            "federation.max_distinct_users",
            raw.max_distinct_users,
            defaults.max_distinct_users.into(),
            1,
            1_000_000,
        ) as u32,
        error_share,
        error_min_sample: c.bounded("federation.error_min_sample", raw.error_min_sample, defaults.error_min_sample.into(), 1, 1_000_000)
            as u32,
        allow: allowed,
        block: blocked,
    }
}

fn listed_domain(c: &mut Checker<'_>, path: &str, text: Option<&str>, seen: &mut BTreeSet<String>) -> Option<String> {
    let Some(text) = text else {
        c.err(format!("{path}.domain"), "missing", "name the partner domain, e.g. domain = \"partner.example\"");
        return None;
    };
    let name = domain(c, &format!("{path}.domain"), text)?;
    if !seen.insert(name.clone()) {
        c.err(format!("{path}.domain"), format!("{name:?} is listed twice"), "keep one entry per domain");
        return None;
    }
    Some(name)
}

#[cfg(test)]
mod tests;
