//! The one accept loop every listener runs (HTTP, admin, later SIP): accept with backoff on
//! errors, a connection cap that counts refusals too, the ban check at accept, the open
//! connections gauge, and the drain — stop accepting, close the port, wait until the last
//! connection ended. What a connection speaks is the [`Connections`] implementation's part.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::Runtime;
use super::listeners::Bound;
use super::services::Drain;
use super::workers::Placement;

/// Pause after a failed `accept` (EMFILE and friends) instead of spinning.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// What to do with a new connection from a banned source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnBanned {
    /// Hand it to [`Connections::refuse`] (a canned answer), holding a connection slot.
    Refuse,
    /// Close it at once.
    Close,
    /// Serve it; the protocol refuses each request (so a user behind a banned NAT sees why).
    Serve,
    /// No ban check at accept at all: the protocol checks (and counts) every request.
    Unchecked,
}

/// What a listener's connections speak.
pub trait Connections: Send + Sync + 'static {
    /// What to do with a banned source's new connection.
    fn on_banned(&self) -> OnBanned;
    /// Whether `client` is served beside the connection cap (the admin API's loopback
    /// operator, who must get in while a flood from elsewhere fills the cap). Such
    /// connections are not awaited by the drain.
    fn beside_the_cap(&self, _client: IpAddr) -> bool {
        false
    }
    /// Most connections one source address may hold open at once (`None`: only the
    /// listener's cap applies).
    fn per_source_limit(&self) -> Option<usize> {
        None
    }
    /// Answers a banned source's connection and closes it (bounded in time and bytes).
    /// The default closes it at once (no protocol answer).
    fn refuse(&self, tcp: TcpStream, _status: u16) -> impl Future<Output = ()> + Send + 'static {
        drop(tcp);
        std::future::ready(())
    }
    /// Serves one connection until it ends; on `drain`, finishes the work in hand and ends.
    fn serve(&self, tcp: TcpStream, client: SocketAddr, drain: Drain) -> impl Future<Output = ()> + Send + 'static;
}

/// One open connection of a source, counted while it lives.
struct SourceCount {
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
    source: IpAddr,
}

impl SourceCount {
    /// Counts a new connection of `source`, unless it already holds `limit`.
    fn take(counts: &Arc<Mutex<HashMap<IpAddr, usize>>>, source: IpAddr, limit: usize) -> Option<SourceCount> {
        let source = source.to_canonical();
        let mut map = counts.lock().unwrap_or_else(|p| p.into_inner());
        let open = map.entry(source).or_insert(0);
        if *open >= limit {
            return None;
        }
        *open += 1;
        Some(SourceCount { counts: counts.clone(), source })
    }
}

impl Drop for SourceCount {
    fn drop(&mut self) {
        let mut map = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(open) = map.get_mut(&self.source) {
            *open -= 1;
            if *open == 0 {
                map.remove(&self.source);
            }
        }
    }
}

