//! The file logs: JSON lines (`[logging] format = "json"`), and rotation with `logrotate` —
//! both ways it can work: move the files and send SIGUSR1 (the edge reopens them at their
//! paths; the real binary gets the real signal), or `copytruncate` (the files are opened for
//! appending, so the next line lands at the start of the emptied file, with no hole).

use std::time::Duration;

use crate::log_ship::kill9::Edge;
use crate::support::client::get;
use crate::support::{TestEdge, Upstream, eventually};

#[tokio::test]
async fn json_access_and_error_lines_and_a_copytruncate_rotation() {
    let up = Upstream::start("web").await;
    let edge = TestEdge::new().proxy("web", "/", &[(up.addr, 1, 0)], "").raw("[logging]\nformat = \"json\"\n").start().await;
    assert_eq!(get(edge.http, "/first?secret=1").await.status, 200);
    let access = edge.log_once("access.log", "/first").await;
    let line: serde_json::Value = serde_json::from_str(access.lines().next().unwrap()).unwrap();
    assert_eq!((line["method"].as_str(), line["path"].as_str(), line["status"].as_u64()), (Some("GET"), Some("/first"), Some(200)));
    assert_eq!(line["upstream"].as_str(), Some(up.addr.to_string().as_str()));
    assert!(line["duration_ms"].is_number() && line["client"] == "127.0.0.1", "{line}");
    edge.running().reload().await.unwrap();
    let errors = edge.log_once("error.log", "configuration reloaded").await;
    for l in errors.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert!(v["time"].is_string() && v["level"].is_string() && v["message"].is_string(), "{l}");
    }

    // copytruncate: logrotate copies the file away and empties it in place.
    let path = edge.dir.path().join("logs/access.log");
    std::fs::copy(&path, edge.dir.path().join("logs/access.log.1")).unwrap();
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(0).unwrap();
    assert_eq!(get(edge.http, "/second").await.status, 200);
    let after = edge.log_once("access.log", "/second").await;
    assert!(after.starts_with("{\"time\":") && after.lines().count() == 1 && !after.contains('\0'), "{after:?}");
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr1_reopens_the_logs_that_logrotate_moved_away() {
    let dir = tempfile::tempdir().unwrap();
    let up = Upstream::start("web").await;
    let config = format!(
        "[[service]]\nname = \"web\"\n[[service.upstream]]\naddress = \"{}\"\n[[route]]\npath = \"/\"\nservice = \"web\"\n",
        up.addr
    );
    let edge = Edge::start(dir.path(), &config).await;
    let logs = dir.path().join("logs");
    let read = |name: &str| std::fs::read_to_string(logs.join(name)).unwrap_or_default();
    assert_eq!(get(edge.http, "/before").await.status, 200);
    assert!(eventually(Duration::from_secs(5), || read("access.log").contains("/before")).await);
    for name in ["access.log", "error.log", "blocking.log"] {
        std::fs::rename(logs.join(name), logs.join(format!("{name}.1"))).unwrap();
    }
    let pid = edge.child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-USR1", &pid]).status().unwrap().success());
    let reopened =
        eventually(Duration::from_secs(5), || ["access.log", "error.log", "blocking.log"].iter().all(|n| logs.join(n).exists())).await;
    assert!(reopened, "the logs were created again at their paths");
    assert_eq!(get(edge.http, "/after").await.status, 200);
    assert!(eventually(Duration::from_secs(5), || read("access.log").contains("/after")).await, "{}", read("access.log"));
    assert!(!read("access.log").contains("/before") && !read("access.log.1").contains("/after"));
}
