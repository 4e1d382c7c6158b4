//! Wiring of the SIP front end: its listeners bound (with the other sockets, before anything
//! is served), their TLS profiles (the partners' CA and CRL), the client TLS toward the next
//! hop and toward partners, and their accept loops started as services; while it runs, a
//! reload adds listeners (new names: bound all-or-nothing with the reload, then started) and
//! removes them (they stop accepting, close their port — so the firewall closes it too —
//! and let their connections finish). A listener whose settings changed under the same name
//! keeps running as it is until a restart (said in `error.log`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::config::Config;
use crate::config::sip::{ClientAuthMode, SipListenerConfig, SipTransport};
use crate::net::listener;
use crate::net::tls::client::{ClientProfile, ServerTrust};
use crate::net::tls::{ClientAuth, ClientTrust, TlsProfile};
use crate::operate::cert;
use crate::runtime::listeners::{Bound, Protocol};
use crate::runtime::services::Services;
use crate::runtime::{Runtime, accept};
use crate::sip::edge::{SipConnections, SipEdge};
use crate::sip::proxy::{Hop, Transport};

/// A bound SIP listener, not yet served.
pub(super) struct BoundSip {
    config: SipListenerConfig,
    socket: TcpListener,
    entry: Bound,
    tls: Option<(TlsProfile, Arc<ArcSwap<TlsAcceptor>>)>,
}

/// Binds every `[[sip.listener]]` and builds the TLS acceptors and client configurations (a
/// bad CA, CRL or certificate stops the start, as a bad web certificate does).
pub(super) fn bind(config: &Config, runtime: &Runtime) -> anyhow::Result<Vec<BoundSip>> {
    let mut bound = Vec::new();
    for l in &config.sip.listeners {
        let one = bind_one(config, l)?;
        runtime.listeners.add(one.entry.clone());
        bound.push(one);
    }
    // The client TLS files are read now too, so an unusable one stops the start before
    // anything is served.
    let (next_hop, partners) = client_profiles(config, &bound);
    if let Some(profile) = &next_hop {
        profile.client_config().context("sip.next_hop: TLS toward the next hop")?;
    }
    if let Some(profile) = &partners {
        profile.client_config().context("sip.listener: TLS toward partners")?;
    }
    Ok(bound)
}

/// Binds one SIP listener and builds its TLS acceptor (not registered yet).
fn bind_one(config: &Config, l: &SipListenerConfig) -> anyhow::Result<BoundSip> {
    let socket = listener::bind(l.address).with_context(|| format!("sip.listener {:?}: cannot bind {}", l.name, l.address))?;
    let protocol = if l.transport == SipTransport::Tls { Protocol::SipTls } else { Protocol::SipTcp };
    let entry = Bound { name: Arc::from(l.name.as_str()), address: socket.local_addr()?, protocol };
    let tls = match l.transport {
        SipTransport::Tcp => None,
        SipTransport::Tls => {
            let profile = profile(config, l)?;
            let acceptor = profile.acceptor().with_context(|| format!("sip.listener {:?}", l.name))?;
            Some((profile, Arc::new(ArcSwap::from_pointee(acceptor))))
        }
    };
    Ok(BoundSip { config: l.clone(), socket, entry, tls })
}

/// The TLS profile of a SIP listener: its own certificate or the web one, no ALPN, and the
/// partners' CA and CRL.
fn profile(config: &Config, l: &SipListenerConfig) -> anyhow::Result<TlsProfile> {
    let (cert, key) = match &l.cert_key {
        Some((cert, key)) => (cert.clone(), key.clone()),
        None => {
            let paths = cert::ensure_certificate(
                config.tls.as_ref().map(|t| (t.cert.as_path(), t.key.as_path())),
                &config.server.state_dir,
                &config.server.name,
            )?;
            (paths.cert, paths.key)
        }
    };
    let trust = || l.ca.clone().map(|ca| ClientTrust { ca, crl: l.crl.clone() });
    let client_auth = match l.client_auth {
        ClientAuthMode::None => ClientAuth::None,
        ClientAuthMode::Optional => trust().map_or(ClientAuth::None, ClientAuth::Optional),
        ClientAuthMode::Required => trust().map_or(ClientAuth::None, ClientAuth::Required),
    };
    Ok(TlsProfile::sip(cert, key, client_auth))
}

