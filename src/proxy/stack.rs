//! The HTTP request pipeline: the **only** place that orders what happens to a request.
//!
//! Outer to inner (each step says why it sits where it does):
//! 1. **record** — start the clock and capture host/method/path first, so every outcome,
//!    including early refusals, gets an access-log line and a metric.
//! 2. **redirect** — a plain listener with `redirect_to` answers 308 before anything else:
//!    nothing on it is served in clear text.
//! 3. **sanity** — HTTP/1.1 without `Host` is 400 (RFC 9112 §3.2). Framing attacks
//!    (CL+TE, duplicate CL) never get here: `net::h1_guard` refuses them below hyper.
//! 4. *(maintenance 503, ban 418, rate limit 429 — the operate and shield layers slot in
//!    here, before routing, so a banned or drained client costs no routing or auth work.)*
//! 5. **route** — host + longest prefix → service, else 404 at the edge.
//! 6. **authenticate** — every service with `auth != none` requires credentials except on
//!    its `public_paths` (`auth::Authenticator`: 401, 429, or 503 when the validator is
//!    down); nothing unauthenticated reaches an upstream. Failures go to `AuthEvents`.
//! 7. **backend** — a static directory, or the upstream pool: forwarding headers, replayable
//!    body, failover, WebSocket tunnel.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::{HeaderValue, Request, Response, StatusCode, Version, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use super::body::{Completion, ProxyBody, TrackedBody};
use super::edge_cache::{self, CorsCache, Lookup, PublicCache};
use super::forward::{self, Origin};
use super::respond::{ProxyError, text_response};
use super::route::Router;
use super::static_files;
use super::upstream::{Lease, Outgoing, OutgoingBody, Pool, PoolError};
use crate::auth::sessions::SessionTracker;
use crate::auth::websocket::{self, ProtocolCredential};
use crate::auth::{AuthEvents, Authenticator, TokenAnswer, Verdict};
use crate::cluster::StateStore;
use crate::config::{AuthMode, Config, PoolConfig, ServiceConfig, ServiceKind};
use crate::operate::Operate;
use crate::protect::{RequestLine, Shield};
use crate::telemetry::access_log::{AccessEntry, AccessLog};
use crate::telemetry::logging::ErrorLog;
use crate::telemetry::metrics::Metrics;

/// Request bodies up to this size are buffered so a connect failure can be retried on the
/// next server; larger bodies are streamed with a single attempt.
pub const MAX_REPLAY_BODY: u64 = 64 * 1024;

/// Label used for requests that matched no service.
const NO_SERVICE: &str = "-";
/// Label used for the edge's own token endpoints.
const TOKEN_SERVICE: &str = "portcullis-token";
/// Largest token-refresh request body read.
const MAX_TOKEN_REQUEST_BODY: usize = 4096;

/// One routed service and what stands behind it.
#[derive(Debug)]
pub struct Service {
    pub name: Arc<str>,
    pub config: ServiceConfig,
    pub backend: Backend,
    /// Responses of `public_paths`, served without reaching the upstream again.
    pub public_cache: PublicCache,
    /// Successful CORS preflight answers, per origin.
    pub cors: CorsCache,
    /// Current and peak authenticated sessions (kept across reloads).
    pub sessions: Arc<SessionTracker>,
}

/// What answers a service's requests.
#[derive(Debug)]
pub enum Backend {
    Pool(Arc<Pool>),
    Static(PathBuf),
}

/// One generation of routing state, swapped atomically on reload.
#[derive(Debug)]
pub struct Gateway {
    pub config: Arc<Config>,
    router: Router,
    pub services: Vec<Service>,
    pub auth: Arc<Authenticator>,
    /// Some service allows upgrades by recently authenticated source IP: remember them.
    remember_ips: bool,
}

/// What a gateway generation is built from besides its configuration.
pub struct GatewayDeps<'a> {
    pub metrics: &'a Arc<Metrics>,
    pub store: &'a Arc<dyn StateStore>,
    pub events: &'a Arc<dyn AuthEvents>,
    /// The generation being replaced: its authenticator (and caches) is kept when the
    /// auth settings did not change.
    pub previous: Option<&'a Gateway>,
    /// Operator weight overrides (`host:port` → weight) laid over the configured weights.
    pub weights: &'a std::collections::BTreeMap<String, u32>,
    /// True while this peer is the cluster's primary.
    pub primary: &'a Arc<std::sync::atomic::AtomicBool>,
}

