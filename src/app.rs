//! Wiring: `Config` → bound listeners, admin API, state store and reload loop → [`Running`].
//!
//! Start-up order: directories and logs first (so every later failure is logged), then the
//! state store, certificates, upstream pools, and only then sockets — a bad certificate or
//! a locked state file must stop the edge before it accepts a single connection.
//!
//! Reloads (SIGHUP or `POST /api/v1/reload`) re-read the file, build a complete new routing
//! generation off to the side and swap it in atomically; in-flight requests finish on the
//! generation they started with. An invalid file changes nothing and is reported in
//! `error.log`. A reload adds and removes HTTP listeners by name (`app::listeners`); one whose
//! settings changed under the same name needs a restart (said in `error.log`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use arc_swap::ArcSwap;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

mod admin_listener;
mod background;
pub mod kernel;
mod listeners;
mod reload;
mod sip;

use crate::admin::{AdminState, ReloadRequest};
use crate::auth::AuthEvents;
use crate::cluster::StateStore;
use crate::cluster::embedded::EmbeddedStore;
use crate::config::{Config, StoreKind};
use crate::event::EventBus;
use crate::federation::Federation;
use crate::http::gateway::{Edge, Gateway, GatewayDeps};
use crate::operate::Operate;
use crate::operate::cert;
use crate::protect::Shield;
use crate::protect::blocking_log::BlockingLog;
use crate::runtime::Runtime;
use crate::runtime::services::Services;
use crate::runtime::workers::Placement;
use crate::telemetry::access_log::AccessLog;
use crate::telemetry::logging::{ErrorLog, LineBudget, quoted};
use crate::telemetry::metrics::Metrics;
use crate::telemetry::ship::Shipping;

/// How often the web certificate's expiry is checked (metric; `error.log` notice once a day
/// from 30 days ahead).
pub const CERT_CHECK_INTERVAL: Duration = Duration::from_secs(3600);

/// A started edge.
pub struct Running {
    /// Each listener's name and bound address (port 0 resolved).
    pub listeners: Vec<(String, SocketAddr)>,
    /// The admin API's bound address.
    pub admin: Option<SocketAddr>,
    /// Certificate in use by the HTTPS listeners, if any.
    pub certificate: Option<cert::CertPaths>,
    /// The process-wide state.
    pub runtime: Arc<Runtime>,
    /// The HTTP front end.
    pub edge: Arc<Edge>,
    pub store: Arc<dyn StateStore>,
    reload: mpsc::Sender<ReloadRequest>,
    /// Every listener and background loop; dropping it drains them too.
    services: Arc<Services>,
    /// The nftables table (firewall, or the kernel mirror of the bans alone), when it runs.
    mirror: Option<Arc<kernel::KernelTable>>,
    /// `blocking.log`, to reopen it (its writer runs on its own).
    blocking_file: crate::telemetry::logging::LogFile,
}

impl Running {
    /// Reloads the configuration file; `Err` lists every problem (nothing changed).
    pub async fn reload(&self) -> Result<(), Vec<String>> {
        let (reply, answer) = oneshot::channel();
        self.reload.send(reply).await.map_err(|_| vec!["reload task stopped".to_string()])?;
        answer.await.map_err(|_| vec!["reload task stopped".to_string()])?
    }

    /// Reopens `access.log`, `error.log` and `blocking.log` at their paths (SIGUSR1, after
    /// `logrotate` moved them away); a failure is written to the log that stays in use.
    pub fn reopen_logs(&self) {
        let runtime = &self.runtime;
        let outcomes = [
            ("access.log", runtime.access_log.reopen()),
            ("error.log", runtime.error_log.reopen()),
            ("blocking.log", self.blocking_file.reopen()),
        ];
        for (name, outcome) in outcomes {
            if let Err(error) = outcome {
                runtime.error_log.error(&format!("cannot reopen {name}, still writing to the old file: {error}"));
            }
        }
    }

