//! The real `portcullis` binary: `check` exit codes and messages, `status` against a
//! running edge, and the unreachable-edge exit code.

use std::process::Command;

use crate::support::{ADMIN_TOKEN, TestEdge, Upstream, closed_port};

fn portcullis() -> Command {
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
}

#[test]
fn check_accepts_the_example_and_rejects_a_broken_file_with_exit_64() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/portcullis.toml");
    let out = portcullis().args(["check", "--config", example]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (3 listener(s), 2 service(s), 2 route(s))"));

    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.toml");
    std::fs::write(
        &broken,
        "[server]\nname = \"edge\"\n[[listener]]\nname = \"x\"\naddress = \"nope\"\n[[route]]\npath = \"/\"\nservice = \"none\"\n",
    )
    .unwrap();
    let out = portcullis().args(["check", "--config"]).arg(&broken).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("has 2 errors"), "{stderr}");
    assert!(stderr.contains("listener[0].address: \"nope\" is not an IP:port address"), "{stderr}");
    assert!(stderr.contains("route[0].service: no service named \"none\""), "{stderr}");

    let out = portcullis().args(["check", "--config", "/nonexistent.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent.toml"));
    let out = portcullis().args(["frobnicate"]).output().unwrap();
    assert_eq!(out.status.code(), Some(64), "usage errors exit 64");
}

#[test]
fn serve_refuses_an_invalid_file_and_binds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let file = dir.path().join("p.toml");
    std::fs::write(
        &file,
        format!("[server]\nname = \"edge\"\n[[listener]]\nname = \"h\"\naddress = \"127.0.0.1:{port}\"\n[[service]]\nname = \"x\"\n"),
    )
    .unwrap();
    let out = portcullis().args(["serve", "--config"]).arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("service[0].upstream: no upstream server"));
    assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(), "nothing stayed bound");
}

#[tokio::test]
async fn status_talks_to_a_running_edge_and_reports_unreachable_with_69() {
    let up = Upstream::start("a").await;
    let edge = TestEdge::new().proxy("app", "/", &[(up.addr, 1, 0)], "").start().await;
    let url = format!("http://{}", edge.admin);
    let out = tokio::task::spawn_blocking(move || portcullis().args(["status", "--admin", &url, "--token", ADMIN_TOKEN]).output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    for field in [
        "HOST:         localhost (",
        "ROLES:        web edge, admin API",
        "LOAD:",
        "DATE:",
        "UPTIME:",
        "MAINTENANCE:  off",
        "COUNTS:       sessions 0 (peak 0), websockets 0 (peak 0)",
        "BLOCKED:      0 source(s)",
    ] {
        assert!(stdout.contains(field), "{field:?} missing:\n{stdout}");
    }
    assert!(stdout.contains("app          Active"), "{stdout}");
    assert!(stdout.contains(&format!("{:<32} UP   weight=1", up.addr)), "{stdout}");

    let url = format!("http://{}", edge.admin);
    let out = tokio::task::spawn_blocking(move || {
        portcullis().args(["status", "--json", "--admin", &url]).env("PORTCULLIS_ADMIN_TOKEN", "wrong-token").output().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(64), "a refused token is a usage error");

    let dead = format!("http://{}", closed_port().await);
    let out = tokio::task::spawn_blocking(move || portcullis().args(["status", "--admin", &dead, "--token", "x"]).output().unwrap())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(69));
    edge.stop().await;
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test]
async fn serve_reloads_on_sighup_and_stops_cleanly_on_sigterm() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let dir = tempfile::tempdir().unwrap();
    let (port, admin) = (free_port(), free_port());
    let text = |up: std::net::SocketAddr| {
        format!(
            "[server]\nname = \"localhost\"\nstate_dir = \"state\"\nlog_dir = \"logs\"\n[[listener]]\nname = \"http\"\naddress = \"127.0.0.1:{port}\"\n[admin]\naddress = \"127.0.0.1:{admin}\"\ntoken = \"{ADMIN_TOKEN}\"\n[[service]]\nname = \"app\"\n[[service.upstream]]\naddress = \"{up}\"\n[[route]]\npath = \"/\"\nservice = \"app\"\n"
        )
    };
    let file = dir.path().join("edge.toml");
    std::fs::write(&file, text(a.addr)).unwrap();
    let mut child = portcullis().args(["serve", "--config"]).arg(&file).stderr(std::process::Stdio::null()).spawn().unwrap();
    let edge: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut up_at_start = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(edge).await.is_ok() {
            up_at_start = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(up_at_start, "edge did not start");
    assert_eq!(crate::support::client::get(edge, "/").await.body, "a 0");

    // A broken file on SIGHUP: still serving the old configuration.
    std::fs::write(&file, "[server]\nname = \"localhost\"\n").unwrap();
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    let error_log = || std::fs::read_to_string(dir.path().join("logs/error.log")).unwrap_or_default();
    let refused = crate::support::eventually(std::time::Duration::from_secs(5), || error_log().contains("configuration reload refused"));
    assert!(refused.await, "the broken file was never refused:\n{}", error_log());
    assert_eq!(crate::support::client::get(edge, "/").await.body, "a 0");

    // A good file on SIGHUP: the new upstream serves.
    std::fs::write(&file, text(b.addr)).unwrap();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    let mut switched = false;
    let mut requests = 2;
    for _ in 0..50 {
        requests += 1;
        if crate::support::client::get(edge, "/").await.body == "b 0" {
            switched = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(switched, "SIGHUP did not apply the new configuration");

    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap();
    assert_eq!(status.code(), Some(0));
    let access = std::fs::read_to_string(dir.path().join("logs/access.log")).unwrap();
    assert_eq!(access.lines().count(), requests, "every request logged and flushed at shutdown:\n{access}");
}

/// `check` accepts the SIP edge's keys (and warns about a domain on both federation lists,
/// event 14518); a TLS next hop's CA bundle (`next_hop_ca`) that is missing or not PEM
/// certificates is an error with its key path, and so is one on a TCP next hop.
#[test]
fn sip_keys_are_checked_and_warned_about_and_a_bad_next_hop_ca_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sip.toml");
    let write = |next_hop: &str| {
        std::fs::write(
            &file,
            format!(
                "[server]\nname = \"edge\"\nstate_dir = \"{0}/state\"\nlog_dir = \"{0}/logs\"\n\
                 [[sip.listener]]\nname = \"federation\"\naddress = \"127.0.0.1:0\"\ntransport = \"tcp\"\n\
                 [sip]\n{next_hop}\n\
                 [[federation.allow]]\ndomain = \"partner.example\"\n[[federation.block]]\ndomain = \"partner.example\"\n",
                dir.path().display()
            ),
        )
        .unwrap();
    };
    write("next_hop = \"sips:127.0.0.1:5061\"");
    let out = portcullis().args(["check", "--config"]).arg(&file).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "a warning is not an error: {stdout}");
    assert!(stdout.contains("ok (1 listener(s), 0 service(s), 0 route(s))"), "{stdout}");
    assert!(stdout.contains("warning 14518: partner domain \"partner.example\" is on both the allow and the block list"), "{stdout}");
    // A CA bundle that is not PEM certificates, one that does not exist, one on a TCP next hop.
    let not_pem = dir.path().join("not-a-ca.pem");
    std::fs::write(&not_pem, "hello\n").unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, rcgen::generate_simple_self_signed(vec!["ca.example".to_string()]).unwrap().cert.pem()).unwrap();
    for (next_hop, expected) in [
        (format!("next_hop = \"sips:127.0.0.1:5061\"\nnext_hop_ca = \"{}\"", not_pem.display()), "holds no CERTIFICATE block"),
        ("next_hop = \"sips:127.0.0.1:5061\"\nnext_hop_ca = \"/nonexistent/ca.pem\"".to_string(), "\"/nonexistent/ca.pem\" not found"),
        (format!("next_hop = \"sip:127.0.0.1:5060\"\nnext_hop_ca = \"{}\"", ca.display()), "has no effect on a TCP next hop"),
    ] {
        write(&next_hop);
        let out = portcullis().args(["check", "--config"]).arg(&file).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{stderr}");
        assert!(stderr.contains("sip.next_hop_ca:") && stderr.contains(expected), "{expected}: {stderr}");
    }
}

