//! Upstream pools: weighted server selection, backups, per-server connection limits,
//! passive failover, active health checks, and keep-alive connection reuse.
//!
//! Selection is smooth weighted round-robin (nginx's algorithm) over the primary servers
//! that are up; weight-0 servers are backups, tried only when no primary can take the
//! request (down, failed recently, or at `max_conns`). A connect error or connect timeout
//! marks the server failed for [`PASSIVE_FAIL_TIMEOUT`] and the request moves to the next
//! candidate, as long as its body can be replayed. When every server is at `max_conns` the
//! request waits up to `queue_timeout` for a slot, then gets 503.
//!
//! Connections are pooled per server: idle HTTP/1.1 keep-alive connections (our own client
//! in [`wire`], optional TLS with tokio-rustls) wait in a short stack. The request's task
//! writes the request and reads the response on the connection itself; the response body
//! ([`UpstreamBody`]) gives the connection back when it ends cleanly. A [`Lease`] holds the
//! server's connection slot until the response body has been forwarded. A pooled connection
//! the upstream closed is noticed before use; one that closes under a request is retried
//! once on a fresh connection when the request was never sent, or is idempotent with a
//! replayable body.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use super::body::ProxyBody;
use super::respond::ProxyError;
use crate::config::{HealthCheckConfig, PoolConfig};
use crate::event::{Event, EventBus};
use crate::telemetry::metrics::Metrics;

/// How long a server that refused a connection is skipped.
pub const PASSIVE_FAIL_TIMEOUT: Duration = Duration::from_secs(10);
/// A pooled connection idle at least this long may have been closed by the upstream
/// (keep-alive timeouts are seconds); requests sent on it keep a copy for one retry.
pub const STALE_RISK_AFTER: Duration = Duration::from_millis(500);
/// Pooled connections idle this long are closed (by the health-check tick).
pub const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle upstream connections kept per server.
pub const MAX_IDLE_PER_SERVER: usize = 256;

use super::wire::{self, Conn, RequestBody, SendError, UpstreamBody};

/// One upstream server.
#[derive(Debug)]
pub struct Server {
    /// `host:port` as configured (logs, metrics, admin).
    pub address: Arc<str>,
    /// Host part of the address (TLS server name).
    host: String,
    /// Idle keep-alive connections with the time they went idle, most recent last.
    idle: Mutex<Vec<(Conn, Instant)>>,
    /// 0 = backup.
    pub weight: u32,
    /// Connection slots (`None` = unlimited).
    slots: Option<Arc<Semaphore>>,
    max_conns: u32,
    /// Active health (true until a check says otherwise).
    up: AtomicBool,
    consecutive_fails: AtomicU32,
    consecutive_passes: AtomicU32,
    /// Milliseconds since the pool's epoch until which the server is skipped.
    failed_until_ms: AtomicU64,
    in_flight: AtomicU32,
}

impl Server {
    /// Whether health checks consider the server up.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Requests currently holding a connection slot.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Configured limit (0 = unlimited).
    pub fn max_conns(&self) -> u32 {
        self.max_conns
    }
}

/// A connection slot on one server, held until the response is finished.
#[derive(Debug)]
pub struct Lease {
    server: Arc<Server>,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Lease {
    /// The server this lease is on.
    pub fn server(&self) -> &Arc<str> {
        &self.server.address
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.server.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Server {
    /// The most recently pooled connection the upstream has not closed, and how long it sat
    /// idle (closed ones met on the way are dropped).
    ///
    /// A connection opened on this thread comes first: with per-core workers each thread has
    /// its own event loop, and a socket another thread opened is woken through that thread.
    fn take_idle(&self) -> Option<(Conn, Duration)> {
        let here = std::thread::current().id();
        loop {
            let (mut conn, since) = {
                let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
                let newest = idle.len().checked_sub(1)?;
                let at = idle.iter().rposition(|(conn, _)| conn.home() == here).unwrap_or(newest);
                idle.remove(at)
            };
            if !conn.is_closed() {
                return Some((conn, since.elapsed()));
            }
        }
    }

    /// Closes pooled connections idle longer than [`IDLE_CONNECTION_TIMEOUT`] or closed by
    /// the upstream.
    fn prune_idle(&self) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.retain_mut(|(conn, since)| since.elapsed() < IDLE_CONNECTION_TIMEOUT && !conn.is_closed());
    }
}

impl wire::Recycle for Server {
    fn recycle(&self, conn: Conn) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() >= MAX_IDLE_PER_SERVER {
            idle.remove(0);
        }
        idle.push((conn, Instant::now()));
    }
}

/// A request ready to send, whose body may or may not be replayable.
pub struct Outgoing {
    pub parts: http::request::Parts,
    pub body: OutgoingBody,
}

/// The body of an outgoing request.
pub enum OutgoingBody {
    /// Fully buffered: can be sent again to another server.
    Replayable(Bytes),
    /// Streamed from the client: one attempt only.
    Streaming(ProxyBody),
}

/// A service's pool of upstream servers.
pub struct Pool {
    service: Arc<str>,
    servers: Vec<Arc<Server>>,
    /// Smooth-WRR current weights, one per server.
    wrr: Mutex<Vec<i64>>,
    tls: Option<TlsConnector>,
    config: PoolConfig,
    epoch: Instant,
    metrics: Arc<Metrics>,
    /// Health changes are published here.
    events: EventBus,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("service", &self.service).field("servers", &self.servers).finish()
    }
}

