//! Benchmark helper: a connection flood from many source addresses (bound one by one from
//! BASE upwards, e.g. banned 127.64.x.y), each connection sending one request and reading the
//! answer, at a target rate. Prints what it achieved and what the edge answered.
//!
//! `cargo run --release --example flood -- EDGE_ADDR BASE SOURCES RATE SECONDS`

#![allow(clippy::print_stdout, clippy::unwrap_used, reason = "a small command-line helper")]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Connections in flight at once, each driven by its own task.
const TASKS: u32 = 256;
/// How long one attempt waits for the connection and for the answer: when the kernel drops
/// the SYN (nftables mirror) the attempt is abandoned and the flood goes on at its rate.
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(40);

#[derive(Default)]
struct Tally {
    answered_blocked: AtomicU64,
    answered_other: AtomicU64,
    refused_or_reset: AtomicU64,
}

async fn one(edge: SocketAddr, source: Ipv4Addr, tally: &Tally) {
    let outcome: std::io::Result<Vec<u8>> = async {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::from((source, 0)))?;
        let mut stream = tokio::time::timeout(ATTEMPT_TIMEOUT, socket.connect(edge)).await??;
        stream.write_all(b"GET / HTTP/1.1\r\nHost: flood\r\n\r\n").await?;
        let mut answer = vec![0u8; 512];
        let n = tokio::time::timeout(ATTEMPT_TIMEOUT, stream.read(&mut answer)).await??;
        answer.truncate(n);
        Ok(answer)
    }
    .await;
    match outcome {
        Ok(answer) if answer.starts_with(b"HTTP/1.1 418") => tally.answered_blocked.fetch_add(1, Ordering::Relaxed),
        Ok(_) => tally.answered_other.fetch_add(1, Ordering::Relaxed),
        Err(_) => tally.refused_or_reset.fetch_add(1, Ordering::Relaxed),
    };
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [edge, base, sources, rate, seconds] = args.as_slice() else {
        return Err("usage: flood EDGE_ADDR BASE SOURCES RATE SECONDS".into());
    };
    let edge: SocketAddr = edge.parse()?;
    let base = u32::from(base.parse::<Ipv4Addr>()?);
    let sources: u32 = sources.parse()?;
    let rate: f64 = rate.parse()?;
    let seconds: u64 = seconds.parse()?;
    let tally = Arc::new(Tally::default());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    let next_source = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let (tally, next_source) = (tally.clone(), next_source.clone());
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(f64::from(TASKS) / rate));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            while tokio::time::Instant::now() < deadline {
                tick.tick().await;
                let i = next_source.fetch_add(1, Ordering::Relaxed) % u64::from(sources);
                one(edge, Ipv4Addr::from(base.wrapping_add(i as u32)), &tally).await;
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    let blocked = tally.answered_blocked.load(Ordering::Relaxed);
    let other = tally.answered_other.load(Ordering::Relaxed);
    let failed = tally.refused_or_reset.load(Ordering::Relaxed);
    println!(
        "flood: {} connections/s attempted-rate {rate}, answered 418: {blocked}, other answers: {other}, no answer (dropped, refused, reset or timed out): {failed}",
        (blocked + other + failed) / seconds.max(1)
    );
    Ok(())
}
