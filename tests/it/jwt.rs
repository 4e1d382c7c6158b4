//! JWT bearer tokens at the edge against an in-process JWKS server: RS256 and ES256 keys,
//! rotation, unknown-kid floods, and every way a token can be wrong.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};

use crate::support::client::h1;
use crate::support::{TestEdge, Upstream, eventually};

pub const ISSUER: &str = "https://ids.test";
pub const AUDIENCE: &str = "finesse";
const SECRET: &str = "an-hs256-secret-of-at-least-32-bytes!!";

pub struct Signer {
    kid: String,
    alg: Algorithm,
    key: EncodingKey,
    /// The raw Ed25519 public key (jsonwebtoken cannot build an OKP JWK itself).
    ed25519_public: Option<Vec<u8>>,
}

impl Signer {
    pub fn new(kid: &str, alg: Algorithm) -> Signer {
        let rc_alg = match alg {
            Algorithm::RS256 => &rcgen::PKCS_RSA_SHA256,
            Algorithm::EdDSA => &rcgen::PKCS_ED25519,
            _ => &rcgen::PKCS_ECDSA_P256_SHA256,
        };
        let pair = rcgen::KeyPair::generate_for(rc_alg).unwrap();
        let pem = pair.serialize_pem();
        let key = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(pem.as_bytes()).unwrap(),
            _ => EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
        };
        let ed25519_public = (alg == Algorithm::EdDSA).then(|| pair.public_key_raw().to_vec());
        Signer { kid: kid.into(), alg, key, ed25519_public }
    }

    pub fn jwk(&self) -> Jwk {
        if let Some(public) = &self.ed25519_public {
            let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(public);
            return serde_json::from_value(serde_json::json!({ "kty": "OKP", "crv": "Ed25519", "x": x, "kid": self.kid, "alg": "EdDSA" }))
                .unwrap();
        }
        let mut jwk = Jwk::from_encoding_key(&self.key, self.alg).unwrap();
        jwk.common.key_id = Some(self.kid.clone());
        jwk
    }

    pub fn token(&self, claims: serde_json::Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.key).unwrap()
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

pub fn claims(user: &str) -> serde_json::Value {
    serde_json::json!({ "sub": user, "iss": ISSUER, "aud": AUDIENCE, "exp": now() + 600, "nbf": now() - 10 })
}

#[derive(Clone)]
pub struct Jwks {
    pub addr: SocketAddr,
    body: Arc<Mutex<String>>,
    fetches: Arc<AtomicUsize>,
}

impl Jwks {
    pub async fn start(keys: Vec<Jwk>) -> Jwks {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let jwks = Jwks { addr: listener.local_addr().unwrap(), body: Arc::default(), fetches: Arc::default() };
        jwks.publish(keys);
        let server = jwks.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let j = server.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |_req| {
                        let j = j.clone();
                        async move {
                            j.fetches.fetch_add(1, Ordering::SeqCst);
                            let body = j.body.lock().unwrap().clone();
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from(body))))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), service).await;
                });
            }
        });
        jwks
    }

    pub fn publish(&self, keys: Vec<Jwk>) {
        *self.body.lock().unwrap() = serde_json::to_string(&JwkSet { keys }).unwrap();
    }

    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    /// The key ids of the published set, sorted (as the edge's `key_ids` lists them).
    pub fn key_ids(&self) -> Vec<String> {
        let set: JwkSet = serde_json::from_str(&self.body.lock().unwrap()).unwrap();
        let mut ids: Vec<String> = set.keys.into_iter().filter_map(|k| k.common.key_id).collect();
        ids.sort();
        ids
    }
}

async fn edge(up: &Upstream, jwks: &Jwks, extra: &str) -> crate::support::RunningEdge {
    let edge = TestEdge::new()
        .proxy("cuic", "/", &[(up.addr, 1, 0)], "auth = \"jwt\"")
        // These tests send many bad tokens from one address: keep the shield out of the way.
        .raw("[protection.categories.http-auth-failure]\nenabled = false\n")
        .raw(&format!(
            "[auth.jwt]\njwks_url = \"http://{}/keys\"\nissuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\nleeway = \"0s\"\n{extra}",
            jwks.addr
        ))
        .start()
        .await;
    assert!(eventually(Duration::from_secs(3), || jwks.fetches() >= 1).await, "JWKS fetched at start");
    // A fetch is counted when it starts: wait until the published keys are the ones in use.
    let published = jwks.key_ids();
    let in_use = || edge.running().edge.gateway.load().auth.jwt().is_some_and(|j| j.jwks_fetches() >= 1 && j.key_ids() == published);
    assert!(eventually(Duration::from_secs(3), in_use).await, "the edge never used the published keys {published:?}");
    edge
}