/// Why a pool could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// An address is not a valid URI authority.
    #[error("upstream address {0:?} is not host:port")]
    Address(String),
    /// The upstream CA file could not be loaded.
    #[error("upstream CA: {0}")]
    Ca(#[from] crate::net::tls::TlsError),
    /// rustls refused the client configuration.
    #[error("upstream TLS: {0}")]
    Tls(#[from] rustls::Error),
}

impl Pool {
    /// Builds a pool and starts its health checks (they stop when the pool is dropped).
    pub fn new(service: Arc<str>, config: &PoolConfig, metrics: Arc<Metrics>, events: EventBus) -> Result<Arc<Pool>, PoolError> {
        let servers = config
            .servers
            .iter()
            .map(|s| {
                let authority: http::uri::Authority = s.address.parse().map_err(|_| PoolError::Address(s.address.clone()))?;
                Ok(Arc::new(Server {
                    address: Arc::from(s.address.as_str()),
                    host: authority.host().trim_start_matches('[').trim_end_matches(']').to_string(),
                    idle: Mutex::new(Vec::new()),
                    weight: s.weight,
                    slots: (s.max_conns > 0).then(|| Arc::new(Semaphore::new(s.max_conns as usize))),
                    max_conns: s.max_conns,
                    up: AtomicBool::new(true),
                    consecutive_fails: AtomicU32::new(0),
                    consecutive_passes: AtomicU32::new(0),
                    failed_until_ms: AtomicU64::new(0),
                    in_flight: AtomicU32::new(0),
                }))
            })
            .collect::<Result<Vec<_>, PoolError>>()?;
        let tls = if config.tls { Some(tls_connector(config)?) } else { None };
        for server in &servers {
            metrics.upstream_health(&service, &server.address, true);
        }
        let pool = Arc::new(Pool {
            service,
            wrr: Mutex::new(vec![0; servers.len()]),
            servers,
            tls,
            config: config.clone(),
            epoch: Instant::now(),
            metrics,
            events,
        });
        if let Some(check) = &config.health_check {
            spawn_health_checks(Arc::downgrade(&pool), check.clone());
        }
        Ok(pool)
    }

    /// The servers of this pool.
    pub fn servers(&self) -> &[Arc<Server>] {
        &self.servers
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn available(&self, server: &Server, now_ms: u64) -> bool {
        server.is_up() && server.failed_until_ms.load(Ordering::Relaxed) <= now_ms
    }

    /// Servers in the order to try them: the WRR pick, the other available primaries, the
    /// available backups. If none is available, every server (health checks can be wrong).
    fn candidates(&self) -> Vec<usize> {
        let now = self.now_ms();
        let mut order = Vec::with_capacity(self.servers.len());
        if let Some(first) = self.pick_weighted(now) {
            order.push(first);
        }
        for (i, s) in self.servers.iter().enumerate() {
            if s.weight > 0 && !order.contains(&i) && self.available(s, now) {
                order.push(i);
            }
        }
        for (i, s) in self.servers.iter().enumerate() {
            if s.weight == 0 && self.available(s, now) {
                order.push(i);
            }
        }
        if order.is_empty() {
            order.extend(0..self.servers.len());
        }
        order
    }

    /// Smooth weighted round-robin over available primaries.
    fn pick_weighted(&self, now_ms: u64) -> Option<usize> {
        if self.servers.len() == 1 {
            return (self.servers[0].weight > 0 && self.available(&self.servers[0], now_ms)).then_some(0);
        }
        let mut current = self.wrr.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        for (i, s) in self.servers.iter().enumerate() {
            if s.weight == 0 || !self.available(s, now_ms) {
                continue;
            }
            let w = i64::from(s.weight);
            current[i] += w;
            total += w;
            if best.is_none_or(|b| current[i] > current[b]) {
                best = Some(i);
            }
        }
        if let Some(b) = best {
            current[b] -= total;
        }
        best
    }

    fn try_lease(&self, i: usize) -> Option<Lease> {
        let server = &self.servers[i];
        let permit = match &server.slots {
            None => None,
            Some(slots) => Some(slots.clone().try_acquire_owned().ok()?),
        };
        server.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(Lease { server: server.clone(), _permit: permit })
    }

    /// A lease on the first candidate with a free slot, waiting up to `queue_timeout`.
    async fn lease(&self, candidates: &[usize]) -> Result<(Lease, usize), ProxyError> {
        for (pos, &i) in candidates.iter().enumerate() {
            if let Some(lease) = self.try_lease(i) {
                return Ok((lease, pos));
            }
        }
        // Everything is full: queue on the first candidate briefly.
        let &first = candidates.first().ok_or(ProxyError::UpstreamUnavailable)?;
        let server = &self.servers[first];
        let Some(slots) = &server.slots else { return Err(ProxyError::Overloaded) };
        match tokio::time::timeout(self.config.queue_timeout, slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => {
                server.in_flight.fetch_add(1, Ordering::Relaxed);
                Ok((Lease { server: server.clone(), _permit: Some(permit) }, 0))
            }
            _ => Err(ProxyError::Overloaded),
        }
    }

    /// Opens a new connection to `server` (TCP, optional TLS).
    async fn connect(&self, server: &Server) -> Result<Conn, ConnectError> {
        let attempt = async {
            let tcp = TcpStream::connect(server.address.as_ref()).await.map_err(ConnectError::Tcp)?;
            let _ = tcp.set_nodelay(true);
            match &self.tls {
                None => Ok(Conn::new(wire::Stream::Plain(tcp))),
                Some(connector) => {
                    let name = ServerName::try_from(server.host.clone()).map_err(|e| ConnectError::ServerName(e.to_string()))?;
                    let stream = connector.connect(name, tcp).await.map_err(ConnectError::Tls)?;
                    Ok(Conn::new(wire::Stream::Tls(Box::new(stream))))
                }
            }
        };
        tokio::time::timeout(self.config.connect_timeout, attempt).await.unwrap_or(Err(ConnectError::Timeout))
    }

    /// Sends a request, failing over on connect errors while the body allows it.
    pub async fn send(&self, outgoing: Outgoing) -> Result<(Response<ProxyBody>, Lease), ProxyError> {
        let candidates = self.candidates();
        let Outgoing { parts, body } = outgoing;
        let (mut lease, mut pos) = self.lease(&candidates).await?;
        let (replayable, mut streaming) = match body {
            OutgoingBody::Replayable(bytes) => (Some(bytes), None),
            OutgoingBody::Streaming(stream) => (None, Some(stream)),
        };
        let idempotent =
            matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE);
        let mut stale_retry_left = true;
        loop {
            // A pooled connection, or a new one (connect errors fail over to the next server).
            let (mut conn, stale_risk) = match lease.server.take_idle() {
                Some((conn, idle_for)) => (conn, idle_for >= STALE_RISK_AFTER),
                None => match self.connect(&lease.server).await {
                    Ok(conn) => (conn, false),
                    Err(why) => {
                        self.mark_failed(&lease.server, &why);
                        if replayable.is_none() {
                            return Err(ProxyError::UpstreamUnavailable);
                        }
                        let next = candidates.iter().enumerate().skip(pos + 1).find_map(|(p, &i)| self.try_lease(i).map(|l| (l, p)));
                        let Some((next_lease, next_pos)) = next else { return Err(ProxyError::UpstreamUnavailable) };
                        lease = next_lease;
                        pos = next_pos;
                        continue;
                    }
                },
            };
            let body = match (&replayable, streaming.take()) {
                (Some(bytes), _) => RequestBody::Full(bytes.clone()),
                (None, Some(stream)) => RequestBody::Stream(stream),
                (None, None) => return Err(ProxyError::UpstreamFailed),
            };
            // A retry is possible when the connection sat idle long enough for the upstream
            // to have closed it, and the body can be replayed.
            let may_retry = stale_risk && stale_retry_left && replayable.is_some();
            match tokio::time::timeout(self.config.response_timeout, conn.send(&parts, body)).await {
                Ok(Ok(head)) => {
                    let recycle: Arc<dyn wire::Recycle> = lease.server.clone();
                    let body = UpstreamBody::new(conn, &head, recycle);
                    let mut response = Response::new(ProxyBody::Upstream(body));
                    *response.status_mut() = head.status;
                    *response.headers_mut() = head.headers;
                    return Ok((response, lease));
                }
                Ok(Err(error)) => {
                    // A pooled connection the upstream closed meanwhile: retry once on a fresh
                    // one when the request was never sent, or is idempotent.
                    let never_sent = matches!(error, SendError::NotSent(_));
                    if may_retry && (never_sent || (idempotent && matches!(error, SendError::Closed))) {
                        stale_retry_left = false;
                        continue;
                    }
                    tracing::debug!(service = %self.service, server = %lease.server.address, "upstream request failed: {error}");
                    return Err(ProxyError::UpstreamFailed);
                }
                Err(_) => return Err(ProxyError::UpstreamTimeout),
            }
        }
    }

    fn mark_failed(&self, server: &Server, why: &ConnectError) {
        let until = self.now_ms() + u64::try_from(PASSIVE_FAIL_TIMEOUT.as_millis()).unwrap_or(10_000);
        server.failed_until_ms.store(until, Ordering::Relaxed);
        tracing::warn!(service = %self.service, server = %server.address, "upstream connect failed, trying the next server: {why}");
    }

    /// Records one health-check result.
    fn record_check(&self, server: &Server, healthy: bool, check: &HealthCheckConfig) {
        if healthy {
            server.consecutive_fails.store(0, Ordering::Relaxed);
            let passes = server.consecutive_passes.fetch_add(1, Ordering::Relaxed) + 1;
            if !server.is_up() && passes >= check.passes {
                server.up.store(true, Ordering::Relaxed);
                server.failed_until_ms.store(0, Ordering::Relaxed);
                self.metrics.upstream_health(&self.service, &server.address, true);
                self.events.publish(Event::UpstreamHealth {
                    service: self.service.to_string(),
                    server: server.address.to_string(),
                    up: true,
                });
            }
        } else {
            server.consecutive_passes.store(0, Ordering::Relaxed);
            let fails = server.consecutive_fails.fetch_add(1, Ordering::Relaxed) + 1;
            if server.is_up() && fails >= check.fails {
                server.up.store(false, Ordering::Relaxed);
                self.metrics.upstream_health(&self.service, &server.address, false);
                self.events.publish(Event::UpstreamHealth {
                    service: self.service.to_string(),
                    server: server.address.to_string(),
                    up: false,
                });
            }
        }
    }

    async fn check_once(&self, server: &Server, check: &HealthCheckConfig) -> bool {
        let probe = async {
            match &check.path {
                None => TcpStream::connect(server.address.as_ref()).await.is_ok(),
                Some(path) => {
                    let Ok(mut conn) = self.connect(server).await else { return false };
                    let request = Request::builder()
                        .uri(path.as_str())
                        .header(http::header::HOST, server.address.as_ref())
                        .header(http::header::USER_AGENT, "portcullis-health-check")
                        .header(http::header::CONNECTION, "close")
                        .body(());
                    let Ok(request) = request else { return false };
                    match conn.send(&request.into_parts().0, RequestBody::<ProxyBody>::Full(Bytes::new())).await {
                        Ok(head) => head.status.is_success() || head.status.is_redirection(),
                        Err(_) => false,
                    }
                }
            }
        };
        tokio::time::timeout(check.timeout, probe).await.unwrap_or(false)
    }
}

fn tls_connector(config: &PoolConfig) -> Result<TlsConnector, PoolError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(ca) = &config.ca_file {
        for cert in crate::net::tls::load_chain(ca)? {
            roots.add(cert)?;
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(crate::net::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(tls)))
}

/// Why a new upstream connection could not be opened.
#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error("connect: {0}")]
    Tcp(std::io::Error),
    #[error("server name: {0}")]
    ServerName(String),
    #[error("tls: {0}")]
    Tls(std::io::Error),
    #[error("connect timed out")]
    Timeout,
}

fn spawn_health_checks(pool: Weak<Pool>, check: HealthCheckConfig) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(check.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(pool) = pool.upgrade() else { return };
            let results = futures_util::future::join_all(pool.servers.iter().map(|s| pool.check_once(s, &check))).await;
            for (server, healthy) in pool.servers.iter().zip(results) {
                pool.record_check(server, healthy, &check);
                server.prune_idle();
            }
        }
    });
}

#[cfg(test)]
mod tests;
