//! JWT bearer tokens validated at the edge (DESIGN §2): HS256/384/512 with the configured
//! secret; RS*/PS*, ES256/384 and EdDSA with public keys from a JWKS URI, fetched at start,
//! refreshed every `jwks_refresh` and on an unknown `kid` (at most once per
//! [`UNKNOWN_KID_REFRESH_INTERVAL`], so a flood of random `kid`s cannot hammer the identity
//! server). `exp` is required; `exp`/`nbf` are checked with `leeway`. With `issuer`
//! configured a token must carry `iss` equal to it; with `audience` configured it must carry
//! `aud` naming it. Valid tokens are cached (HMAC key) until they expire.
//!
//! Before any key is looked up, [`precheck`] reads the token's own JSON (a pure function on
//! the raw bytes, so a fuzz target can call it directly): a header with `crit` is refused (we implement no JWS
//! extension, RFC 7515 §4.1.11); `iss`, when present, must be one JSON string (RFC 7519
//! StringOrURI — an array is refused even if it holds the issuer); `aud`, when present, a
//! string or an array of strings; duplicate member names are refused. jsonwebtoken alone
//! checks `iss`/`aud` only when present and well-typed.
//!
//! Threat model: forged tokens. `alg: none` is never accepted (the library has no such
//! algorithm); a token's algorithm must match the family of the key that verifies it, so
//! an HS256 token signed with a public key as "secret" is refused (algorithm confusion);
//! symmetric (`oct`) keys from a JWKS are ignored — only `secret` enables HMAC tokens.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine;
use http::HeaderMap;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use tokio::time::Instant;

use super::basic::Outcome;
use super::cache::{CredentialCache, Digest};
use crate::config::JwtSettings;
use crate::net::fetch::Fetcher;

/// Longest bearer token considered.
pub const MAX_TOKEN_BYTES: usize = 8192;
/// Unknown-`kid` JWKS refreshes happen at most this often.
pub const UNKNOWN_KID_REFRESH_INTERVAL: Duration = Duration::from_secs(10);
/// Longest a validated token stays cached, whatever its `exp`.
pub const MAX_TOKEN_CACHE: Duration = Duration::from_secs(3600);
/// Most keys kept from one JWKS.
pub const MAX_JWKS_KEYS: usize = 64;

/// Checks a token's header and claims JSON before any key is looked up or signature
/// verified: exactly three `.`-separated parts, header and payload base64url JSON objects
/// without duplicate member names, no `crit` header, `iss` a string (equal to `issuer` when
/// configured, and then required), `aud` a string or array of strings (naming `audience`
/// when configured, and then required). The error is the refusal reason (auth-failure
/// metric). Pure, never panics; reads at most [`MAX_TOKEN_BYTES`].
pub fn precheck(token: &[u8], issuer: Option<&str>, audience: Option<&str>) -> Result<(), &'static str> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err("token too long");
    }
    let mut parts = token.split(|&b| b == b'.');
    let (Some(header), Some(payload), Some(_signature), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err("malformed token");
    };
    let header = json_object(header).ok_or("malformed token")?;
    if header.contains_key("crit") {
        return Err("critical header extension");
    }
    let claims = json_object(payload).ok_or("malformed token")?;
    match (claims.get("iss"), issuer) {
        (None, Some(_)) => return Err("missing issuer"),
        (None, None) => {}
        (Some(serde_json::Value::String(iss)), Some(issuer)) if iss != issuer => return Err("wrong issuer"),
        (Some(serde_json::Value::String(_)), _) => {}
        (Some(_), _) => return Err("issuer not a string"),
    }
    let audiences: Option<Vec<&str>> = match claims.get("aud") {
        None => None,
        Some(serde_json::Value::String(aud)) => Some(vec![aud.as_str()]),
        Some(serde_json::Value::Array(list)) => {
            Some(list.iter().map(serde_json::Value::as_str).collect::<Option<Vec<&str>>>().ok_or("audience not a string or list")?)
        }
        Some(_) => return Err("audience not a string or list"),
    };
    match (audiences, audience) {
        (None, Some(_)) => Err("missing audience"),
        (Some(list), Some(audience)) if !list.contains(&audience) => Err("wrong audience"),
        _ => Ok(()),
    }
}

