//! The reference model of the contract, written from the contract text alone (no code of the
//! crate): canonical path, canonical host, routing of the test deployment, and what a client
//! and the upstream must see for a request. Also a model of how the upstream (a Tomcat-like
//! server) resolves a path, to catch requests that land on an unauthenticated service but
//! would be served by the upstream from a protected context.

use std::net::Ipv6Addr;

use super::{Authz, DESKTOP_HOST, Expect, Want};

/// A service of the test deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Svc {
    /// `auth = "basic"`, routes `/finesse/`, `/desktop/`, `/favicon.ico`; public
    /// `/desktop/assets/` and `=/favicon.ico`. Upstream `tomcat`.
    Finesse,
    /// `auth = "jwt"`, route `/cuic/`. Upstream `cuic`.
    Cuic,
    /// `auth = "none"`, routes `/public/` and the hostless `/`. Upstream `tomcat` (the same
    /// server as finesse).
    Open,
    /// `auth = "basic"`, host route `desktop.example.com` + `/`. Upstream `hosted`.
    Hosted,
}

impl Svc {
    pub fn upstream(self) -> &'static str {
        match self {
            Svc::Finesse | Svc::Open => "tomcat",
            Svc::Cuic => "cuic",
            Svc::Hosted => "hosted",
        }
    }

    pub fn needs_auth(self) -> bool {
        !matches!(self, Svc::Open)
    }
}

/// A (good) credential a request carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cred {
    None,
    /// `Authorization: Basic` of the valid user.
    Basic(String),
    /// `Authorization: Bearer` with a valid token for cuic.
    Bearer(String),
}

impl Cred {
    pub fn value(&self) -> Option<&str> {
        match self {
            Cred::None => None,
            Cred::Basic(v) | Cred::Bearer(v) => Some(v),
        }
    }

    fn accepted_by(&self, svc: Svc) -> bool {
        matches!((self, svc), (Cred::Basic(_), Svc::Finesse | Svc::Hosted) | (Cred::Bearer(_), Svc::Cuic))
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~".contains(&b)
}

/// Bytes a test may put literally into an origin-form path (RFC 3986 pchar, `/`, `%`, and
/// the backslash, which the contract refuses explicitly).
fn is_path_byte(b: u8) -> bool {
    is_unreserved(b) || b"!$&'()*+,;=:@/%\\".contains(&b)
}

fn is_hex(b: u8) -> bool {
    b.is_ascii_hexdigit()
}

/// Collapses runs of `/` into one.
pub fn merge_slashes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if c == '/' && out.ends_with('/') {
            continue;
        }
        out.push(c);
    }
    out
}

/// RFC 3986 §5.2.4 on an absolute path, except that climbing above the root is an error.
pub fn remove_dot_segments(path: &str) -> Result<String, &'static str> {
    let segments: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
    let mut stack: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    let last = segments.len() - 1;
    for (i, segment) in segments.iter().enumerate() {
        match *segment {
            "." => trailing_slash = i == last,
            ".." => {
                if stack.pop().is_none() {
                    return Err("climbs above the root");
                }
                trailing_slash = i == last;
            }
            other => {
                stack.push(other);
                trailing_slash = false;
            }
        }
    }
    let mut out = format!("/{}", stack.join("/"));
    if trailing_slash && !out.ends_with('/') {
        out.push('/');
    }
    Ok(out)
}

/// The canonical path of an origin-form path (no query), or why it is refused with 400.
///
/// `merge_first`: merge repeated slashes before resolving dot-segments (what Tomcat and
/// nginx do). The contract does not say in which order; the other order is accepted as an
/// alternative where the two differ.
pub fn canonical_path(path: &str, merge_first: bool) -> Result<String, &'static str> {
    if path == "*" {
        return Err("asterisk form");
    }
    if !path.starts_with('/') {
        return Err("not origin form");
    }
    for b in path.bytes() {
        if b == b'\\' {
            return Err("literal backslash");
        }
        if !is_path_byte(b) {
            return Err("byte not allowed in a path");
        }
    }
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            out.push(bytes[i] as char);
            i += 1;
            continue;
        }
        let (Some(&h), Some(&l)) = (bytes.get(i + 1), bytes.get(i + 2)) else { return Err("malformed escape") };
        if !is_hex(h) || !is_hex(l) {
            return Err("malformed escape");
        }
        let value = u8::from_str_radix(&path[i + 1..i + 3], 16).map_err(|_| "malformed escape")?;
        match value {
            b'/' => return Err("encoded slash"),
            b'\\' => return Err("encoded backslash"),
            0x00..=0x1f | 0x7f => return Err("encoded control byte"),
            v if is_unreserved(v) => out.push(v as char),
            v => out.push_str(&format!("%{v:02X}")),
        }
        i += 3;
    }
    // A double-encoded escape: `%25` followed by two hex digits (also when the digits were
    // themselves encoded unreserved characters: `%25%32%65` canonicalises to `%252e`).
    let ob = out.as_bytes();
    for j in 0..ob.len() {
        if ob[j..].starts_with(b"%25") && ob.get(j + 3).is_some_and(|b| is_hex(*b)) && ob.get(j + 4).is_some_and(|b| is_hex(*b)) {
            return Err("double-encoded escape");
        }
    }
    for segment in out[1..].split('/') {
        let cut = [segment.find(';'), segment.find("%3B")].into_iter().flatten().min();
        if let Some(cut) = cut
            && matches!(&segment[..cut], "" | "." | "..")
        {
            return Err("parameters on an empty or dot segment");
        }
    }
    if merge_first { remove_dot_segments(&merge_slashes(&out)) } else { remove_dot_segments(&out).map(|p| merge_slashes(&p)) }
}