/// The client TLS of the SIP edge: toward a TLS next hop (`next_hop_ca`, else the web PKI
/// roots) and toward partners (the first TLS listener's `ca` and `crl`, else the web PKI
/// roots); both present the first TLS listener's certificate when asked for one.
fn client_profiles(config: &Config, bound: &[BoundSip]) -> (Option<ClientProfile>, Option<ClientProfile>) {
    let listener = bound.iter().find_map(|b| b.tls.as_ref().map(|(profile, _)| (&b.config, profile)));
    let identity = listener.map(|(_, profile)| (profile.cert.clone(), profile.key.clone()));
    let next_hop = config.sip.next_hop.as_ref().filter(|hop| hop.transport == SipTransport::Tls).map(|_| ClientProfile {
        trust: config.sip.next_hop_ca.clone().map_or(ServerTrust::WebPki, ServerTrust::Ca),
        crl: None,
        identity: identity.clone(),
    });
    let partners = listener.map(|(l, _)| ClientProfile {
        trust: l.ca.clone().map_or(ServerTrust::WebPki, ServerTrust::Ca),
        crl: l.ca.as_ref().and(l.crl.clone()),
        identity,
    });
    (next_hop, partners)
}

/// The running SIP listeners, by name, and the front end they feed (none when no SIP
/// listener or no next hop was configured at start: adding one then needs a restart).
pub(super) struct SipListeners {
    runtime: Arc<Runtime>,
    services: Arc<Services>,
    edge: Option<Arc<SipEdge>>,
    running: Mutex<BTreeMap<String, RunningSip>>,
}

struct RunningSip {
    config: SipListenerConfig,
    /// Its identity in Via and Record-Route, and its TLS acceptor.
    hop: Hop,
    /// When it started, in order (the first at start comes first, as before any reload).
    started: u64,
    acceptor: Option<Arc<ArcSwap<TlsAcceptor>>>,
    /// Set to stop this listener alone.
    stop: watch::Sender<bool>,
}

/// What a reload changes: SIP listeners to start (bound already) and names to stop.
pub(super) struct SipChange {
    start: Vec<BoundSip>,
    stop: Vec<String>,
}

/// The address the edge writes in its Via and Record-Route for listener `b`.
fn hop_of(config: &Config, b: &BoundSip) -> Hop {
    Hop {
        host: if b.entry.address.ip().is_unspecified() { config.server.name.clone() } else { b.entry.address.ip().to_string() },
        port: b.entry.address.port(),
        transport: if b.config.transport == SipTransport::Tls { Transport::Tls } else { Transport::Tcp },
    }
}

/// Serves the bound SIP listeners: one SIP front end (registered with the runtime's control,
/// so the admin API's refresh and every applied reload re-read its TLS files; its accept
/// loops keep it alive, and it keeps its connection to the next hop open), an accept loop per
/// listener. An unusable client TLS file (`next_hop_ca`) stops the start.
pub(super) fn start(
    config: &Config,
    runtime: &Arc<Runtime>,
    bound: Vec<BoundSip>,
    services: &Arc<Services>,
) -> anyhow::Result<SipListeners> {
    let mut listeners = SipListeners { runtime: runtime.clone(), services: services.clone(), edge: None, running: Mutex::default() };
    let Some(next_hop) = config.sip.next_hop.clone() else { return Ok(listeners) };
    if bound.is_empty() {
        return Ok(listeners);
    }
    let hops: Vec<Hop> = bound.iter().map(|b| hop_of(config, b)).collect();
    let tls = bound.iter().filter_map(|b| b.tls.clone()).collect();
    let (next_hop_tls, partner_tls) = client_profiles(config, &bound);
    let edge = SipEdge::new(runtime.clone(), next_hop, config.sip.record_route, config.sip.max_message_bytes, hops, tls)
        .with_outward_tls(next_hop_tls, partner_tls, services.drain_signal())
        .context("sip: client TLS toward the next hop or partners")?;
    let edge = Arc::new(edge);
    edge.keep_next_hop_open();
    let front_end: Arc<dyn crate::runtime::control::FrontEnd> = edge.clone();
    runtime.control.register(&front_end);
    listeners.edge = Some(edge);
    for b in bound {
        listeners.serve(config, b);
    }
    Ok(listeners)
}

