//! Signing keys and the `openssl` command line, both ways: what `tokengate gen-key` writes,
//! OpenSSL reads; what `openssl genpkey` (and `ecparam -genkey`) writes, the IdP signs with,
//! and the published JWKS and OpenSSL itself verify. Needs Debian's `openssl` (`.ci/run`
//! installs it).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use support::*;
use tokengate_idp::keys::{KeySet, SigningKey};
use tokengate_store::Verifier;

/// Runs `openssl` with `args` and returns its standard output; panics with its standard error
/// when it fails.
fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl ({e}): install Debian's `openssl`"));
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn shell(script: &str) {
    let out = Command::new("sh").args(["-c", script]).output().unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tokengate-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The raw public key OpenSSL derives from a private key file: the 32 bytes of an Ed25519 key,
/// or the uncompressed P-256 point (0x04 || x || y). Both sit at the end of the SPKI DER.
fn openssl_public_key(file: &Path) -> Vec<u8> {
    let spki = openssl(&["pkey", "-in", path(file), "-pubout", "-outform", "DER"]);
    let len = if spki.len() == 44 { 32 } else { 65 };
    spki[spki.len() - len..].to_vec()
}

/// The raw public key in a published JWK.
fn jwk_public_key(jwk: &serde_json::Value) -> Vec<u8> {
    let part = |name: &str| URL_SAFE_NO_PAD.decode(jwk[name].as_str().unwrap()).unwrap();
    match jwk["kty"].as_str().unwrap() {
        "OKP" => part("x"),
        "EC" => [vec![4], part("x"), part("y")].concat(),
        other => panic!("unexpected key type {other}"),
    }
}

fn jwks_of(file: &Path) -> serde_json::Value {
    let set = KeySet::new(vec![SigningKey::load(file).unwrap()]).unwrap();
    serde_json::from_slice(set.jwks()).unwrap()
}

#[test]
fn gen_key_writes_keys_that_openssl_reads() {
    let dir = temp_dir("gen-key-openssl");
    for (alg, kind) in [("ed25519", "ED25519"), ("p256", "prime256v1")] {
        let file = dir.join(format!("{alg}.pem"));
        let made = Command::new(env!("CARGO_BIN_EXE_tokengate"))
            .args(["gen-key", "--alg", alg, "--out", path(&file)])
            .output()
            .unwrap();
        assert!(made.status.success(), "gen-key: {made:?}");
        // `openssl pkey` parses it, as the kind of key it is...
        let text =
            String::from_utf8(openssl(&["pkey", "-in", path(&file), "-noout", "-text"])).unwrap();
        assert!(text.contains(kind), "{alg}: openssl sees {text}");
        // ...and derives the public key the IdP publishes.
        assert_eq!(
            openssl_public_key(&file),
            jwk_public_key(&jwks_of(&file)["keys"][0]),
            "{alg}: OpenSSL and the JWKS disagree on the public key"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// ECDSA's fixed-size `r || s` (JWS) as the DER `ECDSA-Sig-Value` OpenSSL verifies.
fn ecdsa_der(raw: &[u8]) -> Vec<u8> {
    let int = |b: &[u8]| {
        let b = &b[b.iter().take_while(|x| **x == 0).count().min(b.len() - 1)..];
        let pad = b[0] & 0x80 != 0;
        let mut out = vec![0x02, (b.len() + usize::from(pad)) as u8];
        if pad {
            out.push(0);
        }
        out.extend_from_slice(b);
        out
    };
    let body = [int(&raw[..32]), int(&raw[32..])].concat();
    [vec![0x30, body.len() as u8], body].concat()
}

/// Verifies a compact JWS with OpenSSL and the public key of `key_file`.
fn openssl_verifies(jwt: &str, key_file: &Path, dir: &Path) -> bool {
    let (input, signature) = jwt.rsplit_once('.').unwrap();
    let signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
    let (public, data, sig) = (dir.join("pub.pem"), dir.join("data"), dir.join("sig"));
    std::fs::write(&data, input).unwrap();
    openssl(&[
        "pkey",
        "-in",
        path(key_file),
        "-pubout",
        "-out",
        path(&public),
    ]);
    let alg = jsonwebtoken::decode_header(jwt).unwrap().alg;
    let args: Vec<&str> = if alg == jsonwebtoken::Algorithm::EdDSA {
        std::fs::write(&sig, &signature).unwrap();
        vec![
            "pkeyutl",
            "-verify",
            "-pubin",
            "-inkey",
            path(&public),
            "-rawin",
            "-in",
            path(&data),
            "-sigfile",
            path(&sig),
        ]
    } else {
        std::fs::write(&sig, ecdsa_der(&signature)).unwrap();
        vec![
            "dgst",
            "-sha256",
            "-verify",
            path(&public),
            "-signature",
            path(&sig),
            path(&data),
        ]
    };
    Command::new("openssl")
        .args(&args)
        .output()
        .unwrap()
        .status
        .success()
}

#[tokio::test]
async fn the_idp_signs_with_keys_openssl_made() {
    let dir = temp_dir("openssl-keys");
    let made = [
        (
            "genpkey-ed25519",
            "openssl genpkey -algorithm ed25519 -out {}",
        ),
        (
            "genpkey-p256",
            "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out {}",
        ),
        (
            "ecparam-pkcs8",
            "openssl ecparam -genkey -name prime256v1 | openssl pkcs8 -topk8 -nocrypt -out {}",
        ),
        // SEC1 `EC PRIVATE KEY` after an `EC PARAMETERS` block, as `ecparam -genkey` writes it.
        (
            "ecparam-sec1",
            "openssl ecparam -genkey -name prime256v1 -out {}",
        ),
    ];
    let redis = TestRedis::start();
    for (name, command) in made {
        let file = dir.join(format!("{name}.pem"));
        shell(&command.replace("{}", path(&file)));
        let mut config = idp_config(&redis.url());
        config.tokens.signing_keys = vec![file.clone()];
        let keys = KeySet::load(&config.signing_key_paths())
            .unwrap_or_else(|e| panic!("{name}: the IdP cannot read it: {e}"));
        let idp = TestIdp::spawn_with_keys(config, keys).await;

        let jwks = idp.jwks().await;
        assert_eq!(
            jwk_public_key(&jwks["keys"][0]),
            openssl_public_key(&file),
            "{name}: the JWKS publishes another key than OpenSSL's"
        );
        let token = idp.login("alice").await;
        let verified = idp.verify(&token).await;
        assert_eq!(verified.status, 200, "{name}");
        let jwt = verified.header("x-auth-value-token").unwrap().to_owned();
        let claims = Verifier::new(&serde_json::from_value(jwks).unwrap(), &idp.url(""))
            .verify(&jwt)
            .unwrap_or_else(|e| panic!("{name}: the JWKS does not verify it: {e}"));
        assert_eq!(claims.sub, "alice");
        assert!(
            openssl_verifies(&jwt, &file, &dir),
            "{name}: OpenSSL does not verify the IdP's signature"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