/// A base64url (unpadded) JSON object with unique member names; `None` otherwise.
fn json_object(part: &[u8]) -> Option<serde_json::Map<String, serde_json::Value>> {
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).ok()?;
    serde_json::from_slice::<UniqueObject>(&json).ok().map(|object| object.0)
}

/// A JSON object that refuses duplicate member names (RFC 7515 §4 and RFC 7519 §4 allow
/// refusing; a parser that kept the first would disagree with one that kept the last).
struct UniqueObject(serde_json::Map<String, serde_json::Value>);

impl<'de> serde::Deserialize<'de> for UniqueObject {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> serde::de::Visitor<'de> for Members {
            type Value = UniqueObject;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<UniqueObject, A::Error> {
                let mut members = serde_json::Map::new();
                while let Some((name, value)) = map.next_entry::<String, serde_json::Value>()? {
                    if members.insert(name, value).is_some() {
                        return Err(serde::de::Error::custom("duplicate member name"));
                    }
                }
                Ok(UniqueObject(members))
            }
        }
        deserializer.deserialize_map(Members)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Hmac,
    Rsa,
    Ec,
    Okp,
    /// Algorithms added to the library later: refused until reviewed.
    Unsupported,
}

fn family(alg: Algorithm) -> Family {
    match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => Family::Hmac,
        Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 | Algorithm::PS256 | Algorithm::PS384 | Algorithm::PS512 => Family::Rsa,
        Algorithm::ES256 | Algorithm::ES384 => Family::Ec,
        Algorithm::EdDSA => Family::Okp,
        _ => Family::Unsupported,
    }
}

struct Key {
    key: DecodingKey,
    family: Family,
}

#[derive(serde::Deserialize)]
struct Claims {
    sub: Option<String>,
    preferred_username: Option<String>,
    upn: Option<String>,
    exp: Option<u64>,
}

/// JWT validation state.
pub struct JwtAuth {
    settings: JwtSettings,
    secret: Option<DecodingKey>,
    keys: RwLock<Arc<HashMap<String, Key>>>,
    fetcher: Fetcher,
    cache: CredentialCache,
    /// When the last unknown-`kid` refresh ran.
    last_unknown_refresh: std::sync::Mutex<Option<Instant>>,
    /// Serializes JWKS fetches (concurrent unknown `kid`s share one).
    fetching: tokio::sync::Mutex<()>,
    fetches: AtomicUsize,
}

impl JwtAuth {
    /// JWT validation for `settings`.
    /// The token cache is keyed like `keys` (the authenticator's session keys): a cached
    /// request's one digest serves both.
    pub fn new(settings: JwtSettings, keys: &CredentialCache) -> JwtAuth {
        JwtAuth {
            secret: settings.secret.as_ref().map(|s| DecodingKey::from_secret(s.as_bytes())),
            settings,
            keys: RwLock::new(Arc::new(HashMap::new())),
            fetcher: Fetcher::new(Duration::from_secs(5)),
            cache: keys.sharing_key(MAX_TOKEN_CACHE),
            last_unknown_refresh: std::sync::Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
            fetches: AtomicUsize::new(0),
        }
    }

    /// JWKS fetches so far (status and tests).
    pub fn jwks_fetches(&self) -> usize {
        self.fetches.load(Ordering::Relaxed)
    }

    /// Replaces the key set from `jwks_url`; a failed fetch keeps the previous keys. Returns
    /// the JWKS document that was applied (for the other peers of a cluster).
    pub async fn refresh_keys(&self) -> Option<Vec<u8>> {
        let url = self.settings.jwks_url.as_ref()?;
        let _one_at_a_time = self.fetching.lock().await;
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let answer = match self.fetcher.get(url, HeaderMap::new()).await {
            Ok(answer) if answer.status.is_success() => answer,
            Ok(answer) => {
                tracing::warn!("JWKS {url} answered {}; keeping the previous keys", answer.status);
                return None;
            }
            Err(error) => {
                tracing::warn!("JWKS {url} failed: {error}; keeping the previous keys");
                return None;
            }
        };
        self.apply_jwks(&answer.body).then(|| answer.body.to_vec())
    }

