//! The SIP front end on the network: partner connections accepted by the shared accept loop
//! (banned sources closed at accept), read through the message layer, requests prepared by
//! the stateless proxy core and sent to the internal next hop over one reused connection
//! (re-opened on failure, the next resolved address tried; 503 + `Retry-After` when none
//! answers), and responses from the next hop sent back on the partner connection their
//! request came in on. Malformed input gets its answer (400/505, 513) and counts in the
//! shield's `sip-protocol-violation`; nothing malformed is forwarded.
//!
//! The federation policy ([`crate::federation`]) decides on every request from a partner
//! before anything is forwarded (over TLS the partner's certificate must speak for its From
//! domain); in maintenance new out-of-dialog work gets 503 + `Retry-After` while calls in
//! progress continue (the service shows `Draining (N calls)`, then `Inactive`); 401/407
//! finals to REGISTER/INVITE count against the partner in `sip-auth-failure`; finals feed the
//! watch list's error share, the registrations count and the calls in progress; every final
//! sent to a partner is a line in `access.log` (protocol `SIP/2.0`, service `sip`).
//! Requests from the inside toward partners, their responses, and TLS toward the next hop are
//! `outward`'s; the connections the edge opens itself, `connect`'s.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use super::dialogs::{Dialogs, uri_of};
use super::message::{Frame, Framer, SipMessage, StreamLimits};
use super::proxy::{self, Answer, Hop};
use super::registrations::Registrations;
use crate::config::sip::NextHop;
use crate::config::{AuthMode, Category};
use crate::federation::Decision;
use crate::net::tls::{TlsError, TlsProfile};
use crate::protect::RequestLine;
use crate::runtime::Runtime;
use crate::runtime::accept::{Connections, OnBanned};
use crate::runtime::control::{FrontEnd, Pending, RebuildError, ServerView, ServiceView};
use crate::runtime::services::Drain;
use crate::telemetry::access_log::AccessEntry;

mod connect;
mod link;
mod outward;

use link::{Inlet, Link, Outlet, Wire};

/// Most SIP connections one source address holds open at once (a partner edge needs a few;
/// a NAT of remote users more); further ones are closed at accept.
pub const MAX_CONNECTIONS_PER_SOURCE: usize = 256;

/// Messages queued toward one connection before the edge stops reading for it.
const QUEUE: usize = 256;
/// How long connecting to the next hop may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// `Retry-After` on a 503 when the next hop cannot be reached.
const RETRY_AFTER_SECS: u64 = 30;
/// After a failed connect, requests get 503 at once for this long instead of each waiting
/// (in turn, behind the one connecting) for another connect to time out.
const DOWN_HOLD: Duration = Duration::from_secs(1);
/// How far a partner connection's idle deadline may lag behind (it is moved only when it
/// moved by this much: one timer reset per second, not per message).
const TIMER_SLACK: Duration = Duration::from_secs(1);
/// How long one write to the next hop may block before its connection is given up.
const UPSTREAM_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// The connection to the next hop.
#[derive(Default)]
struct Upstream {
    /// Until when it counts as down (a connect just failed).
    down_until: Option<Instant>,
}

