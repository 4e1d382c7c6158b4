//! Header rewriting between client and upstream (RFC 9110 §7.6.1 hop-by-hop fields) and the
//! forwarding headers an upstream relies on: `X-Forwarded-For`, `X-Forwarded-Proto`,
//! `X-Forwarded-Host` and `Forwarded` (RFC 7239).
//!
//! The edge faces the internet, so forwarding headers sent by clients are never trusted:
//! they are replaced, not appended to; every other `X-Forwarded-*` field, `X-Real-IP`, the
//! path overrides `X-Original-URL` / `X-Rewrite-URL` and the client-address fields IP
//! allow-lists read (`True-Client-IP`, `X-Client-IP`, …) are removed.

use std::fmt::Write as _;
use std::net::IpAddr;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Fields that describe one connection and never cross the proxy.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Fields a client may not set for the upstream (besides every `X-Forwarded-*`, which only
/// the edge writes): another path than the canonical one (`X-Original-URL`, `X-Rewrite-URL`:
/// IIS URL Rewrite, Symfony, Zend route on them), another authority, or another client
/// address (what IP allow-lists read).
const SPOOFABLE: [HeaderName; 11] = [
    X_REAL_IP,
    HeaderName::from_static("x-original-url"),
    HeaderName::from_static("x-rewrite-url"),
    HeaderName::from_static("x-original-host"),
    HeaderName::from_static("x-host"),
    HeaderName::from_static("true-client-ip"),
    HeaderName::from_static("x-client-ip"),
    HeaderName::from_static("x-cluster-client-ip"),
    HeaderName::from_static("client-ip"),
    HeaderName::from_static("cf-connecting-ip"),
    HeaderName::from_static("x-originating-ip"),
];

/// Who sent a request and how, for the forwarding headers.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    pub client: IpAddr,
    /// `"http"` or `"https"`.
    pub proto: &'static str,
    pub host: &'a str,
}

/// Whether the request asks for a WebSocket upgrade (HTTP/1.1, `Connection: upgrade`,
/// `Upgrade: websocket`). Other upgrades (such as `h2c`) are not proxied.
pub fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    let upgrade = headers.get(header::UPGRADE).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    upgrade && connection_has_token(headers, "upgrade")
}

/// The `Sec-WebSocket-Accept` a server that really switched to WebSocket answers to `key`
/// (RFC 6455 §4.2.2: base64 of the SHA-1 of the key and the protocol GUID).
pub fn websocket_accept(key: &[u8]) -> String {
    use base64::Engine;
    const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY);
    context.update(key);
    context.update(GUID);
    base64::engine::general_purpose::STANDARD.encode(context.finish().as_ref())
}

/// Whether an upstream's 101 answer to a WebSocket upgrade proves that it switched: it names
/// `websocket` in `Upgrade` and carries the `Sec-WebSocket-Accept` computed from the key it
/// was sent. A 101 without them (an endpoint that echoes a status, a misbehaving server) did
/// not switch, and the bytes a tunnel carried would be read there as HTTP requests.
pub fn websocket_switched(request: &HeaderMap, response: &HeaderMap) -> bool {
    let Some(key) = request.get(header::SEC_WEBSOCKET_KEY) else { return false };
    let upgrade = response.get(header::UPGRADE).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let mut accepts = response.get_all(header::SEC_WEBSOCKET_ACCEPT).iter();
    let accept = match (accepts.next(), accepts.next()) {
        (Some(accept), None) => accept.as_bytes().trim_ascii(),
        _ => return false,
    };
    upgrade && accept == websocket_accept(key.as_bytes().trim_ascii()).as_bytes()
}

fn connection_has_token(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Removes hop-by-hop fields, including those named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    remove_where(headers, |name| HOP_BY_HOP.contains(name));
}

/// Removes every field `unwanted` names, and the fields `Connection` names (hop-by-hop by
/// declaration; never `Host` or `Content-Length`). One pass over the names, and no
/// allocation when nothing is removed — the common case.
fn remove_where(headers: &mut HeaderMap, unwanted: impl Fn(&HeaderName) -> bool) {
    let mut doomed: Vec<HeaderName> = Vec::new();
    for name in headers.keys() {
        if *name == header::CONNECTION {
            let named = headers.get_all(header::CONNECTION).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(','));
            // Never let `Connection: host` style tricks remove end-to-end essentials.
            doomed.extend(
                named
                    .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
                    .filter(|n| *n != header::HOST && *n != header::CONTENT_LENGTH),
            );
        }
        if unwanted(name) {
            doomed.push(name.clone());
        }
    }
    for name in doomed {
        headers.remove(name);
    }
}

