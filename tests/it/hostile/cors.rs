//! CORS preflights (contract 4): only a body-less `OPTIONS` with `Origin` and
//! `Access-Control-Request-Method` is a preflight; it reaches the upstream without
//! `Authorization` and `Cookie`, the client gets only the `access-control-*` headers with an
//! empty 204, later ones come from the edge cache; `cors_origins` and
//! `cors_preflights_per_minute` bound what is forwarded. The steps of a table run in order
//! (the cache is per service and origin).

use super::{Authz, Case, EDGE_HOST, Expect, H2Request, HeaderWant, Options, Report, Want, Wire, good_basic, run_tables};

pub const ALLOWED_ORIGIN: &str = "https://app.example.com";

/// An OPTIONS request: `origin` and `method` (Access-Control-Request-Method) when given,
/// extra header lines, and a raw body section (with its framing header in `extra`).
fn options(path: &str, origin: Option<&str>, method: Option<&str>, extra: &[(&str, &str)], body: &[u8]) -> Wire {
    let mut text = format!("OPTIONS {path} HTTP/1.1\r\nHost: {EDGE_HOST}\r\n");
    if let Some(o) = origin {
        text.push_str(&format!("Origin: {o}\r\n"));
    }
    if let Some(m) = method {
        text.push_str(&format!("Access-Control-Request-Method: {m}\r\nAccess-Control-Request-Headers: authorization\r\n"));
    }
    for (k, v) in extra {
        text.push_str(&format!("{k}: {v}\r\n"));
    }
    text.push_str("Connection: close\r\n\r\n");
    let mut bytes = text.into_bytes();
    bytes.extend_from_slice(body);
    Wire::Raw(bytes)
}

fn preflight(path: &str, origin: &str, extra: &[(&str, &str)]) -> Wire {
    options(path, Some(origin), Some("POST"), extra, b"")
}

/// A forwarded preflight as the upstream must see it.
fn forwarded(upstream: &'static str, path: &str) -> Want {
    Want::new(upstream, "OPTIONS", path, EDGE_HOST, Authz::Absent).header("cookie", HeaderWant::Absent)
}

/// The client's answer to a preflight: 204, the allowed origin echoed, nothing else of the
/// upstream's.
fn answered(origin: &str) -> Expect {
    Expect::status(204)
        .response_header("access-control-allow-origin", HeaderWant::Exactly(origin.to_string()))
        .response_header("set-cookie", HeaderWant::Absent)
        .response_header("x-leak", HeaderWant::Absent)
        .response_header("x-upstream-private", HeaderWant::Absent)
        .empty_body()
}

fn cached(origin: &str) -> Expect {
    answered(origin).response_header("x-portcullis-cache", HeaderWant::Exactly("hit".into()))
}

