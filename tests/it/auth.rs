//! Edge authentication over real sockets: Basic validated once against an in-process
//! validation server, cached, single-flight, user lists, rate control, users_file.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use crate::support::client::h1;
use crate::support::{TestEdge, Upstream, eventually, eventually_async};

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

/// The validation endpoint: 200 when the Authorization header is in `accepted`, else 401
/// (or `forced` when set); counts calls; answers `/users` with the user list.
#[derive(Clone)]
struct Validator {
    addr: SocketAddr,
    calls: Arc<AtomicUsize>,
    /// Validations of `probe-*` users (accepted, not counted in `calls`): see `list_in_use`.
    probe_calls: Arc<AtomicUsize>,
    list_calls: Arc<AtomicUsize>,
    accepted: Arc<Mutex<HashSet<String>>>,
    users: Arc<Mutex<Vec<String>>>,
    forced: Arc<AtomicU16>,
    delay_ms: u64,
}

impl Validator {
    async fn start(delay_ms: u64) -> Validator {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let v = Validator {
            addr: listener.local_addr().unwrap(),
            calls: Arc::default(),
            probe_calls: Arc::default(),
            list_calls: Arc::default(),
            accepted: Arc::default(),
            users: Arc::default(),
            forced: Arc::default(),
            delay_ms,
        };
        let server = v.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let v = server.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let v = v.clone();
                        async move {
                            let mut status = 401;
                            let mut body = String::new();
                            if req.uri().path() == "/users" {
                                v.list_calls.fetch_add(1, Ordering::SeqCst);
                                status = 200;
                                body = serde_json::to_string(&*v.users.lock().unwrap()).unwrap();
                            } else if req.uri().path().starts_with("/auth/probe-") {
                                v.probe_calls.fetch_add(1, Ordering::SeqCst);
                                status = 200;
                            } else {
                                v.calls.fetch_add(1, Ordering::SeqCst);
                                // A slow validator, when a test asks for one.
                                tokio::time::sleep(Duration::from_millis(v.delay_ms)).await;
                                let auth = req.headers().get("authorization").and_then(|h| h.to_str().ok()).unwrap_or("").to_string();
                                if v.accepted.lock().unwrap().contains(&auth) {
                                    status = 200;
                                }
                                let forced = v.forced.load(Ordering::SeqCst);
                                if forced != 0 {
                                    status = forced;
                                }
                            }
                            let mut response = hyper::Response::new(Full::new(Bytes::from(body)));
                            *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), service).await;
                });
            }
        });
        v
    }

    fn accept(&self, user: &str, password: &str) {
        self.accepted.lock().unwrap().insert(basic(user, password));
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

async fn edge(up: &Upstream, validator: &Validator, basic_extra: &str, top: &str) -> crate::support::RunningEdge {
    TestEdge::new()
        .proxy("desk", "/", &[(up.addr, 1, 0)], "auth = \"basic\"\npublic_paths = [\"/assets/\"]")
        .raw(&format!(
            "[auth.basic]\nvalidate_url = \"http://{}/auth/{{user}}\"\nrealm = \"Finesse\"\n{basic_extra}\n{top}",
            validator.addr
        ))
        .start()
        .await
}

async fn get_as(addr: SocketAddr, path: &str, authorization: &str) -> crate::support::client::Reply {
    h1(addr, "GET", path, &[("authorization", authorization)], Bytes::new()).await
}

/// Waits (at most 3 s) until the edge refuses users missing from its valid-user list: each
/// probe is a new `probe-<n>` user (never cached), which the validator accepts, so it is let
/// in while no list is in use and refused (401) once one is.
async fn list_in_use(edge: SocketAddr) -> bool {
    let mut n = 0;
    eventually_async(Duration::from_secs(3), || {
        n += 1;
        let probe = basic(&format!("probe-{n}"), "pw");
        async move { get_as(edge, "/x", &probe).await.status == 401 }
    })
    .await
}

#[tokio::test]
async fn basic_credentials_are_validated_once_then_served_from_the_cache() {
    let up = Upstream::start("desk").await;
    let validator = Validator::start(0).await;
    validator.accept("agent1", "s3cret");
    let edge = edge(&up, &validator, "", "").await;
    let good = basic("agent1", "s3cret");
    for _ in 0..5 {
        let reply = get_as(edge.http, "/desktop", &good).await;
        assert_eq!((reply.status, reply.body.as_str()), (200, "desk 0"));
    }
    assert_eq!(validator.calls(), 1, "validated once, then cached");
    assert_eq!(up.hits(), 5);
    assert_eq!(up.last_seen().headers["authorization"], good, "the credential still reaches the service");

    let reply = get_as(edge.http, "/desktop", &basic("agent1", "wrong")).await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.headers["www-authenticate"], "Basic realm=\"Finesse\"");
    let reply = h1(edge.http, "GET", "/desktop", &[], Bytes::new()).await;
    assert_eq!(reply.status, 401, "no credentials");
    let reply = get_as(edge.http, "/desktop", "Basic %%%garbage").await;
    assert_eq!(reply.status, 401, "malformed credentials");
    assert_eq!(up.hits(), 5, "nothing unauthenticated reached the service");
    assert_eq!(h1(edge.http, "GET", "/assets/app.js", &[], Bytes::new()).await.status, 200, "public paths need no credentials");
    validator.accept("agent2", "pw2");
    assert_eq!(get_as(edge.http, "/desktop", &basic("agent2", "pw2")).await.status, 200);
    let admin_auth = format!("Bearer {}", crate::support::ADMIN_TOKEN);
    let status = h1(edge.admin, "GET", "/api/v1/status", &[("authorization", &admin_auth)], Bytes::new()).await;
    let status: serde_json::Value = serde_json::from_str(&status.body).unwrap();
    assert_eq!(
        (status["services"][0]["sessions"].as_u64(), status["services"][0]["sessions_peak"].as_u64()),
        (Some(2), Some(2)),
        "two credentials, two sessions"
    );
    let metrics = h1(edge.admin, "GET", "/metrics", &[("authorization", &admin_auth)], Bytes::new()).await.body;
    assert!(metrics.contains("portcullis_sessions{service=\"desk\"} 2"), "{metrics}");

    let metrics = edge.running().runtime.metrics.encode();
    assert!(metrics.contains("portcullis_auth_failures_total{reason=\"invalid credentials\"} 1"), "{metrics}");
    assert!(
        eventually(Duration::from_secs(2), || edge
            .log("error.log")
            .contains("127.0.0.1 :: authentication failed for user \"agent1\": invalid credentials"))
        .await,
        "{}",
        edge.log("error.log")
    );
    assert!(!edge.log("error.log").contains("wrong"), "passwords are never logged");
    edge.stop().await;
}