    /// Replaces the key set with the JWK set `body` (fetched here, or by the cluster's
    /// primary); false (keys kept) when it is not a JWK set.
    pub fn apply_jwks(&self, body: &[u8]) -> bool {
        let set: JwkSet = match serde_json::from_slice(body) {
            Ok(set) => set,
            Err(error) => {
                tracing::warn!("JWKS is not a JWK set ({error}); keeping the previous keys");
                return false;
            }
        };
        let mut keys = HashMap::new();
        for jwk in set.keys.iter().take(MAX_JWKS_KEYS) {
            let Some(kid) = jwk.common.key_id.clone() else { continue };
            let family = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => Family::Rsa,
                AlgorithmParameters::EllipticCurve(_) => Family::Ec,
                AlgorithmParameters::OctetKeyPair(_) => Family::Okp,
                // Symmetric keys never come from a JWKS (algorithm-confusion guard).
                _ => continue,
            };
            if let Ok(key) = DecodingKey::from_jwk(jwk) {
                keys.insert(kid, Key { key, family });
            }
        }
        tracing::info!("JWKS: {} keys", keys.len());
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
        true
    }

    /// Key ids in use (status and tests).
    pub fn key_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.keys.read().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect();
        ids.sort();
        ids
    }

    /// A refresh for an unknown `kid`, unless one ran within the interval.
    async fn refresh_for_unknown_kid(&self) {
        {
            let mut last = self.last_unknown_refresh.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|at| at.elapsed() < UNKNOWN_KID_REFRESH_INTERVAL) {
                return;
            }
            *last = Some(Instant::now());
        }
        let _ = self.refresh_keys().await;
    }

    fn find_key(&self, kid: &str) -> Option<(DecodingKey, Family)> {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner()).clone();
        keys.get(kid).map(|k| (k.key.clone(), k.family))
    }

    /// The user of this bearer token when it is cached as valid.
    pub fn cached_user(&self, length: usize, digest: &Digest) -> Option<Arc<str>> {
        (length <= MAX_TOKEN_BYTES).then(|| self.cache.lookup(digest))?
    }

    /// Authenticates one bearer token.
    pub async fn authenticate(&self, token: &[u8]) -> Outcome {
        if token.len() > MAX_TOKEN_BYTES {
            return Outcome::Refused { user: None, reason: "token too long" };
        }
        let digest = self.cache.digest(token);
        if let Some(user) = self.cache.lookup(&digest) {
            return Outcome::Allowed(user);
        }
        if let Err(reason) = precheck(token, self.settings.issuer.as_deref(), self.settings.audience.as_deref()) {
            return Outcome::Refused { user: None, reason };
        }
        let Ok(header) = jsonwebtoken::decode_header(token) else {
            return Outcome::Refused { user: None, reason: "malformed token" };
        };
        let wanted = family(header.alg);
        let key = match wanted {
            Family::Unsupported => return Outcome::Refused { user: None, reason: "algorithm not allowed" },
            Family::Hmac => match &self.secret {
                Some(secret) => secret.clone(),
                None => return Outcome::Refused { user: None, reason: "algorithm not allowed" },
            },
            _ => {
                let Some(kid) = header.kid.as_deref() else { return Outcome::Refused { user: None, reason: "token without kid" } };
                let found = match self.find_key(kid) {
                    Some(found) => Some(found),
                    None => {
                        self.refresh_for_unknown_kid().await;
                        self.find_key(kid)
                    }
                };
                match found {
                    Some((key, family)) if family == wanted => key,
                    Some(_) => return Outcome::Refused { user: None, reason: "algorithm does not match key" },
                    None => return Outcome::Refused { user: None, reason: "unknown key id" },
                }
            }
        };
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.settings.leeway.as_secs();
        validation.validate_nbf = true;
        // `precheck` already required them; the library checks again (belt and braces).
        match &self.settings.issuer {
            Some(issuer) => {
                validation.set_issuer(&[issuer]);
                validation.required_spec_claims.insert("iss".to_string());
            }
            None => validation.iss = None,
        }
        match &self.settings.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                validation.required_spec_claims.insert("aud".to_string());
            }
            None => validation.validate_aud = false,
        }
        let claims = match jsonwebtoken::decode::<Claims>(token, &key, &validation) {
            Ok(data) => data.claims,
            Err(error) => {
                use jsonwebtoken::errors::ErrorKind;
                let reason = match error.kind() {
                    ErrorKind::ExpiredSignature => "token expired",
                    ErrorKind::ImmatureSignature => "token not yet valid",
                    ErrorKind::InvalidIssuer => "wrong issuer",
                    ErrorKind::InvalidAudience => "wrong audience",
                    ErrorKind::InvalidSignature => "bad signature",
                    ErrorKind::MissingRequiredClaim(_) => "missing claim",
                    _ => "invalid token",
                };
                return Outcome::Refused { user: None, reason };
            }
        };
        let user: Arc<str> = Arc::from(claims.preferred_username.or(claims.upn).or(claims.sub).unwrap_or_else(|| "-".to_string()).as_str());
        let now = crate::clock::unix_secs();
        let remaining = Duration::from_secs(claims.exp.unwrap_or(now).saturating_sub(now));
        if !remaining.is_zero() {
            self.cache.insert_for(digest, user.clone(), remaining.min(MAX_TOKEN_CACHE));
        }
        Outcome::Allowed(user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISS: &str = "https://ids.test";
    const AUD: &str = "finesse";

    fn b64(json: &str) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    fn token(header: &str, claims: &str) -> Vec<u8> {
        format!("{}.{}.c2lnbmF0dXJl", b64(header), b64(claims)).into_bytes()
    }

    const HEADER: &str = r#"{"alg":"RS256","typ":"JWT","kid":"k1"}"#;

    fn check(claims: &str) -> Result<(), &'static str> {
        precheck(&token(HEADER, claims), Some(ISS), Some(AUD))
    }

    #[test]
    fn configured_issuer_and_audience_are_required() {
        assert_eq!(check(r#"{"sub":"a","iss":"https://ids.test","aud":"finesse","exp":1}"#), Ok(()));
        assert_eq!(check(r#"{"sub":"a","aud":"finesse","exp":1}"#), Err("missing issuer"));
        assert_eq!(check(r#"{"sub":"a","iss":"https://ids.test","exp":1}"#), Err("missing audience"));
        assert_eq!(check(r#"{"sub":"a","iss":null,"aud":"finesse"}"#), Err("issuer not a string"));
        assert_eq!(check(r#"{"sub":"a","iss":"https://ids.test","aud":null}"#), Err("audience not a string or list"));
        assert_eq!(check(r#"{"iss":"https://evil.test","aud":"finesse"}"#), Err("wrong issuer"));
        assert_eq!(check(r#"{"iss":"https://ids.test","aud":"other"}"#), Err("wrong audience"));
        // Not configured: not required.
        assert_eq!(precheck(&token(HEADER, r#"{"sub":"a","exp":1}"#), None, None), Ok(()));
        assert_eq!(precheck(&token(HEADER, r#"{"iss":"any","aud":"any"}"#), None, None), Ok(()));
    }

    #[test]
    fn iss_must_be_one_string_and_aud_a_string_or_a_list_of_strings() {
        assert_eq!(check(r#"{"iss":["https://ids.test"],"aud":"finesse"}"#), Err("issuer not a string"));
        assert_eq!(check(r#"{"iss":["https://ids.test","x"],"aud":"finesse"}"#), Err("issuer not a string"));
        assert_eq!(precheck(&token(HEADER, r#"{"iss":["https://ids.test"]}"#), None, None), Err("issuer not a string"));
        assert_eq!(check(r#"{"iss":{"a":1},"aud":"finesse"}"#), Err("issuer not a string"));
        assert_eq!(check(r#"{"iss":5,"aud":"finesse"}"#), Err("issuer not a string"));
        assert_eq!(check(r#"{"iss":"https://ids.test","aud":["other","finesse"]}"#), Ok(()));
        assert_eq!(check(r#"{"iss":"https://ids.test","aud":["other"]}"#), Err("wrong audience"));
        assert_eq!(check(r#"{"iss":"https://ids.test","aud":[]}"#), Err("wrong audience"));
        assert_eq!(check(r#"{"iss":"https://ids.test","aud":["finesse",1]}"#), Err("audience not a string or list"));
        assert_eq!(check(r#"{"iss":"https://ids.test","aud":5}"#), Err("audience not a string or list"));
        assert_eq!(precheck(&token(HEADER, r#"{"aud":{"finesse":true}}"#), None, None), Err("audience not a string or list"));
    }

    #[test]
    fn a_crit_header_of_any_value_is_refused() {
        let claims = r#"{"iss":"https://ids.test","aud":"finesse"}"#;
        for crit in [r#"["exp"]"#, "[]", r#""b64""#, "null", "0", "{}"] {
            let header = format!(r#"{{"alg":"RS256","kid":"k1","crit":{crit}}}"#);
            assert_eq!(precheck(&token(&header, claims), Some(ISS), Some(AUD)), Err("critical header extension"), "{crit}");
            assert_eq!(precheck(&token(&header, claims), None, None), Err("critical header extension"), "{crit}");
        }
        // Other unknown header members are fine.
        assert_eq!(precheck(&token(r#"{"alg":"RS256","kid":"k1","x5t":"abc"}"#, claims), Some(ISS), Some(AUD)), Ok(()));
    }

    #[test]
    fn malformed_tokens_and_duplicate_members_are_refused() {
        let claims = r#"{"iss":"https://ids.test","aud":"finesse"}"#;
        let good = String::from_utf8(token(HEADER, claims)).unwrap();
        let (h, rest) = good.split_once('.').unwrap();
        let (c, _) = rest.split_once('.').unwrap();
        for bad in [
            String::new(),
            ".".into(),
            "..".into(),
            "a.b.c".into(),
            format!("{h}.{c}"),
            format!("{h}.{c}.sig.extra"),
            format!("{h}=.{c}.sig"),
            format!("{h}.{}.sig", b64("[1,2]")),
            format!("{}.{c}.sig", b64("\"alg\"")),
            format!("{h}.{}.sig", b64(r#"{"iss":"https://evil.test","iss":"https://ids.test","aud":"finesse"}"#)),
            format!("{}.{c}.sig", b64(r#"{"alg":"RS256","alg":"HS256"}"#)),
            format!("{h}.{}.sig", b64("{\"iss\":\"https://ids.test\",\"aud\":\"finesse\"")),
        ] {
            assert_eq!(precheck(bad.as_bytes(), Some(ISS), Some(AUD)), Err("malformed token"), "{bad}");
        }
        assert_eq!(precheck(&vec![b'a'; MAX_TOKEN_BYTES + 1], None, None), Err("token too long"));
    }

    #[test]
    fn precheck_never_panics_on_arbitrary_bytes() {
        // A small deterministic fuzz: random bytes, random base64url JSON-ish parts, deep nesting.
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let alphabet = b"{}[]\":,.0123456789-eE+ abcdefghijklmnopqrstuvwxyz\\\x00\xff\xc3";
        for round in 0..20_000 {
            let len = (next() % 96) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| alphabet[(next() % alphabet.len() as u64) as usize]).collect();
            let _ = precheck(&bytes, Some(ISS), Some(AUD));
            let part = b64(&String::from_utf8_lossy(&bytes));
            let _ = precheck(format!("{part}.{part}.{part}").as_bytes(), if round % 2 == 0 { Some(ISS) } else { None }, Some(AUD));
            let _ = precheck(format!("{}.{part}.x", b64(HEADER)).as_bytes(), Some(ISS), None);
        }
        let deep = format!("{}{}", "[".repeat(2500), "]".repeat(2500));
        let _ = precheck(format!("{}.{}.x", b64(HEADER), b64(&format!("{{\"iss\":{deep}}}"))).as_bytes(), Some(ISS), Some(AUD));
    }
}