pub fn cases() -> Vec<Case> {
    let good = good_basic();
    let token = super::jwt::good_token();
    let bearer = format!("Bearer {token}");
    let creds = [("Authorization", good.as_str()), ("Cookie", "JSESSIONID=secret-session")];
    vec![
        Case::new(
            "preflight/forwarded-without-credentials",
            preflight("/finesse/api/p1", ALLOWED_ORIGIN, &creds),
            answered(ALLOWED_ORIGIN).forwarded(forwarded("tomcat", "/finesse/api/p1")),
        ),
        Case::new("preflight/cached", preflight("/finesse/api/p2", ALLOWED_ORIGIN, &creds), cached(ALLOWED_ORIGIN)),
        Case::new(
            "preflight/leaky-upstream",
            preflight("/finesse/leaky/p3", "https://leaky.example", &[("Cookie", "a=b")]),
            answered("https://leaky.example").forwarded(forwarded("tomcat", "/finesse/leaky/p3")),
        ),
        Case::new("preflight/leaky-cached", preflight("/finesse/leaky/p4", "https://leaky.example", &[]), cached("https://leaky.example")),
        Case::new(
            "preflight/content-length-zero",
            preflight("/finesse/api/p5", "https://zero.example", &[("Content-Length", "0"), ("Authorization", &good)]),
            answered("https://zero.example").forwarded(forwarded("tomcat", "/finesse/api/p5")),
        ),
        Case::new(
            "preflight/cookie-only",
            preflight("/finesse/api/p6", "https://cookie.example", &[("Cookie", "JSESSIONID=1; other=2")]),
            answered("https://cookie.example").forwarded(forwarded("tomcat", "/finesse/api/p6")),
        ),
        Case::new(
            "preflight/cuic-own-cache",
            preflight("/cuic/p7", ALLOWED_ORIGIN, &[("Authorization", &bearer)]),
            answered(ALLOWED_ORIGIN).forwarded(forwarded("cuic", "/cuic/p7")),
        ),
        Case::new(
            "preflight/open-service",
            preflight("/public/p8", ALLOWED_ORIGIN, &creds),
            answered(ALLOWED_ORIGIN).forwarded(forwarded("tomcat", "/public/p8")),
        ),
        Case::new(
            "preflight/canonical-path",
            preflight("/desktop/assets/../../finesse/api/p9", "https://canon.example", &creds),
            answered("https://canon.example").forwarded(forwarded("tomcat", "/finesse/api/p9")),
        ),
        Case::new("preflight/refused-path", preflight("/finesse/..;/p10", "https://refused.example", &creds), Expect::status(400)),
        Case::new(
            "preflight/two-authorizations",
            preflight("/finesse/api/p11", "https://two.example", &[("Authorization", &good), ("Authorization", &good)]),
            Expect::status(400),
        )
        .or(answered("https://two.example").forwarded(forwarded("tomcat", "/finesse/api/p11")))
        .tagged("ambiguous"),
        Case::new(
            "preflight/h2",
            Wire::H2(H2Request {
                method: "OPTIONS".into(),
                uri: format!("http://{EDGE_HOST}/finesse/api/p12"),
                headers: vec![
                    ("origin".into(), "https://h2.example".into()),
                    ("access-control-request-method".into(), "POST".into()),
                    ("authorization".into(), good.clone()),
                    ("cookie".into(), "JSESSIONID=h2".into()),
                ],
                body: Vec::new(),
            }),
            answered("https://h2.example").forwarded(forwarded("tomcat", "/finesse/api/p12")),
        ),
        // Not preflights: authenticated like anything else.
        Case::new(
            "not-preflight/content-length-body",
            options("/finesse/api/n1", Some("https://body.example"), Some("POST"), &[("Content-Length", "5")], b"hello"),
            Expect::status(401),
        ),
        Case::new(
            "not-preflight/chunked-body",
            options("/finesse/api/n2", Some("https://body.example"), Some("POST"), &[("Transfer-Encoding", "chunked")], b"5\r\nhello\r\n0\r\n\r\n"),
            Expect::status(401),
        ),
        Case::new(
            "not-preflight/chunked-empty-body",
            options("/finesse/api/n3", Some("https://body.example"), Some("POST"), &[("Transfer-Encoding", "chunked")], b"0\r\n\r\n"),
            Expect::status(401),
        ),
        Case::new(
            "not-preflight/body-with-credentials",
            options("/finesse/api/n4", Some("https://body.example"), Some("POST"), &[("Content-Length", "5"), ("Authorization", &good)], b"hello"),
            Expect::status(204).forwarded(Want::new("tomcat", "OPTIONS", "/finesse/api/n4", EDGE_HOST, Authz::Exactly(good.clone())).body(5)),
        ),
        Case::new("not-preflight/origin-only", options("/finesse/api/n5", Some("https://o.example"), None, &[], b""), Expect::status(401)),
        Case::new("not-preflight/method-only", options("/finesse/api/n6", None, Some("POST"), &[], b""), Expect::status(401)),
        Case::new(
            "not-preflight/get-with-preflight-headers",
            Wire::Raw(
                format!("GET /finesse/api/n7 HTTP/1.1\r\nHost: {EDGE_HOST}\r\nOrigin: https://g.example\r\nAccess-Control-Request-Method: POST\r\nConnection: close\r\n\r\n")
                    .into_bytes(),
            ),
            Expect::status(401),
        ),
        Case::new(
            "not-preflight/h2-body",
            Wire::H2(H2Request {
                method: "OPTIONS".into(),
                uri: format!("http://{EDGE_HOST}/finesse/api/n8"),
                headers: vec![("origin".into(), "https://h2body.example".into()), ("access-control-request-method".into(), "POST".into())],
                body: b"hello".to_vec(),
            }),
            Expect::status(401),
        ),
    ]
}

/// Against `cors_origins` on finesse and `cors_preflights_per_minute = 3` on cuic.
pub fn configured_cases() -> Vec<Case> {
    let mut out = vec![Case::new(
        "origins/allowed",
        preflight("/finesse/api/q1", ALLOWED_ORIGIN, &[]),
        answered(ALLOWED_ORIGIN).forwarded(forwarded("tomcat", "/finesse/api/q1")),
    )];
    for (i, origin) in [
        "https://evil.example",
        "null",
        "https://app.example.com.evil.example",
        "https://evilapp.example.com",
        "http://app.example.com",
        "https://app.example.com:8443",
        "https://app.example.com/",
    ]
    .iter()
    .enumerate()
    {
        out.push(Case::new(
            format!("origins/refused-{i}:{origin}"),
            preflight(&format!("/finesse/api/q-{i}"), origin, &[]),
            Expect::status(403),
        ));
    }
    for i in 1..=3 {
        let origin = format!("https://o{i}.example");
        out.push(Case::new(
            format!("bound/forwarded-{i}"),
            preflight(&format!("/cuic/r{i}"), &origin, &[]),
            answered(&origin).forwarded(forwarded("cuic", &format!("/cuic/r{i}"))),
        ));
    }
    for i in 4..=6 {
        let origin = format!("https://o{i}.example");
        out.push(Case::new(
            format!("bound/limited-{i}"),
            preflight(&format!("/cuic/r{i}"), &origin, &[]),
            Expect::status(429).response_header("retry-after", HeaderWant::Present),
        ));
    }
    out.push(Case::new("bound/cached-still-answered", preflight("/cuic/r7", "https://o1.example", &[]), cached("https://o1.example")));
    let token = super::jwt::good_token();
    out.push(Case::new(
        "bound/requests-unaffected",
        super::get("/cuic/r8", EDGE_HOST, Some(&format!("Bearer {token}"))),
        Expect::status(200).forwarded(Want::new("cuic", "GET", "/cuic/r8", EDGE_HOST, Authz::Exactly(format!("Bearer {token}")))),
    ));
    out
}

#[tokio::test]
async fn hostile_cors() {
    let mut report = Report::new("cors");
    run_tables(&mut report, &Options::default(), &cases()).await;
    report.finish();
}

#[tokio::test]
async fn hostile_cors_configured() {
    let mut report = Report::new("cors (cors_origins, cors_preflights_per_minute)");
    let options = Options {
        finesse: format!("cors_origins = [\"{ALLOWED_ORIGIN}\"]"),
        cuic: "cors_preflights_per_minute = 3".into(),
        ..Options::default()
    };
    run_tables(&mut report, &options, &configured_cases()).await;
    report.finish();
}
