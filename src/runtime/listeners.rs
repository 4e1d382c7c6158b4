//! The registry of running listeners: name, bound address and protocol of every socket the
//! edge accepts on right now. A listener is added when it is bound and removed when its
//! accept loop stops; the ban mirror reads it to know which ports are open, and the
//! firewall follows its changes to open and close ports.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use tokio::sync::watch;

/// What a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Plain HTTP/1.1 and HTTP/2 with prior knowledge (or a redirect to HTTPS).
    Http,
    /// HTTP over TLS (ALPN h2 / http/1.1).
    Https,
    /// The admin API (plain or TLS).
    Admin,
    /// SIP over TCP.
    SipTcp,
    /// SIP over TLS.
    SipTls,
}

impl Protocol {
    /// Its name in status output.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Https => "https",
            Protocol::Admin => "admin",
            Protocol::SipTcp => "sip-tcp",
            Protocol::SipTls => "sip-tls",
        }
    }
}

/// One running listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound {
    pub name: Arc<str>,
    pub address: SocketAddr,
    pub protocol: Protocol,
}

/// The running listeners.
#[derive(Debug)]
pub struct Listeners {
    bound: RwLock<Vec<Bound>>,
    /// Bumped on every change (the firewall follows it).
    version: watch::Sender<u64>,
}

impl Default for Listeners {
    fn default() -> Listeners {
        Listeners { bound: RwLock::default(), version: watch::channel(0).0 }
    }
}

impl Listeners {
    /// Records a bound listener.
    pub fn add(&self, bound: Bound) {
        self.bound.write().unwrap_or_else(|p| p.into_inner()).push(bound);
        self.version.send_modify(|v| *v += 1);
    }

    /// Forgets a listener that stopped.
    pub fn remove(&self, bound: &Bound) {
        self.bound.write().unwrap_or_else(|p| p.into_inner()).retain(|b| b != bound);
        self.version.send_modify(|v| *v += 1);
    }

    /// Wakes on every later [`Listeners::add`] or [`Listeners::remove`].
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Every running listener, in the order they were bound.
    pub fn all(&self) -> Vec<Bound> {
        self.bound.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The TCP ports of the running listeners, without the admin API's (for the kernel ban
    /// mirror, which guards the public ports).
    pub fn public_ports(&self) -> Vec<u16> {
        self.all().iter().filter(|b| b.protocol != Protocol::Admin).map(|b| b.address.port()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_come_and_go_and_the_admin_port_is_not_public() {
        let listeners = Listeners::default();
        let web = Bound { name: Arc::from("web"), address: "127.0.0.1:8443".parse().unwrap(), protocol: Protocol::Https };
        let admin = Bound { name: Arc::from("admin"), address: "127.0.0.1:9443".parse().unwrap(), protocol: Protocol::Admin };
        listeners.add(web.clone());
        listeners.add(admin.clone());
        assert_eq!(listeners.all(), vec![web.clone(), admin]);
        assert_eq!(listeners.public_ports(), vec![8443]);
        listeners.remove(&web);
        assert!(listeners.public_ports().is_empty());
    }
}
