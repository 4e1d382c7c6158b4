//! Raw file → typed [`Config`], collecting every error with its key path and a hint.
//!
//! The TOML text is parsed once into a table; each top-level section (and each element of
//! an array of tables) is then deserialized on its own, so a mistake in `[[listener]]` does
//! not hide a mistake in `[[service]]`. Semantic checks (unknown service, duplicate names,
//! missing files, bad durations) run on whatever parsed and add to the same list.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;

use super::file::*;
use super::path::normalize_path;
use super::redis_url::RedisUrlError;
use super::users::load_users_file;
use super::*;

/// Largest upstream weight accepted.
const MAX_WEIGHT: u64 = 1000;

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted key path, e.g. `service[0].upstream[1].address`; empty for whole-file errors.
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: String,
}

impl ConfigError {
    /// A new error at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>, hint: impl Into<String>) -> Self {
        ConfigError { path: path.into(), message: message.into(), hint: hint.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}; {}", self.message, self.hint)
        } else {
            write!(f, "{}: {}; {}", self.path, self.message, self.hint)
        }
    }
}

/// Every problem found in one file (never empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// A list holding one error.
    pub fn single(error: ConfigError) -> Self {
        ConfigErrors(vec![error])
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Collects errors while resolving.
struct Checker<'a> {
    errors: Vec<ConfigError>,
    base: &'a Path,
}

impl Checker<'_> {
    fn err(&mut self, path: impl Into<String>, message: impl Into<String>, hint: impl Into<String>) {
        self.errors.push(ConfigError::new(path, message, hint));
    }

    /// Deserializes one TOML value into its raw section type. An error names the full key
    /// path of the offending value (`service[0].upstream[1].weight`, or the unknown key
    /// itself), which the deserializer reports through `serde_path_to_error`.
    fn section<T: DeserializeOwned>(&mut self, path: &str, value: Option<toml::Value>) -> Option<T> {
        let value = value?;
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(section) => Some(section),
            Err(error) => {
                let inner = error.path().to_string();
                let full = match inner.as_str() {
                    "" | "." => path.to_string(),
                    index if index.starts_with('[') => format!("{path}{index}"),
                    key => format!("{path}.{key}"),
                };
                let message = error.inner().message().trim().to_string();
                self.err(full, message, "fix the key or value; see docs/configuration.md");
                None
            }
        }
    }

    /// Deserializes an array of tables element by element.
    fn array<T: DeserializeOwned>(&mut self, path: &str, value: Option<toml::Value>) -> Vec<Option<T>> {
        match value {
            None => Vec::new(),
            Some(toml::Value::Array(items)) => {
                items.into_iter().enumerate().map(|(i, item)| self.section(&format!("{path}[{i}]"), Some(item))).collect()
            }
            Some(_) => {
                self.err(path, "must be an array of tables", format!("write each entry as [[{path}]]"));
                Vec::new()
            }
        }
    }

    fn duration(&mut self, path: &str, value: Option<&String>, default: Duration) -> Duration {
        let Some(text) = value else { return default };
        match humantime::parse_duration(text.trim()) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                self.err(path, format!("{text:?} is zero"), "use a positive duration such as \"30s\"");
                default
            }
            Err(error) => {
                self.err(path, format!("{text:?} is not a duration ({error})"), "write a duration such as \"30s\", \"15m\" or \"8h\"");
                default
            }
        }
    }

    fn path_buf(&self, text: &str) -> PathBuf {
        let p = Path::new(text);
        if p.is_absolute() { p.to_path_buf() } else { self.base.join(p) }
    }

    fn existing_file(&mut self, path: &str, text: &str, what: &str) -> PathBuf {
        let resolved = self.path_buf(text);
        if !resolved.is_file() {
            self.err(path, format!("{text:?} not found"), format!("set an existing {what} path"));
        }
        resolved
    }

    fn bounded(&mut self, path: &str, value: Option<u64>, default: u64, min: u64, max: u64) -> u64 {
        match value {
            None => default,
            Some(v) if (min..=max).contains(&v) => v,
            Some(v) => {
                self.err(path, format!("{v} is out of range"), format!("use a value from {min} to {max}"));
                default
            }
        }
    }

    fn url(&mut self, path: &str, text: &str) {
        match text.parse::<http::Uri>() {
            Ok(uri) if matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some() => {}
            _ => {
                self.err(path, format!("{text:?} is not an http(s) URL"), "write an absolute URL such as \"https://ids.example.com/keys\"")
            }
        }
    }
}

