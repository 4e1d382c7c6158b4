//! CLI verbs for the operator's levers, thin clients of the admin API: `maintenance
//! on|off|status`, `web cert add|del|details [edit]|gen-csr|print-csr|gen-selfsigned`, and
//! `web weight add|del|list`.

use std::fmt::Write;
use std::path::PathBuf;

use anyhow::anyhow;
use bytes::Bytes;
use clap::Subcommand;

use super::{AdminTarget, Failure, admin_call, admin_send, runtime, write_stdout};

#[derive(Debug, Subcommand)]
pub(super) enum MaintenanceAction {
    /// Refuse new sessions (503 + Retry-After); established ones continue; /health answers 503.
    On {
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Serve new sessions again.
    Off {
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Show maintenance and each service's state.
    Status {
        #[command(flatten)]
        target: AdminTarget,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(super) enum WebCommand {
    /// The HTTPS certificate.
    Cert {
        #[command(subcommand)]
        action: CertAction,
    },
    /// Upstream server weights (overrides persisted in the state store, applied live).
    Weight {
        #[command(subcommand)]
        action: WeightAction,
    },
}

#[derive(Debug, Subcommand)]
pub(super) enum CertAction {
    /// Install a PEM file: chain (leaf first) and key; checked, then served without restart.
    Add {
        #[command(flatten)]
        target: AdminTarget,
        /// PEM file with the certificate chain and its private key.
        file: PathBuf,
    },
    /// Remove the installed certificate (back to the configured or self-signed one).
    Del {
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Subject, names, issuer, serial, validity, key type and fingerprint of the certificate.
    Details {
        #[command(flatten)]
        target: AdminTarget,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        edit: Option<Box<DetailsAction>>,
    },
    /// Generate a new key and a CSR from the stored subject fields.
    GenCsr {
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Print the last CSR.
    PrintCsr {
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Generate a fresh self-signed certificate for server.name.
    GenSelfsigned {
        #[command(flatten)]
        target: AdminTarget,
    },
}

#[derive(Debug, Subcommand)]
pub(super) enum DetailsAction {
    /// Show or change the subject fields used for the CSR (only the options given change).
    Edit {
        #[command(flatten)]
        target: AdminTarget,
        /// Common name.
        #[arg(long)]
        cn: Option<String>,
        /// Subject alternative names, comma-separated.
        #[arg(long)]
        san: Option<String>,
        /// Organization.
        #[arg(long)]
        o: Option<String>,
        /// Organizational unit.
        #[arg(long)]
        ou: Option<String>,
        /// Locality.
        #[arg(long)]
        l: Option<String>,
        /// State or province.
        #[arg(long)]
        st: Option<String>,
        /// Country (two letters).
        #[arg(long)]
        c: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub(super) enum WeightAction {
    /// Override the weight of SERVER:PORT (0 = backup).
    Add {
        #[command(flatten)]
        target: AdminTarget,
        server: String,
        weight: u32,
    },
    /// Remove the override (back to the configured weight).
    Del {
        #[command(flatten)]
        target: AdminTarget,
        server: String,
    },
    /// List servers with configured, overridden and effective weights.
    List {
        #[command(flatten)]
        target: AdminTarget,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
}

pub(super) fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Failure> {
    serde_json::from_slice(body).map_err(|e| Failure::failed(anyhow!("unexpected answer: {e}")))
}

pub(super) fn call(target: AdminTarget, method: http::Method, path: &str, body: Bytes) -> Result<Bytes, Failure> {
    let (url, token) = target.resolve()?;
    runtime()?.block_on(admin_send(&url, &token, method, path, body))
}

/// `portcullis maintenance …`.
pub(super) fn maintenance(action: MaintenanceAction) -> Result<(), Failure> {
    let (target, method, path, json) = match action {
        MaintenanceAction::On { target } => (target, http::Method::POST, "/api/v1/maintenance?enabled=on", false),
        MaintenanceAction::Off { target } => (target, http::Method::POST, "/api/v1/maintenance?enabled=off", false),
        MaintenanceAction::Status { target, json } => (target, http::Method::GET, "/api/v1/maintenance", json),
    };
    let body = call(target, method, path, Bytes::new())?;
    if json {
        write_stdout(&format!("{}\n", String::from_utf8_lossy(&body)));
        return Ok(());
    }
    let state: crate::admin::operate::MaintenanceBody = parse(&body)?;
    let mut out = format!("MAINTENANCE: {}\n", if state.maintenance { "ON" } else { "off" });
    for s in &state.services {
        let _ = writeln!(out, "  {:<16} {:<28} sessions {}, websockets {}", s.name, s.state, s.sessions, s.websockets);
    }
    write_stdout(&out);
    Ok(())
}

/// `portcullis web …`.
pub(super) fn web(what: WebCommand) -> Result<(), Failure> {
    match what {
        WebCommand::Cert { action } => cert(action),
        WebCommand::Weight { action } => weight(action),
    }
}

fn print_details(body: &[u8]) -> Result<(), Failure> {
    let value: serde_json::Value = parse(body)?;
    let d = value.get("details").unwrap_or(&value);
    let mut out = String::new();
    if let Some(origin) = value.get("origin").and_then(|o| o.as_str()) {
        let _ = writeln!(out, "SOURCE:       {origin}");
    }
    for (label, key) in [
        ("SUBJECT", "subject"),
        ("ISSUER", "issuer"),
        ("SERIAL", "serial"),
        ("NOT BEFORE", "not_before"),
        ("NOT AFTER", "not_after"),
        ("KEY", "key_type"),
        ("SHA-256", "fingerprint_sha256"),
    ] {
        let _ = writeln!(out, "{:<13} {}", format!("{label}:"), d[key].as_str().unwrap_or("-"));
    }
    let names: Vec<&str> = d["subject_alt_names"].as_array().map(|a| a.iter().filter_map(|n| n.as_str()).collect()).unwrap_or_default();
    let _ = writeln!(out, "{:<13} {}", "NAMES:", names.join(", "));
    let _ = writeln!(out, "{:<13} {}", "CHAIN:", d["chain_length"].as_u64().unwrap_or(0));
    if let Some(notice) = value.get("notice").and_then(|n| n.as_str()) {
        let _ = writeln!(out, "{notice}");
    }
    write_stdout(&out);
    Ok(())
}

fn cert(action: CertAction) -> Result<(), Failure> {
    match action {
        CertAction::Add { target, file } => {
            let pem = std::fs::read(&file).map_err(|e| Failure::usage(anyhow!("cannot read {}: {e}", file.display())))?;
            let body = call(target, http::Method::POST, "/api/v1/cert", Bytes::from(pem))?;
            write_stdout("certificate installed (new connections get it; open ones keep theirs):\n");
            print_details(&body)
        }
        CertAction::Del { target } => {
            let body = call(target, http::Method::DELETE, "/api/v1/cert", Bytes::new())?;
            write_stdout("installed certificate removed; now serving:\n");
            print_details(&body)
        }
        CertAction::Details { target, json, edit: None } => {
            let body = call(target, http::Method::GET, "/api/v1/cert", Bytes::new())?;
            if json {
                write_stdout(&format!("{}\n", String::from_utf8_lossy(&body)));
                return Ok(());
            }
            print_details(&body)
        }
        CertAction::Details { edit: Some(edit), .. } => {
            let DetailsAction::Edit { target, cn, san, o, ou, l, st, c } = *edit;
            let mut changes = serde_json::Map::new();
            let mut set = |key: &str, value: Option<String>| {
                if let Some(v) = value {
                    changes.insert(key.to_string(), serde_json::Value::String(v));
                }
            };
            set("common_name", cn);
            set("organization", o);
            set("organizational_unit", ou);
            set("locality", l);
            set("state", st);
            set("country", c);
            if let Some(san) = san {
                let names: Vec<serde_json::Value> =
                    san.split(',').map(str::trim).filter(|n| !n.is_empty()).map(|n| serde_json::Value::String(n.to_string())).collect();
                changes.insert("subject_alt_names".into(), serde_json::Value::Array(names));
            }
            let (url, token) = target.resolve()?;
            let rt = runtime()?;
            let body = if changes.is_empty() {
                rt.block_on(admin_call(&url, &token, http::Method::GET, "/api/v1/cert/fields"))?
            } else {
                let json = serde_json::to_vec(&changes).unwrap_or_default();
                rt.block_on(admin_send(&url, &token, http::Method::PUT, "/api/v1/cert/fields", Bytes::from(json)))?
            };
            let fields: crate::operate::cert::CsrFields = parse(&body)?;
            write_stdout(&format!(
                "CN={}\nSAN={}\nO={}\nOU={}\nL={}\nST={}\nC={}\n",
                fields.common_name,
                fields.subject_alt_names.join(","),
                fields.organization,
                fields.organizational_unit,
                fields.locality,
                fields.state,
                fields.country
            ));
            Ok(())
        }
        CertAction::GenCsr { target } => {
            let body = call(target, http::Method::POST, "/api/v1/cert/csr", Bytes::new())?;
            write_stdout(&String::from_utf8_lossy(&body));
            Ok(())
        }
        CertAction::PrintCsr { target } => {
            let body = call(target, http::Method::GET, "/api/v1/cert/csr", Bytes::new())?;
            write_stdout(&String::from_utf8_lossy(&body));
            Ok(())
        }
        CertAction::GenSelfsigned { target } => {
            let body = call(target, http::Method::POST, "/api/v1/cert/self-signed", Bytes::new())?;
            write_stdout("new self-signed certificate generated:\n");
            print_details(&body)
        }
    }
}

fn weight(action: WeightAction) -> Result<(), Failure> {
    let (target, method, path, json) = match action {
        WeightAction::Add { target, server, weight } => {
            (target, http::Method::POST, format!("/api/v1/weights?server={}&weight={weight}", crate::net::percent::encode(&server)), false)
        }
        WeightAction::Del { target, server } => {
            (target, http::Method::DELETE, format!("/api/v1/weights?server={}", crate::net::percent::encode(&server)), false)
        }
        WeightAction::List { target, json } => (target, http::Method::GET, "/api/v1/weights".to_string(), json),
    };
    let body = call(target, method, &path, Bytes::new())?;
    if json {
        write_stdout(&format!("{}\n", String::from_utf8_lossy(&body)));
        return Ok(());
    }
    let rows: Vec<crate::admin::operate::WeightRow> = parse(&body)?;
    let mut out = format!("{:<16} {:<32} {:>10} {:>10} {:>8}\n", "SERVICE", "SERVER", "CONFIGURED", "OVERRIDE", "WEIGHT");
    for r in &rows {
        let overridden = r.overridden.map_or_else(|| "-".to_string(), |w| w.to_string());
        let _ = writeln!(out, "{:<16} {:<32} {:>10} {:>10} {:>8}", r.service, r.server, r.configured, overridden, r.weight);
    }
    write_stdout(&out);
    Ok(())
}
