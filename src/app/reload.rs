//! Reloads (SIGHUP or `POST /api/v1/reload`): re-read the file, build a complete new routing
//! generation off to the side and swap it in atomically; an invalid file changes nothing and
//! is reported in `error.log` (and to the admin API).

use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

use crate::admin::{AdminState, ReloadRequest};
use crate::config::Config;
use crate::event::Event;
use crate::http::gateway::Edge;
use crate::operate::cert;
use crate::runtime::services::Drain;

use super::kernel::KernelTable;
use super::{admin_listener, listeners, sip};

/// The listeners a reload may add, remove or move.
pub(super) struct ReloadedListeners {
    pub(super) http: Arc<listeners::HttpListeners>,
    pub(super) sip: Arc<sip::SipListeners>,
    pub(super) admin: Option<Arc<admin_listener::AdminListener>>,
}

pub(super) async fn reload_loop(
    mut requests: mpsc::Receiver<ReloadRequest>,
    mut current: Arc<Config>,
    edge: Arc<Edge>,
    acceptor: Option<Arc<ArcSwap<TlsAcceptor>>>,
    listeners: ReloadedListeners,
    kernel: Option<Arc<KernelTable>>,
    mut drain: Drain,
) {
    let runtime = edge.runtime.clone();
    let admin = listeners.admin.as_ref().map(|a| a.state().clone());
    loop {
        let reply = tokio::select! {
            // The drain first: a shutdown is never followed by a reload that starts listeners.
            biased;
            () = drain.signalled() => return,
            request = requests.recv() => match request {
                Some(reply) => reply,
                None => return,
            },
        };
        let outcome = reload_once(&current, &edge, acceptor.as_deref(), admin.as_deref(), &listeners);
        runtime.metrics.reload(outcome.is_ok());
        let answer = match outcome {
            Ok(next) => {
                let firewall_changed = next.firewall != current.firewall || next.protection.ipv6_prefix != current.protection.ipv6_prefix;
                current = next.clone();
                runtime.set_config(next);
                runtime.error_log.warn("configuration reloaded");
                // Files a reload does not rebuild (the SIP listeners' CA and CRL) are re-read.
                if let Err(error) = runtime.control.reload_files() {
                    runtime.error_log.error(&format!("TLS files not reloaded, the running ones stay: {error}"));
                }
                reconfigure_firewall(&runtime, &current, firewall_changed).await;
                if let Some(kernel) = &kernel {
                    reprefix_mirror(&runtime, kernel, current.protection.ipv6_prefix).await;
                }
                if let Some(admin) = &admin {
                    *admin.last_reload_errors.lock().unwrap_or_else(|p| p.into_inner()) = None;
                }
                Ok(())
            }
            Err(errors) => {
                runtime.events.publish(Event::ReloadRefused { errors: errors.clone() });
                if let Some(admin) = &admin {
                    let at = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
                    *admin.last_reload_errors.lock().unwrap_or_else(|p| p.into_inner()) = Some((at, errors.clone()));
                }
                Err(errors)
            }
        };
        let _ = reply.send(answer);
    }
}

