//! Test DSL: in-process upstreams and an edge started from a TOML file in a temp dir.
//!
//! `TestEdge::new().service(...).route(...).start().await` writes a real configuration
//! file, starts the edge through `app::start` on port 0 and exposes its bound addresses.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub mod browser;
pub mod client;
#[allow(dead_code, reason = "shared with the Redis store's unit tests, which use other parts")]
pub mod external;
pub mod netns;

/// Tests that measure the process's memory wait until no other test edge runs and keep new
/// ones from starting while they measure ([`MemoryQuiet::quiet`]); every other running test
/// edge counts itself busy from its start until it is stopped or dropped
/// ([`MemoryQuiet::busy`]). A waiting measurement never blocks an edge from starting (a
/// test starting its second edge while holding its first could otherwise wait for ever).
pub static MEMORY_QUIET: MemoryQuiet = MemoryQuiet(std::sync::Mutex::new((0, false)));

/// Running edges, and whether a memory measurement is on.
pub struct MemoryQuiet(std::sync::Mutex<(usize, bool)>);

/// One running edge, counted.
pub struct Busy(&'static MemoryQuiet);

/// A memory measurement in progress.
pub struct Quiet(&'static MemoryQuiet);

impl MemoryQuiet {
    /// Counts one more running edge (waits while a measurement is on).
    pub async fn busy(&'static self) -> Busy {
        loop {
            {
                let mut state = self.0.lock().unwrap_or_else(|p| p.into_inner());
                if !state.1 {
                    state.0 += 1;
                    return Busy(self);
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until no edge runs, then keeps new ones from starting until dropped.
    pub async fn quiet(&'static self) -> Quiet {
        loop {
            {
                let mut state = self.0.lock().unwrap_or_else(|p| p.into_inner());
                if state.0 == 0 && !state.1 {
                    state.1 = true;
                    return Quiet(self);
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.0.lock().unwrap_or_else(|p| p.into_inner()).0 -= 1;
    }
}

impl Drop for Quiet {
    fn drop(&mut self) {
        self.0.0.lock().unwrap_or_else(|p| p.into_inner()).1 = false;
    }
}

/// What an upstream saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body_len: usize,
    /// The request target exactly as received (origin form: path and query).
    pub target: String,
    /// Every header field in arrival order, repeated names included (names lower-case).
    pub header_list: Vec<(String, String)>,
    /// The request body.
    pub body: Bytes,
}

impl Seen {
    /// Every value of header `name` (case-insensitive), in arrival order.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.header_list.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
    }
}

/// An in-process HTTP/1.1 upstream on 127.0.0.1:0.
///
/// Paths: `/slow/<ms>` sleeps then answers; `/status/<code>` answers that code, and so does
/// `/slow/<ms>/status/<code>` after the sleep; anything else answers `200 <name>`. A path
/// containing `/vary/` answers with `Vary: Accept-Language` and the request's
/// `Accept-Language` appended to the body; one containing `/leaky/` adds headers an edge must
/// not pass on from a preflight (`Set-Cookie`, `X-Leak`) and answers a CORS preflight with
/// `200` and a body. Every request is recorded.
#[derive(Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    pub name: &'static str,
    pub hits: Arc<AtomicUsize>,
    pub in_flight: Arc<AtomicUsize>,
    pub max_in_flight: Arc<AtomicUsize>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub connections: Arc<AtomicUsize>,
    /// The accept loop and every connection task, so `stop` can end them all.
    tasks: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Upstream {
    pub async fn start(name: &'static str) -> Upstream {
        Self::start_with(name, None).await
    }

    /// An upstream speaking TLS with a fresh certificate for 127.0.0.1; returns the CA
    /// (self-signed certificate) PEM path to trust.
    pub async fn start_tls(name: &'static str, dir: &Path) -> (Upstream, PathBuf) {
        use rustls_pki_types::pem::PemObject;
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap().self_signed(&key).unwrap();
        let pem = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&pem, cert.pem()).unwrap();
        let chain = vec![cert.der().clone()];
        let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        (Self::start_with(name, Some(acceptor)).await, pem)
    }

    async fn start_with(name: &'static str, tls: Option<tokio_rustls::TlsAcceptor>) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = Upstream {
            addr: listener.local_addr().unwrap(),
            name,
            hits: Arc::default(),
            in_flight: Arc::default(),
            max_in_flight: Arc::default(),
            seen: Arc::default(),
            connections: Arc::default(),
            tasks: Arc::default(),
        };
        let u = upstream.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                u.connections.fetch_add(1, Ordering::SeqCst);
                let u2 = u.clone();
                let tls = tls.clone();
                let u = u2.clone();
                let conn = tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let u = u.clone();
                        async move { Ok::<_, std::convert::Infallible>(u.answer(req).await) }
                    });
                    let builder = hyper::server::conn::http1::Builder::new();
                    match tls {
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(tcp), service).with_upgrades().await;
                        }
                        Some(acceptor) => {
                            let Ok(stream) = acceptor.accept(tcp).await else { return };
                            let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                        }
                    }
                });
                u2.tasks.lock().unwrap().push(conn.abort_handle());
            }
        });
        upstream.tasks.lock().unwrap().push(accept.abort_handle());
        upstream
    }

    async fn answer(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        self.hits.fetch_add(1, Ordering::SeqCst);
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let path = req.uri().path().to_string();
        let target = req.uri().to_string();
        let method = req.method().to_string();
        let cors_origin = (req.method() == hyper::Method::OPTIONS).then(|| req.headers().get("origin").cloned()).flatten();
        let header_list: Vec<(String, String)> =
            req.headers().iter().map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned())).collect();
        let headers = req.headers().iter().map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string())).collect();
        let language = req.headers().get("accept-language").map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        self.seen.lock().unwrap().push(Seen {
            method,
            path: path.clone(),
            headers,
            body_len: body.len(),
            target,
            header_list,
            body: body.clone(),
        });
        let mut status = 200;
        if let Some(rest) = path.strip_prefix("/slow/") {
            let (ms, after) = rest.split_once('/').unwrap_or((rest, ""));
            tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(100))).await;
            if let Some(code) = after.strip_prefix("status/") {
                status = code.parse().unwrap_or(500);
            }
        }
        if let Some(code) = path.strip_prefix("/status/") {
            status = code.parse().unwrap_or(500);
        }
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        let vary = path.contains("/vary/");
        let leaky = path.contains("/leaky/");
        let text = match (&language, vary) {
            (Some(language), true) => format!("{} {} {language}", self.name, body.len()),
            _ => format!("{} {}", self.name, body.len()),
        };
        let mut response = Response::new(Full::new(Bytes::from(text)));
        *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
        response.headers_mut().insert("connection", "keep-alive, x-upstream-private".parse().unwrap());
        response.headers_mut().insert("x-upstream-private", "secret".parse().unwrap());
        if vary {
            response.headers_mut().insert("vary", "Accept-Language".parse().unwrap());
        }
        if leaky {
            response.headers_mut().insert("set-cookie", "JSESSIONID=leaked; Path=/".parse().unwrap());
            response.headers_mut().insert("x-leak", "upstream-only".parse().unwrap());
        }
        if let Some(origin) = cors_origin {
            *response.status_mut() = hyper::StatusCode::NO_CONTENT;
            *response.body_mut() = Full::new(Bytes::new());
            if leaky {
                *response.status_mut() = hyper::StatusCode::OK;
                *response.body_mut() = Full::new(Bytes::from_static(b"upstream preflight body"));
            }
            let h = response.headers_mut();
            h.insert("access-control-allow-origin", origin);
            h.insert("access-control-allow-methods", "GET, POST".parse().unwrap());
            h.insert("access-control-allow-headers", "authorization, content-type".parse().unwrap());
            h.insert("access-control-allow-credentials", "true".parse().unwrap());
            h.insert("access-control-max-age", "600".parse().unwrap());
        }
        response
    }

    /// Stops accepting and closes every open connection.
    pub fn stop(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn last_seen(&self) -> Seen {
        self.seen.lock().unwrap().last().cloned().expect("upstream saw a request")
    }
}

