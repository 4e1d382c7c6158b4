//! Programs from outside the crate that tests need: whether a missing one skips or fails a
//! test (`PORTCULLIS_REQUIRE_<TOOL>`), and a private `redis-server` fixture.
//!
//! Shared by the integration tests (`support::external`) and the unit tests of the Redis
//! store (`src/cluster/redis/tests.rs` includes this file with `#[path]`), so it uses only
//! std, `tempfile`, `socket2` and `redis`, never the test support around it.
//!
//! # A race-free port for `redis-server`
//!
//! Redis cannot be told to pick its own port and report it (`--port 0` means "no TCP"), so
//! the fixture picks one the OS says is free (bind `127.0.0.1:0`, close) and starts Redis on
//! it. Another process may take the port in between; then Redis exits with "Address already
//! in use" and the fixture tries again on a new port (at most [`ATTEMPTS`] times). Redis is
//! ready when the server answering `INFO server` on the port reports *our* child's
//! `process_id`: a PING could be answered by someone else's server that won the port. Every
//! wait is bounded ([`READY_WITHIN`] per attempt) and fails with Redis's own log.
//!
//! While a test has stopped Redis to simulate an outage ([`RedisServer::stop`]), the fixture
//! holds its ports bound (not listening, so clients are refused exactly as by a dead server)
//! so nobody else takes them before [`RedisServer::restart`] brings Redis back on them.
//!
//! Redis runs with `--dir` in its own temporary directory and without persistence (`--save ""`,
//! `--appendonly no`), so nothing (`dump.rdb` written for a replica's sync, a Sentinel's
//! rewritten configuration) lands in the working directory; it is killed and reaped on drop.

use std::ffi::OsStr;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Start attempts on fresh ports before giving up (each lost only to a port race).
pub const ATTEMPTS: usize = 5;
/// How long one start may take until Redis answers.
pub const READY_WITHIN: Duration = Duration::from_secs(10);

/// Whether the value of a `PORTCULLIS_REQUIRE_<TOOL>` variable asks for the tool: set to
/// anything but empty, `0` or `false` (any case).
pub fn required_by(value: Option<&OsStr>) -> bool {
    value.is_some_and(|v| {
        let v = v.to_string_lossy();
        let v = v.trim();
        !(v.is_empty() || v == "0" || v.eq_ignore_ascii_case("false"))
    })
}

/// Whether `PORTCULLIS_REQUIRE_<tool>` (e.g. `required("REDIS")`) makes a missing tool a test
/// failure instead of a skip (`.ci/run` sets it to `1` for every tool CI installs).
pub fn required(tool: &str) -> bool {
    required_by(std::env::var_os(format!("PORTCULLIS_REQUIRE_{tool}")).as_deref())
}

/// A test cannot run because `why`: fails the test when [`required`]`(tool)`, otherwise prints
/// `SKIPPED: why` (the caller then returns).
pub fn missing(tool: &str, why: &str) {
    assert!(!required(tool), "{why} (and PORTCULLIS_REQUIRE_{tool} is set)");
    eprintln!("SKIPPED: {why}");
}

/// Whether `redis-server` can be run here; otherwise [`missing`]`("REDIS", …)`.
pub fn redis_available() -> bool {
    let installed = Command::new("redis-server").arg("--version").output().is_ok_and(|o| o.status.success());
    if !installed {
        missing("REDIS", "redis-server not installed");
    }
    installed
}

/// What to start: extra configuration and arguments (see [`RedisServer::options`]).
#[derive(Debug, Default, Clone)]
pub struct RedisOptions {
    config: String,
    args: Vec<String>,
    tls: bool,
}

impl RedisOptions {
    /// Configuration-file text (a Sentinel needs a file it can rewrite); written to the
    /// server's directory.
    pub fn config(mut self, text: &str) -> Self {
        self.config.push_str(text);
        self
    }

    /// Extra command-line arguments (e.g. `--replicaof`, `--sentinel`, certificate files).
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| (*a).to_string()));
        self
    }

    /// Also listens with TLS on a second free port ([`RedisServer::tls_port`]); the
    /// certificate arguments go through [`RedisOptions::args`]. The plain port stays open, so
    /// readiness is still checked over plain TCP.
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// Starts the server (see the module documentation); panics, with Redis's log, when it
    /// cannot.
    pub fn start(self) -> RedisServer {
        let dir = tempfile::Builder::new().prefix("redis-").tempdir().expect("a temporary directory for redis-server");
        let mut server = RedisServer { port: 0, tls_port: None, options: self, dir, process: None, held: Vec::new() };
        let mut last = String::new();
        for _ in 0..ATTEMPTS {
            server.port = free_port();
            server.tls_port = server.options.tls.then(free_port);
            match server.launch() {
                Ok(()) => return server,
                Err(Launch::PortTaken(log)) => last = log,
                Err(Launch::Failed(why)) => panic!("{why}"),
            }
        }
        panic!("redis-server lost the race for a free port {ATTEMPTS} times; last log:\n{last}");
    }
}

/// A private `redis-server` on 127.0.0.1, killed and reaped on drop.
#[derive(Debug)]
pub struct RedisServer {
    /// The plain-TCP port.
    pub port: u16,
    /// The TLS port, when started with [`RedisOptions::tls`].
    pub tls_port: Option<u16>,
    options: RedisOptions,
    dir: tempfile::TempDir,
    process: Option<Child>,
    /// The ports, bound but not listening, while stopped.
    held: Vec<socket2::Socket>,
}

enum Launch {
    /// Another process took a port first: try others.
    PortTaken(String),
    Failed(String),
}

