//! The HTTP request pipeline: the **only** place that orders what happens to a request.
//!
//! Outer to inner (each step says why it sits where it does):
//! 1. **record** — start the clock and capture host/method/path first, so every outcome,
//!    including early refusals, gets an access-log line and a metric.
//! 2. **canonical view** — computed once (`net::canonical`): one canonical path, one
//!    authority, one credential. Every later decision is made on it, and the request is
//!    rewritten to it, so the upstream receives exactly what the edge decided on.
//! 3. **redirect** — a plain listener with `redirect_to` answers 308 before anything else:
//!    nothing on it is served in clear text.
//! 4. **ban** — a banned source gets the blocked answer (418) before any other work.
//! 5. **sanity** — a request whose view could not be made is 400 (and a protocol violation
//!    for the shield): bad path, missing, duplicate or malformed Host, `:authority`/`host`
//!    disagreeing, several `Authorization` headers. Framing attacks (CL+TE, duplicate CL,
//!    bad chunking) never get here: `net::h1_guard` refuses them below hyper.
//! 6. **maintenance** — new logins and new WebSockets get 503 (`operate`).
//! 7. **route** — canonical host + longest canonical prefix → service, else 404.
//! 8. **edge caches** — CORS preflights (forwarded without credentials, answered with only
//!    their `access-control-*` fields) and public-path responses, keyed by the canonical
//!    authority, path and query.
//! 9. **authenticate** — every service with `auth != none` requires credentials except on
//!    its `public_paths` (which never forward a credential); a credential that is not cached
//!    is checked under the shield's per-source admission, so concurrent guesses cannot
//!    outrun a ban. Nothing unauthenticated reaches an upstream.
//! 10. **backend** — a static directory, or the upstream pool: forwarding headers,
//!     replayable body, failover, WebSocket tunnel.

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
use crate::config::{AuthMode, Category, Config, PathPolicy, PoolConfig, ServiceConfig, ServiceKind};
use crate::net::canonical::{self, Authority};
use crate::net::h1_guard::UpgradeGate;
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
        let router = Router::new(&config.routes, |name| {
            services.iter().position(|s| &*s.name == name).map(|i| (i, services[i].config.case_insensitive))
        });
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
    /// The listener's policy for paths that cannot be normalised safely.
    pub paths: PathPolicy,
    /// Where an HTTP/1 connection's framing guard learns whether an `Upgrade` request was
    /// upgraded (unused on HTTP/2).
    pub upgrade_gate: Arc<UpgradeGate>,
}

impl Service {
    /// Whether the request is on one of this service's unauthenticated public paths — in
    /// both forms of its path (with and without `;parameters`), so an upstream that strips
    /// parameters cannot resolve a public path to a protected one.
    fn is_public(&self, view: &View) -> bool {
        let public = |path: &str| self.config.public_paths.iter().any(|p| p.matches(path, self.config.case_insensitive));
        self.config.auth != AuthMode::None && public(&view.path) && view.unparameterized.as_deref().is_none_or(public)
    }
}

/// The canonical view of a request (DESIGN §1): what every decision is made on, and what the
/// upstream receives.
#[derive(Debug)]
struct View {
    /// `None` only for HTTP/1.0 without `Host`.
    authority: Option<Authority>,
    path: String,
    /// `path` without `;parameters` (how Tomcat and Jetty read it), when it has any.
    unparameterized: Option<String>,
    /// The query as received (without `?`).
    query: Option<String>,
}

impl View {
    /// The origin-form target the upstream receives.
    fn target(&self) -> String {
        match &self.query {
            Some(query) => format!("{}?{query}", self.path),
            None => self.path.clone(),
        }
    }
}

