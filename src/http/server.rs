//! HTTP client connections, as the shared accept loop hands them over
//! ([`crate::runtime::accept`]): the TLS handshake (bounded by the header-read timeout),
//! protocol choice, the idle and framing guards, and graceful shutdown on the drain.
//!
//! A TLS connection speaks exactly the protocol ALPN negotiated (`h2`: HTTP/2 only, no
//! sniffing; otherwise HTTP/1.1 only, through the framing guard); a plain connection is
//! HTTP/1.1 through the guard, or HTTP/2 with prior knowledge.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use super::facts::Connection;
use super::gateway::Edge;
use super::pipeline;
use crate::config::{ListenerConfig, ServerConfig};
use crate::net::h1_guard::GuardedIo;
use crate::net::idle::IdleTimeout;
use crate::runtime::accept::{Connections, OnBanned};
use crate::runtime::services::Drain;
use crate::telemetry::access_log::AccessEntry;

/// Most concurrent HTTP/2 streams per client connection.
pub const MAX_CONCURRENT_STREAMS: u32 = 128;
// A client cancelling every stream it has in flight at once must stay within its budget.
const _: () = assert!(super::cancels::CANCEL_BURST >= 2 * MAX_CONCURRENT_STREAMS);

/// Which HTTP versions a connection may speak.
#[derive(Clone, Copy)]
enum Protocols {
    /// Plain listener: HTTP/1.1, or HTTP/2 with prior knowledge.
    Detect,
    Http1,
    Http2,
}

struct Builders {
    detect: auto::Builder<TokioExecutor>,
    http1: hyper::server::conn::http1::Builder,
    http2: hyper::server::conn::http2::Builder<TokioExecutor>,
}

/// The HTTP/1 settings, applied alike to hyper's builder and hyper-util's (different types).
macro_rules! http1_settings {
    ($builder:expr, $server:expr) => {
        $builder
            .timer(TokioTimer::new())
            .header_read_timeout($server.header_read_timeout)
            .max_buf_size($server.max_header_bytes.max(8192))
            .max_headers($server.max_headers)
            .keep_alive(true)
    };
}

/// The HTTP/2 settings, applied alike to hyper's builder and hyper-util's.
macro_rules! http2_settings {
    ($builder:expr, $server:expr) => {
        $builder
            .timer(TokioTimer::new())
            .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
            .max_header_list_size(u32::try_from($server.max_header_bytes).unwrap_or(u32::MAX))
            .max_pending_accept_reset_streams(64)
            .max_local_error_reset_streams(256)
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Duration::from_secs(20))
    };
}

fn builders(server: &ServerConfig) -> Builders {
    let mut detect = auto::Builder::new(TokioExecutor::new());
    http1_settings!(detect.http1(), server);
    http2_settings!(detect.http2(), server);
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1_settings!(http1, server);
    let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    http2_settings!(http2, server);
    Builders { detect, http1, http2 }
}

/// One HTTP listener's connections: TLS or plain, and the settings they are served with.
pub struct HttpConnections {
    edge: Arc<Edge>,
    name: Arc<str>,
    config: ListenerConfig,
    server: Arc<ServerConfig>,
    builders: Arc<Builders>,
    tls: Option<Arc<ArcSwap<TlsAcceptor>>>,
}

impl HttpConnections {
    /// The connections of the listener `config`, served by `edge`; `tls` when it is HTTPS
    /// (the acceptor is swapped on certificate changes).
    pub fn new(edge: Arc<Edge>, config: ListenerConfig, server: ServerConfig, tls: Option<Arc<ArcSwap<TlsAcceptor>>>) -> HttpConnections {
        HttpConnections {
            edge,
            name: Arc::from(config.name.as_str()),
            builders: Arc::new(builders(&server)),
            server: Arc::new(server),
            config,
            tls,
        }
    }
}

impl Connections for HttpConnections {
    /// A banned source is refused before TLS or HTTP parsing on plain listeners (a canned
    /// blocked answer). On TLS listeners it completes the handshake and every request gets
    /// the blocked answer, so a user behind a banned NAT sees why — unless the operator
    /// chose to close such connections at accept.
    fn on_banned(&self) -> OnBanned {
        match &self.tls {
            None => OnBanned::Refuse,
            Some(_) if self.edge.gateway.load().config.protection.close_banned_tls => OnBanned::Close,
            Some(_) => OnBanned::Serve,
        }
    }

