//! Operating a running edge through the real `portcullis` binary and the admin API:
//! maintenance with drain (an open WebSocket keeps echoing and an established session keeps
//! being served under load while new sessions get 503),
//! weight overrides shifting traffic counted at the upstreams, refresh under load, and the
//! status screen.

use std::net::SocketAddr;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::support::client::h1;
use crate::support::{ADMIN_TOKEN, RunningEdge, TestEdge, Upstream, argon2_hash, basic, websocket_echo_upstream};

/// Runs the CLI against `edge`'s admin API.
pub async fn cli(edge: &RunningEdge, args: &[&str]) -> Output {
    let url = format!("http://{}", edge.admin);
    let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    all.extend(["--admin".to_string(), url, "--token".to_string(), ADMIN_TOKEN.to_string()]);
    tokio::task::spawn_blocking(move || Command::new(env!("CARGO_BIN_EXE_portcullis")).args(&all).output().unwrap()).await.unwrap()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn admin_get(edge: &RunningEdge, path: &str) -> crate::support::client::Reply {
    h1(edge.admin, "GET", path, &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))], Bytes::new()).await
}

async fn service_states(edge: &RunningEdge) -> serde_json::Value {
    let reply = admin_get(edge, "/api/v1/maintenance").await;
    assert_eq!(reply.status, 200);
    let body: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    let mut states = serde_json::Map::new();
    for s in body["services"].as_array().unwrap() {
        states.insert(s["name"].as_str().unwrap().to_string(), s["state"].clone());
    }
    serde_json::Value::Object(states)
}

/// A WebSocket upgrade carrying `authorization` the way browsers do (`websocket_auth` is on by
/// default): in `Sec-WebSocket-Protocol`.
async fn websocket(edge: SocketAddr, authorization: &str) -> Result<tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>, u16> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://localhost:{}/ws/chat", edge.port()).into_client_request().unwrap();
    let credential = portcullis::net::percent::encode(&format!("Authorization: {authorization}"));
    request.headers_mut().insert("sec-websocket-protocol", format!("xmpp, {credential}").parse().unwrap());
    let tcp = tokio::net::TcpStream::connect(edge).await.unwrap();
    match tokio_tungstenite::client_async(request, tcp).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(other) => panic!("upgrade failed: {other}"),
    }
}

async fn echo(ws: &mut tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>, text: &str) {
    ws.send(Message::text(text)).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(3), ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(answer, Message::text(text));
}

