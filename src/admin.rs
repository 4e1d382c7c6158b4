//! The admin API: its own listener (loopback plain HTTP by default; TLS required elsewhere),
//! bearer-token authentication, JSON, and Prometheus metrics.
//!
//! Endpoints:
//! - `GET  /health`          — no token (load balancers poll it): `200 ok`.
//! - `GET  /metrics`         — Prometheus text exposition (token).
//! - `GET  /api/v1/status`   — JSON snapshot: identity, uptime, listeners, services, servers (token).
//! - `POST /api/v1/reload`   — re-read the configuration file; `400` with every error when it
//!   is invalid, and the running configuration stays (token).
//! - `DELETE /api/v1/tokens?user=NAME` — revoke every edge-issued token of a user (token).
//! - `GET /api/v1/blocked` — bans in force; `POST /api/v1/blocked?ip=IP&minutes=N` — ban by
//!   hand; `DELETE /api/v1/blocked?ip=IP` — lift one (token).
//! - `GET|POST|DELETE /api/v1/exemptions` — list; add `?cidr=NET/LEN&categories=a,b`; delete
//!   `?cidr=NET/LEN` (token).
//! - `GET|POST /api/v1/maintenance` — state of each service; `?enabled=on|off` (token).
//! - `GET|POST|DELETE /api/v1/weights` — list; `?server=HOST:PORT&weight=N`; remove the
//!   override `?server=HOST:PORT` (token).
//! - `GET|POST|DELETE /api/v1/cert` — details of the certificate in use; install a PEM bundle
//!   (body); back to configured/self-signed. `GET|PUT /api/v1/cert/fields` (CSR subject),
//!   `GET|POST /api/v1/cert/csr`, `POST /api/v1/cert/self-signed` (token).
//! - `POST /api/v1/refresh` — re-fetch keys and user lists, rebuild routing (token).
//! - `/api/v1/federation/{domains,watch,allow,block}` — the SIP federation's views and
//!   run-time lists (token; see [`federation`]).
//!
//! - `GET /openapi.json` — the OpenAPI 3 description of all of this (no token).
//! - `/` — the status page (token sign-in, cookie session; see [`page`]).
//!
//! `/health` answers `503 maintenance` while the peer is in maintenance, so load balancers
//! stop sending new users.
//!
//! Threat model: anyone who can reach the admin port. The token is compared in constant
//! time, never logged, and a wrong or missing token gets the same `401`.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::config::{AdminToken, Category, ListenerConfig};
use crate::net::idle::IdleTimeout;
use crate::runtime::Runtime;
use crate::runtime::accept::{Connections, OnBanned};
use crate::runtime::services::Drain;
use crate::telemetry::access_log::MAX_LOGGED_PATH;
use crate::telemetry::logging::escaped;

pub mod federation;
pub mod operate;
pub mod page;
pub mod status;
pub use status::Status;

/// Whether the request's connection speaks TLS (a request extension: page cookies get
/// `Secure` on it).
#[derive(Debug, Clone, Copy)]
pub struct OverTls(pub bool);

/// A reload request: the reply carries every configuration error, if any.
pub type ReloadRequest = oneshot::Sender<Result<(), Vec<String>>>;

/// What the admin API can see and do.
pub struct AdminState {
    pub runtime: Arc<Runtime>,
    pub token: ArcSwap<AdminToken>,
    pub reload: mpsc::Sender<ReloadRequest>,
    pub listeners: Vec<(ListenerConfig, SocketAddr)>,
    pub started_at: SystemTime,
    pub started: Instant,
    /// The HTTPS listeners' acceptor (a new certificate is swapped in here).
    pub tls: Option<Arc<ArcSwap<TlsAcceptor>>>,
    /// Signed-in status-page sessions.
    pub page_sessions: page::PageSessions,
    /// When the last reload was refused and why (cleared by a good reload).
    pub last_reload_errors: std::sync::Mutex<Option<(String, Vec<String>)>>,
}

