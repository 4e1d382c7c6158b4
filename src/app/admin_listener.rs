//! The admin API's listener while the edge runs: bound and started at start, and moved by a
//! reload that changes `admin.address` or `admin.tls`. A new address is bound before
//! anything changes (a failure refuses the reload, the running listener stays); then the old
//! listener stops accepting and closes its port (the firewall closes it too) while its
//! connections finish, the reload's own answer included. HTTPS on or off at the same address
//! switches in place: connections accepted from then on follow it.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
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
}

impl BoundAdmin {
    /// Binds `address` (not registered yet).
    pub(super) fn bind(address: SocketAddr) -> anyhow::Result<BoundAdmin> {
        let socket = listener::bind(address).with_context(|| format!("admin: cannot bind {address}"))?;
        let entry = Bound { name: Arc::from("admin"), address: socket.local_addr()?, protocol: Protocol::Admin };
        Ok(BoundAdmin { socket, entry, configured: address })
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
    running: Mutex<RunningAdmin>,
}

struct RunningAdmin {
    configured: SocketAddr,
    /// Set to stop this listener alone.
    stop: watch::Sender<bool>,
}

/// What a reload changes: a listener to start in place of the running one, and HTTPS switched.
pub(super) struct AdminChange {
    rebind: Option<BoundAdmin>,
    tls: bool,
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
        let configured = bound.configured;
        let stop = serve(&state, &acceptor, &services, bound, server);
        AdminListener { state, acceptor, services, running: Mutex::new(RunningAdmin { configured, stop }) }
    }

    /// What the admin API sees and does.
    pub(super) fn state(&self) -> &Arc<AdminState> {
        &self.state
    }

    /// Binds a new address when `next` moves the admin API; `Err` (nothing changed) when it
    /// cannot be bound, or HTTPS is asked for and no certificate was loaded at start.
    /// Removing `[admin]` is reported, not applied: the API keeps running until a restart.
    pub(super) fn prepare(&self, next: &Config) -> Result<Option<AdminChange>, Vec<String>> {
        let Some(AdminConfig { address, tls, .. }) = &next.admin else {
            self.state.runtime.error_log.warn("[admin] removed: the admin API keeps running until a restart");
            return Ok(None);
        };
        if *tls && self.acceptor.is_none() {
            return Err(vec!["admin.tls: HTTPS on the admin API needs a restart when none ran at start (no certificate is loaded)".into()]);
        }
        let moved = *address != self.running.lock().unwrap_or_else(|p| p.into_inner()).configured;
        let rebind = if moved { Some(BoundAdmin::bind(*address).map_err(|error| vec![format!("{error:#}")])?) } else { None };
        Ok(Some(AdminChange { rebind, tls: *tls }))
    }

    /// Switches HTTPS and moves the listener as `prepare` found (after the new configuration
    /// is in force).
    pub(super) fn commit(&self, change: Option<AdminChange>, server: &ServerConfig) {
        let Some(AdminChange { rebind, tls }) = change else { return };
        let error_log = &self.state.runtime.error_log;
        if self.state.tls_admin.swap(tls, Ordering::SeqCst) != tls {
            error_log.warn(&format!("admin API switched to {} by the reload", if tls { "HTTPS" } else { "plain HTTP" }));
        }
        let Some(bound) = rebind else { return };
        // Registered first: the firewall opens the new port before the old one closes.
        self.state.runtime.listeners.add(bound.entry.clone());
        let configured = bound.configured;
        let address = bound.entry.address;
        let stop = serve(&self.state, &self.acceptor, &self.services, bound, server);
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let _ = running.stop.send(true);
        error_log.warn(&format!("admin API moved by the reload to {address}: the old address stops accepting, its connections finish"));
        *running = RunningAdmin { configured, stop };
    }
}

/// Serves the admin API on `bound` until its stop (returned) or the edge's drain.
fn serve(
    state: &Arc<AdminState>,
    acceptor: &Option<Arc<ArcSwap<TlsAcceptor>>>,
    services: &Services,
    bound: BoundAdmin,
    server: &ServerConfig,
) -> watch::Sender<bool> {
    let BoundAdmin { socket, entry, .. } = bound;
    let tls = state.tls_admin.load(Ordering::SeqCst);
    tracing::info!("admin API on {}{}", entry.address, if tls { " (HTTPS)" } else { "" });
    let connections = AdminConnections::new(state.clone(), acceptor.clone(), server.header_read_timeout, server.idle_timeout);
    let runtime = state.runtime.clone();
    let (stop, drain) = services.stoppable();
    services.start("admin API", move |_| accept::run(runtime, entry, socket, MAX_ADMIN_CONNECTIONS, connections, drain));
    stop
}
