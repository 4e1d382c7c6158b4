//! The `error.log` subscriber of the event bus: every [`Event`] an operator should read
//! becomes one line in `error.log`, in the words the edge has always used (fail2ban-style
//! tooling and runbooks grep for them).

use crate::event::{Actor, Event, Received, Subscriber};
use crate::telemetry::logging::{ErrorLog, quoted};

/// Writes `events` into `error_log` until the bus closes. A lag (events dropped because
/// this subscriber fell behind) is itself written, so a gap is never silent.
pub async fn write(mut events: Subscriber, error_log: ErrorLog) {
    while let Some(received) = events.next().await {
        match received {
            Received::Event(event) => write_one(&event, &error_log),
            Received::Missed(missed) => error_log.error(&format!("{missed} event(s) not written here: the error log fell behind")),
        }
    }
}

fn write_one(event: &Event, error_log: &ErrorLog) {
    match event {
        Event::Banned { client, category, minutes, by, .. } => {
            error_log.warn(&format!("{client} banned for {minutes} minutes ({category})"));
            if *by == Actor::Administrator {
                error_log.warn(&format!("{client} banned by the administrator for {minutes} minutes"));
            }
        }
        Event::BanLifted { source, by: Some(Actor::Administrator), .. } => {
            error_log.warn(&format!("{source} unbanned by the administrator"))
        }
        Event::ExemptionAdded { network, categories } => {
            error_log.warn(&format!("exemption added: {network} for {}", categories.join(",")))
        }
        Event::ExemptionRemoved { network } => error_log.warn(&format!("exemption removed: {network}")),
        Event::Maintenance { on: true } => {
            error_log.warn("maintenance mode ON: new sessions are refused with 503, established ones continue; /health answers 503")
        }
        Event::Maintenance { on: false } => error_log.warn("maintenance mode OFF: serving new sessions again"),
        Event::CertificateExpiry { notice, subject, serial } => {
            error_log.warn(&format!("{notice} ({}, serial {})", quoted(subject), quoted(serial)))
        }
        Event::UpstreamHealth { service, server, up: false } => {
            error_log.warn(&format!("upstream {server} of {service} marked down by health check"))
        }
        Event::UpstreamHealth { service, server, up: true } => error_log.warn(&format!("upstream {server} of {service} is up again")),
        Event::PeersChanged { alive } => error_log.warn(&format!("cluster peers alive: {}", alive.join(", "))),
        Event::ReloadRefused { errors } => {
            error_log.error(&format!("configuration reload refused, keeping the running configuration: {}", errors.join("; ")))
        }
        Event::FederationListChanged { list: "both", domain, .. } => error_log.warn(&format!(
            "warning {}: partner domain {domain} is on both the allow and the block list; it is blocked",
            crate::config::sip::BOTH_LISTS_EVENT
        )),
        Event::FederationListChanged { list, domain, added: true } => {
            error_log.warn(&format!("federation: {domain} added to the {list} list"))
        }
        Event::FederationListChanged { list, domain, added: false } => {
            error_log.warn(&format!("federation: {domain} taken off the {list} list"))
        }
        Event::WatchListed { domain, reason } => error_log.warn(&format!(
            "federation: discovered partner {domain} put on the watch list ({reason}); `portcullis federation watch` lists it"
        )),
        Event::BanInForce { .. } | Event::BanLifted { .. } => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventBus;

    #[tokio::test]
    async fn events_become_the_familiar_error_log_lines_and_a_lag_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let error_log = ErrorLog::open(dir.path()).unwrap();
        let bus = EventBus::new();
        let writer = tokio::spawn(write(bus.subscribe(), error_log.clone()));
        bus.publish(Event::Banned {
            client: "192.0.2.7".parse().unwrap(),
            source: "192.0.2.7".parse().unwrap(),
            prefix: 32,
            until_ms: 1,
            category: "http-auth-failure".into(),
            minutes: 30,
            by: Actor::Trigger,
            request: None,
        });
        bus.publish(Event::BanInForce { source: "192.0.2.7".parse().unwrap(), prefix: 32, until_ms: 1 });
        bus.publish(Event::ReloadRefused { errors: vec!["a: bad".into(), "b: worse".into()] });
        drop(bus);
        writer.await.unwrap();
        let text = std::fs::read_to_string(dir.path().join("error.log")).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "a ban in force is for the kernel mirror, not the log: {text}");
        assert!(lines[0].ends_with("192.0.2.7 banned for 30 minutes (http-auth-failure)"), "{text}");
        assert!(lines[1].ends_with("configuration reload refused, keeping the running configuration: a: bad; b: worse"), "{text}");
    }
}
