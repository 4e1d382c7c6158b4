//! Per-core workers: one thread per core, each running its own current-thread tokio runtime,
//! for the HTTP listeners (`server.runtime = "per-core"`). Each worker accepts on its own
//! `SO_REUSEPORT` socket of the listener's address (the kernel spreads new connections over
//! them) and serves the connections it accepted on its own thread: no work stealing, so a
//! connection's task and the tasks it spawns (HTTP/2 streams, WebSocket tunnels) wake each
//! other on one core.
//!
//! The process-wide state stays shared ([`super::Runtime`] is `Sync`); only the scheduling is
//! per core. Dropping [`Workers`] stops the threads (their remaining tasks are dropped), which
//! is what ending the process did to them before.

use std::sync::Arc;

use tokio::runtime::Handle;
use tokio::sync::watch;

use crate::config::{RuntimeLayout, ServerConfig};

/// The worker threads; dropping this stops them.
#[derive(Debug)]
pub struct Workers {
    handles: Vec<Handle>,
    /// Dropped (or set) to stop every worker.
    stop: watch::Sender<bool>,
}

/// Why the workers could not start.
#[derive(Debug, thiserror::Error)]
pub enum WorkersError {
    #[error("cannot start worker runtime {index}: {source}")]
    Runtime { index: usize, source: std::io::Error },
    #[error("cannot start worker thread {index}: {source}")]
    Thread { index: usize, source: std::io::Error },
    #[error("worker {index} stopped while starting")]
    Vanished { index: usize },
}

impl Workers {
    /// Starts `count` workers (at least one).
    pub fn start(count: usize) -> Result<Workers, WorkersError> {
        let (stop, stopped) = watch::channel(false);
        let mut handles = Vec::with_capacity(count.max(1));
        for index in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|source| WorkersError::Runtime { index, source })?;
            handles.push(runtime.handle().clone());
            let mut stopped = stopped.clone();
            let (started, ready) = std::sync::mpsc::sync_channel::<()>(1);
            std::thread::Builder::new()
                .name(format!("portcullis-worker-{index}"))
                .spawn(move || {
                    let _ = started.send(());
                    runtime.block_on(async move {
                        let _ = stopped.wait_for(|stop| *stop).await;
                    });
                    // Connection tasks still running are dropped here, without waiting for
                    // blocking work they started.
                    runtime.shutdown_background();
                })
                .map_err(|source| WorkersError::Thread { index, source })?;
            ready.recv().map_err(|_| WorkersError::Vanished { index })?;
        }
        Ok(Workers { handles, stop })
    }

    /// One handle per worker, to spawn a listener's accept loop on each.
    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }

    /// How many workers run.
    pub fn count(&self) -> usize {
        self.handles.len()
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Where a listener's accept loops run: on each worker, or on the process's runtime.
#[derive(Debug, Clone)]
pub enum Placement {
    Workers(Arc<Workers>),
    Shared,
}

impl Placement {
    /// The placement `server` asks for: per-core workers (one per available core unless
    /// `server.workers` says how many), or the process's runtime. One per-core worker beside
    /// a current-thread process runtime would only add a thread: that is the shared runtime.
    pub fn for_server(server: &ServerConfig) -> Result<Placement, WorkersError> {
        if server.runtime == RuntimeLayout::WorkStealing {
            return Ok(Placement::Shared);
        }
        let count = match server.workers {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        let process_runtime_is_one_thread =
            Handle::try_current().is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread);
        if count == 1 && process_runtime_is_one_thread {
            return Ok(Placement::Shared);
        }
        Ok(Placement::Workers(Arc::new(Workers::start(count)?)))
    }

    /// How many sockets a listener needs (one per accept loop).
    pub fn sockets(&self) -> usize {
        match self {
            Placement::Workers(workers) => workers.count(),
            Placement::Shared => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_worker_runs_on_its_own_thread_and_stops_when_dropped() {
        let workers = Workers::start(2).unwrap();
        let names: Vec<String> = workers
            .handles()
            .iter()
            .map(|handle| {
                let (tx, rx) = std::sync::mpsc::channel();
                handle.spawn(async move { tx.send(std::thread::current().name().unwrap_or_default().to_string()).unwrap() });
                rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap()
            })
            .collect();
        assert_eq!(names, ["portcullis-worker-0", "portcullis-worker-1"]);
        let handle = workers.handles()[0].clone();
        drop(workers);
        // A stopped worker runs nothing more: the task is dropped, its sender with it.
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let stopped = (0..100).any(|_| {
            let tx = tx.clone();
            drop(handle.spawn(async move {
                let _ = tx.send(());
            }));
            rx.recv_timeout(std::time::Duration::from_millis(50)).is_err()
        });
        assert!(stopped, "the worker still runs tasks after its owner was dropped");
    }
}
