//! Typed events and the bus they travel on.
//!
//! What happens to the edge as a whole — a ban made or lifted, an exemption changed,
//! maintenance switched, a certificate nearing expiry, an upstream server going down or up,
//! the set of cluster peers changing, a reload refused — is published once as an [`Event`]
//! on the [`EventBus`]. Whoever needs to know subscribes: `error.log`, `blocking.log` (for
//! fail2ban), the nftables kernel mirror, and later log shipping and notifications.
//!
//! Publishing never waits: the bus is a bounded broadcast channel, so a slow subscriber only
//! lags — it is told how many events it missed ([`Received::Missed`]) and must say so or
//! re-read the state the events describe — and never slows a request down.

use std::net::IpAddr;
use std::sync::Arc;

use tokio::sync::broadcast;

/// Events a subscriber may fall behind by before it misses some. Each slot costs about
/// 0.5 KiB of resident memory (measured: 4096 slots added 2 MiB to the idle edge), and
/// events are rare — bans, not requests — so 1024 covers a burst of a thousand bans between
/// two runs of a subscriber.
pub const BUS_CAPACITY: usize = 1024;

/// The request that tipped a source over its trigger (for `blocking.log`, fail2ban's feed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestSummary {
    pub method: String,
    pub path: String,
    pub protocol: String,
    pub host: String,
}

/// Who made or lifted a ban.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    /// A category's trigger was reached on this peer.
    Trigger,
    /// The administrator (admin API, status page, CLI).
    Administrator,
}

/// Something every interested part of the edge should hear about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// This peer banned `source` (the client's address or IPv6 network of `prefix` bits) for
    /// `minutes`, until `until_ms`. One event per ban (the kernel mirror follows it as it
    /// follows [`Event::BanInForce`]), so a burst of [`BUS_CAPACITY`] bans fits on the bus.
    Banned {
        client: IpAddr,
        source: IpAddr,
        prefix: u8,
        until_ms: u64,
        category: String,
        minutes: u64,
        by: Actor,
        /// The request that reached the trigger (none for a ban by hand).
        request: Option<RequestSummary>,
    },
    /// A ban another peer made is in force in this peer's memory until `until_ms`: what the
    /// kernel mirror follows (with [`Event::Banned`] for the bans made here).
    BanInForce { source: IpAddr, prefix: u8, until_ms: u64 },
    /// A ban was lifted from this peer's memory.
    BanLifted { source: IpAddr, prefix: u8, by: Option<Actor> },
    /// An exemption was added (`network` as `address/prefix`, with its categories).
    ExemptionAdded { network: String, categories: Vec<String> },
    /// An exemption was removed.
    ExemptionRemoved { network: String },
    /// Maintenance was switched on or off on this peer.
    Maintenance { on: bool },
    /// The web certificate expires soon or has expired (`notice` is the operator's text).
    CertificateExpiry { notice: String, subject: String, serial: String },
    /// An upstream server's health changed.
    UpstreamHealth { service: String, server: String, up: bool },
    /// The set of alive cluster peers changed.
    PeersChanged { alive: Vec<String> },
    /// A federation list changed: `list` is `allow`, `block` or `watch` (`added` false: the
    /// domain was taken off), or `both` when the change left the domain on the allow and the
    /// block list (warning 14518: it is blocked).
    FederationListChanged { list: &'static str, domain: String, added: bool },
    /// A discovered partner domain went on the watch list (`reason`: `distinct-users` or
    /// `error-share`).
    WatchListed { domain: String, reason: String },
    /// A configuration reload was refused; the running configuration stays.
    ReloadRefused { errors: Vec<String> },
}

/// The bus: publish from anywhere, subscribe from anywhere, never block.
#[derive(Debug, Clone)]
pub struct EventBus {
    sender: broadcast::Sender<Arc<Event>>,
}

impl Default for EventBus {
    fn default() -> EventBus {
        EventBus::new()
    }
}

impl EventBus {
    /// A bus holding up to [`BUS_CAPACITY`] events per lagging subscriber.
    pub fn new() -> EventBus {
        EventBus { sender: broadcast::channel(BUS_CAPACITY).0 }
    }

    /// Publishes `event` to every current subscriber (none listening is fine).
    pub fn publish(&self, event: Event) {
        let _ = self.sender.send(Arc::new(event));
    }

    /// A new subscriber: it receives every event published from now on.
    pub fn subscribe(&self) -> Subscriber {
        Subscriber { receiver: self.sender.subscribe() }
    }
}

/// One subscriber's end of the bus.
#[derive(Debug)]
pub struct Subscriber {
    receiver: broadcast::Receiver<Arc<Event>>,
}

/// What a subscriber gets next.
#[derive(Debug)]
pub enum Received {
    Event(Arc<Event>),
    /// The subscriber lagged and this many events were dropped for it.
    Missed(u64),
}

impl Subscriber {
    /// The next event; `None` once the bus is gone (the edge is stopping).
    pub async fn next(&mut self) -> Option<Received> {
        match self.receiver.recv().await {
            Ok(event) => Some(Received::Event(event)),
            Err(broadcast::error::RecvError::Lagged(missed)) => Some(Received::Missed(missed)),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_subscriber_hears_each_event_in_order() {
        let bus = EventBus::new();
        let (mut a, mut b) = (bus.subscribe(), bus.subscribe());
        bus.publish(Event::Maintenance { on: true });
        bus.publish(Event::Maintenance { on: false });
        for subscriber in [&mut a, &mut b] {
            for on in [true, false] {
                match subscriber.next().await {
                    Some(Received::Event(event)) => assert_eq!(*event, Event::Maintenance { on }),
                    other => panic!("expected an event, got {other:?}"),
                }
            }
        }
    }

    #[tokio::test]
    async fn a_lagging_subscriber_never_blocks_the_publisher_and_learns_what_it_missed() {
        let bus = EventBus::new();
        let mut slow = bus.subscribe();
        // Publishing far more than the capacity returns at once (nothing waits for `slow`).
        for _ in 0..BUS_CAPACITY + 10 {
            bus.publish(Event::Maintenance { on: true });
        }
        match slow.next().await {
            Some(Received::Missed(missed)) => assert_eq!(missed, 10),
            other => panic!("expected a missed count, got {other:?}"),
        }
        assert!(matches!(slow.next().await, Some(Received::Event(_))), "after the gap, events flow again");
    }

    #[tokio::test]
    async fn publishing_without_subscribers_is_fine_and_a_closed_bus_ends_subscribers() {
        let bus = EventBus::new();
        bus.publish(Event::ReloadRefused { errors: vec!["x".into()] });
        let mut late = bus.subscribe();
        drop(bus);
        assert!(late.next().await.is_none());
    }
}
