//! A sign-in under way: `state`, the PKCE verifier and where to return, sealed (AES-256-GCM)
//! into a short-lived cookie between `/.tokengate/login` and the callback. The key derives from
//! the client secret, which every replica has, so any replica can finish what another started,
//! and nothing is kept in memory or the store.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::{Deserialize, Serialize};

/// Longest `rd` kept; a longer one returns to `/`.
const MAX_RD: usize = 2048;

/// A sign-in under way, sealed into the `{cookie}-login` cookie between the redirect to the
/// IdP and the callback. Short serde names keep the cookie small.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginState {
    /// The `state` sent to the IdP.
    #[serde(rename = "s")]
    pub state: String,
    /// The PKCE code verifier.
    #[serde(rename = "v")]
    pub verifier: String,
    /// Where to return: a path on this gateway.
    #[serde(rename = "r")]
    pub rd: String,
    /// When the sign-in started (Unix seconds).
    #[serde(rename = "t")]
    pub issued_at: u64,
}

/// Why a state cookie is not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// Not base64, not sealed by this key (or altered), or not a state at all.
    #[error("sign-in state missing, altered or not ours")]
    Invalid,
    /// Older than `browser.login_timeout`, or dated more than a minute ahead.
    #[error("sign-in state expired")]
    Expired,
}

/// Seals and opens login state; the key is derived from the client secret.
pub struct Sealer {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl Sealer {
    /// The key is SHA-256 of a fixed label and the secret: every replica with the same secret
    /// opens what another sealed, and a new secret voids sign-ins under way.
    pub fn new(client_secret: &str) -> Self {
        let mut input = b"tokengate browser login state v1\0".to_vec();
        input.extend_from_slice(client_secret.as_bytes());
        let key = digest(&SHA256, &input);
        // A 32-byte key is exactly what AES-256 takes, so this cannot fail.
        #[allow(clippy::expect_used)]
        let key = UnboundKey::new(&AES_256_GCM, key.as_ref()).expect("a 256-bit key");
        Sealer {
            key: LessSafeKey::new(key),
            rng: SystemRandom::new(),
        }
    }

    /// The cookie value for `state`: base64url of nonce, ciphertext and tag. `context` (the
    /// cookie's name) is bound in, so a value moved to another cookie does not open.
    pub fn seal(&self, state: &LoginState, context: &str) -> Option<String> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).ok()?;
        let mut data = serde_json::to_vec(state).ok()?;
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut data,
            )
            .ok()?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        Some(B64.encode(out))
    }

    /// The state in a cookie value, if it was sealed by this key for `context` and is younger
    /// than `max_age` seconds at `now`.
    pub fn open(
        &self,
        value: &str,
        context: &str,
        now: u64,
        max_age: u64,
    ) -> Result<LoginState, StateError> {
        let mut data = B64.decode(value).map_err(|_| StateError::Invalid)?;
        if data.len() < NONCE_LEN {
            return Err(StateError::Invalid);
        }
        let mut sealed = data.split_off(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&data).map_err(|_| StateError::Invalid)?;
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut sealed)
            .map_err(|_| StateError::Invalid)?;
        let state: LoginState = serde_json::from_slice(plain).map_err(|_| StateError::Invalid)?;
        if now >= state.issued_at.saturating_add(max_age) || state.issued_at > now + 60 {
            return Err(StateError::Expired);
        }
        Ok(state)
    }
}

/// `rd` if it is a path on this gateway, else `/`: it must start with a single `/`, and no
/// backslash, control character or percent-encoded slash or backslash may turn it into
/// another host (`//evil`, `/\evil`, `/%2F%2Fevil`, `https://evil` all give `/`).
pub fn safe_rd(rd: &str) -> &str {
    let bytes = rd.as_bytes();
    let ok = rd.len() <= MAX_RD
        && bytes.first() == Some(&b'/')
        && bytes.get(1).is_none_or(|b| *b != b'/' && *b != b'\\')
        && !bytes
            .iter()
            .any(|b| b.is_ascii_control() || *b == b'\\' || *b > 0x7e || *b == b' ')
        && !has_encoded_separator(rd)
        && rd.parse::<http::uri::PathAndQuery>().is_ok();
    if ok { rd } else { "/" }
}

/// Whether the path part holds an encoded `/`, `\\`, control character or `%` (double encoding).
fn has_encoded_separator(rd: &str) -> bool {
    let path = rd.split(['?', '#']).next().unwrap_or("");
    let lower = path.to_ascii_lowercase();
    ["%2f", "%5c", "%25", "%0", "%1", "%7f"]
        .iter()
        .any(|e| lower.contains(e))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn state(at: u64) -> LoginState {
        LoginState {
            state: "s".into(),
            verifier: "v".into(),
            rd: "/app/".into(),
            issued_at: at,
        }
    }

    #[test]
    fn sealed_state_opens_only_unaltered_for_its_cookie_and_in_time() {
        let sealer = Sealer::new("secret");
        let sealed = sealer.seal(&state(1000), "tokengate-login").unwrap();
        assert!(!sealed.contains("/app/"), "the state is encrypted");
        assert_eq!(
            sealer.open(&sealed, "tokengate-login", 1010, 600),
            Ok(state(1000))
        );
        assert_eq!(
            sealer.open(&sealed, "tokengate-login", 1600, 600),
            Err(StateError::Expired)
        );
        assert_eq!(
            sealer.open(&sealed, "other", 1010, 600),
            Err(StateError::Invalid)
        );
        assert_eq!(
            Sealer::new("another secret").open(&sealed, "tokengate-login", 1010, 600),
            Err(StateError::Invalid)
        );
        let mut bytes = B64.decode(&sealed).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let tampered = B64.encode(bytes);
        assert_eq!(
            sealer.open(&tampered, "tokengate-login", 1010, 600),
            Err(StateError::Invalid)
        );
        for garbage in ["", "x", "!!!", &"A".repeat(40)] {
            assert_eq!(
                sealer.open(garbage, "tokengate-login", 1010, 600),
                Err(StateError::Invalid)
            );
        }
    }

    #[test]
    fn only_paths_on_this_gateway_are_returned_to() {
        for good in ["/", "/app/", "/app/x?y=1&z=%20", "/a%2Bb"] {
            assert_eq!(safe_rd(good), good);
        }
        for bad in [
            "",
            "//evil",
            "//evil.example/x",
            "https://evil",
            "http:evil",
            "/\\evil",
            "\\\\evil",
            "/%2F%2Fevil",
            "/%2f/evil",
            "%2F%2Fevil",
            "/%5Cevil",
            "/%252F%252Fevil",
            "/x\r\nLocation: //evil",
            "/x\tz",
            "/\u{3000}evil",
            "javascript:alert(1)",
            "evil",
        ] {
            assert_eq!(safe_rd(bad), "/", "{bad:?}");
        }
        assert_eq!(safe_rd(&format!("/{}", "a".repeat(3000))), "/");
    }
}
