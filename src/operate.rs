//! Operating the edge (DESIGN §5): maintenance mode with drain, counts of open WebSockets
//! (current and peak, per service and in total; sessions are counted by
//! [`crate::auth::sessions`]), each service's state (`Active`, `Draining (N)`,
//! `Inactive (Maintenance mode)`), and upstream weight overrides.
//!
//! Maintenance and weight overrides are persisted in the state store (keys
//! [`MAINTENANCE_KEY`], [`WEIGHTS_KEY`]) so they survive a restart; the hot path reads only
//! the in-memory copies here.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::cluster::{StateStore, StoreError};

pub mod cert;
pub mod peers;

/// Store key prefix of a peer's maintenance flag (`operate:maintenance:<peer>`; present = on):
/// maintenance is per peer even when the store is shared.
pub const MAINTENANCE_KEY: &str = "operate:maintenance";
/// Store key of the weight overrides (JSON object `"host:port": weight`).
pub const WEIGHTS_KEY: &str = "operate:weights";
/// Highest weight an override may set (as in the configuration).
pub const MAX_WEIGHT: u32 = 1000;

/// A count with the highest value it reached since start.
#[derive(Debug, Default)]
pub struct Gauge {
    current: AtomicI64,
    peak: AtomicI64,
}

impl Gauge {
    /// Adds `delta` (negative to take away) and keeps the peak.
    pub fn add(&self, delta: i64) {
        let now = self.current.fetch_add(delta, Ordering::Relaxed) + delta;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }

    /// The current value (never negative).
    pub fn current(&self) -> u64 {
        u64::try_from(self.current.load(Ordering::Relaxed)).unwrap_or(0)
    }

    /// The highest value since start.
    pub fn peak(&self) -> u64 {
        u64::try_from(self.peak.load(Ordering::Relaxed)).unwrap_or(0)
    }
}

/// What a service is doing, as the status screens show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceState {
    /// Serving (not in maintenance).
    Active,
    /// In maintenance with this many sessions and WebSockets still open.
    Draining(u64),
    /// In maintenance with nothing left open.
    Inactive,
}

impl std::fmt::Display for ServiceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServiceState::Active => f.write_str("Active"),
            ServiceState::Draining(n) => write!(f, "Draining ({n})"),
            ServiceState::Inactive => f.write_str("Inactive (Maintenance mode)"),
        }
    }
}

/// The operator's levers and the counts they watch.
pub struct Operate {
    maintenance: AtomicBool,
    maintenance_key: String,
    store: Arc<dyn StateStore>,
    websockets: Mutex<HashMap<Arc<str>, Arc<Gauge>>>,
    websockets_total: Gauge,
    /// Highest total of authenticated sessions over all services.
    sessions_total_peak: AtomicU64,
    weights: RwLock<BTreeMap<String, u32>>,
    /// The peers alive at the last heartbeat (this one included).
    peers: RwLock<Vec<peers::PeerInfo>>,
    /// Sessions over all alive peers (as of the last heartbeat), with its peak.
    cluster_sessions: Gauge,
    /// This peer is the primary (as of the last heartbeat).
    primary: Arc<AtomicBool>,
    name: String,
    /// Set at shutdown: the heartbeat stops announcing this peer.
    leaving: AtomicBool,
}

impl Operate {
    /// Loads this peer's maintenance flag and the weight overrides from the store.
    pub async fn load(store: Arc<dyn StateStore>, peer: &str) -> Operate {
        let maintenance_key = format!("{MAINTENANCE_KEY}:{peer}");
        let maintenance = matches!(store.get(&maintenance_key).await, Ok(Some(_)));
        let weights = match store.get(WEIGHTS_KEY).await {
            Ok(Some(bytes)) => serde_json::from_slice(&bytes).unwrap_or_default(),
            _ => BTreeMap::new(),
        };
        Operate {
            maintenance: AtomicBool::new(maintenance),
            maintenance_key,
            store,
            websockets: Mutex::new(HashMap::new()),
            websockets_total: Gauge::default(),
            sessions_total_peak: AtomicU64::new(0),
            weights: RwLock::new(weights),
            peers: RwLock::new(Vec::new()),
            cluster_sessions: Gauge::default(),
            primary: Arc::new(AtomicBool::new(false)),
            name: peer.to_string(),
            leaving: AtomicBool::new(false),
        }
    }

    /// Whether this peer is in maintenance.
    pub fn in_maintenance(&self) -> bool {
        self.maintenance.load(Ordering::Relaxed)
    }

    /// Turns maintenance on or off (persisted first, so a restart keeps it).
    pub async fn set_maintenance(&self, on: bool) -> Result<(), StoreError> {
        if on {
            self.store.set(&self.maintenance_key, b"on", None).await?;
        } else {
            self.store.delete(&self.maintenance_key).await?;
        }
        self.maintenance.store(on, Ordering::Relaxed);
        Ok(())
    }

    /// The WebSocket gauge of `service`.
    pub fn websockets_of(&self, service: &Arc<str>) -> Arc<Gauge> {
        self.websockets.lock().unwrap_or_else(|p| p.into_inner()).entry(service.clone()).or_default().clone()
    }

    /// A WebSocket tunnel of `service` opened (`1`) or closed (`-1`).
    pub fn websocket(&self, service: &Arc<str>, delta: i64) {
        self.websockets_of(service).add(delta);
        self.websockets_total.add(delta);
    }

