//! Prometheus metrics (prometheus-client registry, text exposition served by the admin API).
//!
//! Label values that repeat on every request (service, listener) are `Arc<str>` so recording
//! a request clones a pointer, not a string.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelSetEncoder, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::names;

/// A shared label value.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct Label(pub Arc<str>);

impl EncodeLabelValue for Label {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> fmt::Result {
        EncodeLabelValue::encode(&&*self.0, encoder)
    }
}

macro_rules! label_set {
    ($name:ident { $($field:ident : $ty:ty),* }) => {
        #[derive(Debug, Clone, Hash, PartialEq, Eq)]
        struct $name { $($field: $ty),* }
        impl EncodeLabelSet for $name {
            fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> fmt::Result {
                $( EncodeLabel::encode(&(stringify!($field), self.$field.clone()), encoder.encode_label())?; )*
                Ok(())
            }
        }
    };
}
use prometheus_client::encoding::EncodeLabel;

label_set!(RequestLabels { service: Label, status: u16 });
label_set!(ServiceLabels { service: Label });
label_set!(ListenerLabels { listener: Label });
label_set!(ServerLabels { service: Label, server: Label });
label_set!(ResultLabels { result: Label });
label_set!(ReasonLabels { reason: Label });
label_set!(CategoryLabels { category: Label });
label_set!(DecisionLabels { decision: &'static str });
label_set!(ClassLabels { class: &'static str });
label_set!(RuleLabels { rule: Label });

fn duration_histogram() -> Histogram {
    Histogram::new([0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
}

/// All metrics of one edge process.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: Family<ServiceLabels, Histogram, fn() -> Histogram>,
    connections: Family<ListenerLabels, Gauge>,
    upstream_up: Family<ServerLabels, Gauge>,
    framing_refused: Family<ListenerLabels, Counter>,
    websockets: Family<ServiceLabels, Gauge>,
    reloads: Family<ResultLabels, Counter>,
    auth_failures: Family<ReasonLabels, Counter>,
    sessions: Family<ServiceLabels, Gauge>,
    sessions_peak: Family<ServiceLabels, Gauge>,
    bans: Family<CategoryLabels, Counter>,
    banned_sources: Gauge,
    certificate_expiry: Gauge,
    sip_requests: Family<DecisionLabels, Counter>,
    sip_responses: Family<ClassLabels, Counter>,
    sip_registrations: Gauge,
    sip_registrations_peak: Gauge,
    ship: ShipMetrics,
    firewall: FirewallMetrics,
}

/// The dynamic firewall's metrics (set from its view at each scrape).
#[derive(Debug, Default)]
struct FirewallMetrics {
    applied: Gauge,
    packets: Family<RuleLabels, Gauge>,
    conntrack_entries: Gauge,
    conntrack_max: Gauge,
}

impl FirewallMetrics {
    fn register(registry: &mut Registry) -> FirewallMetrics {
        let m = FirewallMetrics::default();
        registry.register(names::FIREWALL_APPLIED, "The dynamic firewall's tables are in the kernel (1) or not (0)", m.applied.clone());
        registry.register(
            names::FIREWALL_PACKETS,
            "Packets per firewall rule (dropped, or accepted), from its nftables counter",
            m.packets.clone(),
        );
        registry.register(names::CONNTRACK_ENTRIES, "Entries in the kernel's connection tracking table", m.conntrack_entries.clone());
        registry.register(
            names::CONNTRACK_MAX,
            "Size of the kernel's connection tracking table (nf_conntrack_max)",
            m.conntrack_max.clone(),
        );
        m
    }
}

/// The log shipping's metrics (set from its status at each scrape).
#[derive(Debug, Default)]
struct ShipMetrics {
    connected: Gauge,
    queued: Gauge,
    queued_bytes: Gauge,
    oldest_age: Gauge,
    dropped: Counter,
    sent: Counter,
    acknowledged: Counter,
    reconnects: Counter,
}

impl ShipMetrics {
    fn register(registry: &mut Registry) -> ShipMetrics {
        let m = ShipMetrics::default();
        registry.register(names::SHIP_CONNECTED, "Log shipping connected to the syslog server (1) or not (0)", m.connected.clone());
        registry.register(names::SHIP_QUEUED, "Log lines queued for shipping, not yet delivered", m.queued.clone());
        registry.register(names::SHIP_QUEUED_BYTES, "Bytes of the log shipping queue on disk", m.queued_bytes.clone());
        registry.register(names::SHIP_OLDEST_AGE, "Age of the oldest queued log line", m.oldest_age.clone());
        registry.register(names::SHIP_DROPPED, "Log lines not shipped because the queue was full", m.dropped.clone());
        registry.register(names::SHIP_SENT, "Log lines written to the syslog server", m.sent.clone());
        registry.register(names::SHIP_ACKNOWLEDGED, "Log lines acknowledged by the syslog server (RELP)", m.acknowledged.clone());
        registry.register(names::SHIP_RECONNECTS, "Connections to the syslog server opened after the first", m.reconnects.clone());
        m
    }
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix(names::PREFIX);
        let requests = Family::default();
        let durations = Family::new_with_constructor(duration_histogram as fn() -> Histogram);
        let connections = Family::default();
        let upstream_up = Family::default();
        let framing_refused = Family::default();
        let websockets = Family::default();
        let reloads = Family::default();
        let auth_failures = Family::default();
        let sessions = Family::default();
        let sessions_peak = Family::default();
        let bans = Family::default();
        let banned_sources = Gauge::default();
        let certificate_expiry = Gauge::default();
        registry.register(names::REQUESTS, "Requests answered by the edge", requests.clone());
        registry.register(names::REQUEST_DURATION, "Time from request head to end of response", durations.clone());
        registry.register(names::OPEN_CONNECTIONS, "Open client connections", connections.clone());
        registry.register(names::UPSTREAM_UP, "Upstream server health (1 up, 0 down)", upstream_up.clone());
        registry.register(names::FRAMING_REFUSED, "Requests refused for ambiguous framing", framing_refused.clone());
        registry.register(names::OPEN_WEBSOCKETS, "Open WebSocket tunnels", websockets.clone());
        registry.register(names::RELOADS, "Configuration reloads", reloads.clone());
        registry.register(names::AUTH_FAILURES, "Refused edge authentications", auth_failures.clone());
        registry.register(names::SESSIONS, "Authenticated sessions active in the last 15 minutes", sessions.clone());
        registry.register(names::SESSIONS_PEAK, "Peak authenticated sessions since start", sessions_peak.clone());
        registry.register(names::BANS, "Sources banned by the shield", bans.clone());
        registry.register(names::BANNED_SOURCES, "Bans in force", banned_sources.clone());
        registry.register(
            names::CERTIFICATE_EXPIRY,
            "Seconds until the web certificate expires (negative: expired)",
            certificate_expiry.clone(),
        );
        let sip_requests = Family::default();
        let sip_responses = Family::default();
        let sip_registrations = Gauge::default();
        let sip_registrations_peak = Gauge::default();
        registry.register(names::SIP_REQUESTS, "SIP requests from partners, by federation decision", sip_requests.clone());
        registry.register(names::SIP_RESPONSES, "SIP final responses sent to partners, by class", sip_responses.clone());
        registry.register(names::SIP_REGISTRATIONS, "Current SIP registrations (unexpired bindings)", sip_registrations.clone());
        registry.register(names::SIP_REGISTRATIONS_PEAK, "Peak SIP registrations since start", sip_registrations_peak.clone());
        let ship = ShipMetrics::register(&mut registry);
        let firewall = FirewallMetrics::register(&mut registry);
        Metrics {
            ship,
            firewall,
            registry,
            sip_requests,
            sip_responses,
            sip_registrations,
            sip_registrations_peak,
            requests,
            durations,
            connections,
            upstream_up,
            framing_refused,
            websockets,
            reloads,
            auth_failures,
            sessions,
            sessions_peak,
            bans,
            banned_sources,
            certificate_expiry,
        }
    }

    /// Records one answered request.
    pub fn request(&self, service: &Arc<str>, status: u16, elapsed: Duration) {
        let service = Label(service.clone());
        self.requests.get_or_create(&RequestLabels { service: service.clone(), status }).inc();
        self.durations.get_or_create(&ServiceLabels { service }).observe(elapsed.as_secs_f64());
    }

    /// Adds `delta` (±1) to a listener's open connections.
    pub fn connections(&self, listener: &Arc<str>, delta: i64) {
        self.connections.get_or_create(&ListenerLabels { listener: Label(listener.clone()) }).inc_by(delta);
    }

    /// Sets an upstream server's health.
    pub fn upstream_health(&self, service: &Arc<str>, server: &Arc<str>, up: bool) {
        let labels = ServerLabels { service: Label(service.clone()), server: Label(server.clone()) };
        self.upstream_up.get_or_create(&labels).set(i64::from(up));
    }

    /// Counts a request refused for ambiguous framing.
    pub fn framing_refused(&self, listener: &Arc<str>) {
        self.framing_refused.get_or_create(&ListenerLabels { listener: Label(listener.clone()) }).inc();
    }

    /// Adds `delta` (±1) to a service's open WebSocket tunnels.
    pub fn websockets(&self, service: &Arc<str>, delta: i64) {
        self.websockets.get_or_create(&ServiceLabels { service: Label(service.clone()) }).inc_by(delta);
    }

    /// Counts a configuration reload.
    pub fn reload(&self, ok: bool) {
        let result = Label(Arc::from(if ok { "ok" } else { "error" }));
        self.reloads.get_or_create(&ResultLabels { result }).inc();
    }

    /// Sets a service's session counts (refreshed when metrics are scraped).
    pub fn sessions(&self, service: &Arc<str>, current: usize, peak: usize) {
        let labels = ServiceLabels { service: Label(service.clone()) };
        self.sessions.get_or_create(&labels).set(i64::try_from(current).unwrap_or(i64::MAX));
        self.sessions_peak.get_or_create(&labels).set(i64::try_from(peak).unwrap_or(i64::MAX));
    }

    /// Counts a ban.
    pub fn ban(&self, category: &str) {
        self.bans.get_or_create(&CategoryLabels { category: Label(Arc::from(category)) }).inc();
    }

    /// Sets the number of bans in force.
    pub fn banned_sources(&self, count: usize) {
        self.banned_sources.set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// Sets the seconds until the web certificate expires.
    pub fn certificate_expiry(&self, seconds: i64) {
        self.certificate_expiry.set(seconds);
    }

    /// Counts a refused authentication.
    pub fn auth_failure(&self, reason: &'static str) {
        self.auth_failures.get_or_create(&ReasonLabels { reason: Label(Arc::from(reason)) }).inc();
    }

    /// The counter of SIP requests from partners with federation decision `decision` (kept by
    /// the SIP edge: counting is then one atomic add, no label lookup).
    pub fn sip_request_counter(&self, decision: &'static str) -> Counter {
        self.sip_requests.get_or_create(&DecisionLabels { decision }).clone()
    }

    /// The counter of final SIP responses of class `class` (`2xx` … `6xx`) sent to partners.
    pub fn sip_response_counter(&self, class: &'static str) -> Counter {
        self.sip_responses.get_or_create(&ClassLabels { class }).clone()
    }

    /// Sets the SIP registration counts (refreshed when metrics are scraped).
    pub fn sip_registrations(&self, current: u64, peak: u64) {
        self.sip_registrations.set(i64::try_from(current).unwrap_or(i64::MAX));
        self.sip_registrations_peak.set(i64::try_from(peak).unwrap_or(i64::MAX));
    }

    /// Open connections of one listener (for the status API).
    pub fn open_connections(&self, listener: &Arc<str>) -> i64 {
        self.connections.get_or_create(&ListenerLabels { listener: Label(listener.clone()) }).get()
    }

    /// Sets the log shipping's metrics from its status.
    pub fn shipping(&self, status: &crate::telemetry::ship::ShippingStatus) {
        use std::sync::atomic::Ordering;
        let ship = &self.ship;
        ship.connected.set(i64::from(status.connected));
        ship.queued.set(i64::try_from(status.queued).unwrap_or(i64::MAX));
        ship.queued_bytes.set(i64::try_from(status.queued_bytes).unwrap_or(i64::MAX));
        ship.oldest_age.set(i64::try_from(status.oldest_queued_age_s).unwrap_or(i64::MAX));
        ship.dropped.inner().store(status.dropped, Ordering::Relaxed);
        ship.sent.inner().store(status.sent, Ordering::Relaxed);
        ship.acknowledged.inner().store(status.acknowledged, Ordering::Relaxed);
        ship.reconnects.inner().store(status.reconnects, Ordering::Relaxed);
    }

    /// Sets the firewall's metrics: whether its tables are in the kernel, packets per rule
    /// (the kernel's counters: since the table was last replaced; none while it is down, so
    /// the per-rule gauges are cleared) and the conntrack table's (entries, max).
    pub fn firewall(&self, applied: bool, counters: &std::collections::BTreeMap<String, u64>, conntrack: Option<(u64, u64)>) {
        let firewall = &self.firewall;
        firewall.applied.set(i64::from(applied));
        firewall.packets.clear();
        for (rule, packets) in counters {
            let labels = RuleLabels { rule: Label(Arc::from(rule.as_str())) };
            firewall.packets.get_or_create(&labels).set(i64::try_from(*packets).unwrap_or(i64::MAX));
        }
        if let Some((entries, max)) = conntrack {
            firewall.conntrack_entries.set(i64::try_from(entries).unwrap_or(i64::MAX));
            firewall.conntrack_max.set(i64::try_from(max).unwrap_or(i64::MAX));
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_carries_labels_and_counts() {
        let m = Metrics::new();
        let svc: Arc<str> = Arc::from("finesse");
        m.request(&svc, 200, Duration::from_millis(3));
        m.request(&svc, 200, Duration::from_millis(3));
        m.request(&svc, 502, Duration::from_millis(30));
        m.upstream_health(&svc, &Arc::from("10.0.0.1:8082"), false);
        m.connections(&Arc::from("https"), 1);
        let text = m.encode();
        assert!(text.contains(r#"portcullis_requests_total{service="finesse",status="200"} 2"#), "{text}");
        assert!(text.contains(r#"portcullis_requests_total{service="finesse",status="502"} 1"#), "{text}");
        assert!(text.contains(r#"portcullis_upstream_up{service="finesse",server="10.0.0.1:8082"} 0"#), "{text}");
        assert!(text.contains(r#"portcullis_open_connections{listener="https"} 1"#), "{text}");
        assert!(text.contains(r#"portcullis_request_duration_seconds_count{service="finesse"} 3"#), "{text}");
    }

    #[test]
    fn the_firewalls_counters_and_the_conntrack_fill_are_exposed() {
        let m = Metrics::new();
        let counters = [("rate_global".to_string(), 7), ("closed".to_string(), 0)].into_iter().collect();
        m.firewall(true, &counters, Some((1234, 262_144)));
        let text = m.encode();
        assert!(text.contains("portcullis_firewall_applied 1"), "{text}");
        assert!(text.contains(r#"portcullis_firewall_packets{rule="rate_global"} 7"#), "{text}");
        assert!(text.contains(r#"portcullis_firewall_packets{rule="closed"} 0"#), "{text}");
        assert!(text.contains("portcullis_conntrack_entries 1234"), "{text}");
        assert!(text.contains("portcullis_conntrack_max 262144"), "{text}");
        // Taken down: no counters are read, and none of the old values stay.
        m.firewall(false, &Default::default(), Some((10, 262_144)));
        let text = m.encode();
        assert!(text.contains("portcullis_firewall_applied 0"), "{text}");
        assert!(!text.contains("portcullis_firewall_packets{"), "{text}");
    }
}
