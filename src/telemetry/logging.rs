//! Process logging: human-readable `tracing` lines on the console, and `error.log` under the
//! log directory for what an operator greps after an incident (refused reloads, upstreams
//! going down, certificate problems, refused requests).
//!
//! `error.log` is an explicit handle owned by each running edge rather than a global
//! subscriber, so several edges in one process (the integration tests) keep separate
//! files. Lines use nginx's error-log layout, which fail2ban filters already understand:
//! `2026/11/22 05:00:00 [warn] 1234#0: message`.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use tracing_subscriber::EnvFilter;

/// Installs console logging (filtered by `RUST_LOG`, default `info`). Safe to call twice.
pub fn init_console() {
    let _ = tracing_subscriber::fmt()
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .try_init();
}

/// Severity of an `error.log` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Warn,
    Error,
}

/// `error.log` of one edge (cheap to clone).
#[derive(Clone, Debug)]
pub struct ErrorLog {
    file: Option<Arc<Mutex<File>>>,
}

impl ErrorLog {
    /// Opens (appends to) `dir/error.log`.
    pub fn open(dir: &Path) -> std::io::Result<ErrorLog> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("error.log"))?;
        Ok(ErrorLog { file: Some(Arc::new(Mutex::new(file))) })
    }

    /// A log that only prints to the console.
    pub fn console_only() -> ErrorLog {
        ErrorLog { file: None }
    }

    /// Logs a warning.
    pub fn warn(&self, message: &str) {
        tracing::warn!("{message}");
        self.append(Severity::Warn, message);
    }

    /// Logs an error.
    pub fn error(&self, message: &str) {
        tracing::error!("{message}");
        self.append(Severity::Error, message);
    }

    fn append(&self, severity: Severity, message: &str) {
        let Some(file) = &self.file else { return };
        let level = match severity {
            Severity::Warn => "warn",
            Severity::Error => "error",
        };
        let line =
            format!("{} [{level}] {}#0: {}\n", nginx_time(std::time::SystemTime::now()), std::process::id(), message.replace('\n', " | "));
        if let Ok(mut file) = file.lock() {
            let _ = file.write_all(line.as_bytes());
        }
    }
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
        let second = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
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
    fn a_line_budget_lets_through_its_allowance_per_second_and_no_more() {
        let budget = LineBudget::new(3);
        let allowed = (0..1000).filter(|_| budget.allow()).count();
        // 3 in one second; a second boundary during the loop can add at most 3 more.
        assert!((3..=6).contains(&allowed), "{allowed}");
    }
}
