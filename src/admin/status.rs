//! `GET /api/v1/status`: the snapshot `portcullis status` prints and the status page shows —
//! identity, load, uptime, listeners, maintenance, counts (current/peak), each service's
//! state and upstreams (health, effective and configured weight), blocked sources, and the
//! web certificate with its expiry notice.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::AdminState;
use crate::config::{AuthMode, ServiceKind};

/// `GET /api/v1/status` body.
#[derive(Debug, Serialize, Deserialize)]
pub struct Status {
    pub server: String,
    /// The machine's host name.
    pub host: String,
    pub version: String,
    /// What this peer does ("web edge", "admin API"; "SIP edge" later).
    pub roles: Vec<String>,
    /// 1, 5 and 15 minute load averages.
    pub load_average: [f64; 3],
    /// Now, RFC 3339.
    pub date: String,
    pub started_at: String,
    pub uptime_seconds: u64,
    pub config_file: Option<String>,
    pub maintenance: bool,
    pub cluster: ClusterStatus,
    pub counts: Counts,
    pub blocked_sources: usize,
    pub listeners: Vec<ListenerStatus>,
    pub services: Vec<ServiceStatus>,
    pub certificate: Option<CertificateStatus>,
    /// The dynamic firewall, when it runs (`GET /api/v1/firewall` has the same).
    #[serde(default)]
    pub firewall: Option<crate::runtime::control::FirewallView>,
    /// Log shipping to the central syslog server, when configured (`[logging.ship]`).
    #[serde(default)]
    pub shipping: Option<crate::telemetry::ship::ShippingStatus>,
}

/// The state store this peer uses.
#[derive(Debug, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// `embedded` or `redis`.
    pub store: String,
    pub peer: String,
    /// `ok`, or `degraded` while a shared store does not answer (the peer serves from memory).
    pub state: String,
    /// The alive peer with the smallest name (runs the cluster's shared chores).
    pub primary: Option<String>,
    /// Sessions over all alive peers, and the peak this peer has seen.
    pub sessions: u64,
    pub sessions_peak: u64,
    pub peers: Vec<PeerStatus>,
}

/// One peer in [`ClusterStatus`].
#[derive(Debug, Serialize, Deserialize)]
pub struct PeerStatus {
    pub name: String,
    pub address: String,
    /// RFC 3339.
    pub last_seen: String,
    pub maintenance: bool,
    pub sessions: u64,
    pub websockets: u64,
    pub primary: bool,
}

/// Totals over all services.
#[derive(Debug, Serialize, Deserialize)]
pub struct Counts {
    pub sessions: u64,
    pub sessions_peak: u64,
    pub websockets: u64,
    pub websockets_peak: u64,
    /// Current SIP registrations (unexpired bindings); `None` without a SIP edge.
    pub sip_registrations: Option<u64>,
    /// Their peak since start; `None` without a SIP edge.
    #[serde(default)]
    pub sip_registrations_peak: Option<u64>,
}

/// One listener in [`Status`].
#[derive(Debug, Serialize, Deserialize)]
pub struct ListenerStatus {
    pub name: String,
    pub address: String,
    pub tls: bool,
    pub redirect_to: Option<String>,
    pub open_connections: i64,
}

/// One service in [`Status`].
#[derive(Debug, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: String,
    pub auth: String,
    pub kind: String,
    /// `Active`, `Draining (N)` or `Inactive (Maintenance mode)`.
    pub state: String,
    /// Authenticated sessions active within `maintenance.session_idle`.
    pub sessions: usize,
    /// Highest `sessions` since start.
    pub sessions_peak: usize,
    pub websockets: u64,
    pub websockets_peak: u64,
    pub servers: Vec<ServerStatus>,
}

/// One upstream server in [`Status`].
#[derive(Debug, Serialize, Deserialize)]
pub struct ServerStatus {
    pub address: String,
    /// The weight in effect (an operator override, or the configured one).
    pub weight: u32,
    pub configured_weight: u32,
    pub backup: bool,
    pub max_conns: u32,
    pub up: bool,
    pub in_flight: u32,
}

/// The certificate the HTTPS listeners serve.
#[derive(Debug, Serialize, Deserialize)]
pub struct CertificateStatus {
    /// `installed`, `configured` or `self-signed`.
    pub origin: String,
    pub details: Option<crate::operate::cert::CertDetails>,
    /// `WEB CERT EXPIRES AT: …` / `WEB CERT EXPIRED AT: …`, when due.
    pub notice: Option<String>,
    /// Why the details could not be read.
    pub error: Option<String>,
}

fn load_average() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut parts = text.split_whitespace().map(|p| p.parse::<f64>().unwrap_or(0.0));
    [parts.next().unwrap_or(0.0), parts.next().unwrap_or(0.0), parts.next().unwrap_or(0.0)]
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default()
}

