//! Portcullis: the secure internet edge of a UC / contact-center deployment.
//!
//! # Layout
//!
//! A module imports only from its own level or the levels below, and never in a cycle with
//! its peers (the architecture test, `tests/it/architecture.rs`, reads this map and checks
//! every file). `docs/architecture.md` explains the runtime, services and events.
//!
//! ```text
//! level 5  wiring      cli        clap verbs: serve, check, status, reload, … (admin client)
//!                      app        Config -> Runtime + services started in order -> Running;
//!                                 the reload loop and the background loops
//! level 4  front-ends  http       the HTTP edge: server (accept -> TLS -> h1/h2), pipeline
//!                                 (THE order), authenticate, tokens, proxying, route,
//!                                 upstream, forward, body, respond, edge_cache, static_files
//!                      admin      admin API and status page; reaches front ends only through
//!                                 the runtime's control handle
//!                      sip        the SIP federation edge: message layer, stateless proxy
//!                                 core, partner and next-hop connections
//! level 3  runtime     runtime    Runtime (config, store, shield, operate, metrics, logs,
//!                                 events), services with one drain signal, the shared accept
//!                                 loop, the listener registry, the front-end control handle
//! level 2  services    auth       edge authentication: Basic, JWT, edge tokens, rate control
//!                      protect    the shield: categories, windows, bans (418), exemptions,
//!                                 blocking.log for fail2ban, nftables kernel mirror
//!                      federation the SIP federation policy: lists, watch list, throttles,
//!                                 domains view, shared through the state store
//!                      operate    maintenance/drain, counts, peers, weight overrides, the web
//!                                 certificate's lifecycle (selection, install, CSR, expiry)
//! level 1  plumbing    net        bind, TLS profiles, idle timeout, h1_guard (smuggling
//!                                 refusal below hyper), canonical request view, fetch
//!                      cluster    StateStore trait + embedded (redb) and Redis implementations
//!                      telemetry  metrics (Prometheus), access.log, error.log, console
//!                      event      typed events and the broadcast bus subscribers listen on
//! level 0  foundation  config     TOML file -> typed Config; imports nothing from the crate
//!                      clock      wall-clock milliseconds, injectable for tests
//! ```
//!
//! A request's path through the edge is charted in `docs/request-lifecycle.md`; the
//! ordering itself lives only in [`http::pipeline`].

pub mod admin;
pub mod app;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod event;
pub mod federation;
pub mod http;
pub mod net;
pub mod operate;
pub mod protect;
pub mod runtime;
pub mod sip;
pub mod telemetry;
