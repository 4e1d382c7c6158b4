//! The one integration-test binary: real sockets on 127.0.0.1, in-process upstreams, the
//! edge started in-process from a real configuration file (and the real binary for CLI
//! tests).

#![allow(unreachable_pub, reason = "test helpers are pub for the test modules; nothing is exported")]
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test helpers fail the test loudly on any setup error")]

mod admin;
mod architecture;
mod auth;
mod certs;
mod cli;
mod cluster;
mod edge_cache;
mod firewall;
mod hostile;
mod jwt;
mod log_files;
mod log_ship;
mod nft_mirror;
mod openapi;
mod operate;
mod protocol_abuse;
mod proxy_http;
mod redteam;
mod shield;
mod sip;
mod sip_federation;
mod sip_outward;
mod sip_tls;
mod sip_tls_hops;
mod status_page;
mod support;
mod tls_scan;
mod tokens;
mod websocket;
