//! The status page in a real headless Chromium, driven over the W3C WebDriver protocol by
//! Debian's `chromedriver` (plain HTTP + JSON, spoken here with the test HTTP client): sign in
//! with the admin token, see the services, switch maintenance on, unblock a banned source,
//! and keep a screenshot (`target/status-page.png`). Skipped with a message when chromium or
//! chromedriver is missing (`PORTCULLIS_REQUIRE_BROWSER=1`, set by `.ci/run`, fails instead).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use serde_json::{Value, json};

use crate::support::client::h1;
use crate::support::{ADMIN_TOKEN, TestEdge, Upstream};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

struct Driver {
    process: Child,
    addr: SocketAddr,
    session: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

impl Driver {
    async fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let path = if path.is_empty() { format!("/session/{}", self.session) } else { format!("/session/{}/{path}", self.session) };
        let body = if method == "GET" || method == "DELETE" { Bytes::new() } else { Bytes::from(body.to_string()) };
        let reply = h1(self.addr, method, &path, &[("content-type", "application/json")], body).await;
        let value: Value = serde_json::from_str(&reply.body).unwrap_or(Value::Null);
        assert_eq!(reply.status, 200, "{method} {path}: {}", reply.body);
        value["value"].clone()
    }

    async fn start() -> Option<Driver> {
        let present = |bin: &str| std::path::Path::new(bin).exists();
        if !(present("/usr/bin/chromium") && present("/usr/bin/chromedriver")) {
            crate::support::external::missing("BROWSER", "the status-page browser test needs Debian's chromium and chromium-driver");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let process = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut driver = Driver { process, addr, session: String::new() };
        assert!(
            crate::support::eventually(Duration::from_secs(10), || std::net::TcpStream::connect(addr).is_ok()).await,
            "chromedriver did not start"
        );
        let capabilities = json!({ "capabilities": { "alwaysMatch": { "browserName": "chrome", "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1100"]
        } } } });
        let reply = h1(addr, "POST", "/session", &[("content-type", "application/json")], Bytes::from(capabilities.to_string())).await;
        assert_eq!(reply.status, 200, "new session: {}", reply.body);
        let value: Value = serde_json::from_str(&reply.body).unwrap();
        driver.session = value["value"]["sessionId"].as_str().unwrap().to_string();
        Some(driver)
    }

    async fn open(&self, url: &str) {
        self.call("POST", "url", json!({ "url": url })).await;
    }

    async fn find(&self, css: &str) -> Option<String> {
        let path = format!("/session/{}/elements", self.session);
        let reply = h1(
            self.addr,
            "POST",
            &path,
            &[("content-type", "application/json")],
            Bytes::from(json!({"using": "css selector", "value": css}).to_string()),
        )
        .await;
        let value: Value = serde_json::from_str(&reply.body).unwrap();
        value["value"].as_array().and_then(|a| a.first()).map(|e| e[ELEMENT].as_str().unwrap().to_string())
    }

    /// The element matching `css`, waiting (up to 5 s) for a page a click started to load.
    async fn element(&self, css: &str) -> String {
        for _ in 0..100 {
            if let Some(id) = self.find(css).await {
                return id;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no element {css}")
    }

    /// Whether nothing matches `css` (waiting up to 5 s for it to go).
    async fn gone(&self, css: &str) -> bool {
        for _ in 0..100 {
            if self.find(css).await.is_none() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    async fn text(&self, css: &str) -> String {
        let id = self.element(css).await;
        let reply = h1(self.addr, "GET", &format!("/session/{}/element/{id}/text", self.session), &[], Bytes::new()).await;
        // A stale element (the page changed under us) reads as empty; callers poll.
        serde_json::from_str::<Value>(&reply.body).ok().and_then(|v| v["value"].as_str().map(str::to_string)).unwrap_or_default()
    }

    /// The text of `css` once it equals `want` (waiting up to 5 s; the last text otherwise).
    async fn text_becomes(&self, css: &str, want: &str) -> String {
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

    async fn click(&self, css: &str) {
        let id = self.element(css).await;
        self.call("POST", &format!("element/{id}/click"), json!({})).await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css).await;
        self.call("POST", &format!("element/{id}/value"), json!({ "text": text })).await;
    }

    async fn page_source(&self) -> String {
        self.call("GET", "source", Value::Null).await.as_str().unwrap_or("").to_string()
    }
}

#[tokio::test]
async fn sign_in_switch_maintenance_and_unblock_in_a_real_browser() {
    let Some(driver) = Driver::start().await else { return };
    let up = Upstream::start("desk").await;
    let spare = Upstream::start("spare").await;
    let edge = TestEdge::new().proxy("finesse", "/", &[(up.addr, 1, 0), (spare.addr, 0, 0)], "").start().await;
    // A banned source to unblock (five failures, as the shield counts them).
    let banned: std::net::IpAddr = "203.0.113.9".parse().unwrap();
    let line = portcullis::protect::RequestLine { method: "GET", path: "/", protocol: "HTTP/1.1", host: "x" };
    for _ in 0..5 {
        edge.running().runtime.shield.record(banned, portcullis::config::Category::HttpAuthFailure, line).await;
    }
    assert_eq!(edge.running().runtime.shield.list().len(), 1);
    let base = format!("http://{}/", edge.admin);

    // Wrong token: refused, and the page says so.
    driver.open(&base).await;
    driver.type_into("#token", "not-the-token").await;
    driver.click("#sign-in").await;
    assert_eq!(driver.text_becomes("#login-error", "Wrong token.").await, "Wrong token.");
    assert!(driver.find("#maintenance").await.is_none());

    driver.type_into("#token", ADMIN_TOKEN).await;
    driver.click("#sign-in").await;
    assert_eq!(driver.text_becomes("#maintenance", "off").await, "off");
    assert_eq!(driver.text_becomes("tr.service[data-name=finesse] td.state", "Active").await, "Active");
    let services = driver.text("#services").await;
    assert!(services.contains(&format!("{} UP weight 1", up.addr)) && services.contains("(backup)"), "{services}");
    assert!(driver.text("#blocked").await.contains("203.0.113.9"));

    driver.click("#maintenance-toggle").await;
    assert_eq!(driver.text_becomes("#maintenance", "ON — new sessions are refused").await, "ON — new sessions are refused");
    let state = driver.text_becomes("tr.service[data-name=finesse] td.state", "Inactive (Maintenance mode)").await;
    assert_eq!(state, "Inactive (Maintenance mode)");
    assert!(edge.running().runtime.operate.in_maintenance(), "the switch reached the edge");
    assert_eq!(h1(edge.admin, "GET", "/health", &[], Bytes::new()).await.status, 503);

    driver.click("tr.ban[data-source='203.0.113.9'] button.unblock").await;
    assert!(driver.gone("tr.ban").await, "the row is gone");
    assert!(edge.running().runtime.shield.list().is_empty(), "the ban is lifted");

    // A refused reload shows up with its hint.
    std::fs::write(&edge.config_path, "[server]\nname = \"localhost\"\n[[listener]]\nname = \"x\"\naddress = \"nonsense\"\n").unwrap();
    let _ = edge.running().reload().await;
    driver.open(&base).await;
    let error = driver.text("#config-error").await;
    assert!(error.contains("was refused") && error.contains("listener"), "{error}");

    let shot = driver.call("GET", "screenshot", Value::Null).await;
    let png = base64::engine::general_purpose::STANDARD.decode(shot.as_str().unwrap()).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/status-page.png");
    std::fs::write(&target, &png).unwrap();

    // Without the cookie the page is only the sign-in form, and the forms need the CSRF token.
    let anonymous = h1(edge.admin, "GET", "/", &[], Bytes::new()).await;
    assert!(anonymous.body.contains("id=\"token\"") && !anonymous.body.contains("id=\"maintenance\""));
    let forged =
        h1(edge.admin, "POST", "/ui/maintenance", &[("content-type", "application/x-www-form-urlencoded")], Bytes::from("enabled=off"))
            .await;
    assert_eq!(forged.status, 401);
    assert!(edge.running().runtime.operate.in_maintenance(), "a cookie-less form post changes nothing");
    assert!(driver.page_source().await.contains("Sign out"));
    driver.click("#sign-out").await;
    driver.element("#token").await; // signed out: the sign-in form again
    driver.call("DELETE", "", Value::Null).await;
    edge.stop().await;
}
