//! The outward direction of the stateless proxy (RFC 3261 §16.4–16.6, §16.11) and TLS toward
//! the next hop: requests the inside sends on the next-hop connection go to partners, and the
//! partners' responses come back to the next hop.
//!
//! Only the connection the edge opened to its next hop originates outward requests; nothing
//! read from a partner connection is ever taken as coming from the inside (a partner's
//! request always goes to the next hop, whatever its Route says). An outward request: the
//! partner domain (the Request-URI host, else the To host) must not be blocked or refused by
//! the federation policy (403 back to the inside, nothing sent); the edge's own Route entries
//! come off and the destination is the first Route URI, else the Request-URI
//! ([`crate::sip::route`]); the proxy core then decrements Max-Forwards (483), detects loops
//! (482), pushes the edge's Via and Record-Routes dialog-creating requests as on the way in.
//! The edge's Via is sealed: its `pc` is `o` + an HMAC of its branch under a key of this
//! process, so a response is relayed to the inside only when its top Via is one the edge
//! wrote for an outward request — a partner cannot forge one to reach the next hop.
//!
//! Connections outward are pooled by destination (host, port, transport): one per
//! destination, reused while open, at most [`MAX_OUTWARD`], closed after `[server]
//! idle_timeout` without traffic; each is served like an accepted partner connection (a
//! partner's request on it goes through the policy and on to the next hop). TLS outward
//! presents the first TLS SIP listener's certificate and verifies the partner against that
//! listener's `ca` (else the web PKI roots) for the allow entry's `edge` FQDN, else the
//! destination host. No destination answering gives the inside 503.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use aws_lc_rs::hmac;
use bytes::Bytes;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use super::connect::{self, Connected};
use super::link::{self, Link};
use super::{DOWN_HOLD, QUEUE, SipEdge, answer_to, transaction_headers};
use crate::net::tls::TlsError;
use crate::net::tls::client::ClientProfile;
use crate::runtime::services::Drain;
use crate::sip::message::SipMessage;
use crate::sip::proxy::{self, Answer, Hop, Transport, param, values};
use crate::sip::route::{self, Destination};

/// Most connections toward partners open at once.
const MAX_OUTWARD: usize = 1024;
/// Most outward requests being prepared or waiting for a connection at once; more get 503.
const MAX_IN_FLIGHT: usize = 1024;
/// How often the edge makes sure its connection to the next hop is open (the inside can only
/// send toward partners on it).
const KEEP_OPEN_EVERY: Duration = Duration::from_secs(5);

/// One destination's connection.
#[derive(Default)]
struct Slot {
    link: Option<Link>,
    down_until: Option<Instant>,
}

/// A TLS client configuration and its current connector (swapped on reload).
struct Client {
    profile: ClientProfile,
    connector: ArcSwap<TlsConnector>,
}

impl Client {
    fn new(profile: ClientProfile) -> Result<Client, TlsError> {
        let connector = ArcSwap::from_pointee(profile.connector()?);
        Ok(Client { profile, connector })
    }
}

/// The state of the outward direction and of TLS toward the next hop.
pub(super) struct Outward {
    next_hop_tls: Option<Client>,
    partner_tls: Option<Client>,
    pool: Mutex<HashMap<Destination, Arc<tokio::sync::Mutex<Slot>>>>,
    seal: hmac::Key,
    in_flight: Arc<Semaphore>,
    /// The edge's drain signal, for the connections it opens (none: no outward direction).
    drain: Option<Drain>,
    /// The last next-hop connection failure written to `error.log` (each new one once).
    next_hop_error: Mutex<Option<String>>,
}

impl Default for Outward {
    fn default() -> Outward {
        Outward {
            next_hop_tls: None,
            partner_tls: None,
            pool: Mutex::new(HashMap::new()),
            seal: hmac::Key::new(hmac::HMAC_SHA256, &rand::random::<[u8; 32]>()),
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            drain: None,
            next_hop_error: Mutex::new(None),
        }
    }
}

