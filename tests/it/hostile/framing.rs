//! HTTP/1 framing (contract 6) and the abuse shapes that already work (contract 10):
//! ambiguous lengths, an `Upgrade` that is not upgraded followed by a smuggling request, bare
//! LF and malformed chunked framing, HTTP/1.1 bytes on a TLS connection that negotiated
//! `h2`, oversized and malformed heads, h2c upgrades, `Expect: 100-continue`. The smuggled
//! request (`/public/…-smuggled`) must never reach the upstream.

use std::time::Duration;

use super::{Authz, Case, EDGE_HOST, Expect, H2Request, HeaderWant, Options, Report, Want, Wire, good_basic, run_tables};

const H: &str = EDGE_HOST;

fn smuggled(tag: &str) -> String {
    format!("GET /public/{tag}-smuggled HTTP/1.1\r\nHost: {H}\r\nConnection: close\r\n\r\n")
}

/// A POST to the open service with these extra header lines and this raw body section,
/// followed by a smuggled request.
fn post(tag: &str, headers: &str, body: &str) -> Wire {
    Wire::Raw(format!("POST /public/{tag} HTTP/1.1\r\nHost: {H}\r\n{headers}\r\n{body}{}", smuggled(tag)).into_bytes())
}

fn open_seen(method: &str, tag: &str, body_len: usize) -> Want {
    Want::new("tomcat", method, &format!("/public/{tag}"), H, Authz::Any).body(body_len)
}

/// A CL.TE smuggling request (the guard must refuse it) carrying a smuggled GET.
fn cl_te(tag: &str) -> String {
    let inner = smuggled(tag);
    format!("POST /public/{tag}-carrier HTTP/1.1\r\nHost: {H}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{inner}")
}

/// A TE.CL smuggling request.
fn te_cl(tag: &str) -> String {
    let inner = smuggled(tag);
    format!("POST /public/{tag}-carrier HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n{inner}")
}

fn raw(text: &str) -> Wire {
    Wire::Raw(text.as_bytes().to_vec())
}

/// The first request of a connection asks for an upgrade that does not happen.
fn upgrade_head(method: &str, path: &str, upgrade: &str, extra: &str) -> String {
    let ws = if upgrade == "websocket" { "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" } else { "" };
    format!("{method} {path} HTTP/1.1\r\nHost: {H}\r\nConnection: Upgrade\r\nUpgrade: {upgrade}\r\n{ws}{extra}\r\n")
}

