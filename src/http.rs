//! The HTTP front end: accepting client connections (`server`), the ordered request
//! pipeline (`stack`), routing, upstream pools, header forwarding, WebSocket tunnels, the
//! static-directory backend, and the one map from failures to responses (`respond`).

pub mod body;
pub mod edge_cache;
pub mod forward;
pub mod respond;
pub mod route;
pub mod server;
pub mod stack;
pub mod static_files;
pub mod upstream;
