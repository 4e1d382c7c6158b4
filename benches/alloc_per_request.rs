//! Heap allocations per proxied HTTP/1.1 keep-alive request (issue 13: "count allocations per
//! request in a benchmark with a counting allocator and report the number").
//!
//! One process: the edge (`portcullis::app::start`, a plain-HTTP listener, one proxied service,
//! the access log on), a minimal upstream and a minimal client on raw sockets that allocate
//! nothing per request themselves (fixed buffers). A counting global allocator (`stats_alloc`
//! over the system allocator) counts every allocation and reallocation while N requests run
//! after a warm-up;
//! the same client against the upstream directly gives the baseline, so the difference is the
//! edge's. Cases: no authentication, and Basic validated once then cached.
//!
//! Run: `cargo bench --bench alloc_per_request` (prints a table; a few seconds).

#![allow(clippy::disallowed_types, reason = "wall-clock timing is the point of a benchmark")]
#![allow(clippy::unwrap_used, clippy::print_stdout, reason = "benchmark harness")]

use std::net::SocketAddr;
use std::time::Instant;

use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The system allocator, counting (allocation counts do not depend on the allocator).
#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

/// Requests measured per case (`ALLOC_BENCH_REQUESTS` overrides, e.g. a few hundred under a
/// malloc uprobe to see where each allocation comes from); the warm-up is a tenth of it.
fn measured_requests() -> u64 {
    std::env::var("ALLOC_BENCH_REQUESTS").ok().and_then(|n| n.parse().ok()).unwrap_or(20_000)
}
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok";

/// An upstream answering every request on a connection with [`RESPONSE`] (reads until the
/// blank line; fixed buffer, no allocation per request).
async fn upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buffer = [0u8; 8192];
                let mut filled = 0;
                loop {
                    let Ok(n) = tcp.read(&mut buffer[filled..]).await else { return };
                    if n == 0 {
                        return;
                    }
                    filled += n;
                    while let Some(end) = buffer[..filled].windows(4).position(|w| w == b"\r\n\r\n") {
                        if tcp.write_all(RESPONSE).await.is_err() {
                            return;
                        }
                        buffer.copy_within(end + 4..filled, 0);
                        filled -= end + 4;
                    }
                    if filled == buffer.len() {
                        return;
                    }
                }
            });
        }
    });
    address
}

/// Sends `count` keep-alive GETs on one connection to `target`, each answered before the next.
async fn requests(target: SocketAddr, authorization: &str, count: u64) {
    let mut tcp = TcpStream::connect(target).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let request = format!("GET /x HTTP/1.1\r\nHost: bench.example\r\n{authorization}\r\n").into_bytes();
    let mut buffer = [0u8; 4096];
    for _ in 0..count {
        tcp.write_all(&request).await.unwrap();
        let mut filled = 0;
        // Every response ends with the 2-byte body "ok" after its blank line.
        loop {
            let n = tcp.read(&mut buffer[filled..]).await.unwrap();
            assert!(n > 0, "the connection closed");
            filled += n;
            if let Some(end) = buffer[..filled].windows(4).position(|w| w == b"\r\n\r\n")
                && filled >= end + 4 + 2
            {
                assert!(buffer.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buffer[..filled]));
                break;
            }
        }
    }
}

/// Allocations per request and µs per request (wall clock, one client) against `target`.
async fn measure(target: SocketAddr, authorization: &str) -> (f64, f64) {
    let count = measured_requests();
    requests(target, authorization, (count / 10).max(1)).await;
    let region = Region::new(GLOBAL);
    let started = Instant::now();
    requests(target, authorization, count).await;
    let elapsed = started.elapsed();
    let change = region.change();
    let allocations = change.allocations + change.reallocations;
    (allocations as f64 / count as f64, elapsed.as_secs_f64() * 1e6 / count as f64)
}

fn argon2_hash(password: &str) -> String {
    use argon2::PasswordHasher;
    let salt = argon2::password_hash::SaltString::from_b64("c29tZXNhbHRzb21lc2FsdA").unwrap();
    argon2::Argon2::default().hash_password(password.as_bytes(), &salt).unwrap().to_string()
}

async fn edge(dir: &std::path::Path, upstream: SocketAddr, auth: &str) -> (portcullis::app::Running, SocketAddr) {
    let users = dir.join("users.toml");
    std::fs::write(&users, format!("[users]\nagent1 = \"{}\"\n", argon2_hash("pw"))).unwrap();
    let config = format!(
        "[server]\nname = \"bench\"\nstate_dir = \"{dir}/state\"\nlog_dir = \"{dir}/logs\"\n\
         [[listener]]\nname = \"http\"\naddress = \"127.0.0.1:0\"\ntls = false\n\
         [auth.basic]\nusers_file = \"{users}\"\n\
         [[service]]\nname = \"app\"\nauth = \"{auth}\"\n[[service.upstream]]\naddress = \"{upstream}\"\n\
         [[route]]\npath = \"/\"\nservice = \"app\"\n",
        dir = dir.display(),
        users = users.display(),
    );
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    let path = dir.join("portcullis.toml");
    std::fs::write(&path, config).unwrap();
    let config = portcullis::config::Config::load(&path).unwrap_or_else(|e| panic!("bench config: {e}"));
    let running = portcullis::app::start(config).await.unwrap();
    let address = running.listeners.iter().find(|(n, _)| n == "http").map(|(_, a)| *a).unwrap();
    (running, address)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let upstream = upstream().await;
        let (direct, direct_us) = measure(upstream, "").await;
        println!("| path | allocations per request | of which the edge's | µs per request (one client, wall) |");
        println!("|---|---:|---:|---:|");
        println!("| client → upstream directly | {direct:.1} | – | {direct_us:.1} |");
        for (name, auth, header) in [
            ("through the edge, no auth", "none", String::new()),
            ("through the edge, Basic (cached)", "basic", "Authorization: Basic YWdlbnQxOnB3\r\n".to_string()),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let (running, address) = edge(dir.path(), upstream, auth).await;
            let (through, us) = measure(address, &header).await;
            println!("| {name} | {through:.1} | {:.1} | {us:.1} |", through - direct);
            running.shutdown().await;
        }
    });
}
