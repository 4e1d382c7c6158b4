//! `blocking.log`, fail2ban's feed: a subscriber of the event bus that writes one line per
//! ban, in the format of the nginx Lua scripts it replaces (a stock fail2ban filter reads it;
//! the integration tests run the real `fail2ban-regex` against it). Its format is fail2ban's
//! contract, so `logging.format = "json"` leaves it as it is; with `[logging.ship]` each line
//! is shipped too.

use std::path::Path;
use std::time::SystemTime;

use crate::event::{Event, Received, RequestSummary, Subscriber};
use crate::telemetry::access_log::MAX_LOGGED_PATH;
use crate::telemetry::logging::{ErrorLog, LogFile, escaped, nginx_time};
use crate::telemetry::outbox::{Level, LogName, Outbox};

/// The open `blocking.log` of one edge.
pub struct BlockingLog {
    file: LogFile,
    server_name: String,
    outbox: Option<Outbox>,
}

impl BlockingLog {
    /// Opens (appends to) `blocking.log` in `log_dir`.
    pub fn open(log_dir: &Path, server_name: &str) -> std::io::Result<BlockingLog> {
        let file = LogFile::open(&log_dir.join("blocking.log"))?;
        Ok(BlockingLog { file, server_name: server_name.to_string(), outbox: None })
    }

    /// The file, to reopen it after log rotation while [`BlockingLog::follow`] runs.
    pub fn file(&self) -> LogFile {
        self.file.clone()
    }

    /// Ships every line through `outbox` too (`[logging.ship]`).
    pub fn shipping(mut self, outbox: Option<Outbox>) -> BlockingLog {
        self.outbox = outbox;
        self
    }

    /// Writes a line per ban published on `events` until the bus closes; a lag is reported in
    /// `error_log` (the bans themselves still apply).
    pub async fn follow(self, mut events: Subscriber, error_log: ErrorLog) {
        while let Some(received) = events.next().await {
            match received {
                Received::Event(event) => {
                    if let Event::Banned { client, minutes, request, .. } = &*event {
                        let line = self.line(*client, *minutes, request.as_ref(), SystemTime::now());
                        self.file.write(line.as_bytes());
                        if let Some(outbox) = &self.outbox {
                            outbox.send(LogName::Blocking, Level::Warning, &line);
                        }
                    }
                }
                Received::Missed(missed) => {
                    error_log.error(&format!("blocking.log fell behind: up to {missed} ban line(s) not written"));
                }
            }
        }
    }

    fn line(&self, client: std::net::IpAddr, minutes: u64, request: Option<&RequestSummary>, now: SystemTime) -> String {
        let (method, path, protocol, host) = match request {
            Some(r) => (r.method.as_str(), r.path.as_str(), r.protocol.as_str(), r.host.as_str()),
            None => ("-", "-", "-", "-"),
        };
        format!(
            "{} [emerg] {}#0: {client} will be blocked for {minutes} minutes for exceeding retry limit., client: {client}, server: {}, request: \"{} {} {}\", host: \"{}\"\n",
            nginx_time(now),
            std::process::id(),
            self.server_name,
            escaped(method),
            escaped(path).max(MAX_LOGGED_PATH),
            escaped(protocol),
            escaped(host),
        )
    }
}