async fn bearer(addr: SocketAddr, token: &str) -> u16 {
    h1(addr, "GET", "/reports", &[("authorization", &format!("Bearer {token}"))], Bytes::new()).await.status
}

#[tokio::test]
async fn rs256_and_es256_tokens_from_the_jwks_are_accepted_and_cached() {
    let up = Upstream::start("cuic").await;
    let rsa = Signer::new("rsa-1", Algorithm::RS256);
    let ec = Signer::new("ec-1", Algorithm::ES256);
    let jwks = Jwks::start(vec![rsa.jwk(), ec.jwk()]).await;
    let edge = edge(&up, &jwks, "").await;
    let rs_token = rsa.token(claims("agent1"));
    let es_token = ec.token(claims("agent2"));
    for _ in 0..3 {
        assert_eq!(bearer(edge.http, &rs_token).await, 200);
        assert_eq!(bearer(edge.http, &es_token).await, 200);
    }
    assert_eq!(up.hits(), 6);
    assert_eq!(jwks.fetches(), 1, "known keys need no fetch");
    let reply = h1(edge.http, "GET", "/reports", &[], Bytes::new()).await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.headers["www-authenticate"], "Bearer realm=\"portcullis\"");
    edge.stop().await;
}

#[tokio::test]
async fn eddsa_tokens_from_an_okp_jwks_key_are_accepted_and_forgeries_refused() {
    let up = Upstream::start("cuic").await;
    let ed = Signer::new("ed-1", Algorithm::EdDSA);
    let impostor = Signer::new("ed-1", Algorithm::EdDSA);
    let jwks = Jwks::start(vec![ed.jwk()]).await;
    let edge = edge(&up, &jwks, "").await;
    assert_eq!(bearer(edge.http, &ed.token(claims("agent3"))).await, 200);
    // Same kid, another Ed25519 key: the signature does not verify.
    assert_eq!(bearer(edge.http, &impostor.token(claims("agent3"))).await, 401);
    // A payload changed after signing.
    let token = ed.token(claims("agent3"));
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims("admin")).unwrap());
    assert_eq!(bearer(edge.http, &parts.join(".")).await, 401);
    // An EdDSA key cannot verify a token that claims another algorithm.
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("ed-1".into());
    let es = Signer::new("x", Algorithm::ES256);
    assert_eq!(bearer(edge.http, &jsonwebtoken::encode(&header, &claims("agent3"), &es.key).unwrap()).await, 401);
    assert_eq!(up.hits(), 1, "only the genuine token reached the upstream");
    edge.stop().await;
}

