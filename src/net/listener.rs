//! Binding listening sockets: address reuse (fast restarts), `IPV6_V6ONLY` on IPv6 sockets
//! (so `0.0.0.0:8445` and `[::]:8445` can both be configured), and a deep accept backlog.

use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;

/// Accept backlog for every listener.
pub const BACKLOG: i32 = 4096;

/// Binds a TCP listener on `address`.
pub fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if address.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    socket.listen(BACKLOG)?;
    TcpListener::from_std(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ipv4_and_ipv6_listeners_can_share_a_port() {
        let v4 = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = v4.local_addr().unwrap().port();
        // ::1 may be missing in some sandboxes; only assert when IPv6 loopback exists.
        if let Ok(v6) = bind(format!("[::1]:{port}").parse().unwrap()) {
            assert_eq!(v6.local_addr().unwrap().port(), port);
        }
        assert!(bind(format!("127.0.0.1:{port}").parse().unwrap()).is_err(), "second bind on the same v4 address must fail");
    }
}