#[tokio::test]
async fn maintenance_refuses_new_sessions_while_established_ones_drain() {
    let up = Upstream::start("desk").await;
    let ws_upstream = websocket_echo_upstream().await;
    let builder = TestEdge::new();
    let users = builder.dir.path().join("users.toml");
    std::fs::write(&users, format!("[users]\nalice = \"{}\"\nbob = \"{}\"\n", argon2_hash("pw"), argon2_hash("pw2"))).unwrap();
    let edge = builder
        .proxy("desk", "/", &[(up.addr, 1, 0)], "auth = \"basic\"")
        .proxy("chat", "/ws/", &[(ws_upstream, 1, 0)], "auth = \"basic\"")
        .raw(&format!("[auth.basic]\nusers_file = \"{}\"\n[maintenance]\nretry_after = \"30s\"\nsession_idle = \"2s\"\n", users.display()))
        .start()
        .await;
    let (alice, bob) = (basic("alice", "pw"), basic("bob", "pw2"));
    let get_as = |who: String| async move { h1(edge.http, "GET", "/", &[("authorization", &who)], Bytes::new()).await };

    assert_eq!(get_as(alice.clone()).await.status, 200);
    let mut chat = websocket(edge.http, &alice).await.expect("upgrade before maintenance");
    echo(&mut chat, "before").await;

    // Load from the established session while maintenance is switched on: none of it fails.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..3)
        .map(|_| {
            let (stop, alice, http) = (stop.clone(), alice.clone(), edge.http);
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    statuses.push(h1(http, "GET", "/", &[("authorization", &alice)], Bytes::new()).await.status);
                }
                statuses
            })
        })
        .collect();
    let on = cli(&edge, &["maintenance", "on"]).await;
    assert_eq!(on.status.code(), Some(0), "{}", String::from_utf8_lossy(&on.stderr));
    // Not a wait for an event: the load goes on for a while across the switch.
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::SeqCst);
    let mut served = 0;
    for task in load {
        let statuses = task.await.unwrap();
        assert!(statuses.iter().all(|s| *s == 200), "the established session was refused: {statuses:?}");
        served += statuses.len();
    }
    assert!(served > 10, "the load ran across the switch ({served} requests)");
    assert!(stdout(&on).contains("MAINTENANCE: ON"), "{}", stdout(&on));
    let states = service_states(&edge).await;
    assert_eq!(states["chat"], "Draining (2)", "one session and one WebSocket: {states}");
    assert_eq!(states["desk"], "Draining (1)", "{states}");

    // The load balancer is told to stop sending new users.
    let health = h1(edge.admin, "GET", "/health", &[], Bytes::new()).await;
    assert_eq!((health.status, health.body.trim()), (503, "maintenance"));

    // New sessions, new logins and new upgrades: 503 with Retry-After, nothing forwarded.
    let hits_before = up.hits();
    let refused = get_as(bob.clone()).await;
    assert_eq!(refused.status, 503);
    assert_eq!(refused.headers["retry-after"], "30");
    assert_eq!(h1(edge.http, "GET", "/", &[], Bytes::new()).await.status, 503, "no credentials = no session");
    assert_eq!(websocket(edge.http, &bob).await.err(), Some(503));
    assert_eq!(websocket(edge.http, &alice).await.err(), Some(503), "no new WebSocket even for an existing session");
    let login = h1(edge.http, "POST", "/portcullis/token", &[("authorization", &alice)], Bytes::new()).await;
    assert_eq!(login.status, 503, "no new edge tokens");
    assert_eq!(up.hits(), hits_before, "nothing refused reached the upstream");

    // The established session and the open WebSocket go on.
    assert_eq!(get_as(alice.clone()).await.status, 200);
    echo(&mut chat, "during").await;

    // When the last one ends, the services are inactive.
    chat.close(None).await.unwrap();
    drop(chat);
    let mut inactive = false;
    for _ in 0..80 {
        let states = service_states(&edge).await;
        if states["chat"] == "Inactive (Maintenance mode)" && states["desk"] == "Inactive (Maintenance mode)" {
            inactive = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(inactive, "services never became inactive: {}", service_states(&edge).await);
    let status = stdout(&cli(&edge, &["status"]).await);
    assert!(status.contains("MAINTENANCE:  ON"), "{status}");
    assert!(status.contains("websockets 0 (peak 1)"), "{status}");
    assert!(status.contains("Inactive (Maintenance mode)"), "{status}");

    // Off: service restored at once.
    assert_eq!(cli(&edge, &["maintenance", "off"]).await.status.code(), Some(0));
    assert_eq!(get_as(bob).await.status, 200);
    assert_eq!(h1(edge.admin, "GET", "/health", &[], Bytes::new()).await.status, 200);
    assert_eq!(service_states(&edge).await["chat"], "Active");
    edge.stop().await;
}

#[tokio::test]
async fn weight_overrides_shift_traffic_live_and_del_restores_the_configured_weight() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let edge = TestEdge::new().proxy("app", "/", &[(a.addr, 1, 0), (b.addr, 1, 0)], "").start().await;
    let count = |n: usize| {
        let (a, b) = (a.clone(), b.clone());
        let http = edge.http;
        async move {
            let (a0, b0) = (a.hits(), b.hits());
            for _ in 0..n {
                assert_eq!(crate::support::client::get(http, "/").await.status, 200);
            }
            (a.hits() - a0, b.hits() - b0)
        }
    };
    assert_eq!(count(40).await, (20, 20));

    let add = cli(&edge, &["web", "weight", "add", &a.addr.to_string(), "3"]).await;
    assert_eq!(add.status.code(), Some(0), "{}", String::from_utf8_lossy(&add.stderr));
    assert_eq!(count(40).await, (30, 10), "3:1 after the override");
    let list = stdout(&cli(&edge, &["web", "weight", "list"]).await);
    let row = list.lines().find(|l| l.contains(&a.addr.to_string())).unwrap();
    assert_eq!(row.split_whitespace().collect::<Vec<_>>()[2..], ["1", "3", "3"], "{list}");

    // 0 makes b a backup: it gets nothing while a is up.
    assert_eq!(cli(&edge, &["web", "weight", "add", &b.addr.to_string(), "0"]).await.status.code(), Some(0));
    assert_eq!(count(20).await, (20, 0));
    let status = stdout(&cli(&edge, &["status"]).await);
    assert!(status.contains("weight=0 (configured 1) (backup)"), "{status}");

    for server in [a.addr, b.addr] {
        assert_eq!(cli(&edge, &["web", "weight", "del", &server.to_string()]).await.status.code(), Some(0));
    }
    assert_eq!(count(40).await, (20, 20), "back to the configured weights");
    assert!(edge.running().runtime.operate.weights().is_empty());

    let unknown = cli(&edge, &["web", "weight", "add", "192.0.2.1:80", "2"]).await;
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no upstream server"), "{}", String::from_utf8_lossy(&unknown.stderr));
    let too_heavy = cli(&edge, &["web", "weight", "add", &a.addr.to_string(), "5000"]).await;
    assert_eq!(too_heavy.status.code(), Some(1));
    assert!(edge.log("error.log").contains(&format!("weight of {} set to 3 by the administrator", a.addr)));
    edge.stop().await;
}

