//! The outward routing decision on real messages: Route before the Request-URI, the edge's own
//! Route entries taken off, default ports, `sips:` and `transport=`, the partner domain.

use super::*;
use crate::sip::message::{Frame, Framer, StreamLimits};

fn hops() -> Vec<Hop> {
    vec![
        Hop { host: "edge.corp.example".into(), port: 5061, transport: Transport::Tls },
        Hop { host: "192.0.2.1".into(), port: 5060, transport: Transport::Tcp },
    ]
}

fn request(uri: &str, extra: &str) -> SipMessage {
    let wire = format!(
        "INVITE {uri} SIP/2.0\r\nVia: SIP/2.0/TCP cucm.corp.example:5060;branch=z9hG4bKin1\r\nMax-Forwards: 70\r\n\
         From: <sip:alice@corp.example>;tag=a1\r\nTo: <sip:bob@partner.example>\r\nCall-ID: out-1\r\nCSeq: 1 INVITE\r\n\
         {extra}Content-Length: 0\r\n\r\n"
    );
    match Framer::new(StreamLimits::new(65536)).push(wire.as_bytes()).unwrap().into_iter().next() {
        Some(Frame::Message(message)) => *message,
        other => panic!("{other:?}"),
    }
}

fn dest(host: &str, port: u16, transport: Transport) -> Destination {
    Destination { host: host.into(), port, transport }
}

#[test]
fn without_a_route_the_request_uri_decides_with_default_ports_and_sips() {
    let to = |uri: &str| destination(&request(uri, "")).unwrap();
    assert_eq!(to("sip:bob@Partner.Example."), dest("partner.example", 5060, Transport::Tcp), "TCP, 5060, lower case, no trailing dot");
    assert_eq!(to("sips:bob@partner.example"), dest("partner.example", 5061, Transport::Tls), "sips: is TLS on 5061");
    assert_eq!(to("sip:bob@partner.example;transport=TLS"), dest("partner.example", 5061, Transport::Tls));
    assert_eq!(to("sip:bob@partner.example:5080;transport=tcp"), dest("partner.example", 5080, Transport::Tcp));
    assert_eq!(to("sip:bob@partner.example;transport=udp"), dest("partner.example", 5060, Transport::Tcp), "no UDP: TCP");
    assert_eq!(to("sip:bob@[2001:db8::7]:5062"), dest("2001:db8::7", 5062, Transport::Tcp));
    assert_eq!(to("sip:198.51.100.4"), dest("198.51.100.4", 5060, Transport::Tcp));
    let tel = destination(&request("tel:+15551234", ""));
    assert_eq!(tel, Err(Answer { status: 416, reason: "Unsupported URI Scheme" }));
}

#[test]
fn the_first_route_wins_over_the_request_uri_loose_routing() {
    let message = request("sip:bob@partner.example", "Route: <sip:sbc.partner.example:5070;transport=tls;lr>, <sip:other.example;lr>\r\n");
    assert_eq!(destination(&message).unwrap(), dest("sbc.partner.example", 5070, Transport::Tls));
    let message = request("sip:bob@partner.example", "Route: \"SBC\" <sips:sbc.partner.example;lr>\r\n");
    assert_eq!(destination(&message).unwrap(), dest("sbc.partner.example", 5061, Transport::Tls));
}

#[test]
fn the_edges_own_route_entries_come_off_the_top_and_the_rest_stays() {
    let mut message = request(
        "sip:bob@192.0.2.50:5062;transport=tls",
        "Route: <sip:edge.corp.example:5061;transport=tls;lr>\r\nRoute: <sip:192.0.2.1;lr>, <sip:sbc.partner.example;lr>\r\n",
    );
    strip_own_routes(&mut message, &hops()).unwrap();
    assert_eq!(message.fields("Route"), vec!["<sip:sbc.partner.example;lr>".to_string()], "both own entries off, in any field");
    assert_eq!(destination(&message).unwrap(), dest("sbc.partner.example", 5060, Transport::Tcp));
    // The last own entry gone, the Request-URI (the remote target) decides.
    let mut message = request("sip:bob@192.0.2.50:5062;transport=tls", "Route: <sip:edge.corp.example:5061;lr>\r\n");
    strip_own_routes(&mut message, &hops()).unwrap();
    assert!(message.fields("Route").is_empty());
    assert_eq!(destination(&message).unwrap(), dest("192.0.2.50", 5062, Transport::Tls));
    // An entry naming the edge's host on another port is not the edge's; one below a foreign
    // entry is not taken off either (it is not the edge's turn yet).
    let mut message = request("sip:bob@partner.example", "Route: <sip:edge.corp.example:5099;lr>, <sip:edge.corp.example:5061;lr>\r\n");
    strip_own_routes(&mut message, &hops()).unwrap();
    assert_eq!(message.fields("Route").len(), 1);
    assert_eq!(destination(&message).unwrap(), dest("edge.corp.example", 5099, Transport::Tcp));
}

#[test]
fn the_partner_domain_is_the_request_uri_host_else_the_to_host() {
    assert_eq!(partner_domain(&request("sip:bob@Partner.Example", "")).as_deref(), Some("partner.example"));
    assert_eq!(
        partner_domain(&request("sip:bob@192.0.2.50:5062", "")).as_deref(),
        Some("partner.example"),
        "an address as Request-URI: the To host"
    );
    let mut message = request("sip:bob@192.0.2.50", "");
    message.replace_first("To", "<sip:bob@198.51.100.9>").unwrap();
    assert_eq!(partner_domain(&message), None, "no host name anywhere");
}

#[test]
fn uris_that_are_not_hosts_are_refused() {
    for bad in ["sip:bob@", "sip:bob@exa mple.com", "sip:bob@host:0", "sip:bob@host:99999", "sip:[::1", "http://x", "sip:bob@a_b.example"] {
        assert_eq!(SipUri::parse(bad), None, "{bad}");
    }
    let uri = SipUri::parse("<sip:bob:secret@host.example:5070;lr;transport=TCP?subject=x>").unwrap();
    assert_eq!((uri.host.as_str(), uri.port, uri.transport.as_deref()), ("host.example", Some(5070), Some("tcp")));
}
