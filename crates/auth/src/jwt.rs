//! [`JwtVerifier`]: a token's signature, algorithm and claims.

use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use sente_lite_session::Identity;
use serde::Deserialize;
use serde_json::Value;
use std::time::Duration;

/// Most channel patterns a token may grant.
pub const MAX_GRANTS: usize = 256;
/// Longest channel pattern a token may grant, in bytes.
pub const MAX_GRANT_BYTES: usize = 1_024;
/// Longest token accepted, in bytes.
pub const MAX_TOKEN_BYTES: usize = 16 * 1_024;

/// The keys tokens are checked with.
#[derive(Debug, Clone, Default)]
pub struct JwtKeys {
    /// The shared secret of HS256, HS384 and HS512 tokens.
    pub hmac_secret: Option<Vec<u8>>,
    /// A PEM public key (RSA, EC P-256/P-384 or Ed25519) for RS*/PS*,
    /// ES256/ES384 or EdDSA tokens.
    pub public_key_pem: Option<Vec<u8>>,
    /// How far past `exp` (and before `nbf`) a token is still taken, for
    /// clocks that disagree a little.
    pub leeway: Duration,
}

/// A key could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// No key at all: a verifier needs one.
    #[error("no key: set an HMAC secret or a public key")]
    NoKey,
    /// The HMAC secret is empty.
    #[error("the HMAC secret is empty")]
    EmptySecret,
    /// The PEM is no RSA, EC or Ed25519 public key.
    #[error("not an RSA, EC or Ed25519 public key in PEM form")]
    BadPublicKey,
    /// The PEM holds a private key: the server needs only the public one,
    /// and should not hold the other.
    #[error(
        "a private key, where the public key belongs (extract it with `openssl pkey -pubout`)"
    )]
    PrivateKey,
}

/// Why a token was refused. Every variant is answered as `unauthorized`;
/// the text is for logs and the refusal's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not three base64url parts with a JSON header, or `alg` is `none` or
    /// unknown.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// The token's `alg` is not one the configured keys verify.
    #[error("algorithm {0:?} is not accepted by this server's keys")]
    WrongAlgorithm(Algorithm),
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// `exp` is in the past (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("token not valid yet")]
    NotYetValid,
    /// A claim is missing or of the wrong type.
    #[error("bad claims: {0}")]
    BadClaims(String),
    /// Larger than [`MAX_TOKEN_BYTES`].
    #[error("token longer than {MAX_TOKEN_BYTES} bytes")]
    TooLong,
}

/// The claims sente-lite reads; others are ignored.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    exp: Option<u64>,
    #[serde(default)]
    channels: Option<Vec<String>>,
    #[serde(default)]
    info: Option<Value>,
}

/// Checks JSON Web Tokens against the configured keys and turns their
/// claims into an [`Identity`]: `sub` (required, a non-empty string) is
/// the user id, `exp` (optional) is enforced, `channels` (optional list of
/// `*` patterns) are the user's grants, `info` (optional object) is kept.
///
/// The algorithm must be one of the key's family (HS* for the secret; RS*
/// and PS*, ES256/ES384 or EdDSA for the public key), so `alg: none` and a
/// public key used as an HMAC secret are refused.
///
/// ```
/// use sente_lite_auth::{JwtKeys, JwtVerifier};
/// let v = JwtVerifier::new(JwtKeys { hmac_secret: Some(b"s3cret".to_vec()), ..JwtKeys::default() }).unwrap();
/// // {"alg":"HS256"} . {"sub":"alice"} signed with "s3cret"
/// let token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.u39FWNWhm-Q8KkeBRb2mm4HWeTmw2QUz6zEUYtp5P4M";
/// assert_eq!(v.verify(token).unwrap().user_id.as_deref(), Some("alice"));
/// assert!(v.verify("eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSJ9.").is_err());
/// ```
#[derive(Clone)]
pub struct JwtVerifier {
    hmac: Option<DecodingKey>,
    public: Option<(DecodingKey, &'static [Algorithm])>,
    leeway: Duration,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("hmac", &self.hmac.is_some())
            .field("public", &self.public.as_ref().map(|p| p.1))
            .field("leeway", &self.leeway)
            .finish()
    }
}

const HMAC: &[Algorithm] = &[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
const RSA: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];
const EC: &[Algorithm] = &[Algorithm::ES256, Algorithm::ES384];
const ED: &[Algorithm] = &[Algorithm::EdDSA];

