//! Hostile input against a real edge over real sockets, written to the canonical-request
//! contract (DESIGN §1: one canonical path, one authority, one credential; CORS preflights;
//! the public-path cache; HTTP/1 framing; JWT; the shield under concurrency).
//!
//! Every case is data: a name, the bytes (or HTTP/2 request) a client sends, and what must
//! happen — the status(es) the client gets AND exactly what the recording upstreams receive
//! (nothing, or which upstream got which method, target, `Host`, `Authorization` and body
//! length). Each `#[tokio::test]` runs a table against one deployment, collects every
//! mismatch and prints each failing case with got/expected before failing, so one run shows
//! them all. `hostile_inventory` counts the cases without starting anything.
//!
//! The deployment is Finesse-like (see [`Deployment`]): `finesse` (Basic, public
//! `/desktop/assets/` and `=/favicon.ico`) and `open` (no auth) share ONE upstream
//! (`tomcat`), so a request that lands on `open` but that the upstream would resolve into
//! finesse is observable; `cuic` (JWT) and the host route `desktop.example.com` → `hosted`
//! (Basic) have their own upstreams.
//!
//! Run: `cargo test --test it hostile` (a class: `cargo test --test it hostile::paths`).
//! `HOSTILE_VERBOSE=1` also prints every passing case, and with `hostile_inventory
//! -- --nocapture` every case with its expectation. Failures are tagged `[conflict]`
//! (the literal contract would let the shared upstream serve a protected path: a refusal is
//! expected instead), `[slash/dot order]` (both orders of merging slashes and resolving
//! dot-segments are accepted) or `[ambiguous]` (see the case's comment).

mod cache;
mod cors;
mod credentials;
mod framing;
mod hosts;
mod jwt;
mod model;
mod paths;
mod shield;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{RunningEdge, Seen, TestEdge, Upstream, argon2_hash, basic};

pub const USER: &str = "alice";
pub const PASSWORD: &str = "pw";
pub const JWT_SECRET: &str = "hostile-hs256-secret-of-at-least-32-bytes!";
pub const ISSUER: &str = "https://ids.example.com";
pub const AUDIENCE: &str = "cuic";
/// The `Host` of ordinary cases (routes by path only).
pub const EDGE_HOST: &str = "edge.example.com";
/// The host of the host route to `hosted`.
pub const DESKTOP_HOST: &str = "desktop.example.com";
/// How long one exchange may take.
pub const EXCHANGE: Duration = Duration::from_secs(4);
/// How long one table may take.
pub const TABLE: Duration = Duration::from_secs(240);

pub fn good_basic() -> String {
    basic(USER, PASSWORD)
}

// ---------------------------------------------------------------------------------------
// Expectations
// ---------------------------------------------------------------------------------------

/// What the upstream must (not) receive as `Authorization`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authz {
    /// No `Authorization` field at all.
    Absent,
    /// Exactly one field, with this value.
    Exactly(String),
    /// Not constrained by the contract.
    Any,
}

/// A constraint on one header field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderWant {
    Absent,
    Present,
    /// Exactly one field with this value.
    Exactly(String),
}

/// One request an upstream must receive.
#[derive(Debug, Clone)]
pub struct Want {
    pub upstream: &'static str,
    pub method: String,
    pub target: String,
    pub host: String,
    pub authz: Authz,
    pub body_len: usize,
    /// The exact body, when the case cares.
    pub body_bytes: Option<Vec<u8>>,
    pub headers: Vec<(String, HeaderWant)>,
}

impl Want {
    pub fn new(upstream: &'static str, method: &str, target: &str, host: &str, authz: Authz) -> Want {
        Want {
            upstream,
            method: method.to_string(),
            target: target.to_string(),
            host: host.to_string(),
            authz,
            body_len: 0,
            body_bytes: None,
            headers: Vec::new(),
        }
    }

    pub fn body(mut self, len: usize) -> Want {
        self.body_len = len;
        self
    }

    pub fn body_exact(mut self, bytes: &[u8]) -> Want {
        self.body_len = bytes.len();
        self.body_bytes = Some(bytes.to_vec());
        self
    }

    pub fn header(mut self, name: &str, want: HeaderWant) -> Want {
        self.headers.push((name.to_string(), want));
        self
    }

