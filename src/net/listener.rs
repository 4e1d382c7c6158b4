//! Binding listening sockets: address reuse (fast restarts), `IPV6_V6ONLY` on IPv6 sockets
//! (so `0.0.0.0:8445` and `[::]:8445` can both be configured), a deep accept backlog, and
//! groups of `SO_REUSEPORT` sockets on one address for per-core accept loops — guarded so a
//! second edge on the same port still fails to start instead of silently sharing it.

use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;

/// Accept backlog for every listener.
pub const BACKLOG: i32 = 4096;

/// Binds a TCP listener on `address`.
pub fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = socket(address)?;
    socket.bind(&address.into())?;
    socket.listen(BACKLOG)?;
    TcpListener::from_std(socket.into())
}

/// Binds `count` listening sockets on `address` that share its connections (`SO_REUSEPORT`:
/// the kernel hashes each new connection to one of them). Returned unregistered, so each can
/// be registered with the runtime that accepts on it. One socket needs no port sharing.
///
/// `SO_REUSEPORT` would let a second process of the same user join the group unnoticed, so
/// the port is first claimed by a socket without it: that bind fails when anything (another
/// edge's group included) holds the port, and anyone binding later without the option fails
/// against our group. It also turns port 0 into the concrete port the group shares. Once the
/// group listens, the kernel's list of listeners on the address must show ours alone: a
/// process that joined in the moment between the claim's close and the group's binds fails
/// the bind too.
pub fn bind_group(address: SocketAddr, count: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    let claim = socket(address)?;
    claim.bind(&address.into())?;
    if count <= 1 {
        claim.listen(BACKLOG)?;
        return Ok(vec![claim.into()]);
    }
    let address = claim.local_addr()?.as_socket().unwrap_or(address);
    drop(claim);
    let group: Vec<std::net::TcpListener> = (0..count)
        .map(|_| {
            let socket = socket(address)?;
            socket.set_reuse_port(true)?;
            socket.bind(&address.into())?;
            socket.listen(BACKLOG)?;
            Ok(socket.into())
        })
        .collect::<std::io::Result<_>>()?;
    // Between the claim's close and the group's binds another process of this user could
    // have joined with `SO_REUSEPORT`: the kernel's list of listeners on the address must
    // show ours alone.
    if let Some(foreign) = foreign_listeners(address, &group).filter(|n| *n > 0) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!("{address}: {foreign} listening socket(s) of another process share the port (SO_REUSEPORT)"),
        ));
    }
    Ok(group)
}

/// How many sockets listening on exactly `address` are not among `ours` (from the kernel's
/// `/proc/net/tcp` or `tcp6` of this network namespace); `None` when that cannot be read.
fn foreign_listeners(address: SocketAddr, ours: &[std::net::TcpListener]) -> Option<usize> {
    use std::os::fd::AsRawFd as _;
    let inodes: Vec<String> = ours
        .iter()
        .filter_map(|l| std::fs::read_link(format!("/proc/self/fd/{}", l.as_raw_fd())).ok())
        .filter_map(|link| link.to_str()?.strip_prefix("socket:[")?.strip_suffix(']').map(str::to_string))
        .collect();
    if inodes.len() != ours.len() {
        return None;
    }
    let table = std::fs::read_to_string(if address.is_ipv4() { "/proc/net/tcp" } else { "/proc/net/tcp6" }).ok()?;
    let wanted = kernel_address(address);
    let (wanted_ip, port) = wanted.split_once(':')?;
    let any = "0".repeat(wanted_ip.len());
    // A listener on the same port overlaps ours when either is on the unspecified address
    // (a more specific socket takes the connections to its address from ours).
    let overlaps = |ip: &str| ip.eq_ignore_ascii_case(wanted_ip) || wanted_ip == any || ip == any;
    let foreign = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
            let (ip, row_port) = fields.get(1)?.split_once(':')?;
            (fields.len() > 9 && fields[3] == "0A" && row_port.eq_ignore_ascii_case(port) && overlaps(ip)).then(|| fields[9].to_string())
        })
        .filter(|inode| !inodes.contains(inode))
        .count();
    Some(foreign)
}