/// The SIP front end's shared state: partner connections by number, the next hop.
pub struct SipEdge {
    runtime: Arc<Runtime>,
    next_hop: NextHop,
    /// `host:port` of the next hop, as the access log and the status show it.
    next_hop_address: Arc<str>,
    record_route: bool,
    limits: StreamLimits,
    idle_timeout: Duration,
    /// How long one message may take to arrive once its first byte has (a slow sender holding
    /// a connection with a message that never ends: `[server] header_read_timeout`).
    message_timeout: Duration,
    /// The edge's own Via identities (one per listener, a reload may add one; a removed
    /// listener's stays, so late responses through it still find their way), to recognise
    /// responses and its own routes.
    hops: ArcSwap<Vec<Hop>>,
    /// The identities of the listeners running now: what requests toward partners carry in
    /// their Via and Record-Route (a removed listener's port is closed).
    serving: ArcSwap<Vec<Hop>>,
    /// The TLS listeners' profiles and acceptors (a changed CRL is swapped in on reload).
    tls: Mutex<Vec<(TlsProfile, Arc<ArcSwap<TlsAcceptor>>)>>,
    registrations: Registrations,
    dialogs: Dialogs,
    counters: SipCounters,
    /// Partner connections by number: where their responses go, and who they are.
    clients: Mutex<HashMap<u64, (Link, SocketAddr)>>,
    next_connection: AtomicU64,
    /// The open connection to the next hop, as requests are sent on it (no waiting).
    next_hop_link: Mutex<Option<Link>>,
    /// Opening the connection to the next hop (one at a time), and when it last failed.
    upstream: tokio::sync::Mutex<Upstream>,
    /// Toward partners, and TLS toward the next hop.
    outward: outward::Outward,
}

impl SipEdge {
    /// The SIP front end forwarding to `next_hop`; `hops` are its listeners as Via shows them.
    pub fn new(
        runtime: Arc<Runtime>,
        next_hop: NextHop,
        record_route: bool,
        max_message_bytes: usize,
        hops: Vec<Hop>,
        tls: Vec<(TlsProfile, Arc<ArcSwap<TlsAcceptor>>)>,
    ) -> SipEdge {
        let idle_timeout = runtime.config().server.idle_timeout;
        let message_timeout = runtime.config().server.header_read_timeout;
        SipEdge {
            counters: SipCounters::new(&runtime.metrics),
            runtime,
            next_hop_address: Arc::from(format!("{}:{}", next_hop.host, next_hop.port).as_str()),
            next_hop,
            record_route,
            limits: StreamLimits::new(max_message_bytes),
            idle_timeout,
            message_timeout,
            serving: ArcSwap::from_pointee(hops.clone()),
            hops: ArcSwap::from_pointee(hops),
            tls: Mutex::new(tls),
            registrations: Registrations::default(),
            dialogs: Dialogs::default(),
            clients: Mutex::new(HashMap::new()),
            // A random start: a late response to a connection from before a restart never
            // finds a new connection with the same number.
            next_connection: AtomicU64::new(rand::random::<u64>() >> 1),
            next_hop_link: Mutex::new(None),
            upstream: tokio::sync::Mutex::new(Upstream::default()),
            outward: outward::Outward::default(),
        }
    }

    /// Sends `bytes` to the next hop over the shared connection, opening it when needed;
    /// `false` (503) when it is down or not keeping up. Never waits for the next hop to read:
    /// a partner's request waiting on a full connection would hold up every other partner's
    /// requests, and the whole edge would stop without a single answer.
    async fn send_upstream(self: &Arc<Self>, bytes: Bytes) -> bool {
        let bytes = match link::offer(self.next_hop_link().as_ref(), bytes) {
            Ok(sent) => return sent,
            Err(bytes) => bytes,
        };
        let mut upstream = self.upstream.lock().await;
        // Another request may have opened it while this one waited for the lock.
        let bytes = match link::offer(self.next_hop_link().as_ref(), bytes) {
            Ok(sent) => return sent,
            Err(bytes) => bytes,
        };
        self.reconnect_and_send(&mut upstream, bytes).await
    }