    fn check(&self, upstream: &str, seen: &Seen) -> bool {
        let host = seen.all("host");
        let authz = seen.all("authorization");
        let authz_ok = match &self.authz {
            Authz::Absent => authz.is_empty(),
            Authz::Exactly(v) => authz == [v.as_str()],
            Authz::Any => true,
        };
        upstream == self.upstream
            && seen.method == self.method
            && seen.target == self.target
            && host == [self.host.as_str()]
            && authz_ok
            && seen.body_len == self.body_len
            && self.body_bytes.as_ref().is_none_or(|b| seen.body.as_ref() == b.as_slice())
            && self.headers.iter().all(|(name, want)| header_ok(&seen.all(name), want))
    }
}

fn header_ok(values: &[&str], want: &HeaderWant) -> bool {
    match want {
        HeaderWant::Absent => values.is_empty(),
        HeaderWant::Present => !values.is_empty(),
        HeaderWant::Exactly(v) => values == [v.as_str()],
    }
}

impl std::fmt::Display for Want {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {} host={:?} authz={:?} body={}", self.upstream, self.method, self.target, self.host, self.authz, self.body_len)?;
        for (name, want) in &self.headers {
            write!(f, " {name}={want:?}")?;
        }
        Ok(())
    }
}

fn describe_seen(upstream: &str, seen: &Seen) -> String {
    let authz: Vec<&str> = seen.all("authorization");
    let mut text =
        format!("{upstream} {} {} host={:?} authz={:?} body={}", seen.method, seen.target, seen.all("host"), authz, seen.body_len);
    for name in ["cookie", "upgrade", "sec-websocket-protocol", "http2-settings"] {
        let values = seen.all(name);
        if !values.is_empty() {
            let _ = write!(text, " {name}={values:?}");
        }
    }
    text
}

/// One acceptable result of a case.
#[derive(Debug, Clone, Default)]
pub struct Expect {
    /// Acceptable statuses of the 1st, 2nd, … response on the connection (interim 1xx other
    /// than 101 ignored). `0` in a set: the response may be missing (connection closed), and
    /// then no later one may come. No response beyond the listed ones may come.
    pub responses: Vec<Vec<u16>>,
    /// Exactly these requests reach the upstreams (any order), nothing else.
    pub seen: Vec<Want>,
    /// Constraints on the first response's headers.
    pub response_headers: Vec<(String, HeaderWant)>,
    /// The first response's body must be empty.
    pub empty_body: bool,
    pub body_contains: Vec<String>,
    pub body_lacks: Vec<String>,
    /// The ALPN protocol a TLS case must have negotiated (its precondition).
    pub alpn: Option<String>,
}

impl Expect {
    /// One response with this status; nothing reaches an upstream unless `forwarded`.
    pub fn status(status: u16) -> Expect {
        Expect { responses: vec![vec![status]], ..Expect::default() }
    }

    pub fn statuses(statuses: &[u16]) -> Expect {
        Expect { responses: vec![statuses.to_vec()], ..Expect::default() }
    }

    /// A sequence of responses on one connection.
    pub fn sequence(responses: &[&[u16]]) -> Expect {
        Expect { responses: responses.iter().map(|r| r.to_vec()).collect(), ..Expect::default() }
    }

    pub fn forwarded(mut self, want: Want) -> Expect {
        self.seen.push(want);
        self
    }

    pub fn response_header(mut self, name: &str, want: HeaderWant) -> Expect {
        self.response_headers.push((name.to_string(), want));
        self
    }

    pub fn empty_body(mut self) -> Expect {
        self.empty_body = true;
        self
    }

    pub fn body_contains(mut self, text: &str) -> Expect {
        self.body_contains.push(text.to_string());
        self
    }

    pub fn body_lacks(mut self, text: &str) -> Expect {
        self.body_lacks.push(text.to_string());
        self
    }

    pub fn alpn(mut self, protocol: &str) -> Expect {
        self.alpn = Some(protocol.to_string());
        self
    }

