//! The single map from a request failure to a status code and a safe body.
//!
//! Bodies are short, fixed texts: they never echo request data or internal addresses.
//! Every failure carries blame (client, upstream, edge) so later layers (the shield) can
//! count client-blamed failures per source.

use http::{HeaderValue, Response, StatusCode, header};

use super::body::ProxyBody;

/// Who caused a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    Client,
    Upstream,
    Edge,
}

/// Why a request was not forwarded, or forwarding failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyError {
    /// Malformed or ambiguous request (400).
    BadRequest(&'static str),
    /// A body whose chunked framing the HTTP/1 guard cut and counted already (400, not
    /// counted again).
    BodyRefused,
    /// The client cancelled the request or closed its connection before its body was read
    /// (logged as 499, as nginx does; the answer reaches no one; not a protocol violation).
    ClientGone,
    /// No route for host + path (404).
    NoRoute,
    /// A static file that does not exist (404).
    NotFound,
    /// Method not allowed on a static service (405).
    MethodNotAllowed,
    /// Credentials missing or wrong (401 + `WWW-Authenticate`).
    Unauthorized { challenge: std::sync::Arc<str> },
    /// Too many authorizations for the user (429 + `Retry-After`).
    RateLimited { retry_after_secs: u64 },
    /// The service's bound on forwarded CORS preflights is reached (429 + `Retry-After`).
    TooManyPreflights { retry_after_secs: u64 },
    /// The credential validator could not answer (503 + `Retry-After`; never "valid").
    AuthUnavailable,
    /// No server accepted a connection (502).
    UpstreamUnavailable,
    /// The upstream broke the exchange (502).
    UpstreamFailed,
    /// Every server is at `max_conns` and the queue timed out (503 + `Retry-After`).
    Overloaded,
    /// The upstream did not answer in time (504).
    UpstreamTimeout,
    /// Something failed inside the edge (500).
    Internal,
    /// The source is banned by the shield (`protection.blocked_status`, 418 by default).
    Blocked { status: u16 },
    /// This peer is in maintenance and the request would start a new session (503 +
    /// `Retry-After`).
    Maintenance { retry_after_secs: u64 },
}

impl ProxyError {
    /// Who is to blame.
    pub fn blame(&self) -> Blame {
        match self {
            ProxyError::BadRequest(_)
            | ProxyError::BodyRefused
            | ProxyError::ClientGone
            | ProxyError::NoRoute
            | ProxyError::NotFound
            | ProxyError::MethodNotAllowed
            | ProxyError::Unauthorized { .. }
            | ProxyError::RateLimited { .. }
            | ProxyError::TooManyPreflights { .. } => Blame::Client,
            ProxyError::UpstreamUnavailable | ProxyError::UpstreamFailed | ProxyError::UpstreamTimeout => Blame::Upstream,
            ProxyError::AuthUnavailable => Blame::Upstream,
            ProxyError::Overloaded | ProxyError::Internal | ProxyError::Maintenance { .. } => Blame::Edge,
            ProxyError::Blocked { .. } => Blame::Client,
        }
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_) | ProxyError::BodyRefused => StatusCode::BAD_REQUEST,
            ProxyError::ClientGone => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            ProxyError::NoRoute | ProxyError::NotFound => StatusCode::NOT_FOUND,
            ProxyError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ProxyError::RateLimited { .. } | ProxyError::TooManyPreflights { .. } => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::AuthUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::UpstreamUnavailable | ProxyError::UpstreamFailed => StatusCode::BAD_GATEWAY,
            ProxyError::Overloaded | ProxyError::Maintenance { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ProxyError::Blocked { status } => StatusCode::from_u16(*status).unwrap_or(StatusCode::IM_A_TEAPOT),
        }
    }

    /// The response sent to the client.
    pub fn into_response(self) -> Response<ProxyBody> {
        let text: &str = match &self {
            ProxyError::BadRequest(why) => why,
            ProxyError::BodyRefused => "malformed request body (chunked framing)",
            ProxyError::ClientGone => "client closed request",
            ProxyError::NoRoute | ProxyError::NotFound => "not found",
            ProxyError::MethodNotAllowed => "method not allowed",
            ProxyError::Unauthorized { .. } => "authentication required",
            ProxyError::RateLimited { .. } => "too many authorizations, retry later",
            ProxyError::TooManyPreflights { .. } => "too many preflight requests, retry later",
            ProxyError::AuthUnavailable => "authentication service unavailable, retry later",
            ProxyError::UpstreamUnavailable => "upstream unavailable",
            ProxyError::UpstreamFailed => "bad gateway",
            ProxyError::Overloaded => "service busy, retry later",
            ProxyError::UpstreamTimeout => "upstream timed out",
            ProxyError::Internal => "internal error",
            ProxyError::Blocked { .. } => "blocked",
            ProxyError::Maintenance { .. } => "in maintenance: new sessions are not accepted here, retry later",
        };
        let mut response = text_response(self.status(), text);
        let headers = response.headers_mut();
        match self {
            ProxyError::Unauthorized { challenge } => {
                if let Ok(value) = HeaderValue::from_str(&challenge) {
                    headers.insert(header::WWW_AUTHENTICATE, value);
                }
            }
            ProxyError::RateLimited { retry_after_secs }
            | ProxyError::TooManyPreflights { retry_after_secs }
            | ProxyError::Maintenance { retry_after_secs } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            }
            ProxyError::AuthUnavailable => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            ProxyError::Overloaded => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ProxyError::BadRequest(_) | ProxyError::BodyRefused => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}

/// A small `text/plain` response that caches nowhere.
pub fn text_response(status: StatusCode, text: &str) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::full(format!("{text}\n")));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_headers_follow_the_design() {
        let r = ProxyError::Unauthorized { challenge: std::sync::Arc::from("Basic realm=\"edge\"") }.into_response();
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()[header::WWW_AUTHENTICATE], "Basic realm=\"edge\"");
        let r = ProxyError::Overloaded.into_response();
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
        assert_eq!(ProxyError::UpstreamTimeout.status(), 504);
        assert_eq!(ProxyError::UpstreamUnavailable.status(), 502);
        assert_eq!(ProxyError::NoRoute.status(), 404);
        assert_eq!(ProxyError::NoRoute.blame(), Blame::Client);
        assert_eq!(ProxyError::UpstreamFailed.blame(), Blame::Upstream);
    }
}