/// Builds the canonical view, or says why the request cannot have one (400).
fn canonical_view<B>(request: &Request<B>, policy: PathPolicy) -> Result<View, &'static str> {
    let headers = request.headers();
    let mut credentials = headers.get_all(header::AUTHORIZATION).iter();
    if credentials.next().is_some() && credentials.next().is_some() {
        return Err("more than one Authorization header");
    }
    let mut hosts = headers.get_all(header::HOST).iter();
    let host_field = hosts.next();
    if hosts.next().is_some() {
        return Err("more than one Host header");
    }
    let host_field = host_field.map(|h| h.to_str().map_err(|_| "invalid Host header")).transpose()?;
    let parse = |text: &str| canonical::parse_authority(text).map_err(|refusal| refusal.reason());
    let uri = request.uri();
    if uri.scheme_str().is_some_and(|s| !s.eq_ignore_ascii_case("http") && !s.eq_ignore_ascii_case("https")) {
        return Err("unsupported scheme in request target");
    }
    let authority = match (uri.authority().map(http::uri::Authority::as_str), host_field) {
        // HTTP/2: `:authority` and `host` must agree (RFC 9113 §8.3.1).
        (Some(target), Some(host)) if request.version() == Version::HTTP_2 => {
            let (target, host) = (parse(target)?, parse(host)?);
            if target != host {
                return Err(":authority and host differ");
            }
            Some(target)
        }
        // An absolute-form target's authority replaces Host (RFC 9112 §3.2.2).
        (Some(target), _) => Some(parse(target)?),
        (None, Some(host)) => Some(parse(host)?),
        (None, None) if request.version() == Version::HTTP_10 => None,
        (None, None) => return Err("missing Host header"),
    };
    let path = canonical::normalize_path(uri.path(), policy).map_err(|refusal| refusal.reason())?;
    let unparameterized = canonical::without_parameters(&path);
    Ok(View { authority, path, unparameterized, query: uri.query().map(str::to_string) })
}

/// Rewrites `request` to its canonical view: origin-form target, one canonical `Host`.
fn apply_view<B>(request: &mut Request<B>, view: &View) -> Result<(), ProxyError> {
    // The common case — origin form, already canonical, one canonical Host — costs nothing.
    let uri = request.uri();
    if uri.scheme().is_some() || uri.authority().is_some() || uri.path() != view.path {
        *request.uri_mut() = view.target().parse().map_err(|_| ProxyError::BadRequest("invalid request target"))?;
    }
    let headers = request.headers_mut();
    let host = view.authority.as_ref().map(Authority::as_str);
    if headers.get(header::HOST).map(HeaderValue::as_bytes) != host.map(str::as_bytes) {
        headers.remove(header::HOST);
        if let Some(host) = host {
            headers.insert(header::HOST, HeaderValue::from_str(host).map_err(|_| ProxyError::BadRequest("invalid host"))?);
        }
    }
    Ok(())
}

