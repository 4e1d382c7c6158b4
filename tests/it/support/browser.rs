//! A real headless Chromium driven over the W3C WebDriver protocol by Debian's
//! `chromedriver` (plain HTTP + JSON), for the status-page tests: started on this machine's
//! loopback (spoken to with the test HTTP client) or inside a network namespace (each call
//! is `curl` run in it), skipped with a message when chromium or chromedriver is missing
//! (`PORTCULLIS_REQUIRE_BROWSER=1`, set by `.ci/run`, fails instead). On drop chromedriver's
//! whole process group (chromedriver, chromium and its children) is killed, and the browser
//! profile removed.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use serde_json::{Value, json};

use super::client::h1;

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// chromedriver's port inside a namespace of the test's own (nothing else listens there).
const NETNS_PORT: u16 = 9515;

/// Where chromedriver listens, and so how each WebDriver call reaches it.
enum Endpoint {
    /// This machine's loopback: the test HTTP client.
    Local(SocketAddr),
    /// The loopback of network namespace `ns`: `ip netns exec ns curl`.
    Netns { ns: String, port: u16 },
}

/// A chromedriver process with one browser session.
pub struct Driver {
    process: Child,
    endpoint: Endpoint,
    session: String,
    /// The browser profile (`--user-data-dir`), removed after the browser is killed.
    profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        // chromedriver leads its own process group, which chromium and its children join.
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", self.process.id())]).status();
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

impl Driver {
    /// chromedriver on 127.0.0.1, or `None` (the test is skipped) without chromium.
    pub async fn start() -> Option<Driver> {
        if !Driver::available() {
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        Some(Driver::launch(Command::new(CHROMEDRIVER), port, Endpoint::Local(addr)).await)
    }

    /// chromedriver, and so chromium, inside network namespace `ns` (a page on that
    /// namespace's loopback is then reachable); `None` (the test is skipped) without chromium.
    pub async fn start_in_netns(ns: &str) -> Option<Driver> {
        if !Driver::available() {
            return None;
        }
        let mut command = Command::new("ip");
        command.args(["netns", "exec", ns, CHROMEDRIVER]);
        Some(Driver::launch(command, NETNS_PORT, Endpoint::Netns { ns: ns.to_string(), port: NETNS_PORT }).await)
    }

    /// Whether chromium and chromedriver are installed; otherwise the skip (or CI failure).
    pub fn available() -> bool {
        let present = |bin: &str| std::path::Path::new(bin).exists();
        if present(CHROMIUM) && present(CHROMEDRIVER) {
            return true;
        }
        super::external::missing("BROWSER", "the status-page browser test needs Debian's chromium and chromium-driver");
        false
    }

    /// Runs `command` (chromedriver) on `port` in a process group of its own, waits until it
    /// answers at `endpoint` and opens a session.
    async fn launch(mut command: Command, port: u16, endpoint: Endpoint) -> Driver {
        let process = command
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let profile = tempfile::Builder::new().prefix("pc-chromium-").tempdir().unwrap();
        let mut driver = Driver { process, endpoint, session: String::new(), profile };
        let mut ready = false;
        for _ in 0..200 {
            if driver.answers().await {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(ready, "chromedriver did not start within 10 s");
        let capabilities = json!({ "capabilities": { "alwaysMatch": { "browserName": "chrome", "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1100",
                     format!("--user-data-dir={}", driver.profile.path().display())]
        } } } });
        let (status, body) = driver.send("POST", "/session", Some(capabilities.to_string())).await.expect("chromedriver answers");
        assert_eq!(status, 200, "new session: {body}");
        let value: Value = serde_json::from_str(&body).unwrap();
        driver.session = value["value"]["sessionId"].as_str().unwrap().to_string();
        driver
    }

    /// Whether chromedriver answers yet.
    async fn answers(&self) -> bool {
        match &self.endpoint {
            Endpoint::Local(addr) => std::net::TcpStream::connect(addr).is_ok(),
            Endpoint::Netns { .. } => self.send("GET", "/status", None).await.is_some_and(|(status, _)| status == 200),
        }
    }

    /// One WebDriver request: its status and body, or `None` when chromedriver cannot be
    /// reached in the namespace.
    async fn send(&self, method: &str, path: &str, body: Option<String>) -> Option<(u16, String)> {
        match &self.endpoint {
            Endpoint::Local(addr) => {
                let reply = h1(*addr, method, path, &[("content-type", "application/json")], Bytes::from(body.unwrap_or_default())).await;
                Some((reply.status, reply.body))
            }
            Endpoint::Netns { ns, port } => {
                let url = format!("http://127.0.0.1:{port}{path}");
                let mut curl = tokio::process::Command::new("ip");
                curl.args(["netns", "exec", ns, "curl", "-s", "-m", "60", "-X", method, "-H", "content-type: application/json"]);
                curl.args(["-w", "\n%{http_code}"]);
                if let Some(body) = body {
                    curl.args(["--data-binary", &body]);
                }
                let out = curl.arg(&url).kill_on_drop(true).output().await.unwrap();
                if !out.status.success() {
                    return None;
                }
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                let (body, status) = text.rsplit_once('\n')?;
                Some((status.trim().parse().ok()?, body.to_string()))
            }
        }
    }

    /// A request on this session (`path` relative to it; empty: the session itself) that
    /// must answer 200; its `value`.
    pub async fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let path = if path.is_empty() { format!("/session/{}", self.session) } else { format!("/session/{}/{path}", self.session) };
        let body = if method == "GET" || method == "DELETE" { None } else { Some(body.to_string()) };
        let (status, reply) = self.send(method, &path, body).await.unwrap_or_else(|| panic!("{method} {path}: chromedriver is gone"));
        let value: Value = serde_json::from_str(&reply).unwrap_or(Value::Null);
        assert_eq!(status, 200, "{method} {path}: {reply}");
        value["value"].clone()
    }

