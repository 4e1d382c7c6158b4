//! The canonical view of a request (DESIGN §1): one canonical path, one authority, one
//! credential — what every decision is made on — and the rewrite that makes the request the
//! upstream receives exactly that view.

use http::{HeaderValue, Request, Version, header};

use super::respond::ProxyError;
use crate::auth::websocket;
use crate::config::PathPolicy;
use crate::net::canonical::{self, Authority};

/// The canonical view of a request (DESIGN §1): what every decision is made on, and what the
/// upstream receives.
#[derive(Debug)]
pub struct View {
    /// `None` only for HTTP/1.0 without `Host`.
    pub authority: Option<Authority>,
    pub path: String,
    /// `path` without `;parameters` (how Tomcat and Jetty read it), when it has any.
    pub unparameterized: Option<String>,
    /// The query as received (without `?`).
    pub query: Option<String>,
}

impl View {
    /// The origin-form target the upstream receives.
    pub fn target(&self) -> String {
        match &self.query {
            Some(query) => format!("{}?{query}", self.path),
            None => self.path.clone(),
        }
    }
}

/// Builds the canonical view, or says why the request cannot have one (400).
pub fn canonical_view<B>(request: &Request<B>, policy: PathPolicy) -> Result<View, &'static str> {
    let headers = request.headers();
    let mut credentials = headers.get_all(header::AUTHORIZATION).iter();
    if credentials.next().is_some() && credentials.next().is_some() {
        return Err("more than one Authorization header");
    }
    let mut hosts = headers.get_all(header::HOST).iter();
    let host_field = hosts.next();
    if hosts.next().is_some() {
        return Err("more than one Host header");
    }
    let host_field = host_field.map(|h| h.to_str().map_err(|_| "invalid Host header")).transpose()?;
    let parse = |text: &str| canonical::parse_authority(text).map_err(|refusal| refusal.reason());
    let uri = request.uri();
    if uri.scheme_str().is_some_and(|s| !s.eq_ignore_ascii_case("http") && !s.eq_ignore_ascii_case("https")) {
        return Err("unsupported scheme in request target");
    }
    let authority = match (uri.authority().map(http::uri::Authority::as_str), host_field) {
        // HTTP/2: `:authority` and `host` must agree (RFC 9113 §8.3.1).
        (Some(target), Some(host)) if request.version() == Version::HTTP_2 => {
            let (target, host) = (parse(target)?, parse(host)?);
            if target != host {
                return Err(":authority and host differ");
            }
            Some(target)
        }
        // An absolute-form target's authority replaces Host (RFC 9112 §3.2.2).
        (Some(target), _) => Some(parse(target)?),
        (None, Some(host)) => Some(parse(host)?),
        (None, None) if request.version() == Version::HTTP_10 => None,
        (None, None) => return Err("missing Host header"),
    };
    let path = canonical::normalize_path(uri.path(), policy).map_err(|refusal| refusal.reason())?;
    let unparameterized = canonical::without_parameters(&path);
    Ok(View { authority, path, unparameterized, query: uri.query().map(str::to_string) })
}

/// Rewrites `request` to its canonical view: origin-form target, one canonical `Host`.
pub fn apply_view<B>(request: &mut Request<B>, view: &View) -> Result<(), ProxyError> {
    // The common case — origin form, already canonical, one canonical Host — costs nothing.
    let uri = request.uri();
    if uri.scheme().is_some() || uri.authority().is_some() || uri.path() != view.path {
        *request.uri_mut() = view.target().parse().map_err(|_| ProxyError::BadRequest("invalid request target"))?;
    }
    let headers = request.headers_mut();
    let host = view.authority.as_ref().map(Authority::as_str);
    if headers.get(header::HOST).map(HeaderValue::as_bytes) != host.map(str::as_bytes) {
        headers.remove(header::HOST);
        if let Some(host) = host {
            headers.insert(header::HOST, HeaderValue::from_str(host).map_err(|_| ProxyError::BadRequest("invalid host"))?);
        }
    }
    Ok(())
}

/// Removes every credential a client sent: on public paths and preflights the edge validates
/// none, so none may reach the upstream — a WebSocket protocol credential included.
pub fn strip_credentials(headers: &mut http::HeaderMap) {
    headers.remove(header::AUTHORIZATION);
    headers.remove(header::PROXY_AUTHORIZATION);
    headers.remove(header::COOKIE);
    websocket::strip_any_credential(headers);
}
