use std::fmt;

use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Bytes of randomness in a reference token (256 bits).
const TOKEN_BYTES: usize = 32;
/// Length of a reference token as text: 32 bytes in unpadded base64url.
pub const TOKEN_LEN: usize = 43;
/// Bytes of the token's hash that make the session id (128 bits).
const SESSION_ID_BYTES: usize = 16;
/// Length of a session id as text.
pub const SESSION_ID_LEN: usize = 22;

/// An opaque reference token: 256 random bits as URL-safe text. It is a secret, so it has no
/// `Display` and its `Debug` is redacted; the store only ever sees its hash.
#[derive(Clone, PartialEq, Eq)]
pub struct ReferenceToken(String);

/// Why a presented string is not a reference token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenFormatError {
    /// Not 43 characters.
    #[error("reference token has the wrong length")]
    Length,
    /// A character outside the URL-safe base64 alphabet.
    #[error("reference token has characters outside base64url")]
    Alphabet,
}

/// Whether every byte is of base64url's alphabet (one table lookup a byte).
fn url_safe(text: &str) -> bool {
    static URL_SAFE: [bool; 256] = {
        let mut table = [false; 256];
        let mut b = 0;
        while b < 256 {
            let c = b as u8;
            table[b] = c.is_ascii_alphanumeric() || c == b'-' || c == b'_';
            b += 1;
        }
        table
    };
    text.bytes().all(|b| URL_SAFE[usize::from(b)])
}

impl ReferenceToken {
    /// A fresh token from the operating system's CSPRNG.
    pub fn generate() -> Self {
        let mut bytes = [0u8; TOKEN_BYTES];
        // The system RNG fails only if the OS has no entropy source at all; nothing can issue
        // tokens then, so this is a genuine invariant violation.
        #[allow(clippy::expect_used)]
        SystemRandom::new()
            .fill(&mut bytes)
            .expect("operating system random number generator failed");
        ReferenceToken(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Checks the shape of a presented token without allocating on failure.
    pub fn parse(text: &str) -> Result<Self, TokenFormatError> {
        Self::check(text)?;
        Ok(ReferenceToken(text.to_owned()))
    }

    /// Whether `text` has a token's shape (length, URL-safe alphabet), allocating nothing: for
    /// a lookup that needs only [`SessionId::of_token_text`] of it.
    pub fn check(text: &str) -> Result<(), TokenFormatError> {
        if text.len() != TOKEN_LEN {
            return Err(TokenFormatError::Length);
        }
        if !url_safe(text) {
            return Err(TokenFormatError::Alphabet);
        }
        Ok(())
    }

    /// The id of the session this token opens: a prefix of its SHA-256. Knowing it does not give
    /// the token, so it can appear in logs, headers and the store.
    pub fn session_id(&self) -> SessionId {
        SessionId::of_token_text(&self.0)
    }

    /// The token itself, to hand to the client that owns it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ReferenceToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReferenceToken(<redacted>)")
    }
}

/// A session id: 128 bits of the reference token's SHA-256, as base64url. Held inline (22
/// bytes, no allocation): a gateway makes one per request, and its cache keeps one per token.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId([u8; SESSION_ID_LEN]);

impl SessionId {
    /// The session id of a token given as text, without checking the token's shape first (a
    /// gateway calls [`ReferenceToken::parse`] before, so garbage never reaches the store).
    pub fn of_token_text(token: &str) -> Self {
        let hash = digest(&SHA256, token.as_bytes());
        let mut id = [0u8; SESSION_ID_LEN];
        // 16 bytes are 22 characters of unpadded base64: the buffer always fits.
        let _ = URL_SAFE_NO_PAD.encode_slice(&hash.as_ref()[..SESSION_ID_BYTES], &mut id);
        SessionId(id)
    }