/// Rewrites a client request's headers for the upstream.
pub fn request_headers(headers: &mut HeaderMap, origin: Origin<'_>, websocket: bool) {
    let upgrade = if websocket { headers.get(header::UPGRADE).cloned() } else { None };
    // Hop-by-hop fields go, and client-set forwarding fields are never trusted: every
    // `X-Forwarded-*` goes (the edge writes its own below), and so does every field naming
    // another path, host or client.
    // So does every field with an underscore (as nginx drops them): CGI/WSGI upstreams map
    // `-` and `_` alike, so `X_Forwarded_For` or `Content_Length` would read there as the
    // field the edge controls.
    remove_where(headers, |name| {
        HOP_BY_HOP.contains(name) || SPOOFABLE.contains(name) || name.as_str().starts_with("x-forwarded-") || name.as_str().contains('_')
    });
    if let Some(upgrade) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, upgrade);
    }
    let client = origin.client.to_canonical();
    headers.insert(X_FORWARDED_FOR, HeaderValue::from(IpValue(client)));
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(origin.proto));
    let host_ok = !origin.host.is_empty() && origin.host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
    // One string, handed to the header without a copy.
    let mut forwarded = String::with_capacity(48 + origin.host.len());
    let _ = match client {
        IpAddr::V4(v4) => write!(forwarded, "for={v4};proto={}", origin.proto),
        IpAddr::V6(v6) => write!(forwarded, "for=\"[{v6}]\";proto={}", origin.proto),
    };
    if host_ok {
        // `host_ok` checked the bytes, so these are valid header values.
        if let Ok(value) = HeaderValue::from_str(origin.host) {
            headers.insert(X_FORWARDED_HOST, value);
        }
        let _ = write!(forwarded, ";host=\"{}\"", origin.host);
    } else {
        headers.remove(X_FORWARDED_HOST);
    }
    if let Ok(value) = HeaderValue::from_maybe_shared(Bytes::from(forwarded)) {
        headers.insert(header::FORWARDED, value);
    }
}

/// Rewrites an upstream response's headers for the client.
pub fn response_headers(headers: &mut HeaderMap, switching_protocols: bool) {
    let upgrade = if switching_protocols { headers.get(header::UPGRADE).cloned() } else { None };
    strip_hop_by_hop(headers);
    if let Some(upgrade) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, upgrade);
    }
}

struct IpValue(IpAddr);

impl From<IpValue> for HeaderValue {
    fn from(ip: IpValue) -> HeaderValue {
        // An IP address prints as ASCII digits, dots, colons and hex letters only; the string
        // becomes the value without a copy.
        HeaderValue::from_maybe_shared(Bytes::from(ip.0.to_string())).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_accept_follows_rfc6455() {
        // The example of RFC 6455 §1.3.
        assert_eq!(websocket_accept(b"dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        let request = headers(&[("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")]);
        let good = headers(&[("upgrade", "websocket"), ("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")]);
        assert!(websocket_switched(&request, &good));
        for bad in [
            headers(&[("upgrade", "websocket")]),
            headers(&[("upgrade", "websocket"), ("sec-websocket-accept", "AAAA")]),
            headers(&[("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")]),
            headers(&[
                ("upgrade", "websocket"),
                ("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
                ("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            ]),
        ] {
            assert!(!websocket_switched(&request, &bad), "{bad:?}");
        }
        assert!(!websocket_switched(&HeaderMap::new(), &good), "no key sent: nothing proves a switch");
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn hop_by_hop_and_connection_named_fields_are_removed() {
        let mut h = headers(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("proxy-authorization", "Basic abc"),
            ("accept", "*/*"),
            ("host", "a"),
        ]);
        strip_hop_by_hop(&mut h);
        let names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["accept", "host"]);
    }

    #[test]
    fn connection_cannot_remove_host() {
        let mut h = headers(&[("connection", "host, content-length"), ("host", "a"), ("content-length", "3")]);
        strip_hop_by_hop(&mut h);
        assert!(h.contains_key("host") && h.contains_key("content-length"));
    }

    #[test]
    fn forwarding_headers_replace_client_supplied_ones() {
        let mut h = headers(&[("x-forwarded-for", "1.2.3.4"), ("x-real-ip", "1.2.3.4"), ("forwarded", "for=1.2.3.4")]);
        request_headers(&mut h, Origin { client: "203.0.113.9".parse().unwrap(), proto: "https", host: "edge.example.com" }, false);
        assert_eq!(h["x-forwarded-for"], "203.0.113.9");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "edge.example.com");
        assert_eq!(h["forwarded"], "for=203.0.113.9;proto=https;host=\"edge.example.com\"");
        assert!(!h.contains_key("x-real-ip"));
    }

    #[test]
    fn fields_with_underscores_never_reach_the_upstream() {
        let mut h = headers(&[("x_forwarded_for", "1.2.3.4"), ("content_length", "5"), ("x_user", "admin"), ("x-user", "ok")]);
        request_headers(&mut h, Origin { client: "203.0.113.9".parse().unwrap(), proto: "https", host: "a" }, false);
        assert!(h.keys().all(|name| !name.as_str().contains('_')), "{h:?}");
        assert_eq!(h["x-user"], "ok");
        assert_eq!(h["x-forwarded-for"], "203.0.113.9");
    }

    #[test]
    fn ipv6_clients_are_quoted_in_forwarded_and_mapped_v4_is_unwrapped() {
        let mut h = HeaderMap::new();
        request_headers(&mut h, Origin { client: "2001:db8::1".parse().unwrap(), proto: "http", host: "bad\"host" }, false);
        assert_eq!(h["forwarded"], "for=\"[2001:db8::1]\";proto=http");
        let mut h = HeaderMap::new();
        request_headers(&mut h, Origin { client: "::ffff:192.0.2.1".parse().unwrap(), proto: "http", host: "a" }, false);
        assert_eq!(h["x-forwarded-for"], "192.0.2.1");
    }

    #[test]
    fn websocket_upgrade_keeps_upgrade_fields() {
        let mut h = headers(&[("connection", "keep-alive, Upgrade"), ("upgrade", "websocket"), ("sec-websocket-key", "k")]);
        assert!(is_websocket_upgrade(&h));
        request_headers(&mut h, Origin { client: "127.0.0.1".parse().unwrap(), proto: "http", host: "a" }, true);
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["upgrade"], "websocket");
        assert!(!is_websocket_upgrade(&headers(&[("connection", "upgrade"), ("upgrade", "h2c")])));
    }
}