#[tokio::test]
async fn forged_expired_and_misaddressed_tokens_are_refused() {
    let up = Upstream::start("cuic").await;
    let rsa = Signer::new("rsa-1", Algorithm::RS256);
    let jwks = Jwks::start(vec![rsa.jwk()]).await;
    let edge = edge(&up, &jwks, "").await;
    let b64 = |v: &serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());

    let alg_none = format!("{}.{}.", b64(&serde_json::json!({"alg": "none", "typ": "JWT", "kid": "rsa-1"})), b64(&claims("x")));
    assert_eq!(bearer(edge.http, &alg_none).await, 401, "alg none");
    // Algorithm confusion: HS256 "signed" with the RSA public key material as the secret.
    let public = serde_json::to_vec(&rsa.jwk()).unwrap();
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("rsa-1".into());
    let confused = jsonwebtoken::encode(&header, &claims("x"), &EncodingKey::from_secret(&public)).unwrap();
    assert_eq!(bearer(edge.http, &confused).await, 401, "HS/RS confusion");
    let mut expired = claims("x");
    expired["exp"] = serde_json::json!(now() - 5);
    assert_eq!(bearer(edge.http, &rsa.token(expired)).await, 401, "expired");
    let mut early = claims("x");
    early["nbf"] = serde_json::json!(now() + 300);
    assert_eq!(bearer(edge.http, &rsa.token(early)).await, 401, "not yet valid");
    let mut wrong_iss = claims("x");
    wrong_iss["iss"] = serde_json::json!("https://evil.test");
    assert_eq!(bearer(edge.http, &rsa.token(wrong_iss)).await, 401, "wrong issuer");
    let mut wrong_aud = claims("x");
    wrong_aud["aud"] = serde_json::json!("other");
    assert_eq!(bearer(edge.http, &rsa.token(wrong_aud)).await, 401, "wrong audience");
    let mut no_exp = claims("x");
    no_exp.as_object_mut().unwrap().remove("exp");
    assert_eq!(bearer(edge.http, &rsa.token(no_exp)).await, 401, "exp is required");
    let good = rsa.token(claims("agent1"));
    let parts: Vec<&str> = good.split('.').collect();
    let mut payload = claims("admin");
    payload["exp"] = serde_json::json!(now() + 600);
    let tampered = format!("{}.{}.{}", parts[0], b64(&payload), parts[2]);
    assert_eq!(bearer(edge.http, &tampered).await, 401, "tampered payload");
    assert_eq!(bearer(edge.http, "not.a.jwt").await, 401, "garbage");
    assert_eq!(up.hits(), 0, "nothing reached the service");
    assert_eq!(bearer(edge.http, &good).await, 200);
    let metrics = edge.running().runtime.metrics.encode();
    for reason in ["token expired", "token not yet valid", "wrong issuer", "wrong audience", "bad signature"] {
        assert!(metrics.contains(&format!("portcullis_auth_failures_total{{reason=\"{reason}\"}} 1")), "{reason}: {metrics}");
    }
    edge.stop().await;
}

#[tokio::test]
async fn rotated_keys_are_picked_up_without_restart_and_old_ones_removed() {
    let up = Upstream::start("cuic").await;
    let old = Signer::new("k1", Algorithm::ES256);
    let new = Signer::new("k2", Algorithm::ES256);
    let jwks = Jwks::start(vec![old.jwk()]).await;
    let edge = edge(&up, &jwks, "").await;
    let old_token = old.token(claims("agent1"));
    assert_eq!(bearer(edge.http, &old_token).await, 200);
    jwks.publish(vec![new.jwk()]);
    // A token signed with the new kid triggers one refresh and is accepted.
    assert_eq!(bearer(edge.http, &new.token(claims("agent2"))).await, 200);
    assert_eq!(jwks.fetches(), 2);
    // The old key is gone: a fresh token with it is refused (its cached token expires on its own).
    assert_eq!(bearer(edge.http, &old.token(claims("agent3"))).await, 401);
    edge.stop().await;
}

#[tokio::test]
async fn a_flood_of_random_kids_causes_a_bounded_number_of_jwks_fetches() {
    let up = Upstream::start("cuic").await;
    let real = Signer::new("real", Algorithm::ES256);
    let jwks = Jwks::start(vec![real.jwk()]).await;
    let edge = edge(&up, &jwks, "").await;
    for i in 0..60 {
        let forger =
            Signer { kid: format!("random-{i}"), alg: Algorithm::ES256, key: Signer::new("x", Algorithm::ES256).key, ed25519_public: None };
        assert_eq!(bearer(edge.http, &forger.token(claims("x"))).await, 401);
    }
    assert!(jwks.fetches() <= 2, "initial fetch + at most one unknown-kid refresh per interval, got {}", jwks.fetches());
    edge.stop().await;
}

#[tokio::test]
async fn hs256_tokens_need_the_configured_secret() {
    let up = Upstream::start("cuic").await;
    let edge = TestEdge::new()
        .proxy("cuic", "/", &[(up.addr, 1, 0)], "auth = \"basic_or_jwt\"")
        .raw(&format!("[auth.jwt]\nsecret = \"{SECRET}\"\n[auth.basic]\nvalidate_url = \"http://127.0.0.1:9/auth\"\n"))
        .start()
        .await;
    let header = Header::new(Algorithm::HS256);
    let claims = serde_json::json!({"sub": "agent1", "exp": now() + 60});
    let good = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap();
    let bad = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(b"another-secret-of-at-least-32-bytes!!")).unwrap();
    assert_eq!(bearer(edge.http, &good).await, 200);
    assert_eq!(bearer(edge.http, &bad).await, 401);
    edge.stop().await;
}

