//! The edge's background loops while it lives: following the state store's changes (another
//! peer's bans, unbans, exemptions, weights), the cluster heartbeat, the shield's periodic
//! resync, and the web certificate's expiry watch.

use std::sync::Arc;
use std::time::Duration;

use crate::event::Event;
use crate::http::gateway::Edge;
use crate::operate::cert;
use crate::runtime::Runtime;
use crate::runtime::services::Drain;

use super::CERT_CHECK_INTERVAL;

/// Applies changes from the state store — another peer's bans, unbans, exemptions and
/// weight overrides, when the store is shared — to this peer's memory while the edge lives.
/// A lagging subscriber re-reads everything.
pub(super) async fn follow_store_changes(
    edge: Arc<Edge>,
    mut changes: tokio::sync::broadcast::Receiver<crate::cluster::Change>,
    mut drain: Drain,
) {
    use tokio::sync::broadcast::error::RecvError;
    let runtime = edge.runtime.clone();
    loop {
        let change = tokio::select! {
            change = changes.recv() => change,
            () = drain.signalled() => return,
        };
        match change {
            Ok(crate::cluster::Change::KeyChanged(key)) if key == crate::operate::WEIGHTS_KEY => follow_weights(&edge).await,
            Ok(crate::cluster::Change::KeyChanged(key)) if key.starts_with(crate::auth::tokens::ACCESS_KEY_PREFIX) => {
                if let Some(tokens) = edge.gateway.load().auth.tokens() {
                    tokens.forget_key(&key);
                }
            }
            Ok(change) => {
                let resync = change == crate::cluster::Change::Resync;
                if resync && let Some(tokens) = edge.gateway.load().auth.tokens() {
                    tokens.forget_all();
                }
                if resync {
                    follow_weights(&edge).await;
                }
                if !runtime.shield.apply_change(&change).await {
                    tokio::spawn(resync_shield(Arc::downgrade(&runtime)));
                }
            }
            Err(RecvError::Lagged(_)) => {
                tokio::spawn(resync_shield(Arc::downgrade(&runtime)));
            }
            Err(RecvError::Closed) => return,
        }
    }
}

/// Announces this peer every `cluster.heartbeat` (with its maintenance state and counts) and
/// refreshes the list of alive peers, until the drain.
pub(super) async fn heartbeat(edge: Arc<Edge>, mut drain: Drain) {
    let runtime = edge.runtime.clone();
    let mut known_peers: Vec<String> = Vec::new();
    loop {
        let gateway = edge.gateway.load_full();
        let info = crate::operate::peers::PeerInfo {
            name: gateway.config.cluster.peer.clone(),
            // What listens now (a reload may add, remove or move listeners, the admin API's
            // included): `name address, …`.
            address: runtime.listeners.all().iter().map(|b| format!("{} {}", b.name, b.address)).collect::<Vec<_>>().join(", "),
            last_seen_ms: crate::clock::unix_ms(),
            maintenance: runtime.operate.in_maintenance(),
            sessions: gateway.services.iter().map(|s| s.sessions.current() as u64).sum(),
            websockets: runtime.operate.websockets_total().current(),
        };
        let beat = gateway.config.cluster.heartbeat;
        drop(gateway);
        if runtime.operate.is_leaving() || drain.is_signalled() {
            return;
        }
        if crate::operate::peers::announce(&runtime.store, &info, beat).await.is_ok()
            && let Ok(alive) = crate::operate::peers::alive(&runtime.store).await
        {
            let mut names: Vec<String> = alive.iter().map(|p| p.name.clone()).collect();
            names.sort();
            if names != known_peers && runtime.store.shared() {
                runtime.events.publish(Event::PeersChanged { alive: names.clone() });
            }
            known_peers = names;
            runtime.operate.note_peers(alive);
        }
        if runtime.operate.is_leaving() {
            // Shutdown began while announcing: take the announcement back.
            let _ = crate::operate::peers::leave(&runtime.store, &info.name).await;
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(beat) => {}
            () = drain.signalled() => return,
        }
    }
}

/// Re-reads the weight overrides another peer may have changed and applies them.
pub(super) async fn follow_weights(edge: &Edge) {
    let runtime = &edge.runtime;
    if runtime.operate.reload_weights().await {
        match edge.rebuild_gateway() {
            Ok(()) => runtime.error_log.warn("weight overrides changed by another peer: applied"),
            Err(error) => runtime.error_log.error(&format!("weight overrides from another peer not applied: {error}")),
        }
    }
}

/// Re-reads bans and exemptions from the store until it answers (at most [`RESYNC_ATTEMPTS`]
/// times, [`RESYNC_PAUSE`] apart): after a missed or failed change.
pub(super) async fn resync_shield(runtime: std::sync::Weak<Runtime>) {
    for _ in 0..RESYNC_ATTEMPTS {
        let Some(runtime) = runtime.upgrade() else { return };
        if runtime.shield.load().await {
            return;
        }
        drop(runtime);
        tokio::time::sleep(RESYNC_PAUSE).await;
    }
}

/// Attempts to re-read the shield's state from the store after a missed change.
pub(super) const RESYNC_ATTEMPTS: u32 = 30;
/// Pause between those attempts.
pub(super) const RESYNC_PAUSE: Duration = Duration::from_millis(500);

/// Keeps `portcullis_certificate_expiry_seconds` current and publishes the expiry notice
/// once a day from 30 days ahead (and after expiry), until the drain.
pub(super) async fn watch_certificate_expiry(runtime: Arc<Runtime>, mut drain: Drain) {
    let mut checks: u64 = 0;
    loop {
        let config = runtime.config();
        let configured = config.tls.as_ref().map(|t| (t.cert.as_path(), t.key.as_path()));
        if let Ok(details) = cert::details_of_file(&cert::certificate_in_use(configured, &config.server.state_dir).cert) {
            let now = time::OffsetDateTime::now_utc();
            runtime.metrics.certificate_expiry(details.not_after_unix - now.unix_timestamp());
            if checks.is_multiple_of(24)
                && let Some(notice) = crate::operate::cert::expiry_notice(details.not_after_unix, now)
            {
                runtime.events.publish(Event::CertificateExpiry { notice, subject: details.subject, serial: details.serial });
            }
        }
        checks += 1;
        tokio::select! {
            () = tokio::time::sleep(CERT_CHECK_INTERVAL) => {}
            () = drain.signalled() => return,
        }
    }
}
