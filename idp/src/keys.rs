//! Signing keys: the first one signs value tokens, all of them are published as a JWKS so that
//! keys can be rotated without logging anyone out.

use std::path::Path;

use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair,
};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::Serialize;

/// Why keys could not be loaded or used; names the file where there is one.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file cannot be read.
    #[error("cannot read key file {file}: {source}")]
    Read {
        /// The path as configured, resolved against the config file's folder.
        file: String,
        /// The error from reading it.
        #[source]
        source: std::io::Error,
    },
    /// The file holds no private key this IdP can sign with.
    #[error(
        "{file}: not an unencrypted Ed25519 or P-256 private key in PEM (PKCS#8 `PRIVATE KEY` \
         or SEC1 `EC PRIVATE KEY`; `tokengate gen-key` and `openssl genpkey` make one)"
    )]
    Unsupported {
        /// The path as configured.
        file: String,
    },
    /// `tokens.signing_keys` is empty.
    #[error("no signing key configured")]
    None,
    /// Signing, generating or encoding failed (not expected with a valid key).
    #[error("signing failed")]
    Sign,
}

/// The algorithms a key may have. Both are asymmetric: the gateway never needs a secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alg {
    /// Ed25519 (`EdDSA`), the default of `tokengate gen-key`.
    EdDsa,
    /// ECDSA on P-256 with SHA-256.
    Es256,
}

impl Alg {
    /// The JOSE name (`alg` in a JWT header and a JWK).
    pub fn name(self) -> &'static str {
        match self {
            Alg::EdDsa => "EdDSA",
            Alg::Es256 => "ES256",
        }
    }

    /// The algorithm as jsonwebtoken names it.
    pub fn jwt(self) -> jsonwebtoken::Algorithm {
        match self {
            Alg::EdDsa => jsonwebtoken::Algorithm::EdDSA,
            Alg::Es256 => jsonwebtoken::Algorithm::ES256,
        }
    }
}

enum Pair {
    Ed(Ed25519KeyPair),
    Ec(EcdsaKeyPair),
}