/// `pool` with the operator's weight overrides applied.
fn with_weights(pool: &PoolConfig, weights: &std::collections::BTreeMap<String, u32>) -> PoolConfig {
    let mut pool = pool.clone();
    for server in &mut pool.servers {
        if let Some(&weight) = weights.get(&server.address) {
            server.weight = weight;
        }
    }
    pool
}

impl Gateway {
    /// Builds routing, upstream pools and authentication for `config`.
    pub fn build(config: Arc<Config>, deps: GatewayDeps<'_>) -> Result<Gateway, PoolError> {
        let metrics = deps.metrics;
        let mut services = Vec::with_capacity(config.services.len());
        for s in &config.services {
            let name: Arc<str> = Arc::from(s.name.as_str());
            let backend = match &s.kind {
                ServiceKind::Proxy(pool) => Backend::Pool(Pool::new(name.clone(), &with_weights(pool, deps.weights), metrics.clone())?),
                ServiceKind::Static { dir } => Backend::Static(dir.clone()),
            };
            let sessions = deps
                .previous
                .and_then(|p| p.services.iter().find(|old| old.name == name))
                .map_or_else(|| Arc::new(SessionTracker::new(config.maintenance.session_idle)), |old| old.sessions.clone());
            sessions.set_window(config.maintenance.session_idle);
            services.push(Service {
                name,
                config: s.clone(),
                backend,
                public_cache: PublicCache::default(),
                cors: CorsCache::new(s.cors_cache),
                sessions,
            });
        }
        let router = Router::new(&config.routes, |name| services.iter().position(|s| &*s.name == name));
        let auth = match deps.previous {
            Some(previous) if previous.auth.settings() == &config.auth => previous.auth.clone(),
            _ => Authenticator::new(&config.auth, deps.store.clone(), deps.events.clone(), deps.primary.clone()),
        };
        let remember_ips = services.iter().any(|s| s.config.websocket_ip_window.is_some());
        Ok(Gateway { config, router, services, auth, remember_ips })
    }
}

/// Process-lifetime state shared by every connection.
pub struct Edge {
    pub gateway: ArcSwap<Gateway>,
    pub metrics: Arc<Metrics>,
    pub access_log: AccessLog,
    pub error_log: ErrorLog,
    pub store: Arc<dyn StateStore>,
    pub auth_events: Arc<dyn AuthEvents>,
    pub shield: Arc<Shield>,
    /// Maintenance, counts and weight overrides.
    pub operate: Arc<Operate>,
    no_service: Arc<str>,
    token_service: Arc<str>,
}

/// The process-lifetime parts of an [`Edge`].
pub struct EdgeParts {
    pub metrics: Arc<Metrics>,
    pub access_log: AccessLog,
    pub error_log: ErrorLog,
    pub store: Arc<dyn StateStore>,
    pub auth_events: Arc<dyn AuthEvents>,
    pub shield: Arc<Shield>,
    pub operate: Arc<Operate>,
}

impl Edge {
    /// A new edge serving `gateway`.
    pub fn new(gateway: Gateway, parts: EdgeParts) -> Edge {
        let EdgeParts { metrics, access_log, error_log, store, auth_events, shield, operate } = parts;
        Edge {
            gateway: ArcSwap::from_pointee(gateway),
            metrics,
            access_log,
            error_log,
            store,
            auth_events,
            shield,
            operate,
            no_service: Arc::from(NO_SERVICE),
            token_service: Arc::from(TOKEN_SERVICE),
        }
    }

    /// Rebuilds the generation from the running configuration (new weight overrides, a
    /// refresh) and swaps it in; requests in flight finish on the old one.
    pub fn rebuild_gateway(&self) -> Result<(), PoolError> {
        let gateway = self.build_gateway(self.gateway.load().config.clone())?;
        self.gateway.store(Arc::new(gateway));
        Ok(())
    }