    /// A handle that can trigger reloads (signal handlers).
    pub fn reload_handle(&self) -> mpsc::Sender<ReloadRequest> {
        self.reload.clone()
    }

    /// Stops accepting, lets open connections finish (up to `maintenance.shutdown_drain`),
    /// stops the background loops, flushes logs and leaves the cluster.
    pub async fn shutdown(self) {
        let runtime = &self.runtime;
        let drain = runtime.config().maintenance.shutdown_drain;
        runtime.error_log.warn(&format!("shutting down: no new connections, draining open ones for up to {}s", drain.as_secs()));
        let late = self.services.drain(drain).await;
        if !late.is_empty() {
            runtime.error_log.warn(&format!("stopped before they finished (drain time over): {}", late.join(", ")));
        }
        runtime.access_log.flush();
        if let Some(shipping) = runtime.shipping.clone() {
            // What was handed over is written to the queue (and synced) before we go.
            let _ = tokio::task::spawn_blocking(move || shipping.stop_writer()).await;
        }
        let peer = runtime.config().cluster.peer.clone();
        runtime.operate.leave();
        let _ = crate::operate::peers::leave(&runtime.store, &peer).await;
        if let Some(kernel) = &self.mirror {
            kernel.shut_down(runtime).await;
        }
    }
}