pub(super) fn resolve(text: &str, base: &Path) -> Result<Config, ConfigErrors> {
    let mut table: toml::Table = text.parse().map_err(|error: toml::de::Error| {
        let location = error
            .span()
            .map(|span| {
                let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                format!(" (line {line})")
            })
            .unwrap_or_default();
        ConfigErrors::single(ConfigError::new(
            "",
            format!("invalid TOML{location}: {}", error.message().trim()),
            "fix the syntax; strings need quotes, tables [name], arrays of tables [[name]]",
        ))
    })?;
    let mut c = Checker { errors: Vec::new(), base };

    // An absent [server] has no name (reported); one that failed to parse is already reported.
    let server_raw: Option<ServerFile> = match table.remove("server") {
        None => Some(ServerFile::default()),
        value => c.section("server", value),
    };
    let listeners_raw: Vec<Option<ListenerFile>> = c.array("listener", table.remove("listener"));
    let tls_raw: Option<TlsFile> = c.section("tls", table.remove("tls"));
    let admin_raw: Option<AdminFile> = c.section("admin", table.remove("admin"));
    let services_raw: Vec<Option<ServiceFile>> = c.array("service", table.remove("service"));
    let services_raw_ok = services_raw.iter().all(Option::is_some);
    let routes_raw: Vec<Option<RouteFile>> = c.array("route", table.remove("route"));
    let auth_raw: AuthFile = c.section("auth", table.remove("auth")).unwrap_or_default();
    let rate_raw: Option<RateControlFile> = c.section("rate_control", table.remove("rate_control"));
    let protection_raw: ProtectionFile = c.section("protection", table.remove("protection")).unwrap_or_default();
    let maintenance_raw: MaintenanceFile = c.section("maintenance", table.remove("maintenance")).unwrap_or_default();
    let cluster_raw: ClusterFile = c.section("cluster", table.remove("cluster")).unwrap_or_default();
    for key in table.keys() {
        c.err(
            key.clone(),
            "unknown section",
            "known sections: server, listener, tls, admin, service, route, auth, rate_control, protection, maintenance, cluster",
        );
    }

    let server = resolve_server(&mut c, server_raw);
    let listeners = resolve_listeners(&mut c, listeners_raw);
    let tls = tls_raw.and_then(|t| resolve_tls(&mut c, t));
    let admin = admin_raw.and_then(|a| resolve_admin(&mut c, a, tls.is_some()));
    let services = resolve_services(&mut c, services_raw, &auth_raw);
    // A service that failed to parse is already reported; don't cascade into its routes.
    let services_complete = services_raw_ok;
    let routes = resolve_routes(&mut c, routes_raw, &services, services_complete);
    let auth = check_auth(&mut c, &auth_raw, rate_raw);
    let protection = resolve_protection(&mut c, &protection_raw);
    let maintenance = MaintenanceConfig {
        retry_after: c.duration("maintenance.retry_after", maintenance_raw.retry_after.as_ref(), Duration::from_secs(120)),
        session_idle: c.duration("maintenance.session_idle", maintenance_raw.session_idle.as_ref(), DEFAULT_SESSION_IDLE),
        shutdown_drain: c.duration("maintenance.shutdown_drain", maintenance_raw.shutdown_drain.as_ref(), Duration::from_secs(10)),
    };
    let cluster = resolve_cluster(&mut c, cluster_raw, &server.name);

    if !c.errors.is_empty() {
        return Err(ConfigErrors(c.errors));
    }
    Ok(Config { source: None, server, listeners, tls, admin, services, routes, auth, cluster, maintenance, protection })
}

/// `raw` is `None` when `[server]` did not parse (already reported): its keys take their
/// defaults and its missing name is not reported again.
fn resolve_server(c: &mut Checker<'_>, raw: Option<ServerFile>) -> ServerConfig {
    let parsed = raw.is_some();
    let raw = raw.unwrap_or_default();
    let name = match raw.name {
        Some(name) if valid_host_name(&name) => name,
        Some(name) => {
            c.err("server.name", format!("{name:?} is not a host name"), "use letters, digits, '-' and '.', e.g. \"edge1.example.com\"");
            name
        }
        None => {
            if parsed {
                c.err("server.name", "missing", "set the edge's host name, e.g. name = \"edge1.example.com\"");
            }
            String::new()
        }
    };
    let state_dir = c.path_buf(raw.state_dir.as_deref().unwrap_or("/var/lib/portcullis"));
    let log_dir = c.path_buf(raw.log_dir.as_deref().unwrap_or("/var/log/portcullis"));
    ServerConfig {
        name,
        state_dir,
        log_dir,
        header_read_timeout: c.duration("server.header_read_timeout", raw.header_read_timeout.as_ref(), DEFAULT_HEADER_READ_TIMEOUT),
        idle_timeout: c.duration("server.idle_timeout", raw.idle_timeout.as_ref(), DEFAULT_IDLE_TIMEOUT),
        max_header_bytes: c.bounded("server.max_header_bytes", raw.max_header_bytes, DEFAULT_MAX_HEADER_BYTES as u64, 8192, 1 << 20)
            as usize,
        max_headers: c.bounded("server.max_headers", raw.max_headers, DEFAULT_MAX_HEADERS as u64, 8, 1000) as usize,
        max_connections: c.bounded("server.max_connections", raw.max_connections, DEFAULT_MAX_CONNECTIONS as u64, 1, 1_000_000) as usize,
    }
}