    /// Builds the next generation from `config` (keeping caches where settings match).
    pub fn build_gateway(&self, config: Arc<Config>) -> Result<Gateway, PoolError> {
        let previous = self.gateway.load();
        Gateway::build(
            config,
            GatewayDeps {
                metrics: &self.metrics,
                store: &self.store,
                events: &self.auth_events,
                previous: Some(&previous),
                weights: &self.operate.weights(),
                primary: self.operate.primary_flag(),
            },
        )
    }
}

/// What the pipeline knows about the client connection.
#[derive(Debug)]
pub struct Connection {
    pub client: SocketAddr,
    pub listener: Arc<str>,
    pub tls: bool,
    /// Port of the HTTPS listener this plain listener redirects to.
    pub redirect_port: Option<u16>,
}

/// The access-log and metrics record of one request, completed when its body ends.
struct RequestRecord {
    edge: Arc<Edge>,
    start: Instant,
    /// The client: the TCP peer, or the `X-Forwarded-For` address a trusted proxy gave.
    client: IpAddr,
    host: String,
    method: http::Method,
    path: String,
    version: Version,
    status: u16,
    service: Option<Arc<str>>,
    upstream: Option<Arc<str>>,
    /// The request carried credentials (so a 401 is an authentication failure, not a
    /// first unauthenticated visit).
    credentials: bool,
    /// Its `Sec-WebSocket-Protocol` credential element was malformed.
    malformed_websocket_credential: bool,
}

impl Completion for RequestRecord {
    fn complete(&self, bytes: u64) {
        let elapsed = self.start.elapsed();
        let service = self.service.as_ref().unwrap_or(&self.edge.no_service);
        self.edge.metrics.request(service, self.status, elapsed);
        self.edge.access_log.write(&AccessEntry {
            client: self.client,
            host: &self.host,
            method: self.method.as_str(),
            path: &self.path,
            protocol: version_text(self.version),
            status: self.status,
            bytes,
            upstream: self.upstream.as_deref(),
            service: self.service.as_deref(),
            duration: elapsed,
        });
    }
}

fn version_text(version: Version) -> &'static str {
    match version {
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        _ => "HTTP/?",
    }
}

