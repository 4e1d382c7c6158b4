//! The hand-over between the log writers (`access.log`, `error.log`, `blocking.log`) and log
//! shipping: [`Outbox::send`] puts a line on a bounded channel the shipping's queue thread
//! reads, and never blocks — a full channel drops the line and counts it. Apart from
//! `ship`, so the logs and the shipping (which writes its own troubles to `error.log`) do
//! not import each other.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::SystemTime;

/// Longest line shipped (bytes); longer lines are cut (the file log keeps them whole).
pub const MAX_SHIPPED_LINE: usize = 16 * 1024;

/// Which log a line belongs to (the MSGID, and the facility).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogName {
    Access,
    Error,
    Blocking,
}

/// The severity of a line (RFC 5424 numeric severities).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// 3: an `error.log` `[error]` line.
    Error = 3,
    /// 4: an `error.log` `[warn]` line, a `blocking.log` ban.
    Warning = 4,
    /// 6: an access-log line.
    Info = 6,
}

/// One line on its way to the queue.
#[derive(Debug)]
pub struct Entry {
    pub log: LogName,
    pub level: Level,
    pub at: SystemTime,
    pub line: String,
}

/// The log writers' handle (cheap to clone).
#[derive(Clone, Debug)]
pub struct Outbox {
    tx: SyncSender<Entry>,
    dropped: Arc<AtomicU64>,
}

impl Outbox {
    /// An outbox of `capacity` lines and its receiving end; `dropped` counts the lines a
    /// full channel refuses.
    pub fn new(capacity: usize, dropped: Arc<AtomicU64>) -> (Outbox, Receiver<Entry>) {
        let (tx, rx) = std::sync::mpsc::sync_channel(capacity);
        (Outbox { tx, dropped }, rx)
    }

    /// Ships `line` (its line end is dropped, and it is cut at [`MAX_SHIPPED_LINE`]). Never
    /// blocks; a full channel drops the line and counts it.
    pub fn send(&self, log: LogName, level: Level, line: &str) {
        let mut end = line.len().min(MAX_SHIPPED_LINE);
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        let line = line[..end].trim_end_matches('\n').to_string();
        match self.tx.try_send(Entry { log, level, at: SystemTime::now(), line }) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_outbox_drops_and_counts_instead_of_blocking() {
        let dropped = Arc::new(AtomicU64::new(0));
        let (outbox, rx) = Outbox::new(2, dropped.clone());
        for _ in 0..5 {
            outbox.send(LogName::Access, Level::Info, "line\n");
        }
        assert_eq!(dropped.load(Ordering::Relaxed), 3);
        assert_eq!(rx.try_recv().unwrap().line, "line");
        let long = "é".repeat(MAX_SHIPPED_LINE);
        drop(rx.try_recv());
        outbox.send(LogName::Error, Level::Error, &long);
        let cut = rx.try_recv().unwrap().line;
        assert!(cut.len() <= MAX_SHIPPED_LINE && cut.len() >= MAX_SHIPPED_LINE - 1, "{}", cut.len());
    }
}
