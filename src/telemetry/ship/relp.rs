//! A small RELP client (the Reliable Event Logging Protocol of rsyslog's `imrelp`), over the
//! sender's TLS connection: `open` with our offers, then one `syslog` command per message,
//! each answered `rsp 200 OK` by the server once it has taken the message; a message leaves
//! the queue only then. Up to [`WINDOW`] messages are outstanding; after a broken connection
//! the unanswered ones are sent again (so none is lost; the server may see one twice, with
//! the same sequenceId).
//!
//! Frame: `TXNR SP COMMAND SP DATALEN [SP DATA] LF`; transaction numbers run from 1 to
//! 999,999,999 and wrap. The parser caps every field ([`MAX_FRAME_DATA`]) and never panics on
//! what the server sends; anything unexpected ends the session (and the messages are sent
//! again on the next one).

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Duration;

use std::os::fd::AsFd;
use std::pin::Pin;

use bytes::{Buf, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;

use super::Shipping;
use super::link::{CLOSE_GRACE, ShipError, Stopped, connected, write};
use super::queue::{Position, QueueReader, Record};
use crate::telemetry::logging::ErrorLog;

/// Messages sent and not yet acknowledged, at most.
pub const WINDOW: usize = 1024;
/// Free window slots that make a new write when some messages are still outstanding.
const SEND_WHEN_FREE: usize = WINDOW / 2;
/// The pause between two reads of the server's answers while messages are outstanding.
const READ_PACE: Duration = Duration::from_millis(1);
/// Largest DATA of a frame from the server (answers are short).
pub const MAX_FRAME_DATA: usize = 64 * 1024;
/// An outstanding message unanswered this long means the session is dead.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest transaction number; the next is 1.
const MAX_TXNR: u32 = 999_999_999;

/// One frame from the server, borrowed from the read buffer.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Frame<'a> {
    pub(super) txnr: u32,
    pub(super) command: &'a str,
    pub(super) data: &'a [u8],
}

/// The frame at the start of `buf` and its length; `Ok(None)` when more bytes are needed.
pub(super) fn parse_frame(buf: &[u8]) -> Result<Option<(Frame<'_>, usize)>, String> {
    let mut at = 0;
    // One space- or LF-terminated field of at most `max` bytes that pass `allowed`.
    let mut field = |max: usize, what: &str, allowed: fn(u8) -> bool| -> Result<Option<(&[u8], u8)>, String> {
        let start = at;
        loop {
            let Some(&b) = buf.get(at) else { return Ok(None) };
            if b == b' ' || b == b'\n' {
                at += 1;
                return Ok(Some((&buf[start..at - 1], b)));
            }
            if !allowed(b) || at - start >= max {
                return Err(format!("bad {what} in a frame from the server"));
            }
            at += 1;
        }
    };
    let malformed = || "malformed frame from the server".to_string();
    let number = |digits: &[u8]| digits.iter().try_fold(0u32, |n, d| n.checked_mul(10)?.checked_add(u32::from(d - b'0')));
    let Some((txnr, sep)) = field(9, "transaction number", |b| b.is_ascii_digit())? else { return Ok(None) };
    if sep != b' ' || txnr.is_empty() {
        return Err(malformed());
    }
    let Some((command, sep)) = field(32, "command", |b| b.is_ascii_alphabetic())? else { return Ok(None) };
    if sep != b' ' || command.is_empty() {
        return Err(malformed());
    }
    let Some((len, sep3)) = field(9, "data length", |b| b.is_ascii_digit())? else { return Ok(None) };
    if len.is_empty() {
        return Err(malformed());
    }
    let txnr = number(txnr).ok_or_else(|| "bad transaction number".to_string())?;
    let len = number(len).ok_or_else(|| "bad data length".to_string())? as usize;
    // Letters only (checked above), so this never fails.
    let command = std::str::from_utf8(command).map_err(|_| malformed())?;
    if len > MAX_FRAME_DATA {
        return Err(format!("frame of {len} bytes from the server (more than {MAX_FRAME_DATA})"));
    }
    if len == 0 {
        // `0 serverclose 0\n`: the length ends the frame.
        if sep3 != b'\n' {
            return Err("frame without its trailer".into());
        }
        return Ok(Some((Frame { txnr, command, data: &[] }, at)));
    }
    if sep3 != b' ' {
        return Err(malformed());
    }
    let end = at + len;
    match buf.get(end) {
        None => Ok(None),
        Some(b'\n') => Ok(Some((Frame { txnr, command, data: &buf[at..end] }, end + 1))),
        Some(_) => Err("frame without its trailer".into()),
    }
}

/// Appends the frame of a command.
pub(super) fn push_frame(out: &mut Vec<u8>, txnr: u32, command: &str, data: &[u8]) {
    let _ = std::io::Write::write_fmt(out, format_args!("{txnr} {command} {}", data.len()));
    if !data.is_empty() {
        out.push(b' ');
        out.extend_from_slice(data);
    }
    out.push(b'\n');
}

