//! The WebSocket credential (DESIGN §2): browsers cannot set `Authorization` on a WebSocket
//! upgrade, so the client sends
//! `Sec-WebSocket-Protocol: xmpp, <URL-encoded "Authorization: Bearer …" | "Authorization: Basic …">`.
//! This module finds that element, returns the credential, and rebuilds the header without
//! it — the credential never reaches the upstream, and only real subprotocols can be echoed.

use http::{HeaderMap, HeaderValue, header};

/// Longest `Sec-WebSocket-Protocol` value considered.
pub const MAX_PROTOCOL_HEADER_BYTES: usize = 8192;

/// What the protocol header held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtocolCredential {
    /// No credential element.
    Missing,
    /// An element that looks like a credential but cannot be used (bad encoding, wrong
    /// prefix, several credentials).
    Malformed,
    /// The `Authorization` value, and the remaining (real) subprotocols.
    Found { authorization: String, protocols: Vec<String> },
}

/// Extracts the credential element from the request's `Sec-WebSocket-Protocol` fields.
pub fn extract(headers: &HeaderMap) -> ProtocolCredential {
    let mut elements = Vec::new();
    let mut total = 0;
    for value in headers.get_all(header::SEC_WEBSOCKET_PROTOCOL) {
        total += value.len();
        let Ok(text) = value.to_str() else { return ProtocolCredential::Malformed };
        elements.extend(text.split(',').map(str::trim).filter(|e| !e.is_empty()).map(str::to_string));
    }
    if total > MAX_PROTOCOL_HEADER_BYTES {
        return ProtocolCredential::Malformed;
    }
    let mut authorization = None;
    let mut protocols = Vec::new();
    for element in elements {
        if !looks_like_credential(&element) {
            protocols.push(element);
            continue;
        }
        if authorization.is_some() {
            return ProtocolCredential::Malformed;
        }
        let Some(decoded) = crate::net::percent::decode(&element) else { return ProtocolCredential::Malformed };
        let Some((name, value)) = decoded.split_once(':') else { return ProtocolCredential::Malformed };
        let value = value.trim();
        // `get` rather than indexing: the decoded text may hold multi-byte characters.
        let scheme_ok = value.get(..6).is_some_and(|p| p.eq_ignore_ascii_case("basic "))
            || value.get(..7).is_some_and(|p| p.eq_ignore_ascii_case("bearer "));
        if !name.trim().eq_ignore_ascii_case("authorization") || !scheme_ok || HeaderValue::from_str(value).is_err() {
            return ProtocolCredential::Malformed;
        }
        authorization = Some(value.to_string());
    }
    match authorization {
        Some(authorization) => ProtocolCredential::Found { authorization, protocols },
        None => ProtocolCredential::Missing,
    }
}

/// Whether a `Sec-WebSocket-Protocol` element carries (or tries to carry) a credential.
fn looks_like_credential(element: &str) -> bool {
    element.get(..13).is_some_and(|p| p.eq_ignore_ascii_case("authorization"))
}

/// Removes every element that carries or tries to carry a credential — well-formed or not —
/// from the request's `Sec-WebSocket-Protocol` (where the edge validates nothing: public
/// paths, preflights). A field that is not text is removed whole.
pub fn strip_any_credential(headers: &mut HeaderMap) {
    if !headers.contains_key(header::SEC_WEBSOCKET_PROTOCOL) {
        return;
    }
    let mut protocols = Vec::new();
    for value in headers.get_all(header::SEC_WEBSOCKET_PROTOCOL) {
        let Ok(text) = value.to_str() else { continue };
        protocols.extend(text.split(',').map(str::trim).filter(|e| !e.is_empty() && !looks_like_credential(e)).map(str::to_string));
    }
    strip_credential(headers, &protocols);
}

/// Replaces the request's `Sec-WebSocket-Protocol` with the real subprotocols only.
pub fn strip_credential(headers: &mut HeaderMap, protocols: &[String]) {
    headers.remove(header::SEC_WEBSOCKET_PROTOCOL);
    if !protocols.is_empty()
        && let Ok(value) = HeaderValue::from_str(&protocols.join(", "))
    {
        headers.insert(header::SEC_WEBSOCKET_PROTOCOL, value);
    }
}

