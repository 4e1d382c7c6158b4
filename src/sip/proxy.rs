//! The transaction-stateless proxy core (RFC 3261 §16.11), sans-io: what the edge does to a
//! request before forwarding it, and to a response before sending it back — no transaction
//! table, so everything it needs travels in the message.
//!
//! A request: `Max-Forwards` decremented (added as 70 when missing; 483 at 0); the top Via
//! stamped with `received` (and `rport`, RFC 3581) when the peer's address differs from what
//! it wrote; loops detected (482) by finding the edge's own Via with the branch this request
//! would get again; the edge's Via pushed with a branch computed from the request — the same
//! for its retransmissions, for its CANCEL and for the ACK of a non-2xx final, as §16.11 needs
//! without state; the edge's own Route entry removed (§16.4) and, on dialog-creating requests,
//! a Record-Route (`lr`) added so in-dialog requests come back through the edge.
//!
//! A response: it must carry the edge's Via on top (else it is not ours and is dropped); that
//! Via comes off, and the next one says where the response goes (`received`/`rport` first).

use std::borrow::Cow;

use super::message::{Refusal, SipMessage};

/// How a hop carries SIP (in Via and Record-Route).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Tls,
}

impl Transport {
    fn via_name(self) -> &'static str {
        match self {
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }

    fn uri_param(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }
}

/// The edge as the next hop sees it: the host and port it writes in its Via and Record-Route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    pub host: String,
    pub port: u16,
    pub transport: Transport,
}

/// The RFC 3261 magic cookie every branch starts with.
pub const MAGIC_COOKIE: &str = "z9hG4bK";

/// Methods that create a dialog (so the edge Record-Routes them).
const DIALOG_CREATING: [&str; 3] = ["INVITE", "SUBSCRIBE", "REFER"];

/// What the edge answers instead of forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub reason: &'static str,
}

/// Prepares a request from the peer at `source`, which arrived on the edge's connection
/// `connection`, for forwarding (see the module doc). The connection's number travels in the
/// edge's Via (`pc=`), so the response finds the connection it must go back on (RFC 3261
/// §18.2.2) without any state. Only the fields it changes are rewritten (Max-Forwards where it
/// stands, the top Via when it is stamped or shares its field with others, the edge's Route
/// entry); every other byte goes on as it arrived.
pub fn forward_request(
    message: &mut SipMessage,
    edge: &Hop,
    source: std::net::SocketAddr,
    connection: u64,
    record_route: bool,
) -> Result<(), Answer> {
    let bad = |_: Refusal| Answer { status: 400, reason: "Bad Request" };
    let dialog_creating = DIALOG_CREATING.contains(&message.method_name().ok_or(Answer { status: 400, reason: "Bad Request" })?);
    // Max-Forwards (§16.3 step 3, §16.6 step 3).
    let hops = match message.header_value("Max-Forwards") {
        None => 70,
        Some(value) => value.trim().parse::<u32>().map_err(|_| Answer { status: 400, reason: "Bad Max-Forwards" })?,
    };
    if hops == 0 {
        return Err(Answer { status: 483, reason: "Too Many Hops" });
    }
    message.replace_first("Max-Forwards", (hops - 1).min(255).to_string()).map_err(bad)?;
    // The top Via: where responses go back (§18.2.1, RFC 3581).
    let Some(field) = message.header_value("Via").map(Cow::into_owned) else { return Err(Answer { status: 400, reason: "Missing Via" }) };
    let Some((top, rest)) = first_value(&field).filter(|(top, _)| !top.is_empty()) else {
        return Err(Answer { status: 400, reason: "Missing Via" });
    };
    let stamped = stamp_received(top, source);
    let top = stamped.as_deref().unwrap_or(top);
    let (loop_part, branch) = branch_of(message, top);
    // Loop detection (§16.3 step 4): the edge's own Via with the same loop part means it
    // forwarded this very request (same Request-URI, dialog and sequence) before; a spiral
    // (a changed Request-URI) gets another loop part and goes on.
    let own_again = |via: &str| is_own(via, edge) && param(via, "branch").is_some_and(|b| b.starts_with(loop_part.as_str()));
    if message.field_values("Via").any(|field| values(&field).any(own_again)) {
        return Err(Answer { status: 482, reason: "Loop Detected" });
    }
    // The stamped top value gets a field of its own; the values after it keep theirs.
    if stamped.is_some() || !rest.is_empty() {
        message.replace_first("Via", top).map_err(bad)?;
        if !rest.is_empty() {
            message.insert_after_first("Via", rest).map_err(bad)?;
        }
    }
    let own = format!("SIP/2.0/{} {}:{};branch={branch};pc={connection:x}", edge.transport.via_name(), host_for_uri(&edge.host), edge.port);
    message.push_front("Via", own).map_err(bad)?;
    // The edge's own Route entry (a loose router put it there via Record-Route).
    let route = message.header_value("Route").map(Cow::into_owned);
    if let Some((first, rest)) = route.as_deref().and_then(first_value)
        && uri_points_to(first, edge)
    {
        if rest.is_empty() {
            message.remove_first("Route");
        } else {
            message.replace_first("Route", rest).map_err(bad)?;
        }
    }
    let in_dialog = message.header_value("To").is_some_and(|to| param(&to, "tag").is_some());
    if record_route && !in_dialog && dialog_creating {
        let record = format!("<sip:{}:{};transport={};lr>", host_for_uri(&edge.host), edge.port, edge.transport.uri_param());
        message.push_front("Record-Route", record).map_err(bad)?;
    }
    Ok(())
}