/// Removes every credential a client sent: on public paths and preflights the edge validates
/// none, so none may reach the upstream — a WebSocket protocol credential included.
fn strip_credentials(headers: &mut http::HeaderMap) {
    headers.remove(header::AUTHORIZATION);
    headers.remove(header::PROXY_AUTHORIZATION);
    headers.remove(header::COOKIE);
    websocket::strip_any_credential(headers);
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
    /// A refused credential was already counted by the shield (under its admission).
    failure_recorded: bool,
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

/// The request's host as received (for logs when no canonical view could be made).
fn raw_host<B>(request: &Request<B>) -> String {
    let raw =
        request.uri().authority().map(|a| a.as_str().as_bytes()).or_else(|| request.headers().get(header::HOST).map(|h| h.as_bytes()));
    raw.map(|bytes| String::from_utf8_lossy(&bytes[..bytes.len().min(256)]).into_owned()).unwrap_or_default()
}

/// Handles one request (hyper service entry point).
pub async fn handle(edge: Arc<Edge>, conn: Arc<Connection>, request: Request<Incoming>) -> Result<Response<TrackedBody>, Infallible> {
    let start = Instant::now();
    let gateway = edge.gateway.load_full();
    let view = canonical_view(&request, conn.paths);
    // The framing guard holds the bytes after an `Upgrade` request until it learns whether
    // the connection was upgraded.
    let awaits_upgrade_decision = request.version() != Version::HTTP_2 && request.headers().contains_key(header::UPGRADE);
    let mut record = RequestRecord {
        edge: edge.clone(),
        start,
        client: effective_client(conn.client.ip(), request.headers(), &gateway.config.protection.trusted_proxies),
        host: match &view {
            Ok(view) => view.authority.as_ref().map(|a| a.as_str().to_string()).unwrap_or_default(),
            Err(_) => raw_host(&request),
        },
        method: request.method().clone(),
        path: request.uri().path().to_string(),
        version: request.version(),
        status: 0,
        service: None,
        upstream: None,
        credentials: false,
        malformed_websocket_credential: false,
        failure_recorded: false,
    };
    match websocket::extract(request.headers()) {
        ProtocolCredential::Missing => record.credentials = request.headers().contains_key(header::AUTHORIZATION),
        ProtocolCredential::Malformed => {
            record.credentials = true;
            record.malformed_websocket_credential = true;
        }
        ProtocolCredential::Found { .. } => record.credentials = true,
    }
    let (response, lease) = match pipeline(&edge, &gateway, &conn, request, view, &mut record).await {
        Ok(answer) => answer,
        Err(error) => {
            let category = match &error {
                ProxyError::Unauthorized { .. } if record.credentials && !record.failure_recorded => {
                    // The shield counts presented-and-refused credentials per source.
                    Some(if record.malformed_websocket_credential {
                        Category::WebsocketProtocolViolation
                    } else {
                        Category::HttpAuthFailure
                    })
                }
                // A request the edge cannot read one way only (bad path, host, credential
                // count, body framing) is a protocol violation.
                ProxyError::BadRequest(_) => Some(Category::HttpProtocolViolation),
                _ => None,
            };
            if let Some(category) = category {
                edge.shield.record(record.client, category, record.line()).await;
            }
            (error.into_response(), None)
        }
    };
    record.status = response.status().as_u16();
    if awaits_upgrade_decision {
        conn.upgrade_gate.decide(response.status() == StatusCode::SWITCHING_PROTOCOLS);
    }
    if matches!(record.status, 403 | 404) {
        // Probing for resources (off by default: behind NAT it causes false positives).
        edge.shield.record(record.client, Category::HttpResourceAccessFailure, record.line()).await;
    }
    let (parts, body) = response.into_parts();
    Ok(Response::from_parts(parts, TrackedBody::new(body, Arc::new(record), lease)))
}

impl RequestRecord {
    /// The request line for `blocking.log`.
    fn line(&self) -> RequestLine<'_> {
        RequestLine { method: self.method.as_str(), path: &self.path, protocol: version_text(self.version), host: &self.host }
    }
}

type Answer = (Response<ProxyBody>, Option<Lease>);

async fn pipeline(
    edge: &Arc<Edge>,
    gateway: &Gateway,
    conn: &Connection,
    mut request: Request<Incoming>,
    view: Result<View, &'static str>,
    record: &mut RequestRecord,
) -> Result<Answer, ProxyError> {
    if let Some(port) = conn.redirect_port {
        let authority =
            view.as_ref().ok().and_then(|v| v.authority.as_ref()).ok_or(ProxyError::BadRequest("missing or invalid Host header"))?;
        return Ok((redirect(authority, port, &request)?, None));
    }
    // Banned sources get the blocked answer before any other work (no auth, no upstream).
    if let Some(status) = edge.shield.check(record.client) {
        return Err(ProxyError::Blocked { status });
    }
    let view = view.map_err(ProxyError::BadRequest)?;
    apply_view(&mut request, &view)?;
    let maintenance = edge.operate.in_maintenance().then(|| gateway.config.maintenance.retry_after.as_secs().max(1));
    if let Some(endpoint) = TokenEndpoint::of(&view.path) {
        record.service = Some(edge.token_service.clone());
        // In maintenance no new login: a refresh continues an existing session.
        if let (Some(retry_after_secs), TokenEndpoint::Issue) = (maintenance, endpoint) {
            return Err(ProxyError::Maintenance { retry_after_secs });
        }
        return Ok((token_endpoint(edge, gateway, record, request, endpoint).await?, None));
    }
    let host = view.authority.as_ref().map(Authority::host);
    let service_index = gateway.router.find(host, &view.path);
    // An upstream that strips `;parameters` must land on the same service as the edge.
    if let Some(unparameterized) = &view.unparameterized
        && gateway.router.find(host, unparameterized) != service_index
    {
        return Err(ProxyError::BadRequest("path parameters change the route"));
    }
    let service_index = service_index.ok_or(ProxyError::NoRoute)?;
    let service = &gateway.services[service_index];
    record.service = Some(service.name.clone());
    if let Some(retry_after_secs) = maintenance
        && is_websocket_upgrade(&request)
    {
        // Established WebSockets keep running; new ones go to another peer.
        return Err(ProxyError::Maintenance { retry_after_secs });
    }
    if let Backend::Pool(pool) = &service.backend {
        request = match edge_cached(edge, pool, service, conn, &view, request, record).await? {
            CacheStep::Answered(answer) => return Ok(answer),
            CacheStep::Continue(request) => request,
        };
    }
    authenticate(edge, gateway, service, maintenance, &view, record, &mut request).await?;
    match &service.backend {
        Backend::Static(dir) => Ok((static_files::serve(dir, request.method(), &view.path).await?, None)),
        Backend::Pool(pool) => forward_to_pool(edge, pool, service, conn, request, record).await,
    }
}