/// Keeps the upstream's chosen subprotocol only if the client offered it (after stripping).
pub fn filter_response_protocol(response: &mut HeaderMap, offered: &[String]) {
    let echoed = response.get(header::SEC_WEBSOCKET_PROTOCOL).and_then(|v| v.to_str().ok()).map(str::trim).map(str::to_string);
    if let Some(echoed) = echoed
        && !offered.iter().any(|p| p.eq_ignore_ascii_case(&echoed))
    {
        response.remove(header::SEC_WEBSOCKET_PROTOCOL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(value));
        h
    }

    #[test]
    fn the_credential_element_is_found_and_decoded() {
        let found = extract(&headers("xmpp, Authorization%3A%20Bearer%20abc.def.ghi"));
        assert_eq!(found, ProtocolCredential::Found { authorization: "Bearer abc.def.ghi".into(), protocols: vec!["xmpp".into()] });
        let found = extract(&headers("xmpp, Authorization%3A%20Basic%20YWdlbnQ6cHc%3D"));
        assert_eq!(found, ProtocolCredential::Found { authorization: "Basic YWdlbnQ6cHc=".into(), protocols: vec!["xmpp".into()] });
    }

    #[test]
    fn every_credential_element_can_be_stripped_well_formed_or_not() {
        for (value, left) in [
            ("xmpp, Authorization%3A%20Basic%20YWdlbnQ6cHc%3D", Some("xmpp")),
            ("Authorization%3A%20Bearer%20abc", None),
            ("xmpp, AUTHORIZATION%3A%20Basic%20%ZZ, chat", Some("xmpp, chat")),
            ("xmpp", Some("xmpp")),
        ] {
            let mut h = headers(value);
            strip_any_credential(&mut h);
            assert_eq!(h.get(header::SEC_WEBSOCKET_PROTOCOL).map(|v| v.to_str().unwrap()), left, "{value}");
        }
        let mut none = HeaderMap::new();
        strip_any_credential(&mut none);
        assert!(none.is_empty());
    }

    #[test]
    fn missing_and_malformed_credentials_are_told_apart() {
        assert_eq!(extract(&headers("xmpp")), ProtocolCredential::Missing);
        assert_eq!(extract(&HeaderMap::new()), ProtocolCredential::Missing);
        assert_eq!(extract(&headers("xmpp, Authorization%3A%20Digest%20x")), ProtocolCredential::Malformed);
        assert_eq!(extract(&headers("xmpp, Authorization%ZZ")), ProtocolCredential::Malformed);
        assert_eq!(extract(&headers("xmpp, AuthorizationBearer")), ProtocolCredential::Malformed);
        assert_eq!(
            extract(&headers("Authorization%3A%20Bearer%20a, Authorization%3A%20Bearer%20b")),
            ProtocolCredential::Malformed,
            "two credentials"
        );
        assert_eq!(
            extract(&headers("xmpp, Authorization%3A%20Bearer%20a%0D%0AX-Evil%3A%201")),
            ProtocolCredential::Malformed,
            "header injection"
        );
        assert_eq!(extract(&headers("xmpp, Authorization%3A%20B%C3%A9arer%20x")), ProtocolCredential::Malformed, "multi-byte text");
    }

    #[test]
    fn stripping_keeps_only_real_subprotocols_and_filters_the_echo() {
        let mut h = headers("xmpp, Authorization%3A%20Bearer%20abc");
        strip_credential(&mut h, &["xmpp".to_string()]);
        assert_eq!(h[header::SEC_WEBSOCKET_PROTOCOL], "xmpp");
        let mut h = headers("Authorization%3A%20Bearer%20abc");
        strip_credential(&mut h, &[]);
        assert!(!h.contains_key(header::SEC_WEBSOCKET_PROTOCOL));
        let mut response = headers("Authorization%3A%20Bearer%20abc");
        filter_response_protocol(&mut response, &["xmpp".to_string()]);
        assert!(!response.contains_key(header::SEC_WEBSOCKET_PROTOCOL), "a credential is never echoed");
        let mut response = headers("xmpp");
        filter_response_protocol(&mut response, &["xmpp".to_string()]);
        assert_eq!(response[header::SEC_WEBSOCKET_PROTOCOL], "xmpp");
    }
}