fn valid_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
        })
}

fn socket_addr(c: &mut Checker<'_>, path: &str, text: Option<&str>) -> Option<SocketAddr> {
    let Some(text) = text else {
        c.err(path, "missing", "set an address such as \"0.0.0.0:8445\" or \"[::]:8445\"");
        return None;
    };
    match text.parse::<SocketAddr>() {
        Ok(addr) => Some(addr),
        Err(_) => {
            c.err(path, format!("{text:?} is not an IP:port address"), "write \"0.0.0.0:8445\" (IPv4) or \"[::]:8445\" (IPv6)");
            None
        }
    }
}

fn resolve_listeners(c: &mut Checker<'_>, raw: Vec<Option<ListenerFile>>) -> Vec<ListenerConfig> {
    if raw.is_empty() {
        c.err("listener", "no listener configured", "add a [[listener]] with name, address and tls");
    }
    let mut out: Vec<(ListenerConfig, Option<String>)> = Vec::new();
    let mut names = BTreeSet::new();
    let mut addrs = BTreeSet::new();
    for (i, l) in raw.into_iter().enumerate() {
        let Some(l) = l else { continue };
        let path = format!("listener[{i}]");
        let name = l.name.unwrap_or_default();
        if name.is_empty() {
            c.err(format!("{path}.name"), "missing", "give each listener a unique name such as \"https\"");
        } else if !names.insert(name.clone()) {
            c.err(format!("{path}.name"), format!("{name:?} is used twice"), "give each listener a unique name");
        }
        let Some(address) = socket_addr(c, &format!("{path}.address"), l.address.as_deref()) else { continue };
        // Port 0 (tests, ephemeral) never collides.
        if address.port() != 0 && !addrs.insert(address) {
            c.err(format!("{path}.address"), format!("{address} is used twice"), "give each listener its own address");
        }
        let tls = l.tls.unwrap_or(false);
        if tls && l.redirect_to.is_some() {
            c.err(format!("{path}.redirect_to"), "a TLS listener cannot redirect", "remove redirect_to or set tls = false");
        }
        let escaped_slashes = match l.escaped_slashes.as_deref() {
            None | Some("reject") => EscapedSlashPolicy::Reject,
            Some("keep") => EscapedSlashPolicy::Keep,
            Some(other) => {
                c.err(format!("{path}.escaped_slashes"), format!("{other:?} is not a policy"), "use \"reject\" (default) or \"keep\"");
                EscapedSlashPolicy::Reject
            }
        };
        let backslash = match l.backslash.as_deref() {
            None | Some("reject") => BackslashPolicy::Reject,
            Some("slash") => BackslashPolicy::Slash,
            Some(other) => {
                c.err(format!("{path}.backslash"), format!("{other:?} is not a policy"), "use \"reject\" (default) or \"slash\"");
                BackslashPolicy::Reject
            }
        };
        let paths = PathPolicy { escaped_slashes, backslash };
        out.push((ListenerConfig { name, address, tls, redirect_to: None, paths }, l.redirect_to));
    }
    let by_name: HashMap<String, (bool, u16)> = out.iter().map(|(l, _)| (l.name.clone(), (l.tls, l.address.port()))).collect();
    out.into_iter()
        .enumerate()
        .map(|(i, (mut l, redirect))| {
            if let Some(target) = redirect {
                match by_name.get(&target) {
                    Some((true, port)) => l.redirect_to = Some(RedirectTarget { listener: target, port: *port }),
                    Some((false, _)) => c.err(
                        format!("listener[{i}].redirect_to"),
                        format!("{target:?} is not a TLS listener"),
                        "redirect to a listener with tls = true",
                    ),
                    None => c.err(
                        format!("listener[{i}].redirect_to"),
                        format!("no listener named {target:?}"),
                        "name a [[listener]] with tls = true",
                    ),
                }
            }
            l
        })
        .collect()
}