type AdminBody = Full<Bytes>;

/// Most concurrent admin connections (the admin API serves operators and monitoring, not
/// the public: a small cap keeps a flood of it from taking memory or file descriptors).
pub const MAX_ADMIN_CONNECTIONS: usize = 64;

/// The admin listener's connections, served by the shared accept loop.
pub struct AdminConnections {
    state: Arc<AdminState>,
    tls: Option<Arc<ArcSwap<TlsAcceptor>>>,
    /// This listener speaks TLS (read as each connection is accepted: a reload may switch it
    /// in place).
    speaks_tls: Arc<AtomicBool>,
    /// Bound on the TLS handshake and on reading each request head.
    header_read_timeout: Duration,
    /// A connection with no byte either way for this long is closed (`server.idle_timeout`).
    idle_timeout: Duration,
}

impl AdminConnections {
    /// The connections of an admin listener; `tls` (the edge's acceptor) is used while
    /// `speaks_tls` is set.
    pub fn new(
        state: Arc<AdminState>,
        tls: Option<Arc<ArcSwap<TlsAcceptor>>>,
        speaks_tls: Arc<AtomicBool>,
        header_read_timeout: Duration,
        idle_timeout: Duration,
    ) -> AdminConnections {
        AdminConnections { state, tls, speaks_tls, header_read_timeout, idle_timeout }
    }
}

impl Connections for AdminConnections {
    /// Banned sources reach the API, where every request is refused and counted alike.
    fn on_banned(&self) -> OnBanned {
        OnBanned::Unchecked
    }

    /// The operator on the box (the CLI, a local browser: `127.0.0.1` or `::1`) always gets
    /// in: a flood from elsewhere fills [`MAX_ADMIN_CONNECTIONS`] without locking them out.
    fn beside_the_cap(&self, client: std::net::IpAddr) -> bool {
        let client = client.to_canonical();
        client == std::net::Ipv4Addr::LOCALHOST || client == std::net::Ipv6Addr::LOCALHOST
    }

    fn serve(&self, tcp: TcpStream, client: SocketAddr, mut drain: Drain) -> impl Future<Output = ()> + Send + 'static {
        let state = self.state.clone();
        let acceptor = self.tls.as_ref().filter(|_| self.speaks_tls.load(Ordering::SeqCst)).map(|t| t.load_full());
        let over_tls = OverTls(acceptor.is_some());
        let timeout = self.header_read_timeout;
        let idle_timeout = self.idle_timeout;
        async move {
            // Whether a request arrived: until one does, the connection has `timeout` (hyper's
            // header-read timeout starts only once HTTP/1 was told from HTTP/2, and HTTP/2 has
            // none), so a client that sends nothing, part of the HTTP/2 preface, or the preface
            // and no request cannot hold one of the few admin slots.
            let requested = Arc::new(AtomicBool::new(false));
            let service = {
                let requested = requested.clone();
                service_fn(move |mut request: Request<Incoming>| {
                    requested.store(true, Ordering::Relaxed);
                    request.extensions_mut().insert(over_tls);
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(respond(&state, client, request).await) }
                })
            };
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder.http1().timer(TokioTimer::new()).header_read_timeout(timeout);
            builder.http2().timer(TokioTimer::new());
            let io: Box<dyn Io> = match acceptor {
                None => Box::new(tcp),
                Some(acceptor) => match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => Box::new(stream),
                    _ => return,
                },
            };
            let connection = builder.serve_connection(TokioIo::new(IdleTimeout::new(io, idle_timeout)), service);
            tokio::pin!(connection);
            let first_request = tokio::time::sleep(timeout);
            tokio::pin!(first_request);
            let mut waiting_for_first = true;
            loop {
                tokio::select! {
                    _ = connection.as_mut() => return,
                    () = drain.signalled() => {
                        connection.as_mut().graceful_shutdown();
                        let _ = connection.await;
                        return;
                    }
                    () = first_request.as_mut(), if waiting_for_first => {
                        if !requested.load(Ordering::Relaxed) {
                            return;
                        }
                        waiting_for_first = false;
                    }
                }
            }
        }
    }
}

