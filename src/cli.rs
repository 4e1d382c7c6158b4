//! Command line (clap): `serve`, `check`, and thin clients of the admin API (`status`,
//! `reload`, `blocked`, `exemptions`, `maintenance`, `web cert`, `web weight`, `refresh`,
//! `federation`). Exit codes: 0 ok, 1 failure, 64 usage or configuration error, 69 edge
//! unreachable.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, anyhow};
use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use http_body_util::{BodyExt, Full};

use crate::admin::Status;
use crate::config::Config;

mod federation;
mod operate;
mod render;
mod state;

/// Exit code: configuration or usage error (EX_USAGE).
pub const EXIT_USAGE: u8 = 64;
/// Exit code: the running edge could not be reached (EX_UNAVAILABLE).
pub const EXIT_UNREACHABLE: u8 = 69;

/// Portcullis: the secure internet edge for UC and contact-center deployments.
#[derive(Debug, Parser)]
#[command(name = "portcullis", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the edge.
    Serve {
        /// Configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a configuration file: print every error with its key path, bind nothing.
    Check {
        /// Configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Show the running edge's status.
    Status {
        #[command(flatten)]
        target: AdminTarget,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
    /// Make the running edge re-read its configuration file.
    Reload {
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Networks never counted in some shield categories.
    Exemptions {
        #[command(subcommand)]
        action: ExemptionAction,
    },
    /// Sources banned by the shield.
    Blocked {
        #[command(subcommand)]
        action: BlockedAction,
    },
    /// Maintenance mode of this peer: new sessions refused, established ones drain.
    Maintenance {
        #[command(subcommand)]
        action: operate::MaintenanceAction,
    },
    /// The web edge's certificate and upstream weights.
    Web {
        #[command(subcommand)]
        what: operate::WebCommand,
    },
    /// The SIP federation: partner domains, watch list, allow and block lists.
    Federation {
        #[command(subcommand)]
        action: federation::FederationAction,
    },
    /// Move durable state between stores (embedded ↔ Redis).
    State {
        #[command(subcommand)]
        action: state::StateAction,
    },
    /// Re-fetch JWKS keys and user lists, re-resolve upstreams, rebuild routing (atomically).
    Refresh {
        #[command(flatten)]
        target: AdminTarget,
    },
    /// The dynamic firewall (`[firewall]`): the nftables ruleset Portcullis owns.
    Firewall {
        #[command(subcommand)]
        action: FirewallAction,
    },
}

#[derive(Debug, Subcommand)]
enum FirewallAction {
    /// Print the ruleset the configuration makes (the listeners it names open, no bans);
    /// applies nothing and needs no privileges (`nft -c -f -` checks it).
    Show {
        /// Configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum ExemptionAction {
    /// List exemptions (from the file and added at run time).
    List {
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Exempt CIDR from the given categories.
    Add {
        #[command(flatten)]
        target: AdminTarget,
        /// Network, e.g. 203.0.113.0/24.
        cidr: String,
        /// Comma-separated categories, e.g. http-auth-failure,http-resource-access-failure.
        #[arg(long)]
        categories: String,
    },
    /// Remove a run-time exemption.
    Del {
        #[command(flatten)]
        target: AdminTarget,
        cidr: String,
    },
}

#[derive(Debug, Subcommand)]
enum BlockedAction {
    /// List the bans in force.
    List {
        #[command(flatten)]
        target: AdminTarget,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
    /// Ban IP by hand (its /64 for IPv6).
    Ban {
        #[command(flatten)]
        target: AdminTarget,
        /// The address to ban.
        ip: std::net::IpAddr,
        /// For how long.
        #[arg(long, default_value_t = 30)]
        minutes: u64,
    },
    /// Lift the ban on IP (its /64 for IPv6).
    Unblock {
        #[command(flatten)]
        target: AdminTarget,
        /// The banned address.
        ip: std::net::IpAddr,
    },
}

/// How a client verb finds the running edge.
#[derive(Debug, Args)]
struct AdminTarget {
    /// Read the admin address and token from this configuration file.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Admin API URL, e.g. http://127.0.0.1:9443.
    #[arg(long, env = "PORTCULLIS_ADMIN_URL")]
    admin: Option<String>,
    /// Admin bearer token.
    #[arg(long, env = "PORTCULLIS_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

/// A failure with its exit code.
struct Failure {
    code: u8,
    error: anyhow::Error,
}

impl Failure {
    fn usage(error: anyhow::Error) -> Failure {
        Failure { code: EXIT_USAGE, error }
    }
    fn failed(error: anyhow::Error) -> Failure {
        Failure { code: 1, error }
    }
    fn unreachable(error: anyhow::Error) -> Failure {
        Failure { code: EXIT_UNREACHABLE, error }
    }
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let code = if error.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = error.print();
            return ExitCode::from(code);
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("portcullis: {:#}", failure.error);
            ExitCode::from(failure.code)
        }
    }
}

fn load(path: &Path) -> Result<Config, Failure> {
    Config::load(path).map_err(|errors| {
        let n = errors.0.len();
        Failure::usage(anyhow!("{} has {n} error{}:\n{errors}", path.display(), if n == 1 { "" } else { "s" }))
    })
}

/// The async runtime of the commands that call an edge: one worker per core.
fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    runtime_with(std::thread::available_parallelism().map_or(1, usize::from))
}

/// The runtime `serve` runs on: one worker per core, or `server.workers` of them when the
/// HTTP listeners run on it (`server.runtime = "work-stealing"`). With `"per-core"` the HTTP
/// listeners have threads of their own (`runtime::workers`) and this runtime serves the rest.
fn serving_runtime(server: &crate::config::ServerConfig) -> Result<tokio::runtime::Runtime, Failure> {
    match server.workers {
        n if n > 0 && server.runtime == crate::config::RuntimeLayout::WorkStealing => runtime_with(n),
        _ => runtime(),
    }
}

/// With one thread a current-thread runtime (the edge pinned to a CPU, or a 1-vCPU VM: no
/// work-stealing bookkeeping); else tokio's multi-thread runtime with `threads` workers.
fn runtime_with(threads: usize) -> Result<tokio::runtime::Runtime, Failure> {
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    };
    builder.enable_all().build().map_err(|e| Failure::failed(anyhow!(e).context("cannot start the async runtime")))
}

fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Firewall { action: FirewallAction::Show { config } } => {
            let loaded = load(&config)?;
            let ruleset = crate::app::kernel::show(&loaded)
                .ok_or_else(|| Failure::usage(anyhow!("{}: [firewall] is not enabled (set enabled = true)", config.display())))?;
            write_stdout(&ruleset);
            Ok(())
        }
        Command::Check { config } => {
            let loaded = load(&config)?;
            let mut summary = format!(
                "{}: ok ({} listener(s), {} service(s), {} route(s))\n",
                config.display(),
                loaded.listeners.len() + loaded.sip.listeners.len(),
                loaded.services.len(),
                loaded.routes.len()
            );
            for warning in loaded.federation.warnings() {
                summary.push_str(&warning);
                summary.push('\n');
            }
            write_stdout(&summary);
            Ok(())
        }
        Command::Serve { config } => {
            let loaded = load(&config)?;
            crate::telemetry::logging::init_console();
            serving_runtime(&loaded.server)?.block_on(serve(loaded)).map_err(Failure::failed)
        }
        Command::Status { target, json } => {
            let (url, token) = target.resolve()?;
            let body = runtime()?.block_on(admin_call(&url, &token, http::Method::GET, "/api/v1/status"))?;
            if json {
                write_stdout(&format!("{}\n", String::from_utf8_lossy(&body)));
            } else {
                let status: Status =
                    serde_json::from_slice(&body).map_err(|e| Failure::failed(anyhow!("unexpected status answer: {e}")))?;
                write_stdout(&render::status(&status));
            }
            Ok(())
        }
        Command::Exemptions { action } => {
            let (target, method, path) = match action {
                ExemptionAction::List { target } => (target, http::Method::GET, "/api/v1/exemptions".to_string()),
                ExemptionAction::Add { target, cidr, categories } => (
                    target,
                    http::Method::POST,
                    format!(
                        "/api/v1/exemptions?cidr={}&categories={}",
                        crate::net::percent::encode(&cidr),
                        crate::net::percent::encode(&categories)
                    ),
                ),
                ExemptionAction::Del { target, cidr } => {
                    (target, http::Method::DELETE, format!("/api/v1/exemptions?cidr={}", crate::net::percent::encode(&cidr)))
                }
            };
            let (url, token) = target.resolve()?;
            let body = runtime()?.block_on(admin_call(&url, &token, method, &path))?;
            let list: Vec<serde_json::Value> =
                serde_json::from_slice(&body).map_err(|e| Failure::failed(anyhow!("unexpected answer: {e}")))?;
            let mut out = format!("{:<44} {:<8} {}\n", "NETWORK", "FROM", "CATEGORIES");
            for e in &list {
                let categories: Vec<&str> =
                    e["categories"].as_array().map(|a| a.iter().filter_map(|c| c.as_str()).collect()).unwrap_or_default();
                out.push_str(&format!(
                    "{:<44} {:<8} {}\n",
                    e["cidr"].as_str().unwrap_or("?"),
                    e["source"].as_str().unwrap_or("?"),
                    categories.join(",")
                ));
            }
            write_stdout(&out);
            Ok(())
        }
        Command::Blocked { action } => {
            match action {
                BlockedAction::List { target, json } => {
                    let (url, token) = target.resolve()?;
                    let body = runtime()?.block_on(admin_call(&url, &token, http::Method::GET, "/api/v1/blocked"))?;
                    if json {
                        write_stdout(&format!("{}\n", String::from_utf8_lossy(&body)));
                    } else {
                        let bans: Vec<serde_json::Value> =
                            serde_json::from_slice(&body).map_err(|e| Failure::failed(anyhow!("unexpected answer: {e}")))?;
                        let mut out = format!("{:<40} {:<28} {:<26} {:<26} {}\n", "SOURCE", "CATEGORY", "SINCE", "UNTIL", "HITS");
                        for ban in &bans {
                            let at = |key: &str| {
                                let ms = ban[key].as_u64().unwrap_or(0);
                                humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(ms)).to_string()
                            };
                            out.push_str(&format!(
                                "{:<40} {:<28} {:<26} {:<26} {}\n",
                                ban["source"].as_str().unwrap_or("?"),
                                ban["category"].as_str().unwrap_or("?"),
                                at("since_ms"),
                                at("until_ms"),
                                ban["hits"].as_u64().unwrap_or(0)
                            ));
                        }
                        out.push_str(&format!("{} banned\n", bans.len()));
                        write_stdout(&out);
                    }
                }
                BlockedAction::Ban { target, ip, minutes } => {
                    let (url, token) = target.resolve()?;
                    runtime()?.block_on(admin_call(
                        &url,
                        &token,
                        http::Method::POST,
                        &format!("/api/v1/blocked?ip={ip}&minutes={minutes}"),
                    ))?;
                    write_stdout(&format!("{ip} banned for {minutes} minutes\n"));
                }
                BlockedAction::Unblock { target, ip } => {
                    let (url, token) = target.resolve()?;
                    runtime()?.block_on(admin_call(&url, &token, http::Method::DELETE, &format!("/api/v1/blocked?ip={ip}")))?;
                    write_stdout(&format!("{ip} unblocked\n"));
                }
            }
            Ok(())
        }
        Command::Maintenance { action } => operate::maintenance(action),
        Command::State { action } => state::run(action),
        Command::Federation { action } => federation::run(action),
        Command::Web { what } => operate::web(what),
        Command::Refresh { target } => {
            let (url, token) = target.resolve()?;
            runtime()?.block_on(admin_call(&url, &token, http::Method::POST, "/api/v1/refresh"))?;
            write_stdout("refreshed: keys and user lists re-fetched, routing rebuilt\n");
            Ok(())
        }
        Command::Reload { target } => {
            let (url, token) = target.resolve()?;
            runtime()?.block_on(admin_call(&url, &token, http::Method::POST, "/api/v1/reload"))?;
            write_stdout("configuration reloaded\n");
            Ok(())
        }
    }
}