fn resolve_tls(c: &mut Checker<'_>, raw: TlsFile) -> Option<TlsFiles> {
    let cert = match raw.cert {
        Some(cert) => Some(c.existing_file("tls.cert", &cert, "PEM certificate chain")),
        None => {
            c.err("tls.cert", "missing", "set cert to a PEM chain (leaf first), or remove [tls] for a self-signed certificate");
            None
        }
    };
    let key = match raw.key {
        Some(key) => Some(c.existing_file("tls.key", &key, "PEM private key")),
        None => {
            c.err("tls.key", "missing", "set key to the PEM private key of tls.cert");
            None
        }
    };
    Some(TlsFiles { cert: cert?, key: key? })
}

fn resolve_admin(c: &mut Checker<'_>, raw: AdminFile, _have_tls: bool) -> Option<AdminConfig> {
    let address = socket_addr(c, "admin.address", Some(raw.address.as_deref().unwrap_or(DEFAULT_ADMIN_ADDRESS)))?;
    let tls = raw.tls.unwrap_or(false);
    if !address.ip().is_loopback() && !tls {
        c.err(
            "admin.address",
            format!("{address} is not loopback and admin.tls is off"),
            "bind the admin API to 127.0.0.1 or set admin.tls = true",
        );
    }
    let token = match (raw.token, raw.token_file) {
        (Some(_), Some(_)) => {
            c.err("admin.token", "both token and token_file are set", "keep one of them");
            None
        }
        (Some(token), None) => Some(token),
        (None, Some(file)) => {
            let path = c.existing_file("admin.token_file", &file, "token file");
            std::fs::read_to_string(&path).ok().map(|t| t.trim().to_string())
        }
        (None, None) => {
            c.err("admin.token", "missing", "set token = \"...\" or token_file = \"/etc/portcullis/admin.token\"");
            None
        }
    };
    let token = token?;
    if token.len() < 8 {
        c.err("admin.token", "shorter than 8 characters", "use a long random token (e.g. `openssl rand -hex 24`)");
    }
    Some(AdminConfig { address, token: AdminToken::new(token), tls })
}

