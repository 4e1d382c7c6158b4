//! Proxying to an upstream pool: the edge caches in front of authentication (CORS
//! preflights, public-path responses), forwarding with the edge's headers and a replayable
//! body, and WebSocket tunnels.

use std::sync::Arc;

use http::{HeaderValue, Request, Response, StatusCode, Version, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use super::body::{BodyFailure, ClientFault, ProxyBody};
use super::edge_cache::{self, Lookup};
use super::facts::Connection;
use super::forward::{self, Origin};
use super::gateway::{Edge, Service};
use super::record::RequestRecord;
use super::respond::{ProxyError, text_response};
use super::upstream::{Lease, Outgoing, OutgoingBody, Pool};
use super::view::{View, strip_credentials};
use super::wire::Conn;
use crate::auth::websocket;
use crate::net::canonical::Authority;
use crate::runtime::Runtime;

/// Request bodies up to this size are buffered so a connect failure can be retried on the
/// next server; larger bodies are streamed with a single attempt.
pub const MAX_REPLAY_BODY: u64 = 64 * 1024;

/// A response and the upstream connection slot its body holds.
pub type Answer = (Response<ProxyBody>, Option<Lease>);

/// The edge caches in front of authentication (`http::edge_cache`):
/// - a CORS preflight (answered by `preflight` below);
/// - a GET/HEAD on a public path is answered from the cache, or fetched once without any
///   credential: 2xx bodies are kept while `Cache-Control` allows, a 404 is remembered;
///   entries are keyed by the canonical authority, path and query, and honour `Vary`.
///
/// `Continue`: not for the caches; the request goes on to authentication
/// ([`edge_cache_applies`] says beforehand whether it can be anything else).
pub async fn edge_cached(
    edge: &Arc<Edge>,
    pool: &Arc<Pool>,
    service: &Service,
    conn: &Connection,
    view: &View,
    mut request: Request<Incoming>,
    record: &mut RequestRecord,
) -> Result<CacheStep, ProxyError> {
    if is_preflight(&request) {
        return preflight(edge, pool, service, conn, request, record).await.map(CacheStep::Answered);
    }
    let method = request.method().clone();
    if !edge_cache_applies(service, view, &request) {
        return Ok(CacheStep::Continue(request));
    }
    let key = format!("{}{}", view.authority.as_ref().map_or("", Authority::as_str), view.target());
    // One representation per key: the identity encoding, and no credential (the edge
    // validated none, and the answer is shared).
    request.headers_mut().remove(header::ACCEPT_ENCODING);
    strip_credentials(request.headers_mut());
    if let Lookup::Hit(cached) = service.public_cache.lookup(&key, &method, request.headers()) {
        return Ok(CacheStep::Answered((*cached, None)));
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

/// Whether the edge caches may answer `request`: a preflight, or a GET/HEAD on a public path.
pub fn edge_cache_applies(service: &Service, view: &View, request: &Request<Incoming>) -> bool {
    let method = request.method();
    is_preflight(request) || ((method == http::Method::GET || method == http::Method::HEAD) && service.is_public(view))
}

/// Only a bodiless OPTIONS is a preflight; anything else is authenticated as usual.
fn is_preflight(request: &Request<Incoming>) -> bool {
    edge_cache::is_preflight(request.method(), request.headers()) && hyper::body::Body::is_end_stream(request.body())
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
pub enum CacheStep {
    Answered(Answer),
    Continue(Request<Incoming>),
}

pub async fn forward_to_pool(
    edge: &Arc<Edge>,
    pool: &Arc<Pool>,
    service: &Service,
    conn: &Connection,
    mut request: Request<Incoming>,
    record: &mut RequestRecord,
) -> Result<Answer, ProxyError> {
    let websocket = record.facts.websocket;
    let client_upgrade = websocket.then(|| hyper::upgrade::on(&mut request));
    let (mut parts, body) = request.into_parts();
    // Upstreams get HTTP/1.1 (the target is already the canonical origin form).
    parts.version = Version::HTTP_11;
    let origin = Origin { client: record.client(), proto: if conn.tls { "https" } else { "http" }, host: &record.host };
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
    let broken = Arc::new(ClientFault::default());
    let body = match ProxyBody::Stream(body).buffer_small(MAX_REPLAY_BODY).await {
        Ok(Ok(bytes)) => OutgoingBody::Replayable(bytes),
        Ok(Err(stream)) => OutgoingBody::Streaming(stream.watched(broken.clone())),
        Err(error) => return Err(client_body_failed(BodyFailure::of(&error))),
    };
    // What a real WebSocket server must answer a switch with (checked below).
    let sent_headers = websocket.then(|| parts.headers.clone());
    let (mut response, lease) = match pool.send(Outgoing { parts, body }).await {
        // The client broke its own body framing: its fault, not the upstream's.
        Err(_) if let Some(failure) = broken.failure() => return Err(client_body_failed(failure)),
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
            let (parts, body) = response.into_parts();
            let ProxyBody::Upstream(body) = body else { return Err(ProxyError::UpstreamFailed) };
            let upstream = body.into_upgraded().ok_or(ProxyError::UpstreamFailed)?;
            spawn_tunnel(edge.runtime.clone(), service.name.clone(), client_upgrade, upstream, lease);
            Ok((Response::from_parts(parts, ProxyBody::empty()), None))
        }
        Some(_) => {
            // Upgrade refused upstream: close afterwards so no unscanned bytes follow.
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            Ok((response, Some(lease)))
        }
        None if switching => Err(ProxyError::UpstreamFailed),
        None => Ok((response, Some(lease))),
    }
}

/// Joins the client's upgraded connection and the upstream connection that answered `101`
/// into a byte tunnel (bytes the upstream sent right after its `101` go to the client first).
fn spawn_tunnel(runtime: Arc<Runtime>, service: Arc<str>, client: hyper::upgrade::OnUpgrade, upstream: Conn, lease: Lease) {
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let Ok(client) = client.await else { return };
        let mut client = TokioIo::new(client);
        let (mut upstream, early) = upstream.into_parts();
        if !early.is_empty() && client.write_all(&early).await.is_err() {
            return;
        }
        // The read buffer these bytes share (16 KiB) is not held for the tunnel's life.
        drop(early);
        runtime.metrics.websockets(&service, 1);
        runtime.operate.websocket(&service, 1);
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        runtime.metrics.websockets(&service, -1);
        runtime.operate.websocket(&service, -1);
        drop(lease);
    });
}

/// The answer to a request whose body the client broke or abandoned.
pub(super) fn client_body_failed(failure: BodyFailure) -> ProxyError {
    match failure {
        BodyFailure::Malformed => ProxyError::BadRequest("malformed request body"),
        BodyFailure::Refused => ProxyError::BodyRefused,
        BodyFailure::Gone => ProxyError::ClientGone,
    }
}
