//! Telemetry: Prometheus metrics, the access log, and process logging (console + error.log,
//! which also writes what the event bus carries: `event_log`).
//!
//! Level 1 service: front ends record into it; the admin API reads from it.

pub mod access_log;
pub mod event_log;
pub mod logging;
pub mod metrics;
pub mod names;
