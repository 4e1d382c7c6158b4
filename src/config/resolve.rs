//! Raw file → typed [`Config`], collecting every error with its key path and a hint.
//!
//! The TOML text is parsed once into a table; each top-level section (and each element of
//! an array of tables) is then deserialized on its own, so a mistake in `[[listener]]` does
//! not hide a mistake in `[[service]]`. Semantic checks (unknown service, duplicate names,
//! missing files, bad durations) run on whatever parsed and add to the same list.
//!
//! This file owns the [`Checker`] every section's resolution reports through and the order
//! sections are resolved in; each section lives in its own file: `server` (server,
//! listeners, TLS, admin), `services` (services, pools, routes), `auth` (Basic, JWT, edge
//! tokens, rate control), `protection` (the shield), `cluster` (the state store) and `logging` (file-log format,
//! log shipping).

pub(super) use super::valid_host_name;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;

use super::file::{
    AdminFile, AuthFile, ClusterFile, FederationFile, FirewallFile, ListenerFile, LoggingFile, MaintenanceFile, PartnerFile,
    ProtectionFile, RateControlFile, RouteFile, ServerFile, ServiceFile, SipFile, SipListenerFile, TlsFile,
};
use super::{Config, ConfigError, ConfigErrors, DEFAULT_SESSION_IDLE, MaintenanceConfig};

mod auth;
mod cluster;
mod firewall;
mod logging;
mod protection;
mod server;
mod services;
mod sip;

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

    /// A section that holds arrays of tables besides its keys (`[sip]` with `[[sip.listener]]`):
    /// its table, to take the arrays out before the keys are deserialized.
    fn table(&mut self, path: &str, value: Option<toml::Value>) -> toml::Table {
        match value {
            None => toml::Table::new(),
            Some(toml::Value::Table(table)) => table,
            Some(_) => {
                self.err(path, "must be a table", format!("write it as [{path}]"));
                toml::Table::new()
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
    let (sip_listeners_raw, sip_raw): (Vec<Option<SipListenerFile>>, SipFile) = {
        let mut sip = c.table("sip", table.remove("sip"));
        let listeners = c.array("sip.listener", sip.remove("listener"));
        (listeners, c.section("sip", Some(toml::Value::Table(sip))).unwrap_or_default())
    };
    let (federation_raw, allow_raw, block_raw): (FederationFile, Vec<Option<PartnerFile>>, Vec<Option<PartnerFile>>) = {
        let mut federation = c.table("federation", table.remove("federation"));
        let allow = c.array("federation.allow", federation.remove("allow"));
        let block = c.array("federation.block", federation.remove("block"));
        (c.section("federation", Some(toml::Value::Table(federation))).unwrap_or_default(), allow, block)
    };
    let firewall_raw: Option<FirewallFile> = c.section("firewall", table.remove("firewall"));
    let (logging_raw, ship_raw): (LoggingFile, Option<super::file::ShipFile>) = {
        let mut logging = c.table("logging", table.remove("logging"));
        let ship = c.section("logging.ship", logging.remove("ship"));
        (c.section("logging", Some(toml::Value::Table(logging))).unwrap_or_default(), ship)
    };
    for key in table.keys() {
        c.err(
            key.clone(),
            "unknown section",
            "known sections: server, listener, tls, admin, service, route, auth, rate_control, protection, maintenance, cluster, sip, federation, firewall, logging",
        );
    }

    let server = server::resolve_server(&mut c, server_raw);
    let listeners = server::resolve_listeners(&mut c, listeners_raw, !sip_listeners_raw.is_empty());
    let http_names: Vec<String> = listeners.iter().map(|l| l.name.clone()).collect();
    let sip = sip::resolve_sip(&mut c, sip_listeners_raw, sip_raw, &http_names);
    let federation = sip::resolve_federation(&mut c, federation_raw, allow_raw, block_raw);
    let tls = tls_raw.and_then(|t| server::resolve_tls(&mut c, t));
    let admin = admin_raw.and_then(|a| server::resolve_admin(&mut c, a, tls.is_some()));
    let services = services::resolve_services(&mut c, services_raw, &auth_raw);
    // A service that failed to parse is already reported; don't cascade into its routes.
    let services_complete = services_raw_ok;
    let routes = services::resolve_routes(&mut c, routes_raw, &services, services_complete);
    let auth = auth::check_auth(&mut c, &auth_raw, rate_raw);
    let protection = protection::resolve_protection(&mut c, &protection_raw);
    let maintenance = MaintenanceConfig {
        retry_after: c.duration("maintenance.retry_after", maintenance_raw.retry_after.as_ref(), Duration::from_secs(120)),
        session_idle: c.duration("maintenance.session_idle", maintenance_raw.session_idle.as_ref(), DEFAULT_SESSION_IDLE),
        shutdown_drain: c.duration("maintenance.shutdown_drain", maintenance_raw.shutdown_drain.as_ref(), Duration::from_secs(10)),
    };
    let cluster = cluster::resolve_cluster(&mut c, cluster_raw, &server.name);
    let firewall = firewall_raw.and_then(|raw| firewall::resolve_firewall(&mut c, raw, &protection));
    let logging = logging::resolve_logging(&mut c, logging_raw, ship_raw);

    if !c.errors.is_empty() {
        return Err(ConfigErrors(c.errors));
    }
    Ok(Config {
        source: None,
        server,
        listeners,
        tls,
        admin,
        services,
        routes,
        auth,
        cluster,
        maintenance,
        protection,
        sip,
        federation,
        firewall,
        logging,
    })
}

#[cfg(test)]
mod tests;
