//! The `portcullis status` screen: a compact display like the platform's — host, roles, load,
//! date, uptime, listeners, maintenance, counts (current/peak), blocked sources, each
//! service's state and upstream health, log shipping, and the web certificate expiry notice.

use std::fmt::Write;
use std::time::Duration;

use crate::admin::Status;

/// Renders `s` for a terminal.
pub(super) fn status(s: &Status) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "HOST:         {} ({})", s.server, if s.host.is_empty() { "?" } else { &s.host });
    let _ = writeln!(out, "ROLES:        {}", s.roles.join(", "));
    let _ = writeln!(out, "LOAD:         {:.2} {:.2} {:.2}", s.load_average[0], s.load_average[1], s.load_average[2]);
    let _ = writeln!(out, "DATE:         {}", s.date);
    let _ = writeln!(out, "UPTIME:       {} (since {})", humantime::format_duration(Duration::from_secs(s.uptime_seconds)), s.started_at);
    let _ = writeln!(out, "VERSION:      {}", s.version);
    if let Some(file) = &s.config_file {
        let _ = writeln!(out, "CONFIG:       {file}");
    }
    let _ = writeln!(out, "MAINTENANCE:  {}", if s.maintenance { "ON (new sessions refused)" } else { "off" });
    if let Some(f) = &s.firewall {
        let ports: Vec<String> = f.ports.iter().map(u16::to_string).collect();
        let drops: Vec<String> =
            f.counters.iter().filter(|(name, n)| **n > 0 && *name != "accepted").map(|(name, n)| format!("{name} {n}")).collect();
        let _ = writeln!(
            out,
            "FIREWALL:     {} (table inet {} on {}), ports {}; dropped: {}{}{}",
            if f.applied { "applied" } else { "NOT APPLIED" },
            f.table,
            f.interface,
            if ports.is_empty() { "none".to_string() } else { ports.join(", ") },
            if drops.is_empty() { "nothing".to_string() } else { drops.join(", ") },
            f.conntrack.map(|c| format!("; conntrack {} of {}", c.entries, c.max)).unwrap_or_default(),
            f.error.as_deref().map(|e| format!("; last error: {e}")).unwrap_or_default()
        );
    }
    if let Some(ship) = &s.shipping {
        let _ = writeln!(
            out,
            "LOG SHIPPING: {} ({} to {}), {} queued ({} bytes{}), oldest {}s; sent {}, acknowledged {}, reconnects {}, not shipped {}{}",
            if ship.connected { "connected" } else { "NOT CONNECTED" },
            ship.protocol,
            ship.address,
            ship.queued,
            ship.queued_bytes,
            if ship.queue_full { ", QUEUE FULL" } else { "" },
            ship.oldest_queued_age_s,
            ship.sent,
            ship.acknowledged,
            ship.reconnects,
            ship.dropped,
            // The server chose part of that text: no control characters reach the terminal.
            ship.last_error.as_deref().map(|e| format!("; last error: {}", e.replace(char::is_control, " "))).unwrap_or_default()
        );
    }
    let k = &s.cluster;
    let _ = writeln!(
        out,
        "CLUSTER:      {} store, peer {}, {}; primary {}; cluster sessions {} (peak {})",
        k.store,
        k.peer,
        k.state,
        k.primary.as_deref().unwrap_or("-"),
        k.sessions,
        k.sessions_peak
    );
    if k.peers.len() > 1 || k.store == "redis" {
        let _ = writeln!(out, "PEERS:");
        for p in &k.peers {
            let _ = writeln!(
                out,
                "  {:<12}{} last seen {}  maintenance {:<3}  sessions {}  websockets {}  ({})",
                p.name,
                if p.primary { " (primary)" } else { "          " },
                p.last_seen,
                if p.maintenance { "ON" } else { "off" },
                p.sessions,
                p.websockets,
                p.address
            );
        }
    }
    let c = &s.counts;
    let sip = match (c.sip_registrations, c.sip_registrations_peak) {
        (Some(n), Some(peak)) => format!("{n} (peak {peak})"),
        (Some(n), None) => n.to_string(),
        _ => "-".to_string(),
    };
    let _ = writeln!(
        out,
        "COUNTS:       sessions {} (peak {}), websockets {} (peak {}), SIP registrations {sip}",
        c.sessions, c.sessions_peak, c.websockets, c.websockets_peak
    );
    let _ = writeln!(out, "BLOCKED:      {} source(s)", s.blocked_sources);
    let _ = writeln!(out, "LISTENERS:");
    for l in &s.listeners {
        let kind = match (&l.redirect_to, l.tls) {
            (Some(to), _) => format!("redirect to {to}"),
            (None, true) => "https".to_string(),
            (None, false) => "http".to_string(),
        };
        let _ = writeln!(out, "  {:<12} {:<24} {:<20} {} open", l.name, l.address, kind, l.open_connections);
    }
    let _ = writeln!(out, "SERVICES:");
    for svc in &s.services {
        let _ = writeln!(
            out,
            "  {:<12} {:<28} auth={:<12} sessions {} (peak {}), websockets {} (peak {})",
            svc.name, svc.state, svc.auth, svc.sessions, svc.sessions_peak, svc.websockets, svc.websockets_peak
        );
        for srv in &svc.servers {
            let limit = if srv.max_conns == 0 { "-".to_string() } else { srv.max_conns.to_string() };
            let weight = if srv.weight == srv.configured_weight {
                srv.weight.to_string()
            } else {
                format!("{} (configured {})", srv.weight, srv.configured_weight)
            };
            let _ = writeln!(
                out,
                "    {:<32} {:<4} weight={weight}{} in-flight={}/{limit}",
                srv.address,
                if srv.up { "UP" } else { "DOWN" },
                if srv.backup { " (backup)" } else { "" },
                srv.in_flight,
            );
        }
    }
    if let Some(cert) = &s.certificate {
        match (&cert.details, &cert.error) {
            (Some(d), _) => {
                let _ = writeln!(out, "WEB CERT:     {} ({}), valid until {}", d.subject, cert.origin, d.not_after);
            }
            (None, Some(error)) => {
                let _ = writeln!(out, "WEB CERT:     unreadable: {error}");
            }
            (None, None) => {}
        }
        if let Some(notice) = &cert.notice {
            let _ = writeln!(out, "{notice}");
        }
    }
    out
}
