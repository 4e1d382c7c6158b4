//! Routing: host (optional) + longest path prefix → service index, decided on the canonical
//! request view (`net::canonical`: the host lower-cased without port or trailing dot, the
//! path normalised).
//!
//! Routes with a host only match that host; routes without one match any host. Among
//! matching routes the longest prefix wins; on equal length a host route beats a hostless
//! one. Prefixes compare case-sensitively, unless the route's service declares a
//! case-insensitive upstream (`case_insensitive = true`): then ASCII case folds. No match →
//! the caller answers 404 at the edge.
//!
//! Lookup is indexed: one hash probe per distinct prefix length (longest first), so 10,000
//! routes cost what a handful of lengths cost, not a scan of every route.

use std::collections::HashMap;

use crate::config::RouteConfig;

#[derive(Debug)]
struct Entry {
    host: Option<String>,
    prefix: String,
    service: usize,
    fold_case: bool,
}

/// An immutable routing table.
#[derive(Debug, Default)]
pub struct Router {
    /// Sorted by prefix length (longest first), host routes before hostless ones: the first
    /// matching entry in this order is the answer.
    entries: Vec<Entry>,
    /// Distinct prefix lengths, longest first.
    lengths: Vec<usize>,
    /// Entry positions by exact prefix (case-sensitive routes), ascending.
    exact: HashMap<String, Vec<usize>>,
    /// Entry positions by lower-cased prefix (case-folding routes), ascending.
    folded: HashMap<String, Vec<usize>>,
}

impl Router {
    /// Builds the table; `service_index` maps a service name to its index and whether that
    /// service's upstream folds case.
    pub fn new(routes: &[RouteConfig], service_index: impl Fn(&str) -> Option<(usize, bool)>) -> Router {
        let mut entries: Vec<Entry> = routes
            .iter()
            .filter_map(|r| {
                let (service, fold_case) = service_index(&r.service)?;
                Some(Entry { host: r.host.as_ref().map(|h| h.to_ascii_lowercase()), prefix: r.path.clone(), service, fold_case })
            })
            .collect();
        entries.sort_by(|a, b| b.prefix.len().cmp(&a.prefix.len()).then_with(|| b.host.is_some().cmp(&a.host.is_some())));
        let mut lengths: Vec<usize> = entries.iter().map(|e| e.prefix.len()).collect();
        lengths.dedup();
        let (mut exact, mut folded) = (HashMap::<String, Vec<usize>>::new(), HashMap::<String, Vec<usize>>::new());
        for (position, e) in entries.iter().enumerate() {
            match e.fold_case {
                true => folded.entry(e.prefix.to_ascii_lowercase()).or_default().push(position),
                false => exact.entry(e.prefix.clone()).or_default().push(position),
            }
        }
        Router { entries, lengths, exact, folded }
    }

    /// The service for a request's canonical host (no port) and canonical path.
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<usize> {
        let host_matches = |position: &usize| match (&self.entries[*position].host, host) {
            (None, _) => true,
            (Some(want), Some(have)) => want == have,
            (Some(_), None) => false,
        };
        for &length in &self.lengths {
            let Some(head) = path.get(..length) else { continue };
            let exact = self.exact.get(head).and_then(|positions| positions.iter().copied().find(|p| host_matches(p)));
            let folded = match self.folded.is_empty() {
                true => None,
                false => {
                    self.folded.get(&head.to_ascii_lowercase()).and_then(|positions| positions.iter().copied().find(|p| host_matches(p)))
                }
            };
            // The first in table order, as a scan would find it.
            if let Some(position) = exact.into_iter().chain(folded).min() {
                return Some(self.entries[position].service);
            }
        }
        None
    }
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
            |name| names.iter().position(|n| *n == name).map(|i| (i, name == "finesse-api")),
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
    fn case_folds_only_for_case_insensitive_services() {
        let r = router();
        assert_eq!(r.find(None, "/FINESSE/API/User"), Some(2), "finesse-api folds case");
        assert_eq!(r.find(None, "/FINESSE/x"), Some(0), "finesse does not: falls to /");
    }

    #[test]
    fn host_route_beats_hostless_route_of_equal_length() {
        let r = router();
        assert_eq!(r.find(Some("desktop.example.com"), "/finesse/x"), Some(3));
        assert_eq!(r.find(Some("other.example.com"), "/finesse/x"), Some(1));
        // A longer hostless prefix still wins over a shorter host route.
        assert_eq!(r.find(Some("desktop.example.com"), "/finesse/api/x"), Some(2));
    }

    #[test]
    fn the_index_answers_what_a_scan_of_every_route_answers() {
        // Many routes, hosts, both case modes, shared prefixes, non-ASCII paths.
        let mut routes = Vec::new();
        for i in 0..300 {
            let host = (i % 3 == 0).then(|| format!("h{}.example", i % 7));
            routes.push(route(host.as_deref(), &format!("/a{}/{}", i % 17, "b/".repeat(i % 4)), &format!("s{}", i % 11)));
        }
        routes.push(route(None, "/", "s0"));
        routes.push(route(Some("h1.example"), "/", "s1"));
        let index = |name: &str| name[1..].parse::<usize>().ok().map(|i| (i, i % 2 == 0));
        let router = Router::new(&routes, index);
        let scan = |host: Option<&str>, path: &str| {
            router
                .entries
                .iter()
                .find(|e| {
                    crate::net::canonical::has_prefix(path, &e.prefix, e.fold_case)
                        && match (&e.host, host) {
                            (None, _) => true,
                            (Some(want), Some(have)) => want == have,
                            (Some(_), None) => false,
                        }
                })
                .map(|e| e.service)
        };
        for i in 0..400 {
            for host in [None, Some("h1.example"), Some("h3.example"), Some("other")] {
                for path in [
                    format!("/a{}/{}x", i % 19, "b/".repeat(i % 5)),
                    format!("/A{}/B/b/", i % 19),
                    format!("/a{}/é/b/", i % 19),
                    "/".to_string(),
                    String::new(),
                ] {
                    assert_eq!(router.find(host, &path), scan(host, &path), "{host:?} {path}");
                }
            }
        }
    }

    #[test]
    fn no_match_is_none() {
        let r = Router::new(&[route(Some("a.example"), "/app/", "x")], |_| Some((0, false)));
        assert_eq!(r.find(Some("b.example"), "/app/"), None);
        assert_eq!(r.find(Some("a.example"), "/other"), None);
        assert_eq!(r.find(None, "/app/"), None);
    }
}
