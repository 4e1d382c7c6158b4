//! Process logging: human-readable `tracing` lines on the console, and `error.log` under the
//! log directory for what an operator greps after an incident (refused reloads, upstreams
//! going down, certificate problems, refused requests).
//!
//! `error.log` is an explicit handle owned by each running edge rather than a global
//! subscriber, so several edges in one process (the integration tests) keep separate
//! files. Lines use nginx's error-log layout, which fail2ban filters already understand:
//! `2026/11/22 05:00:00 [warn] 1234#0: message`.
//!
//! Text that comes from the network (user names, paths, hosts, methods, header values) goes
//! into any log line only through [`quoted`] or [`escaped`]: one escaping, nginx's, so a
//! client can neither split a line nor forge a field or a whole line (threat: log injection
//! aimed at fail2ban filters and at operators reading the logs).

use std::fmt;
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;
use crate::telemetry::outbox::{Level, LogName, Outbox};

/// Installs console logging (filtered by `RUST_LOG`, default `info`). Safe to call twice.
pub fn init_console() {
    let _ = tracing_subscriber::fmt()
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .try_init();
}

/// Longest piece of network text written into one log field (bytes of the text); longer
/// text is cut and ends with [`CUT_MARKER`].
pub const MAX_LOGGED_TEXT: usize = 256;
/// Ends a field that was cut. Escaped text never holds a non-ASCII character, so this marker
/// cannot come from the text itself.
pub const CUT_MARKER: &str = "…";

/// Network text for a log line, in double quotes: `"x\x22 9.9.9.9"`. See [`Escaped`].
pub fn quoted(text: &str) -> Escaped<'_> {
    Escaped { text, max: MAX_LOGGED_TEXT, quotes: true, spaces: false }
}

/// Network text for a log field whose quotes the line format writes itself (the
/// `request: "..."` and `host: "..."` fields of `blocking.log`). See [`Escaped`].
pub fn escaped(text: &str) -> Escaped<'_> {
    Escaped { text, max: MAX_LOGGED_TEXT, quotes: false, spaces: false }
}

/// Network text made safe for a log line (a [`fmt::Display`]; nothing is allocated).
///
/// Printable ASCII and the space are written as is; every other byte — `"`, `\`, control
/// bytes (CR, LF, ESC, ...), DEL and each byte of a non-ASCII character — is written as
/// `\xHH`, as nginx does. So an escaped field never contains a double quote
/// (a `"[^"]*"` pattern, such as the stock fail2ban filter's, always finds its end), a line
/// break or a terminal escape, and every `\` in it starts an escape (the original text is
/// recoverable). Only the first `max` bytes of the text are used (default
/// [`MAX_LOGGED_TEXT`]); a cut field ends with [`CUT_MARKER`].
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a> {
    text: &'a str,
    max: usize,
    quotes: bool,
    spaces: bool,
}

impl Escaped<'_> {
    /// Keeps at most `max` bytes of the text.
    pub fn max(self, max: usize) -> Self {
        Escaped { max, ..self }
    }

    /// Escapes spaces too (`\x20`): for fields of space-separated lines such as
    /// `access.log`.
    pub fn spaces(self) -> Self {
        Escaped { spaces: true, ..self }
    }

    fn plain(&self, byte: u8) -> bool {
        (byte.is_ascii_graphic() && byte != b'"' && byte != b'\\') || (byte == b' ' && !self.spaces)
    }
}

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.text.as_bytes();
        let shown = &bytes[..bytes.len().min(self.max)];
        if self.quotes {
            f.write_str("\"")?;
        }
        let mut start = 0;
        for (i, &byte) in shown.iter().enumerate() {
            if self.plain(byte) {
                continue;
            }
            // Runs of plain bytes are ASCII, so their ends are character boundaries.
            f.write_str(self.text.get(start..i).unwrap_or_default())?;
            write!(f, "\\x{byte:02X}")?;
            start = i + 1;
        }
        f.write_str(self.text.get(start..shown.len()).unwrap_or_default())?;
        if shown.len() < bytes.len() {
            f.write_str(CUT_MARKER)?;
        }
        if self.quotes {
            f.write_str("\"")?;
        }
        Ok(())
    }
}

