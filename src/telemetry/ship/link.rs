//! The connection to the syslog server both transports share: TCP, then TLS with the server
//! verified against `logging.ship.ca` (files read anew on every attempt, so a fixed file
//! takes effect without a restart) and `client_cert` presented when set; what each failure
//! means (`ShipError`); bounded writes; and the bookkeeping of a healthy connection. The
//! socket ends itself when sent data stays unacknowledged ([`UNACKNOWLEDGED_TIMEOUT`]) and
//! holds little unsent data ([`UNSENT_BYTES`]): the `tls` sender's delivery grace rests on
//! both.

use std::sync::atomic::Ordering;
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::Shipping;
use crate::net::tls::client::{ClientProfile, ServerTrust};
use crate::telemetry::logging::ErrorLog;

/// Time allowed to connect and complete the TLS handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A new connection must stay open this long before anything is sent on it.
pub const PROBE: Duration = Duration::from_millis(300);
/// A write that takes longer than this means the connection is dead.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Sent bytes the server's TCP has not acknowledged after this long end the connection
/// (`TCP_USER_TIMEOUT`): a server cut off by the network is noticed in seconds, not after
/// the kernel's quarter of an hour of retransmissions.
pub const UNACKNOWLEDGED_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes written but not yet sent that the socket holds at most (`TCP_NOTSENT_LOWAT`): what
/// we write goes onto the wire promptly, so [`UNACKNOWLEDGED_TIMEOUT`] covers it.
pub const UNSENT_BYTES: u32 = 128 * 1024;

/// On stop, how long a session may wait for the server to confirm what it has.
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// A session that ended because the edge stops.
#[derive(Debug)]
pub(super) struct Stopped;

/// Why a connection ended or could not be made.
#[derive(Debug, thiserror::Error)]
pub(super) enum ShipError {
    /// The TLS files could not be used (`ca`, `client_cert`, `client_key`).
    #[error("TLS files: {0}")]
    Files(#[from] crate::net::tls::TlsError),
    /// The name resolves to nothing, or the port refuses.
    #[error("cannot connect to {0}: {1}")]
    Connect(String, std::io::Error),
    /// The server's certificate was refused, or the server refused ours (TLS 1.2).
    #[error("TLS handshake with {0} failed: {1}")]
    Handshake(String, std::io::Error),
    /// The server closed right after the handshake (TLS 1.3 way of refusing a client
    /// certificate), or sent something where RFC 5425 has the server silent.
    #[error(
        "{0} closed the connection during or right after the TLS handshake: it refused our client certificate (logging.ship.client_cert) or this client"
    )]
    RefusedAfterHandshake(String),
    /// The connection broke while delivering.
    #[error("connection to {0} lost: {1}")]
    Lost(String, String),
    /// The RELP server answered something that is not RELP, or refused a message.
    #[error("{0} (RELP): {1}")]
    Relp(String, String),
    /// The disk queue could not be read or its cursor written.
    #[error("queue: {0}")]
    Queue(#[from] std::io::Error),
}

/// Marks the connection healthy: status, counters, and a line in `error.log` when it follows
/// a reported failure.
pub(super) fn connected(shipping: &Shipping, opened: u64, error_log: &ErrorLog, logged: &mut Option<String>) {
    shipping.stats.connected.store(true, Ordering::Relaxed);
    if opened > 1 {
        shipping.stats.reconnects.fetch_add(1, Ordering::Relaxed);
    }
    *shipping.stats.last_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
    if logged.take().is_some() {
        error_log.warn(&format!(
            "log shipping: connected to {} again; sending {} queued line(s)",
            shipping.address(),
            shipping.queue.queued()
        ));
    }
}

/// A TLS connection to the server, the server verified (files read anew on every attempt, so
/// a fixed file takes effect without a restart).
pub(super) async fn connect(shipping: &Shipping) -> Result<TlsStream<TcpStream>, ShipError> {
    let config = &shipping.config;
    let address = shipping.address();
    let profile = ClientProfile { trust: ServerTrust::Ca(config.ca.clone()), crl: None, identity: config.client_identity.clone() };
    let connector = TlsConnector::from(profile.client_config()?);
    let name = ServerName::try_from(config.server_name.clone())
        .map_err(|e| ShipError::Handshake(address.clone(), std::io::Error::other(e.to_string())))?;
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((config.host.as_str(), config.port)))
        .await
        .map_err(|_| ShipError::Connect(address.clone(), std::io::ErrorKind::TimedOut.into()))?
        .map_err(|e| ShipError::Connect(address.clone(), e))?;
    let _ = tcp.set_nodelay(true);
    let socket = socket2::SockRef::from(&tcp);
    let _ = socket.set_tcp_user_timeout(Some(UNACKNOWLEDGED_TIMEOUT));
    let _ = socket.set_tcp_notsent_lowat(UNSENT_BYTES);
    tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp))
        .await
        .map_err(|_| ShipError::Handshake(address.clone(), std::io::ErrorKind::TimedOut.into()))?
        .map_err(|e| handshake_error(address, e))
}

/// Says what a failed handshake most likely means: our trust (`ca`, `server_name`) refused
/// the server, or the server refused us (it closes mid-handshake when it does not accept
/// our client certificate).
fn handshake_error(address: String, error: std::io::Error) -> ShipError {
    let text = error.to_string();
    if error.kind() == std::io::ErrorKind::UnexpectedEof || text.contains("close_notify") {
        return ShipError::RefusedAfterHandshake(address);
    }
    if text.contains("invalid peer certificate") {
        let hint = format!("{text} (the server's certificate must chain to logging.ship.ca and name logging.ship.server_name)");
        return ShipError::Handshake(address, std::io::Error::other(hint));
    }
    ShipError::Handshake(address, error)
}

/// Waits [`PROBE`] on a fresh connection: an answer or a close in that time means the server
/// refused us (RFC 5425 servers never speak; RELP servers speak only when asked).
pub(super) async fn probe<R: AsyncRead + Unpin>(read: &mut R, address: &str) -> Result<(), ShipError> {
    let mut byte = [0u8; 1];
    match tokio::time::timeout(PROBE, read.read(&mut byte)).await {
        Err(_) => Ok(()),
        Ok(Ok(0)) => Err(ShipError::RefusedAfterHandshake(address.to_string())),
        Ok(Ok(_)) => Err(ShipError::Lost(address.to_string(), "the server sent data unasked".into())),
        Ok(Err(e)) => Err(handshake_error(address.to_string(), e)),
    }
}

/// Writes `bytes` within [`WRITE_TIMEOUT`].
pub(super) async fn write<W: AsyncWrite + Unpin>(write: &mut W, bytes: &[u8], address: &str) -> Result<(), ShipError> {
    let done = async {
        write.write_all(bytes).await?;
        write.flush().await
    };
    match tokio::time::timeout(WRITE_TIMEOUT, done).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(ShipError::Lost(address.to_string(), e.to_string())),
        Err(_) => Err(ShipError::Lost(address.to_string(), "write timed out".into())),
    }
}