/// Where a response goes back to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseTarget {
    /// The edge's connection the request came in on (from the edge's own Via).
    pub connection: Option<u64>,
    pub host: String,
    pub port: u16,
}

/// Prepares a response for its way back: removes the edge's Via and says where it goes;
/// `None` when the top Via is not the edge's (not a response to anything it forwarded).
pub fn return_response(message: &mut SipMessage, edge: &Hop) -> Option<ResponseTarget> {
    let field = message.header_value("Via")?;
    if !is_own(first_value(&field)?.0, edge) {
        return None;
    }
    let field = field.into_owned();
    let (own, rest) = first_value(&field)?;
    let connection = param(own, "pc").and_then(|id| u64::from_str_radix(id, 16).ok());
    // The next Via: the rest of this field, else the next Via field.
    let next = if rest.is_empty() {
        let next = message.field_values("Via").nth(1)?.into_owned();
        message.remove_first("Via");
        next
    } else {
        message.replace_first("Via", rest).ok()?;
        rest.to_string()
    };
    let next = first_value(&next)?.0;
    let (host, port) = sent_by(next)?;
    let host = param(next, "received").unwrap_or(host).to_ascii_lowercase();
    let port = param(next, "rport").and_then(|p| p.parse().ok()).unwrap_or(port);
    Some(ResponseTarget { connection, host, port })
}

/// The branch the edge gives this request (§16.6 step 8, §16.11): the magic cookie, a loop
/// part — a digest of the Request-URI, Call-ID, CSeq *number*, From and To tags, which a
/// looping request brings back unchanged — and a transaction part from the previous hop's
/// branch. Retransmissions, the CANCEL of an INVITE and the ACK of its non-2xx final carry
/// the same previous branch and CSeq number, so they get the INVITE's branch without any
/// state. Returns (the prefix up to the loop part, the branch).
fn branch_of(message: &SipMessage, top_via: &str) -> (String, String) {
    let mut loop_fields = Vec::with_capacity(256);
    message.write_request_uri(&mut loop_fields);
    let cseq = message.header_value("CSeq");
    let from = message.header_value("From");
    let to = message.header_value("To");
    let call_id = message.header_value("Call-ID");
    let cseq_number = cseq.as_deref().and_then(|c| c.split_whitespace().next());
    let from_tag = from.as_deref().and_then(|v| param(v, "tag"));
    let to_tag = to.as_deref().and_then(|v| param(v, "tag"));
    for field in [call_id.as_deref(), cseq_number, from_tag, to_tag] {
        let field = field.unwrap_or_default();
        loop_fields.push(b'\n');
        loop_fields.extend_from_slice(field.as_bytes());
    }
    let mut branch = String::with_capacity(MAGIC_COOKIE.len() + 5 + 2 * 2 * DIGEST_BYTES);
    branch.push_str(MAGIC_COOKIE);
    branch.push_str(".pc.");
    push_digest(&mut branch, &loop_fields);
    branch.push('.');
    let loop_part = branch.clone();
    push_digest(&mut branch, param(top_via, "branch").unwrap_or(top_via).as_bytes());
    (loop_part, branch)
}

/// Bytes of SHA-256 a branch part keeps.
const DIGEST_BYTES: usize = 12;