/// Serves a valid-user list (JSON array) and counts fetches.
#[derive(Clone)]
struct UserList {
    addr: SocketAddr,
    names: Arc<std::sync::Mutex<String>>,
    fetches: Arc<AtomicUsize>,
}

impl UserList {
    async fn start(names: &str) -> UserList {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let list = UserList {
            addr: listener.local_addr().unwrap(),
            names: Arc::new(std::sync::Mutex::new(names.into())),
            fetches: Arc::default(),
        };
        let server = list.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let s = server.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_req| {
                        let s = s.clone();
                        async move {
                            s.fetches.fetch_add(1, Ordering::SeqCst);
                            let body = s.names.lock().unwrap().clone();
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(Bytes::from(body))))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(tcp), service).await;
                });
            }
        });
        list
    }
}

/// `probe-<n>` users in the refresh test's users file.
const PROBES: usize = 30;

#[tokio::test]
async fn refresh_refetches_user_lists_and_rebuilds_routing_without_failing_a_request() {
    let up = Upstream::start("desk").await;
    let list = UserList::start("[\"alice\"]").await;
    let builder = TestEdge::new();
    let users = builder.dir.path().join("users.toml");
    // `probe-<n>` users (password pw, never on the list) tell when the fetched list is in use:
    // a new one each time (never cached) is let in while no list is, refused once one is.
    let pw = argon2_hash("pw");
    let probes: String = (1..=PROBES).map(|n| format!("probe-{n} = \"{pw}\"\n")).collect();
    std::fs::write(&users, format!("[users]\nalice = \"{pw}\"\ncarol = \"{}\"\n{probes}", argon2_hash("pw3"))).unwrap();
    let edge = builder
        .proxy("desk", "/", &[(up.addr, 1, 0)], "auth = \"basic\"")
        .raw(&format!(
            "[auth.basic]\nusers_file = \"{}\"\nusers_url = \"http://{}/users\"\nusers_refresh = \"1h\"\n",
            users.display(),
            list.addr
        ))
        .start()
        .await;
    assert!(crate::support::eventually(Duration::from_secs(3), || list.fetches.load(Ordering::SeqCst) >= 1).await, "list fetched at start");
    let mut n = 0;
    let list_in_use = crate::support::eventually_async(Duration::from_secs(5), || {
        n += 1;
        let probe = basic(&format!("probe-{}", n.min(PROBES)), "pw");
        let http = edge.http;
        async move { h1(http, "GET", "/", &[("authorization", &probe)], Bytes::new()).await.status == 401 }
    });
    assert!(list_in_use.await, "the fetched list never came into use");
    let carol = basic("carol", "pw3");
    assert_eq!(h1(edge.http, "GET", "/", &[("authorization", &carol)], Bytes::new()).await.status, 401, "not on the list yet");

    // Load from four clients while refreshing five times: every request succeeds.
    let alice = basic("alice", "pw");
    assert_eq!(h1(edge.http, "GET", "/", &[("authorization", &alice)], Bytes::new()).await.status, 200);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (stop, alice, http) = (stop.clone(), alice.clone(), edge.http);
        clients.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0usize, 0usize);
            while !stop.load(Ordering::SeqCst) {
                match h1(http, "GET", "/", &[("authorization", &alice)], Bytes::new()).await.status {
                    200 => ok += 1,
                    _ => failed += 1,
                }
            }
            (ok, failed)
        }));
    }
    *list.names.lock().unwrap() = "[\"alice\", \"carol\"]".into();
    for _ in 0..5 {
        let out = cli(&edge, &["refresh"]).await;
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        // Not a wait for an event: the load runs between refreshes, so they interleave.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let (mut ok, mut failed) = (0, 0);
    for c in clients {
        let (o, f) = c.await.unwrap();
        ok += o;
        failed += f;
    }
    assert_eq!(failed, 0, "{failed} of {} requests failed during refresh", ok + failed);
    assert!(ok > 20, "the load ran ({ok} requests)");
    assert!(list.fetches.load(Ordering::SeqCst) >= 6, "each refresh re-fetched the list");
    assert_eq!(h1(edge.http, "GET", "/", &[("authorization", &carol)], Bytes::new()).await.status, 200, "on the list after refresh");
    edge.stop().await;
}

