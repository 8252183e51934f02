//! What every fuzz target checks, shared by `cargo fuzz` (fuzz/fuzz_targets) and by the replay
//! of the corpus in `cargo test` (tests/fuzz_corpus.rs). Each takes arbitrary bytes and must
//! neither panic nor accept what it should refuse.

#![allow(dead_code)] // each fuzz target uses one check

use std::path::Path;
use std::sync::OnceLock;

use tokengate_store::{ReferenceToken, Verifier, bearer_credentials};

/// `Authorization` header value → bearer credentials → reference token → session id.
pub fn bearer(data: &[u8]) {
    let Some(credentials) = bearer_credentials(data) else {
        return;
    };
    assert!(!credentials.is_empty(), "empty credentials accepted");
    assert!(
        credentials.bytes().all(|b| b.is_ascii_graphic()),
        "credentials with spaces, controls or non-ASCII accepted: {credentials:?}"
    );
    if let Ok(token) = ReferenceToken::parse(credentials) {
        assert_eq!(token.expose(), credentials);
        let sid = token.session_id();
        assert_eq!(sid.as_str().len(), 22);
        assert_eq!(sid, token.session_id(), "session id not deterministic");
    }
}

/// A verifier for one fixed Ed25519 key (RFC 8037's example): no input the fuzzer makes carries
/// a valid signature, so nothing may verify.
fn verifier() -> &'static Verifier {
    static VERIFIER: OnceLock<Verifier> = OnceLock::new();
    VERIFIER.get_or_init(|| {
        let jwks = serde_json::json!({ "keys": [{
            "kty": "OKP", "crv": "Ed25519", "kid": "fuzz", "alg": "EdDSA", "use": "sig",
            "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
        }]});
        match serde_json::from_value(jwks) {
            Ok(set) => Verifier::new(&set, "tokengate"),
            Err(e) => panic!("the fuzz JWKS does not parse: {e}"),
        }
    })
}

/// A value token as read from the store: header, claims and signature checks.
pub fn value_token(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = Verifier::key_id(&text);
    assert!(
        verifier().verify(&text).is_err(),
        "a token verified without the private key: {text:?}"
    );
}

/// A session hash and an event entry as read from Redis.
pub fn store_record(data: &[u8]) {
    tokengate_store::testing::fuzz::session_record(data);
    tokengate_store::testing::fuzz::event_entry(data);
}

/// Both config files: parse, then validate; errors name the file.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("fuzz.toml");
    let named = |e: tokengate_idp::config::ConfigError| {
        assert!(
            e.to_string().contains("fuzz.toml"),
            "error without the file: {e}"
        );
    };
    match tokengate_idp::config::IdpConfig::parse(text, path) {
        Ok(c) => c.validate(path).map_or_else(named, |()| ()),
        Err(e) => named(e),
    }
    match tokengate_gateway::config::GatewayConfig::parse(text, path) {
        Ok(c) => c.validate(path).map_or_else(named, |()| ()),
        Err(e) => named(e),
    }
}
