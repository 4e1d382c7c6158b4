//! Telemetry: Prometheus metrics, the access log, process logging (console + error.log,
//! which also writes what the event bus carries: `event_log`), and log shipping to a
//! central syslog server (`ship`).
//!
//! Level 1 service: front ends record into it; the admin API reads from it.

pub mod access_log;
pub mod event_log;
pub mod logging;
pub mod metrics;
pub mod names;
pub mod outbox;
pub mod ship;
