//! Three Portcullis peers on loopback sharing one real `redis-server` (a private one from
//! `support::external`): brute force spread across peers bans at the exact threshold everywhere, an
//! unban on one frees the source on the others within a second, an edge token issued by one
//! works on another, rate control counts cluster-wide, and with Redis killed the peers keep
//! serving and banning (status `degraded`) and reconcile once it returns. Skipped with a
//! message without `redis-server` (`PORTCULLIS_REQUIRE_REDIS=1`, set by `.ci/run`, fails).

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;

use crate::support::client::h1;
use crate::support::external::RedisServer;
use crate::support::{ADMIN_TOKEN, RunningEdge, TestEdge, Upstream, argon2_hash, basic, eventually, eventually_async};

async fn peer(name: &str, redis: &RedisServer, up: &Upstream, users: &str) -> RunningEdge {
    let builder = TestEdge::new();
    let file = builder.dir.path().join("users.toml");
    std::fs::write(&file, users).unwrap();
    builder
        .proxy("desk", "/", &[(up.addr, 1, 0)], "auth = \"basic\"")
        .raw(&format!(
            "[auth.basic]\nusers_file = \"{}\"\n[rate_control]\nmax_authorizations = 3\nperiod = \"300s\"\n\
             [protection.categories.http-auth-failure]\ntrigger = 5\nwindow = \"60s\"\nban = \"30m\"\n\
             [cluster]\nstore = \"redis\"\nredis_url = \"{}\"\npeer = \"{name}\"\nheartbeat = \"200ms\"\n",
            file.display(),
            redis.url()
        ))
        .start()
        .await
}

async fn status_of(edge: SocketAddr, authorization: &str) -> u16 {
    h1(edge, "GET", "/", &[("authorization", authorization)], Bytes::new()).await.status
}

/// Polls until `edge` answers `want` (at most `within`).
async fn answers(edge: SocketAddr, authorization: &str, want: u16, within: Duration) -> bool {
    eventually_async(within, || async { status_of(edge, authorization).await == want }).await
}

/// The status `edge` answers a request from `source` (with `authorization`, if any).
async fn status_from(source: &str, edge: SocketAddr, authorization: Option<&str>) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let mut tcp = socket.connect(edge).await.ok()?;
    let credential = authorization.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
    tcp.write_all(format!("GET / HTTP/1.1\r\nHost: x\r\n{credential}Connection: close\r\n\r\n").as_bytes()).await.ok()?;
    let mut head = [0u8; 12];
    // Generous: checking a password (argon2, unoptimised in test builds) is slow on a loaded machine.
    tokio::time::timeout(Duration::from_secs(10), tcp.read_exact(&mut head)).await.ok()?.ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// Polls `edge` with requests from `source` until it answers `want` (at most `within`).
async fn answers_from(source: &str, edge: SocketAddr, want: u16, within: Duration) -> bool {
    eventually_async(within, || async { status_from(source, edge, None).await == Some(want) }).await
}