fn reload_once(
    current: &Config,
    edge: &Edge,
    acceptor: Option<&ArcSwap<TlsAcceptor>>,
    admin: Option<&AdminState>,
    listeners: &ReloadedListeners,
) -> Result<Arc<Config>, Vec<String>> {
    let Some(path) = &current.source else { return Err(vec!["configuration was not read from a file".to_string()]) };
    let next = Config::load(path).map_err(|e| e.0.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    if next.logging != current.logging {
        edge.runtime.error_log.warn("[logging] changes (format, shipping) need a restart; the logs stay as they are");
    }
    if next.protection.nftables_table != current.protection.nftables_table {
        edge.runtime.error_log.warn("protection.nftables_set/nftables_table changes need a restart; the kernel mirror stays as it is");
    }
    // Build everything first, then swap: a failure leaves the running state untouched.
    // Certificates are re-read too, so a renewed certificate takes effect without a restart.
    let tls_config = match acceptor {
        Some(_) => {
            let paths = cert::ensure_certificate(
                next.tls.as_ref().map(|t| (t.cert.as_path(), t.key.as_path())),
                &next.server.state_dir,
                &next.server.name,
            )
            .map_err(|e| vec![format!("tls: {e}")])?;
            Some(paths.http_profile().server_config().map_err(|e| vec![format!("tls: {e}")])?)
        }
        None => None,
    };
    let next = Arc::new(next);
    let gateway = edge.build_gateway(next.clone()).map_err(|e| vec![e.to_string()])?;
    // Last of the fallible steps: new listeners are bound (their ports registered), so nothing
    // may fail after this.
    let listener_change = listeners.http.prepare(&next)?;
    let sip_change = listeners.sip.prepare(&next)?;
    let admin_change = match &listeners.admin {
        Some(admin) => admin.prepare(&next)?,
        None => {
            if next.admin.is_some() {
                edge.runtime.error_log.warn("[admin] added: the admin API starts at the next restart");
            }
            None
        }
    };
    if let (Some(acceptor), Some(tls_config)) = (acceptor, tls_config) {
        acceptor.store(Arc::new(TlsAcceptor::from(tls_config)));
    }
    edge.gateway.store(Arc::new(gateway));
    edge.runtime.shield.reconfigure(next.protection.clone());
    edge.runtime.federation.reconfigure(next.federation.clone(), next.sip.local_domains.clone());
    if let (Some(admin), Some(admin_cfg)) = (admin, &next.admin) {
        admin.token.store(Arc::new(admin_cfg.token.clone()));
    }
    listeners.http.commit(listener_change, &next.server);
    listeners.sip.commit(sip_change, &next);
    if let Some(admin) = &listeners.admin {
        admin.commit(admin_change, &next.server);
    }
    Ok(next)
}

/// Puts a reload's changed `[firewall]` section (rates, exemptions, load balancers, hardening,
/// interface) or `protection.ipv6_prefix` in force (both tables replaced, recorded in
/// `firewall.log` as `reason=reload`); the firewall compares with what it runs, so a change
/// `nft` refused is tried again at the next reload. What it cannot change live (the table's
/// name, switching it on or off, or a firewall that was not applied at start) is said in
/// `error.log` and waits for a restart.
async fn reconfigure_firewall(runtime: &crate::runtime::Runtime, next: &Config, changed: bool) {
    use crate::runtime::control::Reconfigured;
    let Some(firewall) = runtime.firewall.get() else {
        if changed && next.firewall.is_some() {
            runtime.error_log.warn("[firewall] changed: it was not applied at start, so the change needs a restart");
        }
        return;
    };
    match firewall.reconfigure(next.firewall.clone(), next.protection.ipv6_prefix).await {
        Ok(Reconfigured::Applied) => runtime.error_log.warn("[firewall] changed: applied (both tables replaced)"),
        Ok(Reconfigured::Kept) => runtime.error_log.warn("[firewall] changed: kept for the next apply (the firewall is taken down)"),
        Ok(Reconfigured::Unchanged) => {}
        Err(error) => runtime.error_log.warn(&format!("[firewall] change not applied: {error}; the firewall stays as it is")),
    }
}

/// A changed `protection.ipv6_prefix` for the kernel ban mirror without `[firewall]` (with it,
/// [`reconfigure_firewall`] applies it): its table is replaced, masking IPv6 sources with the
/// new prefix.
async fn reprefix_mirror(runtime: &crate::runtime::Runtime, kernel: &KernelTable, prefix: u8) {
    match kernel.set_mirror_prefix(runtime, prefix).await {
        Ok(true) => {
            runtime.error_log.warn(&format!("protection.ipv6_prefix changed: the kernel ban mirror now bans IPv6 sources per /{prefix}"))
        }
        Ok(false) => {}
        Err(error) => {
            runtime.error_log.error(&format!("protection.ipv6_prefix changed, but the kernel ban mirror keeps its running prefix: {error}"))
        }
    }
}