impl SipListeners {
    /// Starts accepting on `b` (registered already).
    fn serve(&self, config: &Config, b: BoundSip) {
        let Some(edge) = &self.edge else { return };
        let hop = hop_of(config, &b);
        tracing::info!("SIP listener {} on {} ({})", b.config.name, b.entry.address, b.entry.protocol.as_str());
        let acceptor = b.tls.map(|(_, acceptor)| acceptor);
        let connections = SipConnections::new(edge.clone(), hop.clone(), acceptor.clone(), config.server.header_read_timeout);
        let (runtime, cap) = (self.runtime.clone(), config.server.max_connections);
        let (stop, drain) = self.services.stoppable();
        let (entry, socket) = (b.entry, b.socket);
        self.services
            .start(format!("sip listener {}", b.config.name), move |_| accept::run(runtime, entry, socket, cap, connections, drain));
        let mut map = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let started = map.values().map(|r| r.started + 1).max().unwrap_or(0);
        let running = RunningSip { config: b.config, hop, acceptor, started, stop };
        map.insert(running.config.name.clone(), running);
    }

    /// Binds the SIP listeners `next` adds; `Err` (nothing bound, nothing changed) when one
    /// cannot be. Changed settings under a running name are reported, not applied.
    pub(super) fn prepare(&self, next: &Config) -> Result<SipChange, Vec<String>> {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let names = running.iter().map(|(name, r)| (name, &r.config));
        let (start, stop) = super::listeners::by_name(
            "sip.listener",
            names,
            &next.sip.listeners,
            |l| &l.name,
            &self.runtime.error_log,
            |l| {
                if self.edge.is_none() {
                    return Err(format!(
                        "sip.listener {:?}: adding a SIP listener needs a restart when no SIP front end ran at start (no listener or no next_hop then)",
                        l.name
                    ));
                }
                bind_one(next, l).map_err(|error| format!("{error:#}"))
            },
        )?;
        Ok(SipChange { start, stop })
    }

    /// Starts and stops what `prepare` found (after the new configuration is in force).
    pub(super) fn commit(&self, change: SipChange, next: &Config) {
        for name in change.stop {
            if let Some(listener) = self.running.lock().unwrap_or_else(|p| p.into_inner()).remove(&name) {
                self.runtime
                    .error_log
                    .warn(&format!("sip.listener {name:?} removed by the reload: it stops accepting, its connections finish"));
                let _ = listener.stop.send(true);
                if let Some(edge) = &self.edge {
                    edge.remove_listener(listener.acceptor.as_ref());
                }
            }
        }
        for bound in change.start {
            self.runtime.error_log.warn(&format!("sip.listener {:?} added by the reload on {}", bound.config.name, bound.entry.address));
            if let Some(edge) = &self.edge {
                edge.add_listener(hop_of(next, &bound), bound.tls.clone());
            }
            // Registered now: the firewall opens its port as the accept loop starts.
            self.runtime.listeners.add(bound.entry.clone());
            self.serve(next, bound);
        }
        if let Some(edge) = &self.edge {
            let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            let mut serving: Vec<&RunningSip> = running.values().collect();
            serving.sort_by_key(|r| r.started);
            edge.set_serving(serving.into_iter().map(|r| r.hop.clone()).collect());
        }
    }
}