    fn check(&self, outcome: &Outcome, seen: &[(&'static str, Seen)]) -> Result<(), ()> {
        if self.alpn.is_some() && self.alpn != outcome.alpn {
            return Err(());
        }
        let responses: Vec<&Response> = outcome.responses.iter().filter(|r| r.status == 101 || r.status >= 200).collect();
        let mut ended = false;
        for (i, allowed) in self.responses.iter().enumerate() {
            match responses.get(i) {
                Some(r) if !ended && allowed.contains(&r.status) => {}
                None if allowed.contains(&0) => ended = true,
                _ => return Err(()),
            }
        }
        if responses.len() > self.responses.len() {
            return Err(());
        }
        if let Some(first) = responses.first() {
            for (name, want) in &self.response_headers {
                if !header_ok(&first.all(name), want) {
                    return Err(());
                }
            }
            let body = String::from_utf8_lossy(&first.body);
            if (self.empty_body && !first.body.is_empty())
                || self.body_contains.iter().any(|t| !body.contains(t.as_str()))
                || self.body_lacks.iter().any(|t| body.contains(t.as_str()))
            {
                return Err(());
            }
        } else if !self.response_headers.is_empty() || !self.body_contains.is_empty() {
            return Err(());
        }
        if seen.len() != self.seen.len() {
            return Err(());
        }
        let mut used = vec![false; seen.len()];
        for want in &self.seen {
            let found = seen.iter().enumerate().position(|(i, (up, s))| !used[i] && want.check(up, s));
            match found {
                Some(i) => used[i] = true,
                None => return Err(()),
            }
        }
        Ok(())
    }
}

impl std::fmt::Display for Expect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let responses: Vec<String> = self
            .responses
            .iter()
            .map(|set| set.iter().map(|s| if *s == 0 { "closed".to_string() } else { s.to_string() }).collect::<Vec<_>>().join("|"))
            .collect();
        write!(f, "responses=[{}]", responses.join(", "))?;
        if let Some(alpn) = &self.alpn {
            write!(f, " alpn={alpn}")?;
        }
        for (name, want) in &self.response_headers {
            write!(f, " resp.{name}={want:?}")?;
        }
        if self.empty_body {
            write!(f, " empty-body")?;
        }
        for t in &self.body_contains {
            write!(f, " body∋{t:?}")?;
        }
        for t in &self.body_lacks {
            write!(f, " body∌{t:?}")?;
        }
        if self.seen.is_empty() {
            write!(f, " upstream=nothing")
        } else {
            let seen: Vec<String> = self.seen.iter().map(|w| w.to_string()).collect();
            write!(f, " upstream=[{}]", seen.join("; "))
        }
    }
}

// ---------------------------------------------------------------------------------------
// Cases and what a client got
// ---------------------------------------------------------------------------------------

/// An HTTP/2 request (prior knowledge on the plain listener, or over TLS with ALPN h2).
#[derive(Debug, Clone)]
pub struct H2Request {
    pub method: String,
    /// Absolute URI: its authority becomes `:authority`.
    pub uri: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// What a case sends.
#[derive(Debug, Clone)]
pub enum Wire {
    /// Raw bytes on a fresh TCP connection to the plain listener.
    Raw(Vec<u8>),
    /// Raw bytes, then (after `pause`) more bytes on the same connection.
    RawPaced(Vec<u8>, Duration, Vec<u8>),
    /// One HTTP/2 request on a fresh prior-knowledge connection.
    H2(H2Request),
    /// Raw bytes after a TLS handshake offering these ALPN protocols.
    Tls { alpn: Vec<Vec<u8>>, bytes: Vec<u8> },
    /// One HTTP/2 request over TLS with ALPN `h2`.
    TlsH2(H2Request),
}

/// One case of a table.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub wire: Wire,
    /// Any of these is a pass (more than one only where the contract is ambiguous).
    pub expect: Vec<Expect>,
    /// e.g. `conflict` (see `model::CONFLICT`) or `ambiguous`.
    pub tag: Option<&'static str>,
}

impl Case {
    pub fn new(name: impl Into<String>, wire: Wire, expect: Expect) -> Case {
        Case { name: name.into(), wire, expect: vec![expect], tag: None }
    }

    pub fn or(mut self, alternative: Expect) -> Case {
        self.expect.push(alternative);
        self
    }

    pub fn tagged(mut self, tag: &'static str) -> Case {
        self.tag = Some(tag);
        self
    }
}

/// One HTTP response as parsed off the wire.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
    }
}

