//! Typed `[[sip.listener]]`, `[sip]` and `[federation]` settings (DESIGN §4): where the SIP
//! federation edge listens and how (TCP, or TLS with partners' client certificates and a
//! revocation list), where it forwards, and the federation policy (allow, block, discovered
//! partners' throttle, the watch list's thresholds).

use std::net::SocketAddr;
use std::path::PathBuf;

/// Default `[sip] max_message_bytes`.
pub const DEFAULT_MAX_SIP_MESSAGE_BYTES: usize = 65_536;
/// Longest partner domain name accepted in the lists.
pub const MAX_PARTNER_DOMAIN: usize = 256;
/// The event number of "a domain is on both the allow and the block list" (a warning).
pub const BOTH_LISTS_EVENT: u32 = 14518;

/// How a SIP listener carries messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SipTransport {
    Tcp,
    Tls,
}

/// Whether a TLS SIP listener asks partners for a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuthMode {
    None,
    Optional,
    Required,
}

/// One `[[sip.listener]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct SipListenerConfig {
    pub name: String,
    pub address: SocketAddr,
    pub transport: SipTransport,
    /// `None` on TCP listeners.
    pub client_auth: ClientAuthMode,
    /// CAs that sign partner edge certificates (required unless `client_auth = "none"`).
    pub ca: Option<PathBuf>,
    /// Revoked partner certificates: their handshakes are refused.
    pub crl: Option<PathBuf>,
    /// Its own certificate and key; else the web certificate.
    pub cert_key: Option<(PathBuf, PathBuf)>,
}

/// `[sip] next_hop`: the internal call control / registrar everything is forwarded to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextHop {
    pub host: String,
    pub port: u16,
    pub transport: SipTransport,
}

/// `[[sip.listener]]` and `[sip]`.
#[derive(Debug, Clone, PartialEq)]
pub struct SipConfig {
    pub listeners: Vec<SipListenerConfig>,
    /// The organisation's own SIP domains (lower case): remote users, not partners.
    pub local_domains: Vec<String>,
    /// Required when there is a SIP listener.
    pub next_hop: Option<NextHop>,
    /// PEM bundle of the CAs a TLS next hop's certificate must chain to; `None`: the public
    /// web PKI roots (webpki-roots).
    pub next_hop_ca: Option<PathBuf>,
    pub record_route: bool,
    pub max_message_bytes: usize,
}

/// One `[[federation.allow]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedPartner {
    /// Lower case.
    pub domain: String,
    /// The partner's edge FQDN its certificate names, when it differs from `domain`.
    pub edge: Option<String>,
}

/// `[federation]`.
#[derive(Debug, Clone, PartialEq)]
pub struct FederationConfig {
    /// `false`: only allow-listed partners are accepted.
    pub discovery: bool,
    /// Requests per second per discovered partner domain (token bucket, burst = rate).
    pub discovered_rate: u32,
    /// Watch list: more distinct local URIs addressed → further requests 403.
    pub max_distinct_users: u32,
    /// Watch list: share of 404/480/484/604 finals …
    pub error_share: f64,
    /// … over at least this many finals → flagged (1 request/s).
    pub error_min_sample: u32,
    pub allow: Vec<AllowedPartner>,
    /// Blocked partner domains (lower case); the block list wins.
    pub block: Vec<String>,
}

impl Default for SipConfig {
    fn default() -> SipConfig {
        SipConfig {
            listeners: Vec::new(),
            local_domains: Vec::new(),
            next_hop: None,
            next_hop_ca: None,
            record_route: true,
            max_message_bytes: DEFAULT_MAX_SIP_MESSAGE_BYTES,
        }
    }
}

impl Default for FederationConfig {
    fn default() -> FederationConfig {
        FederationConfig {
            discovery: true,
            discovered_rate: 20,
            max_distinct_users: 1000,
            error_share: 0.5,
            error_min_sample: 50,
            allow: Vec::new(),
            block: Vec::new(),
        }
    }
}

/// `text` as a partner domain of the lists (lower case, one trailing dot dropped), or `None`
/// when it is not a DNS name of at most [`MAX_PARTNER_DOMAIN`] characters.
pub fn partner_domain(text: &str) -> Option<String> {
    let text = text.strip_suffix('.').unwrap_or(text);
    (text.len() <= MAX_PARTNER_DOMAIN && super::valid_host_name(text)).then(|| text.to_ascii_lowercase())
}

impl FederationConfig {
    /// Whether `domain` (lower case) is on the file's block list.
    pub fn blocks(&self, domain: &str) -> bool {
        self.block.iter().any(|d| d == domain)
    }

    /// The file's allow entry of `domain` (lower case).
    pub fn allowed(&self, domain: &str) -> Option<&AllowedPartner> {
        self.allow.iter().find(|a| a.domain == domain)
    }

    /// Domains on both lists (they are blocked; event 14518 says so).
    pub fn on_both_lists(&self) -> Vec<&str> {
        self.allow.iter().filter(|a| self.block.contains(&a.domain)).map(|a| a.domain.as_str()).collect()
    }

    /// The warnings `check` prints and start-up logs: event 14518 for each domain on both
    /// lists (a warning: the configuration is still valid, the domain is blocked).
    pub fn warnings(&self) -> Vec<String> {
        self.on_both_lists()
            .into_iter()
            .map(|domain| {
                format!("warning {BOTH_LISTS_EVENT}: partner domain {domain:?} is on both the allow and the block list; it is blocked")
            })
            .collect()
    }
}
