//! Registrations and assertions built byte by byte by a small authenticator written here (its
//! keys from aws-lc-rs), one per algorithm, and each check failing on its own; and one ceremony
//! recorded from Chromium's virtual authenticator (`chromium.json`).

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeySize, PublicKeyComponents};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RSA_PKCS1_SHA256,
    RsaKeyPair,
};
use coset::CoseKeyBuilder;

use super::*;

const ORIGIN: &str = "http://localhost:7000";
const CHALLENGE: &[u8] = b"0123456789abcdef0123456789abcdef";
const CREDENTIAL_ID: &[u8] = b"credential-1";

enum Key {
    Es256(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
    Rs256(RsaKeyPair),
}

impl Key {
    fn es256() -> Self {
        Key::Es256(EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).expect("p-256"))
    }

    fn ed25519() -> Self {
        Key::Ed25519(Ed25519KeyPair::generate().expect("ed25519"))
    }

    fn rs256() -> Self {
        Key::Rs256(RsaKeyPair::generate(KeySize::Rsa2048).expect("rsa"))
    }

    /// The public key as a COSE_Key.
    fn cose(&self) -> Vec<u8> {
        let key = match self {
            Key::Es256(pair) => {
                let point = pair.public_key().as_ref();
                CoseKeyBuilder::new_ec2_pub_key(
                    iana::EllipticCurve::P_256,
                    point[1..33].to_vec(),
                    point[33..65].to_vec(),
                )
                .algorithm(iana::Algorithm::ES256)
                .build()
            }
            Key::Ed25519(pair) => CoseKeyBuilder::new_okp_key()
                .param(
                    iana::OkpKeyParameter::Crv.to_i64(),
                    Value::from(iana::EllipticCurve::Ed25519.to_i64()),
                )
                .param(
                    iana::OkpKeyParameter::X.to_i64(),
                    Value::Bytes(pair.public_key().as_ref().to_vec()),
                )
                .algorithm(iana::Algorithm::EdDSA)
                .build(),
            Key::Rs256(pair) => {
                let parts = PublicKeyComponents::<Vec<u8>>::from(pair.public_key());
                CoseKeyBuilder::new()
                    .key_type(iana::KeyType::RSA)
                    .param(iana::RsaKeyParameter::N.to_i64(), Value::Bytes(parts.n))
                    .param(iana::RsaKeyParameter::E.to_i64(), Value::Bytes(parts.e))
                    .algorithm(iana::Algorithm::RS256)
                    .build()
            }
        };
        key.to_vec().expect("cose key")
    }

    fn sign(&self, message: &[u8]) -> Vec<u8> {
        match self {
            Key::Es256(pair) => pair
                .sign(&SystemRandom::new(), message)
                .expect("sign")
                .as_ref()
                .to_vec(),
            Key::Ed25519(pair) => pair.sign(message).as_ref().to_vec(),
            Key::Rs256(pair) => {
                let mut signature = vec![0; pair.public_modulus_len()];
                pair.sign(
                    &RSA_PKCS1_SHA256,
                    &SystemRandom::new(),
                    message,
                    &mut signature,
                )
                .expect("sign");
                signature
            }
        }
    }
}

fn rp() -> RelyingParty {
    RelyingParty::new("localhost", &[ORIGIN.to_owned()])
}

fn client_data(kind: &str, challenge: &[u8], origin: &str) -> Vec<u8> {
    format!(
        r#"{{"type":"{kind}","challenge":"{}","origin":"{origin}","crossOrigin":false}}"#,
        URL_SAFE_NO_PAD.encode(challenge)
    )
    .into_bytes()
}

fn auth_data(rp_id: &str, flags: u8, count: u32, attested: Option<&[u8]>) -> Vec<u8> {
    let mut data = digest(&SHA256, rp_id.as_bytes()).as_ref().to_vec();
    data.push(flags | if attested.is_some() { FLAG_AT } else { 0 });
    data.extend_from_slice(&count.to_be_bytes());
    if let Some(cose) = attested {
        data.extend_from_slice(&[0; 16]);
        let len = u16::try_from(CREDENTIAL_ID.len()).expect("short id");
        data.extend_from_slice(&len.to_be_bytes());
        data.extend_from_slice(CREDENTIAL_ID);
        data.extend_from_slice(cose);
    }
    data
}