    /// The connection to the next hop as last opened (it may have closed since).
    fn next_hop_link(&self) -> Option<Link> {
        self.next_hop_link.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    async fn reconnect_and_send(self: &Arc<Self>, upstream: &mut Upstream, bytes: Bytes) -> bool {
        if upstream.down_until.is_some_and(|until| Instant::now() < until) {
            return false;
        }
        let Some(connected) = self.open_next_hop().await else {
            upstream.down_until = Some(Instant::now() + DOWN_HOLD);
            return false;
        };
        upstream.down_until = None;
        let (inlet, outlet, link) = link::wire_up(connected.stream, QUEUE);
        tokio::spawn(self.clone().upstream_connection(inlet, outlet, connected.peer));
        let sent = link.try_send(bytes).is_ok();
        *self.next_hop_link.lock().unwrap_or_else(|p| p.into_inner()) = Some(link);
        sent
    }

    /// Writes what other tasks could not write to the next hop at once, and routes its
    /// responses back; its requests go toward partners.
    async fn upstream_connection(self: Arc<Self>, mut reader: Inlet, mut outlet: Outlet, peer: SocketAddr) {
        let mut framer = Framer::new(self.limits);
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            tokio::select! {
                pending = outlet.pending() => {
                    // A next hop that stops reading loses its connection (the next request
                    // opens another) rather than holding this task, and its responses, for ever.
                    if !matches!(tokio::time::timeout(UPSTREAM_WRITE_TIMEOUT, outlet.write_pending(pending)).await, Ok(Ok(()))) { return }
                },
                read = reader.read(&mut buffer) => {
                    let Ok(n) = read else { return };
                    if n == 0 { return }
                    let Ok(frames) = framer.push(&buffer[..n]) else { return };
                    for frame in frames {
                        match frame {
                            Frame::Message(message) if message.is_request() => self.from_inside(*message, peer),
                            Frame::Message(message) => self.route_response(*message),
                            Frame::Refused(_) => {}
                        }
                    }
                }
            }
        }
    }

    /// Sends a response from the inside back on the partner connection its request used.
    fn route_response(&self, mut message: SipMessage) {
        if message.is_request() {
            return; // requests from the inside go to `from_inside`
        }
        let Some(target) = self.hops.load().iter().find_map(|hop| proxy::return_response(&mut message, hop)) else { return };
        let now = Instant::now();
        self.registrations.note(&message, now);
        let repeated = self.dialogs.note(&message, now);
        let Some((link, partner)) =
            target.connection.and_then(|id| self.clients.lock().unwrap_or_else(|p| p.into_inner()).get(&id).cloned())
        else {
            return;
        };
        // Never wait for one partner: a connection that does not read its responses would stall
        // every other partner's behind it. Its backlog full, the response is dropped (SIP
        // retransmits; a stateless proxy keeps nothing to resend from).
        let _ = link.try_send(message.to_bytes());
        let status = message.status().unwrap_or(0);
        let cseq = message.header_value("CSeq");
        let method = cseq.as_deref().and_then(|cseq| cseq.split_whitespace().nth(1));
        // Credentials refused to a REGISTER or INVITE count against the partner (DESIGN §3).
        if matches!(status, 401 | 407) && matches!(method, Some("REGISTER" | "INVITE")) {
            let line = RequestLine { method: "-", path: "-", protocol: "SIP/2.0", host: "-" };
            self.runtime.shield.record_detached(partner.ip(), Category::SipAuthFailure, line);
        }
        if status >= 200 {
            let domain = message.from_host();
            // A repeated 2xx to an INVITE is not one more answer to the partner's requests (a
            // partner that never ACKs would otherwise dilute its error share with them).
            if !repeated {
                self.runtime.federation.note_final(domain, status);
            }
            let to = message.header_value("To");
            let final_ = Final { status, bytes: message.body().len() as u64, upstream: Some(&self.next_hop_address) };
            self.log_final(partner, domain, method, to.as_deref().map(uri_of), final_);
        }
    }

    /// One `access.log` line and the response metric for a final answer sent to `partner`
    /// (from `domain`).
    fn log_final(&self, partner: SocketAddr, domain: Option<&str>, method: Option<&str>, target: Option<&str>, sent: Final<'_>) {
        self.counters.response(sent.status);
        self.runtime.access_log.write(&AccessEntry {
            client: partner.ip(),
            host: domain.unwrap_or_default(),
            method: method.unwrap_or("-"),
            path: target.unwrap_or("-"),
            protocol: "SIP/2.0",
            status: sent.status,
            bytes: sent.bytes,
            upstream: sent.upstream,
            service: Some("sip"),
            duration: Duration::ZERO,
        });
    }