fn next_txnr(txnr: u32) -> u32 {
    if txnr >= MAX_TXNR { 1 } else { txnr + 1 }
}

/// Reads until one whole frame is in `buf`, and takes it out: (txnr, command, data).
async fn read_frame<R: tokio::io::AsyncRead + Unpin>(
    read: &mut R,
    buf: &mut BytesMut,
    address: &str,
) -> Result<(u32, String, Vec<u8>), ShipError> {
    loop {
        if let Some((frame, used)) = parse_frame(buf).map_err(|e| ShipError::Relp(address.to_string(), e))? {
            let owned = (frame.txnr, frame.command.to_string(), frame.data.to_vec());
            buf.advance(used);
            return Ok(owned);
        }
        if read.read_buf(buf).await.map_err(|e| ShipError::Lost(address.to_string(), e.to_string()))? == 0 {
            return Err(ShipError::Lost(address.to_string(), "closed by the server".into()));
        }
    }
}

/// One RELP session: `open`, then messages from the queue with up to [`WINDOW`] outstanding,
/// each taken off the queue when answered `200`, until it breaks (the error says why) or
/// `stop` completes.
pub(super) async fn session(
    shipping: &Shipping,
    stream: TlsStream<TcpStream>,
    reader: &mut QueueReader,
    opened: u64,
    error_log: &ErrorLog,
    logged: &mut Option<String>,
    mut stop: Pin<&mut impl Future<Output = ()>>,
) -> Result<Stopped, ShipError> {
    let address = shipping.address();
    // A second handle on the socket, for TCP_QUICKACK (the halves below hide it).
    let socket = stream.get_ref().0.as_fd().try_clone_to_owned().map(socket2::Socket::from).ok();
    let (mut read, mut write_half) = tokio::io::split(stream);
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let mut out = Vec::with_capacity(64 * 1024);
    let offers = format!("relp_version=0\nrelp_software=portcullis,{},-\ncommands=syslog", env!("CARGO_PKG_VERSION"));
    push_frame(&mut out, 1, "open", offers.as_bytes());
    write(&mut write_half, &out, &address).await?;
    // With TLS 1.3 a refused client certificate shows only now, as the connection closing.
    let answer = tokio::time::timeout(ACK_TIMEOUT, read_frame(&mut read, &mut buf, &address))
        .await
        .map_err(|_| ShipError::Relp(address.clone(), "no answer to open".into()))?
        .map_err(|e| match e {
            ShipError::Lost(..) => ShipError::RefusedAfterHandshake(address.clone()),
            other => other,
        })?;
    let (txnr, command, data) = answer;
    if txnr != 1 || command != "rsp" || !data.starts_with(b"200") {
        let text = String::from_utf8_lossy(&data[..data.len().min(200)]).into_owned();
        return Err(ShipError::Relp(address, format!("open refused: {command} {text}")));
    }
    connected(shipping, opened, error_log, logged);

    let mut txnr: u32 = 1;
    let mut outstanding: VecDeque<(u32, Position)> = VecDeque::with_capacity(WINDOW);
    let mut records: Vec<Record> = Vec::with_capacity(WINDOW);
    let mut waiting_since = Instant::now();
    // While messages are outstanding, answers are read at most once per READ_PACE, so that
    // one wake-up takes many of them (each comes in its own TLS record and TCP segment).
    let mut next_read = Instant::now();
    loop {
        // New messages go out at once when none are outstanding, else once half the window
        // is free: fewer, larger writes.
        let room = WINDOW - outstanding.len();
        let may_send = outstanding.is_empty() || room >= SEND_WHEN_FREE;
        let pacing = next_read > Instant::now();
        tokio::select! {
            biased;
            () = stop.as_mut() => {
                // Going away: answers due within CLOSE_GRACE still take their messages off
                // the queue (fewer sent twice at the next start), then `close`.
                let answers = async {
                    while !outstanding.is_empty() {
                        if read.read_buf(&mut buf).await.map_err(|e| ShipError::Lost(address.clone(), e.to_string()))? == 0 {
                            break;
                        }
                        take_answers(shipping, &address, &mut buf, &mut outstanding)?;
                    }
                    Ok::<(), ShipError>(())
                };
                let _ = tokio::time::timeout(CLOSE_GRACE, answers).await;
                out.clear();
                push_frame(&mut out, next_txnr(txnr), "close", b"");
                let _ = tokio::time::timeout(CLOSE_GRACE, write(&mut write_half, &out, &address)).await;
                return Ok(Stopped);
            }
            () = tokio::time::sleep_until(next_read), if pacing => {}
            got = read.read_buf(&mut buf), if !pacing => {
                match got {
                    Ok(0) => return Err(ShipError::Lost(address, "closed by the server".into())),
                    Err(e) => return Err(ShipError::Lost(address, e.to_string())),
                    Ok(_) => {}
                }
                if take_answers(shipping, &address, &mut buf, &mut outstanding)? > 0 {
                    waiting_since = Instant::now();
                }
                if !outstanding.is_empty() {
                    next_read = Instant::now() + READ_PACE;
                }
                // Window-bound: our ACKs must not wait, or rsyslog's answers (small writes
                // under Nagle) wait for them (the delayed ACK, 40 ms).
                if WINDOW - outstanding.len() < SEND_WHEN_FREE
                    && let Some(socket) = &socket
                {
                    let _ = socket.set_tcp_quickack(true);
                }
            }
            () = tokio::time::sleep_until(waiting_since + ACK_TIMEOUT), if !outstanding.is_empty() => {
                return Err(ShipError::Lost(address, format!("no acknowledgement within {}s", ACK_TIMEOUT.as_secs())));
            }
            next = reader.next(room, &mut records), if may_send => {
                next?;
                out.clear();
                if outstanding.is_empty() {
                    waiting_since = Instant::now();
                }
                for record in &records {
                    txnr = next_txnr(txnr);
                    push_frame(&mut out, txnr, "syslog", &record.payload);
                    outstanding.push_back((txnr, record.end));
                }
                write(&mut write_half, &out, &address).await?;
                shipping.stats.sent.fetch_add(records.len() as u64, Ordering::Relaxed);
                records.clear();
            }
        }
    }
}

