//! `access.log`: one line per answered request, written through a buffer that a background
//! task flushes every second (and on shutdown), so logging costs a memcpy per request.
//!
//! Line format (space separated; `-` for absent fields):
//! `2026-11-22T05:00:00.123Z 203.0.113.7 desktop.example.com GET /finesse/api/User HTTP/1.1 200 512 10.0.0.5:8082 finesse 0.004`
//! = time, client, host, method, path (query dropped: it may carry secrets), protocol,
//! status, response body bytes, upstream server, service, duration in seconds. Host, method
//! and path come from the client: they are escaped like every network string in a log
//! ([`logging::escaped`]: `"`, `\`, control and non-ASCII bytes as `\xHH`), spaces too.
//!
//! With `logging.format = "json"` each line is one JSON object instead:
//! `{"time":"…","client":"203.0.113.7","host":"…","method":"GET","path":"/…","protocol":"HTTP/1.1",
//! "status":200,"bytes":512,"upstream":"10.0.0.5:8082","service":"finesse","duration_ms":4.0}`
//! (absent upstream/service are `null`; strings JSON-escaped and cut like the text fields).
//! With `[logging.ship]` every line is shipped too ([`super::ship`]).

use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::logging;
use super::outbox::{Level, LogName, Outbox};
use crate::config::LogFormat;

/// Longest path written to the log; longer paths are cut (a flood of huge paths must not
/// fill the disk faster than the request rate allows).
pub const MAX_LOGGED_PATH: usize = 1024;

/// One access-log entry.
#[derive(Debug)]
pub struct AccessEntry<'a> {
    pub client: IpAddr,
    pub host: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub protocol: &'a str,
    pub status: u16,
    pub bytes: u64,
    pub upstream: Option<&'a str>,
    pub service: Option<&'a str>,
    pub duration: Duration,
}

/// The access log of a running edge (cheap to clone).
#[derive(Clone, Debug)]
pub struct AccessLog {
    out: Option<Arc<Mutex<BufWriter<File>>>>,
    path: std::path::PathBuf,
    json: bool,
    outbox: Option<Outbox>,
}

impl AccessLog {
    /// Opens (appends to) `dir/access.log`.
    pub fn open(dir: &Path) -> std::io::Result<AccessLog> {
        let path = dir.join("access.log");
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
        Ok(AccessLog { out: Some(Arc::new(Mutex::new(BufWriter::with_capacity(64 * 1024, file)))), path, json: false, outbox: None })
    }

    /// A log that drops every line (tests of pure layers).
    pub fn disabled() -> AccessLog {
        AccessLog { out: None, path: Default::default(), json: false, outbox: None }
    }

    /// Writes lines in `format` (`logging.format`).
    pub fn with_format(mut self, format: LogFormat) -> AccessLog {
        self.json = format == LogFormat::Json;
        self
    }

    /// Ships every line through `outbox` too (`[logging.ship]`).
    pub fn shipping(mut self, outbox: Option<Outbox>) -> AccessLog {
        self.outbox = outbox;
        self
    }

    /// Appends one line.
    pub fn write(&self, entry: &AccessEntry<'_>) {
        let Some(out) = &self.out else { return };
        // Formatted into this worker thread's reusable line (no allocation per request once
        // it has grown), then copied into the shared buffer the flusher writes out each second.
        LINE.with_borrow_mut(|line| {
            line.clear();
            if self.json {
                format_json_into(line, entry, SystemTime::now());
            } else {
                format_into(line, entry, SystemTime::now());
            }
            if let Ok(mut out) = out.lock() {
                let _ = out.write_all(line.as_bytes());
            }
            if let Some(outbox) = &self.outbox {
                outbox.send(LogName::Access, Level::Info, line);
            }
        });
    }

    /// Writes what is buffered to the file in use, then opens `access.log` at its path again
    /// (log rotation: a new file if the old one was moved away). On an error the old file
    /// stays in use.
    pub fn reopen(&self) -> std::io::Result<()> {
        let Some(out) = &self.out else { return Ok(()) };
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&self.path)?;
        let mut out = out.lock().unwrap_or_else(|p| p.into_inner());
        let _ = out.flush();
        *out = BufWriter::with_capacity(64 * 1024, file);
        Ok(())
    }

    /// Writes buffered lines to the file.
    pub fn flush(&self) {
        if let Some(out) = &self.out
            && let Ok(mut out) = out.lock()
        {
            let _ = out.flush();
        }
    }

    /// Flushes every second until the process ends.
    pub fn spawn_flusher(&self) {
        let log = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                log.flush();
            }
        });
    }
}