    /// A session id received from outside (admin API, event stream).
    pub fn parse(text: &str) -> Option<Self> {
        let ok = text.len() == SESSION_ID_LEN && url_safe(text);
        ok.then(|| SessionId(text.as_bytes().try_into().unwrap_or([b'A'; SESSION_ID_LEN])))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        // Made of base64url characters only (above), so always ASCII.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({})", self.as_str())
    }
}

/// 128 bits of the SHA-256 of a secret, as base64url: what the store keys a secret by.
pub(crate) fn hash_id(secret: &str) -> String {
    let hash = digest(&SHA256, secret.as_bytes());
    URL_SAFE_NO_PAD.encode(&hash.as_ref()[..SESSION_ID_BYTES])
}

/// The id an authorization code is stored under: derived from the code exactly as a session id
/// is from its reference token (128 bits of its SHA-256), so a Redis dump holds no usable code.
/// A code is made like a reference token ([`ReferenceToken::generate`]: 256 random bits); its
/// own type keeps a code id from ever being taken for a session id.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CodeId(String);

impl CodeId {
    /// The id of a code as presented by a client (any text: an unknown code simply is not found).
    pub fn of_code(code: &str) -> Self {
        CodeId(hash_id(code))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for CodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CodeId({})", self.0)
    }
}

/// The credentials of an `Authorization: Bearer <credentials>` header value (scheme matched
/// without regard to case, RFC 7235), or `None` for any other shape. Only token68 characters
/// are accepted, so what comes back is always plain ASCII.
pub fn bearer_credentials(value: &[u8]) -> Option<&str> {
    const SCHEME: &[u8] = b"bearer ";
    if value.len() <= SCHEME.len() || !value[..SCHEME.len()].eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    let rest = value[SCHEME.len()..].trim_ascii();
    let token68 = |b: &u8| b.is_ascii_alphanumeric() || b"-._~+/=".contains(b);
    if rest.is_empty() || !rest.iter().all(token68) {
        return None;
    }
    std::str::from_utf8(rest).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_credentials_are_extracted_strictly() {
        assert_eq!(bearer_credentials(b"Bearer abc"), Some("abc"));
        assert_eq!(bearer_credentials(b"bearer  abc "), Some("abc"));
        assert_eq!(
            bearer_credentials(b"BEARER a.b-c_d~e+f/g="),
            Some("a.b-c_d~e+f/g=")
        );
        for bad in [
            &b""[..],
            b"Bearer",
            b"Bearer ",
            b"Basic YWxpY2U6cHc=",
            b"Bearer a b",
            b"Bearer \xc3\xa9",
            b"Bearerabc",
            b"Bearer a,b",
        ] {
            assert_eq!(
                bearer_credentials(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn generated_tokens_are_256_bit_urlsafe_and_distinct() {
        let a = ReferenceToken::generate();
        let b = ReferenceToken::generate();
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), TOKEN_LEN);
        assert!(
            !a.expose().contains('.'),
            "a reference token must not look like a JWT"
        );
        assert_eq!(ReferenceToken::parse(a.expose()), Ok(a.clone()));
        assert_eq!(a.session_id().as_str().len(), SESSION_ID_LEN);
        assert_eq!(a.session_id(), a.session_id());
        assert_ne!(a.session_id(), b.session_id());
    }

    #[test]
    fn a_session_id_is_the_tokens_hash_as_text_and_parses_back() {
        let token = ReferenceToken::generate();
        let id = token.session_id();
        assert_eq!(id.as_str(), hash_id(token.expose()));
        assert_eq!(id.to_string(), id.as_str());
        assert_eq!(SessionId::parse(id.as_str()), Some(id));
        assert_eq!(SessionId::parse(&id.as_str()[1..]), None);
        assert_eq!(SessionId::parse("!!!!!!!!!!!!!!!!!!!!!!"), None);
        // A known vector: SHA-256 of the empty string, 128 bits, base64url.
        assert_eq!(
            SessionId::of_token_text("").as_str(),
            "47DEQpj8HBSa-_TImW-5JA"
        );
    }

    #[test]
    fn a_code_is_keyed_by_its_hash_as_a_token_is() {
        let code = ReferenceToken::generate();
        let id = CodeId::of_code(code.expose());
        assert_eq!(id, CodeId::of_code(code.expose()));
        assert_eq!(id.as_str(), code.session_id().as_str());
        assert!(!id.as_str().contains(code.expose()));
        assert_ne!(id, CodeId::of_code(ReferenceToken::generate().expose()));
    }

    #[test]
    fn malformed_tokens_are_refused() {
        assert_eq!(ReferenceToken::parse(""), Err(TokenFormatError::Length));
        assert_eq!(
            ReferenceToken::parse(&"a".repeat(5000)),
            Err(TokenFormatError::Length)
        );
        let dotted = format!("{}.", "a".repeat(TOKEN_LEN - 1));
        assert_eq!(
            ReferenceToken::parse(&dotted),
            Err(TokenFormatError::Alphabet)
        );
        let non_ascii = format!("{}é", "a".repeat(TOKEN_LEN - 2));
        assert_eq!(
            ReferenceToken::parse(&non_ascii),
            Err(TokenFormatError::Alphabet)
        );
    }

    #[test]
    fn debug_never_prints_the_token() {
        let t = ReferenceToken::generate();
        assert!(!format!("{t:?}").contains(t.expose()));
    }
}
