//! The hand-over between the log writers (`access.log`, `error.log`, `blocking.log`) and log
//! shipping: [`Outbox::send`] puts a line on a channel the shipping's queue thread reads
//! ([`Inbox`]), bounded in lines and in bytes, and never blocks — a full channel drops the
//! line and counts it. Apart from
//! `ship`, so the logs and the shipping (which writes its own troubles to `error.log`) do
//! not import each other.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, SystemTime};

/// Longest line shipped (bytes); longer lines are cut (the file log keeps them whole).
pub const MAX_SHIPPED_LINE: usize = 16 * 1024;

/// Which log a line belongs to (the MSGID, and the facility).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogName {
    Access,
    Error,
    Blocking,
    Firewall,
}

/// The severity of a line (RFC 5424 numeric severities).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// 3: an `error.log` `[error]` line.
    Error = 3,
    /// 4: an `error.log` `[warn]` line, a `blocking.log` ban.
    Warning = 4,
    /// 5: a `firewall.log` line (a ruleset applied or removed).
    Notice = 5,
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
    /// Bytes of the lines in the channel, and their cap.
    in_flight: Arc<AtomicUsize>,
    max_bytes: usize,
}

/// The queue thread's end of the channel.
#[derive(Debug)]
pub struct Inbox {
    rx: Receiver<Entry>,
    in_flight: Arc<AtomicUsize>,
}

impl Outbox {
    /// An outbox of `capacity` lines and `max_bytes` bytes of lines, and its receiving end;
    /// `dropped` counts the lines a full channel refuses.
    pub fn new(capacity: usize, max_bytes: usize, dropped: Arc<AtomicU64>) -> (Outbox, Inbox) {
        let (tx, rx) = std::sync::mpsc::sync_channel(capacity);
        let in_flight = Arc::new(AtomicUsize::new(0));
        (Outbox { tx, dropped, in_flight: in_flight.clone(), max_bytes }, Inbox { rx, in_flight })
    }

    /// Ships `line` (its line end is dropped, and it is cut at [`MAX_SHIPPED_LINE`]). Never
    /// blocks; a full channel drops the line and counts it.
    pub fn send(&self, log: LogName, level: Level, line: &str) {
        let mut end = line.len().min(MAX_SHIPPED_LINE);
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        let line = line[..end].trim_end_matches('\n').to_string();
        let size = line.len();
        if self.in_flight.fetch_add(size, Ordering::Relaxed) + size > self.max_bytes {
            self.in_flight.fetch_sub(size, Ordering::Relaxed);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        match self.tx.try_send(Entry { log, level, at: SystemTime::now(), line }) {
            Ok(()) => {}
            Err(TrySendError::Disconnected(_)) => {
                self.in_flight.fetch_sub(size, Ordering::Relaxed);
            }
            Err(TrySendError::Full(_)) => {
                self.in_flight.fetch_sub(size, Ordering::Relaxed);
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl Inbox {
    /// The next line, waiting at most `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Entry, RecvTimeoutError> {
        self.rx.recv_timeout(timeout).inspect(|entry| self.taken(entry))
    }

    /// The next line if one is there.
    pub fn try_recv(&self) -> Option<Entry> {
        self.rx.try_recv().ok().inspect(|entry| self.taken(entry))
    }

    fn taken(&self, entry: &Entry) {
        self.in_flight.fetch_sub(entry.line.len(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_outbox_drops_and_counts_instead_of_blocking() {
        let dropped = Arc::new(AtomicU64::new(0));
        let (outbox, rx) = Outbox::new(2, 1 << 20, dropped.clone());
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

    #[test]
    fn the_outbox_is_bounded_in_bytes_too_and_taking_lines_makes_room() {
        let dropped = Arc::new(AtomicU64::new(0));
        let (outbox, rx) = Outbox::new(1000, 3 * 1024, dropped.clone());
        let line = "x".repeat(1024);
        for _ in 0..5 {
            outbox.send(LogName::Access, Level::Info, &line);
        }
        assert_eq!(dropped.load(Ordering::Relaxed), 2, "three lines of 1 KiB fill 3 KiB");
        assert!(rx.try_recv().is_some());
        outbox.send(LogName::Access, Level::Info, &line);
        assert_eq!(dropped.load(Ordering::Relaxed), 2, "a line taken made room for one");
        assert_eq!((0..5).filter_map(|_| rx.try_recv()).count(), 3);
        assert_eq!(rx.in_flight.load(Ordering::Relaxed), 0);
    }
}
