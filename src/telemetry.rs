//! Telemetry: Prometheus metrics, the access log, and process logging (console + error.log).
//!
//! Level 1 service: front ends record into it; the admin API reads from it.

pub mod access_log;
pub mod logging;
pub mod metrics;
pub mod names;
