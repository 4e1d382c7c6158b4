//! The admin API's listener while the edge runs: bound and started at start, moved by a
//! reload that changes `admin.address` or `admin.tls`, stopped by one that removes `[admin]`
//! (and brought back by a later one). A new address is bound before
//! anything changes (a failure refuses the reload, the running listener stays); then the old
//! listener stops accepting and closes its port (the firewall closes it too) while its
//! connections finish, the reload's own answer included. Each listener keeps the TLS mode it
//! started with (a moved one never serves the new mode on the old address); HTTPS on or off
//! at the same address switches the running listener in place: connections accepted from
//! then on follow it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::admin::{AdminConnections, AdminState, MAX_ADMIN_CONNECTIONS};
use crate::config::{AdminConfig, Config, ServerConfig};
use crate::net::listener;
use crate::runtime::accept;
use crate::runtime::listeners::{Bound, Protocol};
use crate::runtime::services::Services;

/// The admin socket, bound and not serving yet.
pub(super) struct BoundAdmin {
    socket: TcpListener,
    entry: Bound,
    /// `admin.address` as configured (a port 0 binds anew only when the setting changes).
    configured: SocketAddr,
    /// `admin.tls`: the mode it will serve in.
    tls: bool,
}

impl BoundAdmin {
    /// Binds `address` (not registered yet), to serve HTTPS when `tls`.
    pub(super) fn bind(address: SocketAddr, tls: bool) -> anyhow::Result<BoundAdmin> {
        let socket = listener::bind(address).with_context(|| format!("admin: cannot bind {address}"))?;
        let entry = Bound { name: Arc::from("admin"), address: socket.local_addr()?, protocol: Protocol::Admin };
        Ok(BoundAdmin { socket, entry, configured: address, tls })
    }

    /// The address it is bound to.
    pub(super) fn address(&self) -> SocketAddr {
        self.entry.address
    }

    /// The registry entry (the firewall opens its port once registered).
    pub(super) fn entry(&self) -> &Bound {
        &self.entry
    }
}

/// The running admin listener.
pub(super) struct AdminListener {
    state: Arc<AdminState>,
    acceptor: Option<Arc<ArcSwap<TlsAcceptor>>>,
    services: Arc<Services>,
    /// `None` once a reload removed `[admin]` (a later one may bring it back).
    running: Mutex<Option<RunningAdmin>>,
}

struct RunningAdmin {
    configured: SocketAddr,
    /// Whether it speaks TLS (switched in place by a reload that keeps the address).
    tls: Arc<AtomicBool>,
    /// Set to stop this listener alone.
    stop: watch::Sender<bool>,
}

/// What a reload changes: a listener to start in place of the running one (if any), HTTPS
/// switched on the running one, or the running one stopped (`[admin]` removed).
pub(super) enum AdminChange {
    Move(BoundAdmin),
    SwitchTls(bool),
    Stop,
}

impl AdminListener {
    /// Starts accepting on `bound` (registered already).
    pub(super) fn start(
        state: Arc<AdminState>,
        acceptor: Option<Arc<ArcSwap<TlsAcceptor>>>,
        services: Arc<Services>,
        bound: BoundAdmin,
        server: &ServerConfig,
    ) -> AdminListener {
        let running = serve(&state, &acceptor, &services, bound, server);
        AdminListener { state, acceptor, services, running: Mutex::new(Some(running)) }
    }

    /// What the admin API sees and does.
    pub(super) fn state(&self) -> &Arc<AdminState> {
        &self.state
    }

    /// Binds a new address when `next` moves (or brings back) the admin API; `Err` (nothing
    /// changed) when it cannot be bound, or HTTPS is asked for and no certificate was loaded
    /// at start.
    pub(super) fn prepare(&self, next: &Config) -> Result<Option<AdminChange>, Vec<String>> {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let Some(AdminConfig { address, tls, .. }) = &next.admin else {
            return Ok(running.is_some().then_some(AdminChange::Stop));
        };
        if *tls && self.acceptor.is_none() {
            return Err(vec!["admin.tls: HTTPS on the admin API needs a restart when none ran at start (no certificate is loaded)".into()]);
        }
        match running.as_ref() {
            Some(running) if running.configured == *address => {
                Ok((running.tls.load(Ordering::SeqCst) != *tls).then_some(AdminChange::SwitchTls(*tls)))
            }
            _ => Ok(Some(AdminChange::Move(BoundAdmin::bind(*address, *tls).map_err(|error| vec![format!("{error:#}")])?))),
        }
    }

    /// Moves the listener or switches its HTTPS as `prepare` found (after the new
    /// configuration is in force).
    pub(super) fn commit(&self, change: Option<AdminChange>, server: &ServerConfig) {
        let error_log = &self.state.runtime.error_log;
        match change {
            None => {}
            Some(AdminChange::SwitchTls(tls)) => {
                if let Some(running) = self.running.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                    running.tls.store(tls, Ordering::SeqCst);
                }
                error_log.warn(&format!("admin API switched to {} by the reload", if tls { "HTTPS" } else { "plain HTTP" }));
            }
            Some(AdminChange::Stop) => {
                if let Some(running) = self.running.lock().unwrap_or_else(|p| p.into_inner()).take() {
                    let _ = running.stop.send(true);
                }
                error_log.warn("admin API removed by the reload ([admin] is gone): it stops accepting, its open connections finish");
            }
            Some(AdminChange::Move(bound)) => {
                // Registered first: the firewall opens the new port before the old one closes.
                self.state.runtime.listeners.add(bound.entry.clone());
                let address = bound.entry.address;
                let next = serve(&self.state, &self.acceptor, &self.services, bound, server);
                if let Some(old) = self.running.lock().unwrap_or_else(|p| p.into_inner()).replace(next) {
                    let _ = old.stop.send(true);
                }
                error_log.warn(&format!(
                    "admin API moved by the reload to {address}: the old address stops accepting, its open connections finish"
                ));
            }
        }
    }
}

/// Serves the admin API on `bound` until its stop or the edge's drain.
fn serve(
    state: &Arc<AdminState>,
    acceptor: &Option<Arc<ArcSwap<TlsAcceptor>>>,
    services: &Services,
    bound: BoundAdmin,
    server: &ServerConfig,
) -> RunningAdmin {
    let BoundAdmin { socket, entry, configured, tls } = bound;
    tracing::info!("admin API on {}{}", entry.address, if tls { " (HTTPS)" } else { "" });
    let speaks_tls = Arc::new(AtomicBool::new(tls));
    let connections =
        AdminConnections::new(state.clone(), acceptor.clone(), speaks_tls.clone(), server.header_read_timeout, server.idle_timeout);
    let runtime = state.runtime.clone();
    let (stop, drain) = services.stoppable();
    services.start("admin API", move |_| accept::run(runtime, entry, socket, MAX_ADMIN_CONNECTIONS, connections, drain));
    RunningAdmin { configured, tls: speaks_tls, stop }
}