/// Writes one field: `-` when empty, else escaped by [`logging::escaped`] with spaces
/// escaped too (so fields stay space-separated), at most `max` bytes.
fn push_field(line: &mut String, value: &str, max: usize) {
    if value.is_empty() {
        line.push('-');
        return;
    }
    // Fast path: short printable ASCII needs no escaping.
    if value.len() <= max && value.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\') {
        line.push_str(value);
        return;
    }
    let _ = write!(line, "{}", logging::escaped(value).max(max).spaces());
}

thread_local! {
    /// Each worker thread's line under construction.
    static LINE: std::cell::RefCell<String> = std::cell::RefCell::new(String::with_capacity(256));
    /// The last timestamp this thread formatted, and the millisecond it is for.
    static STAMP: std::cell::RefCell<(u128, String)> = const { std::cell::RefCell::new((0, String::new())) };
}

#[cfg(test)]
fn format_line(e: &AccessEntry<'_>, now: SystemTime) -> String {
    let mut line = String::with_capacity(160);
    format_into(&mut line, e, now);
    line
}

/// Appends the line of `e` at `now` to `line`.
fn format_into(line: &mut String, e: &AccessEntry<'_>, now: SystemTime) {
    push_time(line, now);
    let _ = write!(line, " {} ", e.client);
    push_field(line, e.host, 256);
    line.push(' ');
    push_field(line, e.method, 32);
    line.push(' ');
    push_field(line, e.path, MAX_LOGGED_PATH);
    let _ = write!(line, " {} {} {} ", e.protocol, e.status, e.bytes);
    push_field(line, e.upstream.unwrap_or(""), 256);
    line.push(' ');
    push_field(line, e.service.unwrap_or(""), 64);
    // Seconds with three decimals, rounded to the millisecond (integer formatting).
    let millis = e.duration.as_micros().saturating_add(500) / 1000;
    let _ = writeln!(line, " {}.{:03}", millis / 1000, millis % 1000);
}

/// Appends the JSON line of `e` at `now` to `line`.
fn format_json_into(line: &mut String, e: &AccessEntry<'_>, now: SystemTime) {
    line.push_str("{\"time\":\"");
    push_time(line, now);
    let _ = write!(line, "\",\"client\":\"{}\",\"host\":", e.client);
    logging::push_json_string(line, e.host, 256);
    line.push_str(",\"method\":");
    logging::push_json_string(line, e.method, 32);
    line.push_str(",\"path\":");
    logging::push_json_string(line, e.path, MAX_LOGGED_PATH);
    line.push_str(",\"protocol\":");
    logging::push_json_string(line, e.protocol, 32);
    let _ = write!(line, ",\"status\":{},\"bytes\":{},\"upstream\":", e.status, e.bytes);
    match e.upstream {
        Some(upstream) => logging::push_json_string(line, upstream, 256),
        None => line.push_str("null"),
    }
    line.push_str(",\"service\":");
    match e.service {
        Some(service) => logging::push_json_string(line, service, 64),
        None => line.push_str("null"),
    }
    let micros = e.duration.as_micros();
    let _ = writeln!(line, ",\"duration_ms\":{}.{:03}}}", micros / 1000, micros % 1000);
}