fn attestation_object(fmt: &str, auth_data: Vec<u8>) -> Vec<u8> {
    let value = Value::Map(vec![
        (Value::from("fmt"), Value::from(fmt)),
        (Value::from("attStmt"), Value::Map(vec![])),
        (Value::from("authData"), Value::Bytes(auth_data)),
    ]);
    let mut bytes = Vec::new();
    coset::cbor::ser::into_writer(&value, &mut bytes).expect("cbor");
    bytes
}

/// A registration of `key` and an assertion by it, both good, with the counter at `count`.
fn ceremony(key: &Key) {
    let cose = key.cose();
    let object = attestation_object(
        "none",
        auth_data("localhost", FLAG_UP | FLAG_UV, 0, Some(&cose)),
    );
    let made = rp()
        .register(
            CHALLENGE,
            &client_data("webauthn.create", CHALLENGE, ORIGIN),
            &object,
            true,
        )
        .expect("registration");
    assert_eq!(made.id, CREDENTIAL_ID);
    assert_eq!(made.sign_count, 0);
    assert!(made.user_verified);
    assert!(!made.backup_eligible);

    let stored = Stored {
        public_key: &made.public_key,
        sign_count: 0,
    };
    let (data, json, signature) = assertion(key, FLAG_UP | FLAG_UV, 5, ORIGIN);
    let asserted = rp()
        .authenticate(CHALLENGE, &json, &data, &signature, stored, true)
        .expect("assertion");
    assert_eq!(
        asserted,
        Asserted {
            sign_count: 5,
            user_verified: true
        }
    );
}

/// authenticatorData, clientDataJSON and signature of an assertion by `key`.
fn assertion(key: &Key, flags: u8, count: u32, origin: &str) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let data = auth_data("localhost", flags, count, None);
    let json = client_data("webauthn.get", CHALLENGE, origin);
    let mut signed = data.clone();
    signed.extend_from_slice(digest(&SHA256, &json).as_ref());
    let signature = key.sign(&signed);
    (data, json, signature)
}

#[test]
fn es256_registers_and_asserts() {
    ceremony(&Key::es256());
}

#[test]
fn eddsa_registers_and_asserts() {
    ceremony(&Key::ed25519());
}

#[test]
fn rs256_registers_and_asserts() {
    ceremony(&Key::rs256());
}

fn register(json: &[u8], object: &[u8]) -> Result<NewCredential, Refused> {
    rp().register(CHALLENGE, json, object, false)
}

fn good_object(key: &Key) -> Vec<u8> {
    attestation_object(
        "none",
        auth_data("localhost", FLAG_UP, 0, Some(&key.cose())),
    )
}

#[test]
fn registration_checks_fail_each_on_its_own() {
    let key = Key::es256();
    let json = client_data("webauthn.create", CHALLENGE, ORIGIN);
    assert!(register(&json, &good_object(&key)).is_ok());

    let wrong_type = client_data("webauthn.get", CHALLENGE, ORIGIN);
    assert_eq!(
        register(&wrong_type, &good_object(&key)),
        Err(Refused::WrongType)
    );
    let other_challenge = client_data("webauthn.create", b"another challenge", ORIGIN);
    assert_eq!(
        register(&other_challenge, &good_object(&key)),
        Err(Refused::WrongChallenge)
    );
    let other_origin = client_data("webauthn.create", CHALLENGE, "http://evil.example");
    assert_eq!(
        register(&other_origin, &good_object(&key)),
        Err(Refused::WrongOrigin)
    );
    let wrong_rp = attestation_object(
        "none",
        auth_data("evil.example", FLAG_UP, 0, Some(&key.cose())),
    );
    assert_eq!(register(&json, &wrong_rp), Err(Refused::WrongRpId));
    let absent = attestation_object("none", auth_data("localhost", 0, 0, Some(&key.cose())));
    assert_eq!(register(&json, &absent), Err(Refused::UserNotPresent));
    let unverified = good_object(&key);
    assert_eq!(
        rp().register(CHALLENGE, &json, &unverified, true),
        Err(Refused::UserNotVerified)
    );
    let packed = attestation_object(
        "packed",
        auth_data("localhost", FLAG_UP, 0, Some(&key.cose())),
    );
    assert_eq!(register(&json, &packed), Err(Refused::Attestation));
    let no_key = attestation_object("none", auth_data("localhost", FLAG_UP, 0, None));
    assert_eq!(
        register(&json, &no_key),
        Err(Refused::Malformed("authenticatorData"))
    );
}

