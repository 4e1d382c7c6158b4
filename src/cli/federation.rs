//! `portcullis federation …`: the SIP federation's views and run-time lists, a thin client of
//! the admin API (`/api/v1/federation/…`): `domains`, `watch`, `allow add DOMAIN [--edge
//! FQDN]|del DOMAIN|list`, `block add|del|list`, `clear DOMAIN`. `--json` prints the API's
//! answer as it is.

use std::fmt::Write;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use clap::Subcommand;

use super::operate::{call, parse};
use super::{AdminTarget, Failure, write_stdout};
use crate::net::percent::encode;

#[derive(Debug, Subcommand)]
pub(super) enum FederationAction {
    /// Partner domains seen recently: first/last seen, requests, errors, distinct users,
    /// throttled count and state.
    Domains {
        #[command(flatten)]
        target: AdminTarget,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
    /// The watch list (discovered domains refused for too many distinct users, or flagged for
    /// their share of errors).
    Watch {
        #[command(flatten)]
        target: AdminTarget,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
    /// The allow list: trusted partners, never throttled.
    Allow {
        #[command(subcommand)]
        action: ListAction,
    },
    /// The block list (wins over everything): 403 and the connection closed.
    Block {
        #[command(subcommand)]
        action: ListAction,
    },
    /// Take DOMAIN off the watch list (its distinct users and error counts start afresh).
    Clear {
        #[command(flatten)]
        target: AdminTarget,
        domain: String,
    },
}

#[derive(Debug, Subcommand)]
pub(super) enum ListAction {
    /// Add DOMAIN at run time (kept in the state store; every peer applies it).
    Add {
        #[command(flatten)]
        target: AdminTarget,
        domain: String,
        /// The partner's edge FQDN its certificate names (allow list only).
        #[arg(long)]
        edge: Option<String>,
    },
    /// Remove a run-time entry (the file's entries change by editing it and reloading).
    Del {
        #[command(flatten)]
        target: AdminTarget,
        domain: String,
    },
    /// List the entries (file and run time).
    List {
        #[command(flatten)]
        target: AdminTarget,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `portcullis federation …`.
pub(super) fn run(action: FederationAction) -> Result<(), Failure> {
    match action {
        FederationAction::Domains { target, json } => {
            let body = call(target, http::Method::GET, "/api/v1/federation/domains", Bytes::new())?;
            print(&body, json, domains)
        }
        FederationAction::Watch { target, json } => {
            let body = call(target, http::Method::GET, "/api/v1/federation/watch", Bytes::new())?;
            print(&body, json, watch)
        }
        FederationAction::Clear { target, domain } => {
            call(target, http::Method::DELETE, &format!("/api/v1/federation/watch?domain={}", encode(&domain)), Bytes::new())?;
            write_stdout(&format!("{domain} cleared off the watch list\n"));
            Ok(())
        }
        FederationAction::Allow { action } => list("allow", action),
        FederationAction::Block { action } => list("block", action),
    }
}

fn list(name: &str, action: ListAction) -> Result<(), Failure> {
    let path = format!("/api/v1/federation/{name}");
    match action {
        ListAction::List { target, json } => {
            let body = call(target, http::Method::GET, &path, Bytes::new())?;
            print(&body, json, entries)
        }
        ListAction::Add { target, domain, edge } => {
            if edge.is_some() && name != "allow" {
                return Err(Failure::usage(anyhow::anyhow!("--edge belongs to the allow list")));
            }
            let mut query = format!("{path}?domain={}", encode(&domain));
            if let Some(edge) = &edge {
                let _ = write!(query, "&edge={}", encode(edge));
            }
            call(target, http::Method::POST, &query, Bytes::new())?;
            write_stdout(&format!("{domain} added to the {name} list\n"));
            Ok(())
        }
        ListAction::Del { target, domain } => {
            call(target, http::Method::DELETE, &format!("{path}?domain={}", encode(&domain)), Bytes::new())?;
            write_stdout(&format!("{domain} removed from the {name} list\n"));
            Ok(())
        }
    }
}

/// Prints the API's JSON as it is, or rendered as a table by `render`.
fn print(body: &[u8], json: bool, render: fn(&[serde_json::Value]) -> String) -> Result<(), Failure> {
    if json {
        write_stdout(&format!("{}\n", String::from_utf8_lossy(body)));
        return Ok(());
    }
    let rows: Vec<serde_json::Value> = parse(body)?;
    write_stdout(&render(&rows));
    Ok(())
}

fn time(ms: &serde_json::Value) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms.as_u64().unwrap_or(0))).to_string()
}

fn count(value: &serde_json::Value) -> u64 {
    value.as_u64().unwrap_or(0)
}

fn domains(rows: &[serde_json::Value]) -> String {
    let mut out = format!(
        "{:<32} {:<10} {:<20} {:<20} {:>8} {:>9} {:>7} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6}\n",
        "DOMAIN",
        "STATE",
        "FIRST SEEN",
        "LAST SEEN",
        "REQUESTS",
        "THROTTLED",
        "REFUSED",
        "2XX",
        "3XX",
        "4XX",
        "5XX",
        "6XX",
        "ERRORS",
        "USERS"
    );
    for d in rows {
        let r = &d["responses"];
        let _ = writeln!(
            out,
            "{:<32} {:<10} {:<20} {:<20} {:>8} {:>9} {:>7} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6}",
            d["domain"].as_str().unwrap_or("?"),
            d["state"].as_str().unwrap_or("?"),
            time(&d["first_seen_ms"]),
            time(&d["last_seen_ms"]),
            count(&d["requests"]),
            count(&d["throttled"]),
            count(&d["refused"]),
            count(&r["2xx"]),
            count(&r["3xx"]),
            count(&r["4xx"]),
            count(&r["5xx"]),
            count(&r["6xx"]),
            count(&d["errors"]),
            count(&d["distinct_users"])
        );
    }
    let _ = writeln!(out, "{} domain(s)", rows.len());
    out
}

fn watch(rows: &[serde_json::Value]) -> String {
    let mut out = format!("{:<40} {:<16} {}\n", "DOMAIN", "REASON", "SINCE");
    for w in rows {
        let _ = writeln!(
            out,
            "{:<40} {:<16} {}",
            w["domain"].as_str().unwrap_or("?"),
            w["reason"].as_str().unwrap_or("?"),
            time(&w["since_ms"])
        );
    }
    let _ = writeln!(out, "{} on the watch list", rows.len());
    out
}

fn entries(rows: &[serde_json::Value]) -> String {
    let mut out = format!("{:<40} {:<8} {}\n", "DOMAIN", "FROM", "EDGE");
    for e in rows {
        let _ = writeln!(
            out,
            "{:<40} {:<8} {}",
            e["domain"].as_str().unwrap_or("?"),
            e["origin"].as_str().unwrap_or("?"),
            e["edge"].as_str().unwrap_or("-")
        );
    }
    out
}
