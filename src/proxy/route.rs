//! Routing: host (optional) + longest path prefix → service index.
//!
//! Routes with a host only match that host (case-insensitive, port ignored); routes without
//! one match any host. Among matching routes the longest prefix wins; on equal length a
//! host route beats a hostless one. No match → the caller answers 404 at the edge.

use crate::config::RouteConfig;

#[derive(Debug)]
struct Entry {
    host: Option<String>,
    prefix: String,
    service: usize,
}

/// An immutable routing table.
#[derive(Debug, Default)]
pub struct Router {
    /// Sorted by prefix length (longest first), host routes before hostless ones.
    entries: Vec<Entry>,
}

impl Router {
    /// Builds the table; `service_index` maps a service name to its index.
    pub fn new(routes: &[RouteConfig], service_index: impl Fn(&str) -> Option<usize>) -> Router {
        let mut entries: Vec<Entry> = routes
            .iter()
            .filter_map(|r| {
                Some(Entry {
                    host: r.host.as_ref().map(|h| h.to_ascii_lowercase()),
                    prefix: r.path.clone(),
                    service: service_index(&r.service)?,
                })
            })
            .collect();
        entries.sort_by(|a, b| b.prefix.len().cmp(&a.prefix.len()).then_with(|| b.host.is_some().cmp(&a.host.is_some())));
        Router { entries }
    }

    /// The service for a request's host (may carry a port) and path.
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<usize> {
        let host = host.map(strip_port);
        self.entries
            .iter()
            .find(|e| {
                path.starts_with(e.prefix.as_str())
                    && match (&e.host, host) {
                        (None, _) => true,
                        (Some(want), Some(have)) => want.eq_ignore_ascii_case(have),
                        (Some(_), None) => false,
                    }
            })
            .map(|e| e.service)
    }
}

/// `example.com:8443` → `example.com`; `[::1]:8443` → `[::1]`.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    host.rsplit_once(':').map_or(host, |(h, port)| if port.bytes().all(|b| b.is_ascii_digit()) { h } else { host })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(host: Option<&str>, path: &str, service: &str) -> RouteConfig {
        RouteConfig { host: host.map(str::to_string), path: path.into(), service: service.into() }
    }

    fn router() -> Router {
        let names = ["root", "finesse", "finesse-api", "desktop"];
        Router::new(
            &[
                route(None, "/", "root"),
                route(None, "/finesse/", "finesse"),
                route(None, "/finesse/api/", "finesse-api"),
                route(Some("desktop.example.com"), "/finesse/", "desktop"),
                route(None, "/missing/", "nope"),
            ],
            |name| names.iter().position(|n| *n == name),
        )
    }

    #[test]
    fn longest_prefix_wins() {
        let r = router();
        assert_eq!(r.find(None, "/finesse/api/User"), Some(2));
        assert_eq!(r.find(None, "/finesse/x"), Some(1));
        assert_eq!(r.find(None, "/other"), Some(0));
    }

    #[test]
    fn host_route_beats_hostless_route_of_equal_length_and_ignores_port_and_case() {
        let r = router();
        assert_eq!(r.find(Some("Desktop.Example.com:8445"), "/finesse/x"), Some(3));
        assert_eq!(r.find(Some("other.example.com"), "/finesse/x"), Some(1));
        // A longer hostless prefix still wins over a shorter host route.
        assert_eq!(r.find(Some("desktop.example.com"), "/finesse/api/x"), Some(2));
    }

    #[test]
    fn no_match_is_none() {
        let r = Router::new(&[route(Some("a.example"), "/app/", "x")], |_| Some(0));
        assert_eq!(r.find(Some("b.example"), "/app/"), None);
        assert_eq!(r.find(Some("a.example"), "/other"), None);
        assert_eq!(r.find(None, "/app/"), None);
    }

    #[test]
    fn strip_port_handles_ipv6() {
        assert_eq!(strip_port("[::1]:8443"), "[::1]");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("example.com:80"), "example.com");
    }
}
