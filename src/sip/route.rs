//! Where a request from the inside goes (RFC 3261 §16.4–16.6, loose routing), sans-io: the
//! edge's own entries are taken off the top of the Route set, then the destination is the
//! first remaining Route URI, else the Request-URI — its host, its port (default 5060 over
//! TCP, 5061 over TLS) and its transport (`sips:` or `transport=tls` is TLS; anything else is
//! TCP: the edge serves no UDP). The partner domain the federation lists are asked about is
//! the Request-URI's host, or the To URI's host when the Request-URI names an address (the
//! remote target of a request inside a dialog).
//!
//! Only what the edge acts on is read here (scheme, host, port, `transport`); a URI is
//! otherwise forwarded as the inside wrote it. `maddr` is not honoured, and neither are DNS
//! NAPTR/SRV records (RFC 3263): a host name is resolved to A/AAAA by the caller.

use super::message::{Refusal, SipMessage};
use super::proxy::{Answer, Hop, Transport, values};

/// Where an outward request is sent (the key of the edge's connections toward partners).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// Lower case, without a trailing dot; an IPv6 address without brackets.
    pub host: String,
    pub port: u16,
    pub transport: Transport,
}

impl std::hash::Hash for Destination {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (&self.host, self.port, self.transport == Transport::Tls).hash(state);
    }
}

/// The parts of a `sip:`/`sips:` URI the edge routes by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUri {
    /// `sips:`.
    pub secure: bool,
    /// Lower case, without a trailing dot; an IPv6 address without brackets.
    pub host: String,
    pub port: Option<u16>,
    /// The `transport` parameter, lower case.
    pub transport: Option<String>,
}

impl SipUri {
    /// Reads a URI, bare (`sip:bob@host:5060;transport=tcp`) or in a name-addr
    /// (`"Bob" <sip:…;lr>;param`); `None` when it is not a usable `sip:`/`sips:` URI.
    pub fn parse(text: &str) -> Option<SipUri> {
        let text = text.trim();
        let uri = match text.find('<') {
            Some(open) => text[open + 1..].split('>').next()?,
            None => text,
        };
        let (scheme, rest) = uri.split_once(':')?;
        let secure = match scheme.to_ascii_lowercase().as_str() {
            "sip" => false,
            "sips" => true,
            _ => return None,
        };
        let rest = rest.split('?').next()?;
        let mut parts = rest.split(';');
        let userinfo_host = parts.next()?;
        let hostport = userinfo_host.rsplit_once('@').map_or(userinfo_host, |(_, host)| host);
        let (host, port) = split_host_port(hostport)?;
        let transport = parts.find_map(|p| {
            let (key, value) = p.split_once('=')?;
            key.trim().eq_ignore_ascii_case("transport").then(|| value.trim().to_ascii_lowercase())
        });
        Some(SipUri { secure, host, port, transport })
    }

    /// The transport it asks for: TLS for `sips:` or `transport=tls`, else TCP.
    pub fn transport(&self) -> Transport {
        if self.secure || self.transport.as_deref() == Some("tls") { Transport::Tls } else { Transport::Tcp }
    }

    /// Where a request to this URI goes.
    pub fn destination(&self) -> Destination {
        let transport = self.transport();
        let port = self.port.unwrap_or(if transport == Transport::Tls { 5061 } else { 5060 });
        Destination { host: self.host.clone(), port, transport }
    }

    /// Whether it names one of the edge's listeners (host and port; the port by its default).
    fn names(&self, hop: &Hop) -> bool {
        let default = if self.secure { 5061 } else { 5060 };
        self.host == hop.host.to_ascii_lowercase() && self.port.unwrap_or(default) == hop.port
    }
}

/// `host[:port]` → (host, port): an IPv6 address in brackets, a name or IPv4 address of the
/// characters a host may have (RFC 3261 §25.1), at most 253 of them.
fn split_host_port(text: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        host.parse::<std::net::Ipv6Addr>().ok()?;
        (host, after)
    } else {
        text.split_once(':').unwrap_or((text, ""))
    };
    let port = match port.strip_prefix(':').unwrap_or(port) {
        "" => None,
        digits => Some(digits.parse::<u16>().ok().filter(|p| *p > 0)?),
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let valid = !host.is_empty()
        && host.len() <= 253
        && (host.parse::<std::net::IpAddr>().is_ok() || host.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-'));
    valid.then_some((host, port))
}

/// Takes the edge's own entries (naming any of its listeners) off the top of the Route set
/// (RFC 3261 §16.4): the rest of the set is left as it was, one field per remaining entry.
pub fn strip_own_routes(message: &mut SipMessage, hops: &[Hop]) -> Result<(), Refusal> {
    let routes: Vec<String> = message.fields("Route").iter().flat_map(|field| values(field).map(str::to_string)).collect();
    let own = routes.iter().take_while(|route| SipUri::parse(route).is_some_and(|uri| hops.iter().any(|hop| uri.names(hop)))).count();
    if own == 0 {
        return Ok(());
    }
    while message.remove_first("Route") {}
    for route in routes[own..].iter().rev() {
        message.push_front("Route", route)?;
    }
    Ok(())
}

/// Where the request goes: the first Route URI, else the Request-URI (call after
/// [`strip_own_routes`]). 416 when that is not a `sip:`/`sips:` URI the edge can reach.
pub fn destination(message: &SipMessage) -> Result<Destination, Answer> {
    let unsupported = Answer { status: 416, reason: "Unsupported URI Scheme" };
    let target = match message.fields("Route").first().and_then(|field| values(field).next().map(str::to_string)) {
        Some(route) => route,
        None => message.request_uri().ok_or(unsupported.clone())?,
    };
    SipUri::parse(&target).map(|uri| uri.destination()).ok_or(unsupported)
}

/// The partner domain of an outward request: the Request-URI's host, or the To URI's host
/// when the Request-URI names an IP address (a remote target inside a dialog); `None` when
/// neither is a usable host name.
pub fn partner_domain(message: &SipMessage) -> Option<String> {
    let is_name = |uri: &SipUri| uri.host.parse::<std::net::IpAddr>().is_err();
    let request_uri = message.request_uri().and_then(|uri| SipUri::parse(&uri));
    if let Some(uri) = request_uri.filter(is_name) {
        return Some(uri.host);
    }
    message.header("To").and_then(|to| SipUri::parse(&to)).filter(is_name).map(|uri| uri.host)
}

#[cfg(test)]
mod tests;
