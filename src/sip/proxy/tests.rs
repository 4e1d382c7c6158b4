//! The stateless proxy core on real messages: Max-Forwards, received/rport, the edge's Via and
//! its branch (stable across retransmissions, shared by CANCEL), loops against spirals,
//! Record-Route and Route, and responses routed back by Via.

use std::net::SocketAddr;

use super::*;
use crate::sip::message::{Frame, Framer, StreamLimits};

fn edge() -> Hop {
    Hop { host: "edge.corp.example".into(), port: 5061, transport: Transport::Tls }
}

const PEER: &str = "192.0.2.10:40000";

fn request(method: &str, uri: &str, extra: &str) -> SipMessage {
    let wire = format!(
        "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/TLS sip.partner.example:5061;branch=z9hG4bKpartner1;rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:bob@partner.example>;tag=f1\r\nTo: <sip:alice@corp.example>\r\n\
         Call-ID: call-1@partner.example\r\nCSeq: 7 {method}\r\n{extra}Content-Length: 0\r\n\r\n"
    );
    parse(&wire)
}

fn parse(wire: &str) -> SipMessage {
    let frames = Framer::new(StreamLimits::new(65536)).push(wire.as_bytes()).unwrap();
    match frames.into_iter().next() {
        Some(Frame::Message(message)) => *message,
        other => panic!("{other:?}"),
    }
}

/// The message as text, as it would go on the wire.
fn wire(message: &SipMessage) -> String {
    std::str::from_utf8(&message.to_bytes()).unwrap().to_string()
}

fn peer() -> SocketAddr {
    PEER.parse().unwrap()
}

fn top_branch(message: &SipMessage) -> String {
    let via = message.fields("Via")[0].clone();
    param(&via, "branch").unwrap().to_string()
}

#[test]
fn a_forwarded_request_gets_the_edges_via_on_top_and_one_less_hop() {
    let mut invite = request("INVITE", "sip:alice@corp.example", "");
    forward_request(&mut invite, &edge(), peer(), 7, true).unwrap();
    let vias = invite.fields("Via");
    assert!(vias[0].starts_with("SIP/2.0/TLS edge.corp.example:5061;branch=z9hG4bK"), "{vias:?}");
    assert_eq!(
        vias[1], "SIP/2.0/TLS sip.partner.example:5061;branch=z9hG4bKpartner1;rport=40000;received=192.0.2.10",
        "received and rport stamped"
    );
    assert_eq!(invite.header("Max-Forwards").as_deref(), Some("69"));
    assert_eq!(invite.fields("Record-Route"), vec!["<sip:edge.corp.example:5061;transport=tls;lr>".to_string()]);
    let wire = wire(&invite);
    assert!(wire.starts_with("INVITE sip:alice@corp.example SIP/2.0\r\n"), "{wire}");
    assert!(parse(&wire).fields("Via").len() == 2, "what is forwarded parses again");
}

#[test]
fn max_forwards_zero_is_483_and_a_missing_one_is_added() {
    let text = wire(&request("MESSAGE", "sip:alice@corp.example", "")).replace("Max-Forwards: 70", "Max-Forwards: 0");
    let mut message = parse(&text);
    assert_eq!(forward_request(&mut message, &edge(), peer(), 7, true), Err(Answer { status: 483, reason: "Too Many Hops" }));
    let mut without = parse(&wire(&request("MESSAGE", "sip:alice@corp.example", "")).replace("Max-Forwards: 70\r\n", ""));
    forward_request(&mut without, &edge(), peer(), 7, true).unwrap();
    assert_eq!(without.header("Max-Forwards").as_deref(), Some("69"));
}

#[test]
fn retransmissions_and_cancel_get_the_invites_branch_without_state() {
    let branch = |method: &str| {
        let mut message = request(method, "sip:alice@corp.example", "");
        forward_request(&mut message, &edge(), peer(), 7, true).unwrap();
        top_branch(&message)
    };
    let invite = branch("INVITE");
    assert_eq!(branch("INVITE"), invite, "a retransmission is the same transaction");
    assert_eq!(branch("CANCEL"), invite, "CANCEL matches the INVITE it cancels (§16.11)");
    let mut other_call = request("INVITE", "sip:carol@corp.example", "");
    forward_request(&mut other_call, &edge(), peer(), 7, true).unwrap();
    assert_ne!(top_branch(&other_call), invite);
}

