//! Configuration: one TOML file (DESIGN.md "Configuration shape") turned into typed settings.
//!
//! `file` holds the raw serde shape; `resolve` turns it into the typed [`Config`] below and
//! reports every problem at once as [`ConfigError`]s (key path, what is wrong, how to fix it).
//! Only `resolve` knows the TOML layout; the rest of the program sees typed values
//! (durations, socket addresses, paths made absolute against the config file's directory).
//!
//! Typed settings live here rather than in each module because several front ends share
//! them (the proxy and the admin API both read services and listeners); each type names the
//! module that consumes it. The grammars values must follow live here too, so configuration
//! is checked with the same rules the rest of the program applies: `path` (canonical request
//! paths), `category` (the shield's categories), `users` (the Basic users file) and
//! `redis_url` (the Redis and Sentinel addresses).
//!
//! Level 0 of the architecture (`src/lib.rs`): nothing here imports from the rest of the
//! crate.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use subtle::ConstantTimeEq;

mod category;
mod error;
pub mod file;
pub mod path;
pub mod redis_url;
mod resolve;
pub mod sip;
pub mod users;

pub use category::{Category, UnknownCategory};
pub use error::{ConfigError, ConfigErrors};
pub use path::{BackslashPolicy, EscapedSlashPolicy, PathPolicy};
pub use redis_url::RedisUrl;

/// Default request-head read timeout: a client has this long to send a full request head.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default idle timeout for client connections (keep-alive, tunnels).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Default cap on the size of a request head.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
/// Default cap on the number of header fields in a request.
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// Default cap on concurrent client connections per listener.
pub const DEFAULT_MAX_CONNECTIONS: usize = 20_000;
/// Default upstream connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time an upstream has to send response headers.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default time a request may wait for a connection slot when servers are at `max_conns`.
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(1);
/// Default admin API address (loopback only).
pub const DEFAULT_ADMIN_ADDRESS: &str = "127.0.0.1:9443";

/// The whole, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the file was read from (for reloads); `None` when parsed from a string.
    pub source: Option<PathBuf>,
    pub server: ServerConfig,
    pub listeners: Vec<ListenerConfig>,
    pub tls: Option<TlsFiles>,
    pub admin: Option<AdminConfig>,
    pub services: Vec<ServiceConfig>,
    pub routes: Vec<RouteConfig>,
    /// `[auth.basic]` and `[rate_control]` (used by `auth`).
    pub auth: AuthSettings,
    /// `[auth.jwt]`, `[auth.tokens]`, `[protection]`, `[maintenance]`, `[cluster]`: validated
    /// here, consumed by the JWT, shield, maintenance and cluster layers.
    pub cluster: ClusterConfig,
    pub maintenance: MaintenanceConfig,
    pub protection: ProtectionConfig,
    /// `[[sip.listener]]` and `[sip]`: the SIP federation edge (no listeners: off).
    pub sip: sip::SipConfig,
    /// `[federation]`: the partner policy of the SIP edge.
    pub federation: sip::FederationConfig,
    /// `[firewall]` when `enabled = true` (used by `protect::firewall`).
    pub firewall: Option<FirewallConfig>,
    /// `[logging]` and `[logging.ship]` (used by `telemetry`).
    pub logging: LoggingConfig,
}

/// `[logging]`: the file logs' format and, with `[logging.ship]`, where they are shipped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoggingConfig {
    pub format: LogFormat,
    pub ship: Option<ShipConfig>,
}

/// `logging.format`: how `access.log` and `error.log` lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// The space-separated / nginx error-log layouts.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `logging.ship.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShipProtocol {
    /// RFC 5425: octet-counted RFC 5424 messages over TLS (no acknowledgements).
    Tls,
    /// RELP over TLS: each message acknowledged by the server.
    Relp,
}

impl ShipProtocol {
    /// The configuration word.
    pub fn as_str(self) -> &'static str {
        match self {
            ShipProtocol::Tls => "tls",
            ShipProtocol::Relp => "relp",
        }
    }
}