    pub async fn open(&self, url: &str) {
        self.call("POST", "url", json!({ "url": url })).await;
    }

    pub async fn find(&self, css: &str) -> Option<String> {
        let path = format!("/session/{}/elements", self.session);
        let (_, reply) = self.send("POST", &path, Some(json!({"using": "css selector", "value": css}).to_string())).await?;
        let value: Value = serde_json::from_str(&reply).unwrap();
        value["value"].as_array().and_then(|a| a.first()).map(|e| e[ELEMENT].as_str().unwrap().to_string())
    }

    /// The element matching `css`, waiting (up to 5 s) for a page a click started to load.
    pub async fn element(&self, css: &str) -> String {
        for _ in 0..100 {
            if let Some(id) = self.find(css).await {
                return id;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no element {css}")
    }

    /// Whether nothing matches `css` (waiting up to 5 s for it to go).
    pub async fn gone(&self, css: &str) -> bool {
        for _ in 0..100 {
            if self.find(css).await.is_none() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    pub async fn text(&self, css: &str) -> String {
        let id = self.element(css).await;
        let reply = self.send("GET", &format!("/session/{}/element/{id}/text", self.session), None).await;
        // A stale element (the page changed under us) reads as empty; callers poll.
        reply
            .and_then(|(_, body)| serde_json::from_str::<Value>(&body).ok())
            .and_then(|v| v["value"].as_str().map(str::to_string))
            .unwrap_or_default()
    }

    /// The text of `css` once it equals `want` (waiting up to 5 s; the last text otherwise).
    pub async fn text_becomes(&self, css: &str, want: &str) -> String {
        let mut last = String::new();
        for _ in 0..100 {
            last = self.text(css).await;
            if last == want {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        last
    }

    pub async fn click(&self, css: &str) {
        let id = self.element(css).await;
        self.call("POST", &format!("element/{id}/click"), json!({})).await;
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css).await;
        self.call("POST", &format!("element/{id}/value"), json!({ "text": text })).await;
    }

    pub async fn page_source(&self) -> String {
        self.call("GET", "source", Value::Null).await.as_str().unwrap_or("").to_string()
    }

    /// A screenshot of the page, kept as `target/<name>` (a PNG); its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let shot = self.call("GET", "screenshot", Value::Null).await;
        let png = base64::engine::general_purpose::STANDARD.decode(shot.as_str().unwrap()).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target").join(name);
        std::fs::write(&target, &png).unwrap();
        target
    }
}