/// The client a request is from: the TCP peer, unless the peer is a trusted proxy — then the
/// right-most `X-Forwarded-For` address that is not itself a trusted proxy.
fn effective_client(peer: IpAddr, headers: &http::HeaderMap, trusted: &[(IpAddr, u8)]) -> IpAddr {
    let peer = peer.to_canonical();
    let is_trusted = |ip: IpAddr| trusted.iter().any(|(net, prefix)| crate::protect::in_network(ip, *net, *prefix));
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

/// An HTTP/1.1 WebSocket upgrade request.
fn is_websocket_upgrade<B>(request: &Request<B>) -> bool {
    request.version() == Version::HTTP_11 && forward::is_websocket_upgrade(request.headers())
}

/// The request's host: the URI authority (HTTP/2, absolute-form) or the `Host` field.
fn request_host<B>(request: &Request<B>) -> Option<&str> {
    request.uri().authority().map(|a| a.as_str()).or_else(|| request.headers().get(header::HOST).and_then(|h| h.to_str().ok()))
}

/// Handles one request (hyper service entry point).
pub async fn handle(edge: Arc<Edge>, conn: Arc<Connection>, request: Request<Incoming>) -> Result<Response<TrackedBody>, Infallible> {
    let start = Instant::now();
    let gateway = edge.gateway.load_full();
    let mut record = RequestRecord {
        edge: edge.clone(),
        start,
        client: effective_client(conn.client.ip(), request.headers(), &gateway.config.protection.trusted_proxies),
        host: request_host(&request).unwrap_or("").to_string(),
        method: request.method().clone(),
        path: request.uri().path().to_string(),
        version: request.version(),
        status: 0,
        service: None,
        upstream: None,
        credentials: false,
        malformed_websocket_credential: false,
    };
    match websocket::extract(request.headers()) {
        ProtocolCredential::Missing => record.credentials = request.headers().contains_key(header::AUTHORIZATION),
        ProtocolCredential::Malformed => {
            record.credentials = true;
            record.malformed_websocket_credential = true;
        }
        ProtocolCredential::Found { .. } => record.credentials = true,
    }
    let (response, lease) = match pipeline(&edge, &gateway, &conn, request, &mut record).await {
        Ok(answer) => answer,
        Err(error) => {
            if matches!(error, ProxyError::Unauthorized { .. }) && record.credentials {
                // The shield counts presented-and-refused credentials per source.
                let line = RequestLine {
                    method: record.method.as_str(),
                    path: &record.path,
                    protocol: version_text(record.version),
                    host: &record.host,
                };
                let category = if record.malformed_websocket_credential { "websocket-protocol-violation" } else { "http-auth-failure" };
                edge.shield.record(record.client, category, line).await;
            }
            (error.into_response(), None)
        }
    };
    record.status = response.status().as_u16();
    if matches!(record.status, 403 | 404) {
        // Probing for resources (off by default: behind NAT it causes false positives).
        let line =
            RequestLine { method: record.method.as_str(), path: &record.path, protocol: version_text(record.version), host: &record.host };
        edge.shield.record(record.client, "http-resource-access-failure", line).await;
    }
    let (parts, body) = response.into_parts();
    Ok(Response::from_parts(parts, TrackedBody::new(body, Arc::new(record), lease)))
}

type Answer = (Response<ProxyBody>, Option<Lease>);

async fn pipeline(
    edge: &Arc<Edge>,
    gateway: &Gateway,
    conn: &Connection,
    mut request: Request<Incoming>,
    record: &mut RequestRecord,
) -> Result<Answer, ProxyError> {
    if let Some(port) = conn.redirect_port {
        return Ok((redirect(&record.host, port, &request)?, None));
    }
    // Banned sources get the blocked answer before any other work (no auth, no upstream).
    if let Some(status) = edge.shield.check(record.client) {
        return Err(ProxyError::Blocked { status });
    }
    if request.version() == Version::HTTP_11 && !request.headers().contains_key(header::HOST) {
        return Err(ProxyError::BadRequest("missing Host header"));
    }
    let maintenance = edge.operate.in_maintenance().then(|| gateway.config.maintenance.retry_after.as_secs().max(1));
    if let Some(endpoint) = TokenEndpoint::of(request.uri().path()) {
        record.service = Some(edge.token_service.clone());
        // In maintenance no new login: a refresh continues an existing session.
        if let (Some(retry_after_secs), TokenEndpoint::Issue) = (maintenance, endpoint) {
            return Err(ProxyError::Maintenance { retry_after_secs });
        }
        return Ok((token_endpoint(gateway, record.client, request, endpoint).await?, None));
    }
    let service_index =
        gateway.router.find(Some(record.host.as_str()).filter(|h| !h.is_empty()), request.uri().path()).ok_or(ProxyError::NoRoute)?;
    let service = &gateway.services[service_index];
    record.service = Some(service.name.clone());
    if let Some(retry_after_secs) = maintenance
        && is_websocket_upgrade(&request)
    {
        // Established WebSockets keep running; new ones go to another peer.
        return Err(ProxyError::Maintenance { retry_after_secs });
    }
    if let Backend::Pool(pool) = &service.backend {
        request = match edge_cached(edge, pool, service, conn, request, record).await? {
            CacheStep::Answered(answer) => return Ok(answer),
            CacheStep::Continue(request) => request,
        };
    }
    authenticate(gateway, service, &edge.operate, maintenance, record.client, &mut request).await?;
    match &service.backend {
        Backend::Static(dir) => Ok((static_files::serve(dir, request.method(), request.uri().path()).await?, None)),
        Backend::Pool(pool) => forward_to_pool(edge, pool, service, conn, request, record).await,
    }
}

/// The edge caches in front of authentication (`proxy::edge_cache`):
/// - a CORS preflight is answered from the cache, or forwarded once per origin and
///   `cors_cache` (browsers never send credentials on preflights) and its answer kept;
/// - a GET/HEAD on a public path is answered from the cache, or fetched once: 2xx bodies
///   are kept while `Cache-Control` allows, a 404 is remembered.
///
/// `Continue`: not for the caches; the request goes on to authentication.
async fn edge_cached(
    edge: &Arc<Edge>,
    pool: &Arc<Pool>,
    service: &Service,
    conn: &Connection,
    mut request: Request<Incoming>,
    record: &mut RequestRecord,
) -> Result<CacheStep, ProxyError> {
    if edge_cache::is_preflight(request.method(), request.headers()) {
        let origin = request.headers().get(header::ORIGIN).and_then(|o| o.to_str().ok()).unwrap_or("").to_string();
        if let Some(cached) = service.cors.lookup(&origin) {
            return Ok(CacheStep::Answered((cached, None)));
        }
        let (response, lease) = forward_to_pool(edge, pool, service, conn, request, record).await?;
        service.cors.store(&origin, response.status(), response.headers());
        return Ok(CacheStep::Answered((response, lease)));
    }
    let method = request.method().clone();
    let path = request.uri().path();
    if !(method == http::Method::GET || method == http::Method::HEAD) || !service.config.public_paths.iter().any(|p| p.matches(path)) {
        return Ok(CacheStep::Continue(request));
    }
    let key = request.uri().path_and_query().map_or(path, |pq| pq.as_str()).to_string();
    if let Lookup::Hit(cached) = service.public_cache.lookup(&key, &method) {
        return Ok(CacheStep::Answered((cached, None)));
    }
    // One representation per path: ask for the identity encoding.
    request.headers_mut().remove(header::ACCEPT_ENCODING);
    let (response, lease) = forward_to_pool(edge, pool, service, conn, request, record).await?;
    let status = response.status();
    let small = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|n| n <= edge_cache::MAX_CACHED_BODY);
    let cacheable_status = status.is_success() || status == StatusCode::NOT_FOUND;
    if method != http::Method::GET || !cacheable_status || !small || response.headers().contains_key(header::CONTENT_ENCODING) {
        return Ok(CacheStep::Answered((response, lease)));
    }
    use http_body_util::BodyExt;
    let (parts, body) = response.into_parts();
    let bytes =
        http_body_util::Limited::new(body, edge_cache::MAX_CACHED_BODY).collect().await.map_err(|_| ProxyError::UpstreamFailed)?.to_bytes();
    drop(lease);
    service.public_cache.store(&key, parts.status, &parts.headers, bytes.clone());
    Ok(CacheStep::Answered((Response::from_parts(parts, ProxyBody::full(bytes)), None)))
}