#[test]
fn a_request_that_comes_back_unchanged_is_a_loop_but_a_spiral_is_not() {
    let mut first = request("MESSAGE", "sip:alice@corp.example", "");
    forward_request(&mut first, &edge(), peer(), 7, true).unwrap();
    // The next hop sends it straight back: the edge's Via with the same loop part → 482.
    let mut looped = parse(&wire(&first));
    assert_eq!(
        forward_request(&mut looped, &edge(), "10.0.0.5:5060".parse().unwrap(), 8, true),
        Err(Answer { status: 482, reason: "Loop Detected" })
    );
    // Back with another Request-URI (a spiral, e.g. after a forward): allowed.
    let wire = wire(&first).replacen("MESSAGE sip:alice@corp.example", "MESSAGE sip:voicemail@corp.example", 1);
    let mut spiral = parse(&wire);
    assert!(forward_request(&mut spiral, &edge(), "10.0.0.5:5060".parse().unwrap(), 8, true).is_ok());
}

#[test]
fn in_dialog_requests_lose_the_edges_route_and_get_no_record_route() {
    let bye = request("BYE", "sip:alice@10.0.0.20", "Route: <sip:edge.corp.example:5061;transport=tls;lr>, <sip:cucm.corp.example;lr>\r\n");
    let text = wire(&bye).replace("To: <sip:alice@corp.example>", "To: <sip:alice@corp.example>;tag=t9");
    let mut message = parse(&text);
    forward_request(&mut message, &edge(), peer(), 7, true).unwrap();
    assert_eq!(message.fields("Route"), vec!["<sip:cucm.corp.example;lr>".to_string()], "only the edge's own entry goes");
    assert!(message.fields("Record-Route").is_empty());
    let mut no_rr = request("INVITE", "sip:alice@corp.example", "");
    forward_request(&mut no_rr, &edge(), peer(), 7, false).unwrap();
    assert!(no_rr.fields("Record-Route").is_empty(), "record_route = false");
}

#[test]
fn responses_go_back_by_via_and_others_are_dropped() {
    let mut invite = request("INVITE", "sip:alice@corp.example", "");
    forward_request(&mut invite, &edge(), peer(), 7, true).unwrap();
    let vias = invite.fields("Via").join("\r\nVia: ");
    let response = format!(
        "SIP/2.0 200 OK\r\nVia: {vias}\r\nFrom: <sip:bob@partner.example>;tag=f1\r\nTo: <sip:alice@corp.example>;tag=t9\r\n\
         Call-ID: call-1@partner.example\r\nCSeq: 7 INVITE\r\nContent-Length: 0\r\n\r\n"
    );
    let mut ok = parse(&response);
    assert_eq!(
        return_response(&mut ok, &edge()),
        Some(ResponseTarget { connection: Some(7), host: "192.0.2.10".into(), port: 40000 }),
        "received/rport win"
    );
    assert_eq!(ok.fields("Via").len(), 1, "the edge's Via came off");
    assert!(ok.fields("Via")[0].contains("sip.partner.example"));
    // A response whose top Via is not the edge's is not ours.
    let mut stray = parse(&response.replacen("edge.corp.example:5061", "elsewhere.example:5061", 1));
    assert_eq!(return_response(&mut stray, &edge()), None);
}

#[test]
fn comma_joined_values_split_but_not_inside_quotes_or_brackets() {
    let split = |field| values(field).collect::<Vec<_>>();
    assert_eq!(split("a, b ,c"), vec!["a", "b", "c"]);
    assert_eq!(split(" a,, b,"), vec!["a", "b"], "empty values are skipped");
    assert_eq!(split("\"Smith, J\" <sip:j@x>, <sip:k@y;p=a,b>"), vec!["\"Smith, J\" <sip:j@x>", "<sip:k@y;p=a,b>"]);
    assert_eq!(sent_by("SIP/2.0/TCP [2001:db8::1]:5070;branch=x"), Some(("2001:db8::1", 5070)));
    assert_eq!(sent_by("SIP/2.0/TLS host.example;branch=x"), Some(("host.example", 5060)));
}

