//! Calls in progress through the edge, for the SIP service's maintenance state (`Draining
//! (N)` while calls last, then `Inactive`): a dialog begins with a 2xx to an INVITE and ends
//! with the 2xx to its BYE or after [`MAX_DIALOG_AGE`]. Not a transaction table — the proxy
//! stays stateless; this is a count keyed by Call-ID, bounded in size.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::message::{SipMessage, addr_spec};
use crate::federation::user_key;

/// Most dialogs counted; beyond it new ones are not (the count is a floor).
pub const MAX_DIALOGS: usize = 100_000;
/// A dialog without a BYE seen stops counting after this long (a lost BYE must not keep the
/// service `Draining` for ever).
pub const MAX_DIALOG_AGE: Duration = Duration::from_secs(12 * 3600);
/// Longest Call-ID kept.
const MAX_CALL_ID: usize = 256;

/// The dialogs in progress, by Call-ID, with when they began and the inside's remote target
/// (the 2xx's Contact, in the form the federation counts users in).
#[derive(Debug, Default)]
pub struct Dialogs {
    open: Mutex<HashMap<String, (Instant, Option<String>)>>,
    peak: Mutex<usize>,
}

impl Dialogs {
    /// Notes a message passing through the edge (either direction); true for a 2xx to an
    /// INVITE of a call already in progress — a retransmission (the UAS repeats its 2xx until
    /// the ACK, over TCP too) or a re-INVITE's: not one more final of the partner's requests.
    pub fn note(&self, message: &SipMessage, now: Instant) -> bool {
        // Only 2xx finals to INVITE and BYE change anything: the common answers (to MESSAGE,
        // REGISTER, OPTIONS …) leave without a copy of their Call-ID.
        if !matches!(message.status(), Some(200..=299)) {
            return false;
        }
        let cseq = message.header_value("CSeq");
        let cseq_method = match cseq.as_deref().and_then(|c| c.split_whitespace().nth(1)) {
            Some(method) if method.eq_ignore_ascii_case("INVITE") => "INVITE",
            Some(method) if method.eq_ignore_ascii_case("BYE") => "BYE",
            _ => return false,
        };
        let Some(call_id) = message.header("Call-ID").filter(|c| !c.is_empty() && c.len() <= MAX_CALL_ID) else { return false };
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        // Only the inside's 2xx to a BYE ends a call: a BYE itself may be forged (another
        // dialog's Call-ID, wrong tags) or never reach the inside (483, 482, 503), and a
        // partner must not make the service look drained while calls go on.
        match cseq_method {
            "INVITE" => {
                if open.len() >= MAX_DIALOGS {
                    open.retain(|_, (began, _)| now.saturating_duration_since(*began) < MAX_DIALOG_AGE);
                }
                let target = message.header("Contact").map(|contact| user_key(uri_of(&contact)));
                let repeated = if let Some(dialog) = open.get_mut(&call_id) {
                    dialog.1 = target.or(dialog.1.take()); // a re-INVITE may refresh the target
                    true
                } else {
                    if open.len() < MAX_DIALOGS {
                        open.insert(call_id, (now, target));
                    }
                    false
                };
                let mut peak = self.peak.lock().unwrap_or_else(|p| p.into_inner());
                *peak = (*peak).max(open.len());
                repeated
            }
            "BYE" => {
                open.remove(&call_id);
                false
            }
            _ => false,
        }
    }

    /// Whether `request` goes to the remote target of a call in progress (its Call-ID's 2xx
    /// Contact): an in-dialog request to a device, not a user the partner addresses.
    pub fn to_call_target(&self, request: &SipMessage) -> bool {
        let Some(call_id) = request.header_value("Call-ID") else { return false };
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let Some(target) = open.get(call_id.as_ref()).and_then(|(_, target)| target.as_deref()) else { return false };
        request.request_uri().is_some_and(|uri| target == user_key(&uri))
    }

