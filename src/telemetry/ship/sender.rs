//! The sender: connects to the syslog server over TLS (server verified against
//! `logging.ship.ca`, `client_cert` presented when set), delivers queued messages in order,
//! and reconnects forever with capped exponential backoff and jitter.
//!
//! `tls` (RFC 5425) has no acknowledgements, so "delivered" is decided here: a batch written
//! to the connection is taken off the queue only once the connection stayed up for
//! [`TLS_ACK_GRACE`] after it (a receiver that closes or dies within that time makes us send
//! the batch again; the server sees a repeated sequenceId rather than a gap). Before the
//! first message, a new connection must survive [`PROBE`]: with TLS 1.3 a server that refuses
//! our client certificate says so only after the handshake has completed on our side.
//!
//! `relp` is in [`super::relp`]. Failures go to `error.log` once per distinct message (and
//! `last_error` in status until the next success); nothing here panics on what the server
//! sends.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::queue::{Position, QueueReader, Record};
use super::{Shipping, syslog};
use crate::config::ShipProtocol;
use crate::net::tls::client::{ClientProfile, ServerTrust};
use crate::telemetry::logging::ErrorLog;

/// First pause before reconnecting ...
pub const MIN_BACKOFF: Duration = Duration::from_millis(200);
/// ... doubled after each failure up to this (each pause is drawn from its upper half).
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Time allowed to connect and complete the TLS handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A new connection must stay open this long before anything is sent on it.
pub const PROBE: Duration = Duration::from_millis(300);
/// `tls`: a written batch is delivered once the connection stayed up this long after it.
pub const TLS_ACK_GRACE: Duration = Duration::from_secs(1);
/// A write that takes longer than this means the connection is dead.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Messages per write (`tls`).
const BATCH: usize = 256;

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
        "{0} closed the connection right after the TLS handshake: it refused our client certificate (logging.ship.client_cert) or this client"
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

/// Runs the sender until `stop` completes.
pub(super) async fn run(shipping: &Shipping, error_log: &ErrorLog, stop: impl std::future::Future<Output = ()>) {
    tokio::pin!(stop);
    let mut reader = shipping.queue.reader();
    let mut pause = MIN_BACKOFF;
    let mut opened: u64 = 0;
    let mut logged: Option<String> = None;
    loop {
        let session = async {
            let stream = connect(shipping).await?;
            opened += 1;
            reader.rewind();
            match shipping.config.protocol {
                ShipProtocol::Tls => tls_session(shipping, stream, &mut reader, opened, error_log, &mut logged).await,
                ShipProtocol::Relp => super::relp::session(shipping, stream, &mut reader, opened, error_log, &mut logged).await,
            }
        };
        let (healthy, error) = tokio::select! {
            outcome = session => outcome.map_or_else(|e| (false, e), |(healthy, e)| (healthy, e)),
            () = &mut stop => {
                shipping.stats.connected.store(false, Ordering::Relaxed);
                return;
            }
        };
        shipping.stats.connected.store(false, Ordering::Relaxed);
        let text = error.to_string();
        *shipping.stats.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(text.clone());
        if logged.as_deref() != Some(text.as_str()) {
            error_log.error(&format!("log shipping: {text}; queued lines stay queued and are sent once it works again"));
            logged = Some(text);
        }
        if healthy {
            pause = MIN_BACKOFF;
        }
        let jittered = pause.mul_f64(0.5 + rand::random::<f64>() * 0.5);
        tokio::select! {
            () = tokio::time::sleep(jittered) => {}
            () = &mut stop => return,
        }
        pause = (pause * 2).min(MAX_BACKOFF);
    }
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
    tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp))
        .await
        .map_err(|_| ShipError::Handshake(address.clone(), std::io::ErrorKind::TimedOut.into()))?
        .map_err(|e| ShipError::Handshake(address, e))
}

/// Waits [`PROBE`] on a fresh connection: an answer or a close in that time means the server
/// refused us (RFC 5425 servers never speak; RELP servers speak only when asked).
pub(super) async fn probe<R: AsyncRead + Unpin>(read: &mut R, address: &str) -> Result<(), ShipError> {
    let mut byte = [0u8; 1];
    match tokio::time::timeout(PROBE, read.read(&mut byte)).await {
        Err(_) => Ok(()),
        Ok(Ok(0)) => Err(ShipError::RefusedAfterHandshake(address.to_string())),
        Ok(Ok(_)) => Err(ShipError::Lost(address.to_string(), "the server sent data unasked".into())),
        Ok(Err(e)) => Err(ShipError::Handshake(address.to_string(), e)),
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

/// One RFC 5425 connection: frames from the queue, in batches, until it breaks. Returns
/// whether it was healthy (delivered) and why it ended.
async fn tls_session(
    shipping: &Shipping,
    stream: TlsStream<TcpStream>,
    reader: &mut QueueReader,
    opened: u64,
    error_log: &ErrorLog,
    logged: &mut Option<String>,
) -> Result<(bool, ShipError), ShipError> {
    let address = shipping.address();
    let (mut read, mut write_half) = tokio::io::split(stream);
    probe(&mut read, &address).await?;
    connected(shipping, opened, error_log, logged);
    // Written, not yet past the grace: (when written, the position after the batch, count).
    let mut unconfirmed: VecDeque<(Instant, Position, u64)> = VecDeque::new();
    let mut records: Vec<Record> = Vec::with_capacity(BATCH);
    let mut frames = Vec::with_capacity(64 * 1024);
    let mut sink = [0u8; 512];
    let mut tick = tokio::time::interval(TLS_ACK_GRACE / 4);
    loop {
        tokio::select! {
            biased;
            read_result = read.read(&mut sink) => {
                let why = match read_result {
                    Ok(0) => "closed by the server".to_string(),
                    Ok(_) => "the server sent data (RFC 5425 servers never do)".to_string(),
                    Err(e) => e.to_string(),
                };
                return Ok((true, ShipError::Lost(address, why)));
            }
            _ = tick.tick() => confirm(shipping, &mut unconfirmed)?,
            next = reader.next(BATCH, &mut records) => {
                next?;
                frames.clear();
                for record in &records {
                    syslog::frame(&mut frames, &record.payload);
                }
                if let Err(error) = write(&mut write_half, &frames, &address).await {
                    return Ok((true, error));
                }
                if let Some(last) = records.last() {
                    shipping.stats.sent.fetch_add(records.len() as u64, Ordering::Relaxed);
                    unconfirmed.push_back((Instant::now(), last.end, records.len() as u64));
                }
                records.clear();
            }
        }
    }
}

/// Takes batches written more than [`TLS_ACK_GRACE`] ago off the queue.
fn confirm(shipping: &Shipping, unconfirmed: &mut VecDeque<(Instant, Position, u64)>) -> Result<(), ShipError> {
    let mut upto = None;
    while let Some((at, end, _)) = unconfirmed.front() {
        if at.elapsed() < TLS_ACK_GRACE {
            break;
        }
        upto = Some(*end);
        unconfirmed.pop_front();
    }
    if let Some(end) = upto {
        shipping.queue.ack(end)?;
    }
    Ok(())
}