/// A client stream, plain or TLS.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<AdminBody> {
    let body = serde_json::to_vec_pretty(value).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn text(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<AdminBody> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

fn authorized(state: &AdminState, request: &Request<Incoming>) -> bool {
    let Some(value) = request.headers().get(header::AUTHORIZATION) else { return false };
    let value = value.as_bytes();
    let Some(token) = value.strip_prefix(b"Bearer ").or_else(|| value.strip_prefix(b"bearer ")) else { return false };
    state.token.load().matches(token.trim_ascii())
}

/// Answers one admin request.
pub async fn respond(state: &AdminState, client: SocketAddr, request: Request<Incoming>) -> Response<AdminBody> {
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or("").to_string();
    let method = request.method().clone();
    if let ("/health" | "/openapi.json", false) = (path.as_str(), method == Method::GET) {
        return method_not_allowed("GET");
    }
    if method == Method::GET && path == "/openapi.json" {
        return text(StatusCode::OK, "application/json", OPENAPI);
    }
    if method == Method::GET && path == "/health" {
        return match state.runtime.operate.in_maintenance() {
            false => text(StatusCode::OK, "text/plain; charset=utf-8", "ok\n"),
            true => text(StatusCode::SERVICE_UNAVAILABLE, "text/plain; charset=utf-8", "maintenance\n"),
        };
    }
    // A banned source is refused here too, unless it is on loopback (the local operator).
    if !client.ip().to_canonical().is_loopback()
        && let Some(status) = state.runtime.shield.check(client.ip())
    {
        return json(StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN), &ErrorBody { error: "blocked" });
    }
    if page::is_page(&path) {
        return page::respond(state, client, request).await;
    }
    if !authorized(state, &request) {
        state.runtime.error_log.warn(&format!(
            "{} :: admin API authentication failed, request: \"{} {}\"",
            client.ip(),
            escaped(method.as_str()),
            escaped(&path).max(MAX_LOGGED_PATH)
        ));
        let line = crate::protect::RequestLine { method: method.as_str(), path: &path, protocol: "HTTP/1.1", host: "admin" };
        state.runtime.shield.record(client.ip(), Category::AdminAuthFailure, line).await;
        let mut response = json(StatusCode::UNAUTHORIZED, &ErrorBody { error: "missing or wrong bearer token" });
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"portcullis-admin\""));
        return response;
    }
    match (method, path.as_str()) {
        (Method::GET, "/metrics") => {
            for service in state.runtime.control.services() {
                state.runtime.metrics.sessions(&service.name, service.sessions, service.sessions_peak);
            }
            if let Some((current, peak)) = state.runtime.control.registrations() {
                state.runtime.metrics.sip_registrations(current, peak);
            }
            if let Some(shipping) = &state.runtime.shipping {
                state.runtime.metrics.shipping(&shipping.status());
            }
            if let Some(firewall) = state.runtime.firewall.get() {
                let view = firewall.view().await;
                state.runtime.metrics.firewall(view.applied, &view.counters, view.conntrack.map(|c| (c.entries, c.max)));
            }
            text(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", state.runtime.metrics.encode())
        }
        (Method::GET, "/api/v1/status") => json(StatusCode::OK, &status::status_with_firewall(state).await),
        (Method::GET, "/api/v1/maintenance") => operate::get_maintenance(state),
        (Method::POST, "/api/v1/maintenance") => operate::set_maintenance(state, &query).await,
        (Method::GET, "/api/v1/weights") => operate::get_weights(state),
        (Method::POST, "/api/v1/weights") => operate::set_weight(state, &query, false).await,
        (Method::DELETE, "/api/v1/weights") => operate::set_weight(state, &query, true).await,
        (Method::POST, "/api/v1/refresh") => operate::refresh(state).await,
        (Method::GET, "/api/v1/cert") => operate::get_cert(state),
        (Method::POST, "/api/v1/cert") => match read_body(request, crate::operate::cert::MAX_BUNDLE_BYTES).await {
            Some(body) => operate::add_cert(state, &body).await,
            None => json(StatusCode::PAYLOAD_TOO_LARGE, &ErrorBody { error: "send the PEM bundle (at most 256 KiB) as the body" }),
        },
        (Method::DELETE, "/api/v1/cert") => operate::del_cert(state),
        (Method::GET, "/api/v1/cert/fields") => operate::get_fields(state).await,
        (Method::PUT, "/api/v1/cert/fields") => match read_body(request, 16 * 1024).await {
            Some(body) => operate::put_fields(state, &body).await,
            None => json(StatusCode::PAYLOAD_TOO_LARGE, &ErrorBody { error: "the fields are at most 16 KiB of JSON" }),
        },
        (Method::GET, "/api/v1/cert/csr") => operate::print_csr(state),
        (Method::POST, "/api/v1/cert/csr") => operate::gen_csr(state).await,
        (Method::POST, "/api/v1/cert/self-signed") => operate::gen_self_signed(state),
        (Method::POST, "/api/v1/reload") => reload(state).await,
        (Method::DELETE, "/api/v1/tokens") => revoke_tokens(state, &query).await,
        (Method::GET, "/api/v1/blocked") => json(StatusCode::OK, &state.runtime.shield.list()),
        (Method::DELETE, "/api/v1/blocked") => unblock(state, &query).await,
        (Method::POST, "/api/v1/blocked") => block(state, &query),
        (Method::GET, "/api/v1/firewall") => firewall(state, None).await,
        (Method::POST, "/api/v1/firewall/apply") => firewall(state, Some(true)).await,
        (Method::POST, "/api/v1/firewall/remove") => firewall(state, Some(false)).await,
        (Method::GET, "/api/v1/exemptions") => json(StatusCode::OK, &exemptions(state)),
        (Method::POST, "/api/v1/exemptions") => add_exemption(state, &query).await,
        (Method::DELETE, "/api/v1/exemptions") => del_exemption(state, &query).await,
        (method, path) if path.starts_with("/api/v1/federation/") => match federation::respond(state, &method, path, &query).await {
            Some(response) => response,
            None => match federation::allowed_methods(path) {
                Some(allow) => method_not_allowed(allow),
                None => json(StatusCode::NOT_FOUND, &ErrorBody { error: "no such endpoint" }),
            },
        },
        (_, path) => match allowed_methods(path) {
            Some(allow) => method_not_allowed(allow),
            None => json(StatusCode::NOT_FOUND, &ErrorBody { error: "no such endpoint" }),
        },
    }
}

