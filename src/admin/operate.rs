//! Admin endpoints for the operator's levers (DESIGN §5): maintenance, upstream weight
//! overrides, the web certificate (add, delete, details, CSR fields, CSR, self-signed), and
//! refresh. Every change is logged to `error.log` and applied without a restart.

use std::sync::Arc;

use http::StatusCode;
use serde::Serialize;

use super::{AdminBody, AdminState, ErrorBody, json, query_param, text};
use crate::config::ServiceKind;
use crate::operate::cert::{self, CsrFields};
use crate::telemetry::logging::quoted;

/// `GET|POST /api/v1/maintenance` body.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct MaintenanceBody {
    pub maintenance: bool,
    pub services: Vec<ServiceState>,
}

/// One service's drain state.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct ServiceState {
    pub name: String,
    pub state: String,
    pub sessions: usize,
    pub websockets: u64,
}

fn maintenance_body(state: &AdminState) -> MaintenanceBody {
    let operate = &state.runtime.operate;
    let services = state
        .runtime
        .control
        .services()
        .into_iter()
        .map(|s| {
            let (sessions, websockets) = (s.sessions, operate.websockets_of(&s.name).current());
            ServiceState { name: s.name.to_string(), state: operate.state(sessions as u64 + websockets).to_string(), sessions, websockets }
        })
        .collect();
    MaintenanceBody { maintenance: operate.in_maintenance(), services }
}

/// `GET /api/v1/maintenance`.
pub fn get_maintenance(state: &AdminState) -> http::Response<AdminBody> {
    json(StatusCode::OK, &maintenance_body(state))
}

/// `POST /api/v1/maintenance?enabled=on|off`.
pub async fn set_maintenance(state: &AdminState, query: &str) -> http::Response<AdminBody> {
    let on = match query_param(query, "enabled").as_deref() {
        Some("on" | "true" | "1") => true,
        Some("off" | "false" | "0") => false,
        _ => return json(StatusCode::BAD_REQUEST, &ErrorBody { error: "pass ?enabled=on or ?enabled=off" }),
    };
    if state.runtime.operate.set_maintenance(on).await.is_err() {
        return json(StatusCode::SERVICE_UNAVAILABLE, &ErrorBody { error: "state store unavailable" });
    }
    state.runtime.events.publish(crate::event::Event::Maintenance { on });
    json(StatusCode::OK, &maintenance_body(state))
}

/// One row of `GET /api/v1/weights`.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct WeightRow {
    pub service: String,
    pub server: String,
    pub configured: u32,
    /// The operator's override, if any.
    pub overridden: Option<u32>,
    /// What is in effect.
    pub weight: u32,
}

fn weight_rows(state: &AdminState) -> Vec<WeightRow> {
    let config = state.runtime.config();
    let overrides = state.runtime.operate.weights();
    let mut rows = Vec::new();
    for s in &config.services {
        if let ServiceKind::Proxy(pool) = &s.kind {
            for u in &pool.servers {
                let overridden = overrides.get(&u.address).copied();
                rows.push(WeightRow {
                    service: s.name.clone(),
                    server: u.address.clone(),
                    configured: u.weight,
                    overridden,
                    weight: overridden.unwrap_or(u.weight),
                });
            }
        }
    }
    rows
}

/// `GET /api/v1/weights`.
pub fn get_weights(state: &AdminState) -> http::Response<AdminBody> {
    json(StatusCode::OK, &weight_rows(state))
}

/// `POST /api/v1/weights?server=HOST:PORT&weight=N` and `DELETE /api/v1/weights?server=HOST:PORT`.
pub async fn set_weight(state: &AdminState, query: &str, delete: bool) -> http::Response<AdminBody> {
    let Some(server) = query_param(query, "server").filter(|s| !s.is_empty() && s.len() <= 255) else {
        return json(StatusCode::BAD_REQUEST, &ErrorBody { error: "pass ?server=HOST:PORT" });
    };
    if !weight_rows(state).iter().any(|r| r.server == server) {
        return json(StatusCode::NOT_FOUND, &ErrorBody { error: "no upstream server with that HOST:PORT in the configuration" });
    }
    let weight = if delete {
        None
    } else {
        match query_param(query, "weight").and_then(|w| w.parse::<u32>().ok()).filter(|w| *w <= crate::operate::MAX_WEIGHT) {
            Some(w) => Some(w),
            None => return json(StatusCode::BAD_REQUEST, &ErrorBody { error: "pass &weight=N with N from 0 (backup) to 1000" }),
        }
    };
    if state.runtime.operate.set_weight(&server, weight).await.is_err() {
        return json(StatusCode::SERVICE_UNAVAILABLE, &ErrorBody { error: "state store unavailable" });
    }
    if let Err(error) = state.runtime.control.rebuild() {
        state.runtime.error_log.error(&format!("weight change stored but not applied: {error}"));
        return json(
            StatusCode::INTERNAL_SERVER_ERROR,
            &ErrorBody { error: "weight stored but the routing could not be rebuilt (see error.log)" },
        );
    }
    state.runtime.error_log.warn(&match weight {
        Some(w) => format!("weight of {server} set to {w} by the administrator"),
        None => format!("weight override of {server} removed (configured weight applies)"),
    });
    json(StatusCode::OK, &weight_rows(state))
}