/// `address` as `/proc/net/tcp*` writes a local address: each 32-bit word of the address as
/// the machine reads it, in hex, then the port.
fn kernel_address(address: SocketAddr) -> String {
    let words: Vec<String> = match address.ip() {
        std::net::IpAddr::V4(ip) => vec![format!("{:08X}", u32::from_ne_bytes(ip.octets()))],
        std::net::IpAddr::V6(ip) => {
            ip.octets().chunks_exact(4).map(|word| format!("{:08X}", u32::from_ne_bytes([word[0], word[1], word[2], word[3]]))).collect()
        }
    };
    format!("{}:{:04X}", words.concat(), address.port())
}

/// A non-blocking TCP socket for `address`'s family, with address reuse and `IPV6_V6ONLY`.
fn socket(address: SocketAddr) -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if address.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    Ok(socket)
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

    #[test]
    fn a_group_shares_one_port_and_still_refuses_a_second_edge() {
        let group = bind_group("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        assert_eq!(group.len(), 3);
        let port = group[0].local_addr().unwrap().port();
        assert!(group.iter().all(|l| l.local_addr().unwrap().port() == port), "port 0 became one port for the whole group");
        let address: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        assert!(bind_group(address, 3).is_err(), "a second group on a held port must fail, not join");
        assert!(bind_group(address, 1).is_err(), "a single socket on a held port must fail");
        // Every socket of the group takes connections.
        let mut accepted = [false; 3];
        for _ in 0..200 {
            let _client = std::net::TcpStream::connect(address).unwrap();
            for (i, l) in group.iter().enumerate() {
                l.set_nonblocking(true).unwrap();
                if l.accept().is_ok() {
                    accepted[i] = true;
                }
            }
            if accepted.iter().all(|a| *a) {
                break;
            }
        }
        assert_eq!(accepted, [true; 3], "the kernel spreads connections over the group");
    }

    #[test]
    fn a_socket_that_joined_the_group_from_elsewhere_is_seen() {
        let group = bind_group("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        let address = group[0].local_addr().unwrap();
        assert_eq!(foreign_listeners(address, &group), Some(0), "ours alone");
        // What another process of this user could do in the window after the claim closed.
        let intruder = socket(address).unwrap();
        intruder.set_reuse_port(true).unwrap();
        intruder.bind(&address.into()).unwrap();
        intruder.listen(BACKLOG).unwrap();
        assert_eq!(foreign_listeners(address, &group), Some(1), "the intruder is counted");
        // The same port on another specific address is not ours to judge.
        let other = bind_group(format!("127.0.0.2:{}", address.port()).parse().unwrap(), 2).unwrap();
        assert_eq!(foreign_listeners(other[0].local_addr().unwrap(), &other), Some(0));
        // A more specific address beside our unspecified one takes its connections: counted.
        let wide = bind_group("0.0.0.0:0".parse().unwrap(), 2).unwrap();
        let wide_address = wide[0].local_addr().unwrap();
        assert_eq!(foreign_listeners(wide_address, &wide), Some(0));
        let narrow: SocketAddr = format!("127.0.0.1:{}", wide_address.port()).parse().unwrap();
        let specific = socket(narrow).unwrap();
        specific.set_reuse_port(true).unwrap();
        specific.bind(&narrow.into()).unwrap();
        specific.listen(BACKLOG).unwrap();
        assert_eq!(foreign_listeners(wide_address, &wide), Some(1), "the more specific intruder is counted");
        let v6 = bind_group("[::1]:0".parse().unwrap(), 2);
        if let Ok(v6) = v6 {
            let address = v6[0].local_addr().unwrap();
            assert_eq!(foreign_listeners(address, &v6), Some(0));
            let intruder = socket(address).unwrap();
            intruder.set_reuse_port(true).unwrap();
            intruder.bind(&address.into()).unwrap();
            intruder.listen(BACKLOG).unwrap();
            assert_eq!(foreign_listeners(address, &v6), Some(1), "IPv6 addresses are read too");
        }
    }
}
