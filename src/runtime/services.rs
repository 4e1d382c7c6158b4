//! Services with a lifecycle: every listener-owning part (HTTP, admin, later SIP) and every
//! background loop (heartbeat, store follower, certificate watch, reload) is started with
//! [`Services::start`] and stopped by one drain signal; [`Services::drain`] awaits them.
//!
//! A service receives a [`Drain`]: it stops taking new work when the drain is signalled (or
//! when the [`Services`] owner is dropped), finishes what it has, and returns. Shutdown is
//! "signal, then await every service up to a deadline" — nothing polls a gauge.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The signal a service watches to know it must stop.
#[derive(Debug, Clone)]
pub struct Drain(watch::Receiver<bool>);

impl Drain {
    /// Completes once draining began (or the owner of the services is gone).
    pub async fn signalled(&mut self) {
        let _ = self.0.wait_for(|draining| *draining).await;
    }

    /// Whether draining began.
    pub fn is_signalled(&self) -> bool {
        *self.0.borrow() || self.0.has_changed().is_err()
    }
}

/// The running services of one edge.
#[derive(Debug)]
pub struct Services {
    signal: watch::Sender<bool>,
    running: Mutex<Vec<(String, JoinHandle<()>)>>,
}

impl Default for Services {
    fn default() -> Services {
        Services::new()
    }
}

impl Services {
    /// No services yet.
    pub fn new() -> Services {
        Services { signal: watch::channel(false).0, running: Mutex::new(Vec::new()) }
    }

    /// A drain signal for work that is not a service of its own (a connection's task).
    pub fn drain_signal(&self) -> Drain {
        Drain(self.signal.subscribe())
    }

    /// A drain signal of its own, for a part that may stop before the others (a listener a
    /// reload removed): signalled by the returned sender, and by the services' drain too.
    pub fn stoppable(&self) -> (watch::Sender<bool>, Drain) {
        let (stop, stopped) = watch::channel(false);
        let mut everything = self.drain_signal();
        let forward = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = everything.signalled() => {
                    let _ = forward.send(true);
                }
                () = forward.closed() => {}
            }
        });
        (stop, Drain(stopped))
    }

    /// Starts `service` (named for the shutdown report) with its drain signal.
    pub fn start<F, Fut>(&self, name: impl Into<String>, service: F)
    where
        F: FnOnce(Drain) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let task = tokio::spawn(service(self.drain_signal()));
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        // Services that ended (listeners a reload removed) are forgotten: reloads that add and
        // remove listeners for months keep the list at what runs.
        running.retain(|(_, task)| !task.is_finished());
        running.push((name.into(), task));
    }

    /// Signals the drain and waits until every service returned, or until `deadline`:
    /// the names of the services still running then (they are stopped).
    pub async fn drain(&self, deadline: Duration) -> Vec<String> {
        let _ = self.signal.send(true);
        let running = std::mem::take(&mut *self.running.lock().unwrap_or_else(|p| p.into_inner()));
        let until = tokio::time::Instant::now() + deadline;
        let mut late = Vec::new();
        for (name, mut task) in running {
            if tokio::time::timeout_at(until, &mut task).await.is_err() {
                task.abort();
                late.push(name);
            }
        }
        late
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn one_drain_stops_every_service_and_is_awaited() {
        let services = Services::new();
        let finished = Arc::new(AtomicU32::new(0));
        for n in 0..3 {
            let finished = finished.clone();
            services.start(format!("loop {n}"), |mut drain| async move {
                drain.signalled().await;
                // Finishing work after the signal is part of the drain.
                tokio::time::sleep(Duration::from_millis(20)).await;
                finished.fetch_add(1, Ordering::SeqCst);
            });
        }
        assert_eq!(finished.load(Ordering::SeqCst), 0);
        let late = services.drain(Duration::from_secs(5)).await;
        assert!(late.is_empty(), "{late:?}");
        assert_eq!(finished.load(Ordering::SeqCst), 3, "drain returns only once every service returned");
    }

    #[tokio::test]
    async fn a_service_that_ignores_the_drain_is_named_and_stopped_at_the_deadline() {
        let services = Services::new();
        services.start("stubborn", |_drain| std::future::pending::<()>());
        services.start("polite", |mut drain| async move { drain.signalled().await });
        let late = services.drain(Duration::from_millis(100)).await;
        assert_eq!(late, vec!["stubborn".to_string()]);
    }

    #[tokio::test]
    async fn dropping_the_owner_drains_too() {
        let services = Services::new();
        let mut drain = services.drain_signal();
        assert!(!drain.is_signalled());
        drop(services);
        tokio::time::timeout(Duration::from_secs(1), drain.signalled()).await.expect("a dropped owner is a drain");
        assert!(drain.is_signalled());
    }

    #[tokio::test]
    async fn services_that_ended_are_forgotten_when_the_next_one_starts() {
        let services = Services::new();
        for n in 0..10 {
            services.start(format!("short {n}"), |_drain| async {});
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        services.start("long", |mut drain| async move { drain.signalled().await });
        assert_eq!(services.running.lock().unwrap().len(), 1, "only what runs is kept");
    }
}
