//! Portcullis: the secure internet edge of a UC / contact-center deployment.
//!
//! # Layout
//!
//! Levels import only from levels below them.
//!
//! ```text
//! level 3  wiring     cli      clap verbs: serve, check, status, reload (admin client)
//!                     app      Config -> bound listeners + admin + store + reload loop
//!                     config   TOML file -> typed Config, every error with key path + hint
//! level 2  front ends proxy    HTTP: server (accept, TLS, h1/h2), stack (THE pipeline order),
//!                              route, upstream (pools, failover, health), forward (headers),
//!                              body, respond (error -> status), static_files
//!                     admin    admin API: /health, /metrics, /api/v1/status, /api/v1/reload
//! level 1  services   net      bind, server TLS + self-signed certs, idle timeout,
//!                              h1_guard (request-smuggling refusal below hyper), fetch
//!                     cluster  StateStore trait + embedded (redb) implementation
//!                     protect  the shield: categories, exact windows, bans (418), exemptions,
//!                              blocking.log for fail2ban, nftables kernel mirror
//!                     operate  maintenance/drain, counts, service states, weight overrides,
//!                              web certificate checks, CSRs, expiry notice
//!                     auth     edge authentication: Basic (validate once, HMAC cache,
//!                              single flight, user list, users_file), JWT (HS/JWKS),
//!                              rate control
//!                     telemetry metrics (Prometheus), access.log, error.log, console
//! ```
//!
//! A request's path through the edge is charted in `docs/request-lifecycle.md`; the
//! ordering itself lives only in [`proxy::stack`].

pub mod admin;
pub mod app;
pub mod auth;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod net;
pub mod operate;
pub mod protect;
pub mod proxy;
pub mod telemetry;
