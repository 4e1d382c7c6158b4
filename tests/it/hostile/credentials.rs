//! One credential (contract 3): several `Authorization` fields → 400; the upstream receives
//! exactly the one credential the edge validated, none on a public path, and none on a
//! WebSocket upgrade authenticated by its `Sec-WebSocket-Protocol` credential
//! (`websocket_auth` is on by default).

use super::{Authz, Case, DESKTOP_HOST, EDGE_HOST, Expect, H2Request, HeaderWant, Options, Report, Want, Wire, good_basic, h1, run_tables};
use crate::support::basic;

/// The `Sec-WebSocket-Protocol` element carrying `authorization`.
pub fn protocol_credential(authorization: &str) -> String {
    portcullis::net::percent::encode(&format!("Authorization: {authorization}"))
}

/// A WebSocket upgrade request (the recording upstream answers 200: no tunnel opens).
pub fn upgrade(path: &str, host: &str, protocol: Option<&str>, authorizations: &[&str]) -> Wire {
    let mut text = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade, close\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    );
    if let Some(p) = protocol {
        text.push_str(&format!("Sec-WebSocket-Protocol: {p}\r\n"));
    }
    for a in authorizations {
        text.push_str(&format!("Authorization: {a}\r\n"));
    }
    text.push_str("\r\n");
    Wire::Raw(text.into_bytes())
}

fn with_auth(method: &str, path: &str, host: &str, authorizations: &[&str], body: &[u8]) -> Wire {
    let headers: Vec<(&str, &str)> = authorizations.iter().map(|a| ("Authorization", *a)).collect();
    Wire::Raw(h1(method, path, Some(host), &headers, body))
}

fn h2_with_auth(path: &str, authorizations: &[&str]) -> Wire {
    Wire::H2(H2Request {
        method: "GET".into(),
        uri: format!("http://{EDGE_HOST}{path}"),
        headers: authorizations.iter().map(|a| ("authorization".to_string(), a.to_string())).collect(),
        body: Vec::new(),
    })
}