    /// Open WebSockets over all services.
    pub fn websockets_total(&self) -> &Gauge {
        &self.websockets_total
    }

    /// Notes a total of sessions over all services (the current total is summed from the
    /// services when shown; only its peak is kept here).
    pub fn note_sessions_total(&self, current: u64) {
        self.sessions_total_peak.fetch_max(current, Ordering::Relaxed);
    }

    /// The highest total of sessions since start.
    pub fn sessions_total_peak(&self) -> u64 {
        self.sessions_total_peak.load(Ordering::Relaxed)
    }

    /// Records the peers seen alive at a heartbeat (and the cluster's session total).
    pub fn note_peers(&self, alive: Vec<peers::PeerInfo>) {
        let total = i64::try_from(alive.iter().map(|p| p.sessions).sum::<u64>()).unwrap_or(i64::MAX);
        self.cluster_sessions.current.store(total, Ordering::Relaxed);
        self.cluster_sessions.peak.fetch_max(total, Ordering::Relaxed);
        self.primary.store(peers::primary(&alive) == Some(self.name.as_str()), Ordering::Relaxed);
        *self.peers.write().unwrap_or_else(|p| p.into_inner()) = alive;
    }

    /// This peer is stopping: it is no longer announced.
    pub fn leave(&self) {
        self.leaving.store(true, Ordering::Relaxed);
    }

    /// Whether this peer is stopping.
    pub fn is_leaving(&self) -> bool {
        self.leaving.load(Ordering::Relaxed)
    }

    /// The flag that says whether this peer is the primary.
    pub fn primary_flag(&self) -> &Arc<AtomicBool> {
        &self.primary
    }

    /// The peers alive at the last heartbeat.
    pub fn peers(&self) -> Vec<peers::PeerInfo> {
        self.peers.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Sessions over all alive peers, with the peak this peer has seen.
    pub fn cluster_sessions(&self) -> &Gauge {
        &self.cluster_sessions
    }

    /// A service's state given what it still has open.
    pub fn state(&self, open: u64) -> ServiceState {
        match (self.in_maintenance(), open) {
            (false, _) => ServiceState::Active,
            (true, 0) => ServiceState::Inactive,
            (true, n) => ServiceState::Draining(n),
        }
    }

    /// The weight overrides (`host:port` → weight).
    pub fn weights(&self) -> BTreeMap<String, u32> {
        self.weights.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Re-reads the overrides from the store (another peer changed them); true when they
    /// differ from what this peer had.
    pub async fn reload_weights(&self) -> bool {
        let Ok(stored) = self.store.get(WEIGHTS_KEY).await else { return false };
        let next: BTreeMap<String, u32> = stored.and_then(|bytes| serde_json::from_slice(&bytes).ok()).unwrap_or_default();
        let mut weights = self.weights.write().unwrap_or_else(|p| p.into_inner());
        let changed = *weights != next;
        *weights = next;
        changed
    }

    /// Sets (`Some`) or removes (`None`) the override of `server`; persisted.
    pub async fn set_weight(&self, server: &str, weight: Option<u32>) -> Result<bool, StoreError> {
        let mut next = self.weights();
        let changed = match weight {
            Some(w) => next.insert(server.to_string(), w) != Some(w),
            None => next.remove(server).is_some(),
        };
        let bytes = serde_json::to_vec(&next).unwrap_or_default();
        self.store.set(WEIGHTS_KEY, &bytes, None).await?;
        *self.weights.write().unwrap_or_else(|p| p.into_inner()) = next;
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauges_keep_their_peak_and_states_read_like_the_platform() {
        let g = Gauge::default();
        g.add(1);
        g.add(1);
        g.add(-1);
        assert_eq!((g.current(), g.peak()), (1, 2));
        assert_eq!(ServiceState::Draining(3).to_string(), "Draining (3)");
        assert_eq!(ServiceState::Inactive.to_string(), "Inactive (Maintenance mode)");
        assert_eq!(ServiceState::Active.to_string(), "Active");
    }

    #[tokio::test]
    async fn maintenance_and_weights_survive_a_reopen_of_the_store() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store: Arc<dyn StateStore> = Arc::new(crate::cluster::embedded::EmbeddedStore::open(dir.path()).unwrap());
            let op = Operate::load(store, "edge1").await;
            assert!(!op.in_maintenance());
            op.set_maintenance(true).await.unwrap();
            assert!(op.set_weight("10.0.0.1:8080", Some(5)).await.unwrap());
            assert!(op.set_weight("10.0.0.2:8080", Some(0)).await.unwrap());
            assert!(op.set_weight("10.0.0.2:8080", None).await.unwrap());
            assert_eq!(op.state(2), ServiceState::Draining(2));
            assert_eq!(op.state(0), ServiceState::Inactive);
        }
        let store: Arc<dyn StateStore> = Arc::new(crate::cluster::embedded::EmbeddedStore::open(dir.path()).unwrap());
        let op = Operate::load(store, "edge1").await;
        assert!(op.in_maintenance());
        assert_eq!(op.weights(), BTreeMap::from([("10.0.0.1:8080".to_string(), 5)]));
        op.set_maintenance(false).await.unwrap();
        assert_eq!(op.state(7), ServiceState::Active);
    }
}
