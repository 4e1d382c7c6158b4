//! The HTTP/2 cancel budget (the "rapid reset" attack, CVE-2023-44487): a stream the client
//! resets before its answer is ready has cost the edge its routing, authentication and often
//! an upstream request (whose connection cannot go back to the pool), and costs the client
//! one frame. Two buckets of cancels, whatever else the client does (answered streams buy no
//! cancels: padding the resets with cheap requests does not help):
//!
//! - per connection: [`CANCEL_BURST`] at once — twice the streams a connection may have in
//!   flight, so cancelling everything at once (a page left, gRPC deadlines while an upstream
//!   stalls) never trips it — refilled at [`CANCEL_RATE`] a second;
//! - per source address (IPv6: per prefix), across all its connections:
//!   [`SOURCE_CANCEL_BURST`] at once, refilled at [`SOURCE_CANCEL_RATE`] a second, so opening
//!   a new connection for every few dozen resets does not escape the budget. Wide enough for
//!   an office NAT of browsers.
//!
//! A connection that empties either bucket is closed (GOAWAY, then the connection ends) and
//! counts once as an `http-protocol-violation` of its source.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio::time::Instant;

/// Streams a client may cancel before their answer at once, on one connection: twice the
/// concurrent streams it may have (`server::MAX_CONCURRENT_STREAMS`, which checks this).
pub const CANCEL_BURST: u32 = 256;
/// Cancels a second a connection's bucket refills with.
pub const CANCEL_RATE: u32 = 10;
/// Cancels at once for one source address across its connections.
pub const SOURCE_CANCEL_BURST: u32 = 1024;
/// Cancels a second a source's bucket refills with.
pub const SOURCE_CANCEL_RATE: u32 = 100;
/// Sources whose buckets are kept (beyond it, new sources meet the per-connection bucket
/// alone until full buckets are dropped).
const MAX_SOURCES: usize = 65_536;

/// A token bucket of cancels.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    since: Instant,
}

impl Bucket {
    fn full(burst: u32, now: Instant) -> Bucket {
        Bucket { tokens: f64::from(burst), since: now }
    }

    /// Refills to `now`, takes one cancel; false when there was none to take.
    fn take(&mut self, burst: u32, rate: u32, now: Instant) -> bool {
        let refilled = (self.tokens + now.saturating_duration_since(self.since).as_secs_f64() * f64::from(rate)).min(f64::from(burst));
        *self = Bucket { tokens: refilled - 1.0, since: now };
        refilled >= 1.0
    }

    /// Whether it is full again at `now` (nothing to remember).
    fn is_full(&self, burst: u32, rate: u32, now: Instant) -> bool {
        self.tokens + now.saturating_duration_since(self.since).as_secs_f64() * f64::from(rate) >= f64::from(burst)
    }
}

/// The cancel buckets of every source, shared by all connections of the edge.
#[derive(Debug, Default)]
pub struct SourceCancels {
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl SourceCancels {
    /// Takes one cancel from `source`'s bucket at `now`; false when it was empty.
    fn take(&self, source: IpAddr, now: Instant) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if !buckets.contains_key(&source) && buckets.len() >= MAX_SOURCES {
            buckets.retain(|_, b| !b.is_full(SOURCE_CANCEL_BURST, SOURCE_CANCEL_RATE, now));
            if buckets.len() >= MAX_SOURCES {
                return true; // every bucket in use: the connection's own bucket still applies
            }
        }
        buckets.entry(source).or_insert_with(|| Bucket::full(SOURCE_CANCEL_BURST, now)).take(SOURCE_CANCEL_BURST, SOURCE_CANCEL_RATE, now)
    }
}

/// The streams one connection opened and cancelled, and whether it is over its budget.
#[derive(Debug)]
pub struct CancelBudget {
    opened: AtomicU32,
    cancelled: AtomicU32,
    bucket: Mutex<Bucket>,
    /// Its source's bucket, shared with the source's other connections.
    source: Option<(Arc<SourceCancels>, IpAddr)>,
    tripped: AtomicBool,
    over: Notify,
}

impl CancelBudget {
    /// The budget of a new connection from `source` (its address already masked to the
    /// shield's IPv6 prefix), counted in `sources` too.
    pub fn for_source(sources: Arc<SourceCancels>, source: IpAddr) -> CancelBudget {
        CancelBudget::new(Some((sources, source)))
    }

