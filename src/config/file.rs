//! Raw configuration file: the TOML shape from DESIGN.md "Configuration shape", exactly as
//! operators write it. Nothing here is validated beyond its TOML type; `config::resolve`
//! turns these structs into typed module configurations and reports every problem at once.
//!
//! Every struct denies unknown fields so that a typo (`max_con = 5`) is an error with its key
//! path rather than a silently ignored setting.

use std::collections::BTreeMap;

use serde::Deserialize;

/// `[server]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerFile {
    pub name: Option<String>,
    pub state_dir: Option<String>,
    pub log_dir: Option<String>,
    /// Time allowed for a client to send a complete request head (slow-loris guard).
    pub header_read_timeout: Option<String>,
    /// A client connection with no traffic for this long is closed.
    pub idle_timeout: Option<String>,
    /// Largest request head accepted (bytes); larger heads get 431.
    pub max_header_bytes: Option<u64>,
    /// Most header fields accepted in one request; more get 431.
    pub max_headers: Option<u64>,
    /// Most concurrent client connections per listener.
    pub max_connections: Option<u64>,
    /// How HTTP listeners are scheduled: "per-core" or "work-stealing".
    pub runtime: Option<String>,
    /// Threads serving the HTTP listeners (0: one per available core).
    pub workers: Option<u64>,
}

/// One `[[listener]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerFile {
    pub name: Option<String>,
    pub address: Option<String>,
    pub tls: Option<bool>,
    pub redirect_to: Option<String>,
    /// `%2F`/`%5C` in request paths: "reject" (default, 400) or "keep" (opaque, never a separator).
    pub escaped_slashes: Option<String>,
    /// A literal `\` in request paths: "reject" (default, 400) or "slash" (read as `/`).
    pub backslash: Option<String>,
}

/// `[tls]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    pub cert: Option<String>,
    pub key: Option<String>,
}

/// `[admin]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminFile {
    pub address: Option<String>,
    pub token: Option<String>,
    pub token_file: Option<String>,
    /// Serve the admin API over TLS (required when it binds a non-loopback address).
    pub tls: Option<bool>,
}

/// One `[[service]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceFile {
    pub name: Option<String>,
    pub auth: Option<String>,
    pub public_paths: Option<Vec<String>>,
    /// The upstream resolves paths case-insensitively: routes and public paths fold case.
    pub case_insensitive: Option<bool>,
    pub websocket_auth: Option<bool>,
    /// Allow a WebSocket upgrade without credentials from a source IP that authenticated
    /// successfully within this window (off when absent).
    pub websocket_ip_window: Option<String>,
    /// How long a successful CORS preflight answer is replayed at the edge (default 5 min).
    pub cors_cache: Option<String>,
    /// Origins whose CORS preflights are forwarded (default: any); others get 403.
    pub cors_origins: Option<Vec<String>>,
    /// Preflights forwarded to the upstream per minute, at most (default 60); beyond: 429.
    pub cors_preflights_per_minute: Option<u64>,
    pub upstream_tls: Option<bool>,
    /// PEM bundle of CAs trusted for upstream TLS (default: the public web roots).
    pub upstream_ca: Option<String>,
    /// Serve this directory instead of proxying (the built-in `static` upstream kind).
    pub static_dir: Option<String>,
    pub connect_timeout: Option<String>,
    pub response_timeout: Option<String>,
    /// How long a request waits for a free connection slot when every server is at `max_conns`.
    pub queue_timeout: Option<String>,
    pub health_check: Option<HealthCheckFile>,
    #[serde(default)]
    pub upstream: Vec<UpstreamFile>,
}

/// `[service.health_check]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckFile {
    pub enabled: Option<bool>,
    /// HTTP path to GET (2xx/3xx = healthy); TCP connect check when absent.
    pub path: Option<String>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    /// Consecutive failures before a server is marked down.
    pub fails: Option<u64>,
    /// Consecutive successes before a down server is marked up again.
    pub passes: Option<u64>,
}

/// One `[[service.upstream]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamFile {
    pub address: Option<String>,
    pub weight: Option<u64>,
    pub max_conns: Option<u64>,
}

/// One `[[route]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    pub host: Option<String>,
    pub path: Option<String>,
    pub service: Option<String>,
}

/// `[auth]` with its sub-tables.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthFile {
    pub basic: Option<BasicAuthFile>,
    pub jwt: Option<JwtAuthFile>,
    pub tokens: Option<TokensFile>,
}

/// `[auth.basic]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuthFile {
    pub validate_url: Option<String>,
    pub credential_ttl: Option<String>,
    pub users_url: Option<String>,
    pub users_refresh: Option<String>,
    pub users_file: Option<String>,
    pub realm: Option<String>,
}

