//! JWT at the edge (contract 7): `cuic` accepts HS256 tokens signed with the configured
//! secret, issued by `https://ids.example.com` for audience `cuic`. Every way a token can be
//! wrong → 401 and nothing upstream; a correct token → 200 with exactly that Authorization
//! forwarded. Tokens are minted by hand (aws-lc-rs HMAC), so headers and claims can be
//! anything.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use serde_json::{Value, json};

use super::{AUDIENCE, Authz, Case, EDGE_HOST, Expect, ISSUER, JWT_SECRET, Options, Report, Want, get, good_basic, run_tables};

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn sign(input: &str, secret: &[u8]) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    b64(aws_lc_rs::hmac::sign(&key, input.as_bytes()).as_ref())
}

/// `header.claims.signature` (HS256 over the first two parts with `secret`).
pub fn token_with(header: &Value, claims: &Value, secret: &[u8]) -> String {
    let input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
    let signature = sign(&input, secret);
    format!("{input}.{signature}")
}

fn hs256() -> Value {
    json!({"alg": "HS256", "typ": "JWT"})
}

pub fn good_claims() -> Value {
    json!({"sub": "agent1", "iss": ISSUER, "aud": AUDIENCE, "exp": now() + 3600, "nbf": now() - 10, "iat": now() - 10})
}

/// A valid token for cuic (valid for an hour).
pub fn good_token() -> String {
    token_with(&hs256(), &good_claims(), JWT_SECRET.as_bytes())
}

fn claims_with(edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
    let mut claims = good_claims();
    edit(claims.as_object_mut().unwrap());
    claims
}