#[test]
fn keys_of_other_algorithms_are_refused() {
    let p384 =
        CoseKeyBuilder::new_ec2_pub_key(iana::EllipticCurve::P_384, vec![1; 48], vec![2; 48])
            .algorithm(iana::Algorithm::ES384)
            .build()
            .to_vec()
            .expect("cose");
    let object = attestation_object("none", auth_data("localhost", FLAG_UP, 0, Some(&p384)));
    let json = client_data("webauthn.create", CHALLENGE, ORIGIN);
    assert_eq!(register(&json, &object), Err(Refused::UnsupportedKey));
    let short_p256 =
        CoseKeyBuilder::new_ec2_pub_key(iana::EllipticCurve::P_256, vec![1; 31], vec![2; 31])
            .algorithm(iana::Algorithm::ES256)
            .build()
            .to_vec()
            .expect("cose");
    let object = attestation_object(
        "none",
        auth_data("localhost", FLAG_UP, 0, Some(&short_p256)),
    );
    assert_eq!(register(&json, &object), Err(Refused::UnsupportedKey));
}

#[test]
fn assertion_checks_fail_each_on_its_own() {
    let key = Key::ed25519();
    let cose = key.cose();
    let stored = |sign_count| Stored {
        public_key: &cose,
        sign_count,
    };
    let check = |(data, json, signature): (Vec<u8>, Vec<u8>, Vec<u8>), count, uv| {
        rp().authenticate(CHALLENGE, &json, &data, &signature, stored(count), uv)
    };
    assert!(check(assertion(&key, FLAG_UP, 0, ORIGIN), 0, false).is_ok());

    // A counter of 0 on both sides is an authenticator that keeps none: allowed.
    assert!(check(assertion(&key, FLAG_UP, 0, ORIGIN), 0, false).is_ok());
    assert_eq!(
        check(assertion(&key, FLAG_UP, 7, ORIGIN), 7, false),
        Err(Refused::CounterRegression)
    );
    assert_eq!(
        check(assertion(&key, FLAG_UP, 0, ORIGIN), 7, false),
        Err(Refused::CounterRegression)
    );
    assert!(check(assertion(&key, FLAG_UP, 8, ORIGIN), 7, false).is_ok());

    assert_eq!(
        check(assertion(&key, FLAG_UP, 1, "http://evil.example"), 0, false),
        Err(Refused::WrongOrigin)
    );
    assert_eq!(
        check(assertion(&key, 0, 1, ORIGIN), 0, false),
        Err(Refused::UserNotPresent)
    );
    assert_eq!(
        check(assertion(&key, FLAG_UP, 1, ORIGIN), 0, true),
        Err(Refused::UserNotVerified)
    );

    let (data, json, mut signature) = assertion(&key, FLAG_UP, 1, ORIGIN);
    signature[0] ^= 1;
    assert_eq!(
        check((data, json, signature), 0, false),
        Err(Refused::BadSignature)
    );
    // Signed by another key.
    let other = Key::ed25519();
    assert_eq!(
        check(assertion(&other, FLAG_UP, 1, ORIGIN), 0, false),
        Err(Refused::BadSignature)
    );
    // The counter is signed: raising it after signing breaks the signature.
    let (mut data, json, signature) = assertion(&key, FLAG_UP, 1, ORIGIN);
    data[36] = 9;
    assert_eq!(
        check((data, json, signature), 0, false),
        Err(Refused::BadSignature)
    );

    let wrong_type = client_data("webauthn.create", CHALLENGE, ORIGIN);
    let data = auth_data("localhost", FLAG_UP, 1, None);
    assert_eq!(
        rp().authenticate(CHALLENGE, &wrong_type, &data, &[0; 64], stored(0), false),
        Err(Refused::WrongType)
    );
    let json = client_data("webauthn.get", CHALLENGE, ORIGIN);
    assert_eq!(
        rp().authenticate(
            b"another challenge",
            &json,
            &data,
            &[0; 64],
            stored(0),
            false
        ),
        Err(Refused::WrongChallenge)
    );
    let other_rp = auth_data("evil.example", FLAG_UP, 1, None);
    assert_eq!(
        rp().authenticate(CHALLENGE, &json, &other_rp, &[0; 64], stored(0), false),
        Err(Refused::WrongRpId)
    );
}