    /// Reads one accepted partner connection until it ends or the drain.
    async fn serve_stream(self: Arc<Self>, wire: Wire, client: SocketAddr, hop: Hop, peer_names: Option<Vec<String>>, drain: Drain) {
        let (inlet, outlet, link) = link::wire_up(wire, QUEUE);
        let id = self.register(link, client);
        self.serve_connection((inlet, outlet), client, hop, peer_names, id, drain).await;
    }

    /// Numbers a partner connection and records the link its messages are sent on.
    fn register(&self, link: Link, client: SocketAddr) -> u64 {
        let id = self.next_connection.fetch_add(1, Ordering::Relaxed);
        self.clients.lock().unwrap_or_else(|p| p.into_inner()).insert(id, (link, client));
        id
    }

    /// Reads partner connection `id` (accepted, or opened toward the partner) until it ends
    /// or the drain, writing what other tasks could not write at once.
    async fn serve_connection(
        self: Arc<Self>,
        (mut reader, mut writer): (Inlet, Outlet),
        client: SocketAddr,
        hop: Hop,
        peer_names: Option<Vec<String>>,
        id: u64,
        mut drain: Drain,
    ) {
        let mut framer = Framer::new(self.limits);
        let mut buffer = vec![0u8; 16 * 1024];
        // When the unfinished message held by the framer began: it must be complete within
        // `message_timeout`, however the sender trickles it (each byte would restart an idle
        // timeout, and the connection would be held for ever).
        let mut unfinished_since: Option<Instant> = None;
        // One timer and one drain future for the connection's life, not one per message: the
        // idle deadline moves only when it moved by a second or more (or came closer).
        let timer = tokio::time::sleep(self.idle_timeout);
        tokio::pin!(timer);
        let drained = drain.signalled();
        tokio::pin!(drained);
        loop {
            let idle = Instant::now() + self.idle_timeout;
            let deadline = unfinished_since.map_or(idle, |since| (since + self.message_timeout).min(idle));
            if deadline < timer.deadline() || deadline >= timer.deadline() + TIMER_SLACK {
                timer.as_mut().reset(deadline);
            }
            tokio::select! {
                read = reader.read(&mut buffer) => {
                    let n = match read {
                        Ok(n) if n > 0 => n,
                        _ => break,
                    };
                    let frames = match framer.push(&buffer[..n]) {
                        Ok(frames) => frames,
                        Err(refusal) => {
                            self.violation(client);
                            let _ = tokio::time::timeout(self.idle_timeout, writer.write(Bytes::from(bare_answer(refusal.status())))).await;
                            break;
                        }
                    };
                    unfinished_since = match (framer.pending(), unfinished_since) {
                        (0, _) => None,
                        (_, Some(since)) if frames.is_empty() => Some(since),
                        _ => Some(Instant::now()), // a new message began
                    };
                    if framer.take_keepalives() >= 2 {
                        // RFC 5626 pong.
                        if !matches!(tokio::time::timeout(self.idle_timeout, writer.write(Bytes::from_static(b"\r\n"))).await, Ok(Ok(()))) {
                            break;
                        }
                    }
                    let mut close = false;
                    for frame in frames {
                        // One unit of the task's budget per message: a partner sending as fast as
                        // the edge reads never keeps the others waiting (nothing else here has to
                        // wait: messages are written at once).
                        tokio::task::consume_budget().await;
                        if let Some((answer, closes)) = self.handle(frame, client, &hop, id, peer_names.as_deref()).await {
                            // A partner that does not read its answers is not waited for beyond
                            // the idle timeout (it would hold the connection for ever).
                            let written = matches!(tokio::time::timeout(self.idle_timeout, writer.write(answer)).await, Ok(Ok(())));
                            close |= closes || !written;
                            if close {
                                break;
                            }
                        }
                    }
                    if close {
                        break;
                    }
                }
                pending = writer.pending() => {
                    if !matches!(tokio::time::timeout(self.idle_timeout, writer.write_pending(pending)).await, Ok(Ok(()))) {
                        break;
                    }
                }
                () = &mut timer => break,
                () = &mut drained => break,
            }
        }
        self.clients.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    }

