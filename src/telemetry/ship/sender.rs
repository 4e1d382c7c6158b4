//! The sender: connects to the syslog server over TLS ([`super::link`]: server verified against
//! `logging.ship.ca`, `client_cert` presented when set), delivers queued messages in order,
//! and reconnects forever with capped exponential backoff and jitter.
//!
//! `tls` (RFC 5425) has no acknowledgements, so "delivered" is decided here: a batch written
//! to the connection is taken off the queue only once the connection stayed up for
//! [`TLS_ACK_GRACE`] after it. The socket holds at most [`UNSENT_BYTES`] not yet sent, and
//! ends itself when sent bytes stay unacknowledged by the server's TCP for
//! [`UNACKNOWLEDGED_TIMEOUT`] (shorter than the grace): a connection still up after the
//! grace had the batch acknowledged by the server's kernel. A server that dies, restarts or
//! is cut off by the network within the grace makes us send the batch again (the server sees
//! a repeated sequenceId rather than a gap). Before the first message, a new connection must
//! survive [`PROBE`](super::link::PROBE): with TLS 1.3 a server that refuses our client
//! certificate says so only after the handshake has completed on our side.
//!
//! [`UNSENT_BYTES`]: super::link::UNSENT_BYTES
//! [`UNACKNOWLEDGED_TIMEOUT`]: super::link::UNACKNOWLEDGED_TIMEOUT
//!
//! `relp` is in [`super::relp`]. Failures go to `error.log` once per distinct message (and
//! `last_error` in status until the next success); nothing here panics on what the server
//! sends.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;

use super::link::{CLOSE_GRACE, ShipError, Stopped, connect, connected, probe, write};
use super::queue::{Position, QueueReader, Record};
use super::{Shipping, syslog};
use crate::config::ShipProtocol;
use crate::telemetry::logging::ErrorLog;

/// First pause before reconnecting ...
pub const MIN_BACKOFF: Duration = Duration::from_millis(200);
/// ... doubled after each failure up to this (each pause is drawn from its upper half).
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// `tls`: a written batch is delivered once the connection stayed up this long after it:
/// longer than [`UNACKNOWLEDGED_TIMEOUT`](super::link::UNACKNOWLEDGED_TIMEOUT), after which
/// the kernel ends a connection whose sent bytes the server did not acknowledge.
pub const TLS_ACK_GRACE: Duration = Duration::from_secs(7);
/// Messages per write (`tls`).
const BATCH: usize = 256;

/// Runs the sender until `stop` completes; a session in progress then closes politely
/// (within [`CLOSE_GRACE`]) so that what the server confirms is not sent again next time.
pub(super) async fn run(shipping: &Shipping, error_log: &ErrorLog, stop: impl std::future::Future<Output = ()>) {
    tokio::pin!(stop);
    let mut reader = shipping.queue.reader();
    let mut pause = MIN_BACKOFF;
    let mut opened: u64 = 0;
    let mut logged: Option<String> = None;
    loop {
        let delivered_before = shipping.queue.delivered();
        let connecting = tokio::select! {
            connecting = connect(shipping) => connecting,
            () = &mut stop => return,
        };
        let outcome = match connecting {
            Ok(stream) => {
                opened += 1;
                reader.rewind();
                match shipping.config.protocol {
                    ShipProtocol::Tls => tls_session(shipping, stream, &mut reader, opened, error_log, &mut logged, stop.as_mut()).await,
                    ShipProtocol::Relp => {
                        super::relp::session(shipping, stream, &mut reader, opened, error_log, &mut logged, stop.as_mut()).await
                    }
                }
            }
            Err(error) => Err(error),
        };
        shipping.stats.connected.store(false, Ordering::Relaxed);
        let error = match outcome {
            Ok(Stopped) => return,
            Err(error) => error,
        };
        let text = error.to_string();
        *shipping.stats.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(text.clone());
        if logged.as_deref() != Some(text.as_str()) {
            error_log.error(&format!("log shipping: {text}; queued lines stay queued and are sent once it works again"));
            logged = Some(text);
        }
        // Only a session that delivered something starts the back-off afresh: a server that
        // accepts and then drops every connection (or refuses one message for ever) would
        // otherwise be reconnected to five times a second, each time logged.
        if shipping.queue.delivered() > delivered_before {
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

/// One RFC 5425 connection: frames from the queue, in batches, until it breaks (the error
/// says why) or `stop` completes.
async fn tls_session(
    shipping: &Shipping,
    stream: TlsStream<TcpStream>,
    reader: &mut QueueReader,
    opened: u64,
    error_log: &ErrorLog,
    logged: &mut Option<String>,
    mut stop: Pin<&mut impl std::future::Future<Output = ()>>,
) -> Result<Stopped, ShipError> {
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
                return Err(ShipError::Lost(address, why));
            }
            () = stop.as_mut() => {
                // Going away: close_notify and FIN. A server that closes in turn has read all
                // we sent (a server that had not would reset the connection), so the batches
                // still in their grace are delivered.
                let closed = async {
                    write_half.shutdown().await?;
                    while read.read(&mut sink).await? > 0 {}
                    Ok::<(), std::io::Error>(())
                };
                let read_all = match tokio::time::timeout(CLOSE_GRACE, closed).await {
                    Ok(Ok(())) => true,
                    Ok(Err(e)) => e.kind() == std::io::ErrorKind::UnexpectedEof,
                    Err(_) => false,
                };
                if read_all && let Some(&(_, end, _)) = unconfirmed.back() {
                    shipping.queue.ack(end);
                }
                return Ok(Stopped);
            }
            _ = tick.tick() => confirm(shipping, &mut unconfirmed),
            next = reader.next(BATCH, &mut records) => {
                next?;
                frames.clear();
                for record in &records {
                    syslog::frame(&mut frames, &record.payload);
                }
                write(&mut write_half, &frames, &address).await?;
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
fn confirm(shipping: &Shipping, unconfirmed: &mut VecDeque<(Instant, Position, u64)>) {
    let mut upto = None;
    while let Some((at, end, _)) = unconfirmed.front() {
        if at.elapsed() < TLS_ACK_GRACE {
            break;
        }
        upto = Some(*end);
        unconfirmed.pop_front();
    }
    if let Some(end) = upto {
        shipping.queue.ack(end);
    }
}
