//! One generation of the HTTP front end's routing state ([`Gateway`]: services, router,
//! upstream pools, authenticator), swapped atomically on reload, and the front end itself
//! ([`Edge`]: the current generation over the process-wide [`Runtime`]), which the admin API
//! sees only as a [`FrontEnd`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use arc_swap::ArcSwap;

use super::edge_cache::{CorsCache, PublicCache};
use super::route::Router;
use super::upstream::{Pool, PoolError};
use super::view::View;
use crate::auth::sessions::SessionTracker;
use crate::auth::{AuthEvents, Authenticator};
use crate::cluster::{StateStore, StoreError};
use crate::config::{AuthMode, Config, PoolConfig, ServiceConfig, ServiceKind};
use crate::event::EventBus;
use crate::runtime::Runtime;
use crate::runtime::control::{FrontEnd, Pending, RebuildError, ServerView, ServiceView};
use crate::telemetry::metrics::Metrics;

/// Label used for requests that matched no service.
const NO_SERVICE: &str = "-";
/// Label used for the edge's own token endpoints.
const TOKEN_SERVICE: &str = "portcullis-token";

/// One routed service and what stands behind it.
#[derive(Debug)]
pub struct Service {
    pub name: Arc<str>,
    pub config: ServiceConfig,
    pub backend: Backend,
    /// Responses of `public_paths`, served without reaching the upstream again.
    pub public_cache: PublicCache,
    /// Successful CORS preflight answers, per origin.
    pub cors: CorsCache,
    /// Current and peak authenticated sessions (kept across reloads).
    pub sessions: Arc<SessionTracker>,
}

/// What answers a service's requests.
#[derive(Debug)]
pub enum Backend {
    Pool(Arc<Pool>),
    Static(PathBuf),
}

/// One generation of routing state, swapped atomically on reload.
#[derive(Debug)]
pub struct Gateway {
    pub config: Arc<Config>,
    pub(super) router: Router,
    pub services: Vec<Service>,
    pub auth: Arc<Authenticator>,
    /// Some service allows upgrades by recently authenticated source IP: remember them.
    pub(super) remember_ips: bool,
}

/// What a gateway generation is built from besides its configuration.
pub struct GatewayDeps<'a> {
    pub metrics: &'a Arc<Metrics>,
    pub store: &'a Arc<dyn StateStore>,
    pub auth_events: &'a Arc<dyn AuthEvents>,
    /// Where upstream health changes are published.
    pub events: &'a EventBus,
    /// The generation being replaced: its authenticator (and caches) is kept when the
    /// auth settings did not change.
    pub previous: Option<&'a Gateway>,
    /// Operator weight overrides (`host:port` → weight) laid over the configured weights.
    pub weights: &'a BTreeMap<String, u32>,
    /// True while this peer is the cluster's primary.
    pub primary: &'a Arc<AtomicBool>,
}

/// `pool` with the operator's weight overrides applied.
fn with_weights(pool: &PoolConfig, weights: &BTreeMap<String, u32>) -> PoolConfig {
    let mut pool = pool.clone();
    for server in &mut pool.servers {
        if let Some(&weight) = weights.get(&server.address) {
            server.weight = weight;
        }
    }
    pool
}

impl Gateway {
    /// Builds routing, upstream pools and authentication for `config`.
    pub fn build(config: Arc<Config>, deps: GatewayDeps<'_>) -> Result<Gateway, PoolError> {
        let metrics = deps.metrics;
        let mut services = Vec::with_capacity(config.services.len());
        for s in &config.services {
            let name: Arc<str> = Arc::from(s.name.as_str());
            let backend = match &s.kind {
                ServiceKind::Proxy(pool) => {
                    Backend::Pool(Pool::new(name.clone(), &with_weights(pool, deps.weights), metrics.clone(), deps.events.clone())?)
                }
                ServiceKind::Static { dir } => Backend::Static(dir.clone()),
            };
            let sessions = deps
                .previous
                .and_then(|p| p.services.iter().find(|old| old.name == name))
                .map_or_else(|| Arc::new(SessionTracker::new(config.maintenance.session_idle)), |old| old.sessions.clone());
            sessions.set_window(config.maintenance.session_idle);
            services.push(Service {
                name,
                config: s.clone(),
                backend,
                public_cache: PublicCache::default(),
                cors: CorsCache::new(s.cors_cache),
                sessions,
            });
        }
        let router = Router::new(&config.routes, |name| {
            services.iter().position(|s| &*s.name == name).map(|i| (i, services[i].config.case_insensitive))
        });
        let auth = match deps.previous {
            Some(previous) if previous.auth.settings() == &config.auth => previous.auth.clone(),
            _ => Authenticator::new(&config.auth, deps.store.clone(), deps.auth_events.clone(), deps.primary.clone()),
        };
        let remember_ips = services.iter().any(|s| s.config.websocket_ip_window.is_some());
        Ok(Gateway { config, router, services, auth, remember_ips })
    }
}