fn resolve_services(c: &mut Checker<'_>, raw: Vec<Option<ServiceFile>>, auth: &AuthFile) -> Vec<ServiceConfig> {
    let mut out = Vec::new();
    let mut names = BTreeSet::new();
    for (i, s) in raw.into_iter().enumerate() {
        let Some(s) = s else { continue };
        let path = format!("service[{i}]");
        let name = s.name.clone().unwrap_or_default();
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            c.err(format!("{path}.name"), format!("{name:?} is not a service name"), "use letters, digits, '-' and '_', e.g. \"finesse\"");
        } else if !names.insert(name.clone()) {
            c.err(format!("{path}.name"), format!("{name:?} is used twice"), "give each service a unique name");
        }
        let auth_mode = match s.auth.as_deref().unwrap_or("none") {
            "none" => AuthMode::None,
            "basic" => AuthMode::Basic,
            "jwt" => AuthMode::Jwt,
            "basic_or_jwt" => AuthMode::BasicOrJwt,
            other => {
                c.err(format!("{path}.auth"), format!("{other:?} is not an auth mode"), "use one of none, basic, jwt, basic_or_jwt");
                AuthMode::None
            }
        };
        if matches!(auth_mode, AuthMode::Basic | AuthMode::BasicOrJwt) && auth.basic.is_none() {
            c.err(format!("{path}.auth"), "basic auth needs [auth.basic]", "add [auth.basic] with validate_url or users_file");
        }
        if matches!(auth_mode, AuthMode::Jwt | AuthMode::BasicOrJwt) && auth.jwt.is_none() {
            c.err(format!("{path}.auth"), "jwt auth needs [auth.jwt]", "add [auth.jwt] with secret or jwks_url");
        }
        let mut public_paths = Vec::new();
        for (j, p) in s.public_paths.clone().unwrap_or_default().into_iter().enumerate() {
            let (text, exact) = match p.strip_prefix('=') {
                Some(exact) => (exact, true),
                None => (p.as_str(), false),
            };
            if !text.starts_with('/') {
                c.err(
                    format!("{path}.public_paths[{j}]"),
                    format!("{p:?} is not a path"),
                    "write a prefix \"/assets/\" or an exact path \"=/favicon.ico\"",
                );
                continue;
            }
            // Requests are matched in canonical form, so an entry must be written in it.
            if normalize_path(text, PathPolicy::default()).as_deref() != Ok(text) {
                c.err(
                    format!("{path}.public_paths[{j}]"),
                    format!("{p:?} is not in canonical form"),
                    "write the path as requests are normalised: no \"..\", \".\" or \"//\" segments, no escaped unreserved characters, upper-case hex in escapes",
                );
                continue;
            }
            public_paths.push(if exact { PublicPath::Exact(text.to_string()) } else { PublicPath::Prefix(text.to_string()) });
        }
        let kind = match (&s.static_dir, s.upstream.is_empty()) {
            (Some(_), false) => {
                c.err(
                    format!("{path}.static_dir"),
                    "static_dir and upstream servers are both set",
                    "a service either serves a directory or proxies to upstreams",
                );
                continue;
            }
            (Some(dir), true) => {
                let dir = c.path_buf(dir);
                if !dir.is_dir() {
                    c.err(
                        format!("{path}.static_dir"),
                        format!("{:?} is not a directory", dir.display().to_string()),
                        "set an existing directory",
                    );
                }
                ServiceKind::Static { dir }
            }
            (None, true) => {
                c.err(
                    format!("{path}.upstream"),
                    "no upstream server",
                    "add a [[service.upstream]] with address = \"host:port\", or set static_dir",
                );
                continue;
            }
            (None, false) => ServiceKind::Proxy(resolve_pool(c, &path, &s)),
        };
        let cors_cache = c.duration(&format!("{path}.cors_cache"), s.cors_cache.as_ref(), Duration::from_secs(300));
        let cors_preflights_per_minute =
            c.bounded(&format!("{path}.cors_preflights_per_minute"), s.cors_preflights_per_minute, 60, 1, 100_000) as u32;
        let cors_origins = s.cors_origins.clone().inspect(|origins| {
            for (j, origin) in origins.iter().enumerate() {
                let ok = origin.parse::<http::Uri>().is_ok_and(|u| {
                    matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() && u.path() == "/" && !origin.ends_with('/')
                });
                if !ok {
                    c.err(
                        format!("{path}.cors_origins[{j}]"),
                        format!("{origin:?} is not an origin"),
                        "write scheme://host[:port] without a path, e.g. \"https://app.example.com\"",
                    );
                }
            }
        });
        out.push(ServiceConfig {
            name,
            auth: auth_mode,
            public_paths,
            case_insensitive: s.case_insensitive.unwrap_or(false),
            cors_origins,
            cors_preflights_per_minute,
            // On by default for every authenticated service (DESIGN §2).
            websocket_auth: s.websocket_auth.unwrap_or(true),
            websocket_ip_window: s
                .websocket_ip_window
                .as_ref()
                .map(|w| c.duration(&format!("{path}.websocket_ip_window"), Some(w), Duration::from_secs(300))),
            cors_cache,
            kind,
        });
    }
    out
}

fn resolve_pool(c: &mut Checker<'_>, path: &str, s: &ServiceFile) -> PoolConfig {
    let mut servers = Vec::new();
    let mut seen = BTreeSet::new();
    for (j, u) in s.upstream.iter().enumerate() {
        let upath = format!("{path}.upstream[{j}]");
        let address = u.address.clone().unwrap_or_default();
        if !valid_host_port(&address) {
            c.err(
                format!("{upath}.address"),
                format!("{address:?} is not host:port"),
                "write \"finesse-a.corp.example:8082\" or \"10.0.0.5:8082\"",
            );
        } else if !seen.insert(address.clone()) {
            c.err(format!("{upath}.address"), format!("{address:?} is listed twice"), "list each server once");
        }
        let weight = c.bounded(&format!("{upath}.weight"), u.weight, 1, 0, MAX_WEIGHT) as u32;
        let max_conns = c.bounded(&format!("{upath}.max_conns"), u.max_conns, 0, 0, 1_000_000) as u32;
        servers.push(UpstreamConfig { address, weight, max_conns });
    }
    if !servers.is_empty() && servers.iter().all(|s| s.weight == 0) {
        c.err(format!("{path}.upstream"), "every server has weight 0 (backup)", "give at least one server a weight of 1 or more");
    }
    let ca_file = s.upstream_ca.as_ref().map(|ca| c.existing_file(&format!("{path}.upstream_ca"), ca, "PEM CA bundle"));
    let health_check = match &s.health_check {
        Some(h) if h.enabled == Some(false) => None,
        raw => {
            let default = HealthCheckFile::default();
            let h = raw.as_ref().unwrap_or(&default);
            if let Some(p) = &h.path
                && !p.starts_with('/')
            {
                c.err(format!("{path}.health_check.path"), format!("{p:?} is not a path"), "write a path such as \"/health\"");
            }
            Some(HealthCheckConfig {
                path: h.path.clone(),
                interval: c.duration(&format!("{path}.health_check.interval"), h.interval.as_ref(), Duration::from_secs(5)),
                timeout: c.duration(&format!("{path}.health_check.timeout"), h.timeout.as_ref(), Duration::from_secs(2)),
                fails: c.bounded(&format!("{path}.health_check.fails"), h.fails, 2, 1, 100) as u32,
                passes: c.bounded(&format!("{path}.health_check.passes"), h.passes, 1, 1, 100) as u32,
            })
        }
    };
    PoolConfig {
        servers,
        tls: s.upstream_tls.unwrap_or(false),
        ca_file,
        connect_timeout: c.duration(&format!("{path}.connect_timeout"), s.connect_timeout.as_ref(), DEFAULT_CONNECT_TIMEOUT),
        response_timeout: c.duration(&format!("{path}.response_timeout"), s.response_timeout.as_ref(), DEFAULT_RESPONSE_TIMEOUT),
        queue_timeout: c.duration(&format!("{path}.queue_timeout"), s.queue_timeout.as_ref(), DEFAULT_QUEUE_TIMEOUT),
        health_check,
    }
}

