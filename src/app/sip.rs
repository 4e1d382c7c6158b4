//! Wiring of the SIP front end: its listeners bound (with the other sockets, before anything
//! is served), their TLS profiles (the partners' CA and CRL), and their accept loops started
//! as services.

use std::sync::Arc;

use anyhow::Context;
use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::config::Config;
use crate::config::sip::{ClientAuthMode, SipListenerConfig, SipTransport};
use crate::net::listener;
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

/// Binds every `[[sip.listener]]` and builds the TLS acceptors (a bad CA, CRL or certificate
/// stops the start, as a bad web certificate does).
pub(super) fn bind(config: &Config, runtime: &Runtime) -> anyhow::Result<Vec<BoundSip>> {
    let mut bound = Vec::new();
    for l in &config.sip.listeners {
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
        runtime.listeners.add(entry.clone());
        bound.push(BoundSip { config: l.clone(), socket, entry, tls });
    }
    Ok(bound)
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

/// Serves the bound SIP listeners: one SIP front end (registered with the runtime's control,
/// so the admin API's refresh and every applied reload re-read its TLS files; its accept
/// loops keep it alive), an accept loop per listener.
pub(super) fn start(config: &Config, runtime: &Arc<Runtime>, bound: Vec<BoundSip>, services: &Services) {
    let Some(next_hop) = config.sip.next_hop.clone() else { return };
    if bound.is_empty() {
        return;
    }
    let hop_of = |b: &BoundSip| Hop {
        host: if b.entry.address.ip().is_unspecified() { config.server.name.clone() } else { b.entry.address.ip().to_string() },
        port: b.entry.address.port(),
        transport: if b.config.transport == SipTransport::Tls { Transport::Tls } else { Transport::Tcp },
    };
    let hops: Vec<Hop> = bound.iter().map(hop_of).collect();
    let tls = bound.iter().filter_map(|b| b.tls.clone()).collect();
    let edge = Arc::new(SipEdge::new(runtime.clone(), next_hop, config.sip.record_route, config.sip.max_message_bytes, hops, tls));
    let front_end: Arc<dyn crate::runtime::control::FrontEnd> = edge.clone();
    runtime.control.register(&front_end);
    for b in bound {
        let hop = hop_of(&b);
        tracing::info!("SIP listener {} on {} ({})", b.config.name, b.entry.address, b.entry.protocol.as_str());
        let connections = SipConnections::new(edge.clone(), hop, b.tls.map(|(_, acceptor)| acceptor), config.server.header_read_timeout);
        let (runtime, cap) = (runtime.clone(), config.server.max_connections);
        services.start(format!("sip listener {}", b.config.name), move |drain| {
            accept::run(runtime, b.entry, b.socket, cap, connections, drain)
        });
    }
}
