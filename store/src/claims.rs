//! The value token's claims, and their verification against published keys. The IdP signs,
//! every reader of the store verifies: a write to Redis alone must not be enough to mint a token.

use std::collections::HashMap;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};

/// What a value token says about its bearer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The issuer: the IdP's `tokens.issuer`.
    pub iss: String,
    /// The subject: the user (or client) the session is for.
    pub sub: String,
    /// The session id.
    pub sid: String,
    /// The session's roles.
    pub roles: Vec<String>,
    /// When this value token was signed (it is renewed while its session lives).
    pub iat: u64,
    /// The earlier of the session's absolute end (`created + max_lifetime`) and
    /// `iat + value_token_ttl`; the session's idle end is the store's.
    pub exp: u64,
    /// How the person proved who they are (RFC 8176: `pwd`, `otp`, `mfa`), so that a backend
    /// can ask for a second factor; empty (and absent from the token) when nothing is known.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub amr: Vec<String>,
}

impl Claims {
    /// Whether a value token with these claims, if expired, may still be renewed at `now` for a
    /// session that ends after `idle_timeout` seconds without use. A session whose token has
    /// expired cannot be used, so it cannot outlive its token by more than that: an older token
    /// in the store was written back, not left behind by an IdP that was down. Readers answer
    /// "cannot validate now" for a renewable token and "invalid" for any other.
    pub fn renewable(&self, idle_timeout: u64, now: u64) -> bool {
        self.exp.saturating_add(idle_timeout) > now
    }
}

/// Seconds before its `exp` at which a reader stops using a value token: room for clock skew
/// between IdP, gateways and backends, and for the request still on its way to the backend.
pub const EXPIRY_MARGIN: u64 = 5;

/// Why a value token is refused.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The header names no key (`kid`).
    #[error("value token names no key id")]
    NoKeyId,
    /// The key it names is not in the JWKS.
    #[error("value token signed with an unknown key")]
    UnknownKey,
    /// Its `exp` has passed.
    #[error("value token expired")]
    Expired,
    /// Signature, algorithm, issuer or shape wrong.
    #[error("value token rejected")]
    Rejected(#[source] jsonwebtoken::errors::Error),
}

/// Verifies value tokens with a set of public keys. Only EdDSA (Ed25519) and ES256 keys are
/// taken; each key verifies only its own algorithm, so `alg: none`, HMAC with a public key as
/// the secret and algorithm confusion are refused by construction.
#[derive(Clone)]
pub struct Verifier {
    keys: HashMap<String, (DecodingKey, Validation)>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("kids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Verifier {
    /// A verifier for the usable keys of `jwks` (others are skipped) from issuer `issuer`.
    pub fn new(jwks: &JwkSet, issuer: &str) -> Self {
        let mut keys = HashMap::new();
        for jwk in &jwks.keys {
            let Some(kid) = jwk.common.key_id.clone() else {
                continue;
            };
            let alg = match &jwk.algorithm {
                AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
                    Algorithm::EdDSA
                }
                AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
                    Algorithm::ES256
                }
                _ => continue,
            };
            let Ok(key) = DecodingKey::from_jwk(jwk) else {
                continue;
            };
            let mut validation = Validation::new(alg);
            validation.set_issuer(&[issuer]);
            validation.set_required_spec_claims(&["exp", "iss", "sub"]);
            // `verify` checks `exp` itself, so that an expired token can be told from a forged one.
            validation.validate_exp = false;
            validation.leeway = 0;
            keys.insert(kid, (key, validation));
        }
        Verifier { keys }
    }

    /// How many keys this verifier can use.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is known.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether a key with this id is known.
    pub fn knows(&self, kid: &str) -> bool {
        self.keys.contains_key(kid)
    }

    /// The key id a token names, read before verification (to decide whether keys must be
    /// refreshed). Never trust anything else from an unverified token.
    pub fn key_id(token: &str) -> Result<String, VerifyError> {
        jsonwebtoken::decode_header(token)
            .map_err(VerifyError::Rejected)?
            .kid
            .ok_or(VerifyError::NoKeyId)
    }

    /// The claims of a token whose signature, algorithm, issuer and expiry all check out.
    pub fn verify(&self, token: &str) -> Result<Claims, VerifyError> {
        let claims = self.verify_allowing_expired(token)?;
        if claims.exp < crate::now_unix() {
            return Err(VerifyError::Expired);
        }
        Ok(claims)
    }

    /// The claims of a token whose signature, algorithm and issuer check out, whether it has
    /// expired or not: an expired token is still the IdP's own (a reader answers "cannot
    /// validate now" rather than "invalid"), and the IdP renews from it.
    pub fn verify_allowing_expired(&self, token: &str) -> Result<Claims, VerifyError> {
        let kid = Self::key_id(token)?;
        let (key, validation) = self.keys.get(&kid).ok_or(VerifyError::UnknownKey)?;
        jsonwebtoken::decode::<Claims>(token, key, validation)
            .map(|data| data.claims)
            .map_err(VerifyError::Rejected)
    }
}