/// What the edge caches did with a request.
enum CacheStep {
    Answered(Answer),
    Continue(Request<Incoming>),
}

/// Edge authentication gate: public paths and `auth = "none"` pass; everything else needs
/// credentials the authenticator accepts.
///
/// With `websocket_auth`, a WebSocket upgrade must carry its credential in
/// `Sec-WebSocket-Protocol` (browsers cannot set `Authorization` there); the credential
/// element is removed before the request goes on.
///
/// In maintenance (`maintenance` = the `Retry-After` seconds) only a credential of a current
/// session of this service is validated; anything else is a new session and gets 503.
async fn authenticate(
    gateway: &Gateway,
    service: &Service,
    operate: &Operate,
    maintenance: Option<u64>,
    client: IpAddr,
    request: &mut Request<Incoming>,
) -> Result<(), ProxyError> {
    let path = request.uri().path();
    if service.config.auth == AuthMode::None || service.config.public_paths.iter().any(|p| p.matches(path)) {
        return Ok(());
    }
    if let Some(retry_after_secs) = maintenance {
        let existing = gateway.auth.session_of(request.headers()).is_some_and(|key| service.sessions.is_current(&key));
        if !existing {
            return Err(ProxyError::Maintenance { retry_after_secs });
        }
    }
    let touch = |session| {
        if service.sessions.touch(session) {
            operate.note_sessions_total(gateway.services.iter().map(|s| s.sessions.tracked() as u64).sum());
        }
    };
    let websocket = is_websocket_upgrade(request);
    // Clients that cannot send credentials on an upgrade: allowed only from a source IP
    // that authenticated successfully within the service's window.
    if let Some(window) = service.config.websocket_ip_window {
        let has_credential = request.headers().contains_key(header::AUTHORIZATION)
            || !matches!(websocket::extract(request.headers()), ProtocolCredential::Missing);
        if websocket && !has_credential && gateway.auth.authenticated_within(client, window) {
            return Ok(());
        }
    }
    if websocket && service.config.websocket_auth {
        let (authorization, protocols) = match websocket::extract(request.headers()) {
            ProtocolCredential::Found { authorization, protocols } => (authorization, protocols),
            ProtocolCredential::Missing => {
                return Err(verdict_error(gateway.auth.authenticate(service.config.auth, &http::HeaderMap::new(), client).await));
            }
            ProtocolCredential::Malformed => {
                gateway.auth.report_failure(client, "malformed WebSocket protocol credential");
                return Err(verdict_error(gateway.auth.authenticate(service.config.auth, &http::HeaderMap::new(), client).await));
            }
        };
        let mut credential = http::HeaderMap::new();
        credential.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&authorization).map_err(|_| ProxyError::BadRequest("invalid credential"))?,
        );
        return match gateway.auth.authenticate(service.config.auth, &credential, client).await {
            Verdict::Allow { session, .. } => {
                touch(session);
                gateway.auth.note_success(client);
                websocket::strip_credential(request.headers_mut(), &protocols);
                Ok(())
            }
            refused => Err(verdict_error(refused)),
        };
    }
    match gateway.auth.authenticate(service.config.auth, request.headers(), client).await {
        Verdict::Allow { session, .. } => {
            touch(session);
            if gateway.remember_ips {
                gateway.auth.note_success(client);
            }
            Ok(())
        }
        refused => Err(verdict_error(refused)),
    }
}