/// What every accept loop of one listener shares: the connection cap, the per-source
/// counts and what its connections speak.
struct Gate<C> {
    runtime: Arc<Runtime>,
    name: Arc<str>,
    connections: C,
    max_connections: usize,
    slots: Arc<Semaphore>,
    per_source: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl<C: Connections> Gate<C> {
    fn new(runtime: Arc<Runtime>, bound: &Bound, max_connections: usize, connections: C) -> Arc<Gate<C>> {
        Arc::new(Gate {
            runtime,
            name: bound.name.clone(),
            connections,
            max_connections,
            slots: Arc::new(Semaphore::new(max_connections)),
            per_source: Arc::default(),
        })
    }

    /// Takes the listener out of the registry and waits until every connection ended.
    async fn close(&self, bound: &Bound) {
        self.runtime.listeners.remove(bound);
        // Every slot back = every connection ended (each finishes its requests on the drain).
        let _ = self.slots.acquire_many(u32::try_from(self.max_connections).unwrap_or(u32::MAX)).await;
    }
}

/// Runs `listener` until the drain: then stops accepting, closes the port and returns once
/// every connection (refusals included) ended.
pub async fn run<C: Connections>(
    runtime: Arc<Runtime>,
    bound: Bound,
    listener: TcpListener,
    max_connections: usize,
    connections: C,
    drain: Drain,
) {
    let gate = Gate::new(runtime, &bound, max_connections, connections);
    accept_until_drained(&gate, listener, drain).await;
    gate.close(&bound).await;
}

/// Runs one accept loop per socket of `sockets` (bound by [`crate::net::listener::bind_group`]
/// for `placement`), all under one connection cap: on the workers when there are workers
/// (each socket's loop and connections on its own worker), else here. Returns like [`run`].
pub async fn run_placed<C: Connections>(
    placement: &Placement,
    runtime: Arc<Runtime>,
    bound: Bound,
    sockets: Vec<std::net::TcpListener>,
    max_connections: usize,
    connections: C,
    drain: Drain,
) {
    let gate = Gate::new(runtime, &bound, max_connections, connections);
    let handles: Vec<tokio::runtime::Handle> = match placement {
        Placement::Workers(workers) => workers.handles().to_vec(),
        Placement::Shared => vec![tokio::runtime::Handle::current()],
    };
    let mut loops: Vec<AbortOnDrop> = sockets
        .into_iter()
        .zip(handles.iter().cycle())
        .map(|(socket, handle)| {
            let (gate, drain) = (gate.clone(), drain.clone());
            AbortOnDrop(handle.spawn(async move {
                match TcpListener::from_std(socket) {
                    Ok(listener) => accept_until_drained(&gate, listener, drain).await,
                    Err(error) => tracing::error!(listener = %gate.name, "cannot register a listening socket: {error}"),
                }
            }))
        })
        .collect();
    for accept_loop in &mut loops {
        let _ = (&mut accept_loop.0).await;
    }
    gate.close(&bound).await;
}

/// A spawned accept loop, stopped if its owner is (a drain past its deadline).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Accepts on `listener` until the drain, then closes it.
async fn accept_until_drained<C: Connections>(gate: &Arc<Gate<C>>, listener: TcpListener, mut drain: Drain) {
    let connections = &gate.connections;
    loop {
        let (tcp, client) = tokio::select! {
            // The drain first: once stopped, no queued connection is taken any more.
            biased;
            () = drain.signalled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::warn!(listener = %gate.name, "accept failed: {error}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        // Over the cap: close at once rather than queue unbounded work. Refusals hold a slot
        // too, so a banned flood cannot spawn without bound.
        let slot = if connections.beside_the_cap(client.ip()) {
            None
        } else {
            let Ok(slot) = gate.slots.clone().try_acquire_owned() else { continue };
            Some(slot)
        };
        let source = match connections.per_source_limit() {
            None => None,
            Some(limit) => match SourceCount::take(&gate.per_source, client.ip(), limit) {
                Some(count) => Some(count),
                None => continue, // this source holds its share already: closed at once
            },
        };
        let on_banned = connections.on_banned();
        if on_banned != OnBanned::Unchecked
            && let Some(status) = gate.runtime.shield.check(client.ip())
        {
            match on_banned {
                OnBanned::Close => continue,
                OnBanned::Refuse => {
                    let refusal = connections.refuse(tcp, status);
                    tokio::spawn(async move {
                        refusal.await;
                        drop((slot, source));
                    });
                    continue;
                }
                OnBanned::Serve | OnBanned::Unchecked => {}
            }
        }
        let _ = tcp.set_nodelay(true);
        let served = connections.serve(tcp, client, drain.clone());
        let metrics = gate.runtime.metrics.clone();
        let name = gate.name.clone();
        tokio::spawn(async move {
            metrics.connections(&name, 1);
            served.await;
            metrics.connections(&name, -1);
            drop((slot, source));
        });
    }
}