/// `firewall show` renders from the configuration alone: no edge, no privileges, nothing
/// applied. It names only its own table and the ports its listeners would open (the admin API
/// on loopback is not reachable from outside, so not opened).
#[test]
fn firewall_show_prints_the_ruleset_without_applying_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("edge.toml");
    let base = format!(
        "[server]\nname = \"edge\"\nstate_dir = \"{d}/state\"\nlog_dir = \"{d}/logs\"\n\
         [[listener]]\nname = \"web\"\naddress = \"0.0.0.0:8443\"\n[admin]\naddress = \"127.0.0.1:9443\"\ntoken = \"{ADMIN_TOKEN}\"\n\
         [[service]]\nname = \"s\"\n[[service.upstream]]\naddress = \"127.0.0.1:9\"\n[[route]]\npath = \"/\"\nservice = \"s\"\n",
        d = dir.path().display()
    );
    std::fs::write(&config, format!("{base}[firewall]\nenabled = true\ninterface = \"eth1\"\ntable = \"edge_fw\"\n")).unwrap();
    let out = portcullis().args(["firewall", "show", "--config"]).arg(&config).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let ruleset = String::from_utf8_lossy(&out.stdout);
    assert!(ruleset.starts_with("table inet edge_fw {}\ndelete table inet edge_fw\n"), "{ruleset}");
    assert!(ruleset.contains("elements = { 0.0.0.0/0 . 8443 }"), "the listener's port on every IPv4 address: {ruleset}");
    assert!(!ruleset.contains("9443"), "the admin API on loopback is not opened: {ruleset}");
    assert!(ruleset.contains("iifname != \"eth1\" accept"), "{ruleset}");
    assert!(!dir.path().join("logs/firewall.log").exists(), "show applies and records nothing");

    std::fs::write(&config, &base).unwrap();
    let out = portcullis().args(["firewall", "show", "--config"]).arg(&config).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("[firewall] is not enabled"), "{}", String::from_utf8_lossy(&out.stderr));
}