#[allow(clippy::print_stdout, reason = "the CLI's output goes to stdout")]
fn write_stdout(text: &str) {
    print!("{text}");
}

impl AdminTarget {
    fn resolve(self) -> Result<(String, String), Failure> {
        let from_config = match &self.config {
            Some(path) => {
                let config = load(path)?;
                let admin = config.admin.ok_or_else(|| Failure::usage(anyhow!("{} has no [admin] section", path.display())))?;
                let scheme = if admin.tls { "https" } else { "http" };
                let host = if admin.address.ip().is_unspecified() { "127.0.0.1".to_string() } else { admin.address.ip().to_string() };
                let host = if host.contains(':') { format!("[{host}]") } else { host };
                Some((format!("{scheme}://{host}:{}", admin.address.port()), admin.token.expose().to_string()))
            }
            None => None,
        };
        let url = self
            .admin
            .or_else(|| from_config.as_ref().map(|c| c.0.clone()))
            .ok_or_else(|| Failure::usage(anyhow!("no admin API: pass --config FILE, or --admin URL (or PORTCULLIS_ADMIN_URL)")))?;
        let token = self
            .token
            .or_else(|| from_config.map(|c| c.1))
            .ok_or_else(|| Failure::usage(anyhow!("no admin token: pass --token or set PORTCULLIS_ADMIN_TOKEN")))?;
        Ok((url, token))
    }
}

