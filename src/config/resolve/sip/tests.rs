//! Tests of `[[sip.listener]]`, `[sip]` and `[federation]`: defaults, every refusal with its
//! key path, and event 14518 for a domain on both lists.

use std::path::Path;

use super::super::super::sip::{ClientAuthMode, NextHop, SipTransport};
use super::super::super::*;

const SERVER: &str = "[server]\nname = \"edge.test\"\nstate_dir = \"state\"\nlog_dir = \"logs\"\n";

/// A CA file that exists for the checks (its contents are read at start, not by `check`).
fn existing() -> String {
    std::env::current_exe().unwrap().display().to_string()
}

fn resolve(text: &str) -> Result<Config, Vec<String>> {
    Config::from_toml_str(&format!("{SERVER}{text}"), Path::new("/etc/portcullis"))
        .map_err(|e| e.0.iter().map(ToString::to_string).collect())
}

#[test]
fn a_sip_only_edge_is_valid_and_gets_the_documented_defaults() {
    let ca = existing();
    let config = resolve(&format!(
        "[[sip.listener]]\nname = \"federation\"\naddress = \"0.0.0.0:5061\"\nca = \"{ca}\"\ncrl = \"{ca}\"\n\
         [sip]\nlocal_domains = [\"Corp.Example\"]\nnext_hop = \"sip:cucm.corp.example;transport=tcp\"\n"
    ))
    .unwrap();
    assert!(config.listeners.is_empty(), "no HTTP listener is needed next to a SIP one");
    let listener = &config.sip.listeners[0];
    assert_eq!(
        (listener.transport, listener.client_auth),
        (SipTransport::Tls, ClientAuthMode::Required),
        "TLS with required client certificates by default"
    );
    assert_eq!(listener.crl.as_deref(), Some(Path::new(&ca)));
    assert_eq!(config.sip.local_domains, vec!["corp.example".to_string()]);
    assert_eq!(config.sip.next_hop, Some(NextHop { host: "cucm.corp.example".into(), port: 5060, transport: SipTransport::Tcp }));
    assert!(config.sip.record_route);
    assert_eq!(config.sip.max_message_bytes, 65_536);
    let federation = &config.federation;
    assert!(federation.discovery);
    assert_eq!((federation.discovered_rate, federation.max_distinct_users, federation.error_min_sample), (20, 1000, 50));
    assert!((federation.error_share - 0.5).abs() < f64::EPSILON);
    assert!(federation.warnings().is_empty());
}

#[test]
fn next_hops_take_sips_ipv6_and_explicit_ports() {
    let hop = |uri: &str| {
        resolve(&format!("[[listener]]\nname = \"http\"\naddress = \"127.0.0.1:8080\"\n[sip]\nnext_hop = \"{uri}\"\n"))
            .unwrap()
            .sip
            .next_hop
            .unwrap()
    };
    assert_eq!(hop("sips:cucm.corp.example"), NextHop { host: "cucm.corp.example".into(), port: 5061, transport: SipTransport::Tls });
    assert_eq!(
        hop("sip:[2001:db8::5]:5070;transport=TLS;lr"),
        NextHop { host: "2001:db8::5".into(), port: 5070, transport: SipTransport::Tls }
    );
    assert_eq!(hop("sip:10.0.0.5:5062"), NextHop { host: "10.0.0.5".into(), port: 5062, transport: SipTransport::Tcp });
}

#[test]
fn every_refusal_names_its_key() {
    let errors = resolve(
        "[[listener]]\nname = \"edge\"\naddress = \"127.0.0.1:8080\"\n\
         [[sip.listener]]\nname = \"edge\"\naddress = \"0.0.0.0:5061\"\ntransport = \"udp\"\nclient_auth = \"sometimes\"\n\
         [[sip.listener]]\nname = \"plain\"\naddress = \"nowhere\"\ntransport = \"tcp\"\nclient_auth = \"required\"\ncert = \"/x.pem\"\n\
         [[sip.listener]]\nname = \"tls\"\naddress = \"0.0.0.0:5062\"\n\
         [sip]\nnext_hop = \"http://cucm\"\nmax_message_bytes = 10\nlocal_domains = [\"not a domain\"]\n\
         [federation]\ndiscovered_rate = 0\nerror_share = 1.5\n\
         [[federation.allow]]\ndomain = \"partner.example\"\n[[federation.allow]]\ndomain = \"PARTNER.example\"\n\
         [[federation.block]]\ndomain = \"spam.example\"\nedge = \"x.example\"\n",
    )
    .unwrap_err();
    for expected in [
        "sip.listener[0].name: \"edge\" is used twice",
        "sip.listener[0].transport: \"udp\" is not a transport",
        "sip.listener[0].client_auth: \"sometimes\" is not a mode",
        "sip.listener[1].address: \"nowhere\" is not an IP:port address",
        "sip.listener[1].client_auth: needs transport = \"tls\"",
        "sip.listener[1].cert: has no effect on a TCP listener",
        "sip.listener[2].ca: missing",
        "sip.next_hop: \"http://cucm\" is not a sip: or sips: URI",
        "sip.max_message_bytes: 10 is out of range",
        "sip.local_domains[0]: \"not a domain\" is not a domain name",
        "federation.discovered_rate: 0 is out of range",
        "federation.error_share: 1.5 is out of range",
        "federation.allow[1].domain: \"partner.example\" is listed twice",
        "federation.block[0].edge: only allow entries have an edge",
    ] {
        assert!(errors.iter().any(|e| e.starts_with(expected)), "missing {expected:?} in {errors:#?}");
    }
    let unknown = resolve("[[listener]]\nname = \"h\"\naddress = \"127.0.0.1:1\"\n[sip]\nnext_hops = \"sip:x\"\n").unwrap_err();
    assert!(unknown.iter().any(|e| e.starts_with("sip.next_hops: unknown field")), "{unknown:?}");
    let missing_hop = resolve("[[sip.listener]]\nname = \"s\"\naddress = \"0.0.0.0:5060\"\ntransport = \"tcp\"\n").unwrap_err();
    assert!(missing_hop.iter().any(|e| e.starts_with("sip.next_hop: missing")), "{missing_hop:?}");
    let long = format!("{}.example", "a".repeat(250));
    let too_long = resolve(&format!("[[listener]]\nname = \"h\"\naddress = \"127.0.0.1:1\"\n[[federation.block]]\ndomain = \"{long}\"\n"))
        .unwrap_err();
    assert!(too_long.iter().any(|e| e.starts_with("federation.block[0].domain:")), "names over 256 characters are refused: {too_long:?}");
}

#[test]
fn a_domain_on_both_lists_is_a_warning_14518_not_an_error() {
    let config = resolve(
        "[[listener]]\nname = \"h\"\naddress = \"127.0.0.1:1\"\n\
         [[federation.allow]]\ndomain = \"Partner.Example\"\nedge = \"sip.partner.example\"\n[[federation.block]]\ndomain = \"partner.example\"\n",
    )
    .unwrap();
    assert_eq!(config.federation.on_both_lists(), vec!["partner.example"]);
    assert_eq!(
        config.federation.warnings(),
        vec!["warning 14518: partner domain \"partner.example\" is on both the allow and the block list; it is blocked".to_string()]
    );
    assert_eq!(config.federation.allow[0].edge.as_deref(), Some("sip.partner.example"));
}