    /// What to do with one frame from a partner: forward it (`None`), or the answer to write
    /// back and whether the connection closes after it.
    async fn handle(
        self: &Arc<Self>,
        frame: Frame,
        client: SocketAddr,
        hop: &Hop,
        connection: u64,
        peer_names: Option<&[String]>,
    ) -> Option<(Bytes, bool)> {
        let mut message = match frame {
            Frame::Message(message) => *message,
            Frame::Refused(refusal) => {
                self.violation(client);
                return Some((Bytes::from(bare_answer(refusal.status())), false));
            }
        };
        if !message.is_request() {
            self.response_from_partner(message).await;
            return None;
        }
        let domain = message.from_host();
        // In-dialog requests to a call's device (the inside's 2xx Contact) address no new user.
        let user = message.request_uri().filter(|_| !self.dialogs.to_call_target(&message));
        // Over TLS with a partner certificate, the certificate must speak for the From domain
        // (checked first: an impostor's requests count nothing against the domain it claims).
        let decision = self.runtime.federation.decide_presented(domain, user.as_deref(), peer_names, Some(client.ip())).await;
        self.counters.request(decision);
        let forbidden = Answer { status: 403, reason: "Forbidden" };
        let refusal = match decision {
            Decision::Local | Decision::Allowed | Decision::Discovered => None,
            Decision::Blocked => Some((forbidden, None, true)),
            Decision::Refused | Decision::Watched => Some((forbidden, None, false)),
            Decision::Throttled { retry_after_secs } => {
                Some((Answer { status: 503, reason: "Service Unavailable" }, Some(retry_after_secs), false))
            }
        };
        // An answer copies the request's transaction fields as they arrived (built only when
        // one is sent: most requests are forwarded).
        if let Some((answer, retry_after, close)) = refusal {
            let received = transaction_headers(&message, false);
            return self.answer(client, &message, &received, &answer, retry_after).map(|answer| (answer, close));
        }
        if self.runtime.operate.in_maintenance() && starts_new_work(&message, &self.dialogs) {
            let retry_after = self.runtime.config().maintenance.retry_after.as_secs().max(1);
            let answer = Answer { status: 503, reason: "Service Unavailable" };
            let received = transaction_headers(&message, false);
            return self.answer(client, &message, &received, &answer, Some(retry_after)).map(|answer| (answer, false));
        }
        match proxy::forward_request(&mut message, hop, client, connection, self.record_route) {
            Ok(()) => {
                if self.send_upstream(message.to_bytes()).await {
                    None
                } else {
                    // Prepared for forwarding: the edge's own Via (a field of its own, on top)
                    // is left out; the partner's carries `received`/`rport`, as a server's may.
                    let received = transaction_headers(&message, true);
                    let unavailable = Answer { status: 503, reason: "Service Unavailable" };
                    self.answer(client, &message, &received, &unavailable, Some(RETRY_AFTER_SECS)).map(|answer| (answer, false))
                }
            }
            // Refused before the Via was touched (483, 482, a malformed field).
            Err(answer) => {
                let received = transaction_headers(&message, false);
                self.answer(client, &message, &received, &answer, None).map(|answer| (answer, false))
            }
        }
    }

    /// The edge's own answer to `request` (see [`answer_to`]), counted and logged as a final
    /// sent to the partner.
    fn answer(&self, client: SocketAddr, request: &SipMessage, received: &str, answer: &Answer, retry_after: Option<u64>) -> Option<Bytes> {
        let bytes = answer_to(request, received, answer, retry_after)?;
        let target = request.request_uri();
        let target = target.as_deref().map(|t| t.split([';', '?']).next().unwrap_or(t));
        let sent = Final { status: answer.status, bytes: 0, upstream: None };
        self.log_final(client, request.from_host(), request.method_name(), target, sent);
        Some(bytes)
    }