/// The edge caches in front of authentication (`http::edge_cache`):
/// - a CORS preflight (see [`preflight`]);
/// - a GET/HEAD on a public path is answered from the cache, or fetched once without any
///   credential: 2xx bodies are kept while `Cache-Control` allows, a 404 is remembered;
///   entries are keyed by the canonical authority, path and query, and honour `Vary`.
///
/// `Continue`: not for the caches; the request goes on to authentication.
async fn edge_cached(
    edge: &Arc<Edge>,
    pool: &Arc<Pool>,
    service: &Service,
    conn: &Connection,
    view: &View,
    mut request: Request<Incoming>,
    record: &mut RequestRecord,
) -> Result<CacheStep, ProxyError> {
    // Only a bodiless OPTIONS is a preflight; anything else is authenticated as usual.
    if edge_cache::is_preflight(request.method(), request.headers()) && hyper::body::Body::is_end_stream(request.body()) {
        return preflight(edge, pool, service, conn, request, record).await.map(CacheStep::Answered);
    }
    let method = request.method().clone();
    if !(method == http::Method::GET || method == http::Method::HEAD) || !service.is_public(view) {
        return Ok(CacheStep::Continue(request));
    }
    let key = format!("{}{}", view.authority.as_ref().map_or("", Authority::as_str), view.target());
    // One representation per key: the identity encoding, and no credential (the edge
    // validated none, and the answer is shared).
    request.headers_mut().remove(header::ACCEPT_ENCODING);
    strip_credentials(request.headers_mut());
    if let Lookup::Hit(cached) = service.public_cache.lookup(&key, &method, request.headers()) {
        return Ok(CacheStep::Answered((cached, None)));
    }
    let sent = request.headers().clone();
    let (response, lease) = forward_to_pool(edge, pool, service, conn, request, record).await?;
    let status = response.status();
    let small = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|n| n <= edge_cache::MAX_CACHED_BODY);
    // Never a 206: a `Range` answer is a fragment, not the resource the key names.
    let cacheable_status = (status.is_success() && status != StatusCode::PARTIAL_CONTENT) || status == StatusCode::NOT_FOUND;
    if method != http::Method::GET || !cacheable_status || !small || response.headers().contains_key(header::CONTENT_ENCODING) {
        return Ok(CacheStep::Answered((response, lease)));
    }
    use http_body_util::BodyExt;
    let (parts, body) = response.into_parts();
    let bytes =
        http_body_util::Limited::new(body, edge_cache::MAX_CACHED_BODY).collect().await.map_err(|_| ProxyError::UpstreamFailed)?.to_bytes();
    drop(lease);
    service.public_cache.store(&key, parts.status, &parts.headers, &sent, bytes.clone());
    Ok(CacheStep::Answered((Response::from_parts(parts, ProxyBody::full(bytes)), None)))
}