/// `host:port` with a non-empty host and a numeric port (IPv6 hosts in brackets).
fn valid_host_port(text: &str) -> bool {
    if text.parse::<SocketAddr>().is_ok() {
        return true;
    }
    let Some((host, port)) = text.rsplit_once(':') else { return false };
    port.parse::<u16>().is_ok_and(|p| p != 0) && valid_host_name(host)
}

fn resolve_routes(
    c: &mut Checker<'_>,
    raw: Vec<Option<RouteFile>>,
    services: &[ServiceConfig],
    services_complete: bool,
) -> Vec<RouteConfig> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, r) in raw.into_iter().enumerate() {
        let Some(r) = r else { continue };
        let path = format!("route[{i}]");
        let prefix = r.path.unwrap_or_else(|| "/".to_string());
        if !prefix.starts_with('/') {
            c.err(format!("{path}.path"), format!("{prefix:?} does not start with '/'"), "write a path prefix such as \"/finesse/\"");
        } else if normalize_path(&prefix, PathPolicy::default()).as_deref() != Ok(prefix.as_str()) {
            c.err(
                format!("{path}.path"),
                format!("{prefix:?} is not in canonical form"),
                "write the prefix as requests are normalised: no \"..\", \".\" or \"//\" segments, no escaped unreserved characters",
            );
        }
        // Requests are routed on their canonical host: lower case, no trailing dot.
        let host = r.host.map(|h| h.strip_suffix('.').unwrap_or(&h).to_ascii_lowercase());
        if let Some(h) = &host
            && !valid_host_name(h)
        {
            c.err(format!("{path}.host"), format!("{h:?} is not a host name"), "write a host such as \"desktop.example.com\" (no port)");
        }
        let service = r.service.unwrap_or_default();
        if services_complete && !services.iter().any(|s| s.name == service) {
            c.err(format!("{path}.service"), format!("no service named {service:?}"), "name a [[service]] defined in this file");
        }
        if !seen.insert((host.clone(), prefix.clone())) {
            c.err(format!("{path}.path"), format!("{prefix:?} is routed twice for the same host"), "remove the duplicate route");
        }
        out.push(RouteConfig { host, path: prefix, service });
    }
    out
}