impl Outward {
    /// The `pc` of the edge's Via on an outward request with branch `branch`.
    fn seal_of(&self, branch: &str) -> String {
        let tag = hmac::sign(&self.seal, branch.as_bytes());
        let hex: String = tag.as_ref()[..10].iter().map(|b| format!("{b:02x}")).collect();
        format!("o{hex}")
    }

    /// Re-reads the client TLS files (certificate renewal, a new CA bundle or CRL).
    pub(super) fn reload_tls(&self) -> Result<(), TlsError> {
        for client in [&self.next_hop_tls, &self.partner_tls].into_iter().flatten() {
            client.profile.reload(&client.connector)?;
        }
        Ok(())
    }

    /// The slot of `destination`; `None` when the pool is full of connections in use.
    fn slot(&self, destination: &Destination) -> Option<Arc<tokio::sync::Mutex<Slot>>> {
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        if !pool.contains_key(destination) && pool.len() >= MAX_OUTWARD {
            // Forget the destinations whose connection has ended and that nobody is using.
            pool.retain(|_, slot| {
                Arc::strong_count(slot) > 1 || slot.try_lock().map_or(true, |s| s.link.as_ref().is_some_and(|link| !link.is_closed()))
            });
            if pool.len() >= MAX_OUTWARD {
                return None;
            }
        }
        Some(pool.entry(destination.clone()).or_default().clone())
    }
}

impl SipEdge {
    /// Sets up TLS toward the next hop (`next_hop_tls`, when `next_hop` is TLS) and toward
    /// partners (`partner_tls`: the TLS listener's certificate and CA), and the drain signal of
    /// the connections the edge opens; reads the files (an unusable one stops the start).
    pub fn with_outward_tls(
        mut self,
        next_hop_tls: Option<ClientProfile>,
        partner_tls: Option<ClientProfile>,
        drain: Drain,
    ) -> Result<SipEdge, TlsError> {
        self.outward.next_hop_tls = next_hop_tls.map(Client::new).transpose()?;
        self.outward.partner_tls = partner_tls.map(Client::new).transpose()?;
        self.outward.drain = Some(drain);
        Ok(self)
    }

    /// Keeps the connection to the next hop open (opening it now, and again within
    /// 5 s after it closed), until the drain: the inside can send toward
    /// partners only on it.
    pub fn keep_next_hop_open(self: &Arc<Self>) {
        let (edge, mut drain) = (Arc::downgrade(self), self.outward.drain.clone());
        tokio::spawn(async move {
            loop {
                let Some(strong) = Weak::upgrade(&edge) else { return };
                if strong.next_hop_link().as_ref().is_none_or(Link::is_closed) {
                    strong.send_upstream(Bytes::new()).await;
                }
                drop(strong);
                let Some(drain) = drain.as_mut() else { return };
                tokio::select! {
                    () = tokio::time::sleep(KEEP_OPEN_EVERY) => {}
                    () = drain.signalled() => return,
                }
            }
        });
    }

    /// A connection to the next hop, over TLS when it is configured so (a failure written to
    /// `error.log` once, until one succeeds).
    pub(super) async fn open_next_hop(&self) -> Option<Connected> {
        let hop = &self.next_hop;
        let tls = self.outward.next_hop_tls.as_ref().map(|client| (TlsConnector::clone(&client.connector.load()), hop.host.as_str()));
        let outcome = connect::connect(&hop.host, hop.port, tls).await;
        let mut last = self.outward.next_hop_error.lock().unwrap_or_else(|p| p.into_inner());
        match outcome {
            Ok(connected) => {
                *last = None;
                Some(connected)
            }
            Err(error) => {
                let text = error.to_string();
                if last.as_deref() != Some(text.as_str()) {
                    self.runtime.error_log.error(&format!("SIP next hop {}:{} unreachable: {text}", hop.host, hop.port));
                    *last = Some(text);
                }
                None
            }
        }
    }

