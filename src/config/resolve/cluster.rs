//! `[cluster]`: which state store backs this peer (embedded, or Redis parsed into a server or
//! Sentinel target), the peer's name and heartbeat, and the CA trusted for `rediss://`.

use std::time::Duration;

use super::super::file::ClusterFile;
use super::super::redis_url::{RedisUrl, RedisUrlError};
use super::super::{ClusterConfig, StoreKind};
use super::Checker;

pub(super) fn resolve_cluster(c: &mut Checker<'_>, raw: ClusterFile, server_name: &str) -> ClusterConfig {
    let store = match raw.store.as_deref().unwrap_or("embedded") {
        "embedded" => StoreKind::Embedded,
        "redis" => match raw.redis_url.as_deref().map(RedisUrl::parse) {
            Some(Ok(url)) => StoreKind::Redis { url },
            Some(Err(error)) => {
                let hint = match error {
                    RedisUrlError::Sentinel(_) => "write redis+sentinel://host:26379,host:26379/<master>/0",
                    RedisUrlError::Scheme(_) => "write redis://host:6379/0 or redis+sentinel://host:26379/<master>/0",
                };
                c.err("cluster.redis_url", error.to_string(), hint);
                StoreKind::Embedded
            }
            None => {
                c.err("cluster.redis_url", "missing", "store = \"redis\" needs redis_url = \"redis://host:6379/0\"");
                StoreKind::Embedded
            }
        },
        other => {
            c.err("cluster.store", format!("{other:?} is not a store"), "use \"embedded\" or \"redis\"");
            StoreKind::Embedded
        }
    };
    let heartbeat = c.duration("cluster.heartbeat", raw.heartbeat.as_ref(), Duration::from_secs(2));
    if heartbeat < Duration::from_millis(100) || heartbeat > Duration::from_secs(60) {
        c.err("cluster.heartbeat", "out of range", "between \"100ms\" and \"60s\"");
    }
    // The default (server.name) is checked as server.name.
    if let Some(peer) = &raw.peer
        && (peer.is_empty() || peer.len() > 64 || !peer.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')))
    {
        c.err("cluster.peer", format!("{peer:?} is not a usable peer name"), "letters, digits, '-', '_', '.'; at most 64");
    }
    let peer = raw.peer.unwrap_or_else(|| server_name.to_string());
    let redis_ca = raw.redis_ca.as_ref().map(|file| c.existing_file("cluster.redis_ca", file, "CA file"));
    ClusterConfig { store, peer, heartbeat, redis_ca }
}