/// Appends `now` in RFC 3339 with milliseconds, formatted once per millisecond per thread
/// (a busy edge writes many lines within one).
fn push_time(line: &mut String, now: SystemTime) {
    let millis = now.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    STAMP.with_borrow_mut(|(formatted_at, text)| {
        if *formatted_at != millis || text.is_empty() {
            text.clear();
            let _ = write!(text, "{}", humantime::format_rfc3339_millis(now));
            *formatted_at = millis;
        }
        line.push_str(text);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_has_every_field_and_escapes_spaces() {
        let entry = AccessEntry {
            client: "203.0.113.7".parse().unwrap(),
            host: "desk top",
            method: "GET",
            path: "/a b\"c",
            protocol: "HTTP/1.1",
            status: 200,
            bytes: 512,
            upstream: Some("10.0.0.5:8082"),
            service: None,
            duration: Duration::from_millis(4),
        };
        let line = format_line(&entry, SystemTime::UNIX_EPOCH);
        assert_eq!(line, "1970-01-01T00:00:00.000Z 203.0.113.7 desk\\x20top GET /a\\x20b\\x22c HTTP/1.1 200 512 10.0.0.5:8082 - 0.004\n");
    }

    #[test]
    fn durations_round_to_the_millisecond_and_each_line_has_its_own_time() {
        let entry = |duration| AccessEntry {
            client: "203.0.113.7".parse().unwrap(),
            host: "h",
            method: "GET",
            path: "/",
            protocol: "HTTP/1.1",
            status: 200,
            bytes: 0,
            upstream: None,
            service: None,
            duration,
        };
        let at = |ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
        let first = format_line(&entry(Duration::from_micros(1_234_500)), at(1_000));
        let same_ms = format_line(&entry(Duration::from_micros(400)), at(1_000));
        let next_ms = format_line(&entry(Duration::from_micros(61_999_600)), at(1_001));
        assert!(first.starts_with("1970-01-01T00:00:01.000Z ") && first.ends_with(" 1.235\n"), "{first}");
        assert!(same_ms.starts_with("1970-01-01T00:00:01.000Z ") && same_ms.ends_with(" 0.000\n"), "{same_ms}");
        assert!(next_ms.starts_with("1970-01-01T00:00:01.001Z ") && next_ms.ends_with(" 62.000\n"), "{next_ms}");
    }

    #[test]
    fn injected_text_stays_in_its_field_on_one_line() {
        let path = "/x HTTP/1.1 200 0 - - 0.001\r\n1970-01-01T00:00:00.000Z 9.9.9.9 h GET /forged\x1b[2J\\é";
        let entry = AccessEntry {
            client: "203.0.113.7".parse().unwrap(),
            host: "h\"",
            method: "GET",
            path,
            protocol: "HTTP/1.1",
            status: 404,
            bytes: 0,
            upstream: None,
            service: None,
            duration: Duration::ZERO,
        };
        let line = format_line(&entry, SystemTime::UNIX_EPOCH);
        assert_eq!(line.lines().count(), 1, "{line}");
        assert_eq!(line.split(' ').count(), 11, "{line}");
        assert!(
            line.contains(
                " h\\x22 GET /x\\x20HTTP/1.1\\x20200\\x200\\x20-\\x20-\\x200.001\\x0D\\x0A1970-01-01T00:00:00.000Z\\x209.9.9.9\\x20h\\x20GET\\x20/forged\\x1B[2J\\x5C\\xC3\\xA9 HTTP/1.1 404 "
            ),
            "{line}"
        );
    }

    #[test]
    fn json_lines_are_one_valid_object_with_every_field() {
        let entry = AccessEntry {
            client: "2001:db8::7".parse().unwrap(),
            host: "h\"ost",
            method: "GET",
            path: "/a b\r\n{\"x\":1}\u{1b}é",
            protocol: "HTTP/2.0",
            status: 404,
            bytes: 12,
            upstream: None,
            service: Some("finesse"),
            duration: Duration::from_micros(4_321),
        };
        let mut line = String::new();
        format_json_into(&mut line, &entry, SystemTime::UNIX_EPOCH);
        assert_eq!(line.lines().count(), 1, "{line}");
        assert!(line.ends_with("}\n"));
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["time"], "1970-01-01T00:00:00.000Z");
        assert_eq!(value["client"], "2001:db8::7");
        assert_eq!(value["host"], "h\"ost");
        assert_eq!(value["path"], "/a b\r\n{\"x\":1}\u{1b}é");
        assert_eq!((value["status"].as_u64(), value["bytes"].as_u64()), (Some(404), Some(12)));
        assert!(value["upstream"].is_null());
        assert_eq!(value["service"], "finesse");
        assert_eq!(value["duration_ms"].as_f64(), Some(4.321));
        let long = "/".repeat(5000);
        let mut line = String::new();
        format_json_into(&mut line, &AccessEntry { path: &long, ..entry }, SystemTime::UNIX_EPOCH);
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert!(value["path"].as_str().unwrap().len() <= MAX_LOGGED_PATH + 3);
    }

    #[test]
    fn long_paths_are_cut() {
        let path = "/".repeat(5000);
        let entry = AccessEntry {
            client: "::1".parse().unwrap(),
            host: "h",
            method: "GET",
            path: &path,
            protocol: "HTTP/2.0",
            status: 404,
            bytes: 0,
            upstream: None,
            service: None,
            duration: Duration::ZERO,
        };
        assert!(format_line(&entry, SystemTime::UNIX_EPOCH).len() < MAX_LOGGED_PATH + 200);
    }
}