async fn admin(edge: &RunningEdge, method: &str, path: &str) -> crate::support::client::Reply {
    h1(edge.admin, method, path, &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))], Bytes::new()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_peers_act_as_one_and_survive_a_redis_outage() {
    let Some(mut redis) = RedisServer::start() else { return };
    let up = Upstream::start("desk").await;
    let users = format!("[users]\nalice = \"{}\"\nbob = \"{}\"\n", argon2_hash("pw"), argon2_hash("pw2"));
    let (a, b, c) = (peer("a", &redis, &up, &users).await, peer("b", &redis, &up, &users).await, peer("c", &redis, &up, &users).await);
    assert!(
        eventually(Duration::from_secs(5), || redis.subscribers(portcullis::cluster::redis::CHANGES_CHANNEL) >= 3).await,
        "the three peers never all subscribed to the change channel"
    );
    let alice = basic("alice", "pw");
    // Credential stuffing: a new name each time (one name would hit rate control's 429 first).
    let stuffed = |i: usize| basic(&format!("user{i}"), "guess");
    for edge in [&a, &b, &c] {
        assert_eq!(status_of(edge.http, &alice).await, 200);
    }

    // 3 failures on A and 2 on B: the 5th (on B) bans, and C refuses the source too.
    for i in 0..3 {
        assert_eq!(status_of(a.http, &stuffed(i)).await, 401);
    }
    assert_eq!(status_of(b.http, &stuffed(3)).await, 401);
    assert_eq!(status_of(c.http, &alice).await, 200, "4 failures in the cluster: not banned yet");
    assert_eq!(status_of(b.http, &stuffed(4)).await, 401, "the 5th failure is answered, then the source is banned");
    assert_eq!(status_of(b.http, &alice).await, 418, "banned on B at once");
    assert!(answers(c.http, &alice, 418, Duration::from_secs(1)).await, "C learns of the ban within 1 s");
    assert!(answers(a.http, &alice, 418, Duration::from_secs(1)).await, "so does A");

    // Unban on B frees the source on A within 1 s.
    assert_eq!(admin(&b, "DELETE", "/api/v1/blocked?ip=127.0.0.1").await.status, 200);
    assert!(answers(a.http, &alice, 200, Duration::from_secs(1)).await, "A lifts the ban within 1 s");
    assert!(answers(c.http, &alice, 200, Duration::from_secs(1)).await);

    // An edge token issued by A works on C; authorizations count cluster-wide (3 per 300 s).
    let issued = h1(a.http, "POST", "/portcullis/token", &[("authorization", &basic("bob", "pw2"))], Bytes::new()).await;
    assert_eq!(issued.status, 200, "{}", issued.body);
    let token: serde_json::Value = serde_json::from_str(&issued.body).unwrap();
    let bearer = format!("Bearer {}", token["access_token"].as_str().unwrap());
    assert_eq!(status_of(c.http, &bearer).await, 200, "A's token works on C");
    assert_eq!(status_of(c.http, &bearer).await, 200, "and again, now from C's memory");
    // Authorizations count cluster-wide (3 per 300 s), and a credential validated on one
    // peer is a cache hit on the others: bob's Basic credential is validated once (on A:
    // 1), each token issue counts (A: 2 — above; B: 3), so the issue on C is the 4th for the
    // cluster and refused. Counted per peer, C would have seen one.
    let bob = basic("bob", "pw2");
    assert_eq!(status_of(b.http, &bob).await, 200, "validated on A, a cache hit on B");
    let issue = |edge: SocketAddr| {
        let bob = bob.clone();
        async move { h1(edge, "POST", "/portcullis/token", &[("authorization", &bob)], Bytes::new()).await }
    };
    assert_eq!(issue(b.http).await.status, 200);
    let refused = issue(c.http).await;
    assert_eq!(refused.status, 429, "rate control counts cluster-wide: {}", refused.body);
    assert!(refused.headers.contains_key("retry-after"));

    // Revoked on B: refused on C within 1 s (C had the token in memory).
    assert_eq!(admin(&b, "DELETE", "/api/v1/tokens?user=bob").await.status, 200);
    assert!(answers(c.http, &bearer, 401, Duration::from_secs(1)).await, "revocation reaches C within 1 s");

    // A ban set before the outage (by hand on A, known to C through Redis)…
    assert_eq!(admin(&a, "POST", "/api/v1/blocked?ip=127.0.0.5&minutes=30").await.status, 200);
    assert!(answers_from("127.0.0.5", c.http, 418, Duration::from_secs(1)).await, "C knows the ban");

    // Redis dies: the peers keep serving from memory, new bans apply locally, status degraded.
    redis.stop();
    assert!(answers_from("127.0.0.5", c.http, 418, Duration::from_millis(100)).await, "…keeps applying without Redis");
    assert_eq!(status_of(a.http, &alice).await, 200, "cached credentials keep working");
    for i in 10..15 {
        assert_eq!(status_of(a.http, &stuffed(i)).await, 401);
    }
    assert_eq!(status_of(a.http, &alice).await, 418, "banned locally while Redis is down");
    let status: serde_json::Value = serde_json::from_str(&admin(&a, "GET", "/api/v1/status").await.body).unwrap();
    assert_eq!(status["cluster"]["state"], "degraded", "{}", status["cluster"]);
    assert_eq!(status_of(c.http, &alice).await, 200, "C has not heard of it yet");
    // Two failures from another source on C, counted by C alone for now…
    for i in 20..22 {
        assert_eq!(status_from("127.0.0.6", c.http, Some(&stuffed(i))).await, Some(401));
    }

    // Redis returns: A's ban is written to it and reaches C.
    redis.restart();
    assert!(
        answers(c.http, &alice, 418, Duration::from_secs(6)).await,
        "the ban made during the outage reaches C\nA: {}\nC: {}",
        a.log("error.log"),
        c.log("error.log")
    );
    let status: serde_json::Value = serde_json::from_str(&admin(&a, "GET", "/api/v1/status").await.body).unwrap();
    assert_eq!(status["cluster"]["state"], "ok");
    assert!(a.log("error.log").contains("ban(s) made meanwhile written to it"), "{}", a.log("error.log"));
    // …and merged into the shared window once Redis is back: three more on B make five.
    assert!(
        eventually(Duration::from_secs(3), || c.log("error.log").contains("failure event(s) counted meanwhile merged")).await,
        "C never merged the failures counted during the outage:\n{}",
        c.log("error.log")
    );
    for i in 22..24 {
        assert_eq!(status_from("127.0.0.6", b.http, Some(&stuffed(i))).await, Some(401));
    }
    assert_eq!(status_from("127.0.0.6", b.http, Some(&stuffed(24))).await, Some(401), "the 5th in the cluster");
    assert_eq!(status_from("127.0.0.6", b.http, None).await, Some(418), "banned: the outage's failures were not lost");
    for edge in [a, b, c] {
        edge.stop().await;
    }
}