/// `[auth.jwt]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtAuthFile {
    pub secret: Option<String>,
    pub jwks_url: Option<String>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    /// Clock skew allowed on `exp`/`nbf` (default 30 s).
    pub leeway: Option<String>,
    /// How often the JWKS is re-fetched (default 15 min).
    pub jwks_refresh: Option<String>,
}

/// `[firewall]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirewallFile {
    pub enabled: Option<bool>,
    pub interface: Option<String>,
    pub table: Option<String>,
    /// "50/second": new connections per source and port.
    pub new_connections: Option<String>,
    pub burst: Option<u64>,
    pub global_new_connections: Option<String>,
    #[serde(default)]
    pub exempt: Vec<String>,
    #[serde(default)]
    pub load_balancers: Vec<String>,
    pub load_balancers_only: Option<bool>,
    pub hardening: Option<bool>,
}

/// `[auth.tokens]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokensFile {
    pub refresh_interval: Option<String>,
    pub cleanup_interval: Option<String>,
}

/// `[rate_control]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateControlFile {
    pub max_authorizations: Option<u64>,
    pub period: Option<String>,
}

/// `[protection]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProtectionFile {
    pub blocked_status: Option<u64>,
    pub ipv6_prefix: Option<u64>,
    #[serde(default)]
    pub categories: BTreeMap<String, CategoryFile>,
    #[serde(default)]
    pub exemption: Vec<ExemptionFile>,
    /// Load balancers whose `X-Forwarded-For` is believed ("10.0.0.0/8", "192.0.2.10").
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Mirror bans into an nftables set (root only).
    pub nftables_set: Option<bool>,
    /// The `inet` table the mirror owns.
    pub nftables_table: Option<String>,
    /// Banned sources on TLS listeners: "answer" (default: 418 after the handshake) or
    /// "close" (closed at accept).
    pub banned_tls: Option<String>,
}

/// `[protection.categories.<name>]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CategoryFile {
    pub enabled: Option<bool>,
    pub trigger: Option<u64>,
    pub window: Option<String>,
    pub ban: Option<String>,
}

/// `[[protection.exemption]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExemptionFile {
    pub address: Option<String>,
    pub prefix_length: Option<u64>,
    #[serde(default)]
    pub categories: Vec<String>,
}

/// `[maintenance]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceFile {
    pub retry_after: Option<String>,
    pub session_idle: Option<String>,
    pub shutdown_drain: Option<String>,
}

/// `[cluster]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    pub store: Option<String>,
    pub redis_url: Option<String>,
    pub peer: Option<String>,
    pub heartbeat: Option<String>,
    pub redis_ca: Option<String>,
}

/// One `[[sip.listener]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipListenerFile {
    pub name: Option<String>,
    pub address: Option<String>,
    pub transport: Option<String>,
    pub client_auth: Option<String>,
    pub ca: Option<String>,
    pub crl: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
}

/// `[sip]` without its `[[sip.listener]]` array (read on its own).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipFile {
    pub local_domains: Option<Vec<String>>,
    pub next_hop: Option<String>,
    pub next_hop_ca: Option<String>,
    pub record_route: Option<bool>,
    pub max_message_bytes: Option<u64>,
}

/// `[federation]` without its `[[federation.allow]]` / `[[federation.block]]` arrays.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederationFile {
    pub discovery: Option<bool>,
    pub discovered_rate: Option<u64>,
    pub max_distinct_users: Option<u64>,
    pub error_share: Option<f64>,
    pub error_min_sample: Option<u64>,
}

/// One `[[federation.allow]]` or `[[federation.block]]` entry (`edge` only on allow entries).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartnerFile {
    pub domain: Option<String>,
    pub edge: Option<String>,
}

/// `[logging]` without its `[logging.ship]` table (read on its own).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggingFile {
    /// File-log line format: "text" (default) or "json".
    pub format: Option<String>,
}

/// `[logging.ship]`: RFC 5424 messages to a central syslog server.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShipFile {
    /// `host:port` of the syslog server.
    pub address: Option<String>,
    /// "tls" (RFC 5425 framing) or "relp" (acknowledged, over TLS).
    pub protocol: Option<String>,
    /// The name verified in the server certificate (default: the host of `address`).
    pub server_name: Option<String>,
    /// PEM bundle of the CAs the server certificate must chain to.
    pub ca: Option<String>,
    /// Client certificate chain (PEM) for mutual TLS.
    pub client_cert: Option<String>,
    /// Its private key (PEM).
    pub client_key: Option<String>,
    /// Size cap of the disk queue in `state_dir` ("1GiB", "500MB", or bytes).
    pub queue_max: Option<toml::Value>,
}