/// Severity of an `error.log` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Warn,
    Error,
}

/// An append-only log file that can be reopened at its path (after `logrotate` moved it:
/// SIGUSR1). Cheap to clone; clones share the open file.
#[derive(Clone, Debug)]
pub struct LogFile {
    path: std::path::PathBuf,
    file: Arc<Mutex<File>>,
}

impl LogFile {
    /// Opens (appends to, creating) `path`.
    pub fn open(path: &Path) -> std::io::Result<LogFile> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        Ok(LogFile { path: path.to_path_buf(), file: Arc::new(Mutex::new(file)) })
    }

    /// Appends `bytes` (one write, so lines from several threads never interleave).
    pub fn write(&self, bytes: &[u8]) {
        if let Ok(mut file) = self.file.lock() {
            let _ = file.write_all(bytes);
        }
    }

    /// Opens the path again (a new file if the old one was moved away); on an error the old
    /// file stays in use.
    pub fn reopen(&self) -> std::io::Result<()> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&self.path)?;
        *self.file.lock().unwrap_or_else(|p| p.into_inner()) = file;
        Ok(())
    }
}

/// `error.log` of one edge (cheap to clone).
#[derive(Clone, Debug)]
pub struct ErrorLog {
    file: Option<LogFile>,
    json: bool,
    outbox: Option<Outbox>,
}

impl ErrorLog {
    /// Opens (appends to) `dir/error.log`.
    pub fn open(dir: &Path) -> std::io::Result<ErrorLog> {
        Ok(ErrorLog { file: Some(LogFile::open(&dir.join("error.log"))?), json: false, outbox: None })
    }

    /// A log that only prints to the console.
    pub fn console_only() -> ErrorLog {
        ErrorLog { file: None, json: false, outbox: None }
    }

    /// Writes lines in `format` (`logging.format`).
    pub fn with_format(mut self, format: LogFormat) -> ErrorLog {
        self.json = format == LogFormat::Json;
        self
    }

    /// Ships every line through `outbox` too (`[logging.ship]`).
    pub fn shipping(mut self, outbox: Option<Outbox>) -> ErrorLog {
        self.outbox = outbox;
        self
    }

    /// Reopens `error.log` at its path (log rotation).
    pub fn reopen(&self) -> std::io::Result<()> {
        self.file.as_ref().map_or(Ok(()), LogFile::reopen)
    }

    /// Logs a warning. Network text in `message` must come through [`quoted`] or [`escaped`].
    pub fn warn(&self, message: &str) {
        let message = one_line(message);
        tracing::warn!("{message}");
        self.append(Severity::Warn, &message);
    }

    /// Logs an error. Network text in `message` must come through [`quoted`] or [`escaped`].
    pub fn error(&self, message: &str) {
        let message = one_line(message);
        tracing::error!("{message}");
        self.append(Severity::Error, &message);
    }

    fn append(&self, severity: Severity, message: &str) {
        let Some(file) = &self.file else { return };
        let level = match severity {
            Severity::Warn => "warn",
            Severity::Error => "error",
        };
        let now = std::time::SystemTime::now();
        let line = if self.json {
            let mut line = format!(
                "{{\"time\":\"{}\",\"level\":\"{level}\",\"pid\":{},\"message\":",
                humantime::format_rfc3339_millis(now),
                std::process::id()
            );
            push_json_string(&mut line, message, usize::MAX);
            line.push_str("}\n");
            line
        } else {
            format!("{} [{level}] {}#0: {message}\n", nginx_time(now), std::process::id())
        };
        file.write(line.as_bytes());
        if let Some(outbox) = &self.outbox {
            let level = match severity {
                Severity::Warn => Level::Warning,
                Severity::Error => Level::Error,
            };
            outbox.send(LogName::Error, level, &line);
        }
    }
}