#[tokio::test]
async fn shutdown_stops_accepting_and_lets_a_request_in_flight_finish() {
    let up = Upstream::start("slow").await;
    let edge = TestEdge::new().proxy("app", "/", &[(up.addr, 1, 0)], "").raw("[maintenance]\nshutdown_drain = \"5s\"\n").start().await;
    let http = edge.http;
    let in_flight = tokio::spawn(async move { crate::support::client::get(http, "/slow/700").await });
    assert!(crate::support::eventually(Duration::from_secs(2), || up.in_flight.load(Ordering::SeqCst) == 1).await);
    let started = tokio::time::Instant::now();
    edge.stop().await;
    let reply = in_flight.await.unwrap();
    assert_eq!(reply.status, 200, "the request in flight finished during the drain");
    assert!(started.elapsed() < Duration::from_secs(5), "the drain ended when the last connection closed");
    assert!(tokio::net::TcpStream::connect(http).await.is_err(), "no new connections after shutdown");
}

/// Starts the real binary on `config` and waits until `/health` answers.
async fn serve(config: &std::path::Path, admin: SocketAddr) -> std::process::Child {
    serve_with(config, admin, &[]).await
}

async fn serve_with(config: &std::path::Path, admin: SocketAddr, env: &[(&str, &str)]) -> std::process::Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["serve", "--config"])
        .arg(config)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(admin).await.is_ok() {
            return child;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the edge did not start");
}

async fn terminate(mut child: std::process::Child) {
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap();
    assert_eq!(status.code(), Some(0));
}

/// A config file in `dir` for a process of its own: an HTTP listener serving `dir` as a
/// static site and the admin API, on free ports (config path, HTTP, admin).
fn static_site_config(dir: &std::path::Path) -> (std::path::PathBuf, SocketAddr, SocketAddr) {
    let port = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let (http, admin) = (port(), port());
    let config = dir.join("edge.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nname = \"localhost\"\nstate_dir = \"state\"\nlog_dir = \"logs\"\n[[listener]]\nname = \"http\"\naddress = \"{http}\"\n\
             [admin]\naddress = \"{admin}\"\ntoken = \"{ADMIN_TOKEN}\"\n[[service]]\nname = \"site\"\nstatic_dir = \"{}\"\n[[route]]\npath = \"/\"\nservice = \"site\"\n",
            dir.display()
        ),
    )
    .unwrap();
    (config, http, admin)
}

/// The variables of a running process.
fn environment_of(child: &std::process::Child) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{}/environ", child.id())).unwrap();
    raw.split(|b| *b == 0).map(|v| String::from_utf8_lossy(v).into_owned()).collect()
}

#[tokio::test]
async fn the_edge_re_executes_itself_once_for_commit_on_demand_memory_and_keeps_its_pid() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _http, admin) = static_site_config(dir.path());
    // The PID the parent spawned serves (the re-execution replaced its image), with the
    // allocator option set; SIGTERM reaches it and it exits cleanly.
    let child = serve(&config, admin).await;
    assert!(environment_of(&child).contains(&"MIMALLOC_ARENA_EAGER_COMMIT=0".to_string()), "{:?}", environment_of(&child));
    terminate(child).await;
    // An operator's own setting is kept.
    let child = serve_with(&config, admin, &[("MIMALLOC_ARENA_EAGER_COMMIT", "1")]).await;
    assert!(environment_of(&child).contains(&"MIMALLOC_ARENA_EAGER_COMMIT=1".to_string()));
    terminate(child).await;
}

#[tokio::test]
async fn maintenance_survives_a_restart_of_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _http, admin) = static_site_config(dir.path());
    let health = || async move { h1(admin, "GET", "/health", &[], Bytes::new()).await.status };
    let maintenance = |state: &'static str| {
        let config = config.clone();
        async move {
            let run = move || {
                Command::new(env!("CARGO_BIN_EXE_portcullis")).args(["maintenance", state, "--config"]).arg(&config).output().unwrap()
            };
            tokio::task::spawn_blocking(run).await.unwrap().status.code()
        }
    };
    let first = serve(&config, admin).await;
    assert_eq!(health().await, 200);
    assert_eq!(maintenance("on").await, Some(0));
    assert_eq!(health().await, 503);
    terminate(first).await;

    let second = serve(&config, admin).await;
    assert_eq!(health().await, 503, "still in maintenance after the restart");
    assert!(std::fs::read_to_string(dir.path().join("logs/error.log")).unwrap().contains("starting in maintenance mode"));
    assert_eq!(maintenance("off").await, Some(0));
    assert_eq!(health().await, 200);
    terminate(second).await;
}