    fn refuse(&self, tcp: TcpStream, status: u16) -> impl Future<Output = ()> + Send + 'static {
        refuse_banned(tcp, status)
    }

    fn serve(&self, tcp: TcpStream, client: SocketAddr, drain: Drain) -> impl Future<Output = ()> + Send + 'static {
        let conn = Arc::new(Connection {
            client,
            listener: self.name.clone(),
            tls: self.tls.is_some(),
            redirect_port: self.config.redirect_to.as_ref().map(|r| r.port),
            paths: self.config.paths,
            upgrade_gate: Arc::default(),
            cancels: Arc::new(super::cancels::CancelBudget::for_source(
                self.edge.cancels.clone(),
                crate::protect::source_of(client.ip(), self.edge.gateway.load().config.protection.ipv6_prefix),
            )),
        });
        let task = ConnectionTask { edge: self.edge.clone(), conn, builders: self.builders.clone(), server: self.server.clone(), drain };
        let acceptor = self.tls.as_ref().map(|t| t.load_full());
        task.run(tcp, acceptor)
    }
}

/// Answers a fresh plain connection from a banned source with the blocked status and closes
/// it, without TLS or the HTTP stack: the request head is read (so the client is not reset
/// before it can read the answer) but never parsed. Bounded in time and bytes.
async fn refuse_banned(mut tcp: TcpStream, status: u16) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let reason = http::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("Blocked");
    let answer =
        format!("HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain\r\ncontent-length: 8\r\nconnection: close\r\n\r\nblocked\n");
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let mut head = Vec::with_capacity(1024);
        let mut chunk = [0u8; 1024];
        while head.len() < 8192 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&chunk[..n]),
            }
        }
        let _ = tcp.write_all(answer.as_bytes()).await;
        let _ = tcp.shutdown().await;
    })
    .await;
}

/// Runs a served connection until it ends, or until the drain: then it finishes its current
/// requests (each hyper connection type has its own `graceful_shutdown`). A client over its
/// HTTP/2 cancel budget gets a GOAWAY, and the connection ends within a second.
macro_rules! drive {
    ($task:expr, $connection:expr) => {{
        let connection = $connection;
        tokio::pin!(connection);
        let mut drain = $task.drain.clone();
        tokio::select! {
            _ = connection.as_mut() => {}
            () = drain.signalled() => {
                connection.as_mut().graceful_shutdown();
                let _ = connection.await;
            }
            () = $task.conn.cancels.exceeded() => {
                $task.over_cancel_budget();
                connection.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(CANCEL_CLOSE_WITHIN, connection).await;
            }
        }
    }};
}

/// How long a connection over its cancel budget may take to finish after its GOAWAY.
const CANCEL_CLOSE_WITHIN: Duration = Duration::from_secs(1);

/// A broken chunk the framing guard met: counted against the peer at once (also when the
/// handler answers without reading the body: a 401, a redirect), unless the peer is a trusted
/// proxy — then whoever reads the body counts it against the client it forwards for (whose
/// address is in the request's `X-Forwarded-For`). Whether it was counted.
fn count_broken_chunk(edge: &Edge, conn: &Connection) -> bool {
    let peer = conn.client.ip().to_canonical();
    if crate::protect::in_any_network(peer, &edge.gateway.load().config.protection.trusted_proxies) {
        return false;
    }
    let runtime = &edge.runtime;
    runtime.error_log.warn(&format!("{peer} :: request body refused: invalid chunked framing"));
    let line = crate::protect::RequestLine { method: "-", path: "-", protocol: "HTTP/1.1", host: "-" };
    runtime.shield.record_detached(peer, crate::config::Category::HttpProtocolViolation, line);
    true
}

struct ConnectionTask {
    edge: Arc<Edge>,
    conn: Arc<Connection>,
    builders: Arc<Builders>,
    server: Arc<ServerConfig>,
    drain: Drain,
}