/// `[logging.ship]`: RFC 5424 messages to a central syslog server through a disk queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShipConfig {
    /// The server's host (name or address) ...
    pub host: String,
    /// ... and port.
    pub port: u16,
    pub protocol: ShipProtocol,
    /// The name the server certificate must carry.
    pub server_name: String,
    /// CAs the server certificate must chain to.
    pub ca: PathBuf,
    /// Client certificate and key for mutual TLS.
    pub client_identity: Option<(PathBuf, PathBuf)>,
    /// Size cap of the disk queue (bytes).
    pub queue_max: u64,
}

/// A packet rate for nftables `limit rate`: `count` per `unit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketRate {
    pub count: u32,
    pub unit: RateUnit,
}

/// The unit of a [`PacketRate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateUnit {
    Second,
    Minute,
}

impl std::fmt::Display for PacketRate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unit = match self.unit {
            RateUnit::Second => "second",
            RateUnit::Minute => "minute",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

/// `[firewall]`: the nftables table Portcullis owns (opt-in, Linux, root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirewallConfig {
    /// The external interface the rules apply to.
    pub interface: String,
    /// The `inet` table's name (the shield's ban sets live in it too).
    pub table: String,
    /// New connections per source (IPv6: per `protection.ipv6_prefix`) and port.
    pub new_connections: PacketRate,
    /// Bucket size of `new_connections`.
    pub burst: u32,
    /// New connections, all ports together, from the sources the per-source meter has no
    /// room for: so a meter filled by a random-source flood never fails open, while the
    /// sources it tracks keep their own buckets.
    pub global_new_connections: PacketRate,
    /// Never rate-limited (network, prefix length).
    pub exempt: Vec<(std::net::IpAddr, u8)>,
    /// The load balancers (network, prefix length): never rate-limited, and with
    /// `load_balancers_only` the only sources admitted.
    pub load_balancers: Vec<(std::net::IpAddr, u8)>,
    pub load_balancers_only: bool,
    /// Invalid state, new without SYN, uncommon MSS, bad flags, spoofed sources, fragments,
    /// RST rate, ICMP echo, UDP.
    pub hardening: bool,
}

/// `[server]`: identity, directories and client-side limits (used by `net` and `app`).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub name: String,
    pub state_dir: PathBuf,
    pub log_dir: PathBuf,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_connections: usize,
    /// How the HTTP listeners are scheduled.
    pub runtime: RuntimeLayout,
    /// Threads serving the HTTP listeners (0: one per available core).
    pub workers: usize,
}

/// `server.runtime`: how the HTTP listeners are scheduled (used by `runtime::workers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RuntimeLayout {
    /// One current-thread runtime per worker thread, one `SO_REUSEPORT` socket per worker.
    #[default]
    PerCore,
    /// The process's runtime (tokio's work-stealing multi-thread runtime on more than one core).
    WorkStealing,
}

impl RuntimeLayout {
    /// Every layout, in the order the documentation lists them.
    pub const ALL: [RuntimeLayout; 2] = [RuntimeLayout::PerCore, RuntimeLayout::WorkStealing];

    /// The configuration word for this layout.
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeLayout::PerCore => "per-core",
            RuntimeLayout::WorkStealing => "work-stealing",
        }
    }

    /// Parses a configuration word.
    pub fn parse(word: &str) -> Option<RuntimeLayout> {
        RuntimeLayout::ALL.into_iter().find(|layout| layout.as_str() == word)
    }
}

/// One `[[listener]]` (used by `net::listener`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    pub name: String,
    pub address: SocketAddr,
    pub tls: bool,
    /// Redirect every request to this HTTPS listener's port instead of serving it.
    pub redirect_to: Option<RedirectTarget>,
    /// What the canonical request view does with paths it cannot normalise safely.
    pub paths: PathPolicy,
}

/// Where a plain listener redirects to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectTarget {
    pub listener: String,
    pub port: u16,
}

