//! Wiring of the SIP front end: its listeners bound (with the other sockets, before anything
//! is served), their TLS profiles (the partners' CA and CRL), the client TLS toward the next
//! hop and toward partners, and their accept loops started as services.

use std::sync::Arc;

use anyhow::Context;
use arc_swap::ArcSwap;
use tokio::net::TcpListener;
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

/// Serves the bound SIP listeners: one SIP front end (registered with the runtime's control,
/// so the admin API's refresh and every applied reload re-read its TLS files; its accept
/// loops keep it alive, and it keeps its connection to the next hop open), an accept loop per
/// listener. An unusable client TLS file (`next_hop_ca`) stops the start.
pub(super) fn start(config: &Config, runtime: &Arc<Runtime>, bound: Vec<BoundSip>, services: &Services) -> anyhow::Result<()> {
    let Some(next_hop) = config.sip.next_hop.clone() else { return Ok(()) };
    if bound.is_empty() {
        return Ok(());
    }
    let hop_of = |b: &BoundSip| Hop {
        host: if b.entry.address.ip().is_unspecified() { config.server.name.clone() } else { b.entry.address.ip().to_string() },
        port: b.entry.address.port(),
        transport: if b.config.transport == SipTransport::Tls { Transport::Tls } else { Transport::Tcp },
    };
    let hops: Vec<Hop> = bound.iter().map(hop_of).collect();
    let tls = bound.iter().filter_map(|b| b.tls.clone()).collect();
    let (next_hop_tls, partner_tls) = client_profiles(config, &bound);
    let edge = SipEdge::new(runtime.clone(), next_hop, config.sip.record_route, config.sip.max_message_bytes, hops, tls)
        .with_outward_tls(next_hop_tls, partner_tls, services.drain_signal())
        .context("sip: client TLS toward the next hop or partners")?;
    let edge = Arc::new(edge);
    edge.keep_next_hop_open();
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
    Ok(())
}