/// What the client got.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub responses: Vec<Response>,
    /// Raw bytes received (raw and TLS exchanges).
    pub raw: Vec<u8>,
    /// A transport or protocol error (HTTP/2, TLS).
    pub error: Option<String>,
    /// The ALPN protocol the TLS handshake negotiated.
    pub alpn: Option<String>,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let statuses: Vec<String> = self.responses.iter().map(|r| r.status.to_string()).collect();
        write!(f, "responses=[{}]", statuses.join(", "))?;
        if let Some(first) = self.responses.first() {
            let interesting: Vec<String> = first
                .headers
                .iter()
                .filter(|(k, _)| {
                    k.starts_with("access-control") || ["x-portcullis-cache", "set-cookie", "x-leak", "retry-after"].contains(&k.as_str())
                })
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            if !interesting.is_empty() {
                write!(f, " headers={interesting:?}")?;
            }
            if !first.body.is_empty() {
                let body = String::from_utf8_lossy(&first.body);
                write!(f, " body={:?}", body.chars().take(80).collect::<String>())?;
            }
        }
        if self.responses.is_empty() && !self.raw.is_empty() {
            write!(f, " raw={:?}", String::from_utf8_lossy(&self.raw[..self.raw.len().min(80)]))?;
        }
        if let Some(e) = &self.error {
            write!(f, " error={e:?}")?;
        }
        if let Some(alpn) = &self.alpn {
            write!(f, " alpn={alpn}")?;
        }
        Ok(())
    }
}

/// Parses every HTTP/1.x response in `raw` (bodies by Content-Length or chunked, else to the
/// end).
pub fn parse_responses(raw: &[u8]) -> Vec<Response> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < raw.len() {
        let rest = &raw[pos..];
        if !rest.starts_with(b"HTTP/1.") {
            break;
        }
        let Some(head_end) = rest.windows(4).position(|w| w == b"\r\n\r\n") else { break };
        let head = String::from_utf8_lossy(&rest[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let status: u16 = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let headers: Vec<(String, String)> =
            lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string())).collect();
        let mut body_start = head_end + 4;
        let get = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let body: Vec<u8>;
        if (100..200).contains(&status) || status == 204 || status == 304 {
            body = Vec::new();
        } else if let Some(len) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
            let end = (body_start + len).min(rest.len());
            body = rest[body_start..end].to_vec();
            body_start = end;
        } else if get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
            let mut decoded = Vec::new();
            let mut p = body_start;
            loop {
                let Some(line_end) = rest[p..].windows(2).position(|w| w == b"\r\n") else {
                    p = rest.len();
                    break;
                };
                let size_text = String::from_utf8_lossy(&rest[p..p + line_end]).into_owned();
                let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
                p += line_end + 2;
                if size == 0 {
                    // Skip trailers up to the empty line.
                    match rest[p..].windows(2).position(|w| w == b"\r\n") {
                        Some(0) => p += 2,
                        Some(_) => {
                            p = rest[p..].windows(4).position(|w| w == b"\r\n\r\n").map_or(rest.len(), |e| p + e + 4);
                        }
                        None => p = rest.len(),
                    }
                    break;
                }
                let end = (p + size).min(rest.len());
                decoded.extend_from_slice(&rest[p..end]);
                p = (end + 2).min(rest.len());
            }
            body = decoded;
            body_start = p;
        } else {
            body = rest[body_start..].to_vec();
            body_start = rest.len();
        }
        out.push(Response { status, headers, body });
        pos += body_start;
    }
    out
}

/// Reads until the peer closes, an error, or `wait` passes.
async fn read_all<S: tokio::io::AsyncRead + Unpin>(stream: &mut S, wait: Duration) -> (Vec<u8>, Option<String>) {
    let mut out = Vec::new();
    let mut error = None;
    let _ = tokio::time::timeout(wait, async {
        let mut buf = vec![0u8; 16384];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) => {
                    error = Some(e.to_string());
                    return;
                }
            }
        }
    })
    .await;
    (out, error)
}

/// Writes `bytes` (errors ignored: the edge may close early) and reads everything back.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> Outcome {
    let Ok(mut tcp) = TcpStream::connect(addr).await else { return Outcome { error: Some("connect failed".into()), ..Outcome::default() } };
    let _ = tcp.write_all(bytes).await;
    let (raw, error) = read_all(&mut tcp, EXCHANGE).await;
    Outcome { responses: parse_responses(&raw), raw, error, alpn: None }
}