/// A CORS preflight (OPTIONS + `Origin` + `Access-Control-Request-Method`, no body): answered
/// from the cache, or forwarded without any credential — at most
/// `cors_preflights_per_minute` times a minute per service, and only for `cors_origins` when
/// configured — and the client gets only the upstream's `access-control-*` fields, never its
/// body or other headers. Browsers never send credentials on preflights.
async fn preflight(
    edge: &Arc<Edge>,
    pool: &Arc<Pool>,
    service: &Service,
    conn: &Connection,
    mut request: Request<Incoming>,
    record: &mut RequestRecord,
) -> Result<Answer, ProxyError> {
    let origin = request.headers().get(header::ORIGIN).and_then(|o| o.to_str().ok()).unwrap_or("").to_string();
    if let Some(allowed) = &service.config.cors_origins
        && !allowed.iter().any(|o| o.eq_ignore_ascii_case(&origin))
    {
        return Ok((text_response(StatusCode::FORBIDDEN, "origin not allowed"), None));
    }
    if let Some(cached) = service.cors.lookup(&origin) {
        return Ok((cached, None));
    }
    service
        .cors
        .admit_forward(service.config.cors_preflights_per_minute)
        .map_err(|retry_after_secs| ProxyError::TooManyPreflights { retry_after_secs })?;
    strip_credentials(request.headers_mut());
    let (response, lease) = forward_to_pool(edge, pool, service, conn, request, record).await?;
    service.cors.store(&origin, response.status(), response.headers());
    let answer = edge_cache::preflight_answer(response.status(), response.headers());
    drop(response);
    drop(lease);
    Ok((answer, None))
}

/// What the edge caches did with a request.
enum CacheStep {
    Answered(Answer),
    Continue(Request<Incoming>),
}

