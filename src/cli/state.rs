//! `portcullis state export|import`: moves durable state (values such as edge tokens and
//! weight overrides, sets such as exemptions, bans) between stores — e.g. from the embedded
//! store to Redis when a single edge becomes a cluster. Works on the store a configuration
//! file names, directly (the embedded store must not be open by a running edge).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::anyhow;
use clap::Subcommand;

use super::{Failure, load, runtime, write_stdout};
use crate::cluster::{Dump, StateStore};
use crate::config::{Config, StoreKind};

#[derive(Debug, Subcommand)]
pub(super) enum StateAction {
    /// Write the store's state as JSON (to stdout, or --output FILE).
    Export {
        /// Configuration file naming the store (its [cluster] and state_dir).
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Read an export into the store the configuration names.
    Import {
        /// Configuration file naming the store (its [cluster] and state_dir).
        #[arg(long, short)]
        config: PathBuf,
        /// A file written by `state export`.
        input: PathBuf,
    },
}

fn open(config: &Config) -> Result<Arc<dyn StateStore>, Failure> {
    Ok(match &config.cluster.store {
        StoreKind::Embedded => Arc::new(
            crate::cluster::embedded::EmbeddedStore::open(&config.server.state_dir)
                .map_err(|e| Failure::failed(anyhow!("{e} (stop the edge using this state_dir first)")))?,
        ),
        StoreKind::Redis { url } => Arc::new(
            crate::cluster::redis::RedisStore::open_configured(url, &config.cluster.peer, config.cluster.redis_ca.as_deref())
                .map_err(|e| Failure::failed(anyhow!(e)))?,
        ),
    })
}

/// `portcullis state …`.
pub(super) fn run(action: StateAction) -> Result<(), Failure> {
    let rt = runtime()?;
    match action {
        StateAction::Export { config, output } => {
            let config = load(&config)?;
            let dump = rt.block_on(async { open(&config)?.dump().await.map_err(|e| Failure::failed(anyhow!(e))) })?;
            let json = serde_json::to_string_pretty(&dump).map_err(|e| Failure::failed(anyhow!(e)))?;
            match output {
                Some(path) => {
                    std::fs::write(&path, json).map_err(|e| Failure::failed(anyhow!("cannot write {}: {e}", path.display())))?;
                    eprintln!(
                        "exported {} value(s), {} set(s), {} ban(s) to {}",
                        dump.values.len(),
                        dump.sets.len(),
                        dump.bans.len(),
                        path.display()
                    );
                }
                None => write_stdout(&format!("{json}\n")),
            }
            Ok(())
        }
        StateAction::Import { config, input } => {
            let config = load(&config)?;
            let text = std::fs::read_to_string(&input).map_err(|e| Failure::usage(anyhow!("cannot read {}: {e}", input.display())))?;
            let dump: Dump =
                serde_json::from_str(&text).map_err(|e| Failure::usage(anyhow!("{} is not a state export: {e}", input.display())))?;
            let written = rt.block_on(async { open(&config)?.restore(dump).await.map_err(|e| Failure::failed(anyhow!(e))) })?;
            write_stdout(&format!("imported {written} record(s)\n"));
            Ok(())
        }
    }
}
