//! Cluster peers (DESIGN §6): every peer announces itself in the state store each
//! `cluster.heartbeat` with a record that expires after three heartbeats, so a peer that
//! stops (even `kill -9`) ages out of the list on its own. The primary is the alive peer with
//! the smallest name — every peer computes the same answer from the same list, no election
//! round trips. A peer that stops cleanly leaves at once.
//!
//! Store layout: set [`PEERS_KEY`] of names (capped at [`MAX_PEERS`]) and one value
//! `cluster:peer:<name>` (JSON [`PeerInfo`]) per peer with the heartbeat TTL.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cluster::{SetAdd, StateStore, StoreError};

/// Store set of announced peer names.
pub const PEERS_KEY: &str = "cluster:peers";
/// Most peers listed.
pub const MAX_PEERS: usize = 256;
/// A peer record lives this many heartbeats.
pub const HEARTBEATS_TO_LIVE: u32 = 3;

/// What a peer says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    pub name: String,
    /// Its listeners and admin address, for operators.
    pub address: String,
    /// Unix ms of this announcement.
    pub last_seen_ms: u64,
    pub maintenance: bool,
    pub sessions: u64,
    pub websockets: u64,
}

fn record_key(name: &str) -> String {
    format!("cluster:peer:{name}")
}

/// Announces `info` for `heartbeats × heartbeat`.
pub async fn announce(store: &Arc<dyn StateStore>, info: &PeerInfo, heartbeat: Duration) -> Result<(), StoreError> {
    let json = serde_json::to_vec(info).unwrap_or_default();
    store.set(&record_key(&info.name), &json, Some(heartbeat * HEARTBEATS_TO_LIVE)).await?;
    if store.set_add(PEERS_KEY, &info.name, MAX_PEERS).await? == SetAdd::Full {
        tracing::warn!("more than {MAX_PEERS} peers announced; {} is not listed", info.name);
    }
    Ok(())
}

/// Leaves the cluster at once (clean stop).
pub async fn leave(store: &Arc<dyn StateStore>, name: &str) -> Result<(), StoreError> {
    store.delete(&record_key(name)).await?;
    store.set_remove(PEERS_KEY, name).await?;
    Ok(())
}

/// The peers alive now, by name; names whose record expired are dropped from the set.
pub async fn alive(store: &Arc<dyn StateStore>) -> Result<Vec<PeerInfo>, StoreError> {
    let mut peers = Vec::new();
    for name in store.set_members(PEERS_KEY).await? {
        match store.get(&record_key(&name)).await? {
            Some(bytes) => {
                if let Ok(info) = serde_json::from_slice::<PeerInfo>(&bytes) {
                    peers.push(info);
                }
            }
            None => {
                store.set_remove(PEERS_KEY, &name).await?;
            }
        }
    }
    peers.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(peers)
}

/// The primary among `peers` (the smallest name).
pub fn primary(peers: &[PeerInfo]) -> Option<&str> {
    peers.iter().map(|p| p.name.as_str()).min()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str) -> PeerInfo {
        PeerInfo { name: name.into(), address: "127.0.0.1:9443".into(), last_seen_ms: 1, maintenance: false, sessions: 2, websockets: 1 }
    }

    #[tokio::test]
    async fn peers_announce_age_out_and_leave() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn StateStore> = Arc::new(crate::cluster::embedded::EmbeddedStore::open(dir.path()).unwrap());
        let beat = Duration::from_millis(100);
        announce(&store, &info("edge2"), beat).await.unwrap();
        announce(&store, &info("edge1"), Duration::from_secs(60)).await.unwrap();
        let names: Vec<String> = alive(&store).await.unwrap().into_iter().map(|p| p.name).collect();
        assert_eq!(names, ["edge1", "edge2"]);
        assert_eq!(primary(&alive(&store).await.unwrap()), Some("edge1"));
        tokio::time::sleep(beat * HEARTBEATS_TO_LIVE + Duration::from_millis(50)).await;
        let names: Vec<String> = alive(&store).await.unwrap().into_iter().map(|p| p.name).collect();
        assert_eq!(names, ["edge1"], "edge2 went silent and aged out");
        assert_eq!(store.set_members(PEERS_KEY).await.unwrap(), ["edge1"]);
        leave(&store, "edge1").await.unwrap();
        assert!(alive(&store).await.unwrap().is_empty());
        assert_eq!(primary(&[]), None);
    }
}
