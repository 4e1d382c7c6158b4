//! `[[service]]` and `[[route]]`: what each service authenticates and exposes without
//! authentication (public paths in canonical form), its upstream pool or static directory,
//! CORS preflight handling, and the routes (host + canonical prefix) that lead to it.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use super::super::file::{AuthFile, HealthCheckFile, RouteFile, ServiceFile};
use super::super::path::normalize_path;
use super::super::{
    AuthMode, DEFAULT_CONNECT_TIMEOUT, DEFAULT_QUEUE_TIMEOUT, DEFAULT_RESPONSE_TIMEOUT, HealthCheckConfig, PathPolicy, PoolConfig,
    PublicPath, RouteConfig, ServiceConfig, ServiceKind, UpstreamConfig,
};
use super::{Checker, valid_host_name};

/// Largest upstream weight accepted.
const MAX_WEIGHT: u64 = 1000;

pub(super) fn resolve_services(c: &mut Checker<'_>, raw: Vec<Option<ServiceFile>>, auth: &AuthFile) -> Vec<ServiceConfig> {
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
pub(super) fn valid_host_port(text: &str) -> bool {
    if text.parse::<SocketAddr>().is_ok() {
        return true;
    }
    let Some((host, port)) = text.rsplit_once(':') else { return false };
    port.parse::<u16>().is_ok_and(|p| p != 0) && valid_host_name(host)
}

pub(super) fn resolve_routes(
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
