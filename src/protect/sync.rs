//! Keeping the shield in step with the state store: loading bans and exemptions at start,
//! applying what other peers changed, and writing bans made while the store was down once
//! it answers again (nothing banned meanwhile is lost).

use std::net::IpAddr;
use std::sync::Arc;

use super::*;

impl Shield {
    /// Loads the bans in force and the runtime exemptions from the state store (start-up, and
    /// after a shared store came back); false when the store did not answer.
    pub async fn load(&self) -> bool {
        let Ok(members) = self.store.set_members(EXEMPTIONS_KEY).await else { return false };
        let parsed: Vec<Exemption> = members.iter().filter_map(|m| decode_exemption(m)).collect();
        *self.runtime_exemptions.write().unwrap_or_else(|p| p.into_inner()) = parsed;
        let Ok(records) = self.store.bans().await else { return false };
        let mut bans = self.bans.write().unwrap_or_else(|p| p.into_inner());
        for r in records {
            if let Ok(ip) = r.subject.parse::<IpAddr>() {
                let hits = bans.get(&ip).map_or(0, |b| b.hits);
                bans.insert(ip, Ban { source: r.subject, category: r.category, since_ms: r.since_ms, until_ms: r.until_ms, hits });
            }
        }
        self.metrics.banned_sources(bans.len());
        true
    }

    /// Writes bans the store could not take (it was down) once it answers again; runs while
    /// the shield lives. Nothing banned while degraded is lost.
    pub fn spawn_reconciler(self: &Arc<Self>) {
        let shield = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(RECONCILE_INTERVAL).await;
                let Some(shield) = shield.upgrade() else { return };
                let events: Vec<(String, u64, Duration)> =
                    std::mem::take(&mut *shield.unsynced_events.lock().unwrap_or_else(|p| p.into_inner()));
                let mut kept_events = Vec::new();
                let mut merged = 0usize;
                for (key, at, window) in events {
                    if at.saturating_add(u64::try_from(window.as_millis()).unwrap_or(u64::MAX)) <= unix_ms() {
                        continue; // out of its window: nothing to merge
                    }
                    match shield.store.merge_event(&key, at, window).await {
                        Ok(_) => merged += 1,
                        Err(_) => kept_events.push((key, at, window)),
                    }
                }
                if merged > 0 {
                    shield
                        .error_log
                        .warn(&format!("state store reachable again: {merged} failure event(s) counted meanwhile merged into it"));
                }
                shield.unsynced_events.lock().unwrap_or_else(|p| p.into_inner()).extend(kept_events);
                let pending: Vec<BanRecord> = std::mem::take(&mut *shield.unsynced.lock().unwrap_or_else(|p| p.into_inner()));
                if pending.is_empty() {
                    continue;
                }
                let (mut written, mut left) = (0usize, Vec::new());
                for record in pending {
                    if record.until_ms <= unix_ms() {
                        continue;
                    }
                    match shield.store.ban(record.clone()).await {
                        Ok(()) => written += 1,
                        Err(_) => left.push(record),
                    }
                }
                if written > 0 {
                    shield.error_log.warn(&format!("state store reachable again: {written} ban(s) made meanwhile written to it"));
                }
                shield.unsynced.lock().unwrap_or_else(|p| p.into_inner()).extend(left);
            }
        });
    }

    /// Applies a change another peer made in the shared store (or this one made through it):
    /// bans and unbans reach this peer's memory (and kernel mirror), exemptions are re-read.
    /// False when the store could not be read (the caller re-reads everything later).
    pub async fn apply_change(&self, change: &crate::cluster::Change) -> bool {
        use crate::cluster::Change;
        match change {
            Change::Banned(subject) => {
                let Ok(ip) = subject.parse::<IpAddr>() else { return true };
                let record = match self.store.ban_lookup(subject).await {
                    Ok(Some(record)) => record,
                    Ok(None) => return true,
                    Err(_) => return false,
                };
                let hits = {
                    let bans = self.bans.read().unwrap_or_else(|p| p.into_inner());
                    match bans.get(&ip) {
                        Some(b) if b.until_ms == record.until_ms => return true, // known already
                        known => known.map_or(0, |b| b.hits),
                    }
                };
                let ban =
                    Ban { source: record.subject, category: record.category, since_ms: record.since_ms, until_ms: record.until_ms, hits };
                self.remember(ip, ban);
            }
            Change::Unbanned(subject) => {
                if let Ok(ip) = subject.parse::<IpAddr>() {
                    self.forget(ip, None);
                }
            }
            Change::SetChanged(key) if key == EXEMPTIONS_KEY => match self.store.set_members(EXEMPTIONS_KEY).await {
                Ok(members) => {
                    *self.runtime_exemptions.write().unwrap_or_else(|p| p.into_inner()) =
                        members.iter().filter_map(|m| decode_exemption(m)).collect();
                }
                Err(_) => return false,
            },
            Change::Resync => return self.load().await,
            _ => {}
        }
        true
    }
}