    /// A request read from the next-hop connection (whose peer is `source`): forwarded toward
    /// its partner in a task of its own (a slow partner never holds the next hop's responses);
    /// above [`MAX_IN_FLIGHT`] answered 503 at once.
    pub(super) fn from_inside(self: &Arc<Self>, message: SipMessage, source: SocketAddr) {
        let Ok(permit) = self.outward.in_flight.clone().try_acquire_owned() else {
            let received = transaction_headers(&message, false);
            if let Some(answer) = answer_to(&message, &received, &Answer { status: 503, reason: "Service Unavailable" }, None)
                && let Some(link) = self.next_hop_link()
            {
                let _ = link.try_send(answer);
            }
            return;
        };
        let edge = self.clone();
        tokio::spawn(async move {
            let received = transaction_headers(&message, false);
            let mut message = message;
            let answer = match edge.prepare_outward(&mut message, source) {
                Ok((destination, hop, name)) => {
                    if edge.send_outward(&destination, &hop, &name, message.to_bytes()).await {
                        None
                    } else {
                        Some(Answer { status: 503, reason: "Service Unavailable" })
                    }
                }
                Err(answer) => Some(answer),
            };
            if let Some(answer) = answer.and_then(|answer| answer_to(&message, &received, &answer, None)) {
                edge.send_upstream(answer).await;
            }
            drop(permit);
        });
    }

    /// The routing decision, the policy and the proxy core on an outward request: where it
    /// goes, the edge's listener it leaves as, and the name the partner's certificate must
    /// carry; or the answer for the inside.
    fn prepare_outward(&self, message: &mut SipMessage, source: SocketAddr) -> Result<(Destination, Hop, String), Answer> {
        route::strip_own_routes(message, &self.hops.load()).map_err(|_| Answer { status: 400, reason: "Bad Request" })?;
        let destination = route::destination(message)?;
        // Addressed to the edge itself: an OPTIONS keep-alive (call control checking its trunk)
        // is answered; anything else would only come back in.
        if self.hops.load().iter().any(|hop| hop.host.eq_ignore_ascii_case(&destination.host) && hop.port == destination.port) {
            let options = message.method().as_deref() == Some("OPTIONS");
            return Err(if options { Answer { status: 200, reason: "OK" } } else { Answer { status: 482, reason: "Loop Detected" } });
        }
        let domain = route::partner_domain(message);
        // Blocked and refused domains get nothing; a discovered partner is not throttled on
        // the way out (the inside decides what it sends).
        if !self.runtime.federation.accepts_outward(domain.as_deref()) {
            return Err(Answer { status: 403, reason: "Forbidden" });
        }
        let unavailable = Answer { status: 503, reason: "Service Unavailable" };
        if destination.transport == Transport::Tls && self.outward.partner_tls.is_none() {
            return Err(unavailable); // no TLS listener: no certificate to present
        }
        let hops = self.serving.load();
        let hop = hops.iter().find(|h| h.transport == destination.transport).or(hops.first()).ok_or(unavailable)?.clone();
        proxy::forward_request(message, &hop, source, 0, self.record_route)?;
        self.seal_top_via(message).map_err(|_| Answer { status: 400, reason: "Bad Request" })?;
        let edge_name = domain.and_then(|domain| self.runtime.federation.edge_of(&domain));
        let name = edge_name.unwrap_or_else(|| destination.host.clone());
        Ok((destination, hop, name))
    }

    /// Replaces the `pc` of the edge's Via (the proxy core's first field) with the seal.
    fn seal_top_via(&self, message: &mut SipMessage) -> Result<(), crate::sip::message::Refusal> {
        let top = message.fields("Via").into_iter().next().unwrap_or_default();
        let branch = param(&top, "branch").unwrap_or_default();
        let kept: Vec<&str> =
            top.split(';').filter(|p| !p.split('=').next().unwrap_or_default().trim().eq_ignore_ascii_case("pc")).collect();
        message.replace_first("Via", format!("{};pc={}", kept.join(";"), self.outward.seal_of(branch)))
    }

    /// Sends an outward request on the destination's pooled connection, opening it when
    /// needed; `false` when it cannot be reached or is not keeping up.
    async fn send_outward(self: &Arc<Self>, destination: &Destination, hop: &Hop, name: &str, bytes: Bytes) -> bool {
        let Some(drain) = self.outward.drain.clone() else { return false };
        let Some(slot) = self.outward.slot(destination) else { return false };
        let mut slot = slot.lock().await;
        match link::offer(slot.link.as_ref(), bytes) {
            Ok(sent) => sent,
            Err(bytes) => self.reopen(&mut slot, destination, hop, name, drain, bytes).await,
        }
    }

