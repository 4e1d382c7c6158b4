//! What the pipeline knows before deciding anything: the client connection ([`Connection`])
//! and facts about the request, computed once — who the client is, whether it is a
//! WebSocket upgrade, which credentials it presents ([`Facts`]). Every later step reads them
//! here instead of parsing the headers again.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::{Request, Version, header};

use super::forward;
use crate::auth::websocket::{self, ProtocolCredential};
use crate::config::PathPolicy;
use crate::net::h1_guard::UpgradeGate;

/// What the pipeline knows about the client connection.
#[derive(Debug)]
pub struct Connection {
    pub client: SocketAddr,
    pub listener: Arc<str>,
    pub tls: bool,
    /// Port of the HTTPS listener this plain listener redirects to.
    pub redirect_port: Option<u16>,
    /// The listener's policy for paths that cannot be normalised safely.
    pub paths: PathPolicy,
    /// Where an HTTP/1 connection's framing guard learns whether an `Upgrade` request was
    /// upgraded (unused on HTTP/2).
    pub upgrade_gate: Arc<UpgradeGate>,
    /// The HTTP/2 streams its client cancelled before their answer (unused on HTTP/1).
    pub cancels: Arc<super::cancels::CancelBudget>,
}

/// What the pipeline knows about a request before deciding anything.
#[derive(Debug)]
pub struct Facts {
    /// The client: the TCP peer, or the `X-Forwarded-For` address a trusted proxy gave.
    pub client: IpAddr,
    /// An HTTP/1.1 WebSocket upgrade request.
    pub websocket: bool,
    /// The credential element of its `Sec-WebSocket-Protocol` field.
    pub protocol_credential: ProtocolCredential,
    /// It carries an `Authorization` field.
    pub authorization: bool,
}

impl Facts {
    /// The facts of `request` from `peer`, behind the `trusted` proxies.
    pub fn of<B>(request: &Request<B>, peer: IpAddr, trusted: &[(IpAddr, u8)]) -> Facts {
        let headers = request.headers();
        Facts {
            client: effective_client(peer, headers, trusted),
            websocket: request.version() == Version::HTTP_11 && forward::is_websocket_upgrade(headers),
            protocol_credential: websocket::extract(headers),
            authorization: headers.contains_key(header::AUTHORIZATION),
        }
    }

    /// It presents a credential (so a 401 is an authentication failure, not a first
    /// unauthenticated visit).
    pub fn presents_credential(&self) -> bool {
        self.authorization || !matches!(self.protocol_credential, ProtocolCredential::Missing)
    }

    /// Its WebSocket protocol credential element is malformed.
    pub fn malformed_protocol_credential(&self) -> bool {
        matches!(self.protocol_credential, ProtocolCredential::Malformed)
    }
}

/// The client a request is from: the TCP peer, unless the peer is a trusted proxy — then the
/// right-most `X-Forwarded-For` address that is not itself a trusted proxy.
fn effective_client(peer: IpAddr, headers: &http::HeaderMap, trusted: &[(IpAddr, u8)]) -> IpAddr {
    let peer = peer.to_canonical();
    let is_trusted = |ip: IpAddr| crate::protect::in_any_network(ip, trusted);
    if trusted.is_empty() || !is_trusted(peer) {
        return peer;
    }
    let forwarded: Vec<&str> =
        headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).collect();
    for entry in forwarded.iter().rev().take(MAX_FORWARDED_HOPS) {
        let entry = entry.trim();
        let Ok(ip) = entry.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() else { return peer };
        let ip = ip.to_canonical();
        if !is_trusted(ip) {
            return ip;
        }
    }
    peer
}

/// Most `X-Forwarded-For` entries examined.
const MAX_FORWARDED_HOPS: usize = 8;

/// The request's host as received (for logs when no canonical view could be made).
pub fn raw_host<B>(request: &Request<B>) -> String {
    let raw =
        request.uri().authority().map(|a| a.as_str().as_bytes()).or_else(|| request.headers().get(header::HOST).map(|h| h.as_bytes()));
    raw.map(|bytes| String::from_utf8_lossy(&bytes[..bytes.len().min(256)]).into_owned()).unwrap_or_default()
}
