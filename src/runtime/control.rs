//! The control handle: how the admin API (and the CLI through it) sees and steers the front
//! ends without importing them. Each front end implements [`FrontEnd`] and registers with the
//! runtime's [`Control`]; the admin API only ever talks to that.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock, Weak};

use crate::cluster::StoreError;
use crate::config::AuthMode;

/// One service as the admin API shows it.
#[derive(Debug, Clone)]
pub struct ServiceView {
    pub name: Arc<str>,
    pub auth: AuthMode,
    /// `"proxy"` or `"static"`.
    pub kind: &'static str,
    pub sessions: usize,
    pub sessions_peak: usize,
    pub servers: Vec<ServerView>,
}

/// One upstream server of a service, with its live state.
#[derive(Debug, Clone)]
pub struct ServerView {
    pub address: Arc<str>,
    /// The weight in effect (operator overrides applied).
    pub weight: u32,
    pub max_conns: u32,
    pub up: bool,
    pub in_flight: u32,
}

/// Why a front end kept its running routing state.
#[derive(Debug, thiserror::Error)]
#[error("{front_end}: {reason}")]
pub struct RebuildError {
    pub front_end: &'static str,
    pub reason: String,
}

/// A boxed future, for the object-safe [`FrontEnd`] trait.
pub type Pending<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What every front end lets the admin API see and do.
pub trait FrontEnd: Send + Sync {
    /// What this front end is, for the status `roles` ("web edge"; "SIP edge" later).
    fn role(&self) -> &'static str;
    /// Its services, with sessions and upstream servers.
    fn services(&self) -> Vec<ServiceView>;
    /// Rebuilds its routing from the running configuration and the operator's weight
    /// overrides, swapped in atomically (requests in flight finish on the old one).
    fn rebuild(&self) -> Result<(), RebuildError>;
    /// Re-fetches keys and user lists it authenticates with.
    fn refresh_credentials(&self) -> Pending<'_, ()>;
    /// Revokes every edge token of `user`: how many, or `None` without edge tokens.
    fn revoke_tokens<'a>(&'a self, user: &'a str) -> Pending<'a, Option<Result<usize, StoreError>>>;
    /// Re-reads the files it serves with that a configuration reload does not rebuild (the
    /// SIP listeners' certificates, CA and CRL): called after every applied reload.
    fn reload_files(&self) -> Result<(), RebuildError> {
        Ok(())
    }
    /// SIP registrations it tracks (current, peak since start); `None` when it has none.
    fn registrations(&self) -> Option<(u64, u64)> {
        None
    }
}

/// The registered front ends.
#[derive(Default)]
pub struct Control {
    front_ends: RwLock<Vec<Weak<dyn FrontEnd>>>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control").field("front_ends", &self.live().iter().map(|f| f.role()).collect::<Vec<_>>()).finish()
    }
}

impl Control {
    /// Registers a front end (held weakly: a stopped front end disappears by itself).
    pub fn register(&self, front_end: &Arc<dyn FrontEnd>) {
        self.front_ends.write().unwrap_or_else(|p| p.into_inner()).push(Arc::downgrade(front_end));
    }

    fn live(&self) -> Vec<Arc<dyn FrontEnd>> {
        self.front_ends.read().unwrap_or_else(|p| p.into_inner()).iter().filter_map(Weak::upgrade).collect()
    }