/// One request to the admin API (plain HTTP) without a body.
async fn admin_call(url: &str, token: &str, method: http::Method, path: &str) -> Result<Bytes, Failure> {
    admin_send(url, token, method, path, Bytes::new()).await
}

/// One request to the admin API (plain HTTP) with `body`.
async fn admin_send(url: &str, token: &str, method: http::Method, path: &str, body: Bytes) -> Result<Bytes, Failure> {
    let uri: http::Uri = url.parse().map_err(|_| Failure::usage(anyhow!("{url:?} is not a URL")))?;
    if uri.scheme_str() != Some("http") {
        return Err(Failure::usage(anyhow!("{url}: only http:// admin URLs are supported by the CLI (bind the admin API to loopback)")));
    }
    let authority = uri.authority().ok_or_else(|| Failure::usage(anyhow!("{url:?} has no host")))?.clone();
    let port = authority.port_u16().unwrap_or(80);
    let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_string();
    let connect = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect((host.as_str(), port))).await;
    let stream = match connect {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(Failure::unreachable(anyhow!(e).context(format!("cannot reach the edge at {url}")))),
        Err(_) => return Err(Failure::unreachable(anyhow!("timed out connecting to {url}"))),
    };
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.map_err(|e| Failure::unreachable(anyhow!(e)))?;
    tokio::spawn(connection);
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, authority.as_str())
        .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Full::new(body))
        .map_err(|e| Failure::failed(anyhow!(e)))?;
    let response = sender.send_request(request).await.map_err(|e| Failure::unreachable(anyhow!(e)))?;
    let status = response.status();
    let body = response.into_body().collect().await.map_err(|e| Failure::unreachable(anyhow!(e)))?.to_bytes();
    match status.as_u16() {
        200..=299 => Ok(body),
        401 => Err(Failure::usage(anyhow!("the edge refused the admin token (401)"))),
        _ => {
            // The admin API answers `{"error": "…"}`: show the message, not the JSON.
            let message = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_string());
            Err(Failure::failed(anyhow!("{} {}: {message}", status.as_u16(), path.split('?').next().unwrap_or(path))))
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    // Installed before the start binds anything: a signal that arrives while it starts (the
    // admin port already accepts) is acted on once it has started, instead of killing the
    // process by the signal's default action (a SIGHUP or SIGUSR1 from log rotation, or a
    // SIGTERM that would leave the firewall's tables behind like a crash).
    let mut hangup = signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
    let mut user1 = signal(SignalKind::user_defined1()).context("cannot install the SIGUSR1 handler")?;
    // A SIGTERM or SIGINT while it starts: it stops as soon as it has started (its tables
    // removed, as on any clean stop); a second one ends a start that hangs, at once.
    let start = crate::app::start(config);
    tokio::pin!(start);
    let mut stop_asked = false;
    let running = loop {
        let signal = tokio::select! {
            started = &mut start => break started?,
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        };
        if stop_asked {
            anyhow::bail!("{signal} again while starting: stopped before the start finished");
        }
        tracing::warn!("{signal} while starting: stopping as soon as the start finishes");
        stop_asked = true;
    };
    while !stop_asked {
        tokio::select! {
            _ = user1.recv() => {
                tracing::info!("SIGUSR1: reopening the log files");
                running.reopen_logs();
            }
            _ = hangup.recv() => {
                tracing::info!("SIGHUP: reloading the configuration");
                if let Err(errors) = running.reload().await {
                    tracing::error!("reload refused: {}", errors.join("; "));
                }
            }
            _ = terminate.recv() => stop_asked = true,
            _ = interrupt.recv() => stop_asked = true,
        }
    }
    tracing::info!("shutting down: no new connections, finishing open requests");
    running.shutdown().await;
    Ok(())
}