/// The certificate status of `state`'s edge (`None` without HTTPS listeners).
pub fn certificate(state: &AdminState) -> Option<CertificateStatus> {
    let config = state.runtime.config();
    let needs_tls = config.listeners.iter().any(|l| l.tls) || config.admin.as_ref().is_some_and(|a| a.tls);
    if !needs_tls {
        return None;
    }
    let paths = crate::operate::cert::certificate_in_use(
        config.tls.as_ref().map(|t| (t.cert.as_path(), t.key.as_path())),
        &config.server.state_dir,
    );
    let origin = serde_json::to_value(paths.origin).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
    match crate::operate::cert::details_of_file(&paths.cert) {
        Ok(details) => {
            let notice = crate::operate::cert::expiry_notice(details.not_after_unix, time::OffsetDateTime::now_utc());
            Some(CertificateStatus { origin, details: Some(details), notice, error: None })
        }
        Err(error) => Some(CertificateStatus { origin, details: None, notice: None, error: Some(error.to_string()) }),
    }
}

fn cluster_status(state: &AdminState, peer: &str) -> ClusterStatus {
    let operate = &state.runtime.operate;
    let peers = operate.peers();
    let primary = crate::operate::peers::primary(&peers).map(str::to_string);
    ClusterStatus {
        store: if state.runtime.store.shared() { "redis" } else { "embedded" }.to_string(),
        peer: peer.to_string(),
        state: if state.runtime.store.healthy() { "ok" } else { "degraded" }.to_string(),
        sessions: operate.cluster_sessions().current(),
        sessions_peak: operate.cluster_sessions().peak(),
        peers: peers
            .iter()
            .map(|p| PeerStatus {
                name: p.name.clone(),
                address: p.address.clone(),
                last_seen: humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(p.last_seen_ms))
                    .to_string(),
                maintenance: p.maintenance,
                sessions: p.sessions,
                websockets: p.websockets,
                primary: primary.as_deref() == Some(p.name.as_str()),
            })
            .collect(),
        primary,
    }
}

/// The snapshot.
/// [`status`] with the firewall's view (which asks `nft` for its counters).
pub async fn status_with_firewall(state: &AdminState) -> Status {
    let mut status = status(state);
    if let Some(firewall) = state.runtime.firewall.get() {
        status.firewall = Some(firewall.view().await);
    }
    status
}

pub fn status(state: &AdminState) -> Status {
    let operate = &state.runtime.operate;
    let listeners: Vec<ListenerStatus> = state
        .listeners
        .iter()
        .map(|(l, bound)| ListenerStatus {
            name: l.name.clone(),
            address: bound.to_string(),
            tls: l.tls,
            redirect_to: l.redirect_to.as_ref().map(|r| r.listener.clone()),
            open_connections: state.runtime.metrics.open_connections(&Arc::from(l.name.as_str())),
        })
        .collect();
    let config = state.runtime.config();
    let services: Vec<ServiceStatus> = state
        .runtime
        .control
        .services()
        .into_iter()
        .map(|s| {
            let websockets = operate.websockets_of(&s.name);
            let configured: Vec<(String, u32)> = match config.services.iter().find(|c| *c.name == *s.name).map(|c| &c.kind) {
                Some(ServiceKind::Proxy(pool)) => pool.servers.iter().map(|u| (u.address.clone(), u.weight)).collect(),
                _ => Vec::new(),
            };
            ServiceStatus {
                name: s.name.to_string(),
                auth: match s.auth {
                    AuthMode::None => "none",
                    AuthMode::Basic => "basic",
                    AuthMode::Jwt => "jwt",
                    AuthMode::BasicOrJwt => "basic_or_jwt",
                }
                .to_string(),
                kind: s.kind.to_string(),
                state: operate.state(s.sessions as u64 + websockets.current()).to_string(),
                sessions: s.sessions,
                sessions_peak: s.sessions_peak,
                websockets: websockets.current(),
                websockets_peak: websockets.peak(),
                servers: s
                    .servers
                    .iter()
                    .map(|srv| ServerStatus {
                        address: srv.address.to_string(),
                        weight: srv.weight,
                        configured_weight: configured.iter().find(|(a, _)| **a == *srv.address).map_or(srv.weight, |(_, w)| *w),
                        backup: srv.weight == 0,
                        max_conns: srv.max_conns,
                        up: srv.up,
                        in_flight: srv.in_flight,
                    })
                    .collect(),
            }
        })
        .collect();
    let registrations = state.runtime.control.registrations();
    let sessions_now: u64 = services.iter().map(|s| s.sessions as u64).sum();
    operate.note_sessions_total(sessions_now);
    let mut roles: Vec<String> = state.runtime.control.roles().into_iter().map(str::to_string).collect();
    if config.admin.is_some() {
        roles.push("admin API".to_string());
    }
    Status {
        server: config.server.name.clone(),
        host: host_name(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        roles,
        load_average: load_average(),
        date: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        started_at: humantime::format_rfc3339_seconds(state.started_at).to_string(),
        uptime_seconds: state.started.elapsed().as_secs(),
        config_file: config.source.as_ref().map(|p| p.display().to_string()),
        maintenance: operate.in_maintenance(),
        cluster: cluster_status(state, &config.cluster.peer),
        counts: Counts {
            sessions: sessions_now,
            sessions_peak: operate.sessions_total_peak(),
            websockets: operate.websockets_total().current(),
            websockets_peak: operate.websockets_total().peak(),
            sip_registrations: registrations.map(|r| r.0),
            sip_registrations_peak: registrations.map(|r| r.1),
        },
        blocked_sources: state.runtime.shield.list().len(),
        listeners,
        services,
        certificate: certificate(state),
        firewall: None,
        shipping: state.runtime.shipping.as_ref().map(|s| s.status()),
    }
}