/// How a Tomcat-like upstream maps a path it receives: path parameters (`;…`) stripped from
/// every segment, then percent-decoded (an encoded `/` or `\` is refused), then slashes
/// merged and dot-segments resolved. `None`: the upstream refuses the path.
pub fn upstream_resolution(path: &str) -> Option<String> {
    let stripped: Vec<&str> = path.split('/').map(|s| s.split(';').next().unwrap_or("")).collect();
    let stripped = stripped.join("/");
    let bytes = stripped.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let value = u8::from_str_radix(stripped.get(i + 1..i + 3)?, 16).ok()?;
            if value == b'/' || value == b'\\' {
                return None;
            }
            decoded.push(value);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    let text = String::from_utf8_lossy(&decoded).into_owned();
    if text.contains('\\') {
        return None;
    }
    remove_dot_segments(&merge_slashes(&text)).ok()
}

fn prefix_match(path: &str, prefix: &str, case_insensitive: bool) -> bool {
    if case_insensitive {
        path.len() >= prefix.len() && path.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
    } else {
        path.starts_with(prefix)
    }
}

/// Routing of the test deployment: longest prefix, a host route wins a tie. `ci`: finesse
/// has `case_insensitive = true`.
pub fn route(host: &str, path: &str, ci: bool) -> Svc {
    let routes: [(Option<&str>, &str, Svc, bool); 7] = [
        (None, "/finesse/", Svc::Finesse, ci),
        (None, "/desktop/", Svc::Finesse, ci),
        (None, "/favicon.ico", Svc::Finesse, ci),
        (None, "/cuic/", Svc::Cuic, false),
        (None, "/public/", Svc::Open, false),
        (None, "/", Svc::Open, false),
        (Some(DESKTOP_HOST), "/", Svc::Hosted, false),
    ];
    let mut best: Option<(usize, bool, Svc)> = None;
    for (route_host, prefix, svc, ci) in routes {
        if route_host.is_some_and(|h| h != host) || !prefix_match(path, prefix, ci) {
            continue;
        }
        let rank = (prefix.len(), route_host.is_some());
        if best.is_none_or(|(len, hosted, _)| rank > (len, hosted)) {
            best = Some((rank.0, rank.1, svc));
        }
    }
    best.map_or(Svc::Open, |(_, _, svc)| svc)
}

/// Whether `path` is one of `svc`'s public paths.
pub fn is_public(svc: Svc, path: &str, ci: bool) -> bool {
    match svc {
        Svc::Finesse => {
            prefix_match(path, "/desktop/assets/", ci)
                || if ci { path.eq_ignore_ascii_case("/favicon.ico") } else { path == "/favicon.ico" }
        }
        _ => false,
    }
}

/// The canonical authority: (value the upstream receives as `Host`, host used for routing).
pub fn canonical_host(raw: &str) -> Result<(String, String), &'static str> {
    let raw = raw.trim_matches([' ', '\t']);
    if raw.is_empty() {
        return Err("empty host");
    }
    let (host, port) = if raw.starts_with('[') {
        let end = raw.find(']').ok_or("unclosed IPv6 literal")?;
        raw[1..end].parse::<Ipv6Addr>().map_err(|_| "not an IPv6 literal")?;
        let rest = &raw[end + 1..];
        let port = if rest.is_empty() { None } else { Some(rest.strip_prefix(':').ok_or("junk after the IPv6 literal")?) };
        (raw[..=end].to_ascii_lowercase(), port)
    } else {
        let (host, port) = match raw.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (raw, None),
        };
        if host.len() > 255 {
            return Err("host too long");
        }
        if !host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)) {
            return Err("character not allowed in a host");
        }
        let host = host.to_ascii_lowercase();
        let host = host.strip_suffix('.').unwrap_or(&host).to_string();
        if host.is_empty() {
            return Err("empty host");
        }
        (host, port)
    };
    if let Some(port) = port
        && (port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) || port.parse::<u64>().unwrap_or(u64::MAX) > 65535)
    {
        return Err("bad port");
    }
    let forward = match port {
        Some(port) => format!("{host}:{port}"),
        None => host.clone(),
    };
    Ok((forward, host))
}

