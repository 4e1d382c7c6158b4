//! The edge killed with `kill -9` (the real binary, `portcullis serve`) while lines wait in
//! its shipping queue: after a restart every line arrives. With the server down at the kill,
//! nothing had been sent, so each line arrives exactly once; with the server up and the edge
//! killed right after a burst, lines sent within the last [`TLS_ACK_GRACE`] may arrive twice
//! (same sequenceId), none is lost. (A line still on its way to the queue thread — the
//! instant between a response and the queue write — is not covered: docs/logging.md.)
//!
//! [`TLS_ACK_GRACE`]: portcullis::telemetry::ship::sender::TLS_ACK_GRACE

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;

use super::rsyslog::{self, Listener, Pki, Rsyslog};
use super::{all_arrive, counts, gaps, request_numbers, ship_section};
use crate::support::client::{get, h1};
use crate::support::{ADMIN_TOKEN, Upstream, eventually_async};

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// The edge as a child process (`portcullis serve`, configuration and logs in a directory).
pub struct Edge {
    pub child: Child,
    pub http: SocketAddr,
    pub admin: SocketAddr,
}

impl Edge {
    /// Starts it in `dir` with `config` after the `[server]`, listener and `[admin]` sections.
    pub async fn start(dir: &Path, config: &str) -> Edge {
        let (http, admin) = (free_port(), free_port());
        let text = format!(
            "[server]\nname = \"localhost\"\nstate_dir = \"state\"\nlog_dir = \"logs\"\n\
             [[listener]]\nname = \"http\"\naddress = \"{http}\"\ntls = false\n\
             [admin]\naddress = \"{admin}\"\ntoken = \"{ADMIN_TOKEN}\"\n{config}"
        );
        std::fs::write(dir.join("portcullis.toml"), text).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["serve", "--config"])
            .arg(dir.join("portcullis.toml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let edge = Edge { child, http, admin };
        let up = eventually_async(Duration::from_secs(20), || async {
            tokio::net::TcpStream::connect(http).await.is_ok() && tokio::net::TcpStream::connect(admin).await.is_ok()
        })
        .await;
        assert!(up, "the edge did not start: {}", std::fs::read_to_string(dir.join("logs/error.log")).unwrap_or_default());
        edge
    }

    async fn shipping(&self) -> serde_json::Value {
        let auth = format!("Bearer {ADMIN_TOKEN}");
        let body = h1(self.admin, "GET", "/api/v1/status", &[("authorization", &auth)], Bytes::new()).await.body;
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["shipping"].clone()
    }

    fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_killed_with_lines_queued_sends_every_one_after_its_restart() {
    if !rsyslog::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let mut server = Rsyslog::start(&dir.path().join("rs"), &pki, Listener::MutualTls);
    server.stop(false);
    let up = Upstream::start("web").await;
    let config = format!(
        "[[service]]\nname = \"web\"\n[[service.upstream]]\naddress = \"{}\"\n[[route]]\npath = \"/\"\nservice = \"web\"\n{}",
        up.addr,
        ship_section(&server, "tls", &pki.ca, Some((&pki.client_cert, &pki.client_key)), "")
    );
    let edge_dir = dir.path().join("edge");
    std::fs::create_dir_all(&edge_dir).unwrap();

    // 1. The server is down: 300 lines wait in the queue; the edge is killed.
    let edge = Edge::start(&edge_dir, &config).await;
    for i in 0..300 {
        assert_eq!(get(edge.http, &format!("/r/{i}")).await.status, 200);
    }
    let queued = eventually_async(Duration::from_secs(10), || async { edge.shipping().await["queued"].as_u64() >= Some(300) }).await;
    assert!(queued, "{}", edge.shipping().await);
    edge.kill9();
    server.restart();
    let edge = Edge::start(&edge_dir, &config).await;
    assert!(all_arrive(&server, 300, Duration::from_secs(30)).await, "{}", edge.shipping().await);
    let arrived = counts(&request_numbers(&server));
    assert!(arrived.values().all(|c| *c == 1), "nothing had been sent before the kill: each line exactly once");

    // 2. The server is up and the edge is killed right after a burst: nothing is lost.
    for i in 300..600 {
        assert_eq!(get(edge.http, &format!("/r/{i}")).await.status, 200);
    }
    // The last line reaches the queue a moment after its response (the writer hands it to the
    // queue thread, which writes it within a millisecond): the kill comes once it is there,
    // while the last second's batches are still unconfirmed (sent again after the restart).
    tokio::time::sleep(Duration::from_millis(200)).await;
    edge.kill9();
    let edge = Edge::start(&edge_dir, &config).await;
    let arrived = all_arrive(&server, 600, Duration::from_secs(30)).await;
    let have = counts(&request_numbers(&server));
    let missing: Vec<u64> = (0..600).filter(|i| !have.contains_key(i)).collect();
    assert!(arrived, "missing {missing:?}; {}", edge.shipping().await);
    assert_eq!(gaps(&server), Vec::<u64>::new(), "no sequenceId missing");
    let idle = eventually_async(Duration::from_secs(10), || async { edge.shipping().await["queued"].as_u64() == Some(0) }).await;
    assert!(idle, "{}", edge.shipping().await);
    edge.kill9();
}
