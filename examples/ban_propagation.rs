//! Benchmark helper: how long a ban set on one peer takes to be enforced by the others.
//! For each of N sources (consecutive addresses from BASE, e.g. 127.77.0.1), bans it through
//! peer A's admin API, then polls every other peer with requests *from that source* until
//! each answers the blocked status; prints p50/p99/max of the slowest peer per ban.
//!
//! `cargo run --release --example ban_propagation -- ADMIN_A TOKEN N BASE PEER_HTTP...`

#![allow(clippy::print_stdout, clippy::unwrap_used, reason = "a small command-line helper")]

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

async fn exchange(from: Option<Ipv4Addr>, to: SocketAddr, request: &str) -> std::io::Result<String> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    if let Some(ip) = from {
        socket.bind(SocketAddr::from((ip, 0)))?;
    }
    let mut stream = socket.connect(to).await?;
    stream.write_all(request.as_bytes()).await?;
    let mut head = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(2), stream.read_exact(&mut head)).await??;
    Ok(String::from_utf8_lossy(&head[9..12]).into_owned())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [admin, token, n, base, peers @ ..] = args.as_slice() else {
        return Err("usage: ban_propagation ADMIN_A TOKEN N BASE PEER_HTTP...".into());
    };
    let admin: SocketAddr = admin.parse()?;
    let n: u32 = n.parse()?;
    let base = u32::from(base.parse::<Ipv4Addr>()?);
    let peers: Vec<SocketAddr> = peers.iter().map(|p| p.parse()).collect::<Result<_, _>>()?;
    let mut latencies = Vec::with_capacity(n as usize);
    for i in 0..n {
        let ip = Ipv4Addr::from(base + i);
        let started = Instant::now();
        let ban = format!(
            "POST /api/v1/blocked?ip={ip}&minutes=30 HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let status = exchange(None, admin, &ban).await?;
        if status != "200" {
            return Err(format!("ban of {ip} answered {status}").into());
        }
        let mut slowest = Duration::ZERO;
        for peer in &peers {
            let probe = "GET / HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n";
            loop {
                if exchange(Some(ip), *peer, probe).await.as_deref().unwrap_or("") == "418" {
                    break;
                }
                if started.elapsed() > Duration::from_secs(10) {
                    return Err(format!("{peer} never refused {ip}").into());
                }
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            slowest = slowest.max(started.elapsed());
        }
        latencies.push(slowest);
    }
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q).ceil() as usize).saturating_sub(1).min(latencies.len() - 1)];
    println!(
        "{n} bans: slowest peer enforced it after p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (from the ban request on A)",
        at(0.50).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        latencies[latencies.len() - 1].as_secs_f64() * 1e3
    );
    Ok(())
}