    /// A listener a reload added: its Via identity, and its TLS profile (re-read with the
    /// others on refresh and reload).
    pub fn add_listener(&self, hop: Hop, tls: Option<(TlsProfile, Arc<ArcSwap<TlsAcceptor>>)>) {
        self.hops.rcu(|hops| {
            let mut hops = Vec::clone(hops);
            if !hops.contains(&hop) {
                hops.push(hop.clone());
            }
            hops
        });
        if let Some(tls) = tls {
            self.tls.lock().unwrap_or_else(|p| p.into_inner()).push(tls);
        }
    }

    /// A listener a reload removed: its TLS files are no longer re-read; responses through
    /// it are still recognised.
    pub fn remove_listener(&self, acceptor: Option<&Arc<ArcSwap<TlsAcceptor>>>) {
        if let Some(acceptor) = acceptor {
            self.tls.lock().unwrap_or_else(|p| p.into_inner()).retain(|(_, a)| !Arc::ptr_eq(a, acceptor));
        }
    }

    /// The identities of the listeners running now, in start order (after a reload): what
    /// requests toward partners name. Listeners on `0.0.0.0` and `[::]` of one port share one
    /// identity, so this is set from every running listener, never by removing one.
    pub fn set_serving(&self, hops: Vec<Hop>) {
        self.serving.store(Arc::new(hops));
    }

    /// Re-reads every TLS listener's certificate, key, CA and CRL and swaps the acceptors:
    /// new handshakes see a new CRL, established connections keep running. On an error the
    /// listener keeps its running acceptor.
    pub fn reload_tls(&self) -> Result<(), TlsError> {
        let mut outcome = Ok(());
        let tls = self.tls.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for (profile, acceptor) in &tls {
            if let Err(error) = profile.reload(acceptor)
                && outcome.is_ok()
            {
                outcome = Err(error);
            }
        }
        if let Err(error) = self.outward.reload_tls()
            && outcome.is_ok()
        {
            outcome = Err(error);
        }
        outcome
    }

    fn violation(&self, client: SocketAddr) {
        let line = RequestLine { method: "-", path: "-", protocol: "SIP/2.0", host: "-" };
        self.runtime.shield.record_detached(client.ip(), Category::SipProtocolViolation, line);
    }
}

/// In maintenance (DESIGN §5) new out-of-dialog work — an INVITE, MESSAGE, SUBSCRIBE or a
/// REGISTER other than a removal (`Expires: 0`) — goes to another peer; in-dialog requests
/// (a To tag) and calls in progress continue. An INVITE with a To tag is a re-INVITE only
/// for a call in progress (a made-up tag does not start a new call past maintenance).
fn starts_new_work(request: &SipMessage, dialogs: &Dialogs) -> bool {
    let in_dialog = request.header("To").is_some_and(|to| to.to_ascii_lowercase().contains(";tag="));
    match request.method().as_deref() {
        Some("INVITE") if in_dialog => !request.header("Call-ID").is_some_and(|call_id| dialogs.in_progress(&call_id)),
        _ if in_dialog => false,
        Some("INVITE" | "MESSAGE" | "SUBSCRIBE") => true,
        Some("REGISTER") => request.header("Expires").is_none_or(|e| e.trim() != "0"),
        _ => false,
    }
}

/// The fields a response copies from its request (RFC 3261 §8.2.6): Via, From, To, Call-ID,
/// CSeq, as header lines.
fn transaction_headers(request: &SipMessage, skip_own_via: bool) -> String {
    let mut lines = String::with_capacity(512);
    for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
        let skip = usize::from(skip_own_via && name == "Via");
        for value in request.field_values(name).skip(skip) {
            for part in [name, ": ", &value, "\r\n"] {
                lines.push_str(part);
            }
        }
    }
    lines
}