/// `[tls]`: the operator's certificate chain and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `[admin]` (used by `admin`).
#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub address: SocketAddr,
    pub token: AdminToken,
    pub tls: bool,
}

/// The admin bearer token (`admin.token` / `admin.token_file`). `Debug` never shows it.
#[derive(Clone)]
pub struct AdminToken(Arc<str>);

impl AdminToken {
    /// Wraps a token.
    pub fn new(token: String) -> AdminToken {
        AdminToken(Arc::from(token))
    }

    /// Constant-time comparison with a presented token.
    pub fn matches(&self, presented: &[u8]) -> bool {
        self.0.as_bytes().ct_eq(presented).into()
    }

    /// The token itself (only for sending it as a client).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// How a service authenticates requests at the edge (`service.auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    None,
    Basic,
    Jwt,
    BasicOrJwt,
}

/// An unauthenticated path of a service (`public_paths`), in canonical form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicPath {
    Prefix(String),
    Exact(String),
}

impl PublicPath {
    /// Whether the canonical `path` is covered by this entry (ASCII case folded when the
    /// service's upstream is case-insensitive).
    pub fn matches(&self, path: &str, fold_case: bool) -> bool {
        match self {
            PublicPath::Prefix(prefix) => self::path::has_prefix(path, prefix, fold_case),
            PublicPath::Exact(exact) if fold_case => path.eq_ignore_ascii_case(exact),
            PublicPath::Exact(exact) => path == exact,
        }
    }
}

/// One `[[service]]` (used by `http::upstream` and `http::stack`).
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub name: String,
    pub auth: AuthMode,
    pub public_paths: Vec<PublicPath>,
    /// The upstream resolves paths case-insensitively: routes and public paths fold case.
    pub case_insensitive: bool,
    pub websocket_auth: bool,
    /// Credential-less WebSocket upgrades allowed from IPs that authenticated this recently.
    pub websocket_ip_window: Option<Duration>,
    /// Lifetime of cached CORS preflight answers.
    pub cors_cache: Duration,
    /// Origins whose preflights are forwarded (`None`: any origin).
    pub cors_origins: Option<Vec<String>>,
    /// Preflights forwarded to the upstream per minute (cache misses), at most.
    pub cors_preflights_per_minute: u32,
    pub kind: ServiceKind,
}

/// What stands behind a service.
#[derive(Debug, Clone)]
pub enum ServiceKind {
    /// A pool of upstream servers.
    Proxy(PoolConfig),
    /// A directory served by the edge itself.
    Static { dir: PathBuf },
}

/// An upstream pool.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub servers: Vec<UpstreamConfig>,
    pub tls: bool,
    pub ca_file: Option<PathBuf>,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub queue_timeout: Duration,
    pub health_check: Option<HealthCheckConfig>,
}

/// One upstream server of a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    /// `host:port` as written.
    pub address: String,
    /// 0 = backup only.
    pub weight: u32,
    /// 0 = unlimited.
    pub max_conns: u32,
}

/// Active health checking of a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckConfig {
    pub path: Option<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub fails: u32,
    pub passes: u32,
}

/// One `[[route]]` (used by `http::route`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    pub host: Option<String>,
    pub path: String,
    pub service: String,
}

/// Edge-authentication settings (used by `auth`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthSettings {
    pub basic: Option<BasicSettings>,
    pub jwt: Option<JwtSettings>,
    pub rate_control: Option<RateControlSettings>,
    /// Edge-issued tokens: on whenever Basic or JWT is configured.
    pub tokens: Option<TokenSettings>,
}

/// `[auth.tokens]`: edge-issued token lifetimes (used by `auth::tokens`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSettings {
    /// Access-token lifetime.
    pub refresh_interval: Duration,
    /// How often expired records are purged.
    pub cleanup_interval: Duration,
}