    /// The roles of the running front ends.
    pub fn roles(&self) -> Vec<&'static str> {
        self.live().iter().map(|f| f.role()).collect()
    }

    /// Every service of every front end.
    pub fn services(&self) -> Vec<ServiceView> {
        self.live().iter().flat_map(|f| f.services()).collect()
    }

    /// Rebuilds every front end; the first that could not be rebuilt says why (the others
    /// are rebuilt all the same).
    pub fn rebuild(&self) -> Result<(), RebuildError> {
        self.each_front_end(|f| f.rebuild())
    }

    /// After an applied configuration reload: every front end re-reads its files; the first
    /// error (the others are re-read all the same).
    pub fn reload_files(&self) -> Result<(), RebuildError> {
        self.each_front_end(|f| f.reload_files())
    }

    /// Runs `step` on every front end, all of them even after a failure; the first error.
    fn each_front_end(&self, step: impl Fn(&dyn FrontEnd) -> Result<(), RebuildError>) -> Result<(), RebuildError> {
        let mut outcome = Ok(());
        for front_end in self.live() {
            if let Err(error) = step(front_end.as_ref())
                && outcome.is_ok()
            {
                outcome = Err(error);
            }
        }
        outcome
    }

    /// SIP registrations of the front ends that track them (current, peak); `None` when none
    /// does (no SIP edge).
    pub fn registrations(&self) -> Option<(u64, u64)> {
        self.live().iter().filter_map(|f| f.registrations()).reduce(|a, b| (a.0 + b.0, a.1 + b.1))
    }

    /// Re-fetches every front end's keys and user lists.
    pub async fn refresh_credentials(&self) {
        for front_end in self.live() {
            front_end.refresh_credentials().await;
        }
    }

    /// Revokes every edge token of `user` in every front end that issues them: how many,
    /// or `None` when none does.
    pub async fn revoke_tokens(&self, user: &str) -> Option<Result<usize, StoreError>> {
        let mut outcome = None;
        for front_end in self.live() {
            match (front_end.revoke_tokens(user).await, &mut outcome) {
                (None, _) => {}
                (Some(Err(error)), _) => return Some(Err(error)),
                (Some(Ok(n)), Some(Ok(total))) => *total += n,
                (Some(Ok(n)), _) => outcome = Some(Ok(n)),
            }
        }
        outcome
    }
}

/// The dynamic firewall as the admin API sees it (`GET /api/v1/firewall`, `status`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct FirewallView {
    /// Whether its tables are in the kernel now.
    pub applied: bool,
    pub table: String,
    pub interface: String,
    /// The ports it opens (the running listeners').
    pub ports: Vec<u16>,
    /// Packets per named counter (drops per rule, and `accepted`), from `nft list counters`.
    pub counters: std::collections::BTreeMap<String, u64>,
    /// Why the last apply or remove failed, if it did.
    pub error: Option<String>,
    /// How full the kernel's connection tracking table is (`None` when it cannot be read).
    pub conntrack: Option<ConntrackFill>,
}

/// The conntrack table's fill level: a spoofed SYN flood that gets past the limits leaves
/// half-open entries in it, and a full table drops every new connection of the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConntrackFill {
    /// Entries now (`net.netfilter.nf_conntrack_count`).
    pub entries: u64,
    /// The table's size (`net.netfilter.nf_conntrack_max`).
    pub max: u64,
}

/// What a reload did to the firewall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconfigured {
    /// Nothing changed.
    Unchanged,
    /// The change is in force: both tables replaced.
    Applied,
    /// The firewall is taken down (`firewall remove`): the change is kept for the next apply.
    Kept,
}

/// What the admin API may do with the firewall: see it, apply it again, take it down.
pub trait FirewallControl: Send + Sync {
    fn view(&self) -> Pending<'_, FirewallView>;
    /// Replaces both tables from the configuration, the running listeners and the bans.
    fn apply(&self) -> Pending<'_, Result<(), String>>;
    /// Deletes both tables (the edge keeps serving; the shield still refuses banned sources).
    fn remove(&self) -> Pending<'_, Result<(), String>>;
    /// A reload's `[firewall]` section and `protection.ipv6_prefix` (the meter's and the ban
    /// sets' IPv6 mask), compared with what the firewall runs (so a change `nft` refused is
    /// tried again by the next reload); `Err` when it needs a restart or `nft` refused it
    /// (the running section is put back in the kernel).
    fn reconfigure(&self, next: Option<crate::config::FirewallConfig>, ipv6_prefix: u8) -> Pending<'_, Result<Reconfigured, String>>;
}
