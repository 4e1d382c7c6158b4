//! The federation endpoints of the admin API (DESIGN §4): the domains view, the watch list,
//! and the run-time allow and block lists (kept in the state store, so every peer of a
//! cluster applies a change within a second).
//!
//! - `GET /api/v1/federation/domains[?limit=N]` — partner domains seen by this peer, most
//!   recent first (at most [`MAX_DOMAINS_SHOWN`]).
//! - `GET /api/v1/federation/watch` — the watch list; `DELETE …/watch?domain=D` clears `D`.
//! - `GET|POST|DELETE /api/v1/federation/allow` — list; add `?domain=D[&edge=FQDN]`; remove
//!   `?domain=D`.
//! - `GET|POST|DELETE /api/v1/federation/block` — list; add `?domain=D`; remove `?domain=D`.
//!
//! Answers: `400` for a name that is not a domain, `409` for an entry that exists, comes from
//! the configuration file or would pass the list's cap, `404` for one that is not there,
//! `503` when the state store cannot answer.

use http::{Method, Response, StatusCode};

use super::{AdminBody, AdminState, ErrorBody, json, query_param};
use crate::federation::ListError;

/// Most rows `GET /api/v1/federation/domains` returns.
pub const MAX_DOMAINS_SHOWN: usize = 5_000;
/// Rows returned without `?limit=`.
pub const DEFAULT_DOMAINS_SHOWN: usize = 500;

/// The methods a federation path answers, for `405` + `Allow`.
pub(super) fn allowed_methods(path: &str) -> Option<&'static str> {
    Some(match path {
        "/api/v1/federation/domains" => "GET",
        "/api/v1/federation/watch" => "GET, DELETE",
        "/api/v1/federation/allow" | "/api/v1/federation/block" => "GET, POST, DELETE",
        _ => return None,
    })
}

/// Answers a federation request, or `None` when `(method, path)` is not one.
pub(super) async fn respond(state: &AdminState, method: &Method, path: &str, query: &str) -> Option<Response<AdminBody>> {
    let federation = &state.runtime.federation;
    let domain = || query_param(query, "domain").unwrap_or_default();
    Some(match (method, path) {
        (&Method::GET, "/api/v1/federation/domains") => {
            let limit = match query_param(query, "limit") {
                None => DEFAULT_DOMAINS_SHOWN,
                Some(text) => match text.parse::<usize>() {
                    Ok(limit @ 1..=MAX_DOMAINS_SHOWN) => limit,
                    _ => return Some(json(StatusCode::BAD_REQUEST, &ErrorBody { error: "limit is a number of rows from 1 to 5000" })),
                },
            };
            json(StatusCode::OK, &federation.domains(limit).await)
        }
        (&Method::GET, "/api/v1/federation/watch") => json(StatusCode::OK, &federation.watch_list()),
        (&Method::DELETE, "/api/v1/federation/watch") => {
            removed(federation.clear(&domain()).await, "that domain is not on the watch list", || {
                json(StatusCode::OK, &federation.watch_list())
            })
        }
        (&Method::GET, "/api/v1/federation/allow") => json(StatusCode::OK, &federation.allow_list()),
        (&Method::POST, "/api/v1/federation/allow") => {
            let edge = query_param(query, "edge");
            match federation.allow(&domain(), edge.as_deref()).await {
                Ok(()) => json(StatusCode::OK, &federation.allow_list()),
                Err(error) => refused(&error),
            }
        }
        (&Method::DELETE, "/api/v1/federation/allow") => {
            removed(federation.disallow(&domain()).await, "that domain is not on the run-time allow list", || {
                json(StatusCode::OK, &federation.allow_list())
            })
        }
        (&Method::GET, "/api/v1/federation/block") => json(StatusCode::OK, &federation.block_list()),
        (&Method::POST, "/api/v1/federation/block") => match federation.block(&domain()).await {
            Ok(()) => json(StatusCode::OK, &federation.block_list()),
            Err(error) => refused(&error),
        },
        (&Method::DELETE, "/api/v1/federation/block") => {
            removed(federation.unblock(&domain()).await, "that domain is not on the run-time block list", || {
                json(StatusCode::OK, &federation.block_list())
            })
        }
        _ => return None,
    })
}

/// The answer to a removal: the list after it, `404` when there was nothing to remove.
fn removed(outcome: Result<bool, ListError>, missing: &'static str, list: impl FnOnce() -> Response<AdminBody>) -> Response<AdminBody> {
    match outcome {
        Ok(true) => list(),
        Ok(false) => json(StatusCode::NOT_FOUND, &ErrorBody { error: missing }),
        Err(error) => refused(&error),
    }
}

fn refused(error: &ListError) -> Response<AdminBody> {
    let status = match error {
        ListError::InvalidDomain(_) => StatusCode::BAD_REQUEST,
        ListError::InFile { .. } | ListError::AlreadyListed { .. } | ListError::Full(_) => StatusCode::CONFLICT,
        ListError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    json(status, &ErrorBody { error: &error.to_string() })
}
