//! The HTTP request pipeline: the **only** place that orders what happens to a request. The
//! steps themselves live in their own files; this one says when each runs and why there.
//!
//! Outer to inner:
//! 1. **facts and record** — the clock starts; the client, WebSocket-ness and presented
//!    credentials are read once ([`super::facts`]), so every outcome, including early
//!    refusals, gets an access-log line and a metric ([`super::record`]).
//! 2. **canonical view** — computed once ([`super::view`]): one canonical path, one
//!    authority, one credential. Every later decision is made on it, and the request is
//!    rewritten to it, so the upstream receives exactly what the edge decided on.
//! 3. **redirect** — a plain listener with `redirect_to` answers 308 before anything else:
//!    nothing on it is served in clear text (a request without a usable Host gets 400).
//! 4. **ban** — a banned source gets the blocked answer (418) before any other work, even
//!    when its request has no view (a banned client without Host gets 418, not 400).
//! 5. **sanity** — a request whose view could not be made is 400 (and a protocol violation
//!    for the shield): bad path, missing, duplicate or malformed Host, `:authority`/`host`
//!    disagreeing, several `Authorization` headers. Framing attacks (CL+TE, duplicate CL,
//!    bad chunking) never get here: `net::h1_guard` refuses them below hyper.
//! 6. **token endpoints** — `/portcullis/token[/refresh]` ([`super::tokens`]); in
//!    maintenance no new login ([`super::maintenance`]).
//! 7. **route** — canonical host + longest canonical prefix → service, else 404; a path
//!    whose `;parameters` would route elsewhere is 400.
//! 8. **maintenance** — a new WebSocket gets 503.
//! 9. **edge caches** — CORS preflights and public-path responses ([`super::proxying`]),
//!    keyed by the canonical authority, path and query, forwarded without credentials.
//! 10. **authenticate** — [`super::authenticate`]: every service with `auth != none`
//!     requires credentials except on its `public_paths`; a credential that is not cached is
//!     checked under the shield's per-source admission; in maintenance only current sessions.
//!     Nothing unauthenticated reaches an upstream.
//! 11. **backend** — a static directory, or the upstream pool ([`super::proxying`]):
//!     forwarding headers, replayable body, failover, WebSocket tunnel.

use std::convert::Infallible;
use std::sync::Arc;

use http::{HeaderValue, Request, Response, StatusCode, Version, header};
use hyper::body::Incoming;
use tokio::time::Instant;

use super::authenticate::authenticate;
use super::body::ProxyBody;
use super::facts::{Connection, Facts, raw_host};
use super::gateway::{Backend, Edge, Gateway};
use super::maintenance::NewWork;
use super::proxying::{Answer, CacheStep, edge_cache_applies, edge_cached, forward_to_pool};
use super::record::RequestRecord;
use super::respond::{ProxyError, text_response};
use super::static_files;
use super::tokens::{TokenEndpoint, token_endpoint};
use super::tracked::TrackedBody;
use super::view::{View, apply_view, canonical_view};
use crate::config::Category;
use crate::net::canonical::Authority;

/// Handles one request (hyper service entry point).
pub async fn handle(edge: Arc<Edge>, conn: Arc<Connection>, request: Request<Incoming>) -> Result<Response<TrackedBody>, Infallible> {
    let start = Instant::now();
    // An HTTP/2 stream this future ends without an answer for was cancelled by its client.
    let stream = (request.version() == Version::HTTP_2).then(|| conn.cancels.open());
    let gateway = edge.gateway.load_full();
    let view = canonical_view(&request, conn.paths);
    // The framing guard holds the bytes after an `Upgrade` request until it learns whether
    // the connection was upgraded.
    let awaits_upgrade_decision = request.version() != Version::HTTP_2 && request.headers().contains_key(header::UPGRADE);
    let mut record = RequestRecord {
        edge: edge.clone(),
        start,
        facts: Facts::of(&request, conn.client.ip(), &gateway.config.protection.trusted_proxies),
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
        failure_recorded: false,
    };
    let (response, lease) = match pipeline(&edge, &gateway, &conn, request, view, &mut record).await {
        Ok(answer) => answer,
        Err(error) => {
            let category = match &error {
                ProxyError::Unauthorized { .. } if record.facts.presents_credential() && !record.failure_recorded => {
                    // The shield counts presented-and-refused credentials per source.
                    Some(if record.facts.malformed_protocol_credential() {
                        Category::WebsocketProtocolViolation
                    } else {
                        Category::HttpAuthFailure
                    })
                }
                // A request the edge cannot read one way only (bad path, host, credential
                // count, body framing) is a protocol violation (`BodyRefused`: counted by the
                // framing guard already).
                ProxyError::BadRequest(_) => Some(Category::HttpProtocolViolation),
                _ => None,
            };
            if let Some(category) = category {
                edge.runtime.shield.record(record.client(), category, record.line()).await;
            }
            (error.into_response(), None)
        }
    };
    record.status = response.status().as_u16();
    // A client that cancelled its upload (499) cancelled the stream as well.
    if let Some(stream) = stream.filter(|_| record.status != 499) {
        stream.answered();
    }
    if awaits_upgrade_decision {
        conn.upgrade_gate.decide(response.status() == StatusCode::SWITCHING_PROTOCOLS);
    }
    if matches!(record.status, 403 | 404) {
        // Probing for resources (off by default: behind NAT it causes false positives).
        edge.runtime.shield.record(record.client(), Category::HttpResourceAccessFailure, record.line()).await;
    }
    let (parts, body) = response.into_parts();
    Ok(Response::from_parts(parts, TrackedBody::new(body, Arc::new(record), lease)))
}

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
    if let Some(status) = edge.runtime.shield.check(record.client()) {
        return Err(ProxyError::Blocked { status });
    }
    // A reverse proxy opens no tunnels: a 2xx to CONNECT would turn the pooled upstream
    // connection into one (RFC 9112 §6.3).
    if request.method() == http::Method::CONNECT {
        return Err(ProxyError::MethodNotAllowed);
    }
    let view = view.map_err(ProxyError::BadRequest)?;
    apply_view(&mut request, &view)?;
    let new_work = NewWork::of(edge, gateway);
    if let Some(endpoint) = TokenEndpoint::of(&view.path) {
        record.service = Some(edge.token_service().clone());
        // No new login in maintenance: a refresh continues an existing session.
        new_work.admit(|| endpoint == TokenEndpoint::Refresh)?;
        return Ok((Box::pin(token_endpoint(edge, gateway, record, request, endpoint)).await?, None));
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
    // Established WebSockets keep running; new ones go to another peer.
    new_work.admit(|| !record.facts.websocket)?;
    if let Backend::Pool(pool) = &service.backend
        && edge_cache_applies(service, &view, &request)
    {
        // Boxed: the request's future stays small (an h2 stream is spawned as its own task,
        // and a spawn copies the whole future).
        request = match Box::pin(edge_cached(edge, pool, service, conn, &view, request, record)).await? {
            CacheStep::Answered(answer) => return Ok(answer),
            CacheStep::Continue(request) => request,
        };
    }
    authenticate(edge, gateway, service, new_work, &view, record, &mut request).await?;
    match &service.backend {
        Backend::Static(dir) => Ok((static_files::serve(dir, request.method(), &view.path).await?, None)),
        Backend::Pool(pool) => forward_to_pool(edge, pool, service, conn, request, record).await,
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