impl Signer {
    /// A token with a hand-written header (any JSON), signed with this signer's key.
    pub fn token_with_header(&self, header: serde_json::Value, claims: &serde_json::Value) -> String {
        let b64 = |v: &serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let message = format!("{}.{}", b64(&header), b64(claims));
        let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &self.key, self.alg).unwrap();
        format!("{message}.{signature}")
    }
}

#[tokio::test]
async fn tokens_without_the_configured_iss_or_aud_with_an_array_iss_or_a_crit_header_are_refused() {
    let up = Upstream::start("cuic").await;
    let rsa = Signer::new("rsa-1", Algorithm::RS256);
    let jwks = Jwks::start(vec![rsa.jwk()]).await;
    let edge = edge(&up, &jwks, "").await;
    let without = |claim: &str| {
        let mut c = claims("x");
        c.as_object_mut().unwrap().remove(claim);
        c
    };
    assert_eq!(bearer(edge.http, &rsa.token(without("iss"))).await, 401, "issuer configured: iss required");
    assert_eq!(bearer(edge.http, &rsa.token(without("aud"))).await, 401, "audience configured: aud required");
    let mut array_iss = claims("x");
    array_iss["iss"] = serde_json::json!([ISSUER]);
    assert_eq!(bearer(edge.http, &rsa.token(array_iss)).await, 401, "iss is one string, never an array");
    let mut number_iss = claims("x");
    number_iss["iss"] = serde_json::json!(7);
    assert_eq!(bearer(edge.http, &rsa.token(number_iss)).await, 401, "iss of another type");
    let mut crit = Header::new(Algorithm::RS256);
    crit.kid = Some("rsa-1".into());
    crit.crit = Some(vec!["exp".into()]);
    assert_eq!(bearer(edge.http, &jsonwebtoken::encode(&crit, &claims("x"), &rsa.key).unwrap()).await, 401, "crit [\"exp\"]");
    for value in [serde_json::json!([]), serde_json::json!("b64"), serde_json::json!(null)] {
        let header = serde_json::json!({ "alg": "RS256", "typ": "JWT", "kid": "rsa-1", "crit": value });
        assert_eq!(bearer(edge.http, &rsa.token_with_header(header, &claims("x"))).await, 401, "crit {value}");
    }
    assert_eq!(up.hits(), 0, "nothing reached the service");
    // A well-formed token passes, `aud` as an array naming the audience too; a hand-written
    // header without `crit` is accepted, so the refusals above are about `crit` alone.
    let mut array_aud = claims("agent1");
    array_aud["aud"] = serde_json::json!(["other", AUDIENCE]);
    assert_eq!(bearer(edge.http, &rsa.token(array_aud)).await, 200);
    let header = serde_json::json!({ "alg": "RS256", "typ": "JWT", "kid": "rsa-1" });
    assert_eq!(bearer(edge.http, &rsa.token_with_header(header, &claims("agent2"))).await, 200);
    let metrics = edge.running().runtime.metrics.encode();
    for (reason, count) in [("missing issuer", 1), ("missing audience", 1), ("issuer not a string", 2), ("critical header extension", 4)] {
        assert!(metrics.contains(&format!("portcullis_auth_failures_total{{reason=\"{reason}\"}} {count}")), "{reason}: {metrics}");
    }
    edge.stop().await;
}

#[tokio::test]
async fn without_issuer_and_audience_configured_iss_and_aud_are_optional_but_typed() {
    let up = Upstream::start("cuic").await;
    let edge = TestEdge::new()
        .proxy("cuic", "/", &[(up.addr, 1, 0)], "auth = \"jwt\"")
        .raw("[protection.categories.http-auth-failure]\nenabled = false\n")
        .raw(&format!("[auth.jwt]\nsecret = \"{SECRET}\"\n"))
        .start()
        .await;
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    let sign = |claims: serde_json::Value| jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap();
    assert_eq!(bearer(edge.http, &sign(serde_json::json!({"sub": "agent1", "exp": now() + 60}))).await, 200);
    assert_eq!(bearer(edge.http, &sign(serde_json::json!({"sub": "agent1", "iss": ["a"], "exp": now() + 60}))).await, 401);
    assert_eq!(bearer(edge.http, &sign(serde_json::json!({"sub": "agent1", "aud": 5, "exp": now() + 60}))).await, 401);
    assert_eq!(up.hits(), 1);
    edge.stop().await;
}
