//! Log shipping: every line of `access.log`, `error.log` and `blocking.log` also goes, as an
//! RFC 5424 message, to a central syslog server (`[logging.ship]`), through a disk queue that
//! keeps it until the server has it.
//!
//! ```text
//! writers ──try_send──▶ bounded channel ──▶ queue thread ──write()──▶ segment files (state_dir/ship)
//!  (never block)         (OUTBOX_CAPACITY)    (formats, appends,            │
//!                                              fdatasync ≤ 10 ms)           ▼
//!                                                           sender task (TLS / RELP) ──▶ syslog server
//!                                                           moves the cursor once delivered
//! ```
//!
//! - [`Outbox`] (in `telemetry::outbox`): what the log writers hold. `send` never blocks a request: it hands the line
//!   to a bounded channel, and a full channel (the queue thread stalled on the disk) drops
//!   the line and counts it.
//! - The queue thread ([`Shipping::start_writer`]) numbers each line, formats its RFC 5424
//!   message ([`syslog`]) and appends it to the [`queue`]; a line refused because the queue
//!   holds `queue_max` bytes is dropped (the oldest lines are kept), counted, and said once in
//!   `error.log` until the queue has room again.
//! - The sender ([`Shipping::run`], in [`sender`]) connects, verifies the server against
//!   `ca`, presents `client_cert` when set, and delivers in order: RFC 5425 frames (`tls`) or
//!   RELP (`relp`, [`relp`]). It reconnects forever with capped exponential backoff and
//!   jitter; every failure is a line in `error.log` (once per distinct failure) and
//!   `last_error` in status, never a crash.
//!
//! Delivery guarantees per failure are in `docs/logging.md` ("What is guaranteed").

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::ShipConfig;
use crate::telemetry::logging::ErrorLog;

mod crc32;
pub mod link;
pub mod queue;
pub mod relp;
pub mod sender;
pub mod syslog;

use crate::telemetry::outbox::{Entry, Inbox};
pub use crate::telemetry::outbox::{Level, LogName, Outbox};

/// Lines waiting between the writers and the queue thread; more are dropped (counted) ...
pub const OUTBOX_CAPACITY: usize = 65_536;
/// ... and their bytes (so that long lines cannot make it hold a gigabyte).
pub const OUTBOX_BYTES: usize = 32 << 20;
/// Lines the queue thread appends in one write.
const WRITE_BATCH: usize = 1024;
/// Once asked to stop, the queue thread writes what keeps coming for at most this long.
const STOP_WITHIN: Duration = Duration::from_secs(1);
/// After a short batch, the queue thread waits this long for more lines before the next write.
const WRITE_PACE: Duration = Duration::from_millis(1);

/// What the queue thread needs once the error log (which ships through the [`Outbox`]) exists.
#[derive(Debug)]
pub struct PendingWriter {
    rx: Inbox,
    writer: queue::QueueWriter,
    origin: syslog::Origin,
    /// Said in `error.log` once it exists (a damaged queue moved aside).
    notice: Option<String>,
}

/// Counters and the last failure, for status and metrics.
#[derive(Debug, Default)]
struct Stats {
    connected: AtomicBool,
    sent: AtomicU64,
    acknowledged: AtomicU64,
    reconnects: AtomicU64,
    /// Shared with the [`Outbox`], which counts the lines a full channel drops.
    dropped: Arc<AtomicU64>,
    full: AtomicBool,
    last_error: Mutex<Option<String>>,
}

/// The log shipping of one edge.
#[derive(Debug)]
pub struct Shipping {
    config: ShipConfig,
    queue: Arc<queue::Queue>,
    stats: Stats,
    /// Asks the queue thread to write what it has and stop.
    stop: AtomicBool,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// For writers that come later than the logs opened at start (`firewall.log`).
    outbox: Outbox,
}

