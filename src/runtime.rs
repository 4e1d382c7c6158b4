//! The runtime: the process-wide handles every front end and background loop shares — the
//! current configuration, the state store, the shield, operations state (maintenance,
//! counts, peers, weights), metrics, the logs and the event bus — in one [`Runtime`] below
//! every front end. A front end (HTTP today, SIP next) keeps only its own routing state and
//! reaches everything else here; the admin API reaches front ends only through
//! [`control::Control`].
//!
//! - [`services`]: start services the same way, stop them with one drain signal.
//! - [`accept`]: the accept loop every listener runs (ban refusal, connection cap, backoff).
//! - [`listeners`]: the registry of running listeners.
//! - [`control`]: the handle through which the admin API sees and steers front ends.
//! - [`workers`]: per-core worker runtimes for the HTTP listeners.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::auth::AuthEvents;
use crate::cluster::StateStore;
use crate::config::Config;
use crate::event::EventBus;
use crate::federation::Federation;
use crate::operate::Operate;
use crate::protect::Shield;
use crate::telemetry::access_log::AccessLog;
use crate::telemetry::logging::ErrorLog;
use crate::telemetry::metrics::Metrics;

pub mod accept;
pub mod control;
pub mod listeners;
pub mod services;
pub mod workers;

/// The process-wide state shared by every front end and background loop.
pub struct Runtime {
    /// The configuration in force (see [`Runtime::config`]).
    pub config: ArcSwap<Config>,
    pub store: Arc<dyn StateStore>,
    pub shield: Arc<Shield>,
    /// The SIP federation policy and its lists (shared through the store).
    pub federation: Arc<Federation>,
    /// Maintenance, counts, peers and weight overrides.
    pub operate: Arc<Operate>,
    pub metrics: Arc<Metrics>,
    pub access_log: AccessLog,
    pub error_log: ErrorLog,
    pub events: EventBus,
    /// Where authenticators report refused credentials.
    pub auth_events: Arc<dyn AuthEvents>,
    /// The running listeners (empty at first).
    pub listeners: listeners::Listeners,
    /// The registered front ends (none at first).
    pub control: control::Control,
    /// The dynamic firewall, once applied at start (`[firewall]`).
    pub firewall: std::sync::OnceLock<Arc<dyn control::FirewallControl>>,
    /// Log shipping to the central syslog server (`[logging.ship]`).
    pub shipping: Option<Arc<crate::telemetry::ship::Shipping>>,
}

impl Runtime {
    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// Makes `config` the configuration in force (after a reload was applied everywhere).
    pub fn set_config(&self, config: Arc<Config>) {
        self.config.store(config);
    }
}
