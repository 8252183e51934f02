//! Passkeys (WebAuthn Level 2), the relying party's checks: what a browser's
//! `navigator.credentials.create()` and `.get()` send back, verified without I/O.
//!
//! * [`RelyingParty::register`]: a registration (`webauthn.create`) with attestation `none`;
//!   gives the new credential's id, COSE public key and counter.
//! * [`RelyingParty::authenticate`]: an assertion (`webauthn.get`) against a stored credential;
//!   gives the new counter.
//!
//! Both check the type, the challenge, the origin, the rpIdHash and the UP (and, when asked,
//! UV) flags; an assertion also checks its signature (ES256, EdDSA or RS256 through aws-lc-rs)
//! and the signature counter. That a challenge is used once is the caller's: it keeps each in
//! the store and takes it back once. Every input is bounded before it is parsed, and bad input is
//! a [`Refused`], never a panic.

use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_ASN1, ED25519, RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents,
    UnparsedPublicKey,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use coset::cbor::Value;
use coset::iana::{self, EnumI64};
use coset::{AsCborValue, CborSerializable, CoseKey, KeyType, Label, RegisteredLabelWithPrivate};
use serde::Deserialize;
use subtle::ConstantTimeEq;

/// Longest clientDataJSON taken (browsers send a few hundred bytes).
pub const MAX_CLIENT_DATA: usize = 4096;
/// Longest user handle: WebAuthn's bound (64 bytes). Ours is the username, which the
/// authenticator keeps as the credential's name anyway.
pub const MAX_USER_HANDLE: usize = 64;
/// Longest attestationObject taken (an RSA-4096 key and a long credential id fit many times).
pub const MAX_ATTESTATION: usize = 16 * 1024;
/// Longest authenticatorData of an assertion taken.
pub const MAX_AUTHENTICATOR_DATA: usize = 4096;
/// Longest signature taken (RSA-8192 is 1024 bytes).
pub const MAX_SIGNATURE: usize = 1024;
/// Longest credential id (WebAuthn Level 2 §5.8.1: at most 1023 bytes).
pub const MAX_CREDENTIAL_ID: usize = 1023;

/// User present.
const FLAG_UP: u8 = 0x01;
/// User verified.
const FLAG_UV: u8 = 0x04;
/// Backup eligible (a synced passkey).
const FLAG_BE: u8 = 0x08;
/// Attested credential data included.
const FLAG_AT: u8 = 0x40;
/// Extension data included.
const FLAG_ED: u8 = 0x80;

/// Why a registration or an assertion was refused. The page says only that it failed; the
/// variant is for the log (it holds no credential nor challenge).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// An input over its bound.
    #[error("{0} too large")]
    TooLarge(&'static str),
    /// An input that does not parse.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// clientDataJSON's `type` is not this ceremony's.
    #[error("wrong ceremony type")]
    WrongType,
    /// clientDataJSON's `challenge` is not the one given.
    #[error("wrong challenge")]
    WrongChallenge,
    /// clientDataJSON's `origin` is none of the configured ones, or the call was cross-origin.
    #[error("origin not allowed")]
    WrongOrigin,
    /// authenticatorData's rpIdHash is not SHA-256 of the configured rp_id.
    #[error("wrong rpIdHash")]
    WrongRpId,
    /// The UP flag is off.
    #[error("user not present")]
    UserNotPresent,
    /// The UV flag is off where user verification is required.
    #[error("user not verified")]
    UserNotVerified,
    /// An attestation format other than `none`.
    #[error("attestation format not supported")]
    Attestation,
    /// A public key of an algorithm or curve other than ES256, EdDSA (Ed25519) and RS256.
    #[error("public key algorithm not supported")]
    UnsupportedKey,
    /// The assertion's signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// The signature counter did not grow (a cloned authenticator?).
    #[error("signature counter went back")]
    CounterRegression,
}

/// The relying party: its id and the origins its pages are served from.
#[derive(Debug, Clone)]
pub struct RelyingParty {
    rp_id: String,
    rp_id_hash: [u8; 32],
    origins: Vec<String>,
}

/// A credential made by a registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCredential {
    /// The credential id.
    pub id: Vec<u8>,
    /// Its COSE_Key, as the authenticator encoded it.
    pub public_key: Vec<u8>,
    /// Its COSE algorithm (-7 ES256, -8 EdDSA, -257 RS256).
    pub alg: i64,
    /// The signature counter (0 when the authenticator keeps none).
    pub sign_count: u32,
    /// Whether the user was verified (UV).
    pub user_verified: bool,
    /// Whether it may be synced to other devices (BE): a software key rather than a hardware one.
    pub backup_eligible: bool,
}