/// `status --json`'s `shipping` object (and the metrics' source).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ShippingStatus {
    /// `tls` or `relp`.
    pub protocol: String,
    /// The syslog server (`host:port`).
    pub address: String,
    /// Connected and delivering.
    pub connected: bool,
    /// Lines in the queue not yet delivered.
    pub queued: u64,
    /// Their bytes on disk.
    pub queued_bytes: u64,
    /// The cap (`queue_max`).
    pub queue_max_bytes: u64,
    /// Age of the oldest queued line (0 when none).
    pub oldest_queued_age_s: u64,
    /// Lines written to the server since start.
    pub sent: u64,
    /// Lines the server acknowledged since start (RELP; 0 with `tls`, which has no
    /// acknowledgements).
    pub acknowledged: u64,
    /// Connections opened after the first.
    pub reconnects: u64,
    /// Lines not shipped since start because the queue was full (or stalled).
    pub dropped: u64,
    /// The queue is at `queue_max` now: new lines are being dropped.
    pub queue_full: bool,
    /// The last failure (connecting, TLS, the server's answer), until the next success.
    pub last_error: Option<String>,
}

impl Shipping {
    /// Opens the queue in `state_dir/ship`; returns the shipping, the writers' outbox, and the
    /// queue thread to start once the error log exists ([`Shipping::start_writer`]).
    ///
    /// A queue directory that cannot be opened (damaged by hand or by the disk) does not keep
    /// the edge from starting: it is moved aside to `ship.damaged-<unix ms>`, kept for a look,
    /// and a new queue starts; the queue thread says so in `error.log`. Only a state directory
    /// where not even that works is an error.
    pub fn open(config: &ShipConfig, state_dir: &Path, server_name: &str) -> std::io::Result<(Arc<Shipping>, Outbox, PendingWriter)> {
        let dir = state_dir.join("ship");
        let mut notice = None;
        let (queue, writer, recovered) = match queue::Queue::open(&dir, config.queue_max) {
            Ok(opened) => opened,
            Err(error) if dir.exists() => {
                let aside = state_dir.join(format!("ship.damaged-{}", crate::clock::unix_ms()));
                std::fs::rename(&dir, &aside)?;
                notice = Some(format!(
                    "log shipping: the queue in {} could not be opened ({error}); it was moved to {} and a new queue started: lines queued there are not shipped",
                    dir.display(),
                    aside.display()
                ));
                queue::Queue::open(&dir, config.queue_max)?
            }
            Err(error) => return Err(error),
        };
        if recovered.records > 0 || recovered.cut_bytes > 0 {
            tracing::info!(
                "log shipping: {} line(s) queued from before the restart{}",
                recovered.records,
                if recovered.cut_bytes > 0 { format!(", {} torn byte(s) cut", recovered.cut_bytes) } else { String::new() }
            );
        }
        let stats = Stats::default();
        let (outbox, rx) = Outbox::new(OUTBOX_CAPACITY, OUTBOX_BYTES, stats.dropped.clone());
        let shipping = Arc::new(Shipping {
            config: config.clone(),
            queue,
            stats,
            stop: AtomicBool::new(false),
            writer_thread: Mutex::new(None),
            outbox: outbox.clone(),
        });
        Ok((shipping, outbox, PendingWriter { rx, writer, origin: syslog::Origin::new(server_name, std::process::id()), notice }))
    }

    /// Starts the queue thread; it reports a full queue in `error_log`.
    pub fn start_writer(self: &Arc<Self>, pending: PendingWriter, error_log: ErrorLog) -> std::io::Result<()> {
        let shipping = self.clone();
        let handle = std::thread::Builder::new().name("log-ship-queue".into()).spawn(move || shipping.write_loop(pending, error_log))?;
        *self.writer_thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
        Ok(())
    }

    /// Stops the queue thread after it wrote and synced what it holds (shutdown). The sender
    /// stops with the drain; what it did not deliver stays queued for the next start.
    pub fn stop_writer(&self) {
        self.stop.store(true, Ordering::Relaxed);
        let handle = self.writer_thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }

    fn write_loop(&self, pending: PendingWriter, error_log: ErrorLog) {
        let PendingWriter { rx, mut writer, origin, notice } = pending;
        if let Some(notice) = notice {
            error_log.error(&notice);
        }
        let mut batch: Vec<Entry> = Vec::with_capacity(WRITE_BATCH);
        let mut failing = false;
        let mut stop_asked_ms = None;
        loop {
            let stopping = self.stop.load(Ordering::Relaxed);
            if stopping && stop_asked_ms.is_none() {
                stop_asked_ms = Some(crate::clock::unix_ms());
            }
            match rx.recv_timeout(Duration::from_millis(queue::SYNC_EVERY_MS)) {
                Ok(entry) => batch.push(entry),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            while batch.len() < WRITE_BATCH
                && let Some(entry) = rx.try_recv()
            {
                batch.push(entry);
            }
            let wrote = !batch.is_empty();
            if wrote {
                let appended = writer.append(&batch, |e, index, out| {
                    syslog::format_message(out, &origin, e.log, e.level, e.at, index, &e.line);
                });
                match appended {
                    Ok(refused) => {
                        failing = false;
                        self.note_refused(refused, &error_log);
                    }
                    Err(error) if !failing => {
                        failing = true;
                        error_log.error(&format!("log shipping: cannot write the queue in {}: {error}", self.queue_dir()));
                        self.stats.dropped.fetch_add(batch.len() as u64, Ordering::Relaxed);
                    }
                    Err(_) => {
                        self.stats.dropped.fetch_add(batch.len() as u64, Ordering::Relaxed);
                    }
                }
                // A short batch: let the next lines gather for a moment, so that a steady trickle
                // costs one write (and one wake-up of the sender) per WRITE_PACE, not per line.
                if batch.len() < WRITE_BATCH && !stopping {
                    std::thread::sleep(WRITE_PACE);
                }
                batch.clear();
            }
            let _ = writer.sync_if_due();
            if let Err(error) = writer.persist_delivery()
                && !failing
            {
                failing = true;
                error_log.error(&format!("log shipping: cannot write the delivery cursor in {}: {error}", self.queue_dir()));
            }
            // Stopping: once a round found the channel empty, everything handed over is written;
            // connections still logging after STOP_WITHIN do not hold the stop (their lines
            // stay in the file logs).
            let overdue = stop_asked_ms.is_some_and(|at| crate::clock::unix_ms().saturating_sub(at) >= STOP_WITHIN.as_millis() as u64);
            if stopping && (!wrote || overdue) {
                break;
            }
        }
        let _ = writer.sync();
        let _ = writer.persist_delivery();
    }

    /// Counts lines refused by a full queue; says so in `error.log` when it fills and when it
    /// has room again.
    fn note_refused(&self, refused: usize, error_log: &ErrorLog) {
        let was_full = self.stats.full.load(Ordering::Relaxed);
        if refused > 0 {
            self.stats.dropped.fetch_add(refused as u64, Ordering::Relaxed);
            if !was_full {
                self.stats.full.store(true, Ordering::Relaxed);
                error_log.error(&format!(
                    "log shipping: queue full ({} bytes, logging.ship.queue_max): new lines are not shipped until {} takes the queued ones (the file logs keep them)",
                    self.queue.max_bytes(),
                    self.address()
                ));
            }
        } else if was_full && self.queue.queued_bytes() < self.queue.max_bytes() / 2 {
            self.stats.full.store(false, Ordering::Relaxed);
            error_log.warn(&format!(
                "log shipping: the queue has room again; {} line(s) were not shipped since start",
                self.stats.dropped.load(Ordering::Relaxed)
            ));
        }
    }

    fn queue_dir(&self) -> String {
        self.queue.dir().display().to_string()
    }

    /// The writers' handle, for a log opened after start.
    pub fn outbox(&self) -> Outbox {
        self.outbox.clone()
    }

    /// `host:port` of the server.
    pub fn address(&self) -> String {
        if self.config.host.contains(':') {
            format!("[{}]:{}", self.config.host, self.config.port)
        } else {
            format!("{}:{}", self.config.host, self.config.port)
        }
    }

    /// Runs the sender until `stop` completes.
    pub async fn run(self: Arc<Self>, error_log: ErrorLog, stop: impl std::future::Future<Output = ()>) {
        sender::run(&self, &error_log, stop).await;
    }

    /// Lines written to the queue since it began (across restarts): benchmarks wait on it.
    pub fn appended(&self) -> u64 {
        self.queue.appended()
    }

    /// The numbers status and metrics show.
    pub fn status(&self) -> ShippingStatus {
        let stats = &self.stats;
        let oldest = self.queue.oldest_at_ms().map_or(0, |at| crate::clock::unix_ms().saturating_sub(at) / 1000);
        ShippingStatus {
            protocol: self.config.protocol.as_str().to_string(),
            address: self.address(),
            connected: stats.connected.load(Ordering::Relaxed),
            queued: self.queue.queued(),
            queued_bytes: self.queue.queued_bytes(),
            queue_max_bytes: self.queue.max_bytes(),
            oldest_queued_age_s: oldest,
            sent: stats.sent.load(Ordering::Relaxed),
            acknowledged: stats.acknowledged.load(Ordering::Relaxed),
            reconnects: stats.reconnects.load(Ordering::Relaxed),
            dropped: stats.dropped.load(Ordering::Relaxed),
            queue_full: stats.full.load(Ordering::Relaxed),
            last_error: stats.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ShipProtocol;

    fn config() -> ShipConfig {
        ShipConfig {
            host: "127.0.0.1".into(),
            port: 9,
            protocol: ShipProtocol::Tls,
            server_name: "localhost".into(),
            ca: "/nonexistent/ca.pem".into(),
            client_identity: None,
            queue_max: 1 << 20,
        }
    }

    #[test]
    fn a_damaged_queue_directory_is_moved_aside_and_a_new_queue_starts() {
        let state = tempfile::tempdir().unwrap();
        let ship = state.path().join("ship");
        std::fs::create_dir_all(ship.join("cursor")).unwrap(); // the cursor file is a directory
        std::fs::write(ship.join("00000000000000000000.seg"), b"kept for a look").unwrap();
        let (shipping, outbox, pending) = Shipping::open(&config(), state.path(), "edge").unwrap();
        let notice = pending.notice.clone().unwrap();
        assert!(notice.contains("moved to") && notice.contains("ship.damaged-"), "{notice}");
        let aside: Vec<_> = std::fs::read_dir(state.path())
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with("ship.damaged-"))
            .collect();
        assert_eq!(aside.len(), 1);
        assert_eq!(std::fs::read(state.path().join(&aside[0]).join("00000000000000000000.seg")).unwrap(), b"kept for a look");
        shipping.start_writer(pending, ErrorLog::console_only()).unwrap();
        outbox.send(LogName::Access, Level::Info, "a line");
        let appended = (0..500).any(|_| {
            std::thread::sleep(Duration::from_millis(10));
            shipping.appended() == 1
        });
        assert!(appended, "the new queue takes lines");
        shipping.stop_writer();
    }

    #[test]
    fn the_queue_thread_stops_even_while_lines_keep_coming() {
        let state = tempfile::tempdir().unwrap();
        let (shipping, outbox, pending) = Shipping::open(&config(), state.path(), "edge").unwrap();
        shipping.start_writer(pending, ErrorLog::console_only()).unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..2)
            .map(|_| {
                let (outbox, done) = (outbox.clone(), done.clone());
                std::thread::spawn(move || {
                    while !done.load(Ordering::Relaxed) {
                        outbox.send(LogName::Access, Level::Info, "still logging");
                        std::thread::yield_now();
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(50));
        let (stopped_tx, stopped_rx) = std::sync::mpsc::channel();
        let stopping = shipping.clone();
        std::thread::spawn(move || {
            stopping.stop_writer();
            let _ = stopped_tx.send(());
        });
        let stopped = stopped_rx.recv_timeout(STOP_WITHIN * 3).is_ok();
        done.store(true, Ordering::Relaxed);
        for writer in writers {
            writer.join().unwrap();
        }
        assert!(stopped, "stop_writer returned while connections kept logging");
        assert!(shipping.appended() > 0);
    }
}
