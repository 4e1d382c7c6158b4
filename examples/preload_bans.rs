//! Benchmark helper: writes N bans (consecutive IPv4 addresses from BASE, 10.0.0.0 by default;
//! 30 minutes) into an embedded state store, so an edge started on that `state_dir` begins
//! with N bans in force.
//!
//! `cargo run --release --example preload_bans -- STATE_DIR N [BASE]`

#![allow(clippy::print_stdout, clippy::unwrap_used, reason = "a small command-line helper")]

use portcullis::cluster::BanRecord;
use portcullis::cluster::embedded::EmbeddedStore;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(count)) = (args.next(), args.next()) else {
        return Err("usage: preload_bans STATE_DIR N [BASE]".into());
    };
    let count: u32 = count.parse()?;
    let base: std::net::Ipv4Addr = args.next().as_deref().unwrap_or("10.0.0.0").parse()?;
    let store = EmbeddedStore::open(std::path::Path::new(&dir))?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64;
    let records = (0..count)
        .map(|i| BanRecord {
            subject: std::net::Ipv4Addr::from(u32::from(base).wrapping_add(i)).to_string(),
            category: "http-auth-failure".into(),
            since_ms: now,
            until_ms: now + 30 * 60 * 1000,
            reason: "benchmark preload".into(),
        })
        .collect();
    store.ban_many(records).await?;
    println!("{count} bans written to {dir}");
    Ok(())
}
