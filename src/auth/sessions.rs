//! Session accounting (DESIGN §5 "Counts"): an authenticated client — a Basic credential,
//! a JWT or an edge token — is one session while it keeps authenticating within
//! [`SESSION_WINDOW`]. Each service counts its current sessions and the peak since start.
//! Keys are the HMACs the authenticator already uses, never credentials.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::cache::Digest;

/// A session counts as current this long after its last authenticated request.
pub const SESSION_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Most sessions tracked per service.
pub const MAX_TRACKED_SESSIONS: usize = 200_000;
/// Quiet sessions are dropped from the table at most this often, so a new session costs O(1)
/// (amortized) rather than a scan of the table; the peak may therefore include a session that
/// went quiet less than this long ago.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Current and peak sessions of one service.
#[derive(Debug, Default)]
pub struct SessionTracker {
    table: Mutex<Table>,
    peak: AtomicUsize,
}

#[derive(Debug, Default)]
struct Table {
    last_seen: HashMap<Digest, Instant>,
    last_sweep: Option<Instant>,
}

impl SessionTracker {
    /// Records an authenticated request of session `key`.
    pub fn touch(&self, key: Digest) {
        let now = Instant::now();
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(at) = table.last_seen.get_mut(&key) {
            *at = now;
            return;
        }
        // A new session: forget quiet ones first (at most once per SWEEP_INTERVAL).
        if table.last_sweep.is_none_or(|at| now.duration_since(at) >= SWEEP_INTERVAL) {
            table.last_seen.retain(|_, at| now.duration_since(*at) < SESSION_WINDOW);
            table.last_sweep = Some(now);
        }
        if table.last_seen.len() < MAX_TRACKED_SESSIONS {
            table.last_seen.insert(key, now);
        }
        self.peak.fetch_max(table.last_seen.len(), Ordering::Relaxed);
    }

    /// Sessions seen within the window.
    pub fn current(&self) -> usize {
        let now = Instant::now();
        let table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        table.last_seen.values().filter(|at| now.duration_since(**at) < SESSION_WINDOW).count()
    }

    /// Highest count since start.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn sessions_count_while_active_and_peak_is_kept() {
        let t = SessionTracker::default();
        t.touch([1; 32]);
        t.touch([2; 32]);
        t.touch([1; 32]);
        assert_eq!((t.current(), t.peak()), (2, 2));
        tokio::time::advance(SESSION_WINDOW - Duration::from_secs(1)).await;
        t.touch([1; 32]);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(t.current(), 1, "session 2 went quiet");
        t.touch([3; 32]);
        assert_eq!((t.current(), t.peak()), (2, 2));
    }
}
