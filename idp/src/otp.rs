//! Time-based one-time passwords (RFC 6238, over RFC 4226's HOTP): the second factor of local
//! users. SHA-1, 6 digits, 30 s steps, one step of drift either way; HMAC from aws-lc-rs.
//!
//! A code proves the step it was made for; the store keeps the last step each user used
//! (`UserDirectory::use_otp_step`), so that a code is taken once by every IdP replica.

use aws_lc_rs::hmac;
use base64::Engine;
use subtle::ConstantTimeEq;

/// Seconds per step.
pub const STEP: u64 = 30;
/// Digits of a code.
pub const DIGITS: u32 = 6;
/// Bytes of a new secret (160 bits, as RFC 4226 recommends).
const SECRET_BYTES: usize = 20;
/// The RFC 4648 base32 alphabet, in which authenticator apps take secrets.
const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// HOTP (RFC 4226 §5.3): the `digits`-digit code of `counter` under `secret`.
pub fn hotp(secret: &[u8], counter: u64, digits: u32) -> u32 {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let tag = hmac::sign(&key, &counter.to_be_bytes());
    let mac = tag.as_ref();
    let offset = usize::from(mac[mac.len() - 1] & 0x0f);
    let binary = u32::from_be_bytes([
        mac[offset] & 0x7f,
        mac[offset + 1],
        mac[offset + 2],
        mac[offset + 3],
    ]);
    binary % 10u32.pow(digits)
}

/// The code of `step` as a user types it: zero-padded to `digits`.
fn code_text(secret: &[u8], step: u64, digits: u32) -> String {
    format!(
        "{:0width$}",
        hotp(secret, step, digits),
        width = digits as usize
    )
}

/// The step `code` was made for, if it is one of the steps around `now` (Unix seconds): the
/// current one, the one before or the one after. Every candidate is compared in constant time.
pub fn verify(secret: &[u8], code: &str, now: u64) -> Option<u64> {
    let code = code.trim();
    if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let current = now / STEP;
    let mut found = None;
    for step in [current.saturating_sub(1), current, current + 1] {
        let expected = code_text(secret, step, DIGITS);
        if bool::from(expected.as_bytes().ct_eq(code.as_bytes())) && found.is_none() {
            found = Some(step);
        }
    }
    found
}

/// A new random secret.
pub fn new_secret() -> Vec<u8> {
    let mut bytes = vec![0u8; SECRET_BYTES];
    // No randomness means no secret worth having: an all-zero one would be guessable, so the
    // failure is an invariant violation of the platform.
    #[allow(clippy::expect_used)]
    aws_lc_rs::rand::fill(&mut bytes).expect("operating system random number generator failed");
    bytes
}

/// `bytes` in unpadded base32, as authenticator apps take a secret.
pub fn base32(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(BASE32[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(BASE32[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

/// The QR code of `text` as an SVG image: dark modules on white with a four-module quiet zone,
/// made from the code's modules alone (nothing of `text` appears in the markup).
pub fn qr_svg(text: &str) -> Option<String> {
    use std::fmt::Write as _;
    let qr = qrcodegen::QrCode::encode_text(text, qrcodegen::QrCodeEcc::Medium).ok()?;
    let border = 4;
    let size = qr.size();
    let mut path = String::new();
    for y in 0..size {
        for x in 0..size {
            if qr.get_module(x, y) {
                let _ = write!(path, "M{},{}h1v1h-1z", x + border, y + border);
            }
        }
    }
    let dim = size + 2 * border;
    Some(format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {dim} {dim}" width="240" height="240" role="img" aria-label="QR code to scan with an authenticator app" shape-rendering="crispEdges"><rect width="{dim}" height="{dim}" fill="#fff"/><path d="{path}" fill="#000"/></svg>"##
    ))
}

/// The secret as the store keeps it (base64url), and back.
pub fn encode_secret(secret: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
}

/// The secret of a stored text; `None` for text that is not one.
pub fn decode_secret(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .ok()
        .filter(|s| !s.is_empty())
}

/// The `otpauth://` URI an authenticator app reads (from its QR code): the account is
/// `issuer:username`, both percent-encoded.
pub fn otpauth_uri(issuer: &str, username: &str, secret: &[u8]) -> String {
    let label = format!("{issuer}:{username}");
    let query = serde_urlencoded::to_string([
        ("secret", base32(secret).as_str()),
        ("issuer", issuer),
        ("algorithm", "SHA1"),
        ("digits", "6"),
        ("period", "30"),
    ])
    .unwrap_or_default();
    format!("otpauth://totp/{}?{query}", percent_encode(&label))
}

/// Every byte but unreserved characters (RFC 3986) as `%XX`.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 Appendix B's SHA-1 secret.
    const RFC_SECRET: &[u8] = b"12345678901234567890";

    #[test]
    fn rfc_6238_sha1_vectors() {
        for (t, code) in [
            (59u64, 94_287_082u32),
            (1_111_111_109, 7_081_804),
            (1_111_111_111, 14_050_471),
            (1_234_567_890, 89_005_924),
            (2_000_000_000, 69_279_037),
            (20_000_000_000, 65_353_130),
        ] {
            assert_eq!(hotp(RFC_SECRET, t / STEP, 8), code, "t = {t}");
        }
    }

    #[test]
    fn rfc_4226_hotp_vectors() {
        let codes = [755_224, 287_082, 359_152, 969_429, 338_314];
        for (counter, code) in codes.into_iter().enumerate() {
            assert_eq!(hotp(RFC_SECRET, counter as u64, 6), code);
        }
    }

    #[test]
    fn a_code_verifies_one_step_either_way_and_names_its_step() {
        let now = 1_700_000_000;
        let step = now / STEP;
        let code = code_text(RFC_SECRET, step, DIGITS);
        assert_eq!(verify(RFC_SECRET, &code, now), Some(step));
        assert_eq!(verify(RFC_SECRET, &code, now + STEP), Some(step));
        assert_eq!(verify(RFC_SECRET, &code, now - STEP), Some(step));
        assert_eq!(verify(RFC_SECRET, &code, now + 2 * STEP), None);
        assert_eq!(verify(RFC_SECRET, &format!(" {code} "), now), Some(step));
        for bad in ["", "12345", "1234567", "abcdef", "١٢٣٤٥٦"] {
            assert_eq!(verify(RFC_SECRET, bad, now), None, "{bad}");
        }
        assert_eq!(verify(b"another secret......", &code, now), None);
    }

    #[test]
    fn secrets_travel_in_base32_and_base64url() {
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        assert_eq!(base32(RFC_SECRET), "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
        let secret = new_secret();
        assert_eq!(secret.len(), SECRET_BYTES);
        assert_eq!(decode_secret(&encode_secret(&secret)), Some(secret));
        assert_eq!(decode_secret("not base64!"), None);
        let svg = qr_svg("otpauth://totp/x").expect("a QR code");
        assert!(
            svg.starts_with("<svg") && svg.contains("<path d=\"M4,4h1v1h-1z"),
            "{svg}"
        );
        assert!(!svg.contains("otpauth"));
        let uri = otpauth_uri("tokengate", "alice smith", RFC_SECRET);
        assert_eq!(
            uri,
            "otpauth://totp/tokengate%3Aalice%20smith?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=tokengate&algorithm=SHA1&digits=6&period=30"
        );
    }
}