/// What a good assertion proved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asserted {
    /// The new signature counter, to keep.
    pub sign_count: u32,
    /// Whether the user was verified (UV).
    pub user_verified: bool,
}

/// A stored credential, as an assertion is checked against it.
#[derive(Debug, Clone, Copy)]
pub struct Stored<'a> {
    /// Its COSE_Key.
    pub public_key: &'a [u8],
    /// The last signature counter seen.
    pub sign_count: u32,
}

/// The parts of clientDataJSON checked.
#[derive(Deserialize)]
struct ClientData {
    #[serde(rename = "type")]
    kind: String,
    challenge: String,
    origin: String,
    #[serde(rename = "crossOrigin", default)]
    cross_origin: bool,
}

/// authenticatorData, parsed.
struct AuthData<'a> {
    rp_id_hash: &'a [u8],
    flags: u8,
    sign_count: u32,
    /// With the AT flag: the credential id and the rest (its COSE key, then any extensions).
    attested: Option<(&'a [u8], &'a [u8])>,
}

impl RelyingParty {
    /// The relying party `rp_id` (a domain, `localhost` in tests) served from `origins`
    /// (`https://login.example.com`, exactly as a browser writes them).
    pub fn new(rp_id: &str, origins: &[String]) -> Self {
        let mut rp_id_hash = [0u8; 32];
        rp_id_hash.copy_from_slice(digest(&SHA256, rp_id.as_bytes()).as_ref());
        Self {
            rp_id: rp_id.to_owned(),
            rp_id_hash,
            origins: origins.to_vec(),
        }
    }

    /// The relying party id, as the browser is told it.
    pub fn id(&self) -> &str {
        &self.rp_id
    }

    /// Checks a registration answering `challenge`: clientDataJSON and attestationObject as
    /// the browser sent them.
    pub fn register(
        &self,
        challenge: &[u8],
        client_data_json: &[u8],
        attestation_object: &[u8],
        require_uv: bool,
    ) -> Result<NewCredential, Refused> {
        self.client_data(client_data_json, "webauthn.create", challenge)?;
        if attestation_object.len() > MAX_ATTESTATION {
            return Err(Refused::TooLarge("attestationObject"));
        }
        let (fmt, statement, auth_data) = attestation(attestation_object)?;
        if fmt != "none" || !statement.is_empty() {
            return Err(Refused::Attestation);
        }
        let data = self.auth_data(&auth_data, require_uv)?;
        let Some((id, rest)) = data.attested else {
            return Err(Refused::Malformed("authenticatorData"));
        };
        let (key, extensions) = cose_key(rest)?;
        if !extensions.is_empty() && data.flags & FLAG_ED == 0 {
            return Err(Refused::Malformed("authenticatorData"));
        }
        let alg = key_alg(&key)?;
        Ok(NewCredential {
            id: id.to_vec(),
            public_key: key
                .to_vec()
                .map_err(|_| Refused::Malformed("credential public key"))?,
            alg,
            sign_count: data.sign_count,
            user_verified: data.flags & FLAG_UV != 0,
            backup_eligible: data.flags & FLAG_BE != 0,
        })
    }

    /// Checks an assertion answering `challenge` against the `stored` credential the browser
    /// named.
    pub fn authenticate(
        &self,
        challenge: &[u8],
        client_data_json: &[u8],
        authenticator_data: &[u8],
        signature: &[u8],
        stored: Stored<'_>,
        require_uv: bool,
    ) -> Result<Asserted, Refused> {
        self.client_data(client_data_json, "webauthn.get", challenge)?;
        if authenticator_data.len() > MAX_AUTHENTICATOR_DATA {
            return Err(Refused::TooLarge("authenticatorData"));
        }
        if signature.len() > MAX_SIGNATURE {
            return Err(Refused::TooLarge("signature"));
        }
        let data = self.auth_data(authenticator_data, require_uv)?;
        let key = CoseKey::from_slice(stored.public_key)
            .map_err(|_| Refused::Malformed("stored public key"))?;
        let mut signed = authenticator_data.to_vec();
        signed.extend_from_slice(digest(&SHA256, client_data_json).as_ref());
        verify_signature(&key, &signed, signature)?;
        if (data.sign_count != 0 || stored.sign_count != 0) && data.sign_count <= stored.sign_count
        {
            return Err(Refused::CounterRegression);
        }
        Ok(Asserted {
            sign_count: data.sign_count,
            user_verified: data.flags & FLAG_UV != 0,
        })
    }

