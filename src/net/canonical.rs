//! The canonical request view (DESIGN §1): the one path and the one authority every edge
//! decision (routing, public paths, caches, authentication) is made on, and exactly what the
//! upstream receives.
//!
//! The path half is the canonical path grammar of [`crate::config::path`] (the same grammar
//! route prefixes and public paths are checked against), re-exported here: [`normalize_path`]
//! turns a request path into its canonical form or refuses it, [`without_parameters`] is the
//! `;`-stripped second view, [`has_prefix`] the prefix match every path decision uses.
//!
//! [`parse_authority`] reads a `Host` value or URI authority: a reg-name (letters, digits,
//! `-`, `.`, `_`), an IPv4 address or a bracketed IPv6 literal, and an optional port;
//! lower-cased, with a trailing dot removed. Userinfo, path characters and anything else are
//! refused (RFC 9110 §7.2, RFC 3986 §3.2).

use std::fmt;
use std::fmt::Write as _;
use std::net::Ipv6Addr;

pub use crate::config::path::{MAX_PATH_BYTES, PathRefusal, has_prefix, normalize_path, without_parameters};

/// Longest host name (RFC 1035: 253 characters, plus room for a trailing dot).
pub const MAX_HOST_BYTES: usize = 255;

/// A canonical authority: lower-case host (no trailing dot; IPv6 in brackets) and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authority {
    port: Option<u16>,
    /// `host[:port]`, as forwarded in `Host` (one allocation per request).
    text: String,
    /// Where the host ends in `text`.
    host_len: usize,
}

impl Authority {
    /// The host without the port (`example.com`, `192.0.2.1`, `[::1]`).
    pub fn host(&self) -> &str {
        &self.text[..self.host_len]
    }

    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// `host[:port]`: the value of the forwarded `Host`.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Why an authority was refused (a 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthorityRefusal {
    Empty,
    TooLong,
    /// `user@host`.
    Userinfo,
    /// A character a host name cannot hold (`/`, `?`, `#`, `%`, space, markup…).
    InvalidHost,
    InvalidPort,
    InvalidIpv6,
}

impl AuthorityRefusal {
    pub fn reason(self) -> &'static str {
        match self {
            AuthorityRefusal::Empty => "empty host",
            AuthorityRefusal::TooLong => "host too long",
            AuthorityRefusal::Userinfo => "userinfo in host",
            AuthorityRefusal::InvalidHost => "invalid host",
            AuthorityRefusal::InvalidPort => "invalid port",
            AuthorityRefusal::InvalidIpv6 => "invalid IPv6 literal",
        }
    }
}

impl fmt::Display for AuthorityRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

fn parse_port(text: &str) -> Result<u16, AuthorityRefusal> {
    if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AuthorityRefusal::InvalidPort);
    }
    text.parse::<u16>().map_err(|_| AuthorityRefusal::InvalidPort)
}

/// Reads a `Host` value or URI authority into its canonical form.
pub fn parse_authority(raw: &str) -> Result<Authority, AuthorityRefusal> {
    if raw.is_empty() {
        return Err(AuthorityRefusal::Empty);
    }
    if raw.len() > MAX_HOST_BYTES + 6 {
        return Err(AuthorityRefusal::TooLong);
    }
    if raw.contains('@') {
        return Err(AuthorityRefusal::Userinfo);
    }
    let mut text = String::with_capacity(raw.len() + 2);
    let port = if let Some(rest) = raw.strip_prefix('[') {
        let (literal, after) = rest.split_once(']').ok_or(AuthorityRefusal::InvalidIpv6)?;
        let address: Ipv6Addr = literal.parse().map_err(|_| AuthorityRefusal::InvalidIpv6)?;
        let port = match after {
            "" => None,
            _ => Some(parse_port(after.strip_prefix(':').ok_or(AuthorityRefusal::InvalidPort)?)?),
        };
        let _ = write!(text, "[{address}]");
        port
    } else {
        let (name, port) = match raw.split_once(':') {
            Some((name, port)) => (name, Some(parse_port(port)?)),
            None => (raw, None),
        };
        let name = name.strip_suffix('.').unwrap_or(name);
        if name.is_empty() {
            return Err(AuthorityRefusal::Empty);
        }
        if name.len() > MAX_HOST_BYTES {
            return Err(AuthorityRefusal::TooLong);
        }
        let valid = name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
            && name.split('.').all(|label| !label.is_empty() && label.len() <= 63);
        if !valid {
            return Err(AuthorityRefusal::InvalidHost);
        }
        text.extend(name.chars().map(|c| c.to_ascii_lowercase()));
        port
    };
    let host_len = text.len();
    if let Some(port) = port {
        let _ = write!(text, ":{port}");
    }
    Ok(Authority { port, text, host_len })
}

#[cfg(test)]
mod tests;
