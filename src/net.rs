//! Network plumbing below HTTP: binding sockets, server TLS built from profiles (the
//! certificate to serve, ALPN, client certificates checked against a CA bundle and CRLs), the
//! stream wrappers every client connection passes through (idle timeout, HTTP/1 framing
//! guard against request smuggling), and the canonical request view (path, authority).

pub mod canonical;
pub mod fetch;
pub mod h1_guard;
pub mod idle;
pub mod listener;
pub mod percent;
pub mod tls;