/// Starts everything `config` describes.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let config = Arc::new(config);
    let server_cfg = &config.server;
    for dir in [&server_cfg.state_dir, &server_cfg.log_dir] {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create directory {}", dir.display()))?;
    }
    // The shipping queue opens first: every log line from here on is shipped too.
    let (shipping, outbox, pending) = match &config.logging.ship {
        Some(ship) => {
            let (shipping, outbox, pending) = Shipping::open(ship, &server_cfg.state_dir, &server_cfg.name)
                .with_context(|| format!("cannot open the log shipping queue in {}", server_cfg.state_dir.join("ship").display()))?;
            (Some(shipping), Some(outbox), Some(pending))
        }
        None => (None, None, None),
    };
    let format = config.logging.format;
    let access_log = AccessLog::open(&server_cfg.log_dir)
        .with_context(|| format!("cannot open access.log in {}", server_cfg.log_dir.display()))?
        .with_format(format)
        .shipping(outbox.clone());
    let error_log = ErrorLog::open(&server_cfg.log_dir)
        .with_context(|| format!("cannot open error.log in {}", server_cfg.log_dir.display()))?
        .with_format(format)
        .shipping(outbox.clone());
    access_log.spawn_flusher();
    if let (Some(shipping), Some(pending)) = (&shipping, pending) {
        // Its own lines (the queue is full) are not shipped: the queue thread holds no outbox,
        // so it ends once the edge's logs are gone.
        shipping.start_writer(pending, error_log.clone().shipping(None)).context("cannot start the log shipping queue")?;
    }

    let store: Arc<dyn StateStore> = match &config.cluster.store {
        StoreKind::Embedded => Arc::new(EmbeddedStore::open(&server_cfg.state_dir)?),
        StoreKind::Redis { url } => {
            Arc::new(crate::cluster::redis::RedisStore::open_configured(url, &config.cluster.peer, config.cluster.redis_ca.as_deref())?)
        }
    };

    let needs_tls = config.listeners.iter().any(|l| l.tls) || config.admin.as_ref().is_some_and(|a| a.tls);
    let (acceptor, certificate) = if needs_tls {
        let paths = cert::ensure_certificate(
            config.tls.as_ref().map(|t| (t.cert.as_path(), t.key.as_path())),
            &server_cfg.state_dir,
            &server_cfg.name,
        )?;
        let acceptor = paths.http_profile().acceptor()?;
        (Some(Arc::new(ArcSwap::from_pointee(acceptor))), Some(paths))
    } else {
        (None, None)
    };

    // The logs subscribe before anything can publish, so no event is missed.
    let events = EventBus::new();
    tokio::spawn(crate::telemetry::event_log::write(events.subscribe(), error_log.clone()));
    let blocking_log = BlockingLog::open(&server_cfg.log_dir, &server_cfg.name)
        .with_context(|| format!("cannot open blocking.log in {}", server_cfg.log_dir.display()))?
        .shipping(outbox.clone());
    let blocking_file = blocking_log.file();
    tokio::spawn(blocking_log.follow(events.subscribe(), error_log.clone()));
    let metrics = Arc::new(Metrics::new());
    let auth_events: Arc<dyn AuthEvents> = Arc::new(AuthFailureLog::new(error_log.clone(), metrics.clone()));
    let operate = Arc::new(Operate::load(store.clone(), &config.cluster.peer).await);
    for warning in config.federation.warnings() {
        error_log.warn(&warning);
    }
    if operate.in_maintenance() {
        error_log
            .warn("starting in maintenance mode (set before the restart): new sessions are refused until `portcullis maintenance off`");
    }
    let gateway = Gateway::build(
        config.clone(),
        GatewayDeps {
            metrics: &metrics,
            store: &store,
            auth_events: &auth_events,
            events: &events,
            previous: None,
            weights: &operate.weights(),
            primary: operate.primary_flag(),
        },
    )?;
    let shield = Arc::new(Shield::new(config.protection.clone(), store.clone(), events.clone(), error_log.clone(), metrics.clone()));
    shield.load().await;
    shield.spawn_reconciler();
    let federation = Arc::new(Federation::new(config.federation.clone(), config.sip.local_domains.clone(), store.clone(), events.clone()));
    if let Err(error) = federation.load().await {
        error_log
            .error(&format!("federation: the run-time lists could not be read from the state store ({error}); the file's lists apply"));
    }
    let runtime = Arc::new(Runtime {
        config: ArcSwap::new(config.clone()),
        store: store.clone(),
        shield,
        federation,
        operate,
        metrics,
        access_log,
        error_log,
        events,
        auth_events,
        listeners: Default::default(),
        control: Default::default(),
        firewall: Default::default(),
        shipping: shipping.clone(),
    });
    let edge = Arc::new(Edge::new(gateway, runtime.clone()));
    let front_end: Arc<dyn crate::runtime::control::FrontEnd> = edge.clone();
    runtime.control.register(&front_end);

    // Bind everything before serving anything: a port conflict fails the whole start.
    let placement = if config.listeners.is_empty() {
        Placement::Shared
    } else {
        Placement::for_server(&config.server).context("cannot start the HTTP workers")?
    };
    let services = Arc::new(Services::new());
    let http_listeners = Arc::new(listeners::HttpListeners::new(edge.clone(), placement, acceptor.clone(), services.clone()));
    let mut bound = Vec::new();
    for l in &config.listeners {
        bound.push(http_listeners.bind(l)?);
    }
    let sip_bound = sip::bind(&config, &runtime)?;
    let admin_socket = match &config.admin {
        Some(a) => {
            let bound = admin_listener::BoundAdmin::bind(a.address, a.tls)?;
            runtime.listeners.add(bound.entry().clone());
            Some(bound)
        }
        None => None,
    };
    // The firewall comes up before the first listener accepts (they are bound, not serving).
    let mirror = kernel::start(&config, &runtime).await;

    {
        let (federation, changes) = (runtime.federation.clone(), store.subscribe());
        services.start("federation follower", move |mut drain| async move {
            federation.follow(changes, async move { drain.signalled().await }).await
        });
    }
    let sip_listeners = Arc::new(sip::start(&config, &runtime, sip_bound, &services)?);
    let mut listeners = Vec::new();
    for bound in bound {
        listeners.push((bound.entry.name.to_string(), bound.entry.address));
        http_listeners.start(bound, &config.server);
    }

    let (reload_tx, reload_rx) = mpsc::channel::<ReloadRequest>(8);
    let mut admin_addr = None;
    let mut admin = None;
    if let (Some(admin_cfg), Some(bound)) = (&config.admin, admin_socket) {
        admin_addr = Some(bound.address());
        let state = Arc::new(AdminState {
            runtime: runtime.clone(),
            token: ArcSwap::from_pointee(admin_cfg.token.clone()),
            reload: reload_tx.clone(),
            listeners: config.listeners.iter().cloned().zip(listeners.iter().map(|(_, a)| *a)).collect(),
            started_at: SystemTime::now(),
            started: Instant::now(),
            tls: acceptor.clone(),
            page_sessions: crate::admin::page::PageSessions::default(),
            last_reload_errors: std::sync::Mutex::new(None),
        });
        admin = Some(Arc::new(admin_listener::AdminListener::start(state, acceptor.clone(), services.clone(), bound, &config.server)));
    }
    {
        let (config, edge, acceptor) = (config.clone(), edge.clone(), acceptor.clone());
        let listeners = reload::ReloadedListeners { http: http_listeners.clone(), sip: sip_listeners, admin };
        let kernel = mirror.clone();
        services.start("reload", move |drain| reload::reload_loop(reload_rx, config, edge, acceptor, listeners, kernel, drain));
    }
    if let Some(paths) = &certificate {
        if paths.origin == cert::CertOrigin::SelfSigned {
            tracing::info!("TLS certificate: self-signed for {} at {}", config.server.name, paths.cert.display());
        } else {
            tracing::info!("TLS certificate: {}", paths.cert.display());
        }
    }
    if certificate.is_some() {
        let runtime = runtime.clone();
        services.start("certificate watch", move |drain| background::watch_certificate_expiry(runtime, drain));
    }
    if let Some(shipping) = &shipping {
        let (shipping, error_log) = (shipping.clone(), runtime.error_log.clone());
        tracing::info!("log shipping to {} ({})", shipping.address(), config.logging.ship.as_ref().map_or("", |s| s.protocol.as_str()));
        services
            .start("log shipping", move |mut drain| async move { shipping.run(error_log, async move { drain.signalled().await }).await });
    }
    {
        let (edge, changes) = (edge.clone(), store.subscribe());
        services.start("store follower", move |drain| background::follow_store_changes(edge, changes, drain));
    }
    {
        let edge = edge.clone();
        services.start("heartbeat", move |drain| background::heartbeat(edge, drain));
    }
    tracing::info!(
        "{} ready: state in {}, logs in {}",
        config.server.name,
        config.server.state_dir.display(),
        config.server.log_dir.display()
    );
    Ok(Running { listeners, admin: admin_addr, certificate, runtime, edge, store, reload: reload_tx, services, mirror, blocking_file })
}

/// Most authentication-failure lines written to `error.log` per second (a credential-stuffing
/// flood must not fill the disk; the metric still counts every failure).
pub const MAX_AUTH_FAILURE_LINES_PER_SECOND: u64 = 20;

/// Longest part of a presented user name written to `error.log`.
pub const MAX_LOGGED_USER: usize = 128;

/// Reports authentication failures to `error.log` and metrics until the shield takes them.
struct AuthFailureLog {
    error_log: ErrorLog,
    metrics: Arc<Metrics>,
    budget: LineBudget,
}

impl AuthFailureLog {
    fn new(error_log: ErrorLog, metrics: Arc<Metrics>) -> AuthFailureLog {
        AuthFailureLog { error_log, metrics, budget: LineBudget::new(MAX_AUTH_FAILURE_LINES_PER_SECOND) }
    }
}

impl AuthEvents for AuthFailureLog {
    fn auth_failed(&self, client: std::net::IpAddr, user: Option<&str>, reason: &'static str) {
        self.metrics.auth_failure(reason);
        if self.budget.allow() {
            let user = quoted(user.unwrap_or("-")).max(MAX_LOGGED_USER);
            self.error_log.warn(&format!("{client} :: authentication failed for user {user}: {reason}"));
        }
    }
}