fn check_auth(c: &mut Checker<'_>, auth: &AuthFile, rate: Option<RateControlFile>) -> AuthSettings {
    let mut settings = AuthSettings::default();
    if let Some(rate) = rate {
        settings.rate_control = Some(RateControlSettings {
            max_authorizations: c.bounded("rate_control.max_authorizations", rate.max_authorizations, 3, 1, 100_000) as u32,
            period: c.duration("rate_control.period", rate.period.as_ref(), Duration::from_secs(300)),
        });
    }
    if let Some(basic) = &auth.basic {
        if basic.validate_url.is_none() && basic.users_file.is_none() {
            c.err("auth.basic", "no validator", "set validate_url (checked upstream) or users_file (argon2 hashes)");
        }
        if let Some(url) = &basic.validate_url {
            c.url("auth.basic.validate_url", url);
        }
        if let Some(url) = &basic.users_url {
            c.url("auth.basic.users_url", url);
        }
        if basic.validate_url.is_some() && basic.users_file.is_some() {
            c.err("auth.basic.users_file", "both validate_url and users_file are set", "keep one validator");
        }
        let users_file = basic.users_file.as_ref().map(|file| {
            let path = c.existing_file("auth.basic.users_file", file, "users file");
            if path.is_file()
                && let Err(why) = load_users_file(&path)
            {
                c.err("auth.basic.users_file", why.to_string(), "write [users] with name = \"$argon2id$...\" entries");
            }
            path
        });
        let realm = basic.realm.clone().unwrap_or_else(|| "portcullis".to_string());
        if realm.contains('"') || realm.chars().any(char::is_control) {
            c.err("auth.basic.realm", format!("{realm:?} contains a quote or control character"), "use plain text such as \"Finesse\"");
        }
        settings.basic = Some(BasicSettings {
            validate_url: basic.validate_url.clone(),
            credential_ttl: c.duration("auth.basic.credential_ttl", basic.credential_ttl.as_ref(), DEFAULT_CREDENTIAL_TTL),
            users_url: basic.users_url.clone(),
            users_refresh: c.duration("auth.basic.users_refresh", basic.users_refresh.as_ref(), DEFAULT_USERS_REFRESH),
            users_file,
            realm,
        });
    }
    if let Some(jwt) = &auth.jwt {
        match (&jwt.secret, &jwt.jwks_url) {
            (None, None) => c.err("auth.jwt", "no key source", "set secret (HS256) or jwks_url (RS256/ES256/EdDSA)"),
            (Some(secret), _) if secret.len() < 32 => {
                c.err("auth.jwt.secret", "shorter than 32 bytes", "use a random secret of at least 32 bytes")
            }
            _ => {}
        }
        if let Some(url) = &jwt.jwks_url {
            c.url("auth.jwt.jwks_url", url);
        }
        settings.jwt = Some(JwtSettings {
            secret: jwt.secret.clone(),
            jwks_url: jwt.jwks_url.clone(),
            issuer: jwt.issuer.clone(),
            audience: jwt.audience.clone(),
            leeway: match &jwt.leeway {
                Some(text) if humantime::parse_duration(text.trim()).is_ok_and(|d| d.is_zero()) => Duration::ZERO,
                other => c.duration("auth.jwt.leeway", other.as_ref(), Duration::from_secs(30)),
            },
            jwks_refresh: c.duration("auth.jwt.jwks_refresh", jwt.jwks_refresh.as_ref(), Duration::from_secs(900)),
        });
    }
    let default_tokens = TokensFile::default();
    let tokens = auth.tokens.as_ref().unwrap_or(&default_tokens);
    let token_settings = TokenSettings {
        refresh_interval: c.duration("auth.tokens.refresh_interval", tokens.refresh_interval.as_ref(), Duration::from_secs(480 * 60)),
        cleanup_interval: c.duration("auth.tokens.cleanup_interval", tokens.cleanup_interval.as_ref(), Duration::from_secs(720 * 60)),
    };
    if settings.basic.is_some() || settings.jwt.is_some() {
        settings.tokens = Some(token_settings);
    }
    settings
}