impl ConnectionTask {
    /// Says why the connection closes, and counts it against its source.
    fn over_cancel_budget(&self) {
        let (cancelled, opened) = self.conn.cancels.counts();
        let runtime = &self.edge.runtime;
        runtime.error_log.warn(&format!(
            "{} :: HTTP/2 connection closed: its client cancelled {cancelled} of {opened} streams before their answer (rapid reset)",
            self.conn.client.ip()
        ));
        let line = crate::protect::RequestLine { method: "-", path: "-", protocol: "HTTP/2.0", host: "-" };
        runtime.shield.record_detached(self.conn.client.ip(), crate::config::Category::HttpProtocolViolation, line);
    }

    async fn run(self, tcp: TcpStream, acceptor: Option<Arc<TlsAcceptor>>) {
        match acceptor {
            None => self.serve_http(tcp, Protocols::Detect).await,
            Some(acceptor) => {
                let handshake = tokio::time::timeout(self.server.header_read_timeout, acceptor.accept(tcp)).await;
                let Ok(Ok(stream)) = handshake else { return };
                let protocols = match stream.get_ref().1.alpn_protocol() {
                    Some(b"h2") => Protocols::Http2,
                    _ => Protocols::Http1,
                };
                self.serve_http(stream, protocols).await;
            }
        }
    }

    async fn serve_http<S>(self, stream: S, protocols: Protocols)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let io = IdleTimeout::new(stream, self.server.idle_timeout);
        match protocols {
            Protocols::Http2 => {
                let connection = self.builders.http2.serve_connection(TokioIo::new(io), self.service());
                drive!(self, connection)
            }
            Protocols::Http1 | Protocols::Detect => {
                let (edge, runtime) = (self.edge.clone(), self.edge.runtime.clone());
                let conn = self.conn.clone();
                let hook = Box::new(move |violation: crate::net::h1_guard::Violation, request: crate::net::h1_guard::RefusedRequest| {
                    if violation == crate::net::h1_guard::Violation::BrokenChunk {
                        return count_broken_chunk(&edge, &conn);
                    }
                    let line = crate::protect::RequestLine {
                        method: &request.method,
                        path: &request.path,
                        protocol: "HTTP/1.1",
                        host: &request.host,
                    };
                    // Every head the guard refuses or hyper will refuse is a protocol violation.
                    runtime.shield.record_detached(conn.client.ip(), crate::config::Category::HttpProtocolViolation, line);
                    if !violation.is_framing() {
                        return true;
                    }
                    runtime.metrics.framing_refused(&conn.listener);
                    runtime.error_log.warn(&format!(
                        "{} :: request refused: {}, request: \"{} {}\", host: \"{}\"",
                        conn.client.ip(),
                        violation.reason(),
                        crate::telemetry::logging::escaped(&request.method),
                        crate::telemetry::logging::escaped(&request.path).max(crate::telemetry::access_log::MAX_LOGGED_PATH),
                        crate::telemetry::logging::escaped(&request.host)
                    ));
                    runtime.access_log.write(&AccessEntry {
                        client: conn.client.ip().to_canonical(),
                        host: &request.host,
                        method: &request.method,
                        path: &request.path,
                        protocol: "HTTP/1.1",
                        status: 400,
                        bytes: 0,
                        upstream: None,
                        service: None,
                        duration: Duration::ZERO,
                    });
                    true
                });
                let guarded =
                    GuardedIo::new(io, self.server.max_header_bytes, self.server.max_headers, hook, self.conn.upgrade_gate.clone());
                if matches!(protocols, Protocols::Detect) {
                    let connection = self.builders.detect.serve_connection_with_upgrades(TokioIo::new(guarded), self.service());
                    drive!(self, connection)
                } else {
                    let connection = self.builders.http1.serve_connection(TokioIo::new(guarded), self.service()).with_upgrades();
                    drive!(self, connection)
                }
            }
        }
    }

    fn service(
        &self,
    ) -> impl hyper::service::Service<
        http::Request<hyper::body::Incoming>,
        Response = http::Response<super::tracked::TrackedBody>,
        Error = std::convert::Infallible,
        Future = impl Future<Output = Result<http::Response<super::tracked::TrackedBody>, std::convert::Infallible>> + Send + 'static,
    > + Clone
    + Send
    + 'static {
        let edge = self.edge.clone();
        let conn = self.conn.clone();
        service_fn(move |request| pipeline::handle(edge.clone(), conn.clone(), request))
    }
}