pub fn cases() -> Vec<Case> {
    let good = good_basic();
    let bad = basic("alice", "wrong-password");
    let token = super::jwt::good_token();
    let bearer = format!("Bearer {token}");
    let tomcat = |method: &str, target: &str, authz: Authz| Want::new("tomcat", method, target, EDGE_HOST, authz);
    let mut out = Vec::new();

    // More than one Authorization field: 400 wherever it is sent, nothing upstream.
    for (name, path, host, auths) in [
        ("good-good", "/finesse/api/c1", EDGE_HOST, vec![good.as_str(), good.as_str()]),
        ("good-bad", "/finesse/api/c2", EDGE_HOST, vec![good.as_str(), bad.as_str()]),
        ("bad-good", "/finesse/api/c3", EDGE_HOST, vec![bad.as_str(), good.as_str()]),
        ("good-empty", "/finesse/api/c4", EDGE_HOST, vec![good.as_str(), ""]),
        ("public-path", "/desktop/assets/c5.js", EDGE_HOST, vec![good.as_str(), good.as_str()]),
        ("favicon", "/favicon.ico", EDGE_HOST, vec![good.as_str(), bad.as_str()]),
        ("open-service", "/public/c6", EDGE_HOST, vec![good.as_str(), good.as_str()]),
        ("hosted", "/c7", DESKTOP_HOST, vec![good.as_str(), good.as_str()]),
        ("cuic-bearer-bearer", "/cuic/c8", EDGE_HOST, vec![bearer.as_str(), bearer.as_str()]),
        ("cuic-basic-bearer", "/cuic/c9", EDGE_HOST, vec![good.as_str(), bearer.as_str()]),
        ("three", "/finesse/api/c10", EDGE_HOST, vec![good.as_str(), good.as_str(), good.as_str()]),
    ] {
        out.push(Case::new(format!("two-authorization/{name}"), with_auth("GET", path, host, &auths, b""), Expect::status(400)));
    }
    out.push(Case::new(
        "two-authorization/name-case",
        Wire::Raw(format!("GET /finesse/api/c11 HTTP/1.1\r\nHost: {EDGE_HOST}\r\nAuthorization: {good}\r\nauthorization: {good}\r\nConnection: close\r\n\r\n").into_bytes()),
        Expect::status(400),
    ));
    out.push(Case::new(
        "two-authorization/post-with-body",
        with_auth("POST", "/finesse/api/c12", EDGE_HOST, &[&good, &good], b"payload"),
        Expect::status(400),
    ));
    out.push(Case::new("two-authorization/h2", h2_with_auth("/finesse/api/c13", &[&good, &good]), Expect::status(400)));
    out.push(Case::new("two-authorization/h2-public", h2_with_auth("/desktop/assets/c14.js", &[&good, &bad]), Expect::status(400)));
    out.push(Case::new("two-authorization/h2-cuic", h2_with_auth("/cuic/c15", &[&bearer, &bearer]), Expect::status(400)));
    // One field holding two credentials is one (invalid) credential, or refused.
    out.push(Case::new(
        "two-authorization/comma-joined",
        with_auth("GET", "/finesse/api/c16", EDGE_HOST, &[&format!("{good}, {good}")], b""),
        Expect::statuses(&[400, 401]),
    ));

    // One credential: exactly it reaches the upstream when valid.
    out.push(Case::new(
        "single/good-finesse",
        with_auth("GET", "/finesse/api/s1", EDGE_HOST, &[&good], b""),
        Expect::status(200).forwarded(tomcat("GET", "/finesse/api/s1", Authz::Exactly(good.clone()))),
    ));
    out.push(Case::new(
        "single/good-finesse-head",
        with_auth("HEAD", "/finesse/api/s2", EDGE_HOST, &[&good], b""),
        Expect::status(200).forwarded(tomcat("HEAD", "/finesse/api/s2", Authz::Exactly(good.clone()))),
    ));
    out.push(Case::new(
        "single/good-finesse-post",
        with_auth("POST", "/finesse/api/s3", EDGE_HOST, &[&good], b"hello world"),
        Expect::status(200).forwarded(tomcat("POST", "/finesse/api/s3", Authz::Exactly(good.clone())).body(11)),
    ));
    out.push(Case::new(
        "single/good-hosted",
        with_auth("GET", "/s4", DESKTOP_HOST, &[&good], b""),
        Expect::status(200).forwarded(Want::new("hosted", "GET", "/s4", DESKTOP_HOST, Authz::Exactly(good.clone()))),
    ));
    out.push(Case::new(
        "single/good-cuic",
        with_auth("GET", "/cuic/s5", EDGE_HOST, &[&bearer], b""),
        Expect::status(200).forwarded(Want::new("cuic", "GET", "/cuic/s5", EDGE_HOST, Authz::Exactly(bearer.clone()))),
    ));
    out.push(Case::new(
        "single/good-h2",
        h2_with_auth("/finesse/api/s6", &[&good]),
        Expect::status(200).forwarded(tomcat("GET", "/finesse/api/s6", Authz::Exactly(good.clone()))),
    ));
    for (name, path, auth) in [
        ("wrong-password", "/finesse/api/s7", bad.clone()),
        ("unknown-user", "/finesse/api/s8", basic("mallory", "pw")),
        ("bearer-on-basic-service", "/finesse/api/s9", bearer.clone()),
        ("basic-on-jwt-service", "/cuic/s10", good.clone()),
        ("empty", "/finesse/api/s11", String::new()),
        ("garbage", "/finesse/api/s12", "Basic %%%".to_string()),
        ("scheme-only", "/finesse/api/s13", "Basic".to_string()),
        ("no-colon", "/finesse/api/s14", format!("Basic {}", base64_of("alicepw"))),
        ("empty-user", "/finesse/api/s15", basic("", "pw")),
    ] {
        out.push(Case::new(format!("single/{name}"), with_auth("GET", path, EDGE_HOST, &[&auth], b""), Expect::status(401)));
    }

    // Public paths: the edge validated nothing, so the upstream gets no Authorization.
    for (name, path, auth) in [
        ("good", "/desktop/assets/p1.js", good.clone()),
        ("wrong-password", "/desktop/assets/p2.js", bad.clone()),
        ("bearer-junk", "/desktop/assets/p3.js", "Bearer not.a.token".to_string()),
        ("favicon-good", "/favicon.ico?p=4", good.clone()),
        ("canonicalised", "/desktop/assets/%2e/p5.js", good.clone()),
    ] {
        let target = path.replace("/%2e/", "/");
        out.push(Case::new(
            format!("public/{name}"),
            with_auth("GET", path, EDGE_HOST, &[&auth], b""),
            Expect::status(200).forwarded(tomcat("GET", &target, Authz::Absent)),
        ));
    }
    out.push(Case::new(
        "public/post-with-credentials",
        with_auth("POST", "/desktop/assets/p6", EDGE_HOST, &[&good], b"abc"),
        Expect::status(200).forwarded(tomcat("POST", "/desktop/assets/p6", Authz::Absent).body(3)),
    ));
    out.push(Case::new(
        "public/h2-good",
        h2_with_auth("/desktop/assets/p7.js", &[&good]),
        Expect::status(200).forwarded(tomcat("GET", "/desktop/assets/p7.js", Authz::Absent)),
    ));

    // WebSocket: authenticated by the protocol credential, the Authorization field is removed.
    let swp = |auth: &str| format!("xmpp, {}", protocol_credential(auth));
    let ws_seen = |path: &str, host: &str, upstream: &'static str| {
        Want::new(upstream, "GET", path, host, Authz::Absent).header("sec-websocket-protocol", HeaderWant::Exactly("xmpp".into()))
    };
    for (name, path, protocol, auths, expect) in [
        (
            "protocol-credential",
            "/finesse/ws/w1",
            Some(swp(&good)),
            vec![],
            Expect::status(200).forwarded(ws_seen("/finesse/ws/w1", EDGE_HOST, "tomcat")),
        ),
        (
            "protocol-credential+good-authorization",
            "/finesse/ws/w2",
            Some(swp(&good)),
            vec![good.clone()],
            Expect::status(200).forwarded(ws_seen("/finesse/ws/w2", EDGE_HOST, "tomcat")),
        ),
        (
            "protocol-credential+bad-authorization",
            "/finesse/ws/w3",
            Some(swp(&good)),
            vec![bad.clone()],
            Expect::status(200).forwarded(ws_seen("/finesse/ws/w3", EDGE_HOST, "tomcat")),
        ),
        (
            "protocol-credential+bearer-authorization",
            "/finesse/ws/w4",
            Some(swp(&good)),
            vec![bearer.clone()],
            Expect::status(200).forwarded(ws_seen("/finesse/ws/w4", EDGE_HOST, "tomcat")),
        ),
        (
            "protocol-credential+two-authorizations",
            "/finesse/ws/w5",
            Some(swp(&good)),
            vec![good.clone(), good.clone()],
            Expect::status(400),
        ),
        ("authorization-only", "/finesse/ws/w6", Some("xmpp".to_string()), vec![good.clone()], Expect::status(401)),
        ("authorization-only-no-protocol", "/finesse/ws/w7", None, vec![good.clone()], Expect::status(401)),
        ("bad-protocol-credential+good-authorization", "/finesse/ws/w8", Some(swp(&bad)), vec![good.clone()], Expect::status(401)),
        (
            "malformed-protocol-credential",
            "/finesse/ws/w9",
            Some("xmpp, Authorization%ZZgarbage".to_string()),
            vec![good.clone()],
            Expect::status(401),
        ),
        (
            "two-protocol-credentials",
            "/finesse/ws/w10",
            Some(format!("xmpp, {}, {}", protocol_credential(&good), protocol_credential(&good))),
            vec![],
            Expect::status(401),
        ),
        ("no-credential", "/finesse/ws/w11", Some("xmpp".to_string()), vec![], Expect::status(401)),
        (
            "hosted-protocol-credential+authorization",
            "/w12",
            Some(swp(&good)),
            vec![good.clone()],
            Expect::status(200).forwarded(ws_seen("/w12", DESKTOP_HOST, "hosted")),
        ),
        (
            "cuic-protocol-credential+authorization",
            "/cuic/ws/w13",
            Some(swp(&bearer)),
            vec![bearer.clone()],
            Expect::status(200).forwarded(ws_seen("/cuic/ws/w13", EDGE_HOST, "cuic")),
        ),
        (
            "credential-only-element",
            "/finesse/ws/w14",
            Some(protocol_credential(&good)),
            vec![good.clone()],
            Expect::status(200).forwarded(
                Want::new("tomcat", "GET", "/finesse/ws/w14", EDGE_HOST, Authz::Absent)
                    .header("sec-websocket-protocol", HeaderWant::Absent),
            ),
        ),
        (
            "public-path+authorization",
            "/desktop/assets/ws/w15",
            Some("xmpp".to_string()),
            vec![good.clone()],
            Expect::status(200).forwarded(Want::new("tomcat", "GET", "/desktop/assets/ws/w15", EDGE_HOST, Authz::Absent)),
        ),
    ] {
        let host = if name.starts_with("hosted") { DESKTOP_HOST } else { EDGE_HOST };
        let auths: Vec<&str> = auths.iter().map(String::as_str).collect();
        out.push(Case::new(format!("websocket/{name}"), upgrade(path, host, protocol.as_deref(), &auths), expect));
    }
    out
}

fn base64_of(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[tokio::test]
async fn hostile_credentials() {
    let mut report = Report::new("credentials");
    run_tables(&mut report, &Options::default(), &cases()).await;
    report.finish();
}