async fn raw_paced(addr: SocketAddr, first: &[u8], pause: Duration, second: &[u8]) -> Outcome {
    let Ok(mut tcp) = TcpStream::connect(addr).await else { return Outcome { error: Some("connect failed".into()), ..Outcome::default() } };
    let _ = tcp.write_all(first).await;
    let mut early = Vec::new();
    let _ = tokio::time::timeout(pause, async {
        let mut buf = vec![0u8; 4096];
        while let Ok(n) = tcp.read(&mut buf).await {
            if n == 0 {
                return;
            }
            early.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    let _ = tcp.write_all(second).await;
    let (rest, error) = read_all(&mut tcp, EXCHANGE).await;
    early.extend_from_slice(&rest);
    Outcome { responses: parse_responses(&early), raw: early, error, alpn: None }
}

/// One HTTP/2 request over `io`.
pub async fn h2_exchange<I>(io: I, request: &H2Request) -> Outcome
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let result = tokio::time::timeout(EXCHANGE, async {
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io)).await.map_err(|e| e.to_string())?;
        let driver = tokio::spawn(conn);
        let mut builder = hyper::Request::builder().method(request.method.as_str()).uri(request.uri.as_str());
        for (k, v) in &request.headers {
            builder = builder.header(k.as_str(), v.as_str());
        }
        let req = builder.body(Full::new(Bytes::from(request.body.clone()))).map_err(|e| e.to_string())?;
        let answer = send.send_request(req).await;
        let outcome = match answer {
            Ok(response) => {
                let status = response.status().as_u16();
                let headers = response
                    .headers()
                    .iter()
                    .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                    .collect();
                let body = response.into_body().collect().await.map(|b| b.to_bytes().to_vec()).unwrap_or_default();
                Ok(Response { status, headers, body })
            }
            Err(e) => Err(format!("{e:?}")),
        };
        driver.abort();
        outcome
    })
    .await;
    match result {
        Ok(Ok(response)) => Outcome { responses: vec![response], ..Outcome::default() },
        Ok(Err(error)) => Outcome { error: Some(error), ..Outcome::default() },
        Err(_) => Outcome { error: Some("timed out".into()), ..Outcome::default() },
    }
}