#[test]
fn received_and_rport_a_partner_wrote_itself_are_overwritten_with_where_it_really_is() {
    let text = wire(&request("MESSAGE", "sip:alice@corp.example", ""))
        .replace(";branch=z9hG4bKpartner1;rport", ";branch=z9hG4bKpartner1;rport=5999;received=10.0.0.9");
    let mut message = parse(&text);
    forward_request(&mut message, &edge(), peer(), 7, true).unwrap();
    assert_eq!(
        message.fields("Via")[1],
        "SIP/2.0/TLS sip.partner.example:5061;branch=z9hG4bKpartner1;rport=40000;received=192.0.2.10",
        "RFC 3261 §18.2.1, RFC 3581 §4: the server sets them from the packet's source"
    );
}

#[test]
fn only_the_changed_fields_are_rewritten_and_every_other_byte_goes_on_as_it_came() {
    // The peer is where its Via says: nothing to stamp, so its Via line stays byte for byte
    // (odd spacing and case included), Max-Forwards changes where it stands.
    let text = "MESSAGE sip:alice@corp.example SIP/2.0\r\nvia:  SIP/2.0/TCP 192.0.2.10:40000 ;branch=z9hG4bKx\r\n\
                Max-Forwards: 70\r\nFrom: <sip:bob@partner.example>;tag=f1\r\nTo: <sip:alice@corp.example>\r\n\
                Call-ID: c1\r\nCSeq: 1 MESSAGE\r\nX-Custom:   kept  as is\r\nContent-Length: 2\r\n\r\nhi";
    let mut message = parse(text);
    forward_request(&mut message, &edge(), peer(), 7, true).unwrap();
    let out = wire(&message);
    let (own, rest) = out.split_once("\r\n").map(|(line, rest)| (line.to_string(), rest)).unwrap();
    assert_eq!(own, "MESSAGE sip:alice@corp.example SIP/2.0");
    let (own_via, rest) = rest.split_once("\r\n").unwrap();
    assert!(own_via.starts_with("Via: SIP/2.0/TLS edge.corp.example:5061;branch=z9hG4bK.pc."), "{own_via}");
    assert_eq!(format!("MESSAGE sip:alice@corp.example SIP/2.0\r\n{rest}"), text.replace("Max-Forwards: 70", "Max-Forwards: 69"));
}

#[test]
fn comma_joined_vias_keep_their_order_both_ways() {
    let text = wire(&request("INVITE", "sip:alice@corp.example", "")).replace(
        "Via: SIP/2.0/TLS sip.partner.example:5061;branch=z9hG4bKpartner1;rport\r\n",
        "Via: SIP/2.0/TLS sip.partner.example:5061;branch=z9hG4bKpartner1;rport, SIP/2.0/TCP ua.example;branch=z9hG4bKua\r\n",
    );
    let mut invite = parse(&text);
    forward_request(&mut invite, &edge(), peer(), 7, true).unwrap();
    let vias = invite.fields("Via");
    assert_eq!(vias.len(), 3, "{vias:?}");
    assert!(vias[0].starts_with("SIP/2.0/TLS edge.corp.example:5061;"), "{vias:?}");
    assert_eq!(vias[1], "SIP/2.0/TLS sip.partner.example:5061;branch=z9hG4bKpartner1;rport=40000;received=192.0.2.10");
    assert_eq!(vias[2], "SIP/2.0/TCP ua.example;branch=z9hG4bKua");
    // The response comes back with the edge's Via comma-joined to the others.
    let response = format!(
        "SIP/2.0 180 Ringing\r\nVia: {}\r\nFrom: <sip:bob@partner.example>;tag=f1\r\nTo: <sip:alice@corp.example>;tag=t9\r\n\
         Call-ID: call-1@partner.example\r\nCSeq: 7 INVITE\r\nContent-Length: 0\r\n\r\n",
        vias.join(", ")
    );
    let mut ringing = parse(&response);
    let target = return_response(&mut ringing, &edge()).unwrap();
    assert_eq!((target.connection, target.host.as_str(), target.port), (Some(7), "192.0.2.10", 40000));
    assert_eq!(ringing.fields("Via"), vec![format!("{}, {}", vias[1], vias[2])]);
}
