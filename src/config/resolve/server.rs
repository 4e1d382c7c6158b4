//! `[server]`, `[[listener]]`, `[tls]` and `[admin]`: the edge's identity, directories and
//! client limits, where it listens (and how each listener treats unsafe paths), its
//! certificate files, and the admin API's address and token.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;

use super::super::file::{AdminFile, ListenerFile, ServerFile, TlsFile};
use super::super::{
    AdminConfig, AdminToken, BackslashPolicy, DEFAULT_ADMIN_ADDRESS, DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_HEADER_BYTES, DEFAULT_MAX_HEADERS, EscapedSlashPolicy, ListenerConfig, PathPolicy, RedirectTarget,
    RuntimeLayout, ServerConfig, TlsFiles,
};
use super::{Checker, valid_host_name};

/// `raw` is `None` when `[server]` did not parse (already reported): its keys take their
/// defaults and its missing name is not reported again.
pub(super) fn resolve_server(c: &mut Checker<'_>, raw: Option<ServerFile>) -> ServerConfig {
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
        runtime: match raw.runtime.as_deref() {
            None => RuntimeLayout::default(),
            Some(word) => RuntimeLayout::parse(word).unwrap_or_else(|| {
                c.err("server.runtime", format!("{word:?} is not a runtime layout"), "use \"per-core\" or \"work-stealing\"");
                RuntimeLayout::default()
            }),
        },
        workers: c.bounded("server.workers", raw.workers, 0, 0, 1024) as usize,
    }
}

pub(super) fn socket_addr(c: &mut Checker<'_>, path: &str, text: Option<&str>) -> Option<SocketAddr> {
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

/// `[[listener]]`; `sip_listeners` says whether `[[sip.listener]]`s exist (an edge may be SIP
/// only, but it needs at least one listener of some kind).
pub(super) fn resolve_listeners(c: &mut Checker<'_>, raw: Vec<Option<ListenerFile>>, sip_listeners: bool) -> Vec<ListenerConfig> {
    if raw.is_empty() && !sip_listeners {
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

pub(super) fn resolve_tls(c: &mut Checker<'_>, raw: TlsFile) -> Option<TlsFiles> {
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

pub(super) fn resolve_admin(c: &mut Checker<'_>, raw: AdminFile, _have_tls: bool) -> Option<AdminConfig> {
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