/// A response to `request` with its `transaction_headers`; `None` for an ACK, which is
/// never answered.
fn answer_to(request: &SipMessage, transaction_headers: &str, answer: &Answer, retry_after: Option<u64>) -> Option<Bytes> {
    if request.method().as_deref() == Some("ACK") {
        return None;
    }
    let mut text = format!("SIP/2.0 {} {}\r\n{transaction_headers}", answer.status, answer.reason);
    if let Some(seconds) = retry_after {
        text.push_str(&format!("Retry-After: {seconds}\r\n"));
    }
    text.push_str("Content-Length: 0\r\n\r\n");
    Some(Bytes::from(text))
}

/// A final sent to a partner, as the access log records it.
struct Final<'a> {
    status: u16,
    /// Its body's length.
    bytes: u64,
    /// The next hop it came from (`None`: the edge's own answer).
    upstream: Option<&'a str>,
}

/// The SIP metrics' counters, looked up once (counting is one atomic add per message).
struct SipCounters {
    /// By [`Decision`], in [`DECISIONS`] order.
    requests: Vec<prometheus_client::metrics::counter::Counter>,
    /// By class: 2xx … 6xx.
    responses: Vec<prometheus_client::metrics::counter::Counter>,
}

const DECISIONS: [&str; 7] = ["local", "allowed", "discovered", "blocked", "refused", "watched", "throttled"];

impl SipCounters {
    fn new(metrics: &crate::telemetry::metrics::Metrics) -> SipCounters {
        SipCounters {
            requests: DECISIONS.iter().map(|d| metrics.sip_request_counter(d)).collect(),
            responses: ["2xx", "3xx", "4xx", "5xx", "6xx"].iter().map(|c| metrics.sip_response_counter(c)).collect(),
        }
    }

    fn request(&self, decision: Decision) {
        if let Some(counter) = DECISIONS.iter().position(|d| *d == decision.as_str()).and_then(|i| self.requests.get(i)) {
            counter.inc();
        }
    }

    fn response(&self, status: u16) {
        let class = usize::from(status / 100).clamp(2, 6) - 2;
        if let Some(counter) = self.responses.get(class) {
            counter.inc();
        }
    }
}

/// The answer to input that could not be read as a message (no headers to copy).
fn bare_answer(status: u16) -> Vec<u8> {
    let reason = match status {
        513 => "Message Too Large",
        505 => "Version Not Supported",
        _ => "Bad Request",
    };
    format!("SIP/2.0 {status} {reason}\r\nContent-Length: 0\r\n\r\n").into_bytes()
}

impl FrontEnd for SipEdge {
    fn role(&self) -> &'static str {
        "SIP edge"
    }

    /// The SIP service: its "sessions" are the calls in progress (maintenance shows it
    /// `Draining (N)` while they last), its server the next hop.
    fn services(&self) -> Vec<ServiceView> {
        let (calls, peak) = self.dialogs.counts(Instant::now());
        let up = self.upstream.try_lock().map_or(true, |u| u.down_until.is_none_or(|until| Instant::now() >= until));
        vec![ServiceView {
            name: std::sync::Arc::from("sip"),
            auth: AuthMode::None,
            kind: "sip",
            sessions: calls,
            sessions_peak: peak,
            servers: vec![ServerView { address: self.next_hop_address.clone(), weight: 1, max_conns: 0, up, in_flight: 0 }],
        }]
    }

    /// The SIP edge has no routing generation; a rebuild re-reads its TLS files.
    fn rebuild(&self) -> Result<(), RebuildError> {
        self.reload_files()
    }

    /// `POST /api/v1/refresh`: the partners' CA and CRL are re-read.
    fn refresh_credentials(&self) -> Pending<'_, ()> {
        let outcome = self.reload_tls();
        if let Err(error) = &outcome {
            self.runtime.error_log.error(&format!("SIP TLS files not reloaded, the running ones stay: {error}"));
        }
        Box::pin(std::future::ready(()))
    }

    fn revoke_tokens<'a>(&'a self, _user: &'a str) -> Pending<'a, Option<Result<usize, crate::cluster::StoreError>>> {
        Box::pin(std::future::ready(None))
    }

    fn registrations(&self) -> Option<(u64, u64)> {
        Some(self.registrations.counts(Instant::now()))
    }

    fn reload_files(&self) -> Result<(), RebuildError> {
        self.reload_tls().map_err(|error| RebuildError { front_end: self.role(), reason: error.to_string() })
    }
}