/// One request as the model sees it.
pub struct ModelRequest<'a> {
    pub method: &'a str,
    /// Canonical path (or why it is refused).
    pub path: Result<String, &'static str>,
    /// The query, forwarded unchanged (without the `?`).
    pub query: Option<&'a str>,
    /// Canonical (forwarded, routing) host, or why it is refused.
    pub host: Result<(String, String), &'static str>,
    pub cred: &'a Cred,
    pub body_len: usize,
    /// finesse has `case_insensitive = true`.
    pub ci: bool,
}

/// Tag of a case whose literal contract outcome (forwarded to an unauthenticated service)
/// would let the upstream serve a protected path: the suite expects a refusal instead.
pub const CONFLICT: &str = "conflict";

/// What the client and the upstream must see.
pub fn expect(req: &ModelRequest<'_>) -> (Expect, Option<&'static str>) {
    let (forward_host, route_host) = match &req.host {
        Ok(pair) => pair.clone(),
        Err(_) => return (Expect::status(400), None),
    };
    let path = match &req.path {
        Ok(path) => path.clone(),
        Err(_) => return (Expect::status(400), None),
    };
    let svc = route(&route_host, &path, req.ci);
    // The edge decides on both forms of the path — as is, and with every segment's
    // `;parameters` (literal `;` or `%3B`) removed, as Tomcat and Jetty read it: when they
    // route differently the request is refused; a path is public only in both forms.
    let unparameterized: String = path
        .split('/')
        .map(|s| [s.find(';'), s.find("%3B")].into_iter().flatten().min().map_or(s, |cut| &s[..cut]))
        .collect::<Vec<_>>()
        .join("/");
    if route(&route_host, &unparameterized, req.ci) != svc {
        return (Expect::status(400), None);
    }
    let public = is_public(svc, &path, req.ci) && is_public(svc, &unparameterized, req.ci);
    let target = match req.query {
        Some(q) => format!("{path}?{q}"),
        None => path.clone(),
    };
    let want = |authz| Want::new(svc.upstream(), req.method, &target, &forward_host, authz).body(req.body_len);
    if svc.needs_auth() && !public {
        return match req.cred.value() {
            Some(value) if req.cred.accepted_by(svc) => (Expect::status(200).forwarded(want(Authz::Exactly(value.to_string()))), None),
            _ => (Expect::status(401), None),
        };
    }
    // No edge authentication: the upstream must not map this path to a protected context.
    if let Some(resolved) = upstream_resolution(&path) {
        let other = route(&route_host, &resolved, req.ci);
        if other.upstream() == svc.upstream() && other.needs_auth() && !is_public(other, &resolved, req.ci) {
            return (Expect::statuses(&[400, 401]), Some(CONFLICT));
        }
    }
    let authz = match (public, req.cred) {
        (true, _) | (false, Cred::None) => Authz::Absent,
        (false, _) => Authz::Any,
    };
    (Expect::status(200).forwarded(want(authz)), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_agrees_with_the_contract_examples() {
        let c = |p| canonical_path(p, true);
        assert_eq!(c("/fin%65sse/x"), Ok("/finesse/x".into()));
        assert_eq!(c("/a/%3c"), Ok("/a/%3C".into()));
        assert_eq!(c("/desktop/assets/../../finesse/api"), Ok("/finesse/api".into()));
        assert_eq!(c("//finesse//api"), Ok("/finesse/api".into()));
        assert_eq!(c("/finesse/api;jsessionid=1/x"), Ok("/finesse/api;jsessionid=1/x".into()));
        for bad in [
            "/..",
            "/a/../../b",
            "/a%2Fb",
            "/a%5c",
            "/a\\b",
            "/..;/",
            "/.;x/",
            "/a/;/b",
            "/%2e%2e;x",
            "/..%3B",
            "/%00",
            "/%7F",
            "/%252e",
            "/%zz",
            "/%4",
            "/a%",
            "a",
            "*",
        ] {
            assert!(c(bad).is_err(), "{bad}");
        }
        assert_eq!(canonical_host("Desktop.Example.COM."), Ok(("desktop.example.com".into(), "desktop.example.com".into())));
        assert_eq!(canonical_host("desktop.example.com:8445").map(|h| h.0), Ok("desktop.example.com:8445".into()));
        assert_eq!(upstream_resolution("/finesse;x/api"), Some("/finesse/api".into()));
    }
}