async fn peer_names(edge: &RunningEdge) -> (Vec<String>, serde_json::Value) {
    let status: serde_json::Value = serde_json::from_str(&admin(edge, "GET", "/api/v1/status").await.body).unwrap();
    let names = status["cluster"]["peers"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap().to_string()).collect();
    (names, status["cluster"].clone())
}

async fn wait_for_peers(edge: &RunningEdge, want: &[&str]) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    for _ in 0..100 {
        let (names, cluster) = peer_names(edge).await;
        if names == want {
            return cluster;
        }
        last = cluster;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("peers never became {want:?}: {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_are_listed_with_a_primary_and_a_killed_peer_ages_out() {
    let Some(redis) = RedisServer::start() else { return };
    let up = Upstream::start("desk").await;
    let users = format!("[users]\nalice = \"{}\"\n", argon2_hash("pw"));
    let b = peer("b", &redis, &up, &users).await;
    let c = peer("c", &redis, &up, &users).await;
    assert_eq!(status_of(c.http, &basic("alice", "pw")).await, 200);
    let cluster = wait_for_peers(&b, &["b", "c"]).await;
    assert_eq!(cluster["primary"], "b");
    assert_eq!(cluster["store"], "redis");

    // An exemption and a weight override made on B take effect on C within 1 s.
    let reaches_c = |path: &'static str, needle: String| {
        let c_admin = c.admin;
        async move {
            eventually_async(Duration::from_secs(1), || async {
                h1(c_admin, "GET", path, &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))], Bytes::new()).await.body.contains(&needle)
            })
            .await
        }
    };
    let out = crate::operate::cli(&b, &["exemptions", "add", "198.51.100.0/24", "--categories", "http-auth-failure"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(reaches_c("/api/v1/exemptions", "198.51.100.0/24".into()).await, "exemption on C within 1 s");
    let out = crate::operate::cli(&b, &["web", "weight", "add", &up.addr.to_string(), "4"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(reaches_c("/api/v1/weights", "\"overridden\": 4".into()).await, "the override reaches C within 1 s");
    let applied = h1(c.admin, "GET", "/api/v1/status", &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))], Bytes::new()).await.body;
    let status: serde_json::Value = serde_json::from_str(&applied).unwrap();
    assert_eq!(status["services"][0]["servers"][0]["weight"], 4, "and C's pool uses it");

    // A peer "a" as a separate process: it becomes primary; kill -9 and it ages out.
    let dir = tempfile::tempdir().unwrap();
    let port = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let (http, admin_addr) = (port(), port());
    let config = dir.path().join("a.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nname = \"localhost\"\nstate_dir = \"state\"\nlog_dir = \"logs\"\n[[listener]]\nname = \"http\"\naddress = \"{http}\"\n\
             [admin]\naddress = \"{admin_addr}\"\ntoken = \"{ADMIN_TOKEN}\"\n[[service]]\nname = \"site\"\nstatic_dir = \"{}\"\n\
             [[route]]\npath = \"/\"\nservice = \"site\"\n[cluster]\nstore = \"redis\"\nredis_url = \"{}\"\npeer = \"a\"\nheartbeat = \"200ms\"\n",
            dir.path().display(),
            redis.url()
        ),
    )
    .unwrap();
    let mut process = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let cluster = wait_for_peers(&b, &["a", "b", "c"]).await;
    assert_eq!(cluster["primary"], "a");
    assert!(cluster["peers"][0]["address"].as_str().unwrap().contains(&admin_addr.to_string()), "{cluster}");
    let counted = cluster["sessions"].as_u64().unwrap() >= 1
        || eventually_async(Duration::from_secs(2), || async { peer_names(&b).await.1["sessions"].as_u64().unwrap_or(0) >= 1 }).await;
    assert!(counted, "cluster-wide sessions include c's: {}", peer_names(&b).await.1);
    process.kill().unwrap(); // SIGKILL: no goodbye
    process.wait().unwrap();
    let started = tokio::time::Instant::now();
    let cluster = wait_for_peers(&b, &["b", "c"]).await;
    assert!(started.elapsed() < Duration::from_secs(3), "aged out after {:?}", started.elapsed());
    assert_eq!(cluster["primary"], "b", "the next smallest name takes over");
    let screen = crate::operate::stdout(&crate::operate::cli(&b, &["status"]).await);
    assert!(screen.contains("b            (primary)") && screen.contains("PEERS:"), "{screen}");

    // A clean stop leaves at once.
    c.stop().await;
    wait_for_peers(&b, &["b"]).await;
    b.stop().await;
}