/// Appends `text` (at most `max` bytes of it, cut at a character boundary) as a JSON string:
/// `"`, `\` and control characters escaped, so a JSON log line stays one valid object.
pub fn push_json_string(out: &mut String, text: &str, max: usize) {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    out.push('"');
    for c in text[..end].chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = fmt::Write::write_fmt(out, format_args!("\\u{:04x}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    if end < text.len() {
        out.push_str(CUT_MARKER);
    }
    out.push('"');
}

/// A message on one line: our own multi-line messages (error lists) joined with ` | `, and,
/// as a last guard should network text ever arrive unescaped, any other control character
/// written as `\xHH`.
fn one_line(message: &str) -> std::borrow::Cow<'_, str> {
    if !message.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(message);
    }
    let mut out = String::with_capacity(message.len() + 8);
    for c in message.chars() {
        match c {
            '\n' => out.push_str(" | "),
            // Control characters are U+0000..U+001F and U+007F..U+009F.
            c if c.is_control() => {
                let _ = fmt::Write::write_fmt(&mut out, format_args!("\\x{:02X}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// A per-second allowance of log lines, so a flood of events cannot fill the disk (the
/// metrics still count every event). Lock-free; a race at a second boundary may let a line
/// or two more through, never unboundedly many.
#[derive(Debug)]
pub struct LineBudget {
    per_second: u64,
    /// (second, lines written in it), packed as second << 16 | count.
    state: std::sync::atomic::AtomicU64,
}

impl LineBudget {
    /// At most `per_second` lines each wall-clock second (capped at 65,535).
    pub const fn new(per_second: u64) -> LineBudget {
        LineBudget { per_second: if per_second > 0xffff { 0xffff } else { per_second }, state: std::sync::atomic::AtomicU64::new(0) }
    }

    /// Whether one more line may be written now (and counts it).
    pub fn allow(&self) -> bool {
        use std::sync::atomic::Ordering;
        let second = crate::clock::unix_secs();
        let packed = self.state.load(Ordering::Relaxed);
        let (at, count) = (packed >> 16, packed & 0xffff);
        if at == second && count >= self.per_second {
            return false;
        }
        let next = if at == second { count + 1 } else { 1 };
        self.state.store((second << 16) | next, Ordering::Relaxed);
        true
    }
}

/// `YYYY/MM/DD HH:MM:SS` in UTC.
pub fn nginx_time(at: std::time::SystemTime) -> String {
    let t = time::OffsetDateTime::from(at);
    format!("{:04}/{:02}/{:02} {:02}:{:02}:{:02}", t.year(), u8::from(t.month()), t.day(), t.hour(), t.minute(), t.second())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_log_lines_use_the_nginx_layout() {
        let dir = tempfile::tempdir().unwrap();
        let log = ErrorLog::open(dir.path()).unwrap();
        log.error("reload refused\nsecond line");
        let text = std::fs::read_to_string(dir.path().join("error.log")).unwrap();
        let re_ok = text.len() > 20 && &text[4..5] == "/" && &text[10..11] == " ";
        assert!(re_ok, "{text}");
        assert!(text.contains(&format!(" [error] {}#0: reload refused | second line\n", std::process::id())), "{text}");
        assert_eq!(nginx_time(std::time::SystemTime::UNIX_EPOCH), "1970/01/01 00:00:00");
    }

    #[test]
    fn error_log_lines_never_split_even_on_unescaped_control_characters() {
        let dir = tempfile::tempdir().unwrap();
        let log = ErrorLog::open(dir.path()).unwrap();
        log.warn("a\r\n2026/01/01 00:00:00 [emerg] 1#0: forged\x1b[2J\u{85}end");
        let text = std::fs::read_to_string(dir.path().join("error.log")).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.ends_with("#0: a\\x0D | 2026/01/01 00:00:00 [emerg] 1#0: forged\\x1B[2J\\x85end\n"), "{text}");
    }

    #[test]
    fn a_reopened_log_writes_to_the_new_file_at_its_path_and_json_lines_parse() {
        let dir = tempfile::tempdir().unwrap();
        let log = ErrorLog::open(dir.path()).unwrap().with_format(LogFormat::Json);
        log.warn("before \"rotation\"");
        std::fs::rename(dir.path().join("error.log"), dir.path().join("error.log.1")).unwrap();
        log.warn("still the old file");
        log.reopen().unwrap();
        log.error("after\x01");
        let old = std::fs::read_to_string(dir.path().join("error.log.1")).unwrap();
        let new = std::fs::read_to_string(dir.path().join("error.log")).unwrap();
        assert_eq!((old.lines().count(), new.lines().count()), (2, 1), "{old}{new}");
        let first: serde_json::Value = serde_json::from_str(old.lines().next().unwrap()).unwrap();
        assert_eq!((first["level"].as_str(), first["message"].as_str()), (Some("warn"), Some("before \"rotation\"")));
        assert_eq!(first["pid"].as_u64(), Some(u64::from(std::process::id())));
        let after: serde_json::Value = serde_json::from_str(&new).unwrap();
        assert_eq!((after["level"].as_str(), after["message"].as_str()), (Some("error"), Some("after\\x01")));
        assert!(after["time"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn quoted_escapes_quotes_backslashes_controls_and_non_ascii_like_nginx() {
        assert_eq!(quoted("agent1").to_string(), "\"agent1\"");
        assert_eq!(quoted("").to_string(), "\"\"");
        assert_eq!(quoted("a b").to_string(), "\"a b\"");
        assert_eq!(quoted("x\" 9.9.9.9 will be blocked").to_string(), "\"x\\x22 9.9.9.9 will be blocked\"");
        assert_eq!(quoted("a\\b").to_string(), "\"a\\x5Cb\"");
        assert_eq!(quoted("\r\n\t\x1b\x7f\0").to_string(), "\"\\x0D\\x0A\\x09\\x1B\\x7F\\x00\"");
        assert_eq!(quoted("José\u{2028}").to_string(), "\"Jos\\xC3\\xA9\\xE2\\x80\\xA8\"");
        assert_eq!(escaped("GET \"/\"").to_string(), "GET \\x22/\\x22");
        assert_eq!(escaped("a b").spaces().to_string(), "a\\x20b");
    }

    #[test]
    fn escaped_text_is_cut_with_a_marker_even_inside_a_character() {
        let long = "a".repeat(MAX_LOGGED_TEXT + 10);
        assert_eq!(quoted(&long).to_string(), format!("\"{}{CUT_MARKER}\"", "a".repeat(MAX_LOGGED_TEXT)));
        assert_eq!(escaped("abcdef").max(3).to_string(), format!("abc{CUT_MARKER}"));
        // The cut falls inside "é" (2 bytes): only its first byte is shown, escaped.
        assert_eq!(escaped("aé").max(2).to_string(), format!("a\\xC3{CUT_MARKER}"));
        assert_eq!(escaped("ééé").max(3).to_string(), format!("\\xC3\\xA9\\xC3{CUT_MARKER}"));
        assert_eq!(escaped("abc").max(3).to_string(), "abc");
    }

    #[test]
    fn escaped_text_never_holds_a_quote_a_control_or_a_non_ascii_byte() {
        // Every byte pattern of up to two characters, from a set of awkward ones.
        let pieces = ["\"", "\\", "\r", "\n", "\x1b", " ", "a", "é", "\u{2028}", "\u{85}", "\x7f", "…", "x\""];
        for a in pieces {
            for b in pieces {
                let text = format!("{a}{b}");
                for max in 0..=text.len() + 1 {
                    let out = escaped(&text).max(max).to_string();
                    let body = out.strip_suffix(CUT_MARKER).unwrap_or(&out);
                    assert!(body.bytes().all(|b| b.is_ascii_graphic() || b == b' ') && !body.contains('"'), "{text:?} -> {out:?}");
                    assert_eq!(out.ends_with(CUT_MARKER), max < text.len(), "{text:?} max {max} -> {out:?}");
                }
            }
        }
    }

    #[test]
    fn a_line_budget_lets_through_its_allowance_per_second_and_no_more() {
        let budget = LineBudget::new(3);
        let allowed = (0..1000).filter(|_| budget.allow()).count();
        // 3 in one second; a second boundary during the loop can add at most 3 more.
        assert!((3..=6).contains(&allowed), "{allowed}");
    }
}
