//! Session accounting (DESIGN §5 "Counts"): an authenticated client — a Basic credential,
//! a JWT or an edge token — is one session while it keeps authenticating within the
//! window (`maintenance.session_idle`, [`SESSION_WINDOW`] by default). Each service counts
//! its current sessions and the peak since start; in maintenance only requests of a current
//! session pass. Keys are the HMACs the authenticator already uses, never credentials.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::cache::Digest;

/// A session counts as current this long after its last authenticated request (default; the
/// configuration's `maintenance.session_idle` default).
pub const SESSION_WINDOW: Duration = crate::config::DEFAULT_SESSION_IDLE;
/// Most sessions tracked per service.
pub const MAX_TRACKED_SESSIONS: usize = 200_000;
/// Quiet sessions are dropped from the table at most this often, so a new session costs O(1)
/// (amortized) rather than a scan of the table; the peak may therefore include a session that
/// went quiet less than this long ago.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Current and peak sessions of one service.
#[derive(Debug)]
pub struct SessionTracker {
    table: Mutex<Table>,
    peak: AtomicUsize,
    /// Entries in the table (current sessions, plus any that went quiet since the last sweep).
    tracked: AtomicUsize,
    window_ms: AtomicU64,
}

impl Default for SessionTracker {
    fn default() -> Self {
        SessionTracker::new(SESSION_WINDOW)
    }
}

#[derive(Debug, Default)]
struct Table {
    last_seen: HashMap<Digest, Instant>,
    last_sweep: Option<Instant>,
}

impl SessionTracker {
    /// A tracker counting a session as current for `window` after its last request.
    pub fn new(window: Duration) -> SessionTracker {
        SessionTracker {
            table: Mutex::default(),
            peak: AtomicUsize::new(0),
            tracked: AtomicUsize::new(0),
            window_ms: AtomicU64::new(u64::try_from(window.as_millis()).unwrap_or(u64::MAX)),
        }
    }

    /// Changes the window (reload).
    pub fn set_window(&self, window: Duration) {
        self.window_ms.store(u64::try_from(window.as_millis()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    fn window(&self) -> Duration {
        Duration::from_millis(self.window_ms.load(Ordering::Relaxed))
    }

    /// Records an authenticated request of session `key`; true when it starts a new session.
    pub fn touch(&self, key: Digest) -> bool {
        let now = Instant::now();
        let window = self.window();
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(at) = table.last_seen.get_mut(&key) {
            let was_current = now.duration_since(*at) < window;
            *at = now;
            return !was_current;
        }
        // A new session: forget quiet ones first (at most once per SWEEP_INTERVAL).
        if table.last_sweep.is_none_or(|at| now.duration_since(at) >= SWEEP_INTERVAL) {
            table.last_seen.retain(|_, at| now.duration_since(*at) < window);
            table.last_sweep = Some(now);
        }
        if table.last_seen.len() < MAX_TRACKED_SESSIONS {
            table.last_seen.insert(key, now);
        }
        self.tracked.store(table.last_seen.len(), Ordering::Relaxed);
        self.peak.fetch_max(table.last_seen.len(), Ordering::Relaxed);
        true
    }

    /// Whether `key` is a current session (authenticated within the window).
    pub fn is_current(&self, key: &Digest) -> bool {
        let window = self.window();
        let table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        table.last_seen.get(key).is_some_and(|at| at.elapsed() < window)
    }

    /// Entries in the table: cheap, may include sessions that went quiet within the last
    /// [`SWEEP_INTERVAL`] (for the running total's peak).
    pub fn tracked(&self) -> usize {
        self.tracked.load(Ordering::Relaxed)
    }

    /// Sessions seen within the window.
    pub fn current(&self) -> usize {
        let now = Instant::now();
        let window = self.window();
        let table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        table.last_seen.values().filter(|at| now.duration_since(**at) < window).count()
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
        assert!(t.touch([1; 32]));
        assert!(t.touch([2; 32]));
        assert!(!t.touch([1; 32]), "an existing session");
        assert!(t.is_current(&[2; 32]) && !t.is_current(&[9; 32]));
        assert_eq!((t.current(), t.peak()), (2, 2));
        tokio::time::advance(SESSION_WINDOW - Duration::from_secs(1)).await;
        t.touch([1; 32]);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(t.current(), 1, "session 2 went quiet");
        assert!(!t.is_current(&[2; 32]));
        assert!(t.touch([3; 32]));
        assert_eq!((t.current(), t.peak()), (2, 2));
    }
}