fn portcullis(args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis")).args(args).output().unwrap();
    assert!(out.status.success(), "portcullis {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_moves_from_the_embedded_store_to_redis() {
    let Some(redis) = RedisServer::start() else { return };
    let up = Upstream::start("app").await;
    let dir = tempfile::tempdir().unwrap();
    let port = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let (http, admin_addr) = (port(), port());
    let text = |cluster: &str| {
        format!(
            "[server]\nname = \"localhost\"\nstate_dir = \"state\"\nlog_dir = \"logs\"\n[[listener]]\nname = \"http\"\naddress = \"{http}\"\n\
             [admin]\naddress = \"{admin_addr}\"\ntoken = \"{ADMIN_TOKEN}\"\n[[service]]\nname = \"app\"\n[[service.upstream]]\naddress = \"{}\"\n\
             [[route]]\npath = \"/\"\nservice = \"app\"\n{cluster}",
            up.addr
        )
    };
    let single = dir.path().join("single.toml");
    std::fs::write(&single, text("")).unwrap();
    let clustered = dir.path().join("cluster.toml");
    std::fs::write(&clustered, text(&format!("[cluster]\nstore = \"redis\"\nredis_url = \"{}\"\n", redis.url()))).unwrap();
    let config = single.to_str().unwrap();

    // A single edge with some state: a ban, an exemption, a weight override.
    let mut edge = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["serve", "--config", config])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        eventually(Duration::from_secs(5), || std::net::TcpStream::connect(admin_addr).is_ok()).await,
        "the edge never listened on {admin_addr}"
    );
    portcullis(&["blocked", "ban", "203.0.113.66", "--minutes", "60", "--config", config]);
    portcullis(&["exemptions", "add", "198.51.100.0/24", "--categories", "http-auth-failure", "--config", config]);
    portcullis(&["web", "weight", "add", &up.addr.to_string(), "7", "--config", config]);
    let refused = Command::new(env!("CARGO_BIN_EXE_portcullis")).args(["state", "export", "--config", config]).output().unwrap();
    assert_eq!(refused.status.code(), Some(1), "the running edge holds the embedded store");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("stop the edge"));
    assert!(Command::new("kill").args(["-TERM", &edge.id().to_string()]).status().unwrap().success());
    edge.wait().unwrap();

    let export = dir.path().join("state.json");
    portcullis(&["state", "export", "--config", config, "--output", export.to_str().unwrap()]);
    let out = portcullis(&["state", "import", "--config", clustered.to_str().unwrap(), export.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("imported "), "{}", String::from_utf8_lossy(&out.stdout));

    // The same edge, now on Redis, has everything.
    let mut edge = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["serve", "--config", clustered.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        eventually(Duration::from_secs(5), || std::net::TcpStream::connect(admin_addr).is_ok()).await,
        "the edge never listened on {admin_addr}"
    );
    let config = clustered.to_str().unwrap();
    let blocked = String::from_utf8_lossy(&portcullis(&["blocked", "list", "--config", config]).stdout).into_owned();
    assert!(blocked.contains("203.0.113.66") && blocked.contains("manual"), "{blocked}");
    let exemptions = String::from_utf8_lossy(&portcullis(&["exemptions", "list", "--config", config]).stdout).into_owned();
    assert!(exemptions.contains("198.51.100.0/24"), "{exemptions}");
    let weights = String::from_utf8_lossy(&portcullis(&["web", "weight", "list", "--config", config]).stdout).into_owned();
    assert!(weights.lines().any(|l| l.contains(&up.addr.to_string()) && l.trim_end().ends_with('7')), "{weights}");
    assert!(Command::new("kill").args(["-TERM", &edge.id().to_string()]).status().unwrap().success());
    edge.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_primary_fetches_the_jwks_for_the_cluster_and_the_others_read_it_from_redis() {
    use crate::jwt::{AUDIENCE, ISSUER, Jwks, Signer, claims};
    use jsonwebtoken::Algorithm;
    let Some(redis) = RedisServer::start() else { return };
    let up = Upstream::start("reports").await;
    let first = Signer::new("k1", Algorithm::ES256);
    let jwks = Jwks::start(vec![first.jwk()]).await;
    let peer = |name: &'static str| {
        TestEdge::new()
            .proxy("cuic", "/", &[(up.addr, 1, 0)], "auth = \"jwt\"")
            .raw(&format!(
                "[auth.jwt]\njwks_url = \"http://{}/keys\"\njwks_refresh = \"500ms\"\nissuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\n\
                 [cluster]\nstore = \"redis\"\nredis_url = \"{}\"\npeer = \"{name}\"\nheartbeat = \"200ms\"\n",
                jwks.addr,
                redis.url()
            ))
            .start()
    };
    let (a, b) = (peer("a").await, peer("b").await);
    let fetches = |edge: &RunningEdge| edge.running().edge.gateway.load().auth.jwt().unwrap().jwks_fetches();
    // Not a wait for an event: the refreshes are counted over a fixed 2.5 s window (the
    // primary fetches every 500 ms, the other peer not at all once a primary is known).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (by_a, by_b) = (fetches(&a), fetches(&b));
    assert!(by_a >= 3, "the primary refreshes every 500 ms: {by_a}");
    assert!(by_b <= 2, "the other peer fetched only before a primary was known: {by_b}");

    // Rotation: the primary fetches the new set, b picks it up from Redis without fetching.
    let second = Signer::new("k2", Algorithm::ES256);
    jwks.publish(vec![first.jwk(), second.jwk()]);
    let learned = eventually(Duration::from_secs(3), || b.running().edge.gateway.load().auth.jwt().unwrap().key_ids() == ["k1", "k2"]);
    assert!(learned.await, "b learned the new key");
    assert_eq!(fetches(&b), by_b, "b did not fetch the JWKS itself");
    let token = format!("Bearer {}", second.token(claims("agent7")));
    assert_eq!(status_of(b.http, &token).await, 200);
    a.stop().await;
    b.stop().await;
}