/// A WebSocket echo upstream (tokio-tungstenite server).
pub async fn websocket_echo_upstream() -> SocketAddr {
    use futures_util::{SinkExt, StreamExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                // Like an XMPP server: pick the first offered subprotocol.
                #[allow(clippy::result_large_err, reason = "the callback signature is tungstenite's")]
                let pick = |request: &tokio_tungstenite::tungstenite::handshake::server::Request,
                            mut response: tokio_tungstenite::tungstenite::handshake::server::Response| {
                    let first = request
                        .headers()
                        .get("sec-websocket-protocol")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.split(',').next())
                        .map(|p| p.trim().to_string());
                    if let Some(first) = first {
                        response.headers_mut().insert("sec-websocket-protocol", first.parse().unwrap());
                    }
                    Ok(response)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, pick).await else { return };
                while let Some(Ok(msg)) = ws.next().await {
                    if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// An address where nothing listens (bound, then closed).
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// Builder of a test edge configuration.
pub struct TestEdge {
    pub dir: tempfile::TempDir,
    server_extra: String,
    sections: Vec<String>,
    listeners: Vec<String>,
    /// This edge's test measures memory (it holds [`MEMORY_QUIET`]'s quiet itself).
    measuring_memory: bool,
}

/// A running test edge.
pub struct RunningEdge {
    pub dir: tempfile::TempDir,
    pub running: Option<portcullis::app::Running>,
    pub http: SocketAddr,
    pub https: Option<SocketAddr>,
    pub admin: SocketAddr,
    pub config_path: PathBuf,
    /// Keeps memory-measuring tests from running beside this edge.
    _busy: Option<Busy>,
}

pub const ADMIN_TOKEN: &str = "test-admin-token-123";

impl TestEdge {
    pub fn new() -> TestEdge {
        TestEdge {
            dir: tempfile::tempdir().unwrap(),
            server_extra: String::new(),
            sections: Vec::new(),
            listeners: vec!["[[listener]]\nname = \"http\"\naddress = \"127.0.0.1:0\"\ntls = false\n".into()],
            measuring_memory: false,
        }
    }

    /// For a test that measures the process's memory (and holds [`MEMORY_QUIET`]'s quiet).
    pub fn measuring_memory(mut self) -> Self {
        self.measuring_memory = true;
        self
    }

    /// Adds `[server]` keys (e.g. `header_read_timeout = "1s"`).
    pub fn server(mut self, keys: &str) -> Self {
        self.server_extra.push_str(keys);
        self.server_extra.push('\n');
        self
    }

    /// Adds an HTTPS listener (self-signed certificate).
    pub fn https(mut self) -> Self {
        self.listeners.push("[[listener]]\nname = \"https\"\naddress = \"127.0.0.1:0\"\ntls = true\n".into());
        self
    }

    /// Adds raw TOML.
    pub fn raw(mut self, toml: &str) -> Self {
        self.sections.push(toml.to_string());
        self
    }

    /// A proxied service with `(address, weight, max_conns)` servers, routed at `path`.
    pub fn proxy(self, name: &str, path: &str, servers: &[(SocketAddr, u32, u32)], extra: &str) -> Self {
        let mut toml = format!("[[service]]\nname = \"{name}\"\n{extra}\n");
        for (addr, weight, max_conns) in servers {
            toml.push_str(&format!("[[service.upstream]]\naddress = \"{addr}\"\nweight = {weight}\nmax_conns = {max_conns}\n"));
        }
        toml.push_str(&format!("[[route]]\npath = \"{path}\"\nservice = \"{name}\"\n"));
        self.raw(&toml)
    }

    pub fn config_text(&self) -> String {
        let mut text = format!(
            "[server]\nname = \"localhost\"\nstate_dir = \"state\"\nlog_dir = \"logs\"\n{}\n{}\n[admin]\naddress = \"127.0.0.1:0\"\ntoken = \"{ADMIN_TOKEN}\"\n",
            self.server_extra,
            self.listeners.join("\n")
        );
        for s in &self.sections {
            text.push_str(s);
            text.push('\n');
        }
        text
    }

    pub async fn start(self) -> RunningEdge {
        self.try_start().await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`TestEdge::start`], but a configuration the edge refuses (or a failed start) is
    /// an error, not a panic: for tests of settings the edge may not know yet.
    pub async fn try_start(self) -> Result<RunningEdge, String> {
        let busy = if self.measuring_memory { None } else { Some(MEMORY_QUIET.busy().await) };
        let config_path = self.dir.path().join("portcullis.toml");
        std::fs::write(&config_path, self.config_text()).unwrap();
        let config = portcullis::config::Config::load(&config_path).map_err(|e| format!("test config invalid:\n{e}"))?;
        let running = portcullis::app::start(config).await.map_err(|e| format!("edge does not start: {e:#}"))?;
        let find = |name: &str| running.listeners.iter().find(|(n, _)| n == name).map(|(_, a)| *a);
        Ok(RunningEdge {
            http: find("http").unwrap(),
            https: find("https"),
            admin: running.admin.unwrap(),
            running: Some(running),
            dir: self.dir,
            config_path,
            _busy: busy,
        })
    }
}

impl RunningEdge {
    /// Writes `text` as the edge's configuration file and asks the admin API for a reload;
    /// its answer (200, or 400 with every error).
    pub async fn reload_with(&self, text: &str) -> client::Reply {
        std::fs::write(&self.config_path, text).unwrap();
        let auth = format!("Bearer {ADMIN_TOKEN}");
        client::h1(self.admin, "POST", "/api/v1/reload", &[("authorization", &auth)], Bytes::new()).await
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join("logs").join(name)).unwrap_or_default()
    }

    /// The log `name` once it contains `needle` (up to 10 s): lines written by an event-bus
    /// subscriber (bans, notices, refused reloads) land just after the request that caused
    /// them. Returns the log as it is then, containing `needle` or not.
    pub async fn log_once(&self, name: &str, needle: &str) -> String {
        eventually(Duration::from_secs(10), || self.log(name).contains(needle)).await;
        self.log(name)
    }

    pub fn running(&self) -> &portcullis::app::Running {
        self.running.as_ref().unwrap()
    }

    pub fn state_dir(&self) -> &Path {
        self.dir.path()
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }
}

/// Sends raw bytes and reads until the peer closes or `wait` passes.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8], wait: Duration) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, tcp.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Polls `condition` every 20 ms until it holds, for at most `deadline`; whether it held.
/// Callers assert on the result with a message saying what never happened.
pub async fn eventually(deadline: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + deadline;
    while tokio::time::Instant::now() < end {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    condition()
}

/// [`eventually`] for a condition that must itself wait (a request, a query): polled every
/// 20 ms until it holds, for at most `deadline`; whether it held.
pub async fn eventually_async<F, Fut>(deadline: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if condition().await {
            return true;
        }
        if tokio::time::Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An `Authorization: Basic` value.
pub fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

/// An argon2 PHC hash of `password` (fixed salt: tests only).
pub fn argon2_hash(password: &str) -> String {
    use argon2::PasswordHasher;
    let salt = argon2::password_hash::SaltString::from_b64("c29tZXNhbHRzb21lc2FsdA").unwrap();
    argon2::Argon2::default().hash_password(password.as_bytes(), &salt).unwrap().to_string()
}

/// An edge whose service `desk` (routed at `/`) needs Basic auth checked against a local
/// users file holding alice / pw; `extra` is appended to `[auth.basic]`.
pub async fn users_file_edge(up: &Upstream, extra: &str) -> RunningEdge {
    users_file_edge_on(TestEdge::new(), up, extra).await
}

/// [`users_file_edge`] from `builder`.
pub async fn users_file_edge_on(builder: TestEdge, up: &Upstream, extra: &str) -> RunningEdge {
    let file = builder.dir.path().join("users.toml");
    std::fs::write(&file, format!("[users]\nalice = \"{}\"\n", argon2_hash("pw"))).unwrap();
    builder
        .proxy("desk", "/", &[(up.addr, 1, 0)], "auth = \"basic\"")
        .raw(&format!("[auth.basic]\nusers_file = \"{}\"\n{extra}", file.display()))
        .start()
        .await
}

/// Starts `args` inside the network namespace `ns` (`ip netns exec`), its output discarded.
pub fn spawn_in_netns(ns: &str, args: &[&str]) -> std::process::Child {
    std::process::Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// Sends SIGTERM to `child` and waits up to `within` for it to end (a clean shutdown);
/// kills it and fails the test when it does not.
pub fn stop_with_sigterm(mut child: std::process::Child, within: Duration) {
    let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    for _ in 0..within.as_millis() / 50 {
        if child.try_wait().unwrap().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("process did not stop on SIGTERM within {within:?}");
}
