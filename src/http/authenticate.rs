//! Edge authentication of a routed request (DESIGN §2–3): public paths and `auth = "none"`
//! pass without any credential reaching the upstream; everything else needs a credential the
//! authenticator accepts, checked under the shield's per-source admission unless cached.

use http::{HeaderValue, Request, header};
use hyper::body::Incoming;

use super::gateway::{Edge, Gateway, Service};
use super::maintenance::NewWork;
use super::record::RequestRecord;
use super::respond::ProxyError;
use super::view::{View, strip_credentials};
use crate::auth::Verdict;
use crate::auth::websocket::{self, ProtocolCredential};
use crate::config::{AuthMode, Category};

/// Edge authentication gate: public paths and `auth = "none"` pass (a public path never
/// forwards a credential); everything else needs credentials the authenticator accepts.
///
/// With `websocket_auth`, a WebSocket upgrade must carry its credential in
/// `Sec-WebSocket-Protocol` (browsers cannot set `Authorization` there); the credential
/// element is removed before the request goes on, and so is any `Authorization` field: only
/// what the edge validated reaches the upstream.
///
/// In maintenance only a credential of a current session of this service is validated;
/// anything else is a new session and gets 503 ([`NewWork`]).
pub async fn authenticate(
    edge: &Edge,
    gateway: &Gateway,
    service: &Service,
    new_work: NewWork,
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
    let client = record.client();
    new_work.admit(|| gateway.auth.session_of(request.headers()).is_some_and(|key| service.sessions.is_current(&key)))?;
    let touch = |session| {
        if service.sessions.touch(session) {
            edge.runtime.operate.note_sessions_total(gateway.services.iter().map(|s| s.sessions.tracked() as u64).sum());
        }
    };
    let websocket = record.facts.websocket;
    // Clients that cannot send credentials on an upgrade: allowed only from a source IP
    // that authenticated successfully within the service's window.
    if let Some(window) = service.config.websocket_ip_window
        && websocket
        && !record.facts.presents_credential()
        && gateway.auth.authenticated_within(client, window)
    {
        return Ok(());
    }
    if websocket && service.config.websocket_auth {
        let (authorization, protocols) = match &record.facts.protocol_credential {
            ProtocolCredential::Found { authorization, protocols } => (authorization.clone(), protocols.clone()),
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
pub async fn check_credential(
    edge: &Edge,
    gateway: &Gateway,
    record: &mut RequestRecord,
    mode: AuthMode,
    headers: &http::HeaderMap,
) -> Result<Verdict, ProxyError> {
    if let Some(verdict) = gateway.auth.cached_verdict(mode, headers) {
        return Ok(verdict);
    }
    let check = gateway.auth.authenticate(mode, headers, record.client());
    // Boxed: the credential check (validation over HTTP, the store) is a large future, and
    // the request's future — an h2 stream's whole task — should not carry its size.
    Box::pin(shielded(edge, record, headers, check, is_challenge)).await
}

/// Runs one check of a credential that is not already cached under the shield (DESIGN §3):
/// only while holding the source's admission (one check per source at a time), after the
/// ban is checked again, and a refusal is counted before the admission is released — so
/// however many streams or connections a source opens, at most `trigger` guesses are
/// checked before the ban applies, and the ban is made once. Callers answer cached
/// credentials without coming here.
pub async fn shielded<T>(
    edge: &Edge,
    record: &mut RequestRecord,
    credential: &http::HeaderMap,
    check: impl std::future::Future<Output = T>,
    refused: impl Fn(&T) -> bool,
) -> Result<T, ProxyError> {
    let presented = credential.get(header::AUTHORIZATION);
    let admission = match presented {
        Some(_) => edge.runtime.shield.admit(record.client(), AUTH_FAILURE).await,
        None => None,
    };
    if admission.is_some()
        && let Some(status) = edge.runtime.shield.check(record.client())
    {
        return Err(ProxyError::Blocked { status });
    }
    let verdict = check.await;
    if presented.is_some() && refused(&verdict) {
        edge.runtime.shield.record(record.client(), AUTH_FAILURE, record.line()).await;
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

pub fn verdict_error(verdict: Verdict) -> ProxyError {
    match verdict {
        Verdict::Allow { .. } => ProxyError::Internal,
        Verdict::Challenge { challenge } => ProxyError::Unauthorized { challenge },
        Verdict::Limited { retry_after_secs } => ProxyError::RateLimited { retry_after_secs },
        Verdict::Unavailable => ProxyError::AuthUnavailable,
    }
}