    fn new(source: Option<(Arc<SourceCancels>, IpAddr)>) -> CancelBudget {
        CancelBudget {
            opened: AtomicU32::new(0),
            cancelled: AtomicU32::new(0),
            bucket: Mutex::new(Bucket::full(CANCEL_BURST, Instant::now())),
            source,
            tripped: AtomicBool::new(false),
            over: Notify::new(),
        }
    }

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

    /// Streams cancelled before their answer, and streams opened.
    pub fn counts(&self) -> (u32, u32) {
        (self.cancelled.load(Ordering::Relaxed), self.opened.load(Ordering::Relaxed))
    }

    /// Counts one cancelled stream at `now`, and trips the budget once the connection's or
    /// its source's bucket is empty.
    fn cancel_at(&self, now: Instant) {
        self.cancelled.fetch_add(1, Ordering::Relaxed);
        let connection = self.bucket.lock().unwrap_or_else(|p| p.into_inner()).take(CANCEL_BURST, CANCEL_RATE, now);
        let source = self.source.as_ref().is_none_or(|(sources, source)| sources.take(*source, now));
        if connection && source {
            return;
        }
        if !self.tripped.swap(true, Ordering::SeqCst) {
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
        let budget = Arc::new(CancelBudget::new(None));
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
        assert!(!budget.tripped.load(Ordering::SeqCst), "ten cancels a second are within the budget");
        assert_eq!(budget.counts(), (200, 1000));
    }

    #[test]
    fn cancels_padded_with_answered_streams_still_trip_it() {
        // The attack the review found against a ratio: one answered stream before every
        // cancelled one. The bucket does not care how many streams were answered.
        let budget = Arc::new(CancelBudget::new(None));
        let start = Instant::now();
        let mut tripped_at = None;
        for i in 0..800u32 {
            budget.open().answered();
            let stream = budget.open();
            stream.budget.clone().unwrap().cancel_at(start + Duration::from_millis(u64::from(i)));
            stream.answered();
            if budget.tripped.load(Ordering::SeqCst) {
                tripped_at.get_or_insert(budget.counts().0);
            }
        }
        let cancelled = tripped_at.expect("padded cancels trip the budget");
        assert!((CANCEL_BURST + 1..=CANCEL_BURST + 5).contains(&cancelled), "{cancelled}");
    }

    #[test]
    fn a_connection_that_only_cancels_trips_just_past_the_burst() {
        let budget = Arc::new(CancelBudget::new(None));
        let now = Instant::now();
        for _ in 0..CANCEL_BURST {
            budget.open().budget.take().unwrap().cancel_at(now);
        }
        assert!(!budget.tripped.load(Ordering::SeqCst), "{CANCEL_BURST} cancels are within it");
        budget.open().budget.take().unwrap().cancel_at(now);
        assert!(budget.tripped.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn waiting_for_it_ends_when_it_trips_or_at_once_after() {
        let budget = Arc::new(CancelBudget::new(None));
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

    #[test]
    fn cancelling_every_stream_in_flight_at_once_never_trips_it() {
        let budget = Arc::new(CancelBudget::new(None));
        let now = Instant::now();
        for _ in 0..CANCEL_BURST / 2 {
            budget.open().budget.take().unwrap().cancel_at(now);
        }
        assert!(!budget.tripped.load(Ordering::SeqCst));
    }

    #[test]
    fn a_new_connection_for_every_few_dozen_resets_meets_the_sources_bucket() {
        let sources = Arc::new(SourceCancels::default());
        let source: IpAddr = "203.0.113.7".parse().unwrap();
        let now = Instant::now();
        let mut tripped_after = None;
        'connections: for connection in 0..100u32 {
            let budget = Arc::new(CancelBudget::for_source(sources.clone(), source));
            for reset in 0..60u32 {
                budget.open().budget.take().unwrap().cancel_at(now);
                if budget.tripped.load(Ordering::SeqCst) {
                    tripped_after = Some(connection * 60 + reset + 1);
                    break 'connections;
                }
            }
        }
        assert_eq!(tripped_after, Some(SOURCE_CANCEL_BURST + 1), "the source's bucket is shared by its connections");
        // Another source is not touched by it.
        let other = Arc::new(CancelBudget::for_source(sources, "198.51.100.9".parse().unwrap()));
        other.open().budget.take().unwrap().cancel_at(now);
        assert!(!other.tripped.load(Ordering::SeqCst));
    }
}