/// Takes the server's answers in `buf` off `outstanding` (they come in order) and the
/// messages answered `200` off the queue; anything else ends the session, after what was
/// answered before it is taken off. Returns how many were answered.
fn take_answers(
    shipping: &Shipping,
    address: &str,
    buf: &mut BytesMut,
    outstanding: &mut VecDeque<(u32, Position)>,
) -> Result<u64, ShipError> {
    let mut upto = None;
    let mut answered = 0;
    let mut used = 0;
    let mut failure = None;
    loop {
        let (frame, size) = match parse_frame(&buf[used..]) {
            Ok(Some(parsed)) => parsed,
            Ok(None) => break,
            Err(e) => {
                failure = Some(ShipError::Relp(address.to_string(), e));
                break;
            }
        };
        used += size;
        if frame.command == "serverclose" {
            failure = Some(ShipError::Lost(address.to_string(), "the server closed the session (serverclose)".into()));
            break;
        }
        match outstanding.front() {
            Some(&(expected, end)) if frame.command == "rsp" && frame.txnr == expected && frame.data.starts_with(b"200") => {
                outstanding.pop_front();
                upto = Some(end);
                answered += 1;
            }
            Some(&(expected, _)) if frame.command == "rsp" && frame.txnr == expected => {
                let text = String::from_utf8_lossy(&frame.data[..frame.data.len().min(200)]).into_owned();
                failure = Some(ShipError::Relp(address.to_string(), format!("message refused: {text}")));
                break;
            }
            _ => {
                let what = format!("unexpected {} for transaction {}", frame.command, frame.txnr);
                failure = Some(ShipError::Relp(address.to_string(), what));
                break;
            }
        }
    }
    buf.advance(used);
    if let Some(end) = upto {
        shipping.queue.ack(end);
        shipping.stats.acknowledged.fetch_add(answered, Ordering::Relaxed);
    }
    failure.map_or(Ok(answered), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_parse_whole_wait_for_more_and_refuse_nonsense() {
        let (frame, used) = parse_frame(b"2 rsp 6 200 OK\n3 rsp").unwrap().unwrap();
        assert_eq!(frame, Frame { txnr: 2, command: "rsp", data: b"200 OK" });
        assert_eq!(used, 15);
        let (close, used) = parse_frame(b"0 serverclose 0\n").unwrap().unwrap();
        assert_eq!((close.txnr, close.command, close.data.len(), used), (0, "serverclose", 0, 16));
        for partial in [&b""[..], b"2", b"2 rs", b"2 rsp 6", b"2 rsp 6 200", b"2 rsp 6 200 OK"] {
            assert_eq!(parse_frame(partial), Ok(None), "{partial:?}");
        }
        for bad in [&b"x rsp 1 a\n"[..], b"2 r5p 1 a\n", b"2 rsp 99999999999 a", b"2 rsp 70000 ", b"2 rsp 1 ab", b"2 rsp 1\n", b"2\n"] {
            assert!(parse_frame(bad).is_err(), "{bad:?}");
        }
        assert!(parse_frame(format!("1 {} 1 a\n", "a".repeat(40)).as_bytes()).is_err());
    }

    #[test]
    fn commands_are_framed_and_transaction_numbers_wrap() {
        let mut out = Vec::new();
        push_frame(&mut out, 7, "syslog", b"<134>1 x");
        push_frame(&mut out, 8, "close", b"");
        assert_eq!(out, b"7 syslog 8 <134>1 x\n8 close 0\n");
        assert_eq!(next_txnr(1), 2);
        assert_eq!(next_txnr(MAX_TXNR), 1);
    }
}
