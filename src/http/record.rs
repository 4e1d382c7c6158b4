//! The access-log and metrics record of one request ([`RequestRecord`]): filled in as the
//! pipeline decides, completed when the response body ends.

use std::sync::Arc;

use http::Version;
use tokio::time::Instant;

use super::facts::Facts;
use super::gateway::Edge;
use super::tracked::Completion;
use crate::protect::RequestLine;
use crate::telemetry::access_log::AccessEntry;

/// The access-log and metrics record of one request, completed when its body ends.
pub struct RequestRecord {
    pub edge: Arc<Edge>,
    pub start: Instant,
    pub facts: Facts,
    pub host: String,
    pub method: http::Method,
    pub path: String,
    pub version: Version,
    pub status: u16,
    pub service: Option<Arc<str>>,
    pub upstream: Option<Arc<str>>,
    /// A refused credential was already counted by the shield (under its admission).
    pub failure_recorded: bool,
}

impl RequestRecord {
    /// The client (see [`Facts::client`]).
    pub fn client(&self) -> std::net::IpAddr {
        self.facts.client
    }

    /// The request line for `blocking.log`.
    pub fn line(&self) -> RequestLine<'_> {
        RequestLine { method: self.method.as_str(), path: &self.path, protocol: version_text(self.version), host: &self.host }
    }
}

impl Completion for RequestRecord {
    fn complete(&self, bytes: u64) {
        let elapsed = self.start.elapsed();
        let runtime = &self.edge.runtime;
        let service = self.service.as_ref().unwrap_or(self.edge.no_service());
        runtime.metrics.request(service, self.status, elapsed);
        runtime.access_log.write(&AccessEntry {
            client: self.facts.client,
            host: &self.host,
            method: self.method.as_str(),
            path: &self.path,
            protocol: version_text(self.version),
            status: self.status,
            bytes,
            upstream: self.upstream.as_deref(),
            service: self.service.as_deref(),
            duration: elapsed,
        });
    }
}

fn version_text(version: Version) -> &'static str {
    match version {
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        _ => "HTTP/?",
    }
}