#[tokio::test]
async fn an_unavailable_validator_means_503_never_valid() {
    let up = Upstream::start("desk").await;
    let validator = Validator::start(0).await;
    validator.accept("agent1", "s3cret");
    validator.forced.store(500, Ordering::SeqCst);
    let edge = edge(&up, &validator, "", "").await;
    let reply = get_as(edge.http, "/x", &basic("agent1", "s3cret")).await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.headers["retry-after"], "5");
    assert_eq!(up.hits(), 0);
    // Once the validator is back, the same credential works (a 503 is not cached).
    validator.forced.store(0, Ordering::SeqCst);
    assert_eq!(get_as(edge.http, "/x", &basic("agent1", "s3cret")).await.status, 200);
    edge.stop().await;
}

#[tokio::test]
async fn two_hundred_concurrent_first_requests_cause_one_validation() {
    let up = Upstream::start("desk").await;
    let validator = Validator::start(200).await;
    validator.accept("agent1", "s3cret");
    let edge = edge(&up, &validator, "", "").await;
    let addr = edge.http;
    let good = basic("agent1", "s3cret");
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let good = good.clone();
            tokio::spawn(async move { get_as(addr, "/x", &good).await.status })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(validator.calls(), 1, "single flight");
    edge.stop().await;
}

#[tokio::test]
async fn a_changed_password_takes_effect_after_the_ttl() {
    let up = Upstream::start("desk").await;
    let validator = Validator::start(0).await;
    validator.accept("agent1", "old-pw");
    let edge = edge(&up, &validator, "credential_ttl = \"1s\"", "").await;
    assert_eq!(get_as(edge.http, "/x", &basic("agent1", "old-pw")).await.status, 200);
    // The password changes upstream: the old one is still cached for the TTL.
    validator.accepted.lock().unwrap().clear();
    validator.accept("agent1", "new-pw");
    assert_eq!(get_as(edge.http, "/x", &basic("agent1", "old-pw")).await.status, 200);
    assert_eq!(get_as(edge.http, "/x", &basic("agent1", "new-pw")).await.status, 200);
    // The behaviour under test: the cached credential expires after its 1 s TTL.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(get_as(edge.http, "/x", &basic("agent1", "old-pw")).await.status, 401, "old password expired from the cache");
    assert_eq!(get_as(edge.http, "/x", &basic("agent1", "new-pw")).await.status, 200);
    edge.stop().await;
}