/// The OpenAPI description of this API (`GET /openapi.json`, no token).
pub const OPENAPI: &str = include_str!("admin/openapi.json");

/// The methods a known path answers (for `405` + `Allow`).
fn allowed_methods(path: &str) -> Option<&'static str> {
    Some(match path {
        "/health" | "/openapi.json" | "/metrics" | "/api/v1/status" => "GET",
        "/api/v1/reload" | "/api/v1/refresh" | "/api/v1/cert/self-signed" | "/api/v1/firewall/apply" | "/api/v1/firewall/remove" => "POST",
        "/api/v1/firewall" => "GET",
        "/api/v1/tokens" => "DELETE",
        "/api/v1/blocked" => "GET, POST, DELETE",
        "/api/v1/maintenance" | "/api/v1/cert/csr" => "GET, POST",
        "/api/v1/cert/fields" => "GET, PUT",
        "/api/v1/exemptions" | "/api/v1/weights" | "/api/v1/cert" => "GET, POST, DELETE",
        _ => return None,
    })
}

fn method_not_allowed(allow: &'static str) -> Response<AdminBody> {
    let mut response = json(StatusCode::METHOD_NOT_ALLOWED, &ErrorBody { error: "method not allowed" });
    response.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

/// The request body, or `None` when it is larger than `limit` or broken.
async fn read_body(request: Request<Incoming>, limit: usize) -> Option<Bytes> {
    use http_body_util::BodyExt;
    http_body_util::Limited::new(request.into_body(), limit).collect().await.ok().map(|b| b.to_bytes())
}

/// The value of `name` in a query string (percent-decoded).
fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == name).then(|| crate::net::percent::decode(&value.replace('+', " "))).flatten()
    })
}