impl JwtVerifier {
    /// A verifier for `keys`; fails when there is no usable key.
    pub fn new(keys: JwtKeys) -> Result<JwtVerifier, KeyError> {
        let hmac = match &keys.hmac_secret {
            Some(s) if s.is_empty() => return Err(KeyError::EmptySecret),
            Some(s) => Some(DecodingKey::from_secret(s)),
            None => None,
        };
        let public = match &keys.public_key_pem {
            Some(pem) => Some(public_key(pem)?),
            None => None,
        };
        if hmac.is_none() && public.is_none() {
            return Err(KeyError::NoKey);
        }
        Ok(JwtVerifier {
            hmac,
            public,
            leeway: keys.leeway,
        })
    }

    /// The leeway given to `exp` and `nbf`.
    pub fn leeway(&self) -> Duration {
        self.leeway
    }

    /// Checks `token` and returns who it names. `expires_at_ms` is the
    /// token's `exp` plus the leeway: the moment the server stops taking
    /// it.
    pub fn verify(&self, token: &str) -> Result<Identity, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLong);
        }
        let header = decode_header(token).map_err(|e| TokenError::Malformed(e.to_string()))?;
        let alg = header.alg;
        let key = if HMAC.contains(&alg) {
            self.hmac.as_ref()
        } else {
            self.public
                .as_ref()
                .filter(|(_, algs)| algs.contains(&alg))
                .map(|(k, _)| k)
        };
        let Some(key) = key else {
            return Err(TokenError::WrongAlgorithm(alg));
        };
        let mut v = Validation::new(alg);
        v.algorithms = vec![alg];
        v.leeway = self.leeway.as_secs();
        v.validate_exp = true;
        v.validate_nbf = true;
        // Audiences are not configured: a token is for this server when its
        // key is.
        v.validate_aud = false;
        v.set_required_spec_claims(&["sub"]);
        let data = decode::<Claims>(token, key, &v).map_err(token_error)?;
        identity(data.claims, self.leeway)
    }
}

fn public_key(pem: &[u8]) -> Result<(DecodingKey, &'static [Algorithm]), KeyError> {
    if pem.windows(11).any(|w| w == b"PRIVATE KEY") {
        return Err(KeyError::PrivateKey);
    }
    // A "PUBLIC KEY" label may hold any of the three: try each parser.
    if let Ok(k) = DecodingKey::from_rsa_pem(pem) {
        return Ok((k, RSA));
    }
    if let Ok(k) = DecodingKey::from_ec_pem(pem) {
        return Ok((k, EC));
    }
    if let Ok(k) = DecodingKey::from_ed_pem(pem) {
        return Ok((k, ED));
    }
    Err(KeyError::BadPublicKey)
}

fn token_error(e: jsonwebtoken::errors::Error) -> TokenError {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::InvalidSignature => TokenError::BadSignature,
        K::ExpiredSignature => TokenError::Expired,
        K::ImmatureSignature => TokenError::NotYetValid,
        K::InvalidAlgorithm | K::InvalidAlgorithmName => TokenError::Malformed(e.to_string()),
        K::MissingRequiredClaim(c) => TokenError::BadClaims(format!("missing claim `{c}`")),
        K::InvalidClaimFormat(c) => TokenError::BadClaims(format!("claim `{c}` is malformed")),
        K::Json(j) => TokenError::BadClaims(j.to_string()),
        _ => TokenError::Malformed(e.to_string()),
    }
}

fn identity(c: Claims, leeway: Duration) -> Result<Identity, TokenError> {
    if c.sub.is_empty() {
        return Err(TokenError::BadClaims("`sub` is empty".into()));
    }
    let channels = c.channels.unwrap_or_default();
    if channels.len() > MAX_GRANTS {
        return Err(TokenError::BadClaims(format!(
            "`channels` grants more than {MAX_GRANTS} patterns"
        )));
    }
    if channels.iter().any(|p| p.len() > MAX_GRANT_BYTES) {
        return Err(TokenError::BadClaims(format!(
            "a `channels` pattern is longer than {MAX_GRANT_BYTES} bytes"
        )));
    }
    if c.info.as_ref().is_some_and(|i| !i.is_object()) {
        return Err(TokenError::BadClaims("`info` must be an object".into()));
    }
    let leeway_ms = i64::try_from(leeway.as_millis()).unwrap_or(i64::MAX);
    let expires_at_ms = c.exp.map(|exp| {
        i64::try_from(exp)
            .unwrap_or(i64::MAX / 1_000)
            .min(i64::MAX / 1_000 - 1)
            .saturating_mul(1_000)
            .saturating_add(leeway_ms)
    });
    Ok(Identity {
        user_id: Some(c.sub),
        info: c.info,
        channels,
        expires_at_ms,
    })
}
