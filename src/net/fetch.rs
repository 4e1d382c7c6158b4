//! A small HTTP/1.1 client for the edge's own calls to internal servers: credential
//! validation, valid-user lists, JWKS. One connection per call (these calls are cache
//! misses, not the hot path), optional TLS with the public web roots, a deadline on the
//! whole exchange and a cap on the response body.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Largest response body accepted from an internal server.
pub const MAX_FETCH_BODY: usize = 4 * 1024 * 1024;

/// Why a call failed (the caller treats every variant as "upstream unavailable").
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The URL is not an absolute http(s) URL.
    #[error("invalid URL {0}")]
    Url(String),
    /// Connecting, TLS or the exchange failed.
    #[error("{0}")]
    Io(String),
    /// No complete answer within the deadline.
    #[error("timed out")]
    Timeout,
    /// The body exceeded [`MAX_FETCH_BODY`].
    #[error("response body too large")]
    TooLarge,
}

/// A response: status and body.
#[derive(Debug)]
pub struct Fetched {
    pub status: StatusCode,
    pub body: Bytes,
}

/// The client (cheap to clone).
#[derive(Clone)]
pub struct Fetcher {
    tls: TlsConnector,
    timeout: Duration,
}

impl Fetcher {
    /// A client whose calls end after `timeout`.
    pub fn new(timeout: Duration) -> Fetcher {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let config = rustls::ClientConfig::builder_with_provider(super::tls::provider())
            .with_safe_default_protocol_versions()
            .map(|b| b.with_root_certificates(roots).with_no_client_auth());
        // The default protocol versions always exist for aws-lc-rs; fall back to the plain
        // builder only to satisfy the type.
        let config = config.unwrap_or_else(|_| {
            rustls::ClientConfig::builder().with_root_certificates(rustls::RootCertStore::empty()).with_no_client_auth()
        });
        Fetcher { tls: TlsConnector::from(Arc::new(config)), timeout }
    }

    /// GET `url` with `headers`.
    pub async fn get(&self, url: &str, headers: HeaderMap) -> Result<Fetched, FetchError> {
        tokio::time::timeout(self.timeout, Box::pin(self.exchange(url, headers))).await.map_err(|_| FetchError::Timeout)?
    }

    async fn exchange(&self, url: &str, headers: HeaderMap) -> Result<Fetched, FetchError> {
        let uri: Uri = url.parse().map_err(|_| FetchError::Url(url.to_string()))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(FetchError::Url(url.to_string())),
        };
        let authority = uri.authority().ok_or_else(|| FetchError::Url(url.to_string()))?.clone();
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_string();
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tcp = TcpStream::connect((host.as_str(), port)).await.map_err(|e| FetchError::Io(format!("connect {authority}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let path = uri.path_and_query().map_or("/", |pq| pq.as_str());
        let mut request =
            Request::builder().method(Method::GET).uri(path).body(Empty::<Bytes>::new()).map_err(|e| FetchError::Url(e.to_string()))?;
        *request.headers_mut() = headers;
        request
            .headers_mut()
            .insert(http::header::HOST, http::HeaderValue::from_str(authority.as_str()).map_err(|e| FetchError::Url(e.to_string()))?);
        request.headers_mut().insert(http::header::USER_AGENT, http::HeaderValue::from_static("portcullis"));
        if https {
            let name = ServerName::try_from(host).map_err(|e| FetchError::Url(e.to_string()))?;
            let stream = self.tls.connect(name, tcp).await.map_err(|e| FetchError::Io(format!("tls {authority}: {e}")))?;
            send(stream, request).await
        } else {
            send(tcp, request).await
        }
    }
}

async fn send<S>(stream: S, request: Request<Empty<Bytes>>) -> Result<Fetched, FetchError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| FetchError::Io(e.to_string()))?;
    tokio::spawn(connection);
    let response = sender.send_request(request).await.map_err(|e| FetchError::Io(e.to_string()))?;
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_FETCH_BODY).collect().await.map_err(|_| FetchError::TooLarge)?.to_bytes();
    Ok(Fetched { status, body })
}
