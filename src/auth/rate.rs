//! Authorization rate control (DESIGN §2): each authorization that is not a cache hit —
//! a credential validation, a token issue or refresh — counts against the user; more than
//! `max_authorizations` within the previous `period` (exact sliding window in the state
//! store, so peers of a cluster share it) is refused with 429 and `Retry-After`.

use std::sync::Arc;
use std::time::Duration;

use crate::cluster::StateStore;
use crate::config::RateControlSettings;

/// Longest user name used as a key (longer names are cut; they are refused elsewhere).
const MAX_USER_KEY: usize = 256;

/// Whether one more authorization is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateDecision {
    Allowed,
    Limited { retry_after_secs: u64 },
}

/// Per-user authorization windows.
#[derive(Clone)]
pub struct RateControl {
    settings: RateControlSettings,
    store: Arc<dyn StateStore>,
}

impl RateControl {
    /// Rate control over `store`.
    pub fn new(settings: RateControlSettings, store: Arc<dyn StateStore>) -> RateControl {
        RateControl { settings, store }
    }

    fn key(user: &str) -> String {
        let user: String = user.chars().take(MAX_USER_KEY).collect();
        format!("authz:{user}")
    }

    /// Counts one authorization for `user`; `Limited` when it exceeds the allowance. A store
    /// failure allows the authorization (the validator itself still decides).
    pub async fn check(&self, user: &str) -> RateDecision {
        let key = Self::key(user);
        let period = self.settings.period;
        let Ok(count) = self.store.record_event(&key, period).await else { return RateDecision::Allowed };
        if count <= u64::from(self.settings.max_authorizations) {
            return RateDecision::Allowed;
        }
        // Retry when the oldest authorization in the window leaves it.
        let now_ms = crate::clock::unix_ms();
        let oldest = self.store.oldest_event(&key, period).await.ok().flatten().unwrap_or(now_ms);
        let free_at = oldest.saturating_add(period.as_millis() as u64);
        let wait = Duration::from_millis(free_at.saturating_sub(now_ms));
        RateDecision::Limited { retry_after_secs: wait.as_secs().max(1) + u64::from(wait.subsec_millis() > 0) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::embedded::EmbeddedStore;

    #[tokio::test]
    async fn the_exact_max_plus_first_authorization_is_limited() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn StateStore> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let rate = RateControl::new(RateControlSettings { max_authorizations: 3, period: Duration::from_secs(300) }, store);
        for _ in 0..3 {
            assert_eq!(rate.check("agent1").await, RateDecision::Allowed);
        }
        let RateDecision::Limited { retry_after_secs } = rate.check("agent1").await else { panic!("4th must be limited") };
        assert!((299..=301).contains(&retry_after_secs), "{retry_after_secs}");
        assert_eq!(rate.check("agent2").await, RateDecision::Allowed, "per user");
    }
}
