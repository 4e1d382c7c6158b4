//! Percent-encoding (RFC 3986 §2.1), shared by everything that puts network text into URLs
//! or reads it back: request paths (static files), query strings (admin API), user names in
//! validation URLs, WebSocket protocol credentials.

/// Decodes `%XX` escapes; `None` for a malformed escape or bytes that are not UTF-8.
pub fn decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            // Two hex digits, nothing else: `from_str_radix` alone would take a sign (`%+1`).
            let hex = text.get(i + 1..i + 3).filter(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()))?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Encodes everything but RFC 3986 unreserved characters.
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_are_url_encoded() {
        assert_eq!(encode("agent 1/../x?y=z&é"), "agent%201%2F..%2Fx%3Fy%3Dz%26%C3%A9");
    }

    #[test]
    fn decoding_round_trips_and_refuses_malformed_escapes() {
        assert_eq!(decode(&encode("a b/é")).as_deref(), Some("a b/é"));
        assert_eq!(decode("%zz"), None);
        assert_eq!(decode("%4"), None);
        assert_eq!(decode("%C3"), None, "not UTF-8");
        assert_eq!(decode("%+1"), None, "a sign is not a hex digit (found by fuzz/percent)");
        assert_eq!(decode("%+e%2e"), None);
    }
}
