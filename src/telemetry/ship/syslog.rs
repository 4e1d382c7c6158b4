//! RFC 5424 messages and RFC 5425 octet-counting frames: the one place a log line becomes a
//! syslog message.
//!
//! `<PRI>1 TIMESTAMP HOSTNAME portcullis PROCID MSGID [meta sequenceId="n"] MSG`:
//! - PRI = facility × 8 + severity, per log and line ([`LogName::pri`]);
//! - TIMESTAMP: RFC 3339, UTC, microseconds (when the line was written, not when shipped);
//! - HOSTNAME = `server.name`, APP-NAME `portcullis`, PROCID the process id, MSGID the log
//!   (`access`, `error`, `blocking`, `firewall`); header fields keep only PRINTUSASCII (other bytes
//!   become `_`) and are cut to RFC 5424's lengths (255/48/128/32), an empty one is `-`;
//! - structured data `[meta sequenceId="n"]` (RFC 5424 §7.3.1): n counts the queue's records
//!   from 1 and wraps after 2147483647, so the server sees a gap (a lost message) or a repeat
//!   (a message sent again after a reconnect or restart);
//! - MSG: the file-log line itself (text or JSON), without its line end; a CR or LF in it
//!   (never there: the file logs escape them) would become a space.

use std::fmt::Write as _;
use std::time::SystemTime;

pub use crate::telemetry::outbox::{Level, LogName};

/// The APP-NAME of every message.
pub const APP_NAME: &str = "portcullis";
/// Largest sequenceId (RFC 5424 §7.3.1); the next one is 1 again.
pub const MAX_SEQUENCE_ID: u64 = 2_147_483_647;

/// Facility `local0`: the edge's own logs.
const FACILITY_LOCAL0: u8 = 16;
/// Facility `authpriv`: security decisions (bans).
const FACILITY_AUTHPRIV: u8 = 10;

impl LogName {
    /// The MSGID.
    pub fn msgid(self) -> &'static str {
        match self {
            LogName::Access => "access",
            LogName::Error => "error",
            LogName::Blocking => "blocking",
            LogName::Firewall => "firewall",
        }
    }

    /// The PRI of a line of this log at `level`: access and error lines are `local0`, bans
    /// and firewall changes `authpriv`.
    pub fn pri(self, level: Level) -> u8 {
        let facility = match self {
            LogName::Access | LogName::Error => FACILITY_LOCAL0,
            LogName::Blocking | LogName::Firewall => FACILITY_AUTHPRIV,
        };
        facility * 8 + level as u8
    }
}

/// What every message of one edge shares.
#[derive(Debug, Clone)]
pub struct Origin {
    hostname: String,
    procid: String,
}

impl Origin {
    /// The header fields of this process on host `server_name`.
    pub fn new(server_name: &str, pid: u32) -> Origin {
        Origin { hostname: header_field(server_name, 255), procid: pid.to_string() }
    }
}

/// The sequenceId of the queue record numbered `index` (from 0).
pub fn sequence_id(index: u64) -> u64 {
    index % MAX_SEQUENCE_ID + 1
}

/// Appends the RFC 5424 message of `line` to `out`.
pub fn format_message(out: &mut Vec<u8>, origin: &Origin, log: LogName, level: Level, at: SystemTime, index: u64, line: &str) {
    let mut head = String::with_capacity(128);
    let _ = write!(
        head,
        "<{}>1 {} {} {APP_NAME} {} {} [meta sequenceId=\"{}\"] ",
        log.pri(level),
        humantime::format_rfc3339_micros(at),
        origin.hostname,
        origin.procid,
        log.msgid(),
        sequence_id(index)
    );
    out.extend_from_slice(head.as_bytes());
    let line = line.strip_suffix('\n').unwrap_or(line);
    out.extend(line.bytes().map(|b| if b == b'\n' || b == b'\r' { b' ' } else { b }));
}

/// Appends the RFC 5425 frame of `message`: `LEN SP MSG`.
pub fn frame(out: &mut Vec<u8>, message: &[u8]) {
    let _ = write!(Bytes(out), "{} ", message.len());
    out.extend_from_slice(message);
}

/// A header field: PRINTUSASCII only (33–126; anything else becomes `_`), at most `max`
/// bytes, `-` (NILVALUE) when empty.
fn header_field(text: &str, max: usize) -> String {
    let field: String = text.bytes().take(max).map(|b| if (33..=126).contains(&b) { b as char } else { '_' }).collect();
    if field.is_empty() { "-".to_string() } else { field }
}

/// `fmt::Write` into a byte buffer.
struct Bytes<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Bytes<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn message(log: LogName, level: Level, index: u64, line: &str) -> String {
        let mut out = Vec::new();
        let at = SystemTime::UNIX_EPOCH + Duration::from_micros(1_764_979_200_123_456);
        format_message(&mut out, &Origin::new("edge1.example.com", 4242), log, level, at, index, line);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_line_becomes_an_rfc5424_message_with_its_log_severity_and_sequence() {
        assert_eq!(
            message(LogName::Access, Level::Info, 0, "2026-12-06T00:00:00.123Z 203.0.113.7 h GET / HTTP/1.1 200 5 - - 0.001\n"),
            "<134>1 2025-12-06T00:00:00.123456Z edge1.example.com portcullis 4242 access [meta sequenceId=\"1\"] \
             2026-12-06T00:00:00.123Z 203.0.113.7 h GET / HTTP/1.1 200 5 - - 0.001"
        );
        assert!(message(LogName::Error, Level::Warning, 9, "x").starts_with("<132>1 "));
        assert!(message(LogName::Error, Level::Error, 9, "x").starts_with("<131>1 "));
        let ban = message(LogName::Blocking, Level::Warning, 41, "x");
        assert!(ban.starts_with("<84>1 ") && ban.contains(" blocking [meta sequenceId=\"42\"] x"), "{ban}");
        let firewall = message(LogName::Firewall, Level::Notice, 6, "applied");
        assert!(firewall.starts_with("<85>1 ") && firewall.contains(" firewall [meta sequenceId=\"7\"] applied"), "{firewall}");
    }

    #[test]
    fn sequence_ids_run_from_one_and_wrap_after_the_rfc_maximum() {
        assert_eq!(sequence_id(0), 1);
        assert_eq!(sequence_id(MAX_SEQUENCE_ID - 1), MAX_SEQUENCE_ID);
        assert_eq!(sequence_id(MAX_SEQUENCE_ID), 1);
        assert_eq!(sequence_id(u64::MAX), u64::MAX % MAX_SEQUENCE_ID + 1);
    }

    #[test]
    fn header_fields_keep_printable_ascii_within_their_length_and_msg_stays_one_line() {
        let mut out = Vec::new();
        let origin = Origin::new(&format!("bad host\u{e9}{}", "a".repeat(300)), 1);
        format_message(&mut out, &origin, LogName::Error, Level::Error, SystemTime::UNIX_EPOCH, 0, "a\r\nb\n");
        let text = String::from_utf8(out).unwrap();
        let host = text.split(' ').nth(2).unwrap();
        assert_eq!(host.len(), 255);
        assert!(host.starts_with("bad_host__aaa"), "{host}");
        assert!(text.ends_with("] a  b"), "{text}");
        assert_eq!(Origin::new("", 1).hostname, "-");
    }

    #[test]
    fn frames_are_octet_counted() {
        let mut out = b"prefix|".to_vec();
        frame(&mut out, "<134>1 é".as_bytes());
        assert_eq!(out, "prefix|9 <134>1 é".as_bytes());
    }
}