pub fn cases() -> Vec<Case> {
    let secret = JWT_SECRET.as_bytes();
    let good = good_token();
    let signed = |header: Value, claims: Value| token_with(&header, &claims, secret);
    let parts: Vec<String> = good.split('.').map(str::to_string).collect();
    let unsigned = |header: Value| format!("{}.{}.", b64(header.to_string().as_bytes()), parts[1]);
    let mut flipped_signature = parts[2].clone().into_bytes();
    flipped_signature[3] = if flipped_signature[3] == b'A' { b'B' } else { b'A' };
    let flipped_signature = String::from_utf8(flipped_signature).unwrap();

    let bad: Vec<(&str, String)> = vec![
        ("no-iss", signed(hs256(), claims_with(|c| drop(c.remove("iss"))))),
        ("no-aud", signed(hs256(), claims_with(|c| drop(c.remove("aud"))))),
        ("no-exp", signed(hs256(), claims_with(|c| drop(c.remove("exp"))))),
        ("iss-array-with-issuer", signed(hs256(), claims_with(|c| drop(c.insert("iss".into(), json!([ISSUER])))))),
        ("iss-array-two", signed(hs256(), claims_with(|c| drop(c.insert("iss".into(), json!([ISSUER, "https://evil.example"])))))),
        ("iss-null", signed(hs256(), claims_with(|c| drop(c.insert("iss".into(), Value::Null))))),
        ("iss-wrong", signed(hs256(), claims_with(|c| drop(c.insert("iss".into(), json!("https://evil.example")))))),
        ("iss-trailing-slash", signed(hs256(), claims_with(|c| drop(c.insert("iss".into(), json!(format!("{ISSUER}/"))))))),
        ("iss-case", signed(hs256(), claims_with(|c| drop(c.insert("iss".into(), json!(ISSUER.to_uppercase())))))),
        ("aud-wrong", signed(hs256(), claims_with(|c| drop(c.insert("aud".into(), json!("finesse")))))),
        ("aud-array-wrong", signed(hs256(), claims_with(|c| drop(c.insert("aud".into(), json!(["finesse", "other"])))))),
        ("aud-null", signed(hs256(), claims_with(|c| drop(c.insert("aud".into(), Value::Null))))),
        ("aud-number", signed(hs256(), claims_with(|c| drop(c.insert("aud".into(), json!(7)))))),
        ("expired", signed(hs256(), claims_with(|c| drop(c.insert("exp".into(), json!(now() - 3600)))))),
        ("exp-string", signed(hs256(), claims_with(|c| drop(c.insert("exp".into(), json!((now() + 3600).to_string())))))),
        ("not-yet-valid", signed(hs256(), claims_with(|c| drop(c.insert("nbf".into(), json!(now() + 3600)))))),
        ("crit-exp", signed(json!({"alg": "HS256", "typ": "JWT", "crit": ["exp"]}), good_claims())),
        ("crit-unknown", signed(json!({"alg": "HS256", "typ": "JWT", "crit": ["x-unknown"], "x-unknown": true}), good_claims())),
        ("crit-b64", signed(json!({"alg": "HS256", "crit": ["b64"], "b64": false}), good_claims())),
        ("crit-empty", signed(json!({"alg": "HS256", "crit": []}), good_claims())),
        ("alg-none", unsigned(json!({"alg": "none", "typ": "JWT"}))),
        ("alg-None", unsigned(json!({"alg": "None", "typ": "JWT"}))),
        ("alg-NONE", unsigned(json!({"alg": "NONE"}))),
        ("alg-none-with-signature", format!("{}.{}.{}", b64(json!({"alg": "none"}).to_string().as_bytes()), parts[1], parts[2])),
        ("alg-missing", signed(json!({"typ": "JWT"}), good_claims())),
        ("alg-lowercase", signed(json!({"alg": "hs256"}), good_claims())),
        ("alg-rs256-hmac-signature", signed(json!({"alg": "RS256"}), good_claims())),
        ("alg-es256-hmac-signature", signed(json!({"alg": "ES256"}), good_claims())),
        ("wrong-secret", token_with(&hs256(), &good_claims(), b"another-secret-of-at-least-32-bytes!!")),
        ("empty-signature", format!("{}.{}.", parts[0], parts[1])),
        ("truncated-signature", format!("{}.{}.{}", parts[0], parts[1], &parts[2][..parts[2].len() - 4])),
        ("flipped-signature", format!("{}.{}.{flipped_signature}", parts[0], parts[1])),
        ("padded-signature", format!("{}.{}.{}=", parts[0], parts[1], parts[2])),
        (
            "tampered-claims",
            format!(
                "{}.{}.{}",
                parts[0],
                b64(claims_with(|c| drop(c.insert("sub".into(), json!("admin")))).to_string().as_bytes()),
                parts[2]
            ),
        ),
        ("claims-not-json", {
            let input = format!("{}.{}", parts[0], b64(b"not json"));
            let signature = sign(&input, secret);
            format!("{input}.{signature}")
        }),
        ("header-not-json", {
            let input = format!("{}.{}", b64(b"{alg:HS256"), parts[1]);
            let signature = sign(&input, secret);
            format!("{input}.{signature}")
        }),
        ("two-parts", format!("{}.{}", parts[0], parts[1])),
        ("four-parts", format!("{good}.{}", parts[2])),
        ("jwe-shape", format!("{}.{}.{}.{}.{}", parts[0], parts[1], parts[2], parts[1], parts[2])),
        ("garbage", "not.a.token".to_string()),
    ];
    let mut out = Vec::new();
    let forwarded = |path: &str, value: &str| {
        Expect::status(200).forwarded(Want::new("cuic", "GET", path, EDGE_HOST, Authz::Exactly(value.to_string())))
    };
    out.push(Case::new(
        "valid/good",
        get("/cuic/jwt/good", EDGE_HOST, Some(&format!("Bearer {good}"))),
        forwarded("/cuic/jwt/good", &format!("Bearer {good}")),
    ));
    let fresh = token_with(&hs256(), &claims_with(|c| drop(c.insert("sub".into(), json!("agent2")))), secret);
    out.push(Case::new(
        "valid/second-token",
        get("/cuic/jwt/second", EDGE_HOST, Some(&format!("Bearer {fresh}"))),
        forwarded("/cuic/jwt/second", &format!("Bearer {fresh}")),
    ));
    for (name, token) in bad {
        out.push(Case::new(
            format!("invalid/{name}"),
            get(&format!("/cuic/jwt/{name}"), EDGE_HOST, Some(&format!("Bearer {token}"))),
            Expect::status(401),
        ));
    }
    out.push(Case::new("scheme/basic-on-jwt-service", get("/cuic/jwt/basic", EDGE_HOST, Some(&good_basic())), Expect::status(401)));
    out.push(Case::new("scheme/token-as-basic", get("/cuic/jwt/as-basic", EDGE_HOST, Some(&format!("Basic {good}"))), Expect::status(401)));
    out.push(Case::new("scheme/no-scheme", get("/cuic/jwt/no-scheme", EDGE_HOST, Some(&good)), Expect::status(401)));
    out.push(Case::new(
        "scheme/token-on-basic-service",
        get("/finesse/api/jwt", EDGE_HOST, Some(&format!("Bearer {good}"))),
        Expect::status(401),
    ));
    out.push(Case::new("scheme/no-credentials", get("/cuic/jwt/none", EDGE_HOST, None), Expect::status(401)));
    out
}

#[tokio::test]
async fn hostile_jwt() {
    let mut report = Report::new("jwt");
    run_tables(&mut report, &Options::default(), &cases()).await;
    report.finish();
}
