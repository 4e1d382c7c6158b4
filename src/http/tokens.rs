//! The edge's own token endpoints (DESIGN §2, edge tokens): `POST /portcullis/token` issues
//! an access/refresh pair for a valid credential, `POST /portcullis/token/refresh` trades a
//! refresh token for a new pair — each checked under the shield's admission like any
//! credential.

use http::{HeaderValue, Request, Response, header};
use hyper::body::Incoming;

use super::authenticate::{shielded, verdict_error};
use super::body::ProxyBody;
use super::gateway::{Edge, Gateway};
use super::record::RequestRecord;
use super::respond::ProxyError;
use crate::auth::{TokenAnswer, Verdict};
use crate::config::AuthMode;

/// Largest token-refresh request body read.
const MAX_TOKEN_REQUEST_BODY: usize = 4096;

/// The edge's own token endpoints (DESIGN §2, edge tokens).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenEndpoint {
    Issue,
    Refresh,
}

impl TokenEndpoint {
    /// The endpoint `path` names, if any.
    pub fn of(path: &str) -> Option<TokenEndpoint> {
        match path {
            "/portcullis/token" => Some(TokenEndpoint::Issue),
            "/portcullis/token/refresh" => Some(TokenEndpoint::Refresh),
            _ => None,
        }
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
        .map_err(|error| match error.downcast_ref::<hyper::Error>().map(super::body::BodyFailure::of) {
            // Cut by the framing guard (counted there), or the client left (not counted).
            Some(failure @ (super::body::BodyFailure::Refused | super::body::BodyFailure::Gone)) => {
                super::proxying::client_body_failed(failure)
            }
            _ => ProxyError::BadRequest("token request body too large or unreadable"),
        })?
        .to_bytes();
    serde_json::from_slice::<RefreshRequest>(&body)
        .map(|r| r.refresh_token)
        .map_err(|_| ProxyError::BadRequest("expected {\"refresh_token\": \"...\"}"))
}

/// `POST /portcullis/token` and `POST /portcullis/token/refresh` (the credential or refresh
/// token is checked under the shield's admission, as every credential is).
pub async fn token_endpoint(
    edge: &Edge,
    gateway: &Gateway,
    record: &mut RequestRecord,
    request: Request<Incoming>,
    endpoint: TokenEndpoint,
) -> Result<Response<ProxyBody>, ProxyError> {
    if request.method() != http::Method::POST {
        return Err(ProxyError::MethodNotAllowed);
    }
    let client = record.client();
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
