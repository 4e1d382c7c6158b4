//! The HTTP/2 cancel budget of one client connection (the "rapid reset" attack, CVE-2023-44487):
//! a stream the client resets before its answer is ready has cost the edge its routing,
//! authentication and often an upstream request (whose connection cannot go back to the
//! pool) and costs the client one frame. Browsers cancel a few streams when a page is left;
//! a connection whose client cancelled more than [`CANCEL_BUDGET`] streams, and more than
//! half of the streams it opened, is closed (GOAWAY, then the connection ends) and counts
//! once as an `http-protocol-violation` of its source.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use tokio::sync::Notify;

/// Streams a client may cancel before its answer on one connection (beyond that, only while
/// they are at most half of its streams).
pub const CANCEL_BUDGET: u32 = 64;

/// The streams one connection opened and cancelled, and whether it is over its budget.
#[derive(Debug, Default)]
pub struct CancelBudget {
    opened: AtomicU32,
    cancelled: AtomicU32,
    tripped: AtomicBool,
    over: Notify,
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

    /// Counts one cancelled stream, and trips the budget once it is spent.
    fn cancel(&self) {
        let cancelled = self.cancelled.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        let opened = self.opened.load(Ordering::Relaxed);
        let over = cancelled > CANCEL_BUDGET && u64::from(cancelled) * 2 > u64::from(opened);
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
            budget.cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_few_cancels_among_many_answers_never_trip_it_many_cancels_do() {
        let budget = Arc::new(CancelBudget::default());
        // A browser: 1,000 streams, 200 of them cancelled.
        for i in 0..1000 {
            let stream = budget.open();
            if i % 5 == 0 { drop(stream) } else { stream.answered() }
        }
        assert!(!budget.is_exceeded(), "200 cancels among 1,000 streams are within the budget");
        // A rapid reset: every further stream cancelled, until cancels are over half.
        let mut tripped_at = None;
        for _ in 0..2000 {
            drop(budget.open());
            if budget.is_exceeded() {
                tripped_at.get_or_insert(budget.counts());
            }
        }
        assert_eq!(tripped_at, Some((801, 1601)), "tripped as cancels passed half of the streams");
    }

    #[test]
    fn a_connection_that_only_cancels_trips_just_past_the_budget() {
        let budget = Arc::new(CancelBudget::default());
        for _ in 0..CANCEL_BUDGET {
            drop(budget.open());
        }
        assert!(!budget.is_exceeded(), "{} cancels are within it", CANCEL_BUDGET);
        drop(budget.open());
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
        for _ in 0..=CANCEL_BUDGET {
            drop(budget.open());
        }
        tokio::time::timeout(std::time::Duration::from_secs(1), waiter).await.unwrap().unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(1), budget.exceeded()).await.unwrap();
    }
}
