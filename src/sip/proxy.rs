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
/// §18.2.2) without any state.
pub fn forward_request(
    message: &mut SipMessage,
    edge: &Hop,
    source: std::net::SocketAddr,
    connection: u64,
    record_route: bool,
) -> Result<(), Answer> {
    let bad = |_: Refusal| Answer { status: 400, reason: "Bad Request" };
    let method = message.method().ok_or(Answer { status: 400, reason: "Bad Request" })?;
    // Max-Forwards (§16.3 step 3, §16.6 step 3).
    let hops = match message.header("Max-Forwards") {
        None => 70,
        Some(value) => value.trim().parse::<u32>().map_err(|_| Answer { status: 400, reason: "Bad Max-Forwards" })?,
    };
    if hops == 0 {
        return Err(Answer { status: 483, reason: "Too Many Hops" });
    }
    message.replace_first("Max-Forwards", &(hops - 1).min(255).to_string()).map_err(bad)?;
    // The top Via: where responses go back (§18.2.1, RFC 3581).
    let mut vias = via_values(message);
    let Some(top) = vias.first_mut() else { return Err(Answer { status: 400, reason: "Missing Via" }) };
    stamp_received(top, source);
    let (loop_part, branch) = branch_of(message, top);
    // Loop detection (§16.3 step 4): the edge's own Via with the same loop part means it
    // forwarded this very request (same Request-URI, dialog and sequence) before; a spiral
    // (a changed Request-URI) gets another loop part and goes on.
    if vias.iter().any(|via| is_own(via, edge) && param(via, "branch").is_some_and(|b| b.starts_with(&loop_part))) {
        return Err(Answer { status: 482, reason: "Loop Detected" });
    }
    write_vias(message, &vias).map_err(bad)?;
    let own = format!("SIP/2.0/{} {}:{};branch={branch};pc={connection:x}", edge.transport.via_name(), host_for_uri(&edge.host), edge.port);
    message.push_front("Via", &own).map_err(bad)?;
    // The edge's own Route entry (a loose router put it there via Record-Route).
    if let Some(route) = message.fields("Route").first()
        && let Some(first) = split_values(route).first()
        && uri_points_to(first, edge)
    {
        let rest: Vec<String> = split_values(route).into_iter().skip(1).collect();
        message.remove_first("Route");
        if !rest.is_empty() {
            message.push_front("Route", &rest.join(", ")).map_err(bad)?;
        }
    }
    let in_dialog = message.header("To").is_some_and(|to| param(&to, "tag").is_some());
    if record_route && !in_dialog && DIALOG_CREATING.contains(&method.as_str()) {
        let record = format!("<sip:{}:{};transport={};lr>", host_for_uri(&edge.host), edge.port, edge.transport.uri_param());
        message.push_front("Record-Route", &record).map_err(bad)?;
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
    let mut vias = via_values(message);
    if vias.is_empty() || !is_own(&vias[0], edge) {
        return None;
    }
    let own = vias.remove(0);
    let connection = param(&own, "pc").and_then(|id| u64::from_str_radix(&id, 16).ok());
    let next = vias.first()?.clone();
    write_vias(message, &vias).ok()?;
    let (host, port) = sent_by(&next)?;
    let host = param(&next, "received").unwrap_or(host);
    let port = param(&next, "rport").and_then(|p| p.parse().ok()).unwrap_or(port);
    Some(ResponseTarget { connection, host, port })
}

/// The branch the edge gives this request (§16.6 step 8, §16.11): the magic cookie, a loop
/// part — a digest of the Request-URI, Call-ID, CSeq *number*, From and To tags, which a
/// looping request brings back unchanged — and a transaction part from the previous hop's
/// branch. Retransmissions, the CANCEL of an INVITE and the ACK of its non-2xx final carry
/// the same previous branch and CSeq number, so they get the INVITE's branch without any
/// state. Returns (the prefix up to the loop part, the branch).
fn branch_of(message: &SipMessage, top_via: &str) -> (String, String) {
    let cseq_number = message.header("CSeq").and_then(|c| c.split_whitespace().next().map(str::to_string)).unwrap_or_default();
    let tag = |name: &str| message.header(name).and_then(|v| param(&v, "tag")).unwrap_or_default();
    let loop_fields =
        [message.request_uri().unwrap_or_default(), message.header("Call-ID").unwrap_or_default(), cseq_number, tag("From"), tag("To")];
    let loop_part = format!("{MAGIC_COOKIE}.pc.{}.", short_digest(&loop_fields.join("\n")));
    let transaction = short_digest(&param(top_via, "branch").unwrap_or_else(|| top_via.to_string()));
    (loop_part.clone(), format!("{loop_part}{transaction}"))
}

/// 12 bytes of SHA-256, in hex.
fn short_digest(text: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
    digest.as_ref()[..12].iter().map(|b| format!("{b:02x}")).collect()
}

/// Adds `received` (and fills `rport`) when the peer is not where its Via says (RFC 3261
/// §18.2.1, RFC 3581 §4). Values the peer wrote there itself are replaced, never trusted: they
/// say where it is, and only the packet's source does.
fn stamp_received(via: &mut String, source: std::net::SocketAddr) {
    let ip = source.ip().to_canonical().to_string();
    let key = |p: &str| p.split_once('=').map_or(p, |(k, _)| k).trim().to_ascii_lowercase();
    let wants_rport = via.split(';').skip(1).any(|p| key(p) == "rport");
    let differs = sent_by(via).is_none_or(|(host, _)| host != ip);
    let mut parts: Vec<String> = Vec::new();
    for (i, p) in via.split(';').enumerate() {
        match key(p).as_str() {
            "received" if i > 0 => {}
            "rport" if i > 0 => parts.push(format!("rport={}", source.port())),
            _ => parts.push(p.to_string()),
        }
    }
    if differs || wants_rport {
        parts.push(format!("received={ip}"));
    }
    *via = parts.join(";");
}

/// Every Via value, top first (comma-joined values split).
fn via_values(message: &SipMessage) -> Vec<String> {
    message.fields("Via").iter().flat_map(|field| split_values(field)).collect()
}

/// Writes `vias` back as one field per value, replacing all Via fields.
fn write_vias(message: &mut SipMessage, vias: &[String]) -> Result<(), Refusal> {
    while message.remove_first("Via") {}
    for via in vias.iter().rev() {
        message.push_front("Via", via)?;
    }
    Ok(())
}

/// Splits a field's comma-separated values (commas inside quotes or `<…>` do not split).
pub(super) fn split_values(field: &str) -> Vec<String> {
    let (mut values, mut current, mut quoted, mut angle) = (Vec::new(), String::new(), false, false);
    for c in field.chars() {
        match c {
            '"' => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            ',' if !quoted && !angle => {
                values.push(current.trim().to_string());
                current.clear();
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    if !current.trim().is_empty() {
        values.push(current.trim().to_string());
    }
    values
}

/// A `;name=value` parameter of a Via or address value (case-insensitive name).
pub(super) fn param(value: &str, name: &str) -> Option<String> {
    let after_uri = value.rsplit_once('>').map_or(value, |(_, rest)| rest);
    after_uri.split(';').skip(1).find_map(|p| {
        let (key, val) = p.split_once('=').unwrap_or((p, ""));
        key.trim().eq_ignore_ascii_case(name).then(|| val.trim().to_string())
    })
}

/// A Via's sent-by host (lower case, IPv6 without brackets) and port (5060 when absent).
fn sent_by(via: &str) -> Option<(String, u16)> {
    let by = via.split(';').next()?.split_whitespace().nth(1)?;
    host_port(by, 5060)
}

fn host_port(text: &str, default_port: u16) -> Option<(String, u16)> {
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = after.strip_prefix(':').map_or(Some(default_port), |p| p.parse().ok())?;
        return Some((host.to_ascii_lowercase(), port));
    }
    match text.rsplit_once(':') {
        Some((host, port)) => Some((host.to_ascii_lowercase(), port.parse().ok()?)),
        None => Some((text.to_ascii_lowercase(), default_port)),
    }
}

fn is_own(via: &str, edge: &Hop) -> bool {
    sent_by(via).is_some_and(|(host, port)| host == edge.host.to_ascii_lowercase() && port == edge.port)
}

/// Whether a Route value (`<sip:host:port;lr>`) names the edge.
fn uri_points_to(route: &str, edge: &Hop) -> bool {
    let uri = route.trim().trim_start_matches('<');
    let uri = uri.split(['>', ';']).next().unwrap_or_default();
    let Some(rest) = uri.strip_prefix("sip:").or_else(|| uri.strip_prefix("sips:")) else { return false };
    let hostport = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    host_port(hostport, 5060).is_some_and(|(host, port)| host == edge.host.to_ascii_lowercase() && port == edge.port)
}

fn host_for_uri(host: &str) -> String {
    if host.contains(':') { format!("[{host}]") } else { host.to_string() }
}

#[cfg(test)]
mod tests;