#[test]
fn oversized_and_malformed_input_is_refused_not_a_panic() {
    let key = Key::es256();
    let cose = key.cose();
    let stored = Stored {
        public_key: &cose,
        sign_count: 0,
    };
    let json = client_data("webauthn.get", CHALLENGE, ORIGIN);
    let data = auth_data("localhost", FLAG_UP, 1, None);
    let big = vec![b' '; MAX_CLIENT_DATA + 1];
    assert_eq!(
        rp().authenticate(CHALLENGE, &big, &data, &[0; 64], stored, false),
        Err(Refused::TooLarge("clientDataJSON"))
    );
    assert_eq!(
        rp().authenticate(
            CHALLENGE,
            &json,
            &data,
            &[0; MAX_SIGNATURE + 1],
            stored,
            false
        ),
        Err(Refused::TooLarge("signature"))
    );
    assert_eq!(
        rp().register(CHALLENGE, &json[..10], b"", false),
        Err(Refused::Malformed("clientDataJSON"))
    );
    let create = client_data("webauthn.create", CHALLENGE, ORIGIN);
    for object in [
        &b""[..],
        &b"\xa0"[..],
        &b"\xff\xff"[..],
        &[0x9f; 64][..],
        &vec![0; MAX_ATTESTATION + 1][..],
    ] {
        assert!(register(&create, object).is_err());
    }
    // Every truncation of a good registration and assertion is refused.
    let object = good_object(&key);
    for len in 0..object.len() {
        assert!(register(&create, &object[..len]).is_err(), "{len}");
    }
    for len in 0..data.len() {
        assert!(
            rp().authenticate(CHALLENGE, &json, &data[..len], &[0; 64], stored, false)
                .is_err()
        );
    }
    // A credential id over the bound.
    let mut long = auth_data("localhost", FLAG_UP | FLAG_AT, 0, None);
    long.extend_from_slice(&[0; 16]);
    long.extend_from_slice(&2000u16.to_be_bytes());
    long.extend_from_slice(&[7; 2000]);
    long.extend_from_slice(&cose);
    assert_eq!(
        register(&create, &attestation_object("none", long)),
        Err(Refused::TooLarge("credential id"))
    );
}

#[test]
fn a_ceremony_recorded_from_chromium_verifies() {
    let fixture: serde_json::Value =
        serde_json::from_str(include_str!("chromium.json")).expect("fixture");
    let field = |name: &str| {
        URL_SAFE_NO_PAD
            .decode(fixture[name].as_str().expect(name))
            .expect(name)
    };
    let origin = fixture["origin"].as_str().expect("origin").to_owned();
    let rp = RelyingParty::new("localhost", &[origin]);
    let made = rp
        .register(
            &[7; 32],
            &field("client_data_create"),
            &field("attestation"),
            true,
        )
        .expect("registration");
    assert_eq!(made.id, field("id"));
    assert_eq!(made.alg, iana::Algorithm::ES256.to_i64());
    assert_eq!(
        made.sign_count, 1,
        "Chromium's virtual authenticator counts"
    );
    assert!(made.user_verified && !made.backup_eligible);
    assert_eq!(field("user_handle"), b"alice");
    let stored = |sign_count| Stored {
        public_key: &made.public_key,
        sign_count,
    };
    let assert = |challenge: &[u8], stored| {
        rp.authenticate(
            challenge,
            &field("client_data_get"),
            &field("authenticator_data"),
            &field("signature"),
            stored,
            true,
        )
    };
    assert_eq!(
        assert(&[8; 32], stored(made.sign_count)),
        Ok(Asserted {
            sign_count: 2,
            user_verified: true
        })
    );
    // The same assertion once its counter was kept: a clone, or a replay.
    assert_eq!(assert(&[8; 32], stored(2)), Err(Refused::CounterRegression));
    assert_eq!(
        assert(&[9; 32], stored(made.sign_count)),
        Err(Refused::WrongChallenge)
    );
    let elsewhere = RelyingParty::new("localhost", &["http://localhost:1".to_owned()]);
    assert_eq!(
        elsewhere.register(
            &[7; 32],
            &field("client_data_create"),
            &field("attestation"),
            true
        ),
        Err(Refused::WrongOrigin)
    );
}