impl RedisServer {
    /// A plain server, or `None` when `redis-server` is not installed (see
    /// [`redis_available`]: the test is skipped, or fails when Redis is required).
    pub fn start() -> Option<RedisServer> {
        redis_available().then(|| RedisServer::options().start())
    }

    /// Options for a server with more configuration (replica, Sentinel, TLS).
    pub fn options() -> RedisOptions {
        RedisOptions::default()
    }

    /// `redis://127.0.0.1:<port>/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Redis's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    /// A connection over plain TCP (short timeouts).
    pub fn connection(&self) -> redis::RedisResult<redis::Connection> {
        connect(self.port)
    }

    /// How many clients are subscribed to `channel` (`PUBSUB NUMSUB`; 0 when Redis does not
    /// answer).
    pub fn subscribers(&self, channel: &str) -> usize {
        let Ok(mut c) = self.connection() else { return 0 };
        redis::cmd("PUBSUB").arg("NUMSUB").arg(channel).query::<(String, usize)>(&mut c).map_or(0, |(_, n)| n)
    }

    /// Kills Redis (an outage: data is lost, there is no persistence) and holds its ports
    /// until [`RedisServer::restart`], so clients are refused as by a dead server.
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
        if self.held.is_empty() {
            self.held = self.ports().into_iter().filter_map(hold).collect();
        }
    }

    /// Starts Redis again, empty, on the same ports with the same options (the clients were
    /// configured with them, so there is no other port to try).
    pub fn restart(&mut self) {
        self.stop();
        self.held.clear();
        match self.launch() {
            Ok(()) => {}
            Err(Launch::PortTaken(log)) => panic!("redis-server could not get its port {:?} back:\n{log}", self.ports()),
            Err(Launch::Failed(why)) => panic!("{why}"),
        }
    }

    fn ports(&self) -> Vec<u16> {
        std::iter::once(self.port).chain(self.tls_port).collect()
    }

    /// Spawns Redis on the chosen ports and waits until it answers as itself.
    fn launch(&mut self) -> Result<(), Launch> {
        let dir = self.dir.path().to_path_buf();
        let log_path = dir.join("redis.log");
        let log = std::fs::File::create(&log_path).map_err(|e| Launch::Failed(format!("redis.log: {e}")))?;
        let mut command = Command::new("redis-server");
        if !self.options.config.is_empty() {
            let config: PathBuf = dir.join("redis.conf");
            std::fs::write(&config, &self.options.config).map_err(|e| Launch::Failed(format!("redis.conf: {e}")))?;
            command.arg(config);
        }
        command.arg("--port").arg(self.port.to_string()).args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
        command.arg("--dir").arg(&dir);
        if let Some(tls_port) = self.tls_port {
            command.arg("--tls-port").arg(tls_port.to_string());
        }
        command.args(&self.options.args);
        let stderr = log.try_clone().map_err(|e| Launch::Failed(format!("redis.log: {e}")))?;
        let process = command
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .spawn()
            .map_err(|e| Launch::Failed(format!("cannot run redis-server: {e}")))?;
        let pid = process.id();
        self.process = Some(process);
        let deadline = tokio::time::Instant::now() + READY_WITHIN;
        loop {
            if let Some(status) = self.process.as_mut().and_then(|p| p.try_wait().ok().flatten()) {
                self.process = None;
                let log = self.log();
                return Err(if log.contains("Address already in use") {
                    Launch::PortTaken(log)
                } else {
                    Launch::Failed(format!("redis-server exited ({status}) before answering:\n{log}"))
                });
            }
            if answering_pid(self.port) == Some(pid) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                self.stop();
                self.held.clear();
                return Err(Launch::Failed(format!(
                    "redis-server did not answer on 127.0.0.1:{} within {READY_WITHIN:?}:\n{}",
                    self.port,
                    self.log()
                )));
            }
            // Polling a child process: nothing to wait on but time.
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }
}

/// A port the OS reported free a moment ago (see the module documentation for the race).
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).and_then(|l| l.local_addr()).expect("a free loopback port").port()
}

/// `port` bound on 127.0.0.1 without listening: nobody else gets it, connections are refused.
fn hold(port: u16) -> Option<socket2::Socket> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
    socket.set_reuse_address(true).ok()?;
    socket.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, port)).into()).ok()?;
    Some(socket)
}

fn connect(port: u16) -> redis::RedisResult<redis::Connection> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/0"))?;
    let connection = client.get_connection_with_timeout(Duration::from_millis(500))?;
    connection.set_read_timeout(Some(Duration::from_secs(1)))?;
    connection.set_write_timeout(Some(Duration::from_secs(1)))?;
    Ok(connection)
}

/// The `process_id` of the server answering on `port`, if one answers.
fn answering_pid(port: u16) -> Option<u32> {
    let mut c = connect(port).ok()?;
    let info: String = redis::cmd("INFO").arg("server").query(&mut c).ok()?;
    info.lines().find_map(|l| l.strip_prefix("process_id:")).and_then(|pid| pid.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::required_by;
    use std::ffi::OsStr;

    #[test]
    fn a_require_variable_asks_for_the_tool_unless_unset_empty_0_or_false() {
        for unset in [None, Some(""), Some(" "), Some("0"), Some("false"), Some("FALSE"), Some("False")] {
            assert!(!required_by(unset.map(OsStr::new)), "{unset:?}");
        }
        for set in ["1", "true", "yes", "2"] {
            assert!(required_by(Some(OsStr::new(set))), "{set:?}");
        }
    }
}
