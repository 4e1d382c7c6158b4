//! Metric names (Prometheus), one place so dashboards and docs can rely on them.
//! The registry adds the `portcullis_` prefix and the `_total` suffix of counters.

/// Metric-name prefix.
pub const PREFIX: &str = "portcullis";
/// Requests answered, by service and status (`portcullis_requests_total`).
pub const REQUESTS: &str = "requests";
/// Request duration histogram in seconds, by service.
pub const REQUEST_DURATION: &str = "request_duration_seconds";
/// Open client connections, by listener.
pub const OPEN_CONNECTIONS: &str = "open_connections";
/// Upstream server health (1 up, 0 down), by service and server.
pub const UPSTREAM_UP: &str = "upstream_up";
/// Requests refused for ambiguous framing (smuggling attempts), by listener.
pub const FRAMING_REFUSED: &str = "framing_refused";
/// Open WebSocket tunnels, by service.
pub const OPEN_WEBSOCKETS: &str = "open_websockets";
/// Authenticated sessions active in the last 15 minutes, by service.
pub const SESSIONS: &str = "sessions";
/// Peak of `sessions` since start, by service.
pub const SESSIONS_PEAK: &str = "sessions_peak";
/// Bans, by category (`portcullis_bans_total`).
pub const BANS: &str = "bans";
/// Bans in force.
pub const BANNED_SOURCES: &str = "banned_sources";
/// Refused edge authentications, by reason.
pub const AUTH_FAILURES: &str = "auth_failures";
/// Configuration reloads, by result (`ok` / `error`).
pub const RELOADS: &str = "config_reloads";
/// Seconds until the web certificate expires (negative once expired).
pub const CERTIFICATE_EXPIRY: &str = "certificate_expiry_seconds";
/// SIP requests from partners, by federation decision (`local`, `allowed`, `discovered`,
/// `blocked`, `refused`, `watched`, `throttled`) (`portcullis_sip_requests_total`).
pub const SIP_REQUESTS: &str = "sip_requests";
/// SIP final responses sent to partners, by class (`2xx` … `6xx`), the edge's own included.
pub const SIP_RESPONSES: &str = "sip_responses";
/// Current SIP registrations (unexpired bindings).
pub const SIP_REGISTRATIONS: &str = "sip_registrations";
/// Peak of `sip_registrations` since start.
pub const SIP_REGISTRATIONS_PEAK: &str = "sip_registrations_peak";
/// Log shipping connected (1) or not (0).
pub const SHIP_CONNECTED: &str = "log_ship_connected";
/// Log lines queued for shipping.
pub const SHIP_QUEUED: &str = "log_ship_queued";
/// Bytes of the shipping queue.
pub const SHIP_QUEUED_BYTES: &str = "log_ship_queued_bytes";
/// Age of the oldest queued line, in seconds.
pub const SHIP_OLDEST_AGE: &str = "log_ship_oldest_queued_age_seconds";
/// Lines not shipped because the queue was full (`portcullis_log_ship_dropped_total`).
pub const SHIP_DROPPED: &str = "log_ship_dropped";
/// Lines written to the syslog server.
pub const SHIP_SENT: &str = "log_ship_sent";
/// Lines acknowledged by the server (RELP).
pub const SHIP_ACKNOWLEDGED: &str = "log_ship_acknowledged";
/// Reconnections to the syslog server.
pub const SHIP_RECONNECTS: &str = "log_ship_reconnects";
/// The dynamic firewall's tables are in the kernel (1) or not (0).
pub const FIREWALL_APPLIED: &str = "firewall_applied";
/// Packets per firewall rule (its named nftables counter), read from the kernel at scrape.
pub const FIREWALL_PACKETS: &str = "firewall_packets";
/// Entries in the kernel's conntrack table (the edge's network namespace).
pub const CONNTRACK_ENTRIES: &str = "conntrack_entries";
/// The conntrack table's size (`net.netfilter.nf_conntrack_max`).
pub const CONNTRACK_MAX: &str = "conntrack_max";
