//! Unit tests of the request-framing scanner.

use super::*;

fn scanner() -> RequestFraming {
    RequestFraming::new(16 * 1024, 100)
}

fn refused(scan: Scan) -> Option<Violation> {
    match scan {
        Scan::Refused { violation, .. } => Some(violation),
        Scan::Clean | Scan::Reported { .. } | Scan::BadBody { .. } | Scan::AwaitUpgrade { .. } => None,
    }
}

#[test]
fn plain_get_is_clean_and_keeps_following() {
    let mut s = scanner();
    assert_eq!(s.feed(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"), Scan::Clean);
    assert!(s.is_following());
    assert_eq!(s.state, State::Head);
}

#[test]
fn content_length_with_transfer_encoding_is_refused() {
    let mut s = scanner();
    let v = refused(s.feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"));
    assert_eq!(v, Some(Violation::LengthAndChunked));
    let mut s = scanner();
    let v = refused(s.feed(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\ncontent-length: 5\r\n\r\n"));
    assert_eq!(v, Some(Violation::LengthAndChunked));
}

#[test]
fn duplicate_content_length_is_refused_even_when_equal() {
    let mut s = scanner();
    let v = refused(s.feed(b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc"));
    assert_eq!(v, Some(Violation::DuplicateContentLength));
}

#[test]
fn odd_content_length_and_transfer_encoding_are_refused() {
    for head in [
        &b"POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\n"[..],
        b"POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: \r\n\r\n",
    ] {
        assert_eq!(refused(scanner().feed(head)), Some(Violation::InvalidContentLength), "{head:?}");
    }
    for head in [
        &b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"[..],
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n",
    ] {
        assert_eq!(refused(scanner().feed(head)), Some(Violation::InvalidTransferEncoding), "{head:?}");
    }
}

#[test]
fn refused_request_carries_its_request_line() {
    let scan = scanner().feed(b"POST /login HTTP/1.1\r\nHost: edge\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n");
    let Scan::Refused { head_start, request, .. } = scan else { panic!("expected refusal") };
    assert_eq!(head_start, 0);
    assert_eq!(request, RefusedRequest { method: "POST".into(), path: "/login".into(), host: "edge".into() });
}

#[test]
fn smuggled_request_hidden_in_a_body_is_not_mistaken_for_a_head() {
    // The body of the first request looks like a bad head; it is body, so it is clean.
    let body = b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n";
    let mut bytes = format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    bytes.extend_from_slice(body);
    let mut s = scanner();
    assert_eq!(s.feed(&bytes), Scan::Clean);
    assert_eq!(s.state, State::Head);
}

#[test]
fn pipelined_bad_head_after_a_good_one_reports_its_offset() {
    let first = b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n";
    let mut bytes = first.to_vec();
    bytes.extend_from_slice(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n");
    let Scan::Refused { head_start, .. } = scanner().feed(&bytes) else { panic!("expected refusal") };
    assert_eq!(head_start, first.len());
}

#[test]
fn chunked_body_is_followed_to_the_next_head() {
    let mut s = scanner();
    let stream = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\nGET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n";
    // Byte by byte: framing must survive arbitrary read boundaries.
    let mut verdict = None;
    for (i, b) in stream.iter().enumerate() {
        if let Scan::Refused { violation, .. } = s.feed(std::slice::from_ref(b)) {
            verdict = Some((i, violation));
            break;
        }
    }
    assert_eq!(verdict, Some((stream.len() - 1, Violation::DuplicateContentLength)));
}

#[test]
fn h2_preface_stops_the_scanner() {
    let mut s = scanner();
    assert_eq!(s.feed(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), Scan::Clean);
    assert!(!s.is_following());
}

#[test]
fn h2_preface_split_across_reads_stops_the_scanner() {
    let mut s = scanner();
    for part in [&b"PRI * HTTP/2"[..], b".0\r\n\r\nS", b"M\r\n\r\n"] {
        assert_eq!(s.feed(part), Scan::Clean);
    }
    assert!(!s.is_following());
}

#[test]
fn a_pri_method_is_an_ordinary_request() {
    let mut s = scanner();
    let pri = b"PRI /x HTTP/1.1\r\nHost: a\r\n\r\n";
    assert_eq!(s.feed(pri), Scan::Clean);
    assert!(s.is_following(), "a PRI request line is not the HTTP/2 preface");
    let smuggle = b"POST /y HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    assert!(matches!(s.feed(smuggle), Scan::Refused { violation: Violation::LengthAndChunked, .. }));
}

#[test]
fn bytes_after_an_upgrade_request_wait_for_the_decision() {
    let head = b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n";
    let mut bytes = head.to_vec();
    bytes.extend_from_slice(b"\x81\x05hello");
    let mut s = scanner();
    assert_eq!(s.feed(&bytes), Scan::AwaitUpgrade { at: head.len() });
    // Upgraded: the rest is a tunnel.
    s.stop();
    assert_eq!(s.feed(b"anything at all"), Scan::Clean);
    assert!(!s.is_following());
}

#[test]
fn a_refused_upgrade_resumes_scanning_and_catches_what_follows() {
    let mut s = scanner();
    let head = b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n";
    assert_eq!(s.feed(head), Scan::Clean);
    assert_eq!(s.feed(b"POST"), Scan::AwaitUpgrade { at: 0 });
    s.resume();
    let smuggled = b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_eq!(refused(s.feed(smuggled)), Some(Violation::LengthAndChunked));
}

#[test]
fn an_upgrade_request_with_a_body_awaits_after_the_body() {
    let mut s = scanner();
    let head = b"POST /ws HTTP/1.1\r\nUpgrade: foo\r\nContent-Length: 3\r\n\r\nabc";
    let mut bytes = head.to_vec();
    bytes.extend_from_slice(b"GET");
    assert_eq!(s.feed(&bytes), Scan::AwaitUpgrade { at: head.len() });
}

#[test]
fn chunked_framing_follows_hypers_grammar_and_refuses_what_others_read_differently() {
    let head = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
    let good: [&[u8]; 4] =
        [b"5\r\nhello\r\n0\r\n\r\n", b"5;ext=1\r\nhello\r\n0\r\n\r\n", b"5 \r\nhello\r\n0\r\n\r\n", b"0\r\nX-T: 1\r\n\r\n"];
    for body in good {
        let mut s = scanner();
        let mut bytes = head.to_vec();
        bytes.extend_from_slice(body);
        assert_eq!(s.feed(&bytes), Scan::Clean, "{:?}", String::from_utf8_lossy(body));
        assert_eq!(s.state, State::Head, "{:?}", String::from_utf8_lossy(body));
    }
    let bad: [&[u8]; 9] = [
        b"5\nhello\r\n0\r\n\r\n",               // bare LF after the size
        b"5\r\nhello\n0\r\n\r\n",               // bare LF after the data
        b"5\r\nhelloXX0\r\n\r\n",               // no CRLF after the data
        b"0\r\nX-T: 1\nGET / HTTP/1.1\r\n\r\n", // bare LF inside a trailer
        b"0\r\n\n",                             // bare LF at the end
        b"\r\n",                                // empty size line
        b"5 5\r\nhello\r\n0\r\n\r\n",           // digits after whitespace
        b"5;a\nb\r\n",                          // LF in an extension
        b"zz\r\n",                              // not hex
    ];
    for body in bad {
        let mut s = scanner();
        let mut bytes = head.to_vec();
        bytes.extend_from_slice(body);
        assert!(matches!(s.feed(&bytes), Scan::BadBody { .. }), "{:?}", String::from_utf8_lossy(body));
        assert!(!s.is_following());
    }
}

#[test]
fn oversized_head_stops_the_scanner_and_leaves_it_to_hyper() {
    let mut s = RequestFraming::new(64, 100);
    let head = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n", "a".repeat(100));
    assert_eq!(s.feed(head.as_bytes()), Scan::Reported { violation: Violation::OversizedHead });
    assert!(!s.is_following());
}

#[test]
fn overflowing_chunk_size_is_a_bad_body() {
    let mut s = scanner();
    let scan = s.feed(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\n");
    assert!(matches!(scan, Scan::BadBody { .. }));
    assert!(!s.is_following());
}

#[test]
fn unreadable_heads_are_reported_for_hyper_to_refuse() {
    assert_eq!(scanner().feed(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n"), Scan::Reported { violation: Violation::MalformedHead });
    let many: String = (0..200).map(|i| format!("X-{i}: v\r\n")).collect();
    let head = format!("GET / HTTP/1.1\r\n{many}\r\n");
    assert_eq!(scanner().feed(head.as_bytes()), Scan::Reported { violation: Violation::OversizedHead });
}