    /// Checks clientDataJSON: its type, its challenge, its origin.
    fn client_data(&self, json: &[u8], kind: &str, challenge: &[u8]) -> Result<(), Refused> {
        if json.len() > MAX_CLIENT_DATA {
            return Err(Refused::TooLarge("clientDataJSON"));
        }
        let data: ClientData =
            serde_json::from_slice(json).map_err(|_| Refused::Malformed("clientDataJSON"))?;
        if data.kind != kind {
            return Err(Refused::WrongType);
        }
        let sent = URL_SAFE_NO_PAD
            .decode(data.challenge.trim_end_matches('='))
            .map_err(|_| Refused::WrongChallenge)?;
        if challenge.is_empty() || !bool::from(sent.as_slice().ct_eq(challenge)) {
            return Err(Refused::WrongChallenge);
        }
        if data.cross_origin || !self.origins.contains(&data.origin) {
            return Err(Refused::WrongOrigin);
        }
        Ok(())
    }

    /// Parses authenticatorData and checks its rpIdHash and flags.
    fn auth_data<'a>(&self, bytes: &'a [u8], require_uv: bool) -> Result<AuthData<'a>, Refused> {
        let data = parse_auth_data(bytes)?;
        if !bool::from(data.rp_id_hash.ct_eq(&self.rp_id_hash)) {
            return Err(Refused::WrongRpId);
        }
        if data.flags & FLAG_UP == 0 {
            return Err(Refused::UserNotPresent);
        }
        if require_uv && data.flags & FLAG_UV == 0 {
            return Err(Refused::UserNotVerified);
        }
        Ok(data)
    }
}

/// Splits authenticatorData: rpIdHash (32), flags (1), signCount (4, big-endian), then with
/// the AT flag aaguid (16), credential id length (2) and the credential id.
fn parse_auth_data(bytes: &[u8]) -> Result<AuthData<'_>, Refused> {
    let malformed = Refused::Malformed("authenticatorData");
    let (rp_id_hash, rest) = bytes.split_at_checked(32).ok_or(malformed)?;
    let (&flags, rest) = rest.split_first().ok_or(malformed)?;
    let (count, rest) = rest.split_at_checked(4).ok_or(malformed)?;
    let sign_count = u32::from_be_bytes(count.try_into().map_err(|_| malformed)?);
    let attested = if flags & FLAG_AT != 0 {
        let (_aaguid, rest) = rest.split_at_checked(16).ok_or(malformed)?;
        let (len, rest) = rest.split_at_checked(2).ok_or(malformed)?;
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        if len == 0 || len > MAX_CREDENTIAL_ID {
            return Err(Refused::TooLarge("credential id"));
        }
        let (id, rest) = rest.split_at_checked(len).ok_or(malformed)?;
        Some((id, rest))
    } else if flags & FLAG_ED == 0 && !rest.is_empty() {
        return Err(malformed);
    } else {
        None
    };
    Ok(AuthData {
        rp_id_hash,
        flags,
        sign_count,
        attested,
    })
}

/// The COSE_Key at the start of `bytes`, and what follows it (extensions).
fn cose_key(bytes: &[u8]) -> Result<(CoseKey, &[u8]), Refused> {
    let malformed = Refused::Malformed("credential public key");
    let mut rest = bytes;
    let value: Value = coset::cbor::de::from_reader(&mut rest).map_err(|_| malformed)?;
    let key = CoseKey::from_cbor_value(value).map_err(|_| malformed)?;
    Ok((key, rest))
}

/// An attestationObject's `fmt`, `attStmt` (as its entries) and `authData`.
type Attestation = (String, Vec<(Value, Value)>, Vec<u8>);