    /// Whether `call_id` is a call in progress.
    pub fn in_progress(&self, call_id: &str) -> bool {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).contains_key(call_id)
    }

    /// Calls in progress at `now`, and the peak since start.
    pub fn counts(&self, now: Instant) -> (usize, usize) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.retain(|_, (began, _)| now.saturating_duration_since(*began) < MAX_DIALOG_AGE);
        (open.len(), *self.peak.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// The URI inside a name-addr (`"Bob" <sip:bob@x>;tag=1` → `sip:bob@x`), without parameters.
pub(super) fn uri_of(name_addr: &str) -> &str {
    let uri = addr_spec(name_addr);
    uri.split([';', '?']).next().unwrap_or(uri)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{Frame, Framer, StreamLimits};

    fn message(wire: &str) -> SipMessage {
        let Ok(frames) = Framer::new(StreamLimits::new(4096)).push(wire.as_bytes()) else { panic!("{wire}") };
        let Some(Frame::Message(message)) = frames.into_iter().next() else { panic!("{wire}") };
        *message
    }

    fn response(status: u16, call_id: &str, method: &str) -> SipMessage {
        message(&format!(
            "SIP/2.0 {status} X\r\nVia: SIP/2.0/TCP a.example;branch=z9hG4bK1\r\nFrom: <sip:a@p.example>;tag=1\r\n\
             To: <sip:b@corp.example>;tag=2\r\nCall-ID: {call_id}\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
        ))
    }

    fn request(method: &str, uri: &str, call_id: &str) -> SipMessage {
        message(&format!(
            "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/TCP a.example;branch=z9hG4bK2\r\nFrom: <sip:a@p.example>;tag=1\r\n\
             To: <sip:b@corp.example>;tag=2\r\nCall-ID: {call_id}\r\nCSeq: 2 {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        ))
    }

    /// In-dialog requests go to the device the inside's 2xx named (its Contact): they are not
    /// users the partner addresses; anything else, or another call's target, is.
    #[test]
    fn requests_to_a_calls_contact_are_recognised() {
        let dialogs = Dialogs::default();
        let now = Instant::now();
        let answered = |contact: &str| {
            message(&format!(
                "SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP a.example;branch=z9hG4bK1\r\nFrom: <sip:a@p.example>;tag=1\r\n\
                 To: <sip:b@corp.example>;tag=2\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\nContact: {contact}\r\nContent-Length: 0\r\n\r\n"
            ))
        };
        assert!(!dialogs.to_call_target(&request("ACK", "sip:b@10.0.0.5:5061", "c1")), "no call yet");
        dialogs.note(&answered("<sip:b@10.0.0.5:5061;transport=tls>;expires=3600"), now);
        assert!(dialogs.to_call_target(&request("ACK", "sip:b@10.0.0.5:5061;transport=tls", "c1")));
        assert!(dialogs.to_call_target(&request("BYE", "sip:B@10.0.0.5:5061", "c1")));
        assert!(!dialogs.to_call_target(&request("BYE", "sip:c@10.0.0.5:5061", "c1")), "another target on this Call-ID");
        assert!(!dialogs.to_call_target(&request("BYE", "sip:b@10.0.0.5:5061", "c2")), "another call");
        dialogs.note(&answered("<sip:b@10.0.0.6>"), now);
        assert!(dialogs.to_call_target(&request("INVITE", "sip:b@10.0.0.6", "c1")), "a re-INVITE's 2xx refreshes the target");
        assert!(!dialogs.to_call_target(&request("INVITE", "sip:b@10.0.0.5:5061", "c1")));
    }

    #[test]
    fn a_call_counts_from_its_2xx_until_its_bye_and_old_ones_expire() {
        let dialogs = Dialogs::default();
        let start = Instant::now();
        dialogs.note(&response(180, "c1", "INVITE"), start);
        assert_eq!(dialogs.counts(start).0, 0, "ringing is not a call yet");
        assert!(!dialogs.note(&response(200, "c1", "INVITE"), start), "a new call");
        assert!(dialogs.note(&response(200, "c1", "INVITE"), start), "its 2xx again: a repeat, not another final");
        dialogs.note(&response(486, "c2", "INVITE"), start);
        dialogs.note(&response(200, "c3", "INVITE"), start);
        assert_eq!(dialogs.counts(start), (2, 2), "a retransmitted 2xx is the same call; a 486 is none");
        let bye = message(
            "BYE sip:b@corp.example SIP/2.0\r\nVia: SIP/2.0/TCP a.example;branch=z9hG4bK2\r\nFrom: <sip:a@p.example>;tag=1\r\n\
             To: <sip:b@corp.example>;tag=2\r\nCall-ID: c1\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        );
        dialogs.note(&bye, start);
        assert_eq!(dialogs.counts(start), (2, 2), "a BYE alone (forged, or refused on its way) ends nothing");
        dialogs.note(&response(481, "c1", "BYE"), start);
        assert_eq!(dialogs.counts(start), (2, 2), "nor a BYE the inside did not know");
        dialogs.note(&response(200, "c1", "BYE"), start);
        assert_eq!(dialogs.counts(start), (1, 2), "the 2xx to the BYE ends it; the peak stays");
        assert_eq!(dialogs.counts(start + MAX_DIALOG_AGE).0, 0, "a call whose BYE was lost stops counting");
    }
}
