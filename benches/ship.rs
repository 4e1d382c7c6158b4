//! Log shipping throughput and CPU per message, against a real syslog server: N access-log
//! lines handed to the outbox (as the log writers do), formatted, queued on disk and delivered
//! over TLS (RFC 5425) or RELP; prints messages per second and the process's CPU time per
//! message (user + system, from /proc/self/stat). `bench/ship.sh` starts the rsyslog receiver
//! and runs this beside rsyslog's own forwarder fed the same lines.
//!
//! Run: `SHIP_PROTOCOL=tls SHIP_PORT=16514 SHIP_DIR=/tmp/x SHIP_N=200000 cargo bench --bench ship`
//! (SHIP_DIR holds ca.pem, client.pem, client.key; the queue goes to SHIP_DIR/state).
//! `SHIP_RATE=2000` hands the lines over at that many per second (every 10 ms), as an edge
//! under steady load would, instead of as fast as the queue takes them.

#![allow(clippy::disallowed_types, reason = "wall-clock timing is the point of a benchmark")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout, reason = "benchmark harness")]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use portcullis::config::{ShipConfig, ShipProtocol};
use portcullis::telemetry::logging::ErrorLog;
use portcullis::telemetry::ship::{Level, LogName, Shipping};

/// This process's CPU time so far (user + system), from /proc/self/stat in clock ticks (100 Hz).
fn cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

fn main() {
    let env = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_string());
    let n: u64 = env("SHIP_N", "200000").parse().unwrap();
    let rate: u64 = env("SHIP_RATE", "0").parse().unwrap();
    let dir = PathBuf::from(env("SHIP_DIR", "/tmp/ship-bench"));
    let protocol = if env("SHIP_PROTOCOL", "tls") == "relp" { ShipProtocol::Relp } else { ShipProtocol::Tls };
    let config = ShipConfig {
        host: "127.0.0.1".into(),
        port: env("SHIP_PORT", "16514").parse().unwrap(),
        protocol,
        server_name: "localhost".into(),
        ca: dir.join("ca.pem"),
        client_identity: Some((dir.join("client.pem"), dir.join("client.key"))),
        queue_max: 1 << 30,
    };
    let state = dir.join(format!("state-{}", protocol.as_str()));
    let _ = std::fs::remove_dir_all(&state);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    runtime.block_on(async move {
        let (shipping, outbox, pending) = Shipping::open(&config, &state, "edge1.example.com").unwrap();
        shipping.start_writer(pending, ErrorLog::console_only()).unwrap();
        let sender = tokio::spawn(shipping.clone().run(ErrorLog::console_only(), std::future::pending()));
        while !shipping.status().connected {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (cpu0, t0) = (cpu(), Instant::now());
        // bench/ship.sh times delivery to the receiver's file from here.
        println!("start_unix_ms={}", portcullis::clock::unix_ms());
        let mut i = 0;
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        while i < n {
            // Hand over in chunks the outbox can hold, as a busy edge would over time; at
            // SHIP_RATE, a hundredth of it every 10 ms.
            let chunk = if rate > 0 {
                tick.tick().await;
                (rate / 100).max(1)
            } else {
                20_000
            };
            let end = (i + chunk).min(n);
            for k in i..end {
                let line = format!(
                    "2026-12-06T00:00:00.123Z 203.0.113.7 desktop.example.com GET /finesse/api/User/agent{k} HTTP/1.1 200 512 10.0.0.5:8082 finesse 0.004\n"
                );
                outbox.send(LogName::Access, Level::Info, &line);
            }
            i = end;
            while rate == 0 && shipping.appended() < i {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        // Done when every message was written to the server (tls) or acknowledged (relp); the
        // receiver's count is checked by bench/ship.sh.
        loop {
            let s = shipping.status();
            let done = if protocol == ShipProtocol::Relp { s.acknowledged >= n } else { s.sent >= n };
            if done {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let (elapsed, used) = (t0.elapsed(), cpu() - cpu0);
        let s = shipping.status();
        assert_eq!(s.dropped, 0, "{s:?}");
        println!(
            "portcullis {}: {n} messages handed over and written/acknowledged in {:.2} s = {:.0} msg/s; CPU {:.2} s = {:.2} us/msg (sent {}, acknowledged {}, reconnects {})",
            protocol.as_str(),
            elapsed.as_secs_f64(),
            n as f64 / elapsed.as_secs_f64(),
            used.as_secs_f64(),
            used.as_secs_f64() * 1e6 / n as f64,
            s.sent,
            s.acknowledged,
            s.reconnects
        );
        sender.abort();
        shipping.stop_writer();
    });
}