/// A TLS client trusting the edge's certificate, offering `alpn`.
pub async fn tls_connect(
    addr: SocketAddr,
    cert_pem: &std::path::Path,
    alpn: &[Vec<u8>],
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(cert_pem).map_err(|e| e.to_string())? {
        roots.add(cert.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.to_vec();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = rustls_pki_types::ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    match tokio::time::timeout(EXCHANGE, connector.connect(name, tcp)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(format!("TLS handshake failed: {e}")),
        Err(_) => Err("TLS handshake timed out".into()),
    }
}

/// Sends a case's wire to the deployment's edge.
pub async fn send(edge: &RunningEdge, wire: &Wire) -> Outcome {
    match wire {
        Wire::Raw(bytes) => raw_exchange(edge.http, bytes).await,
        Wire::RawPaced(first, pause, second) => raw_paced(edge.http, first, *pause, second).await,
        Wire::H2(request) => match TcpStream::connect(edge.http).await {
            Ok(tcp) => h2_exchange(tcp, request).await,
            Err(e) => Outcome { error: Some(e.to_string()), ..Outcome::default() },
        },
        Wire::Tls { alpn, bytes } => {
            let Some(https) = edge.https else { return Outcome { error: Some("no TLS listener".into()), ..Outcome::default() } };
            let Some(cert) = edge.running().certificate.clone() else {
                return Outcome { error: Some("no certificate".into()), ..Outcome::default() };
            };
            match tls_connect(https, &cert.cert, alpn).await {
                Ok(mut tls) => {
                    let alpn =
                        Some(tls.get_ref().1.alpn_protocol().map_or_else(|| "-".to_string(), |p| String::from_utf8_lossy(p).into_owned()));
                    let _ = tls.write_all(bytes).await;
                    let _ = tls.flush().await;
                    let (raw, error) = read_all(&mut tls, EXCHANGE).await;
                    Outcome { responses: parse_responses(&raw), raw, error, alpn }
                }
                Err(e) => Outcome { error: Some(e), ..Outcome::default() },
            }
        }
        Wire::TlsH2(request) => {
            let Some(https) = edge.https else { return Outcome { error: Some("no TLS listener".into()), ..Outcome::default() } };
            let Some(cert) = edge.running().certificate.clone() else {
                return Outcome { error: Some("no certificate".into()), ..Outcome::default() };
            };
            match tls_connect(https, &cert.cert, &[b"h2".to_vec()]).await {
                Ok(tls) => {
                    let alpn =
                        Some(tls.get_ref().1.alpn_protocol().map_or_else(|| "-".to_string(), |p| String::from_utf8_lossy(p).into_owned()));
                    Outcome { alpn, ..h2_exchange(tls, request).await }
                }
                Err(e) => Outcome { error: Some(e), ..Outcome::default() },
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Request builders
// ---------------------------------------------------------------------------------------

/// An HTTP/1.1 request: `Host` (unless `None`), `headers`, `Connection: close`, `body` with
/// its Content-Length when non-empty.
pub fn h1(method: &str, target: &str, host: Option<&str>, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut text = format!("{method} {target} HTTP/1.1\r\n");
    if let Some(host) = host {
        let _ = write!(text, "Host: {host}\r\n");
    }
    for (k, v) in headers {
        let _ = write!(text, "{k}: {v}\r\n");
    }
    if !body.is_empty() {
        let _ = write!(text, "Content-Length: {}\r\n", body.len());
    }
    text.push_str("Connection: close\r\n\r\n");
    let mut bytes = text.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// `GET target` with `Host: host` and an optional Authorization.
pub fn get(target: &str, host: &str, authorization: Option<&str>) -> Wire {
    let headers: Vec<(&str, &str)> = authorization.map(|a| ("Authorization", a)).into_iter().collect();
    Wire::Raw(h1("GET", target, Some(host), &headers, b""))
}

// ---------------------------------------------------------------------------------------
// The deployment
// ---------------------------------------------------------------------------------------

/// Extra settings for a deployment.
#[derive(Default, Clone)]
pub struct Options {
    /// Keys appended to the `finesse` service table.
    pub finesse: String,
    /// Keys appended to the `cuic` service table.
    pub cuic: String,
    /// Top-level TOML appended at the end (e.g. `[protection]` keys).
    pub top: String,
    /// Leave the shield categories at their defaults (else they are disabled: the tables
    /// send many bad credentials and malformed requests from 127.0.0.1).
    pub shield: bool,
    /// Add an HTTPS listener.
    pub https: bool,
    /// `[auth.basic]` validates against this URL instead of the argon2 users file.
    pub validate_url: Option<String>,
}

/// The Finesse-like deployment every table runs against.
pub struct Deployment {
    pub edge: RunningEdge,
    pub tomcat: Upstream,
    pub cuic: Upstream,
    pub hosted: Upstream,
}

impl Deployment {
    pub async fn start(options: &Options) -> Result<Deployment, String> {
        let tomcat = Upstream::start("tomcat").await;
        let cuic = Upstream::start("cuic").await;
        let hosted = Upstream::start("hosted").await;
        let mut builder = TestEdge::new().server("max_header_bytes = 8192\nmax_headers = 40");
        if options.https {
            builder = builder.https();
        }
        let users = builder.dir.path().join("users.toml");
        std::fs::write(&users, format!("[users]\n{USER} = \"{}\"\n", argon2_hash(PASSWORD))).unwrap();
        let service = |name: &str, auth: &str, extra: &str, upstream: SocketAddr| {
            format!(
                "[[service]]\nname = \"{name}\"\nauth = \"{auth}\"\n{extra}\n[service.health_check]\nenabled = false\n[[service.upstream]]\naddress = \"{upstream}\"\n"
            )
        };
        let mut toml = String::new();
        toml.push_str(&service(
            "finesse",
            "basic",
            &format!("public_paths = [\"/desktop/assets/\", \"=/favicon.ico\"]\n{}", options.finesse),
            tomcat.addr,
        ));
        toml.push_str(&service("cuic", "jwt", &options.cuic, cuic.addr));
        toml.push_str(&service("open", "none", "", tomcat.addr));
        toml.push_str(&service("hosted", "basic", "", hosted.addr));
        for (path, svc) in [
            ("/finesse/", "finesse"),
            ("/desktop/", "finesse"),
            ("/favicon.ico", "finesse"),
            ("/cuic/", "cuic"),
            ("/public/", "open"),
            ("/", "open"),
        ] {
            let _ = write!(toml, "[[route]]\npath = \"{path}\"\nservice = \"{svc}\"\n");
        }
        let _ = write!(toml, "[[route]]\nhost = \"{DESKTOP_HOST}\"\npath = \"/\"\nservice = \"hosted\"\n");
        match &options.validate_url {
            Some(url) => {
                let _ = write!(toml, "[auth.basic]\nvalidate_url = \"{url}\"\n");
            }
            None => {
                let _ = write!(toml, "[auth.basic]\nusers_file = \"{}\"\n", users.display());
            }
        }
        let _ = write!(toml, "[auth.jwt]\nsecret = \"{JWT_SECRET}\"\nissuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\n");
        if !options.shield {
            for category in ["http-auth-failure", "http-protocol-violation", "websocket-protocol-violation", "http-resource-access-failure"]
            {
                let _ = write!(toml, "[protection.categories.{category}]\nenabled = false\n");
            }
        }
        toml.push_str(&options.top);
        match builder.raw(&toml).try_start().await {
            Ok(edge) => Ok(Deployment { edge, tomcat, cuic, hosted }),
            Err(e) => {
                for up in [&tomcat, &cuic, &hosted] {
                    up.stop();
                }
                Err(e)
            }
        }
    }

    pub fn upstreams(&self) -> [(&'static str, &Upstream); 3] {
        [("tomcat", &self.tomcat), ("cuic", &self.cuic), ("hosted", &self.hosted)]
    }

    fn lens(&self) -> [usize; 3] {
        self.upstreams().map(|(_, u)| u.seen.lock().unwrap().len())
    }

    /// Lets requests the edge is still sending arrive, and waits (bounded) until every
    /// request an upstream has started answering is recorded: a request forwarded late (e.g.
    /// after the client already got its answer) is attributed to the case that caused it.
    async fn settle(&self) {
        // Nothing to poll for yet (a late request may not have started): a short grace.
        tokio::time::sleep(Duration::from_millis(3)).await;
        let deadline = tokio::time::Instant::now() + Duration::from_millis(1500);
        while tokio::time::Instant::now() < deadline {
            if self.upstreams().iter().all(|(_, u)| u.hits() == u.seen.lock().unwrap().len()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn since(&self, before: [usize; 3]) -> Vec<(&'static str, Seen)> {
        let mut out = Vec::new();
        for (i, (name, up)) in self.upstreams().into_iter().enumerate() {
            let seen = up.seen.lock().unwrap();
            out.extend(seen[before[i].min(seen.len())..].iter().cloned().map(|s| (name, s)));
        }
        out
    }

    /// Runs `cases` in order (one connection each), recording every result in `report`.
    pub async fn run(&self, cases: &[Case], report: &mut Report) {
        for case in cases {
            let before = self.lens();
            let outcome = send(&self.edge, &case.wire).await;
            self.settle().await;
            let seen = self.since(before);
            let pass = case.expect.iter().any(|e| e.check(&outcome, &seen).is_ok());
            let result = if pass {
                Ok(())
            } else {
                let got: Vec<String> = seen.iter().map(|(up, s)| describe_seen(up, s)).collect();
                let expected: Vec<String> = case.expect.iter().map(|e| e.to_string()).collect();
                Err(format!(
                    "got      {outcome} upstream={}\n      expected {}",
                    if got.is_empty() { "nothing".to_string() } else { format!("[{}]", got.join("; ")) },
                    expected.join("\n         or ")
                ))
            };
            report.record(&case.name, case.tag, result);
        }
    }

    pub async fn stop(self) {
        self.edge.stop().await;
        for up in [&self.tomcat, &self.cuic, &self.hosted] {
            up.stop();
        }
    }
}

// ---------------------------------------------------------------------------------------
// Reporting
// ---------------------------------------------------------------------------------------

/// Collects every case's result of one table; `finish` prints all failures and fails.
pub struct Report {
    class: &'static str,
    /// Group (case name up to the first `/`) → (cases, failures).
    groups: BTreeMap<String, (usize, usize)>,
    failures: Vec<String>,
    tagged_failures: BTreeMap<&'static str, usize>,
}

impl Report {
    pub fn new(class: &'static str) -> Report {
        Report { class, groups: BTreeMap::new(), failures: Vec::new(), tagged_failures: BTreeMap::new() }
    }

    pub fn record(&mut self, name: &str, tag: Option<&'static str>, result: Result<(), String>) {
        let group = name.split('/').next().unwrap_or(name).to_string();
        let entry = self.groups.entry(group).or_default();
        entry.0 += 1;
        if result.is_ok() && std::env::var_os("HOSTILE_VERBOSE").is_some() {
            eprintln!("pass {name}");
        }
        if let Err(detail) = result {
            entry.1 += 1;
            if let Some(tag) = tag {
                *self.tagged_failures.entry(tag).or_default() += 1;
            }
            let tag = tag.map(|t| format!(" [{t}]")).unwrap_or_default();
            self.failures.push(format!("FAIL {name}{tag}\n      {detail}"));
        }
    }

    /// Records a failure for every case of a table that could not run.
    pub fn not_run(&mut self, cases: &[Case], why: &str) {
        for case in cases {
            self.record(&case.name, case.tag, Err(format!("not run: {why}")));
        }
    }

    pub fn total(&self) -> usize {
        self.groups.values().map(|(n, _)| n).sum()
    }

    pub fn finish(self) {
        let total = self.total();
        let mut summary = format!("hostile {}: {} cases, {} failed\n", self.class, total, self.failures.len());
        for (group, (n, failed)) in &self.groups {
            let _ = writeln!(summary, "  {group:<28} {n:>4} cases {failed:>4} failed");
        }
        for (tag, n) in &self.tagged_failures {
            let _ = writeln!(summary, "  (failures tagged [{tag}]: {n})");
        }
        eprintln!("{summary}");
        for failure in &self.failures {
            eprintln!("{failure}");
        }
        assert!(self.failures.is_empty(), "{summary}{} case(s) failed; every failure is printed above", self.failures.len());
    }
}

/// Starts a deployment and runs tables on it within [`TABLE`]; a deployment that does not
/// start (e.g. a setting the edge does not know yet) fails every case.
pub async fn run_tables(report: &mut Report, options: &Options, cases: &[Case]) {
    match Deployment::start(options).await {
        Ok(deployment) => {
            if tokio::time::timeout(TABLE, deployment.run(cases, report)).await.is_err() {
                report.record("harness/timeout", None, Err(format!("the table did not finish within {TABLE:?}")));
            }
            deployment.stop().await;
        }
        Err(e) => report.not_run(cases, &e.lines().take(3).collect::<Vec<_>>().join(" ")),
    }
}

/// Every table, counted without starting anything.
#[test]
fn hostile_inventory() {
    let classes: Vec<(&str, usize)> = vec![
        ("paths", paths::cases().len()),
        ("paths (case_insensitive)", paths::case_insensitive_cases().len()),
        ("hosts", hosts::cases().len()),
        ("credentials", credentials::cases().len()),
        ("cors", cors::cases().len()),
        ("cors (cors_origins, bound)", cors::configured_cases().len()),
        ("public cache", cache::cases().len()),
        ("framing", framing::cases().len()),
        ("jwt", jwt::cases().len()),
        ("shield", shield::CHECKS.len()),
    ];
    let total: usize = classes.iter().map(|(_, n)| n).sum();
    let mut text = String::new();
    for (class, n) in &classes {
        let _ = writeln!(text, "  {class:<28} {n:>4}");
    }
    eprintln!("hostile cases:\n{text}  {:<28} {total:>4}", "total");
    assert!(total >= 300, "at least 300 hostile cases, got {total}");
    let mut names = std::collections::HashSet::new();
    for case in paths::cases()
        .into_iter()
        .chain(paths::case_insensitive_cases())
        .chain(hosts::cases())
        .chain(credentials::cases())
        .chain(cors::cases())
        .chain(cors::configured_cases())
        .chain(cache::cases())
        .chain(framing::cases())
        .chain(jwt::cases())
    {
        if std::env::var_os("HOSTILE_VERBOSE").is_some() {
            let expected: Vec<String> = case.expect.iter().map(|e| e.to_string()).collect();
            eprintln!("{}\n      {}", case.name, expected.join("\n   or "));
        }
        assert!(names.insert(case.name.clone()), "duplicate case name {}", case.name);
    }
}
