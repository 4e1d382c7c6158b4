//! The HTTP front end: accepting client connections (`server`), the ordered request
//! pipeline (`pipeline` — the order only; each step in its own file: `facts`, `view`,
//! `maintenance`, `tokens`, `authenticate`, `proxying`), the routing generation (`gateway`),
//! routing, upstream pools, header forwarding, the edge caches, the static-directory
//! backend, and the one map from failures to responses (`respond`).

pub mod authenticate;
pub mod body;
pub mod cancels;
pub mod edge_cache;
pub mod facts;
pub mod forward;
pub mod gateway;
pub mod maintenance;
pub mod pipeline;
pub mod proxying;
pub mod record;
pub mod respond;
pub mod route;
pub mod server;
pub mod static_files;
pub mod tokens;
pub mod tracked;
pub mod upstream;
pub mod view;
pub mod wire;
