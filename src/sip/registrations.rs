//! Registration counts (DESIGN §4): the bindings the registrar confirmed — a 200 to a
//! REGISTER, each Contact with its `expires` (or the `Expires` header, else 3600 s) — counted
//! while unexpired; `expires=0` (or `Contact: *` with `Expires: 0`) removes them. Current and
//! peak since start, for `status` and the status page.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::message::{SipMessage, addr_spec};
use super::proxy::{param, values};

/// Most bindings counted (a registrar that confirms more is still served; the count stops).
pub const MAX_BINDINGS: usize = 1_000_000;
/// The longest binding lifetime counted (RFC 3261 §20.19: at most 2^32-1 seconds).
const MAX_EXPIRES: u64 = u32::MAX as u64;
/// A binding's lifetime when neither the Contact nor the response says.
const DEFAULT_EXPIRES: u64 = 3600;

/// The bindings confirmed by the registrar.
#[derive(Default)]
pub struct Registrations {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// `AOR contact` → when the binding expires.
    bindings: HashMap<String, Instant>,
    /// When each binding expires, soonest first, so that expiring costs nothing per response
    /// (an entry whose binding was refreshed or removed since is skipped when it comes up).
    expiries: BinaryHeap<Reverse<(Instant, String)>>,
    peak: u64,
}

impl Inner {
    /// Drops the bindings expired at `now`.
    fn expire(&mut self, now: Instant) {
        while let Some(Reverse((until, _))) = self.expiries.peek()
            && *until <= now
        {
            let Some(Reverse((until, key))) = self.expiries.pop() else { break };
            if self.bindings.get(&key) == Some(&until) {
                self.bindings.remove(&key);
            }
        }
    }

    fn insert(&mut self, key: String, until: Instant) {
        self.expiries.push(Reverse((until, key.clone())));
        self.bindings.insert(key, until);
        // Refreshes leave stale entries behind; past twice the bindings, start again from them.
        if self.expiries.len() > 2 * self.bindings.len() + 1024 {
            self.expiries = self.bindings.iter().map(|(key, until)| Reverse((*until, key.clone()))).collect();
        }
    }
}

impl Registrations {
    /// Takes note of a response from the registrar (only 200s to REGISTER change anything).
    pub fn note(&self, response: &SipMessage, now: Instant) {
        let is_register_ok = response.status() == Some(200)
            && response.header_value("CSeq").is_some_and(|cseq| cseq.split_whitespace().nth(1) == Some("REGISTER"));
        let Some(to) = response.header_value("To").filter(|_| is_register_ok) else { return };
        let aor = uri_of(&to);
        let default_expires = response.header_value("Expires").and_then(|e| e.trim().parse::<u64>().ok()).unwrap_or(DEFAULT_EXPIRES);
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.expire(now);
        for field in response.field_values("Contact") {
            for contact in values(&field) {
                if contact.trim() == "*" {
                    if default_expires == 0 {
                        let prefix = format!("{aor} ");
                        inner.bindings.retain(|key, _| !key.starts_with(&prefix));
                    }
                    continue;
                }
                // At most 2^32-1 s (RFC 3261 §20.19): a bigger value must not overflow the clock.
                let expires = param(contact, "expires").and_then(|e| e.parse::<u64>().ok()).unwrap_or(default_expires).min(MAX_EXPIRES);
                let key = format!("{aor} {}", uri_of(contact));
                if expires == 0 {
                    inner.bindings.remove(&key);
                } else if inner.bindings.len() < MAX_BINDINGS || inner.bindings.contains_key(&key) {
                    inner.insert(key, now + Duration::from_secs(expires));
                }
            }
        }
        let current = inner.bindings.len() as u64;
        inner.peak = inner.peak.max(current);
    }

    /// (current unexpired bindings, peak since start).
    pub fn counts(&self, now: Instant) -> (u64, u64) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.expire(now);
        (inner.bindings.len() as u64, inner.peak)
    }
}

/// The URI of an address value (`"A" <sip:a@b>;tag=1` → `sip:a@b`), lower case.
fn uri_of(value: &str) -> String {
    addr_spec(value).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{Frame, Framer, StreamLimits};

    fn ok(contacts: &str, expires: Option<u32>) -> SipMessage {
        let expires = expires.map(|e| format!("Expires: {e}\r\n")).unwrap_or_default();
        let wire = format!(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP p.example;branch=z9hG4bK1\r\nFrom: <sip:alice@corp.example>;tag=1\r\n\
             To: <sip:alice@corp.example>;tag=2\r\nCall-ID: r1\r\nCSeq: 2 REGISTER\r\n{contacts}{expires}Content-Length: 0\r\n\r\n"
        );
        let Ok(frames) = Framer::new(StreamLimits::new(8192)).push(wire.as_bytes()) else { panic!() };
        match frames.into_iter().next() {
            Some(Frame::Message(message)) => *message,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bindings_count_while_unexpired_and_expires_zero_removes_them() {
        let r = Registrations::default();
        let now = Instant::now();
        r.note(&ok("Contact: <sip:alice@10.0.0.1:5060>;expires=60, <sip:alice@10.0.0.2>;expires=600\r\n", None), now);
        assert_eq!(r.counts(now), (2, 2));
        r.note(&ok("Contact: <sip:alice@10.0.0.1:5060>;expires=120\r\n", None), now);
        assert_eq!(r.counts(now), (2, 2), "a refresh is the same binding");
        assert_eq!(r.counts(now + Duration::from_secs(200)), (1, 2), "the first expired; the peak stays");
        r.note(&ok("Contact: <sip:alice@10.0.0.2>\r\n", Some(0)), now);
        assert_eq!(r.counts(now).0, 0, "Expires: 0 removes");
        r.note(&ok("Contact: <sip:alice@10.0.0.3>\r\n", None), now);
        r.note(&ok("Contact: *\r\n", Some(0)), now);
        assert_eq!(r.counts(now).0, 0, "Contact: * with Expires: 0 removes every binding of the AOR");
    }

    #[test]
    fn a_refreshed_binding_outlives_its_first_expiry_and_a_huge_expires_is_capped() {
        let r = Registrations::default();
        let now = Instant::now();
        r.note(&ok("Contact: <sip:alice@10.0.0.1>;expires=60\r\n", None), now);
        r.note(&ok("Contact: <sip:alice@10.0.0.1>;expires=600\r\n", None), now + Duration::from_secs(30));
        assert_eq!(r.counts(now + Duration::from_secs(100)).0, 1, "the first expiry is stale after the refresh");
        assert_eq!(r.counts(now + Duration::from_secs(700)).0, 0);
        r.note(&ok("Contact: <sip:alice@10.0.0.2>;expires=18446744073709551615\r\n", None), now);
        assert_eq!(r.counts(now).0, 1, "no overflow of the clock");
    }
}