/// One SIP listener's connections.
pub struct SipConnections {
    edge: Arc<SipEdge>,
    hop: Hop,
    tls: Option<Arc<ArcSwap<TlsAcceptor>>>,
    handshake_timeout: Duration,
}

impl SipConnections {
    /// The connections of a listener that Via shows as `hop`; `tls` when it is a TLS one.
    pub fn new(edge: Arc<SipEdge>, hop: Hop, tls: Option<Arc<ArcSwap<TlsAcceptor>>>, handshake_timeout: Duration) -> SipConnections {
        SipConnections { edge, hop, tls, handshake_timeout }
    }
}

impl Connections for SipConnections {
    /// DESIGN §4: a banned source's SIP connections are closed at accept.
    fn on_banned(&self) -> OnBanned {
        OnBanned::Close
    }

    /// One address cannot take the listener's whole connection budget.
    fn per_source_limit(&self) -> Option<usize> {
        Some(MAX_CONNECTIONS_PER_SOURCE)
    }

    fn serve(&self, tcp: TcpStream, client: SocketAddr, drain: Drain) -> impl Future<Output = ()> + Send + 'static {
        let (edge, hop, timeout) = (self.edge.clone(), self.hop.clone(), self.handshake_timeout);
        let acceptor = self.tls.as_ref().map(|t| t.load_full());
        async move {
            match acceptor {
                None => edge.serve_stream(Wire::Tcp(tcp), client, hop, None, drain).await,
                Some(acceptor) => {
                    if let Ok(Ok(stream)) = tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                        let names =
                            stream.get_ref().1.peer_certificates().and_then(|chain| chain.first()).map(|leaf| certificate_names(leaf));
                        edge.serve_stream(Wire::Tls(Box::new(stream)), client, hop, names, drain).await;
                    }
                }
            }
        }
    }
}

/// The DNS names a certificate is issued to: its SAN dNSNames, or its CN when it has none
/// (DESIGN §4); empty when it cannot be read.
fn certificate_names(der: &rustls_pki_types::CertificateDer<'_>) -> Vec<String> {
    let Ok((_, certificate)) = x509_parser::parse_x509_certificate(der.as_ref()) else { return Vec::new() };
    let san: Vec<String> = certificate
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    x509_parser::extensions::GeneralName::DNSName(dns) => Some(dns.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    if !san.is_empty() {
        return san;
    }
    certificate.subject().iter_common_name().filter_map(|cn| cn.as_str().ok().map(str::to_string)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_copy_the_transaction_headers_and_acks_get_none() {
        let wire = "OPTIONS sip:a@corp.example SIP/2.0\r\nVia: SIP/2.0/TCP p.example;branch=z9hG4bK1\r\nFrom: <sip:b@p.example>;tag=1\r\n\
                    To: <sip:a@corp.example>\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
        let Ok(frames) = Framer::new(StreamLimits::new(4096)).push(wire.as_bytes()) else { panic!() };
        let Some(Frame::Message(message)) = frames.into_iter().next() else { panic!() };
        let answer =
            answer_to(&message, &transaction_headers(&message, false), &Answer { status: 503, reason: "Service Unavailable" }, Some(30))
                .unwrap();
        let text = std::str::from_utf8(&answer).unwrap();
        assert!(text.starts_with("SIP/2.0 503 Service Unavailable\r\nVia: SIP/2.0/TCP p.example;branch=z9hG4bK1\r\n"), "{text}");
        assert!(text.contains("Call-ID: c1\r\nCSeq: 1 OPTIONS\r\nRetry-After: 30\r\nContent-Length: 0\r\n\r\n"), "{text}");
        assert!(std::str::from_utf8(&bare_answer(513)).unwrap().starts_with("SIP/2.0 513 Message Too Large\r\n"));
    }
}