/// Edge authentication gate: public paths and `auth = "none"` pass (a public path never
/// forwards a credential); everything else needs credentials the authenticator accepts.
///
/// With `websocket_auth`, a WebSocket upgrade must carry its credential in
/// `Sec-WebSocket-Protocol` (browsers cannot set `Authorization` there); the credential
/// element is removed before the request goes on, and so is any `Authorization` field: only
/// what the edge validated reaches the upstream.
///
/// In maintenance (`maintenance` = the `Retry-After` seconds) only a credential of a current
/// session of this service is validated; anything else is a new session and gets 503.
async fn authenticate(
    edge: &Edge,
    gateway: &Gateway,
    service: &Service,
    maintenance: Option<u64>,
    view: &View,
    record: &mut RequestRecord,
    request: &mut Request<Incoming>,
) -> Result<(), ProxyError> {
    if service.config.auth == AuthMode::None {
        return Ok(());
    }
    if service.is_public(view) {
        strip_credentials(request.headers_mut());
        return Ok(());
    }
    let client = record.client;
    if let Some(retry_after_secs) = maintenance {
        let existing = gateway.auth.session_of(request.headers()).is_some_and(|key| service.sessions.is_current(&key));
        if !existing {
            return Err(ProxyError::Maintenance { retry_after_secs });
        }
    }
    let touch = |session| {
        if service.sessions.touch(session) {
            edge.operate.note_sessions_total(gateway.services.iter().map(|s| s.sessions.tracked() as u64).sum());
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
        return match check_credential(edge, gateway, record, service.config.auth, &credential).await? {
            Verdict::Allow { session, .. } => {
                touch(session);
                gateway.auth.note_success(client);
                websocket::strip_credential(request.headers_mut(), &protocols);
                request.headers_mut().remove(header::AUTHORIZATION);
                Ok(())
            }
            refused => Err(verdict_error(refused)),
        };
    }
    match check_credential(edge, gateway, record, service.config.auth, request.headers()).await? {
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

/// The verdict on the credential in `headers`: a cached one at once (no guess, no waiting, the
/// same single cache lookup as always), any other under the shield's admission.
async fn check_credential(
    edge: &Edge,
    gateway: &Gateway,
    record: &mut RequestRecord,
    mode: AuthMode,
    headers: &http::HeaderMap,
) -> Result<Verdict, ProxyError> {
    if let Some(verdict) = gateway.auth.cached_verdict(mode, headers) {
        return Ok(verdict);
    }
    let check = gateway.auth.authenticate(mode, headers, record.client);
    shielded(edge, record, headers, check, is_challenge).await
}

/// Runs one check of a credential that is not already cached under the shield (DESIGN §3):
/// only while holding the source's admission (one check per source at a time), after the
/// ban is checked again, and a refusal is counted before the admission is released — so
/// however many streams or connections a source opens, at most `trigger` guesses are
/// checked before the ban applies, and the ban is made once. Callers answer cached
/// credentials without coming here.
async fn shielded<T>(
    edge: &Edge,
    record: &mut RequestRecord,
    credential: &http::HeaderMap,
    check: impl std::future::Future<Output = T>,
    refused: impl Fn(&T) -> bool,
) -> Result<T, ProxyError> {
    let presented = credential.get(header::AUTHORIZATION);
    let admission = match presented {
        Some(_) => edge.shield.admit(record.client, AUTH_FAILURE).await,
        None => None,
    };
    if admission.is_some()
        && let Some(status) = edge.shield.check(record.client)
    {
        return Err(ProxyError::Blocked { status });
    }
    let verdict = check.await;
    if presented.is_some() && refused(&verdict) {
        edge.shield.record(record.client, AUTH_FAILURE, record.line()).await;
        record.failure_recorded = true;
    }
    drop(admission);
    Ok(verdict)
}

fn is_challenge(verdict: &Verdict) -> bool {
    matches!(verdict, Verdict::Challenge { .. })
}

/// The shield category of refused credentials.
const AUTH_FAILURE: Category = Category::HttpAuthFailure;

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

/// `POST /portcullis/token` and `POST /portcullis/token/refresh` (the credential or refresh
/// token is checked under the shield's admission, as every credential is).
async fn token_endpoint(
    edge: &Edge,
    gateway: &Gateway,
    record: &mut RequestRecord,
    request: Request<Incoming>,
    endpoint: TokenEndpoint,
) -> Result<Response<ProxyBody>, ProxyError> {
    if request.method() != http::Method::POST {
        return Err(ProxyError::MethodNotAllowed);
    }
    let client = record.client;
    let refused = |answer: &TokenAnswer| matches!(answer, TokenAnswer::Refused(Verdict::Challenge { .. }));
    let answer = match endpoint {
        TokenEndpoint::Issue => {
            let headers = request.headers().clone();
            let issue = gateway.auth.issue_token(&headers, client);
            match gateway.auth.cached_verdict(AuthMode::BasicOrJwt, &headers) {
                // A credential known valid: no guess, no waiting.
                Some(_) => issue.await,
                None => shielded(edge, record, &headers, issue, refused).await?,
            }
        }
        TokenEndpoint::Refresh => {
            let refresh = refresh_token_of(request).await?;
            let mut credential = http::HeaderMap::new();
            let bearer =
                HeaderValue::from_str(&format!("Bearer {refresh}")).map_err(|_| ProxyError::BadRequest("invalid refresh token"))?;
            credential.insert(header::AUTHORIZATION, bearer);
            shielded(edge, record, &credential, gateway.auth.refresh_token(&refresh, client), refused).await?
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

fn redirect(authority: &Authority, port: u16, request: &Request<Incoming>) -> Result<Response<ProxyBody>, ProxyError> {
    let host = authority.host();
    let target = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let location = if port == 443 { format!("https://{host}{target}") } else { format!("https://{host}:{port}{target}") };
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
    // Upstreams get HTTP/1.1 (the target is already the canonical origin form).
    parts.version = Version::HTTP_11;
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
    let broken = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let body = match ProxyBody::Stream(body).buffer_small(MAX_REPLAY_BODY).await {
        Ok(Ok(bytes)) => OutgoingBody::Replayable(bytes),
        Ok(Err(stream)) => OutgoingBody::Streaming(stream.watched(broken.clone())),
        Err(_) => return Err(ProxyError::BadRequest("malformed request body")),
    };
    // What a real WebSocket server must answer a switch with (checked below).
    let sent_headers = websocket.then(|| parts.headers.clone());
    let (mut response, lease) = match pool.send(Outgoing { parts, body }).await {
        // The client broke its own body framing: its fault, not the upstream's.
        Err(_) if broken.load(std::sync::atomic::Ordering::Relaxed) => return Err(ProxyError::BadRequest("malformed request body")),
        sent => sent?,
    };
    record.upstream = Some(lease.server().clone());
    let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    // A 101 that does not prove a WebSocket switch (no or a wrong `Sec-WebSocket-Accept`)
    // must not become a tunnel: the upstream would read the client's next bytes as HTTP
    // requests the edge never saw.
    if switching && sent_headers.as_ref().is_some_and(|sent| !forward::websocket_switched(sent, response.headers())) {
        return Err(ProxyError::UpstreamFailed);
    }
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