/// `POST /api/v1/refresh`: re-fetch JWKS keys and user lists, then rebuild routing and
/// pools (upstream names resolve again on new connections); swapped in atomically.
pub async fn refresh(state: &AdminState) -> http::Response<AdminBody> {
    state.runtime.control.refresh_credentials().await;
    match state.runtime.control.rebuild() {
        Ok(()) => {
            state.runtime.error_log.warn("refresh: keys and user lists re-fetched, routing and upstream pools rebuilt");
            json(StatusCode::OK, &serde_json::json!({ "refreshed": true }))
        }
        Err(error) => {
            state.runtime.error_log.error(&format!("refresh failed, keeping the running state: {error}"));
            json(StatusCode::INTERNAL_SERVER_ERROR, &ErrorBody { error: "refresh failed (see error.log)" })
        }
    }
}

fn tls_dir(state: &AdminState) -> std::path::PathBuf {
    cert::tls_dir(&state.runtime.config().server.state_dir)
}

/// Why the certificate in use could not be swapped (the running one stays).
#[derive(Debug, thiserror::Error)]
enum SwapError {
    #[error(transparent)]
    Select(#[from] cert::CertError),
    #[error(transparent)]
    Tls(#[from] crate::net::tls::TlsError),
}

/// Re-picks the certificate (installed > configured > self-signed) and swaps it into the
/// HTTPS listeners: open connections keep theirs, new handshakes get the new one.
fn swap_certificate(state: &AdminState) -> Result<(), SwapError> {
    let config = state.runtime.config();
    let paths = cert::ensure_certificate(
        config.tls.as_ref().map(|t| (t.cert.as_path(), t.key.as_path())),
        &config.server.state_dir,
        &config.server.name,
    )?;
    let server_config = paths.http_profile().server_config()?;
    if let Some(acceptor) = &state.tls {
        acceptor.store(Arc::new(tokio_rustls::TlsAcceptor::from(server_config)));
    }
    if let Ok(details) = cert::details_of_file(&paths.cert) {
        state.runtime.metrics.certificate_expiry(details.not_after_unix - time::OffsetDateTime::now_utc().unix_timestamp());
    }
    Ok(())
}

/// `GET /api/v1/cert`.
pub fn get_cert(state: &AdminState) -> http::Response<AdminBody> {
    match super::status::certificate(state) {
        Some(status) => json(StatusCode::OK, &status),
        None => json(StatusCode::NOT_FOUND, &ErrorBody { error: "no HTTPS listener: no web certificate in use" }),
    }
}

/// `POST /api/v1/cert` with the PEM bundle (chain + key) as the body.
pub async fn add_cert(state: &AdminState, body: &[u8]) -> http::Response<AdminBody> {
    let config = state.runtime.config();
    let dir = tls_dir(state);
    let csr_key = std::fs::read_to_string(dir.join(cert::CSR_KEY)).ok();
    let bundle = match cert::check_bundle(body, &config.server.name, time::OffsetDateTime::now_utc(), csr_key.as_deref()) {
        Ok(bundle) => bundle,
        Err(why) => return json(StatusCode::BAD_REQUEST, &ErrorBody { error: &format!("certificate refused: {why}") }),
    };
    let written = std::fs::create_dir_all(&dir)
        .and_then(|()| crate::net::tls::write_private(&dir.join(cert::INSTALLED_KEY), bundle.key_pem.as_bytes()))
        .and_then(|()| std::fs::write(dir.join(cert::INSTALLED_CERT), bundle.chain_pem.as_bytes()));
    if let Err(error) = written {
        return json(StatusCode::INTERNAL_SERVER_ERROR, &ErrorBody { error: &format!("cannot write the certificate: {error}") });
    }
    if let Err(error) = swap_certificate(state) {
        let _ = std::fs::remove_file(dir.join(cert::INSTALLED_CERT));
        let _ = std::fs::remove_file(dir.join(cert::INSTALLED_KEY));
        return json(StatusCode::BAD_REQUEST, &ErrorBody { error: &format!("certificate refused by TLS: {error}") });
    }
    state.runtime.error_log.warn(&format!(
        "web certificate installed: {} (serial {}, valid until {})",
        quoted(&bundle.details.subject),
        quoted(&bundle.details.serial),
        bundle.details.not_after
    ));
    json(StatusCode::OK, &bundle.details)
}

/// `DELETE /api/v1/cert`: back to the configured or self-signed certificate.
pub fn del_cert(state: &AdminState) -> http::Response<AdminBody> {
    let dir = tls_dir(state);
    let removed = std::fs::remove_file(dir.join(cert::INSTALLED_CERT)).is_ok();
    let _ = std::fs::remove_file(dir.join(cert::INSTALLED_KEY));
    if !removed {
        return json(StatusCode::NOT_FOUND, &ErrorBody { error: "no installed certificate (the configured or self-signed one is in use)" });
    }
    if let Err(error) = swap_certificate(state) {
        return json(StatusCode::INTERNAL_SERVER_ERROR, &ErrorBody { error: &format!("cannot load the fallback certificate: {error}") });
    }
    state.runtime.error_log.warn("installed web certificate deleted; back to the configured or self-signed certificate");
    get_cert(state)
}

/// `POST /api/v1/cert/self-signed`: a fresh self-signed certificate for `server.name`
/// (served when no certificate is installed or configured).
pub fn gen_self_signed(state: &AdminState) -> http::Response<AdminBody> {
    let config = state.runtime.config();
    let dir = tls_dir(state);
    if let Err(error) = cert::generate_self_signed(&config.server.name, &dir.join("self-signed.pem"), &dir.join("self-signed.key")) {
        return json(StatusCode::INTERNAL_SERVER_ERROR, &ErrorBody { error: &error.to_string() });
    }
    if let Err(error) = swap_certificate(state) {
        return json(StatusCode::INTERNAL_SERVER_ERROR, &ErrorBody { error: &error.to_string() });
    }
    state.runtime.error_log.warn("new self-signed web certificate generated");
    get_cert(state)
}

async fn csr_fields(state: &AdminState) -> CsrFields {
    match state.runtime.store.get(cert::CSR_FIELDS_KEY).await {
        Ok(Some(bytes)) => serde_json::from_slice(&bytes).unwrap_or_default(),
        _ => CsrFields { common_name: state.runtime.config().server.name.clone(), ..CsrFields::default() },
    }
}

/// `GET /api/v1/cert/fields`.
pub async fn get_fields(state: &AdminState) -> http::Response<AdminBody> {
    json(StatusCode::OK, &csr_fields(state).await)
}

/// `PUT /api/v1/cert/fields` with a JSON object; fields not given keep their value.
pub async fn put_fields(state: &AdminState, body: &[u8]) -> http::Response<AdminBody> {
    let Ok(changes) = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(body) else {
        return json(StatusCode::BAD_REQUEST, &ErrorBody { error: "the body must be a JSON object of CSR fields" });
    };
    let mut merged = serde_json::to_value(csr_fields(state).await).unwrap_or_default();
    if let Some(object) = merged.as_object_mut() {
        for (key, value) in changes {
            if !object.contains_key(&key) {
                return json(StatusCode::BAD_REQUEST, &ErrorBody { error: &format!("unknown field {key:?}") });
            }
            object.insert(key, value);
        }
    }
    let fields: CsrFields = match serde_json::from_value(merged) {
        Ok(fields) => fields,
        Err(error) => return json(StatusCode::BAD_REQUEST, &ErrorBody { error: &format!("invalid field: {error}") }),
    };
    if let Err(why) = cert::check_fields(&fields) {
        return json(StatusCode::BAD_REQUEST, &ErrorBody { error: &why.to_string() });
    }
    let bytes = serde_json::to_vec(&fields).unwrap_or_default();
    if state.runtime.store.set(cert::CSR_FIELDS_KEY, &bytes, None).await.is_err() {
        return json(StatusCode::SERVICE_UNAVAILABLE, &ErrorBody { error: "state store unavailable" });
    }
    json(StatusCode::OK, &fields)
}

/// `POST /api/v1/cert/csr`: a new key and CSR from the stored fields; the CSR PEM.
pub async fn gen_csr(state: &AdminState) -> http::Response<AdminBody> {
    let fields = csr_fields(state).await;
    match cert::generate_csr(&fields, &tls_dir(state)) {
        Ok(pem) => {
            state.runtime.error_log.warn(&format!("CSR generated for {}", quoted(&fields.common_name)));
            text(StatusCode::OK, "application/pkcs10", pem)
        }
        Err(why) => json(StatusCode::BAD_REQUEST, &ErrorBody { error: &why.to_string() }),
    }
}

/// `GET /api/v1/cert/csr`: the last CSR.
pub fn print_csr(state: &AdminState) -> http::Response<AdminBody> {
    match std::fs::read_to_string(tls_dir(state).join(cert::CSR_FILE)) {
        Ok(pem) => text(StatusCode::OK, "application/pkcs10", pem),
        Err(_) => json(StatusCode::NOT_FOUND, &ErrorBody { error: "no CSR yet: run `portcullis web cert gen-csr`" }),
    }
}
