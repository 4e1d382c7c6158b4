//! The federation policy (DESIGN §4) as far as one peer decides it: the partner domain of a
//! request is the host of its From URI; the organisation's own domains are not partners;
//! the block list wins (403, connection closed); allow-listed partners pass unthrottled;
//! discovered partners pass throttled to `discovered_rate` per domain (a token bucket with a
//! burst equal to the rate; 503 + `Retry-After` beyond it), or get 403 when discovery is off.
//!
//! Over TLS the partner's certificate must speak for the From domain
//! ([`Policy::certificate_speaks_for`]). Not yet here (issue 12): the watch list, and sharing
//! the throttle and lists through the state store (each peer throttles on its own for now).

use std::collections::HashMap;
use std::sync::Mutex;
use tokio::time::Instant;

use crate::config::sip::FederationConfig;

/// Most partner domains with a throttle kept; the least recently seen go first.
pub const MAX_THROTTLED_DOMAINS: usize = 100_000;

/// What the policy says about a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// From one of the organisation's own domains: not a partner.
    Local,
    /// An allow-listed partner.
    Allowed,
    /// A discovered partner within its rate.
    Discovered,
    /// Blocked: 403 and the connection is closed.
    Blocked,
    /// Not accepted (discovery off, or no usable From host): 403.
    Refused,
    /// A discovered partner over its rate: 503 with `Retry-After` (seconds).
    Throttled { retry_after_secs: u64 },
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

/// The policy of one peer.
pub struct Policy {
    federation: FederationConfig,
    local_domains: Vec<String>,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl Policy {
    /// The policy of `federation`, with `local_domains` (lower case) exempt.
    pub fn new(federation: FederationConfig, local_domains: Vec<String>) -> Policy {
        Policy { federation, local_domains, buckets: Mutex::new(HashMap::new()) }
    }

    /// The decision on a request whose From host is `domain` (`None`: none usable), at `now`.
    pub fn decide(&self, domain: Option<&str>, now: Instant) -> Decision {
        // `Example.COM.` is `example.com`: a list entry must not be escaped by spelling.
        let Some(domain) = domain.map(|d| d.trim_end_matches('.').to_ascii_lowercase()).filter(|d| !d.is_empty()) else {
            return Decision::Refused;
        };
        if self.federation.block.contains(&domain) {
            return Decision::Blocked;
        }
        if self.local_domains.contains(&domain) {
            return Decision::Local;
        }
        if self.federation.allow.iter().any(|a| a.domain == domain) {
            return Decision::Allowed;
        }
        if !self.federation.discovery {
            return Decision::Refused;
        }
        let rate = f64::from(self.federation.discovered_rate.max(1));
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if !buckets.contains_key(&domain) && buckets.len() >= MAX_THROTTLED_DOMAINS {
            // A spray of invented domains must not grow the table: drop the stalest tenth.
            let mut ages: Vec<(Instant, String)> = buckets.iter().map(|(d, b)| (b.last, d.clone())).collect();
            ages.sort();
            for (_, stale) in ages.into_iter().take(MAX_THROTTLED_DOMAINS / 10) {
                buckets.remove(&stale);
            }
        }
        let bucket = buckets.entry(domain).or_insert(Bucket { tokens: rate, last: now });
        bucket.tokens = (bucket.tokens + now.saturating_duration_since(bucket.last).as_secs_f64() * rate).min(rate);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Decision::Discovered
        } else {
            Decision::Throttled { retry_after_secs: 1 }
        }
    }
}

impl Policy {
    /// Whether a partner that presented a certificate naming `names` may speak for `domain`:
    /// a name equal to the domain, a one-label wildcard covering it (`*.example` covers
    /// `partner.example`, not `a.partner.example`), or the allow entry's `edge` FQDN.
    pub fn certificate_speaks_for(&self, names: &[String], domain: &str) -> bool {
        let domain = domain.to_ascii_lowercase();
        let edge = self.federation.allow.iter().find(|a| a.domain == domain).and_then(|a| a.edge.clone());
        names
            .iter()
            .map(|n| n.to_ascii_lowercase())
            .any(|name| covers(&name, &domain) || edge.as_deref().is_some_and(|edge| covers(&name, edge)))
    }
}

/// Whether certificate name `name` covers host `host` (exactly, or by a one-label wildcard).
fn covers(name: &str, host: &str) -> bool {
    match name.strip_prefix("*.") {
        Some(parent) => host.split_once('.').is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
        None => name == host,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::sip::AllowedPartner;

    fn policy(discovery: bool) -> Policy {
        let federation = FederationConfig {
            discovery,
            discovered_rate: 20,
            allow: vec![AllowedPartner { domain: "partner.example".into(), edge: None }],
            block: vec!["spam.example".into(), "both.example".into()],
            ..FederationConfig::default()
        };
        Policy::new(federation, vec!["corp.example".into()])
    }

    #[test]
    fn the_block_list_wins_and_local_and_allowed_domains_pass() {
        let p = policy(true);
        let now = Instant::now();
        assert_eq!(p.decide(Some("SPAM.example"), now), Decision::Blocked);
        assert_eq!(p.decide(Some("spam.example."), now), Decision::Blocked, "a trailing dot is the same domain");
        assert_eq!(p.decide(Some("corp.example"), now), Decision::Local);
        assert_eq!(p.decide(Some("partner.example"), now), Decision::Allowed);
        assert_eq!(p.decide(None, now), Decision::Refused, "no From host: not accepted");
        assert_eq!(policy(false).decide(Some("stranger.example"), now), Decision::Refused, "discovery off");
    }

    #[test]
    fn a_discovered_domain_is_throttled_to_its_rate_with_a_burst_of_the_rate() {
        let p = policy(true);
        let start = Instant::now();
        let passed = (0..100).filter(|_| p.decide(Some("new.example"), start) == Decision::Discovered).count();
        assert_eq!(passed, 20, "a burst of the rate");
        assert_eq!(p.decide(Some("new.example"), start), Decision::Throttled { retry_after_secs: 1 });
        assert_eq!(p.decide(Some("other.example"), start), Decision::Discovered, "per domain");
        // One second later, another second's worth.
        let later = start + Duration::from_secs(1);
        let passed = (0..100).filter(|_| p.decide(Some("new.example"), later) == Decision::Discovered).count();
        assert_eq!(passed, 20);
        // Allow-listed partners are never throttled.
        assert!((0..1000).all(|_| p.decide(Some("partner.example"), start) == Decision::Allowed));
    }

    #[test]
    fn a_certificate_speaks_for_its_names_a_one_label_wildcard_and_the_allow_entrys_edge() {
        let mut federation = FederationConfig::default();
        federation.allow.push(AllowedPartner { domain: "partner.example".into(), edge: Some("sip.partner.example".into()) });
        let p = Policy::new(federation, Vec::new());
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(p.certificate_speaks_for(&names(&["Partner.Example"]), "partner.example"));
        assert!(p.certificate_speaks_for(&names(&["sip.partner.example"]), "partner.example"), "the allow entry's edge FQDN");
        assert!(p.certificate_speaks_for(&names(&["*.example"]), "other.example"), "one-label wildcard");
        assert!(!p.certificate_speaks_for(&names(&["*.example"]), "a.other.example"), "only one label");
        assert!(!p.certificate_speaks_for(&names(&["evil.example"]), "partner.example"));
        assert!(!p.certificate_speaks_for(&names(&["sip.partner.example"]), "other.example"), "an edge name only for its own domain");
        assert!(!p.certificate_speaks_for(&[], "partner.example"));
    }
}