/// The HTTP front end: its routing generation, over the process-wide runtime.
pub struct Edge {
    pub gateway: ArcSwap<Gateway>,
    pub runtime: Arc<Runtime>,
    /// The HTTP/2 cancel buckets of every source, across its connections.
    pub cancels: Arc<super::cancels::SourceCancels>,
    no_service: Arc<str>,
    token_service: Arc<str>,
}

impl Edge {
    /// A new HTTP front end serving `gateway`.
    pub fn new(gateway: Gateway, runtime: Arc<Runtime>) -> Edge {
        Edge {
            gateway: ArcSwap::from_pointee(gateway),
            runtime,
            cancels: Arc::default(),
            no_service: Arc::from(NO_SERVICE),
            token_service: Arc::from(TOKEN_SERVICE),
        }
    }

    /// The service label of requests that matched no service.
    pub(super) fn no_service(&self) -> &Arc<str> {
        &self.no_service
    }

    /// The service label of the edge's own token endpoints.
    pub(super) fn token_service(&self) -> &Arc<str> {
        &self.token_service
    }

    /// Rebuilds the generation from the running configuration (new weight overrides, a
    /// refresh) and swaps it in; requests in flight finish on the old one.
    pub fn rebuild_gateway(&self) -> Result<(), PoolError> {
        let gateway = self.build_gateway(self.gateway.load().config.clone())?;
        self.gateway.store(Arc::new(gateway));
        Ok(())
    }

    /// Builds the next generation from `config` (keeping caches where settings match).
    pub fn build_gateway(&self, config: Arc<Config>) -> Result<Gateway, PoolError> {
        let previous = self.gateway.load();
        let runtime = &self.runtime;
        Gateway::build(
            config,
            GatewayDeps {
                metrics: &runtime.metrics,
                store: &runtime.store,
                auth_events: &runtime.auth_events,
                events: &runtime.events,
                previous: Some(&previous),
                weights: &runtime.operate.weights(),
                primary: runtime.operate.primary_flag(),
            },
        )
    }
}

impl FrontEnd for Edge {
    fn role(&self) -> &'static str {
        "web edge"
    }

    fn services(&self) -> Vec<ServiceView> {
        self.gateway
            .load()
            .services
            .iter()
            .map(|s| ServiceView {
                name: s.name.clone(),
                auth: s.config.auth,
                kind: match &s.backend {
                    Backend::Pool(_) => "proxy",
                    Backend::Static(_) => "static",
                },
                sessions: s.sessions.current(),
                sessions_peak: s.sessions.peak(),
                servers: match &s.backend {
                    Backend::Pool(pool) => pool
                        .servers()
                        .iter()
                        .map(|srv| ServerView {
                            address: srv.address.clone(),
                            weight: srv.weight,
                            max_conns: srv.max_conns(),
                            up: srv.is_up(),
                            in_flight: srv.in_flight(),
                        })
                        .collect(),
                    Backend::Static(_) => Vec::new(),
                },
            })
            .collect()
    }

    fn rebuild(&self) -> Result<(), RebuildError> {
        self.rebuild_gateway().map_err(|error| RebuildError { front_end: self.role(), reason: error.to_string() })
    }

    fn refresh_credentials(&self) -> Pending<'_, ()> {
        let auth = self.gateway.load().auth.clone();
        Box::pin(async move { auth.refresh_now().await })
    }

    fn revoke_tokens<'a>(&'a self, user: &'a str) -> Pending<'a, Option<Result<usize, StoreError>>> {
        let auth = self.gateway.load().auth.clone();
        Box::pin(async move {
            let tokens = auth.tokens()?;
            Some(tokens.revoke_user(user).await)
        })
    }
}

impl Service {
    /// Whether the request is on one of this service's unauthenticated public paths — in
    /// both forms of its path (with and without `;parameters`), so an upstream that strips
    /// parameters cannot resolve a public path to a protected one.
    pub(super) fn is_public(&self, view: &View) -> bool {
        let public = |path: &str| self.config.public_paths.iter().any(|p| p.matches(path, self.config.case_insensitive));
        self.config.auth != AuthMode::None && public(&view.path) && view.unparameterized.as_deref().is_none_or(public)
    }
}