/// Appends the first [`DIGEST_BYTES`] of SHA-256 of `bytes`, in hex.
fn push_digest(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    for &b in digest.as_ref().iter().take(DIGEST_BYTES) {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
}

/// The Via value with `received` (and `rport` filled) when the peer is not where its Via says
/// (RFC 3261 §18.2.1, RFC 3581 §4); `None` when it stays as it is. Values the peer wrote there
/// itself are replaced, never trusted: they say where it is, and only the packet's source does.
fn stamp_received(via: &str, source: std::net::SocketAddr) -> Option<String> {
    let ip = source.ip().to_canonical();
    let is = |p: &str, name: &str| p.split_once('=').map_or(p, |(k, _)| k).trim().eq_ignore_ascii_case(name);
    let wants_rport = via.split(';').skip(1).any(|p| is(p, "rport"));
    let differs = sent_by(via).is_none_or(|(host, _)| host.parse::<std::net::IpAddr>().map_or(true, |h| h.to_canonical() != ip));
    if !differs && !via.split(';').skip(1).any(|p| is(p, "rport") || is(p, "received")) {
        return None;
    }
    let mut out = String::with_capacity(via.len() + 48);
    for (i, p) in via.split(';').enumerate() {
        match i {
            0 => out.push_str(p),
            _ if is(p, "received") => continue,
            _ if is(p, "rport") => out.push_str(&format!(";rport={}", source.port())),
            _ => {
                out.push(';');
                out.push_str(p);
            }
        }
    }
    if differs || wants_rport {
        out.push_str(&format!(";received={ip}"));
    }
    Some(out)
}

/// A field's comma-separated values, trimmed (commas inside quotes or `<…>` do not split).
pub(super) fn values(field: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(field);
    std::iter::from_fn(move || {
        loop {
            let (value, after) = first_value(rest?)?;
            rest = (!after.is_empty()).then_some(after);
            if !value.is_empty() {
                return Some(value);
            }
        }
    })
    .fuse()
}

/// The first comma-separated value of a field and the rest after its comma, both trimmed;
/// `None` when the field holds no value at all.
fn first_value(field: &str) -> Option<(&str, &str)> {
    if !field.as_bytes().contains(&b',') {
        let value = field.trim(); // one value, the common case: a vectorised search, no walk
        return (!value.is_empty()).then_some((value, ""));
    }
    // Bytes, not chars: every delimiter is ASCII, so each index found is a char boundary.
    let (mut quoted, mut angle) = (false, false);
    for (i, &b) in field.as_bytes().iter().enumerate() {
        match b {
            b'"' => quoted = !quoted,
            b'<' if !quoted => angle = true,
            b'>' if !quoted => angle = false,
            b',' if !quoted && !angle => return Some((field[..i].trim(), field[i + 1..].trim())),
            _ => {}
        }
    }
    let value = field.trim();
    (!value.is_empty()).then_some((value, ""))
}

/// A `;name=value` parameter of a Via or address value (case-insensitive name).
pub(super) fn param<'a>(value: &'a str, name: &str) -> Option<&'a str> {
    let after_uri = value.rsplit_once('>').map_or(value, |(_, rest)| rest);
    after_uri.split(';').skip(1).find_map(|p| {
        let (key, val) = p.split_once('=').unwrap_or((p, ""));
        key.trim().eq_ignore_ascii_case(name).then(|| val.trim())
    })
}

/// A Via's sent-by host (IPv6 without brackets, as written) and port (5060 when absent).
fn sent_by(via: &str) -> Option<(&str, u16)> {
    let by = via.split(';').next()?.split_whitespace().nth(1)?;
    host_port(by, 5060)
}

fn host_port(text: &str, default_port: u16) -> Option<(&str, u16)> {
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = after.strip_prefix(':').map_or(Some(default_port), |p| p.parse().ok())?;
        return Some((host, port));
    }
    match text.rsplit_once(':') {
        Some((host, port)) => Some((host, port.parse().ok()?)),
        None => Some((text, default_port)),
    }
}

fn is_own(via: &str, edge: &Hop) -> bool {
    sent_by(via).is_some_and(|(host, port)| host.eq_ignore_ascii_case(&edge.host) && port == edge.port)
}

/// Whether a Route value (`<sip:host:port;lr>`) names the edge.
fn uri_points_to(route: &str, edge: &Hop) -> bool {
    let uri = route.trim().trim_start_matches('<');
    let uri = uri.split(['>', ';']).next().unwrap_or_default();
    let Some(rest) = uri.strip_prefix("sip:").or_else(|| uri.strip_prefix("sips:")) else { return false };
    let hostport = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    host_port(hostport, 5060).is_some_and(|(host, port)| host.eq_ignore_ascii_case(&edge.host) && port == edge.port)
}

fn host_for_uri(host: &str) -> String {
    if host.contains(':') { format!("[{host}]") } else { host.to_string() }
}

#[cfg(test)]
mod tests;