#[derive(Serialize)]
struct ExemptionBody {
    cidr: String,
    categories: Vec<Category>,
    source: &'static str,
}

fn exemptions(state: &AdminState) -> Vec<ExemptionBody> {
    state
        .runtime
        .shield
        .exemptions()
        .into_iter()
        .map(|(e, source)| ExemptionBody { cidr: format!("{}/{}", e.address, e.prefix_length), categories: e.categories, source })
        .collect()
}

/// `NET/LEN` (or a bare address) from the query.
fn cidr_param(query: &str) -> Option<(std::net::IpAddr, u8)> {
    let text = query_param(query, "cidr")?;
    let (address, prefix) = text.split_once('/').map_or((text.as_str(), None), |(a, p)| (a, Some(p)));
    let address: std::net::IpAddr = address.parse().ok()?;
    let max = if address.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => max,
        Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max)?,
    };
    Some((address, prefix))
}

async fn add_exemption(state: &AdminState, query: &str) -> Response<AdminBody> {
    let Some((address, prefix_length)) = cidr_param(query) else {
        return json(StatusCode::BAD_REQUEST, &ErrorBody { error: "pass ?cidr=NET/LEN&categories=a,b" });
    };
    let categories: Result<Vec<Category>, _> =
        query_param(query, "categories").unwrap_or_default().split(',').filter(|c| !c.is_empty()).map(str::parse).collect();
    let Some(categories) = categories.ok().filter(|c| !c.is_empty()) else {
        return json(
            StatusCode::BAD_REQUEST,
            &ErrorBody { error: "categories must be a comma list of known categories (see docs/shield.md)" },
        );
    };
    match state.runtime.shield.add_exemption(crate::config::Exemption { address, prefix_length, categories }).await {
        Ok(()) => json(StatusCode::OK, &exemptions(state)),
        Err(_) => json(StatusCode::SERVICE_UNAVAILABLE, &ErrorBody { error: "state store unavailable" }),
    }
}

async fn del_exemption(state: &AdminState, query: &str) -> Response<AdminBody> {
    let Some((address, prefix_length)) = cidr_param(query) else {
        return json(StatusCode::BAD_REQUEST, &ErrorBody { error: "pass ?cidr=NET/LEN" });
    };
    match state.runtime.shield.del_exemption(address, prefix_length).await {
        Ok(true) => json(StatusCode::OK, &exemptions(state)),
        Ok(false) => {
            json(StatusCode::NOT_FOUND, &ErrorBody { error: "no runtime exemption for that network (file exemptions change by reload)" })
        }
        Err(_) => json(StatusCode::SERVICE_UNAVAILABLE, &ErrorBody { error: "state store unavailable" }),
    }
}

#[derive(Serialize)]
struct UnblockedBody {
    ip: String,
    unblocked: bool,
}