fn resolve_protection(c: &mut Checker<'_>, raw: &ProtectionFile) -> ProtectionConfig {
    let blocked_status = c.bounded("protection.blocked_status", raw.blocked_status, 418, 400, 599) as u16;
    let ipv6_prefix = c.bounded("protection.ipv6_prefix", raw.ipv6_prefix, 64, 1, 128) as u8;
    let mut categories: std::collections::BTreeMap<Category, CategorySettings> =
        Category::ALL.into_iter().map(|category| (category, category.default_settings())).collect();
    for (name, cat) in &raw.categories {
        let path = format!("protection.categories.{name}");
        let Ok(category) = name.parse::<Category>() else {
            c.err(&path, "unknown category", format!("use one of {}", category_names()));
            continue;
        };
        let default = categories[&category].clone();
        let settings = CategorySettings {
            enabled: cat.enabled.unwrap_or(default.enabled),
            trigger: c.bounded(&format!("{path}.trigger"), cat.trigger, u64::from(default.trigger), 1, 100_000) as u32,
            window: c.duration(&format!("{path}.window"), cat.window.as_ref(), default.window),
            ban: c.duration(&format!("{path}.ban"), cat.ban.as_ref(), default.ban),
        };
        categories.insert(category, settings);
    }
    let mut exemptions = Vec::new();
    for (i, e) in raw.exemption.iter().enumerate() {
        let path = format!("protection.exemption[{i}]");
        let ip = e.address.as_deref().and_then(|a| a.parse::<std::net::IpAddr>().ok());
        let parsed: Vec<Result<Category, UnknownCategory>> = e.categories.iter().map(|name| name.parse()).collect();
        match ip {
            None => c.err(
                format!("{path}.address"),
                format!("{:?} is not an IP address", e.address.clone().unwrap_or_default()),
                "write an address such as \"203.0.113.0\"",
            ),
            Some(ip) => {
                let max = if ip.is_ipv4() { 32 } else { 128 };
                let prefix_length = c.bounded(&format!("{path}.prefix_length"), e.prefix_length, max, 0, max) as u8;
                let categories = parsed.iter().filter_map(|p| p.as_ref().ok().copied()).collect();
                exemptions.push(Exemption { address: ip, prefix_length, categories });
            }
        }
        for (j, unknown) in parsed.into_iter().enumerate().filter_map(|(j, p)| p.err().map(|u| (j, u))) {
            c.err(format!("{path}.categories[{j}]"), unknown.to_string(), format!("use one of {}", category_names()));
        }
    }
    let mut trusted_proxies = Vec::new();
    for (i, text) in raw.trusted_proxies.iter().enumerate() {
        let (addr, prefix) = text.split_once('/').map_or((text.as_str(), None), |(a, p)| (a, Some(p)));
        let parsed = addr.parse::<std::net::IpAddr>().ok().and_then(|ip| {
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix {
                None => max,
                Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max)?,
            };
            Some((ip, prefix))
        });
        match parsed {
            Some(net) => trusted_proxies.push(net),
            None => c.err(
                format!("protection.trusted_proxies[{i}]"),
                format!("{text:?} is not an address or CIDR"),
                "write \"192.0.2.10\" or \"10.0.0.0/8\"",
            ),
        }
    }
    let table = raw.nftables_table.clone().unwrap_or_else(|| "portcullis".to_string());
    if !valid_table_name(&table) {
        c.err("protection.nftables_table", format!("{table:?} is not a usable table name"), "use letters, digits and _ (at most 32)");
    }
    let nftables_table = raw.nftables_set.unwrap_or(false).then_some(table);
    let close_banned_tls = match raw.banned_tls.as_deref() {
        None | Some("answer") => false,
        Some("close") => true,
        Some(other) => {
            c.err(
                "protection.banned_tls",
                format!("{other:?} is not a choice"),
                "use \"answer\" (418 after the handshake, default) or \"close\"",
            );
            false
        }
    };
    ProtectionConfig { blocked_status, ipv6_prefix, categories, exemptions, trusted_proxies, nftables_table, close_banned_tls }
}

/// Whether `name` can name the nftables table bans are mirrored into (letters, digits, `_`;
/// at most 32): it is written into `nft` scripts.
fn valid_table_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 32 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Every category's name, for hints: "a, b, c".
fn category_names() -> String {
    Category::ALL.map(Category::as_str).join(", ")
}

fn resolve_cluster(c: &mut Checker<'_>, raw: ClusterFile, server_name: &str) -> ClusterConfig {
    let store = match raw.store.as_deref().unwrap_or("embedded") {
        "embedded" => StoreKind::Embedded,
        "redis" => match raw.redis_url.as_deref().map(RedisUrl::parse) {
            Some(Ok(url)) => StoreKind::Redis { url },
            Some(Err(error)) => {
                let hint = match error {
                    RedisUrlError::Sentinel(_) => "write redis+sentinel://host:26379,host:26379/<master>/0",
                    RedisUrlError::Scheme(_) => "write redis://host:6379/0 or redis+sentinel://host:26379/<master>/0",
                };
                c.err("cluster.redis_url", error.to_string(), hint);
                StoreKind::Embedded
            }
            None => {
                c.err("cluster.redis_url", "missing", "store = \"redis\" needs redis_url = \"redis://host:6379/0\"");
                StoreKind::Embedded
            }
        },
        other => {
            c.err("cluster.store", format!("{other:?} is not a store"), "use \"embedded\" or \"redis\"");
            StoreKind::Embedded
        }
    };
    let heartbeat = c.duration("cluster.heartbeat", raw.heartbeat.as_ref(), Duration::from_secs(2));
    if heartbeat < Duration::from_millis(100) || heartbeat > Duration::from_secs(60) {
        c.err("cluster.heartbeat", "out of range", "between \"100ms\" and \"60s\"");
    }
    // The default (server.name) is checked as server.name.
    if let Some(peer) = &raw.peer
        && (peer.is_empty() || peer.len() > 64 || !peer.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')))
    {
        c.err("cluster.peer", format!("{peer:?} is not a usable peer name"), "letters, digits, '-', '_', '.'; at most 64");
    }
    let peer = raw.peer.unwrap_or_else(|| server_name.to_string());
    let redis_ca = raw.redis_ca.as_ref().map(|file| c.existing_file("cluster.redis_ca", file, "CA file"));
    ClusterConfig { store, peer, heartbeat, redis_ca }
}

#[cfg(test)]
mod tests;
