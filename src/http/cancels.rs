//! The HTTP/2 cancel budget of one client connection (the "rapid reset" attack, CVE-2023-44487):
//! a stream the client resets before its answer is ready has cost the edge its routing,
//! authentication and often an upstream request (whose connection cannot go back to the
//! pool) and costs the client one frame. Each connection has a bucket of cancels:
//! [`CANCEL_BURST`] at once, refilled at [`CANCEL_RATE`] a second, whatever else the
//! connection does (answered streams buy no cancels: padding the resets with cheap requests
//! does not help). A browser cancels a few streams when a page is left; a connection over
//! its bucket is closed (GOAWAY, then the connection ends) and counts once as an
//! `http-protocol-violation` of its source.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio::time::Instant;

/// Streams a client may cancel before their answer at once, on one connection.
pub const CANCEL_BURST: u32 = 64;
/// Cancels a second the bucket refills with.
pub const CANCEL_RATE: u32 = 10;

/// The streams one connection opened and cancelled, and whether it is over its budget.
#[derive(Debug)]
pub struct CancelBudget {
    opened: AtomicU32,
    cancelled: AtomicU32,
    /// Cancels left in the bucket, and when it was last refilled.
    bucket: Mutex<(f64, Instant)>,
    tripped: AtomicBool,
    over: Notify,
}

impl Default for CancelBudget {
    fn default() -> Self {
        CancelBudget {
            opened: AtomicU32::new(0),
            cancelled: AtomicU32::new(0),
            bucket: Mutex::new((f64::from(CANCEL_BURST), Instant::now())),
            tripped: AtomicBool::new(false),
            over: Notify::new(),
        }
    }
}

impl CancelBudget {
    /// A stream begins; its [`Stream`] counts a cancel unless it is [`Stream::answered`].
    pub fn open(self: &Arc<Self>) -> Stream {
        self.opened.fetch_add(1, Ordering::Relaxed);
        Stream { budget: Some(self.clone()) }
    }

    /// Resolves once the connection is over its budget (at once when it already is).
    pub async fn exceeded(&self) {
        let notified = self.over.notified();
        if self.tripped.load(Ordering::SeqCst) {
            return;
        }
        notified.await;
    }

    /// Whether the connection went over its budget.
    pub fn is_exceeded(&self) -> bool {
        self.tripped.load(Ordering::SeqCst)
    }

    /// Streams cancelled before their answer, and streams opened.
    pub fn counts(&self) -> (u32, u32) {
        (self.cancelled.load(Ordering::Relaxed), self.opened.load(Ordering::Relaxed))
    }

    /// Counts one cancelled stream at `now`, and trips the budget once the bucket is empty.
    fn cancel_at(&self, now: Instant) {
        self.cancelled.fetch_add(1, Ordering::Relaxed);
        let over = {
            let mut bucket = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
            let (tokens, since) = *bucket;
            let refilled =
                (tokens + now.saturating_duration_since(since).as_secs_f64() * f64::from(CANCEL_RATE)).min(f64::from(CANCEL_BURST));
            *bucket = (refilled - 1.0, now);
            refilled < 1.0
        };
        if over && !self.tripped.swap(true, Ordering::SeqCst) {
            self.over.notify_waiters();
        }
    }
}

/// One stream of a connection: dropped before [`Stream::answered`], it was cancelled.
pub struct Stream {
    budget: Option<Arc<CancelBudget>>,
}

impl Stream {
    /// The stream's answer is ready: whatever happens next is not a cancel before it.
    pub fn answered(mut self) {
        self.budget = None;
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if let Some(budget) = self.budget.take() {
            budget.cancel_at(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_few_cancels_among_many_answers_never_trip_it() {
        let budget = Arc::new(CancelBudget::default());
        // A browser: 1,000 streams over 20 s, 200 of them cancelled (10 a second).
        let start = Instant::now();
        for i in 0..1000u32 {
            let stream = budget.open();
            if i % 5 == 0 {
                stream.budget.clone().unwrap().cancel_at(start + Duration::from_millis(u64::from(i) * 20));
                stream.answered();
            } else {
                stream.answered();
            }
        }
        assert!(!budget.is_exceeded(), "ten cancels a second are within the budget");
        assert_eq!(budget.counts(), (200, 1000));
    }

    #[test]
    fn cancels_padded_with_answered_streams_still_trip_it() {
        // The attack the review found against a ratio: one answered stream before every
        // cancelled one. The bucket does not care how many streams were answered.
        let budget = Arc::new(CancelBudget::default());
        let start = Instant::now();
        let mut tripped_at = None;
        for i in 0..400u32 {
            budget.open().answered();
            let stream = budget.open();
            stream.budget.clone().unwrap().cancel_at(start + Duration::from_millis(u64::from(i)));
            stream.answered();
            if budget.is_exceeded() {
                tripped_at.get_or_insert(budget.counts().0);
            }
        }
        let cancelled = tripped_at.expect("padded cancels trip the budget");
        assert!((CANCEL_BURST + 1..=CANCEL_BURST + 5).contains(&cancelled), "{cancelled}");
    }

    #[test]
    fn a_connection_that_only_cancels_trips_just_past_the_burst() {
        let budget = Arc::new(CancelBudget::default());
        let now = Instant::now();
        for _ in 0..CANCEL_BURST {
            budget.open().budget.take().unwrap().cancel_at(now);
        }
        assert!(!budget.is_exceeded(), "{CANCEL_BURST} cancels are within it");
        budget.open().budget.take().unwrap().cancel_at(now);
        assert!(budget.is_exceeded());
    }

    #[tokio::test]
    async fn waiting_for_it_ends_when_it_trips_or_at_once_after() {
        let budget = Arc::new(CancelBudget::default());
        let waiter = tokio::spawn({
            let budget = budget.clone();
            async move { budget.exceeded().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        for _ in 0..=CANCEL_BURST {
            drop(budget.open());
        }
        tokio::time::timeout(Duration::from_secs(1), waiter).await.unwrap().unwrap();
        tokio::time::timeout(Duration::from_secs(1), budget.exceeded()).await.unwrap();
    }
}