/// `POST /api/v1/blocked?ip=IP&minutes=N` (default 30): a manual ban.
fn block(state: &AdminState, query: &str) -> Response<AdminBody> {
    let Some(ip) = query_param(query, "ip").and_then(|ip| ip.parse::<std::net::IpAddr>().ok()) else {
        return json(StatusCode::BAD_REQUEST, &ErrorBody { error: "pass ?ip=ADDRESS[&minutes=N]" });
    };
    let minutes = match query_param(query, "minutes") {
        None => 30,
        Some(m) => match m.parse::<u64>() {
            Ok(m) if m >= 1 && m * 60 <= crate::protect::MAX_MANUAL_BAN.as_secs() => m,
            _ => return json(StatusCode::BAD_REQUEST, &ErrorBody { error: "minutes must be from 1 to 525600" }),
        },
    };
    state.runtime.shield.ban_manually(ip, Duration::from_secs(minutes * 60));
    json(StatusCode::OK, &state.runtime.shield.list())
}

async fn unblock(state: &AdminState, query: &str) -> Response<AdminBody> {
    let Some(ip) = query_param(query, "ip").and_then(|ip| ip.parse::<std::net::IpAddr>().ok()) else {
        return json(StatusCode::BAD_REQUEST, &ErrorBody { error: "pass ?ip=ADDRESS" });
    };
    let unblocked = state.runtime.shield.unban(ip).await;
    json(if unblocked { StatusCode::OK } else { StatusCode::NOT_FOUND }, &UnblockedBody { ip: ip.to_string(), unblocked })
}

#[derive(Serialize)]
struct RevokedBody {
    user: String,
    revoked: usize,
}

async fn revoke_tokens(state: &AdminState, query: &str) -> Response<AdminBody> {
    let Some(user) = query_param(query, "user").filter(|u| !u.is_empty() && u.len() <= 256) else {
        return json(StatusCode::BAD_REQUEST, &ErrorBody { error: "pass ?user=NAME" });
    };
    let Some(outcome) = state.runtime.control.revoke_tokens(&user).await else {
        return json(StatusCode::NOT_FOUND, &ErrorBody { error: "edge tokens are not enabled (no [auth.basic] or [auth.jwt])" });
    };
    match outcome {
        Ok(revoked) => json(StatusCode::OK, &RevokedBody { user, revoked }),
        Err(error) => {
            state.runtime.error_log.error(&format!("token revocation failed: {error}"));
            json(StatusCode::SERVICE_UNAVAILABLE, &ErrorBody { error: "state store unavailable" })
        }
    }
}

#[derive(Serialize)]
struct ReloadBody {
    ok: bool,
    errors: Vec<String>,
}

async fn reload(state: &AdminState) -> Response<AdminBody> {
    let (reply, answer) = oneshot::channel();
    if state.reload.send(reply).await.is_err() {
        return json(StatusCode::SERVICE_UNAVAILABLE, &ErrorBody { error: "reload is not available" });
    }
    match answer.await {
        Ok(Ok(())) => json(StatusCode::OK, &ReloadBody { ok: true, errors: Vec::new() }),
        Ok(Err(errors)) => json(StatusCode::BAD_REQUEST, &ReloadBody { ok: false, errors }),
        Err(_) => json(StatusCode::INTERNAL_SERVER_ERROR, &ErrorBody { error: "reload task stopped" }),
    }
}

/// `GET /api/v1/firewall` (`apply`: `None`), `POST …/apply` (`Some(true)`), `POST …/remove`
/// (`Some(false)`): the firewall's view after the action. 409 when `[firewall]` is off or
/// was not applied at start, 500 with nft's complaint when the action failed.
async fn firewall(state: &AdminState, apply: Option<bool>) -> Response<AdminBody> {
    let Some(firewall) = state.runtime.firewall.get() else {
        return json(
            StatusCode::CONFLICT,
            &ErrorBody { error: "the firewall is not running: [firewall] is off or was not applied at start (see error.log)" },
        );
    };
    let outcome = match apply {
        None => Ok(()),
        Some(true) => firewall.apply().await,
        Some(false) => firewall.remove().await,
    };
    match outcome {
        Ok(()) => json(StatusCode::OK, &firewall.view().await),
        Err(error) => json(StatusCode::INTERNAL_SERVER_ERROR, &ErrorBody { error: &error }),
    }
}
