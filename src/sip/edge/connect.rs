//! Connections the SIP edge opens itself — to its internal next hop and to partner edges:
//! the host resolved to A/AAAA (no SRV), its addresses tried in turn (at most
//! [`MAX_ADDRESSES`]), each TCP connect and each TLS handshake bounded in time; over TLS the
//! server's certificate is verified for the name given (the next hop's host, a partner's
//! host or its allow entry's edge FQDN) by the connector's trust.

use std::net::SocketAddr;
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::link::Wire;

/// Most resolved addresses tried for one connection.
pub(super) const MAX_ADDRESSES: usize = 8;
/// How long a TLS handshake with a server may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long opening one connection may take in all (resolving, every address, handshakes).
pub(super) const CONNECT_BUDGET: Duration = Duration::from_secs(10);

/// An open connection.
pub(super) struct Connected {
    pub stream: Wire,
    pub peer: SocketAddr,
    /// The DNS names of the server's certificate (TLS only).
    pub peer_names: Option<Vec<String>>,
}

/// Why no connection could be opened (the last address's reason).
#[derive(Debug, thiserror::Error)]
pub(super) enum ConnectError {
    #[error("cannot resolve {0}")]
    Resolve(String),
    #[error("{0} is not a name a certificate can be checked for")]
    ServerName(String),
    #[error("connect to {0}: {1}")]
    Tcp(SocketAddr, String),
    #[error("TLS handshake with {0}: {1}")]
    Handshake(SocketAddr, String),
    #[error("no connection within {0:?}")]
    Budget(Duration),
}

/// A connection to `host`:`port` (over TLS with `tls`: the connector and the name the
/// certificate must carry), the first of its addresses that answers, within
/// [`CONNECT_BUDGET`].
pub(super) async fn connect(host: &str, port: u16, tls: Option<(TlsConnector, &str)>) -> Result<Connected, ConnectError> {
    tokio::time::timeout(CONNECT_BUDGET, attempt(host, port, tls)).await.unwrap_or(Err(ConnectError::Budget(CONNECT_BUDGET)))
}

async fn attempt(host: &str, port: u16, tls: Option<(TlsConnector, &str)>) -> Result<Connected, ConnectError> {
    let name = match &tls {
        Some((_, name)) => Some(ServerName::try_from(name.to_string()).map_err(|_| ConnectError::ServerName(name.to_string()))?),
        None => None,
    };
    let addresses: Vec<SocketAddr> = match tokio::time::timeout(super::CONNECT_TIMEOUT, tokio::net::lookup_host((host, port))).await {
        Ok(Ok(addresses)) => addresses.take(MAX_ADDRESSES).collect(),
        _ => return Err(ConnectError::Resolve(host.to_string())),
    };
    let mut failure = ConnectError::Resolve(host.to_string());
    for address in addresses {
        let tcp = match tokio::time::timeout(super::CONNECT_TIMEOUT, TcpStream::connect(address)).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(error)) => {
                failure = ConnectError::Tcp(address, error.to_string());
                continue;
            }
            Err(_) => {
                failure = ConnectError::Tcp(address, "timed out".to_string());
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let (Some((connector, _)), Some(name)) = (&tls, &name) else {
            return Ok(Connected { stream: Wire::Tcp(tcp), peer: address, peer_names: None });
        };
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, connector.connect(name.clone(), tcp)).await {
            Ok(Ok(stream)) => {
                let names = stream.get_ref().1.peer_certificates().and_then(|chain| chain.first()).map(super::certificate_names);
                return Ok(Connected { stream: Wire::Tls(Box::new(stream)), peer: address, peer_names: names });
            }
            Ok(Err(error)) => failure = ConnectError::Handshake(address, error.to_string()),
            Err(_) => failure = ConnectError::Handshake(address, "timed out".to_string()),
        }
    }
    Err(failure)
}
