//! Tokens of every accepted algorithm, and every way a token is refused.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use sente_lite_auth::{JwtKeys, JwtVerifier, TokenError, MAX_GRANTS};
use serde_json::{json, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SECRET: &[u8] = b"a-test-secret-of-some-length";
const RSA_KEY: &[u8] = include_bytes!("keys/rsa.key");
const RSA_PUB: &[u8] = include_bytes!("keys/rsa.pub");
const EC_KEY: &[u8] = include_bytes!("keys/ec.key");
const EC_PUB: &[u8] = include_bytes!("keys/ec.pub");
const ED_KEY: &[u8] = include_bytes!("keys/ed.key");
const ED_PUB: &[u8] = include_bytes!("keys/ed.pub");

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hmac() -> JwtVerifier {
    JwtVerifier::new(JwtKeys {
        hmac_secret: Some(SECRET.to_vec()),
        leeway: Duration::from_secs(5),
        ..JwtKeys::default()
    })
    .unwrap()
}

fn public(pem: &[u8]) -> JwtVerifier {
    JwtVerifier::new(JwtKeys {
        public_key_pem: Some(pem.to_vec()),
        ..JwtKeys::default()
    })
    .unwrap()
}

fn sign(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    encode(&Header::new(alg), claims, key).unwrap()
}

fn hs(claims: &Value) -> String {
    sign(Algorithm::HS256, &EncodingKey::from_secret(SECRET), claims)
}

fn b64(s: &str) -> String {
    // base64url without padding, enough for hand-made tokens.
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let b = s.as_bytes();
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n =
            chunk.iter().fold(0u32, |acc, &x| acc << 8 | u32::from(x)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

#[test]
fn hmac_tokens_of_each_size_are_accepted_with_their_claims() {
    let v = hmac();
    for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        let claims = json!({"sub": "alice", "exp": now() + 60, "channels": ["chat:*"], "info": {"name": "Alice"}});
        let id = v
            .verify(&sign(alg, &EncodingKey::from_secret(SECRET), &claims))
            .unwrap();
        assert_eq!(id.user_id.as_deref(), Some("alice"));
        assert_eq!(id.channels, ["chat:*"]);
        assert_eq!(id.info, Some(json!({"name": "Alice"})));
        let exp_ms = i64::try_from((now() + 60) * 1000).unwrap();
        let at = id.expires_at_ms.unwrap();
        assert!(
            (exp_ms + 4_000..=exp_ms + 5_000).contains(&at),
            "exp plus the leeway: {at}"
        );
    }
}

#[test]
fn public_key_tokens_are_accepted() {
    let claims = json!({"sub": "svc"});
    let cases = [
        (
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(RSA_KEY).unwrap(),
            RSA_PUB,
        ),
        (
            Algorithm::PS256,
            EncodingKey::from_rsa_pem(RSA_KEY).unwrap(),
            RSA_PUB,
        ),
        (
            Algorithm::ES256,
            EncodingKey::from_ec_pem(EC_KEY).unwrap(),
            EC_PUB,
        ),
        (
            Algorithm::EdDSA,
            EncodingKey::from_ed_pem(ED_KEY).unwrap(),
            ED_PUB,
        ),
    ];
    for (alg, key, pem) in cases {
        let id = public(pem).verify(&sign(alg, &key, &claims)).unwrap();
        assert_eq!(id.user_id.as_deref(), Some("svc"), "{alg:?}");
        assert_eq!(id.expires_at_ms, None);
    }
}

#[test]
fn alg_none_is_refused() {
    let token = format!(
        "{}.{}.",
        b64(r#"{"alg":"none","typ":"JWT"}"#),
        b64(r#"{"sub":"mallory"}"#)
    );
    assert!(matches!(
        hmac().verify(&token),
        Err(TokenError::Malformed(_))
    ));
    let token = format!(
        "{}.{}.",
        b64(r#"{"alg":"None"}"#),
        b64(r#"{"sub":"mallory"}"#)
    );
    assert!(hmac().verify(&token).is_err());
}

#[test]
fn a_wrong_algorithm_for_the_key_is_refused() {
    let rsa = EncodingKey::from_rsa_pem(RSA_KEY).unwrap();
    // An RS256 token where only a secret is configured.
    let t = sign(Algorithm::RS256, &rsa, &json!({"sub": "a"}));
    assert_eq!(
        hmac().verify(&t),
        Err(TokenError::WrongAlgorithm(Algorithm::RS256))
    );
    // The classic confusion: HS256 signed with the public key's PEM as the secret.
    let t = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(RSA_PUB),
        &json!({"sub": "a"}),
    );
    assert_eq!(
        public(RSA_PUB).verify(&t),
        Err(TokenError::WrongAlgorithm(Algorithm::HS256))
    );
    // An ES256 token against an RSA key.
    let t = sign(
        Algorithm::ES256,
        &EncodingKey::from_ec_pem(EC_KEY).unwrap(),
        &json!({"sub": "a"}),
    );
    assert_eq!(
        public(RSA_PUB).verify(&t),
        Err(TokenError::WrongAlgorithm(Algorithm::ES256))
    );
}

#[test]
fn a_bad_signature_is_refused() {
    let t = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"another secret"),
        &json!({"sub": "a"}),
    );
    assert_eq!(hmac().verify(&t), Err(TokenError::BadSignature));
    // A payload swapped under a good signature.
    let good = hs(&json!({"sub": "alice"}));
    let parts: Vec<&str> = good.split('.').collect();
    let forged = format!("{}.{}.{}", parts[0], b64(r#"{"sub":"admin"}"#), parts[2]);
    assert_eq!(hmac().verify(&forged), Err(TokenError::BadSignature));
}

#[test]
fn malformed_tokens_are_refused() {
    for t in [
        "",
        "abc",
        "a.b",
        "a.b.c",
        "....",
        "eyJhbGciOiJIUzI1NiJ9..",
        &"x".repeat(20_000),
    ] {
        assert!(hmac().verify(t).is_err(), "{t:.40}");
    }
}

#[test]
fn expiry_is_enforced_with_the_leeway() {
    let v = hmac();
    assert_eq!(
        v.verify(&hs(&json!({"sub": "a", "exp": now() - 60}))),
        Err(TokenError::Expired)
    );
    // Two seconds past `exp`: inside the 5 s leeway.
    assert!(v
        .verify(&hs(&json!({"sub": "a", "exp": now() - 2})))
        .is_ok());
    assert_eq!(
        v.verify(&hs(&json!({"sub": "a", "nbf": now() + 600}))),
        Err(TokenError::NotYetValid)
    );
    assert!(matches!(
        v.verify(&hs(&json!({"sub": "a", "exp": "soon"}))),
        Err(TokenError::BadClaims(_))
    ));
}

#[test]
fn claims_of_the_wrong_shape_are_refused() {
    let v = hmac();
    for claims in [
        json!({}),
        json!({"sub": 42}),
        json!({"sub": ""}),
        json!({"sub": "a", "channels": "chat:*"}),
        json!({"sub": "a", "channels": [1, 2]}),
        json!({"sub": "a", "info": "not an object"}),
        json!({"sub": "a", "channels": vec!["x"; MAX_GRANTS + 1]}),
    ] {
        assert!(
            matches!(v.verify(&hs(&claims)), Err(TokenError::BadClaims(_))),
            "{claims}"
        );
    }
}

#[test]
fn keys_that_cannot_be_used_are_config_errors() {
    assert!(JwtVerifier::new(JwtKeys::default()).is_err());
    assert!(JwtVerifier::new(JwtKeys {
        hmac_secret: Some(Vec::new()),
        ..JwtKeys::default()
    })
    .is_err());
    assert!(JwtVerifier::new(JwtKeys {
        public_key_pem: Some(b"not a key".to_vec()),
        ..JwtKeys::default()
    })
    .is_err());
    // A private key is not a public key.
    assert!(JwtVerifier::new(JwtKeys {
        public_key_pem: Some(RSA_KEY.to_vec()),
        ..JwtKeys::default()
    })
    .is_err());
}

#[test]
fn both_keys_verify_their_own_families() {
    let v = JwtVerifier::new(JwtKeys {
        hmac_secret: Some(SECRET.to_vec()),
        public_key_pem: Some(ED_PUB.to_vec()),
        ..JwtKeys::default()
    })
    .unwrap();
    assert!(v.verify(&hs(&json!({"sub": "a"}))).is_ok());
    let t = sign(
        Algorithm::EdDSA,
        &EncodingKey::from_ed_pem(ED_KEY).unwrap(),
        &json!({"sub": "b"}),
    );
    assert_eq!(v.verify(&t).unwrap().user_id.as_deref(), Some("b"));
}
