//! The HTTP listeners while the edge runs: bound and started at start, and added or removed
//! by a reload. A listener whose name is new is bound (all new ones, or the reload fails and
//! nothing changes) and started after the configuration is swapped; one whose name is gone
//! stops accepting, closes its port (so the firewall closes it too) and lets its connections
//! finish their requests. A listener whose settings changed under the same name keeps running
//! as it is until a restart (said in `error.log`): rebinding its address in place could fail
//! after the old one stopped.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::config::{Config, ListenerConfig, ServerConfig};
use crate::http::gateway::Edge;
use crate::http::server::HttpConnections;
use crate::net::listener;
use crate::runtime::accept;
use crate::runtime::listeners::{Bound, Protocol};
use crate::runtime::services::Services;
use crate::runtime::workers::Placement;

/// A listener bound and not started yet.
pub(super) struct BoundListener {
    config: ListenerConfig,
    sockets: Vec<TcpListener>,
    pub(super) entry: Bound,
}

/// The running HTTP listeners, by name.
pub(super) struct HttpListeners {
    edge: Arc<Edge>,
    placement: Placement,
    acceptor: Option<Arc<ArcSwap<TlsAcceptor>>>,
    services: Arc<Services>,
    running: Mutex<BTreeMap<String, RunningListener>>,
}

struct RunningListener {
    config: ListenerConfig,
    /// Set to stop this listener alone.
    stop: watch::Sender<bool>,
}

/// What a reload changes: listeners to start (bound already, registered when started) and
/// names to stop.
pub(super) struct ListenerChange {
    start: Vec<BoundListener>,
    stop: Vec<String>,
}

impl HttpListeners {
    pub(super) fn new(
        edge: Arc<Edge>,
        placement: Placement,
        acceptor: Option<Arc<ArcSwap<TlsAcceptor>>>,
        services: Arc<Services>,
    ) -> HttpListeners {
        HttpListeners { edge, placement, acceptor, services, running: Mutex::default() }
    }

    /// Binds `config`'s sockets (one per worker) and registers the listener as running (at
    /// start: the firewall opens the registered ports before the first accept).
    pub(super) fn bind(&self, config: &ListenerConfig) -> anyhow::Result<BoundListener> {
        let bound = self.bind_sockets(config)?;
        self.edge.runtime.listeners.add(bound.entry.clone());
        Ok(bound)
    }

    /// Binds `config`'s sockets (one per worker).
    fn bind_sockets(&self, config: &ListenerConfig) -> anyhow::Result<BoundListener> {
        let sockets = listener::bind_group(config.address, self.placement.sockets())
            .with_context(|| format!("listener {:?}: cannot bind {}", config.name, config.address))?;
        let address = sockets.first().map(TcpListener::local_addr).transpose()?.unwrap_or(config.address);
        let protocol = if config.tls { Protocol::Https } else { Protocol::Http };
        let entry = Bound { name: Arc::from(config.name.as_str()), address, protocol };
        Ok(BoundListener { config: config.clone(), sockets, entry })
    }

    /// Starts accepting on `bound`, with `server`'s limits.
    pub(super) fn start(&self, bound: BoundListener, server: &ServerConfig) {
        let BoundListener { config, sockets, entry } = bound;
        let tls = if config.tls { self.acceptor.clone() } else { None };
        tracing::info!(
            "listener {} on {}{}",
            config.name,
            entry.address,
            match (&config.redirect_to, config.tls) {
                (Some(r), _) => format!(" (plain HTTP, redirects to {})", r.listener),
                (None, true) => " (HTTPS, HTTP/2 + HTTP/1.1)".to_string(),
                (None, false) => " (plain HTTP/1.1 and HTTP/2 prior knowledge)".to_string(),
            }
        );
        let connections = HttpConnections::new(self.edge.clone(), config.clone(), server.clone(), tls);
        let runtime = self.edge.runtime.clone();
        let cap = server.max_connections;
        let placement = self.placement.clone();
        let (stop, drain) = self.services.stoppable();
        self.services.start(format!("listener {}", config.name), move |_| async move {
            accept::run_placed(&placement, runtime, entry, sockets, cap, connections, drain).await
        });
        self.running.lock().unwrap_or_else(|p| p.into_inner()).insert(config.name.clone(), RunningListener { config, stop });
    }

    /// Binds the listeners `next` adds; `Err` (nothing bound, nothing changed) when one
    /// cannot be. Changed settings under a running name are reported, not applied.
    pub(super) fn prepare(&self, next: &Config) -> Result<ListenerChange, Vec<String>> {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let names = running.iter().map(|(name, r)| (name, &r.config));
        let (start, stop) = by_name(
            "listener",
            names,
            &next.listeners,
            |l| &l.name,
            &self.edge.runtime.error_log,
            |config| {
                if config.tls && self.acceptor.is_none() {
                    return Err(format!(
                        "listener {:?}: a TLS listener needs a restart when none ran at start (no certificate is loaded)",
                        config.name
                    ));
                }
                self.bind_sockets(config).map_err(|error| format!("{error:#}"))
            },
        )?;
        Ok(ListenerChange { start, stop })
    }

    /// Starts and stops what `prepare` found (after the new configuration is in force).
    pub(super) fn commit(&self, change: ListenerChange, server: &ServerConfig) {
        for name in change.stop {
            if let Some(listener) = self.running.lock().unwrap_or_else(|p| p.into_inner()).remove(&name) {
                self.edge
                    .runtime
                    .error_log
                    .warn(&format!("listener {name:?} removed by the reload: it stops accepting, its connections finish"));
                let _ = listener.stop.send(true);
            }
        }
        for bound in change.start {
            self.edge.runtime.error_log.warn(&format!("listener {:?} added by the reload on {}", bound.config.name, bound.entry.address));
            // Registered now: the firewall opens its port as the accept loop starts.
            self.edge.runtime.listeners.add(bound.entry.clone());
            self.start(bound, server);
        }
    }
}

/// A reload's listeners of one kind (`kind` as the configuration names them) against the
/// running ones, by name: every new name is bound with `bind` — all of them, or `Err` with
/// every reason and nothing kept (what was bound closes as it drops) — a running name whose
/// settings changed is reported (it keeps running as it is until a restart), and the running
/// names `next` no longer has are the ones to stop.
pub(super) fn by_name<'a, C: PartialEq + 'a, B>(
    kind: &str,
    running: impl Iterator<Item = (&'a String, &'a C)>,
    next: &[C],
    name_of: impl Fn(&C) -> &str,
    error_log: &crate::telemetry::logging::ErrorLog,
    mut bind: impl FnMut(&C) -> Result<B, String>,
) -> Result<(Vec<B>, Vec<String>), Vec<String>> {
    let running: BTreeMap<&str, &C> = running.map(|(name, config)| (name.as_str(), config)).collect();
    let (mut start, mut errors) = (Vec::new(), Vec::new());
    for config in next {
        let name = name_of(config);
        match running.get(name) {
            Some(current) if *current != config => error_log.warn(&format!(
                "{kind} {name:?} changed: it keeps its running settings until a restart (add it under a new name to switch without one)"
            )),
            Some(_) => {}
            None => match bind(config) {
                Ok(bound) => start.push(bound),
                Err(error) => errors.push(error),
            },
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let stop = running.keys().filter(|name| !next.iter().any(|c| name_of(c) == **name)).map(|name| name.to_string()).collect();
    Ok((start, stop))
}