    async fn reopen(
        self: &Arc<Self>,
        slot: &mut Slot,
        destination: &Destination,
        hop: &Hop,
        name: &str,
        drain: Drain,
        bytes: Bytes,
    ) -> bool {
        slot.link = None;
        if slot.down_until.is_some_and(|until| Instant::now() < until) {
            return false;
        }
        let tls = match destination.transport {
            Transport::Tls => match &self.outward.partner_tls {
                Some(client) => Some((TlsConnector::clone(&client.connector.load()), name)),
                None => return false,
            },
            Transport::Tcp => None,
        };
        let Ok(connected) = connect::connect(&destination.host, destination.port, tls).await else {
            slot.down_until = Some(Instant::now() + DOWN_HOLD);
            return false;
        };
        slot.down_until = None;
        let (inlet, outlet, link) = link::wire_up(connected.stream, QUEUE);
        let sent = link.try_send(bytes).is_ok();
        let id = self.register(link.clone(), connected.peer);
        let edge = self.clone();
        let hop = hop.clone();
        tokio::spawn(async move {
            edge.serve_connection((inlet, outlet), connected.peer, hop, connected.peer_names, id, drain).await;
        });
        slot.link = Some(link);
        sent
    }

    /// A response read from a partner connection: relayed to the next hop when its top Via
    /// is one the edge sealed for an outward request (that Via comes off); else dropped.
    pub(super) async fn response_from_partner(self: &Arc<Self>, mut message: SipMessage) {
        let top = message.fields("Via").into_iter().next().and_then(|field| values(&field).next().map(str::to_string)).unwrap_or_default();
        let sealed = param(&top, "branch").is_some_and(|branch| param(&top, "pc") == Some(self.outward.seal_of(branch).as_str()));
        if !sealed || !self.hops.load().iter().any(|hop| proxy::return_response(&mut message, hop).is_some()) {
            return;
        }
        // A call the inside placed (or ended) counts among the calls in progress.
        self.dialogs.note(&message, Instant::now());
        self.send_upstream(message.to_bytes()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn destination(n: usize) -> Destination {
        Destination { host: format!("p{n}.example"), port: 5061, transport: Transport::Tls }
    }

    #[test]
    fn the_pool_holds_at_most_max_outward_destinations_and_forgets_ended_ones_first() {
        let outward = Outward::default();
        let held: Vec<_> = (0..MAX_OUTWARD).map(|n| outward.slot(&destination(n)).unwrap()).collect();
        assert!(outward.slot(&destination(0)).is_some(), "a known destination is always found");
        assert!(outward.slot(&destination(MAX_OUTWARD)).is_none(), "full of connections in use: no new destination");
        // One open connection stays; the others' ended (never opened here) and nobody uses them.
        let (sender, _receiver) = tokio::sync::mpsc::channel(1);
        held[7].try_lock().unwrap().link = Some(Link::queued(sender));
        drop(held);
        assert!(outward.slot(&destination(MAX_OUTWARD)).is_some());
        let pool = outward.pool.lock().unwrap();
        assert_eq!(pool.len(), 2, "the open one and the new one");
        assert!(pool.contains_key(&destination(7)));
    }

    #[test]
    fn a_seal_is_the_branchs_and_no_other() {
        let (one, other) = (Outward::default(), Outward::default());
        let seal = one.seal_of("z9hG4bK.pc.1.2");
        assert!(seal.starts_with('o') && seal.len() == 21, "{seal}");
        assert_eq!(seal, one.seal_of("z9hG4bK.pc.1.2"), "the same branch, the same seal");
        assert_ne!(seal, one.seal_of("z9hG4bK.pc.1.3"));
        assert_ne!(seal, other.seal_of("z9hG4bK.pc.1.2"), "another process, another key");
    }
}