/// The edge's own token endpoints (DESIGN §2, edge tokens).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenEndpoint {
    Issue,
    Refresh,
}

impl TokenEndpoint {
    fn of(path: &str) -> Option<TokenEndpoint> {
        match path {
            "/portcullis/token" => Some(TokenEndpoint::Issue),
            "/portcullis/token/refresh" => Some(TokenEndpoint::Refresh),
            _ => None,
        }
    }
}

fn verdict_error(verdict: Verdict) -> ProxyError {
    match verdict {
        Verdict::Allow { .. } => ProxyError::Internal,
        Verdict::Challenge { challenge } => ProxyError::Unauthorized { challenge },
        Verdict::Limited { retry_after_secs } => ProxyError::RateLimited { retry_after_secs },
        Verdict::Unavailable => ProxyError::AuthUnavailable,
    }
}

/// The refresh token of a refresh request: `Authorization: Bearer pcr_…` or JSON
/// `{"refresh_token": "…"}`.
async fn refresh_token_of(request: Request<Incoming>) -> Result<String, ProxyError> {
    use http_body_util::BodyExt;
    let from_header = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| {
        let (scheme, token) = v.split_at_checked(7)?;
        scheme.eq_ignore_ascii_case("bearer ").then(|| token.trim().to_string())
    });
    if let Some(token) = from_header {
        return Ok(token);
    }
    #[derive(serde::Deserialize)]
    struct RefreshRequest {
        refresh_token: String,
    }
    let body = http_body_util::Limited::new(request.into_body(), MAX_TOKEN_REQUEST_BODY)
        .collect()
        .await
        .map_err(|_| ProxyError::BadRequest("token request body too large or unreadable"))?
        .to_bytes();
    serde_json::from_slice::<RefreshRequest>(&body)
        .map(|r| r.refresh_token)
        .map_err(|_| ProxyError::BadRequest("expected {\"refresh_token\": \"...\"}"))
}

/// `POST /portcullis/token` and `POST /portcullis/token/refresh`.
async fn token_endpoint(
    gateway: &Gateway,
    client: IpAddr,
    request: Request<Incoming>,
    endpoint: TokenEndpoint,
) -> Result<Response<ProxyBody>, ProxyError> {
    if request.method() != http::Method::POST {
        return Err(ProxyError::MethodNotAllowed);
    }
    let answer = match endpoint {
        TokenEndpoint::Issue => gateway.auth.issue_token(request.headers(), client).await,
        TokenEndpoint::Refresh => {
            let refresh = refresh_token_of(request).await?;
            gateway.auth.refresh_token(&refresh, client).await
        }
    };
    match answer {
        TokenAnswer::Issued { issued, .. } => {
            let mut response = Response::new(ProxyBody::full(serde_json::to_vec(&issued).map_err(|_| ProxyError::Internal)?));
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            Ok(response)
        }
        TokenAnswer::Refused(verdict) => Err(verdict_error(verdict)),
        TokenAnswer::Unavailable => Err(ProxyError::AuthUnavailable),
    }
}