#[tokio::test]
async fn a_valid_user_list_rejects_unknown_users_without_an_upstream_call() {
    let up = Upstream::start("desk").await;
    let validator = Validator::start(0).await;
    validator.accept("agent1", "s3cret");
    validator.users.lock().unwrap().push("agent1".into());
    let edge = edge(&up, &validator, &format!("users_url = \"http://{}/users\"", validator.addr), "").await;
    assert!(eventually(Duration::from_secs(3), || validator.list_calls.load(Ordering::SeqCst) >= 1).await, "list fetched at start");
    assert!(
        list_in_use(edge.http).await,
        "the fetched list never came into use ({} probes validated)",
        validator.probe_calls.load(Ordering::SeqCst)
    );
    let reply = get_as(edge.http, "/x", &basic("intruder", "guess")).await;
    assert_eq!(reply.status, 401);
    assert_eq!(validator.calls(), 0, "unknown user refused at the edge");
    assert_eq!(get_as(edge.http, "/x", &basic("agent1", "s3cret")).await.status, 200);
    assert_eq!(validator.calls(), 1);
    edge.stop().await;
}

#[tokio::test]
async fn the_max_plus_first_authorization_gets_429() {
    let up = Upstream::start("desk").await;
    let validator = Validator::start(0).await;
    validator.accept("agent1", "s3cret");
    let edge = edge(&up, &validator, "", "[rate_control]\nmax_authorizations = 3\nperiod = \"300s\"\n").await;
    for attempt in 0..3 {
        assert_eq!(get_as(edge.http, "/x", &basic("agent1", &format!("guess{attempt}"))).await.status, 401);
    }
    let reply = get_as(edge.http, "/x", &basic("agent1", "s3cret")).await;
    assert_eq!(reply.status, 429, "4th authorization within the period");
    let retry: u64 = reply.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((295..=301).contains(&retry), "{retry}");
    assert_eq!(validator.calls(), 3, "a limited authorization makes no upstream call");
    assert_eq!(get_as(edge.http, "/x", &basic("agent2", "x")).await.status, 401, "other users are not limited");
    edge.stop().await;
}

#[tokio::test]
async fn users_file_validates_locally_with_argon2() {
    use argon2::PasswordHasher;
    let up = Upstream::start("desk").await;
    let dir = tempfile::tempdir().unwrap();
    let salt = argon2::password_hash::SaltString::from_b64("c29tZXNhbHRzb21lc2FsdA").unwrap();
    let hash = argon2::Argon2::default().hash_password(b"pw1", &salt).unwrap().to_string();
    let file = dir.path().join("users.toml");
    std::fs::write(&file, format!("[users]\nalice = \"{hash}\"\n")).unwrap();
    let edge = TestEdge::new()
        .proxy("desk", "/", &[(up.addr, 1, 0)], "auth = \"basic\"")
        .raw(&format!("[auth.basic]\nusers_file = \"{}\"\n", file.display()))
        .start()
        .await;
    assert_eq!(get_as(edge.http, "/x", &basic("alice", "pw1")).await.status, 200);
    assert_eq!(get_as(edge.http, "/x", &basic("alice", "pw2")).await.status, 401);
    assert_eq!(get_as(edge.http, "/x", &basic("bob", "pw1")).await.status, 401);
    assert_eq!(up.hits(), 1);
    edge.stop().await;
}