/// `[auth.basic]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasicSettings {
    /// `{user}` is replaced by the URL-encoded user name.
    pub validate_url: Option<String>,
    pub credential_ttl: Duration,
    pub users_url: Option<String>,
    pub users_refresh: Duration,
    pub users_file: Option<PathBuf>,
    /// Realm of the `WWW-Authenticate` challenge.
    pub realm: String,
}

/// `[auth.jwt]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtSettings {
    /// HS256/384/512 secret.
    pub secret: Option<String>,
    pub jwks_url: Option<String>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
    pub jwks_refresh: Duration,
}

/// `[rate_control]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateControlSettings {
    pub max_authorizations: u32,
    pub period: Duration,
}

/// Default Basic credential cache TTL (DESIGN "Defaults worth keeping").
pub const DEFAULT_CREDENTIAL_TTL: Duration = Duration::from_secs(15 * 60);
/// Default valid-user list refresh.
pub const DEFAULT_USERS_REFRESH: Duration = Duration::from_secs(15 * 60);

/// Which state store backs this peer (used by `cluster`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreKind {
    Embedded,
    Redis { url: RedisUrl },
}

/// `[cluster]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    pub store: StoreKind,
    pub peer: String,
    /// How often this peer announces itself; a peer silent for three heartbeats is gone.
    pub heartbeat: Duration,
    /// PEM CA certificates trusted for `rediss://` (default: the system's roots).
    pub redis_ca: Option<PathBuf>,
}

/// Default `maintenance.session_idle`: a session counts as current this long after its last
/// authenticated request (used by `auth::sessions`).
pub const DEFAULT_SESSION_IDLE: Duration = Duration::from_secs(15 * 60);

/// `[maintenance]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaintenanceConfig {
    /// `Retry-After` on answers refused during maintenance.
    pub retry_after: Duration,
    /// A session is current (and keeps a draining service busy) while it authenticates at
    /// least this often.
    pub session_idle: Duration,
    /// On SIGTERM: how long open connections may finish before the process exits.
    pub shutdown_drain: Duration,
}

/// `[protection]` (consumed by the shield).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtectionConfig {
    pub blocked_status: u16,
    pub ipv6_prefix: u8,
    /// Every category the shield knows, with its settings (defaults filled in).
    pub categories: std::collections::BTreeMap<Category, CategorySettings>,
    pub exemptions: Vec<Exemption>,
    /// Networks whose `X-Forwarded-For` names the client (never trusted by default).
    pub trusted_proxies: Vec<(std::net::IpAddr, u8)>,
    /// The nftables table bans are mirrored into (`protection.nftables_set = true`).
    pub nftables_table: Option<String>,
    /// Close banned sources' TLS connections at accept instead of answering 418 after the
    /// handshake (`banned_tls = "close"`).
    pub close_banned_tls: bool,
}

/// `[protection.categories.<name>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CategorySettings {
    pub enabled: bool,
    /// Events within `window` that ban the source.
    pub trigger: u32,
    pub window: Duration,
    pub ban: Duration,
}

/// `[[protection.exemption]]`: a network never counted in some categories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exemption {
    pub address: std::net::IpAddr,
    pub prefix_length: u8,
    pub categories: Vec<Category>,
}

impl Config {
    /// Parses and validates a configuration held in memory; relative paths are taken
    /// relative to `base_dir`.
    pub fn from_toml_str(text: &str, base_dir: &Path) -> Result<Config, ConfigErrors> {
        resolve::resolve(text, base_dir)
    }

    /// Reads, parses and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|error| {
            ConfigErrors::single(ConfigError::new(
                "",
                format!("cannot read {}: {error}", path.display()),
                "pass an existing, readable file with --config",
            ))
        })?;
        let base = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let mut config = Config::from_toml_str(&text, base)?;
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    /// The service a route points to.
    pub fn service(&self, name: &str) -> Option<&ServiceConfig> {
        self.services.iter().find(|s| s.name == name)
    }
}

/// A DNS host name: dot-separated labels of letters, digits and `-` (not leading), each at
/// most 63 characters, 253 in all.
pub(crate) fn valid_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
        })
}