fn redirect(host: &str, port: u16, request: &Request<Incoming>) -> Result<Response<ProxyBody>, ProxyError> {
    let bare = host.rsplit_once(':').filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit())).map_or(host, |(h, _)| h);
    if bare.is_empty() || !bare.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.[]:".contains(&b)) {
        return Err(ProxyError::BadRequest("missing or invalid Host header"));
    }
    let target = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let location = if port == 443 { format!("https://{bare}{target}") } else { format!("https://{bare}:{port}{target}") };
    let mut response = text_response(StatusCode::PERMANENT_REDIRECT, "moved to https");
    response
        .headers_mut()
        .insert(header::LOCATION, HeaderValue::from_str(&location).map_err(|_| ProxyError::BadRequest("invalid request target"))?);
    Ok(response)
}

async fn forward_to_pool(
    edge: &Arc<Edge>,
    pool: &Arc<Pool>,
    service: &Service,
    conn: &Connection,
    mut request: Request<Incoming>,
    record: &mut RequestRecord,
) -> Result<Answer, ProxyError> {
    let websocket = is_websocket_upgrade(&request);
    let client_upgrade = websocket.then(|| hyper::upgrade::on(&mut request));
    let (mut parts, body) = request.into_parts();
    // Upstreams get HTTP/1.1 in origin form, whatever the client spoke.
    parts.version = Version::HTTP_11;
    if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
        let origin_form = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        parts.uri = origin_form.parse().map_err(|_| ProxyError::BadRequest("invalid request target"))?;
    }
    let origin = Origin { client: record.client, proto: if conn.tls { "https" } else { "http" }, host: &record.host };
    forward::request_headers(&mut parts.headers, origin, websocket);
    let offered_protocols: Vec<String> = parts
        .headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect();
    if !parts.headers.contains_key(header::HOST)
        && let Ok(host) = HeaderValue::from_str(&record.host)
    {
        parts.headers.insert(header::HOST, host);
    }
    let body = match ProxyBody::Stream(body).buffer_small(MAX_REPLAY_BODY).await {
        Ok(Ok(bytes)) => OutgoingBody::Replayable(bytes),
        Ok(Err(stream)) => OutgoingBody::Streaming(stream),
        Err(_) => return Err(ProxyError::BadRequest("request body could not be read")),
    };
    let (mut response, lease) = pool.send(Outgoing { parts, body }).await?;
    record.upstream = Some(lease.server().clone());
    let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    forward::response_headers(response.headers_mut(), switching && websocket);
    if websocket {
        // Only a subprotocol the client offered (credential already stripped) may come back.
        websocket::filter_response_protocol(response.headers_mut(), &offered_protocols);
    }
    match client_upgrade {
        Some(client_upgrade) if switching => {
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            spawn_tunnel(edge.clone(), service.name.clone(), client_upgrade, upstream_upgrade, lease);
            let (parts, _) = response.into_parts();
            Ok((Response::from_parts(parts, ProxyBody::empty()), None))
        }
        Some(_) => {
            // Upgrade refused upstream: close afterwards so no unscanned bytes follow.
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            Ok((response.map(ProxyBody::Stream), Some(lease)))
        }
        None if switching => Err(ProxyError::UpstreamFailed),
        None => Ok((response.map(ProxyBody::Stream), Some(lease))),
    }
}

/// Joins the client and upstream halves of an upgraded connection into a byte tunnel.
fn spawn_tunnel(edge: Arc<Edge>, service: Arc<str>, client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade, lease: Lease) {
    tokio::spawn(async move {
        let (client, upstream) = tokio::join!(client, upstream);
        let (Ok(client), Ok(upstream)) = (client, upstream) else { return };
        edge.metrics.websockets(&service, 1);
        edge.operate.websocket(&service, 1);
        let mut client = TokioIo::new(client);
        let mut upstream = TokioIo::new(upstream);
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        edge.metrics.websockets(&service, -1);
        edge.operate.websocket(&service, -1);
        drop(lease);
    });
}