/// One key pair and its public JWK.
pub struct SigningKey {
    pair: Pair,
    kid: String,
    jwk: serde_json::Value,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg())
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A key from PKCS#8 DER (v1 as OpenSSL writes it, or v2 with the public key), or, for
    /// P-256, SEC1 `ECPrivateKey` DER (what `openssl ecparam -genkey` writes).
    pub fn from_der(der: &[u8]) -> Option<Self> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map(Pair::Ed)
            .or_else(|_| {
                EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
                    .map(Pair::Ec)
            })
            .ok()?;
        // RFC 7638 thumbprint: the required members in lexicographic order, no spaces.
        let (canonical, jwk) = match &pair {
            Pair::Ed(k) => {
                let x = URL_SAFE_NO_PAD.encode(k.public_key().as_ref());
                (
                    format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#),
                    serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": x}),
                )
            }
            Pair::Ec(k) => {
                // Uncompressed point: 0x04 || x || y.
                let point = k.public_key().as_ref();
                if point.len() != 65 {
                    return None;
                }
                let x = URL_SAFE_NO_PAD.encode(&point[1..33]);
                let y = URL_SAFE_NO_PAD.encode(&point[33..65]);
                (
                    format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#),
                    serde_json::json!({"kty": "EC", "crv": "P-256", "x": x, "y": y}),
                )
            }
        };
        let kid = URL_SAFE_NO_PAD.encode(digest(&SHA256, canonical.as_bytes()));
        let mut key = SigningKey { pair, kid, jwk };
        let alg = key.alg().name();
        if let Some(obj) = key.jwk.as_object_mut() {
            obj.insert("kid".to_owned(), key.kid.clone().into());
            obj.insert("alg".to_owned(), alg.into());
            obj.insert("use".to_owned(), "sig".into());
        }
        Some(key)
    }

    /// A key from a PEM file holding a private key (see [`SigningKey::from_der`]).
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
            file: file.clone(),
            source,
        })?;
        pem_private_key(&text)
            .and_then(|der| Self::from_der(&der))
            .ok_or(KeyError::Unsupported { file })
    }

    /// A new Ed25519 key, as PKCS#8 v1 PEM (for `tokengate gen-key` and `tokengate dev`).
    /// v1, the seed alone, because that is what OpenSSL reads and writes: `openssl pkey`
    /// refuses the v2 form that also carries the public key.
    pub fn generate_ed25519_pem() -> Result<String, KeyError> {
        let doc =
            Ed25519KeyPair::generate_pkcs8v1(&SystemRandom::new()).map_err(|_| KeyError::Sign)?;
        Ok(to_pem(doc.as_ref()))
    }

    /// A new P-256 key, as PKCS#8 v1 PEM.
    pub fn generate_p256_pem() -> Result<String, KeyError> {
        let doc =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .map_err(|_| KeyError::Sign)?;
        Ok(to_pem(doc.as_ref()))
    }

    /// Follows from the key's type: Ed25519 or P-256.
    pub fn alg(&self) -> Alg {
        match self.pair {
            Pair::Ed(_) => Alg::EdDsa,
            Pair::Ec(_) => Alg::Es256,
        }
    }

    /// The key id: the JWK's RFC 7638 thumbprint (SHA-256, base64url), the same on every IdP
    /// that holds the key.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// A compact JWS of `claims`, with `alg`, `typ` and `kid` in the header.
    pub fn sign_jwt<T: Serialize>(&self, claims: &T) -> Result<String, KeyError> {
        self.sign_typed(claims, "JWT")
    }

    /// A compact JWS of `claims` whose header names its `typ` (e.g. `logout+jwt`, so that a
    /// logout token can never pass for an ID token).
    pub fn sign_typed<T: Serialize>(
        &self,
        claims: &T,
        typ: &'static str,
    ) -> Result<String, KeyError> {
        #[derive(Serialize)]
        struct Header<'a> {
            alg: &'static str,
            typ: &'static str,
            kid: &'a str,
        }
        let header = serde_json::to_vec(&Header {
            alg: self.alg().name(),
            typ,
            kid: &self.kid,
        })
        .map_err(|_| KeyError::Sign)?;
        let claims = serde_json::to_vec(claims).map_err(|_| KeyError::Sign)?;
        let mut jwt = URL_SAFE_NO_PAD.encode(header);
        jwt.push('.');
        URL_SAFE_NO_PAD.encode_string(claims, &mut jwt);
        let signature = match &self.pair {
            Pair::Ed(k) => k.sign(jwt.as_bytes()).as_ref().to_vec(),
            Pair::Ec(k) => k
                .sign(&SystemRandom::new(), jwt.as_bytes())
                .map_err(|_| KeyError::Sign)?
                .as_ref()
                .to_vec(),
        };
        jwt.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut jwt);
        Ok(jwt)
    }
}

fn to_pem(der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    pem
}

/// The DER inside the first `PRIVATE KEY` (PKCS#8) or `EC PRIVATE KEY` (SEC1) block of a PEM
/// text; other blocks (`EC PARAMETERS` from `openssl ecparam -genkey`) are skipped.
fn pem_private_key(text: &str) -> Option<Vec<u8>> {
    ["PRIVATE KEY", "EC PRIVATE KEY"].iter().find_map(|label| {
        let begin = format!("-----BEGIN {label}-----");
        let end = format!("-----END {label}-----");
        let rest = &text[text.find(&begin)? + begin.len()..];
        let body: String = rest[..rest.find(&end)?].split_whitespace().collect();
        STANDARD.decode(body).ok()
    })
}

/// The IdP's keys: the first signs, all verify. The JWKS body and its `ETag` are made once.
#[derive(Debug)]
pub struct KeySet {
    keys: Vec<SigningKey>,
    jwks: bytes::Bytes,
    etag: http::HeaderValue,
}

