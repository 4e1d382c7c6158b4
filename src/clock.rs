//! Wall-clock time as Unix milliseconds, the one form stored records (bans, tokens, cached
//! credentials, peer heartbeats) use — and a [`Clock`] handle tests can replace.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A wall-clock source in Unix milliseconds (swappable in tests).
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Now, in Unix milliseconds (0 before 1970, saturating far in the future).
pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Now, in whole Unix seconds.
pub fn unix_secs() -> u64 {
    unix_ms() / 1000
}

/// The system clock as a [`Clock`].
pub fn system() -> Clock {
    Arc::new(unix_ms)
}

/// `duration` in milliseconds, saturating.
pub fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Unix milliseconds `duration` from now, saturating.
pub fn unix_ms_after(duration: Duration) -> u64 {
    unix_ms().saturating_add(millis(duration))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_is_wall_time_in_milliseconds() {
        let before = unix_ms();
        let from_handle = (system())();
        assert!(from_handle >= before && from_handle - before < 5_000);
        assert!(before > 1_700_000_000_000, "after 2023: {before}");
        assert_eq!(unix_secs(), unix_ms() / 1000);
        assert_eq!(millis(Duration::MAX), u64::MAX);
        assert!(unix_ms_after(Duration::from_secs(60)) >= before + 60_000);
    }
}
