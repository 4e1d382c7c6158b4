//! Maintenance admission (DESIGN §5), the one place that says what "new work" gets in
//! maintenance: a new login, a new WebSocket or a credential that is not a current session
//! of its service gets 503 with `Retry-After`; established work continues.

use super::gateway::{Edge, Gateway};
use super::respond::ProxyError;

/// Whether new work is admitted right now (taken once per request).
#[derive(Debug, Clone, Copy)]
pub struct NewWork {
    /// `Some(Retry-After seconds)` while this peer is in maintenance.
    retry_after_secs: Option<u64>,
}

impl NewWork {
    /// The admission in force for a request on `gateway`.
    pub fn of(edge: &Edge, gateway: &Gateway) -> NewWork {
        NewWork { retry_after_secs: edge.runtime.operate.in_maintenance().then(|| gateway.config.maintenance.retry_after.as_secs().max(1)) }
    }

    /// Admits work unless this peer is in maintenance and `continues_existing()` says the work
    /// does not continue an established session (asked only in maintenance).
    pub fn admit(self, continues_existing: impl FnOnce() -> bool) -> Result<(), ProxyError> {
        match self.retry_after_secs {
            Some(retry_after_secs) if !continues_existing() => Err(ProxyError::Maintenance { retry_after_secs }),
            _ => Ok(()),
        }
    }
}