/// Splits an attestationObject.
fn attestation(bytes: &[u8]) -> Result<Attestation, Refused> {
    let malformed = Refused::Malformed("attestationObject");
    let mut rest = bytes;
    let value: Value = coset::cbor::de::from_reader(&mut rest).map_err(|_| malformed)?;
    if !rest.is_empty() {
        return Err(malformed);
    }
    let Value::Map(entries) = value else {
        return Err(malformed);
    };
    let (mut fmt, mut statement, mut auth_data) = (None, None, None);
    for (k, v) in entries {
        match (k.as_text(), v) {
            (Some("fmt"), Value::Text(t)) => fmt = Some(t),
            (Some("attStmt"), Value::Map(m)) => statement = Some(m),
            (Some("authData"), Value::Bytes(b)) => auth_data = Some(b),
            _ => return Err(malformed),
        }
    }
    match (fmt, statement, auth_data) {
        (Some(f), Some(s), Some(a)) => Ok((f, s, a)),
        _ => Err(malformed),
    }
}

/// A key parameter of `key` as bytes.
fn param(key: &CoseKey, label: i64) -> Option<&[u8]> {
    key.params
        .iter()
        .find(|(l, _)| *l == Label::Int(label))
        .and_then(|(_, v)| v.as_bytes())
        .map(Vec::as_slice)
}

/// A key parameter of `key` as an integer.
fn int_param(key: &CoseKey, label: i64) -> Option<i64> {
    key.params
        .iter()
        .find(|(l, _)| *l == Label::Int(label))
        .and_then(|(_, v)| v.as_integer())
        .and_then(|i| i64::try_from(i).ok())
}

/// The algorithm of a key this relying party takes: ES256 on P-256, EdDSA on Ed25519 or RS256
/// (2048 bits or more), each with its key's parameters of the right size.
fn key_alg(key: &CoseKey) -> Result<i64, Refused> {
    let alg = match &key.alg {
        Some(RegisteredLabelWithPrivate::Assigned(alg)) => *alg,
        _ => return Err(Refused::UnsupportedKey),
    };
    let ok = match (&key.kty, alg) {
        (KeyType::Assigned(iana::KeyType::EC2), iana::Algorithm::ES256) => {
            int_param(key, iana::Ec2KeyParameter::Crv.to_i64())
                == Some(iana::EllipticCurve::P_256.to_i64())
                && param(key, iana::Ec2KeyParameter::X.to_i64()).map(<[u8]>::len) == Some(32)
                && param(key, iana::Ec2KeyParameter::Y.to_i64()).map(<[u8]>::len) == Some(32)
        }
        (KeyType::Assigned(iana::KeyType::OKP), iana::Algorithm::EdDSA) => {
            int_param(key, iana::OkpKeyParameter::Crv.to_i64())
                == Some(iana::EllipticCurve::Ed25519.to_i64())
                && param(key, iana::OkpKeyParameter::X.to_i64()).map(<[u8]>::len) == Some(32)
        }
        (KeyType::Assigned(iana::KeyType::RSA), iana::Algorithm::RS256) => {
            let n = param(key, iana::RsaKeyParameter::N.to_i64()).map(strip_zeros);
            let e = param(key, iana::RsaKeyParameter::E.to_i64()).map(strip_zeros);
            matches!((n, e), (Some(n), Some(e)) if (256..=1024).contains(&n.len()) && !e.is_empty() && e.len() <= 8)
        }
        _ => false,
    };
    if ok {
        Ok(alg.to_i64())
    } else {
        Err(Refused::UnsupportedKey)
    }
}

fn strip_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

/// Verifies `signature` over `message` with `key`.
fn verify_signature(key: &CoseKey, message: &[u8], signature: &[u8]) -> Result<(), Refused> {
    let alg = key_alg(key)?;
    let verified = if alg == iana::Algorithm::ES256.to_i64() {
        let sec1 = key
            .to_sec1_octet_string()
            .map_err(|_| Refused::UnsupportedKey)?;
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, sec1).verify(message, signature)
    } else if alg == iana::Algorithm::EdDSA.to_i64() {
        let x = param(key, iana::OkpKeyParameter::X.to_i64()).ok_or(Refused::UnsupportedKey)?;
        UnparsedPublicKey::new(&ED25519, x).verify(message, signature)
    } else {
        let n = param(key, iana::RsaKeyParameter::N.to_i64()).ok_or(Refused::UnsupportedKey)?;
        let e = param(key, iana::RsaKeyParameter::E.to_i64()).ok_or(Refused::UnsupportedKey)?;
        RsaPublicKeyComponents {
            n: strip_zeros(n),
            e: strip_zeros(e),
        }
        .verify(&RSA_PKCS1_2048_8192_SHA256, message, signature)
    };
    verified.map_err(|_| Refused::BadSignature)
}

#[cfg(test)]
mod tests;
