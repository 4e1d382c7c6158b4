//! Cost of validating a JWT that is not in the edge's cache yet: signature verification and
//! claim checks with the validation settings the edge uses (`auth/jwt.rs`), per algorithm.
//! Run: `cargo bench --bench jwt_verify` (prints µs per validation; single core).
//! Cached tokens skip all of this (one HMAC + one hash-map lookup).

#![allow(clippy::disallowed_types, reason = "wall-clock timing is the point of a benchmark")]
#![allow(clippy::unwrap_used, clippy::print_stdout, reason = "benchmark harness")]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};

fn main() {
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 3600;
    let claims = serde_json::json!({"sub": "agent1", "iss": "https://ids.bench", "aud": "bench", "exp": exp});
    let cases: Vec<(&str, Algorithm, EncodingKey, DecodingKey)> = vec![
        {
            let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
            let enc = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
            let dec = DecodingKey::from_jwk(&Jwk::from_encoding_key(&enc, Algorithm::ES256).unwrap()).unwrap();
            ("ES256", Algorithm::ES256, enc, dec)
        },
        {
            let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
            let enc = EncodingKey::from_rsa_pem(pair.serialize_pem().as_bytes()).unwrap();
            let dec = DecodingKey::from_jwk(&Jwk::from_encoding_key(&enc, Algorithm::RS256).unwrap()).unwrap();
            ("RS256 (2048)", Algorithm::RS256, enc, dec)
        },
        {
            let secret = b"an-hs256-secret-of-at-least-32-bytes!!";
            ("HS256", Algorithm::HS256, EncodingKey::from_secret(secret), DecodingKey::from_secret(secret))
        },
    ];
    println!("| algorithm | µs per uncached validation | validations/s on one core |");
    println!("|---|---:|---:|");
    for (name, alg, enc, dec) in cases {
        let token = jsonwebtoken::encode(&Header::new(alg), &claims, &enc).unwrap();
        let mut validation = Validation::new(alg);
        validation.leeway = 30;
        validation.validate_nbf = true;
        validation.set_issuer(&["https://ids.bench"]);
        validation.set_audience(&["bench"]);
        for _ in 0..200 {
            jsonwebtoken::decode::<serde_json::Value>(&token, &dec, &validation).unwrap();
        }
        let mut best = Duration::MAX;
        for _ in 0..5 {
            let n = 2000;
            let start = Instant::now();
            for _ in 0..n {
                std::hint::black_box(jsonwebtoken::decode::<serde_json::Value>(std::hint::black_box(&token), &dec, &validation).unwrap());
            }
            best = best.min(start.elapsed() / n);
        }
        println!("| {name} | {:.1} | {:.0} |", best.as_secs_f64() * 1e6, 1.0 / best.as_secs_f64());
    }
}
