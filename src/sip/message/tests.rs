//! The SIP message layer on hostile input: every malformed or abusive message gets its
//! answer (400, 513, 505) and the right fate for the connection; nothing panics; a message
//! parses the same however the stream is split.

use proptest::prelude::*;

use super::*;

const LIMITS: StreamLimits = StreamLimits { max_message_bytes: 4096, max_headers: 32, max_header_bytes: 1024 };

/// A valid MESSAGE with `extra` header lines and `body`.
fn message(extra: &str, body: &str) -> String {
    format!(
        "MESSAGE sip:alice@corp.example SIP/2.0\r\nVia: SIP/2.0/TLS edge.partner.example;branch=z9hG4bK776asdhds\r\n\
         Max-Forwards: 70\r\nFrom: <sip:bob@partner.example>;tag=1928301774\r\nTo: <sip:alice@corp.example>\r\n\
         Call-ID: a84b4c76e66710@partner.example\r\nCSeq: 1 MESSAGE\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn frames(bytes: &[u8]) -> Result<Vec<Frame>, Refusal> {
    Framer::new(LIMITS).push(bytes)
}

#[test]
fn a_valid_message_frames_with_its_headers_compact_names_and_body() {
    let wire = message("", "hello");
    let frames = frames(wire.as_bytes()).unwrap();
    let [Frame::Message(message)] = frames.as_slice() else { panic!("{frames:?}") };
    assert!(message.is_request());
    assert_eq!(message.method().as_deref(), Some("MESSAGE"));
    assert_eq!(message.header("call-id").as_deref(), Some("a84b4c76e66710@partner.example"));
    assert_eq!(message.header("i").as_deref(), Some("a84b4c76e66710@partner.example"), "compact names work");
    assert_eq!(message.body().as_ref(), b"hello");
    assert_eq!(message.to_bytes().as_ref(), wire.as_bytes(), "forwarded bytes are what arrived");
}

#[test]
fn keepalives_between_messages_are_counted_and_never_frame() {
    let mut framer = Framer::new(LIMITS);
    assert!(framer.push(b"\r\n\r\n").unwrap().is_empty());
    assert_eq!(framer.take_keepalives(), 2, "CRLFCRLF: a ping (answer CRLF)");
    let wire = message("", "");
    assert_eq!(framer.push(wire.as_bytes()).unwrap().len(), 1);
    assert_eq!(framer.take_keepalives(), 0);
}

#[test]
fn a_response_frames_and_a_missing_max_forwards_is_repaired_not_refused() {
    let response = "SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP edge;branch=z9hG4bKx\r\nFrom: <sip:a@b.example>;tag=1\r\n\
                    To: <sip:c@d.example>;tag=2\r\nCall-ID: x@y\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n";
    let frames = frames(response.as_bytes()).unwrap();
    let [Frame::Message(message)] = frames.as_slice() else { panic!("{frames:?}") };
    assert_eq!(message.status(), Some(200));
    let without = message_without("Max-Forwards: 70\r\n");
    assert!(matches!(self::frames(without.as_bytes()).unwrap().as_slice(), [Frame::Message(_)]), "RFC 3261 §16.6: a proxy may add it");
}

fn message_without(line: &str) -> String {
    message("", "").replace(line, "")
}

/// (case, bytes, the refusal's status, whether it ends the connection — `None`: framed and
/// refused with the connection going on).
fn hostile_cases() -> Vec<(&'static str, Vec<u8>, u16, bool)> {
    let big = format!("X-Pad: {}\r\n", "a".repeat(900));
    vec![
        ("missing Via", message_without("Via: SIP/2.0/TLS edge.partner.example;branch=z9hG4bK776asdhds\r\n").into(), 400, false),
        ("missing From", message_without("From: <sip:bob@partner.example>;tag=1928301774\r\n").into(), 400, false),
        ("missing To", message_without("To: <sip:alice@corp.example>\r\n").into(), 400, false),
        ("missing Call-ID", message_without("Call-ID: a84b4c76e66710@partner.example\r\n").into(), 400, false),
        ("missing CSeq", message_without("CSeq: 1 MESSAGE\r\n").into(), 400, false),
        ("CSeq method differs", message("", "").replace("CSeq: 1 MESSAGE", "CSeq: 1 INVITE").into(), 400, false),
        ("two Call-IDs", message("Call-ID: other@x\r\n", "").into(), 400, false),
        ("two CSeqs", message("CSeq: 2 MESSAGE\r\n", "").into(), 400, false),
        ("malformed CSeq", message("", "").replace("CSeq: 1 MESSAGE", "CSeq: one MESSAGE").into(), 400, false),
        ("malformed From", message("", "").replace("From: <sip:bob@partner.example>;tag=1928301774", "From: <<>>").into(), 400, false),
        ("SIP/3.0", message("", "").replace("sip:alice@corp.example SIP/2.0", "sip:alice@corp.example SIP/3.0").into(), 505, false),
        (
            "headers in the Request-URI",
            message("", "").replace("sip:alice@corp.example SIP", "sip:alice@corp.example?Subject=x SIP").into(),
            400,
            false,
        ),
        ("no Content-Length on a stream", message("", "").replace("Content-Length: 0\r\n", "").into(), 400, true),
        ("Content-Length not a number", message("", "").replace("Content-Length: 0", "Content-Length: zero").into(), 400, true),
        ("negative Content-Length", message("", "").replace("Content-Length: 0", "Content-Length: -1").into(), 400, true),
        ("two different Content-Lengths", message("Content-Length: 5\r\n", "").into(), 400, true),
        ("Content-Length beyond the limit", message("", "").replace("Content-Length: 0", "Content-Length: 99999999").into(), 513, true),
        ("message above max_message_bytes", message("", &"b".repeat(5000)).into(), 513, true),
        ("head that never ends, above the limit", format!("MESSAGE sip:a@b SIP/2.0\r\n{}", "X: y\r\n".repeat(1000)).into(), 513, true),
        ("too many header fields", message(&"X-Many: 1\r\n".repeat(40), "").into(), 400, true),
        ("one header field too long", message(&format!("X-Long: {}\r\n", "a".repeat(2000)), "").into(), 400, true),
        ("Via bomb", message(&"Via: SIP/2.0/TCP h;branch=z9hG4bKa\r\n".repeat(40), "").into(), 400, true),
        ("header line without a colon", message("NoColonHere\r\n", "").into(), 400, true),
        ("garbage", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n".to_vec(), 400, true),
        ("HTTP instead of SIP", b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".to_vec(), 400, true),
        ("NUL in the request line", message("", "").replacen("MESSAGE sip", "MESSAGE\0sip", 1).into(), 400, true),
        ("NUL in a header value", message("Subject: a\0b\r\n", "").into(), 400, false),
        ("ESC in a header value", message("Subject: a\x1b[2Jb\r\n", "").into(), 400, false),
        ("empty method", message("", "").replacen("MESSAGE sip", " sip", 1).into(), 400, true),
        ("no version", message("", "").replacen(" SIP/2.0\r\n", "\r\n", 1).into(), 400, true),
        ("unknown status line", b"SIP/2.0 9999 Weird\r\nContent-Length: 0\r\n\r\n".to_vec(), 400, true),
        ("folding beyond the limit", message(&format!("Subject: a{}\r\n", "\r\n b".repeat(20)), "").into(), 400, true),
        ("header injection through a value", message("Subject: x\r\n\r\nINVITE sip:evil SIP/2.0", "").into(), 400, true),
        (
            "Request-URI not a URI",
            message("", "").replacen("MESSAGE sip:alice@corp.example SIP", "MESSAGE nonsense SIP", 1).into(),
            400,
            true,
        ),
        ("Max-Forwards not a number", message("", "").replace("Max-Forwards: 70", "Max-Forwards: many").into(), 400, false),
        ("CSeq number beyond 2^31", message("", "").replace("CSeq: 1 MESSAGE", "CSeq: 99999999999 MESSAGE").into(), 400, false),
        ("empty Call-ID", message("", "").replace("Call-ID: a84b4c76e66710@partner.example", "Call-ID: ").into(), 400, false),
        ("To without an address", message("", "").replace("To: <sip:alice@corp.example>", "To: ").into(), 400, false),
        ("Content-Length with a sign", message("", "").replace("Content-Length: 0", "Content-Length: +0").into(), 400, true),
        (
            "an extension method is fine",
            message("", "").replace("MESSAGE sip", "FOO sip").replace("CSeq: 1 MESSAGE", "CSeq: 1 FOO").into(),
            0,
            false,
        ),
        (
            "compact names are fine",
            message("", "").replace("Call-ID:", "i:").replace("From:", "f:").replace("To:", "t:").replace("Via:", "v:").into(),
            0,
            false,
        ),
        ("big but legal padding", message(&big, "").into(), 0, false),
        (
            "a folded header line is legal (RFC 3261 §7.3.1)",
            message("Subject: I know you're there,\r\n pick up the phone\r\n", "").into(),
            0,
            false,
        ),
        ("a folded Via is legal", message("", "").replace("Via: SIP/2.0/TLS", "Via:\r\n\tSIP/2.0/TLS").into(), 0, false),
    ]
}

#[test]
fn hostile_messages_get_their_answer_and_the_right_fate_for_the_connection() {
    let cases = hostile_cases();
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let mut wrong = Vec::new();
    for (case, bytes, status, closes) in cases {
        let got = match frames(&bytes) {
            Ok(frames) => match frames.as_slice() {
                [Frame::Message(_)] => (0, false),
                [Frame::Refused(refusal)] => (refusal.status(), refusal.closes_connection()),
                other => {
                    wrong.push(format!(
                        "{case}: expected one frame, got {} ({:?})",
                        other.len(),
                        other.iter().map(frame_kind).collect::<Vec<_>>()
                    ));
                    continue;
                }
            },
            Err(refusal) => (refusal.status(), refusal.closes_connection()),
        };
        if got != (status, closes) {
            wrong.push(format!("{case}: expected {:?}, got {got:?}", (status, closes)));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

fn frame_kind(frame: &Frame) -> String {
    match frame {
        Frame::Message(m) => format!("message {:?}", m.method()),
        Frame::Refused(r) => format!("refused {}", r.status()),
    }
}

#[test]
fn after_a_fatal_refusal_the_stream_stays_refused() {
    let mut framer = Framer::new(LIMITS);
    assert!(framer.push(b"GARBAGE\r\n\r\n").is_err());
    let wire = message("", "");
    assert!(framer.push(wire.as_bytes()).is_err(), "framing lost: a later valid message is not trusted either");
}

#[test]
fn an_unfinished_message_is_held_and_counted_as_pending() {
    let wire = message("", "hello");
    let mut framer = Framer::new(LIMITS);
    assert!(framer.push(&wire.as_bytes()[..wire.len() - 2]).unwrap().is_empty());
    assert!(framer.pending() > 0, "a slow sender's half message is visible to the transport's timeout");
    assert_eq!(framer.push(&wire.as_bytes()[wire.len() - 2..]).unwrap().len(), 1);
    assert_eq!(framer.pending(), 0);

    // Bare LF line endings never end a head: the bytes are held (never framed, never
    // forwarded) until the transport's timeout — or 513 once they pass the size limit.
    let mut framer = Framer::new(LIMITS);
    let bare_lf = message("", "").replace("\r\n", "\n");
    assert!(framer.push(bare_lf.as_bytes()).unwrap().is_empty());
    assert!(framer.pending() > 0);
    let refusal = framer.push(&vec![b'a'; LIMITS.max_message_bytes]).unwrap_err();
    assert_eq!((refusal.status(), refusal.closes_connection()), (513, true));
}

#[test]
fn the_partner_domain_is_the_from_uris_host_never_a_lookalike_in_the_display_name_or_a_parameter() {
    let from_host = |from: &str| {
        let wire = message("", "").replace("From: <sip:bob@partner.example>;tag=1928301774", &format!("From: {from}"));
        match frames(wire.as_bytes()).unwrap().as_slice() {
            [Frame::Message(message)] => message.from_host().map(str::to_string),
            other => panic!("{from}: {other:?}"),
        }
    };
    let spam = Some("spam.example".to_string());
    // What the next hop reads as the sender is spam.example in every one of these.
    assert_eq!(from_host("\"sip:x@partner.example (x)\" <sip:bob@spam.example>;tag=1"), spam, "display name");
    assert_eq!(from_host("<sips:bob@spam.example>;tag=1;x=\"sip:a@partner.example\""), spam, "quoted parameter");
    assert_eq!(from_host("<SIP:bob@Spam.Example>;tag=1"), spam, "the scheme is case-insensitive");
    assert_eq!(from_host("<sip:bob@spam.example.>;tag=1"), spam, "a trailing dot names the same domain");
    assert_eq!(from_host("sip:bob@spam.example;tag=1"), spam, "addr-spec form");
    assert_eq!(from_host("<sip:spam.example:5061>;tag=1"), spam, "no user part");
    assert_eq!(from_host("<sips:[2001:DB8::1]:5061>;tag=1").as_deref(), Some("2001:db8::1"));
    assert_eq!(from_host("<tel:+15551234>;tag=1"), None, "no SIP host");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Arbitrary bytes never panic, and whatever they are, a framer fed them in pieces reaches
    /// the same outcome as one fed them whole.
    #[test]
    fn any_bytes_split_anywhere_give_the_same_outcome(bytes in proptest::collection::vec(any::<u8>(), 0..600), cut in 0usize..600) {
        let whole = summary(Framer::new(LIMITS).push(&bytes));
        let cut = cut.min(bytes.len());
        let mut framer = Framer::new(LIMITS);
        let first = framer.push(&bytes[..cut]);
        let split = match first {
            Err(e) => summary(Err(e)),
            Ok(mut frames) => match framer.push(&bytes[cut..]) {
                Ok(more) => { frames.extend(more); summary(Ok(frames)) }
                Err(e) => summary(Err(e)),
            },
        };
        prop_assert_eq!(whole, split);
    }

    /// Valid messages with arbitrary bodies, sent back to back and split anywhere, all frame.
    #[test]
    fn back_to_back_messages_frame_however_split(bodies in proptest::collection::vec("[a-z \\r\\n]{0,40}", 1..4), cut in 0usize..2000) {
        let wire: String = bodies.iter().map(|b| message("", b)).collect();
        let cut = cut.min(wire.len());
        let mut framer = Framer::new(LIMITS);
        let mut frames = framer.push(&wire.as_bytes()[..cut]).unwrap();
        frames.extend(framer.push(&wire.as_bytes()[cut..]).unwrap());
        prop_assert_eq!(frames.len(), bodies.len());
        for (frame, body) in frames.iter().zip(&bodies) {
            let Frame::Message(message) = frame else { return Err(TestCaseError::fail(format!("{frame:?}"))) };
            prop_assert_eq!(message.body().as_ref(), body.as_bytes());
        }
    }
}

/// A comparable summary of an outcome (messages by their bytes, refusals by status).
fn summary(outcome: Result<Vec<Frame>, Refusal>) -> Result<Vec<Result<Vec<u8>, u16>>, u16> {
    outcome
        .map(|frames| {
            frames
                .into_iter()
                .map(|frame| match frame {
                    Frame::Message(m) => Ok(m.to_bytes().to_vec()),
                    Frame::Refused(r) => Err(r.status()),
                })
                .collect()
        })
        .map_err(|r| r.status())
}

/// Our one-parse validation against sipx's own `validate`, on `wire`: the same findings in the
/// same order, and the same partner domain as a fresh parse of From.
fn assert_validates_like_sipx(wire: &[u8]) {
    let Ok(message) = sipx_sip::parse_datagram(Bytes::copy_from_slice(wire), &sipx_sip::Limits::datagram()) else { return };
    let (ours, partner) = validate(&message);
    assert_eq!(ours, sipx_sip::validate::validate(&message), "{}", String::from_utf8_lossy(wire));
    let fresh = match message.headers().typed::<From>() {
        Some(Ok(from)) => partner_domain(&from),
        _ => None,
    };
    assert_eq!(partner, fresh);
}

#[test]
fn one_parse_validation_finds_what_sipx_finds_on_every_hostile_case() {
    for (_, wire, _, _) in hostile_cases() {
        assert_validates_like_sipx(&wire);
    }
    assert_validates_like_sipx(message("", "hi").as_bytes());
    let response = "SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP a.example;branch=z9hG4bK1\r\nFrom: <sip:b@p.example>;tag=1\r\n\
                    To: <sip:a@c.example>;tag=2\r\nCall-ID: c\r\nCSeq: 1 MESSAGE\r\nMax-Forwards: 1\r\nMax-Forwards: 2\r\nContent-Length: 0\r\n\r\n";
    assert_validates_like_sipx(response.as_bytes());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Requests and responses made of any choice of well-formed, malformed, repeated and missing
    /// transaction fields validate exactly as sipx validates them.
    #[test]
    fn one_parse_validation_finds_what_sipx_finds(
        response in any::<bool>(),
        method in prop::sample::select(vec!["MESSAGE", "INVITE", "BYE"]),
        lines in proptest::collection::vec(prop::sample::select(vec![
            "Via: SIP/2.0/TCP h.example;branch=z9hG4bK1", "Via: nonsense", "v: SIP/2.0/UDP [::1]:5060;branch=z9hG4bKx",
            "From: <sip:bob@Partner.Example.>;tag=1", "From: \"x\" <sips:[2001:db8::1]>;tag=2", "From: <tel:+123>;tag=3", "f: garbage<",
            "To: <sip:a@corp.example>", "t: <sip:a@corp.example>;tag=9", "To: <",
            "Call-ID: abc", "i: def", "CSeq: 1 MESSAGE", "CSeq: 2 INVITE", "CSeq: x", "Max-Forwards: 70", "Max-Forwards: many",
            "Subject: hi",
        ]), 0..10),
        uri in prop::sample::select(vec!["sip:a@corp.example", "sip:a@corp.example?Subject=x", "sips:[::1]:5061"]),
    ) {
        let start = if response { "SIP/2.0 404 Not Found".to_string() } else { format!("{method} {uri} SIP/2.0") };
        let wire = format!("{start}\r\n{}\r\nContent-Length: 0\r\n\r\n", lines.join("\r\n"));
        assert_validates_like_sipx(wire.as_bytes());
    }
}