impl KeySet {
    /// A set whose first key signs; fails on an empty list.
    pub fn new(keys: Vec<SigningKey>) -> Result<Self, KeyError> {
        if keys.is_empty() {
            return Err(KeyError::None);
        }
        let set = serde_json::json!({ "keys": keys.iter().map(|k| &k.jwk).collect::<Vec<_>>() });
        let jwks = bytes::Bytes::from(serde_json::to_vec(&set).map_err(|_| KeyError::Sign)?);
        let hash = digest(&SHA256, &jwks);
        let etag = format!("\"{}\"", URL_SAFE_NO_PAD.encode(&hash.as_ref()[..16]));
        let etag = http::HeaderValue::from_str(&etag).map_err(|_| KeyError::Sign)?;
        Ok(KeySet { keys, jwks, etag })
    }

    /// Loads every file of `tokens.signing_keys` (already resolved), in order.
    pub fn load(paths: &[std::path::PathBuf]) -> Result<Self, KeyError> {
        let keys = paths
            .iter()
            .map(|p| SigningKey::load(p))
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(keys)
    }

    /// A set of one freshly generated Ed25519 key (for `tokengate dev`).
    pub fn ephemeral() -> Result<Self, KeyError> {
        let pem = SigningKey::generate_ed25519_pem()?;
        let der = pem_private_key(&pem).ok_or(KeyError::Sign)?;
        Self::new(vec![SigningKey::from_der(&der).ok_or(KeyError::Sign)?])
    }

    /// The key that signs.
    pub fn current(&self) -> &SigningKey {
        &self.keys[0]
    }

    /// The key named by a token's `kid`, if it is one of ours.
    pub fn find(&self, kid: &str) -> Option<&SigningKey> {
        self.keys.iter().find(|k| k.kid == kid)
    }

    /// The algorithms of the published keys, the signing key's first.
    pub fn algorithms(&self) -> Vec<&'static str> {
        let mut algs: Vec<&'static str> = Vec::new();
        for key in &self.keys {
            if !algs.contains(&key.alg().name()) {
                algs.push(key.alg().name());
            }
        }
        algs
    }

    /// The `/.well-known/jwks.json` body, serialised once.
    pub fn jwks(&self) -> &bytes::Bytes {
        &self.jwks
    }

    /// A strong `ETag` of [`KeySet::jwks`] (a hash prefix), for conditional requests.
    pub fn etag(&self) -> &http::HeaderValue {
        &self.etag
    }

    /// The JWKS as the jsonwebtoken crate reads it, to verify our own tokens.
    pub fn public_jwks(&self) -> Result<jsonwebtoken::jwk::JwkSet, KeyError> {
        serde_json::from_slice(&self.jwks).map_err(|_| KeyError::Sign)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_round_trip_through_pem_and_verify_with_jsonwebtoken() {
        for pem in [
            SigningKey::generate_ed25519_pem().expect("ed25519"),
            SigningKey::generate_p256_pem().expect("p256"),
        ] {
            let der = pem_private_key(&pem).expect("pem");
            let key = SigningKey::from_der(&der).expect("key");
            let set = KeySet::new(vec![key]).expect("set");
            let claims = serde_json::json!({"sub": "alice", "exp": 4_000_000_000u64});
            let jwt = set.current().sign_jwt(&claims).expect("sign");
            let jwks = set.public_jwks().expect("jwks");
            let header = jsonwebtoken::decode_header(&jwt).expect("header");
            let kid = header.kid.expect("kid");
            let jwk = jwks.find(&kid).expect("published");
            let dk = jsonwebtoken::DecodingKey::from_jwk(jwk).expect("decoding key");
            let mut validation = jsonwebtoken::Validation::new(header.alg);
            validation.required_spec_claims.clear();
            let data =
                jsonwebtoken::decode::<serde_json::Value>(&jwt, &dk, &validation).expect("verify");
            assert_eq!(data.claims["sub"], "alice");
        }
    }

    #[test]
    fn non_keys_are_refused() {
        assert!(pem_private_key("nothing here").is_none());
        assert!(SigningKey::from_der(b"not der").is_none());
    }
}