pub fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    let refused = || Expect::status(400);

    // --- Ambiguous lengths (already refused; must stay so). ---
    for (name, headers, body) in [
        ("cl-te", "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n"),
        ("te-cl", "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n", "0\r\n\r\n"),
        ("dup-cl-equal", "Content-Length: 5\r\nContent-Length: 5\r\n", "hello"),
        ("dup-cl-differ", "Content-Length: 5\r\nContent-Length: 6\r\n", "hello!"),
        ("cl-plus", "Content-Length: +5\r\n", "hello"),
        ("cl-hex", "Content-Length: 0x10\r\n", "0123456789abcdef"),
        ("cl-negative", "Content-Length: -1\r\n", ""),
        ("cl-list", "Content-Length: 5, 5\r\n", "hello"),
        ("cl-exponent", "Content-Length: 1e1\r\n", "0123456789"),
        ("cl-empty", "Content-Length: \r\n", ""),
        ("cl-overflow", "Content-Length: 99999999999999999999999\r\n", ""),
        ("cl-inner-space", "Content-Length: 1 0\r\n", "0123456789"),
        ("te-chunked-identity", "Transfer-Encoding: chunked, identity\r\n", "0\r\n\r\n"),
        ("te-identity", "Transfer-Encoding: identity\r\n", "0\r\n\r\n"),
        ("te-gzip", "Transfer-Encoding: gzip\r\n", "0\r\n\r\n"),
        ("te-twice", "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n"),
        ("te-xchunked", "Transfer-Encoding: xchunked\r\n", "0\r\n\r\n"),
        ("te-trailing-comma", "Transfer-Encoding: chunked,\r\n", "0\r\n\r\n"),
        ("te-tab-with-cl", "Transfer-Encoding:\tchunked\r\nContent-Length: 4\r\n", "0\r\n\r\n"),
        ("te-space-before-colon", "Transfer-Encoding : chunked\r\n", "0\r\n\r\n"),
        ("te-tab-before-colon", "Transfer-Encoding\t: chunked\r\n", "0\r\n\r\n"),
        ("te-obs-fold", "Transfer-Encoding: identity\r\n chunked\r\n", "0\r\n\r\n"),
        ("obs-fold", "X-Folded: a\r\n b\r\n", ""),
        ("nul-in-value", "X-Nul: a\0b\r\n", ""),
        ("cr-in-value", "X-Cr: a\rb\r\n", ""),
        ("space-in-name", "X Bad: v\r\n", ""),
        ("no-colon", "X-No-Colon\r\n", ""),
    ] {
        out.push(Case::new(format!("length/{name}"), post(name, headers, body), refused()));
    }
    out.push(Case::new(
        "length/smuggle-after-good-request",
        raw(&format!("GET /public/first HTTP/1.1\r\nHost: {H}\r\n\r\n{}", cl_te("after-good"))),
        Expect::sequence(&[&[200], &[400]]).forwarded(open_seen("GET", "first", 0)),
    ));
    out.push(Case::new(
        "length/te-cl-after-good-request",
        raw(&format!("GET /public/first2 HTTP/1.1\r\nHost: {H}\r\n\r\n{}", te_cl("after-good2"))),
        Expect::sequence(&[&[200], &[400]]).forwarded(open_seen("GET", "first2", 0)),
    ));

    // --- Valid framing passes (controls). ---
    let inner = format!("GET /public/inner-smuggled HTTP/1.1\r\nHost: {H}\r\n\r\n");
    for (name, headers, body, expected) in [
        ("content-length", "Content-Length: 5\r\n".to_string(), "hello".to_string(), "hello".to_string()),
        ("chunked", "Transfer-Encoding: chunked\r\n".to_string(), "5\r\nhello\r\n0\r\n\r\n".to_string(), "hello".to_string()),
        (
            "chunked-extension",
            "Transfer-Encoding: chunked\r\n".to_string(),
            "5;name=value\r\nhello\r\n0\r\n\r\n".to_string(),
            "hello".to_string(),
        ),
        (
            "chunked-trailer",
            "Transfer-Encoding: chunked\r\n".to_string(),
            "5\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n".to_string(),
            "hello".to_string(),
        ),
        (
            "chunked-two-chunks",
            "Transfer-Encoding: chunked\r\n".to_string(),
            "3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n".to_string(),
            "hello".to_string(),
        ),
        (
            "chunked-upper-hex",
            "Transfer-Encoding: chunked\r\n".to_string(),
            "A\r\n0123456789\r\n0\r\n\r\n".to_string(),
            "0123456789".to_string(),
        ),
        (
            "chunked-looks-like-request",
            "Transfer-Encoding: chunked\r\n".to_string(),
            format!("{:x}\r\n{inner}\r\n0\r\n\r\n", inner.len()),
            inner.clone(),
        ),
    ] {
        let wire = raw(&format!("POST /public/{name} HTTP/1.1\r\nHost: {H}\r\n{headers}Connection: close\r\n\r\n{body}"));
        out.push(Case::new(
            format!("valid/{name}"),
            wire,
            Expect::status(200).forwarded(open_seen("POST", name, 0).body_exact(expected.as_bytes())),
        ));
    }

    // --- Bare LF in chunked framing: 400, nothing reaches the upstream. ---
    for (name, body) in [
        ("size-line", "5\nhello\r\n0\r\n\r\n"),
        ("after-data", "5\r\nhello\n0\r\n\r\n"),
        ("last-chunk-line", "5\r\nhello\r\n0\n\r\n"),
        ("final-line", "5\r\nhello\r\n0\r\n\n"),
        ("trailer-line", "0\r\nX-Trailer: 1\n\r\n"),
        ("trailer-end", "0\r\nX-Trailer: 1\r\n\n"),
        ("extension-line", "5;ext=1\nhello\r\n0\r\n\r\n"),
        ("only-lf", "5\nhello\n0\n\n"),
        ("zero-only-lf", "0\n\n"),
    ] {
        out.push(Case::new(format!("bare-lf/{name}"), post(&format!("lf-{name}"), "Transfer-Encoding: chunked\r\n", body), refused()));
    }

    // --- Malformed chunked bodies: 400, never 502. ---
    for (name, body) in [
        ("bad-hex", "zz\r\nhello\r\n0\r\n\r\n"),
        ("hex-then-junk", "5x\r\nhello\r\n0\r\n\r\n"),
        ("0x-prefix", "0x5\r\nhello\r\n0\r\n\r\n"),
        ("negative", "-5\r\nhello\r\n0\r\n\r\n"),
        ("leading-space", " 5\r\nhello\r\n0\r\n\r\n"),
        ("missing-crlf-after-data", "5\r\nhelloXX\r\n0\r\n\r\n"),
        ("data-longer-than-size", "3\r\nhello\r\n0\r\n\r\n"),
        ("size-overflow", "fffffffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
        ("empty-size-line", "\r\nhello\r\n0\r\n\r\n"),
        ("cr-only", "5\rhello\r\n0\r\n\r\n"),
        ("cr-cr-lf", "5\r\nhello\r\r\n0\r\n\r\n"),
    ] {
        out.push(Case::new(format!("bad-chunk/{name}"), post(&format!("bc-{name}"), "Transfer-Encoding: chunked\r\n", body), refused()));
    }

    // --- An Upgrade that is not upgraded, then smuggling on the same connection. ---
    let closed_or_400: &[u16] = &[400, 0];
    out.push(Case::new(
        "upgrade-smuggle/websocket-unauthenticated",
        raw(&format!("{}{}", upgrade_head("GET", "/finesse/ws/u1", "websocket", ""), cl_te("u1"))),
        Expect::sequence(&[&[401], closed_or_400]),
    ));
    out.push(Case::new(
        "upgrade-smuggle/websocket-authorization-only",
        raw(&format!(
            "{}{}",
            upgrade_head("GET", "/finesse/ws/u2", "websocket", &format!("Authorization: {}\r\n", good_basic())),
            cl_te("u2")
        )),
        Expect::sequence(&[&[401], closed_or_400]),
    ));
    out.push(Case::new(
        "upgrade-smuggle/foo-on-open",
        raw(&format!("{}{}", upgrade_head("GET", "/public/u3", "foo", ""), cl_te("u3"))),
        Expect::sequence(&[&[200], closed_or_400]).forwarded(open_seen("GET", "u3", 0)),
    ));
    out.push(Case::new(
        "upgrade-smuggle/websocket-on-open",
        raw(&format!("{}{}", upgrade_head("GET", "/public/u4", "websocket", ""), cl_te("u4"))),
        Expect::sequence(&[&[200], closed_or_400]).forwarded(open_seen("GET", "u4", 0)),
    ));
    out.push(Case::new(
        "upgrade-smuggle/websocket-te-cl",
        raw(&format!("{}{}", upgrade_head("GET", "/public/u5", "websocket", ""), te_cl("u5"))),
        Expect::sequence(&[&[200], closed_or_400]).forwarded(open_seen("GET", "u5", 0)),
    ));
    out.push(Case::new(
        "upgrade-smuggle/foo-then-duplicate-cl",
        raw(&format!(
            "{}POST /public/u6-carrier HTTP/1.1\r\nHost: {H}\r\nContent-Length: 0\r\nContent-Length: {}\r\n\r\n{}",
            upgrade_head("GET", "/public/u6", "foo", ""),
            smuggled("u6").len(),
            smuggled("u6")
        )),
        Expect::sequence(&[&[200], closed_or_400]).forwarded(open_seen("GET", "u6", 0)),
    ));
    out.push(Case::new(
        "upgrade-smuggle/foo-then-bare-lf-chunk",
        raw(&format!(
            "{}POST /public/u7-carrier HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n0\n\r\n{}",
            upgrade_head("GET", "/public/u7", "foo", ""),
            smuggled("u7")
        )),
        Expect::sequence(&[&[200], closed_or_400]).forwarded(open_seen("GET", "u7", 0)),
    ));
    out.push(Case::new(
        "upgrade-smuggle/foo-on-post-with-body",
        raw(&format!("{}hello{}", upgrade_head("POST", "/public/u8", "foo", "Content-Length: 5\r\n"), cl_te("u8"))),
        Expect::sequence(&[&[200], closed_or_400]).forwarded(open_seen("POST", "u8", 5)),
    ));
    out.push(Case::new(
        "upgrade-smuggle/h2c-on-open",
        raw(&format!(
            "GET /public/u9 HTTP/1.1\r\nHost: {H}\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n{}",
            cl_te("u9")
        )),
        Expect::sequence(&[&[200], closed_or_400]).forwarded(
            open_seen("GET", "u9", 0).header("upgrade", HeaderWant::Absent).header("http2-settings", HeaderWant::Absent),
        ),
    )
    .or(Expect::sequence(&[&[400], closed_or_400])));
    out.push(Case::new(
        "upgrade-smuggle/websocket-on-protected-with-protocol-credential-refused",
        raw(&format!(
            "{}{}",
            upgrade_head("GET", "/finesse/ws/u10", "websocket", "Sec-WebSocket-Protocol: xmpp, Authorization%3A%20Basic%20eA%3D%3D\r\n"),
            cl_te("u10")
        )),
        Expect::sequence(&[&[401], closed_or_400]),
    ));

    // --- Heads and request lines. ---
    let many: String = (0..60).map(|i| format!("X-H{i}: v\r\n")).collect();
    for (name, text, statuses) in [
        ("oversized-head", format!("GET /public/big HTTP/1.1\r\nHost: {H}\r\nX-Big: {}\r\n\r\n", "a".repeat(20_000)), vec![431]),
        ("too-many-headers", format!("GET /public/many HTTP/1.1\r\nHost: {H}\r\n{many}\r\n"), vec![431]),
        ("very-long-path", format!("GET /public/{} HTTP/1.1\r\nHost: {H}\r\n\r\n", "a".repeat(9000)), vec![414, 431]),
        ("http09", "GET /public/http09\r\n\r\n".to_string(), vec![400, 0]),
        ("http2-request-line", format!("GET /public/h2line HTTP/2.0\r\nHost: {H}\r\n\r\n"), vec![400, 505]),
        ("http-version-junk", format!("GET /public/vjunk HTTP/1.1x\r\nHost: {H}\r\n\r\n"), vec![400, 505]),
        ("http-version-3", format!("GET /public/v3 HTTP/3.0\r\nHost: {H}\r\n\r\n"), vec![400, 505]),
        ("garbage", "GARBAGE\r\n\r\n".to_string(), vec![400]),
        ("extra-token", format!("GET /public/extra HTTP/1.1 extra\r\nHost: {H}\r\n\r\n"), vec![400]),
        ("double-space", format!("GET  /public/dspace HTTP/1.1\r\nHost: {H}\r\n\r\n"), vec![400]),
        ("nul-in-method", format!("G\0T /public/nul HTTP/1.1\r\nHost: {H}\r\n\r\n"), vec![400]),
        ("control-in-path", format!("GET /public/\x01 HTTP/1.1\r\nHost: {H}\r\n\r\n"), vec![400]),
        ("space-in-path", format!("GET /public/a b HTTP/1.1\r\nHost: {H}\r\n\r\n"), vec![400]),
        ("tls-on-plain", "\x16\x03\x01\x02\x00garbage-not-http\r\n\r\n".to_string(), vec![400]),
        ("leading-whitespace-header", format!("GET /public/lws HTTP/1.1\r\n Host: {H}\r\n\r\n"), vec![400]),
    ] {
        out.push(Case::new(format!("head/{name}"), raw(&text), Expect::statuses(&statuses)));
    }
    out.push(Case::new(
        "head/h2c-upgrade",
        raw(&format!(
            "GET /public/h2c HTTP/1.1\r\nHost: {H}\r\nConnection: Upgrade, HTTP2-Settings, close\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
        )),
        Expect::status(200)
            .forwarded(open_seen("GET", "h2c", 0).header("upgrade", HeaderWant::Absent).header("http2-settings", HeaderWant::Absent)),
    )
    .or(Expect::status(400)));
    out.push(Case::new(
        "head/expect-100-protected-no-credentials",
        Wire::RawPaced(
            format!(
                "POST /finesse/api/e1 HTTP/1.1\r\nHost: {H}\r\nContent-Length: 10\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
            )
            .into_bytes(),
            Duration::from_millis(500),
            b"0123456789".to_vec(),
        ),
        Expect::status(401),
    ));
    out.push(Case::new(
        "head/expect-100-public",
        raw(&format!("POST /desktop/assets/e2 HTTP/1.1\r\nHost: {H}\r\nContent-Length: 10\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n0123456789")),
        Expect::status(200).forwarded(Want::new("tomcat", "POST", "/desktop/assets/e2", H, Authz::Absent).body(10)),
    ));

    // --- TLS: ALPN h2 then HTTP/1.1 bytes get no HTTP/1.1 answer and reach nothing. ---
    let h2_alpn = vec![b"h2".to_vec()];
    for (name, text) in [
        ("h2-then-http1", format!("GET /public/t1 HTTP/1.1\r\nHost: {H}\r\n\r\n")),
        ("h2-then-http1-smuggle", cl_te("t2")),
        ("h2-then-http1-pipelined", format!("GET /public/t3 HTTP/1.1\r\nHost: {H}\r\n\r\nGET /public/t3b HTTP/1.1\r\nHost: {H}\r\n\r\n")),
        ("h2-then-http1-protected", format!("GET /finesse/api/t4 HTTP/1.1\r\nHost: {H}\r\nAuthorization: {}\r\n\r\n", good_basic())),
    ] {
        out.push(Case::new(
            format!("tls-alpn/{name}"),
            Wire::Tls { alpn: h2_alpn.clone(), bytes: text.into_bytes() },
            Expect::statuses(&[0]).alpn("h2"),
        ));
    }
    out.push(Case::new(
        "tls-alpn/http11-control",
        Wire::Tls {
            alpn: vec![b"http/1.1".to_vec()],
            bytes: format!("GET /public/t5 HTTP/1.1\r\nHost: {H}\r\nConnection: close\r\n\r\n").into_bytes(),
        },
        Expect::status(200).forwarded(open_seen("GET", "t5", 0)).alpn("http/1.1"),
    ));
    out.push(Case::new(
        "tls-alpn/no-alpn-control",
        Wire::Tls { alpn: Vec::new(), bytes: format!("GET /public/t6 HTTP/1.1\r\nHost: {H}\r\nConnection: close\r\n\r\n").into_bytes() },
        Expect::status(200).forwarded(open_seen("GET", "t6", 0)),
    ));
    out.push(Case::new(
        "tls-alpn/h2-control",
        Wire::TlsH2(H2Request { method: "GET".into(), uri: format!("https://{H}/public/t7"), headers: Vec::new(), body: Vec::new() }),
        Expect::status(200).forwarded(open_seen("GET", "t7", 0)).alpn("h2"),
    ));
    out
}

#[tokio::test]
async fn hostile_framing() {
    let mut report = Report::new("framing");
    run_tables(&mut report, &Options { https: true, ..Options::default() }, &cases()).await;
    report.finish();
}
