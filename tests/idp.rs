//! The IdP end to end: real sockets, a real Redis started by the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use support::*;
use tokengate_store::{Claims, Verifier};

async fn setup() -> (TestRedis, TestIdp) {
    let redis = TestRedis::start();
    let idp = TestIdp::spawn(idp_config(&redis.url())).await;
    (redis, idp)
}

fn basic(id: &str, secret: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
}

async fn verifier(idp: &TestIdp) -> Verifier {
    Verifier::new(
        &serde_json::from_value(idp.jwks().await).unwrap(),
        &idp.url(""),
    )
}

#[tokio::test]
async fn login_gives_an_opaque_token_that_verifies_to_a_signed_value_token() {
    let (_redis, idp) = setup().await;
    let r = post_form(
        &idp.url("/oauth2/token"),
        &[],
        "grant_type=password&client_id=cli&username=alice&password=wonderland",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let body = r.json();
    assert_eq!(body["token_type"], "Bearer");
    assert!(body["expires_in"].as_u64().unwrap() > 0);
    let token = body["access_token"].as_str().unwrap();
    assert!(
        token.len() >= 43 && !token.contains('.'),
        "reference token must be opaque"
    );

    let v = idp.verify(token).await;
    assert_eq!(v.status, 200);
    assert_eq!(v.header("x-auth-subject"), Some("alice"));
    assert_eq!(v.header("x-auth-roles"), Some("orders:read"));
    let sid = v.header("x-auth-session").unwrap().to_owned();
    let claims: Claims = verifier(&idp)
        .await
        .verify(v.header("x-auth-value-token").unwrap())
        .expect("valid JWT");
    assert_eq!(
        (
            claims.sub.as_str(),
            claims.sid.as_str(),
            claims.iss.as_str()
        ),
        ("alice", sid.as_str(), idp.url("").as_str())
    );
    assert_eq!(claims.roles, vec!["orders:read"]);

    // Forward-auth with a role requirement.
    let auth = format!("Bearer {token}");
    let denied = send(
        "GET",
        &idp.url("/auth/verify?roles=admin"),
        &[("authorization", &auth)],
        String::new(),
    )
    .await;
    assert_eq!(denied.status, 403);
    assert!(
        denied
            .header("www-authenticate")
            .unwrap()
            .contains("insufficient_scope")
    );
    let allowed = send(
        "GET",
        &idp.url("/auth/verify?roles=admin,orders:read"),
        &[("authorization", &auth)],
        String::new(),
    )
    .await;
    assert_eq!(allowed.status, 200);

    // No token, a garbage token.
    let none = send("GET", &idp.url("/auth/verify"), &[], String::new()).await;
    assert_eq!(none.status, 401);
    assert!(
        none.header("www-authenticate")
            .unwrap()
            .starts_with("Bearer")
    );
    let garbage = idp.verify("not-a-token").await;
    assert_eq!(garbage.status, 401);
    assert!(
        garbage
            .header("www-authenticate")
            .unwrap()
            .contains("invalid_token")
    );
}

#[tokio::test]
async fn wrong_password_and_unknown_user_look_the_same_and_are_counted() {
    let (_redis, idp) = setup().await;
    let url = idp.url("/oauth2/token");
    let wrong = post_form(
        &url,
        &[],
        "grant_type=password&client_id=cli&username=alice&password=nope",
    )
    .await;
    let unknown = post_form(
        &url,
        &[],
        "grant_type=password&client_id=cli&username=mallory&password=nope",
    )
    .await;
    for r in [&wrong, &unknown] {
        assert_eq!(r.status, 400);
        assert_eq!(r.json(), serde_json::json!({"error": "invalid_grant"}));
    }
    let metrics = send("GET", &idp.url("/metrics"), &[], String::new()).await;
    assert!(
        metrics
            .body
            .contains(r#"tokengate_idp_logins_failed_total{grant="password"} 2"#),
        "{}",
        metrics.body
    );
}

#[tokio::test]
async fn password_guessing_is_locked_out_per_username_and_per_address() {
    let redis = TestRedis::start();
    let mut config = idp_config(&redis.url());
    config.login.max_failures = 3;
    config.login.max_failures_per_address = 6;
    config.login.lockout = std::time::Duration::from_secs(2);
    let idp = TestIdp::spawn(config).await;
    let url = idp.url("/oauth2/token");
    let attempt = |user: &str, password: &str| {
        let form = format!("grant_type=password&client_id=cli&username={user}&password={password}");
        let url = url.clone();
        async move { post_form(&url, &[], &form).await }
    };
    for _ in 0..3 {
        assert_eq!(attempt("alice", "guess").await.status, 400);
    }
    // Locked: the right password does not get through while the lock holds.
    let locked = attempt("alice", PASSWORD).await;
    assert_eq!(locked.status, 429, "{}", locked.body);
    let wait: u64 = locked.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&wait), "Retry-After {wait}");
    assert_eq!(locked.json()["error"], "too_many_attempts");
    // Another user from the same address is still served...
    assert_eq!(attempt("bob", PASSWORD).await.status, 200);
    // ...until the address itself reaches its limit, whatever names it tries.
    for name in ["carol", "dave", "erin"] {
        assert_eq!(attempt(name, "guess").await.status, 400);
    }
    assert_eq!(attempt("bob", PASSWORD).await.status, 429);
    // Client authentication goes through the same lock.
    let client = post_form(
        &url,
        &[("authorization", &basic("reports", CLIENT_SECRET))],
        "grant_type=client_credentials",
    )
    .await;
    assert_eq!(client.status, 429);
    // The lock ends by itself.
    assert!(
        eventually(std::time::Duration::from_secs(5), || async {
            attempt("alice", PASSWORD).await.status == 200
        })
        .await
    );
    let metrics = send("GET", &idp.url("/metrics"), &[], String::new()).await;
    assert!(
        metrics
            .body
            .contains("tokengate_idp_login_lockouts_total 2"),
        "{}",
        metrics.body
    );
}

#[tokio::test]
async fn idp_replicas_share_the_login_lockout() {
    let redis = TestRedis::start();
    let mut config = idp_config(&redis.url());
    config.login.max_failures = 3;
    let (a, b) = (
        TestIdp::spawn(config.clone()).await,
        TestIdp::spawn(config).await,
    );
    let attempt = |idp: &TestIdp, password: &str| {
        let url = idp.url("/oauth2/token");
        let form = format!("grant_type=password&client_id=cli&username=alice&password={password}");
        async move { post_form(&url, &[], &form).await.status }
    };
    // Guesses spread over two replicas add up.
    assert_eq!(attempt(&a, "guess1").await, 400);
    assert_eq!(attempt(&b, "guess2").await, 400);
    assert_eq!(attempt(&a, "guess3").await, 400);
    assert_eq!(attempt(&b, PASSWORD).await, 429);
    assert_eq!(attempt(&a, PASSWORD).await, 429);
}

#[tokio::test]
async fn basic_client_credentials_are_form_decoded() {
    let redis = TestRedis::start();
    let mut config = idp_config(&redis.url());
    config.clients[0].client_secret_hash =
        Some(tokengate_idp::password::hash_password("s3cret: with+symbols%").unwrap());
    let idp = TestIdp::spawn(config).await;
    let reply = post_form(
        &idp.url("/oauth2/token"),
        &[(
            "authorization",
            &basic("reports", "s3cret%3A+with%2Bsymbols%25"),
        )],
        "grant_type=client_credentials",
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
}

#[tokio::test]
async fn client_credentials_grant_and_introspection() {
    let (_redis, idp) = setup().await;
    let url = idp.url("/oauth2/token");
    let ok = post_form(
        &url,
        &[("authorization", &basic("reports", CLIENT_SECRET))],
        "grant_type=client_credentials",
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let form =
        format!("grant_type=client_credentials&client_id=reports&client_secret={CLIENT_SECRET}");
    assert_eq!(post_form(&url, &[], &form).await.status, 200);
    let bad = post_form(
        &url,
        &[("authorization", &basic("reports", "wrong"))],
        "grant_type=client_credentials",
    )
    .await;
    assert_eq!(bad.status, 401);
    assert_eq!(bad.json()["error"], "invalid_client");

    let user_token = idp.login("alice").await;
    let introspect = idp.url("/oauth2/introspect");
    let form = format!("token={user_token}");
    let anonymous = post_form(&introspect, &[], &form).await;
    assert_eq!(anonymous.status, 401);
    let by_client = post_form(
        &introspect,
        &[("authorization", &basic("reports", CLIENT_SECRET))],
        &form,
    )
    .await;
    assert_eq!(by_client.status, 200);
    let info = by_client.json();
    assert_eq!(
        (info["active"].clone(), info["sub"].clone()),
        (true.into(), "alice".into())
    );
    assert_eq!(info["scope"], "orders:read");
    let admin_auth = format!("Bearer {ADMIN_TOKEN}");
    let by_admin = post_form(
        &introspect,
        &[("authorization", &admin_auth)],
        "token=unknown-token",
    )
    .await;
    assert_eq!(by_admin.json(), serde_json::json!({"active": false}));
}

#[tokio::test]
async fn malformed_requests_get_oauth_errors() {
    let (_redis, idp) = setup().await;
    let url = idp.url("/oauth2/token");
    let json = send(
        "POST",
        &url,
        &[("content-type", "application/json")],
        "{}".into(),
    )
    .await;
    assert_eq!(
        (json.status, json.json()["error"].clone()),
        (400, "invalid_request".into())
    );
    let missing = post_form(&url, &[], "username=alice").await;
    assert_eq!(
        (missing.status, missing.json()["error"].clone()),
        (400, "invalid_request".into())
    );
    let unsupported = post_form(&url, &[], "grant_type=implicit").await;
    assert_eq!(unsupported.json()["error"], "unsupported_grant_type");
    let repeated = post_form(
        &url,
        &[],
        "grant_type=password&client_id=cli&username=alice&username=bob&password=x",
    )
    .await;
    assert_eq!(
        (repeated.status, repeated.json()["error"].clone()),
        (400, "invalid_request".into())
    );
    let huge = post_form(
        &url,
        &[],
        &format!(
            "grant_type=password&client_id=cli&username={}",
            "a".repeat(64 * 1024)
        ),
    )
    .await;
    assert_eq!(
        (huge.status, huge.json()["error"].clone()),
        (413, "invalid_request".into())
    );
    let nowhere = send(
        "GET",
        &idp.url("/admin/users/alice/sessions"),
        &[],
        String::new(),
    )
    .await;
    assert_eq!(
        nowhere.status, 404,
        "the admin API is never on the public port"
    );
}

#[tokio::test]
async fn revoking_a_token_ends_its_session() {
    let (_redis, idp) = setup().await;
    let token = idp.login("alice").await;
    let url = idp.url("/oauth2/revoke");
    // RFC 7009 §2.1: the client identifies itself, and only its own tokens go.
    let anonymous = post_form(&url, &[], &format!("token={token}")).await;
    assert_eq!(anonymous.status, 401);
    let other = post_form(
        &url,
        &[("authorization", &basic("reports", CLIENT_SECRET))],
        &format!("token={token}"),
    )
    .await;
    assert_eq!(
        (other.status, other.json()["error"].as_str()),
        (400, Some("unauthorized_client"))
    );
    assert_eq!(
        idp.verify(&token).await.status,
        200,
        "another client's revocation changed nothing"
    );
    let wrong_secret = post_form(
        &url,
        &[("authorization", &basic("reports", "wrong"))],
        &format!("token={token}"),
    )
    .await;
    assert_eq!(wrong_secret.status, 401);
    let r = post_form(&url, &[], &format!("token={token}&client_id=cli")).await;
    assert_eq!(r.status, 200);
    assert_eq!(idp.verify(&token).await.status, 401);
    // Unknown and malformed tokens: 200 as well (RFC 7009).
    assert_eq!(
        post_form(&url, &[], "token=whatever&client_id=cli")
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn forced_logout_ends_every_session_of_the_user_only() {
    let (_redis, idp) = setup().await;
    let mut tokens = Vec::new();
    for _ in 0..3 {
        tokens.push(idp.login("alice").await);
    }
    let bob = idp.login("bob").await;
    let listed = idp.admin("GET", "/admin/users/alice/sessions", None).await;
    assert_eq!(listed.json()["sessions"].as_array().unwrap().len(), 3);
    let session = &listed.json()["sessions"][0];
    for field in ["id", "created_at", "last_used_at", "expires_at", "roles"] {
        assert!(!session[field].is_null(), "{field} missing in {session}");
    }
    // How it was made, so an administrator sees which sessions had a second factor.
    assert_eq!(session["client_id"], "cli");
    assert_eq!(session["method"], "password");
    assert_eq!(session["amr"], serde_json::json!(["pwd"]));

    let r = idp
        .admin("DELETE", "/admin/users/alice/sessions", None)
        .await;
    assert_eq!(r.json(), serde_json::json!({"revoked": 3}));
    for t in &tokens {
        assert_eq!(idp.verify(t).await.status, 401);
    }
    let listed = idp.admin("GET", "/admin/users/alice/sessions", None).await;
    assert_eq!(listed.json()["sessions"], serde_json::json!([]));
    assert_eq!(idp.verify(&bob).await.status, 200);
}

#[tokio::test]
async fn one_session_is_revoked_by_id() {
    let (_redis, idp) = setup().await;
    let a = idp.login("alice").await;
    let b = idp.login("alice").await;
    let sid = idp
        .verify(&a)
        .await
        .header("x-auth-session")
        .unwrap()
        .to_owned();
    let r = idp
        .admin("DELETE", &format!("/admin/sessions/{sid}"), None)
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(idp.verify(&a).await.status, 401);
    assert_eq!(idp.verify(&b).await.status, 200);
    assert_eq!(
        idp.admin("DELETE", &format!("/admin/sessions/{sid}"), None)
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn role_change_reaches_live_sessions_and_future_logins() {
    let (_redis, idp) = setup().await;
    let token = idp.login("alice").await;
    let r = idp
        .admin(
            "PUT",
            "/admin/users/alice/roles",
            Some(r#"{"roles": ["orders:read", "orders:write"]}"#),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["sessions_updated"], 1);
    let v = idp.verify(&token).await;
    assert_eq!(v.header("x-auth-roles"), Some("orders:read,orders:write"));
    let claims = verifier(&idp)
        .await
        .verify(v.header("x-auth-value-token").unwrap())
        .unwrap();
    assert_eq!(claims.roles, vec!["orders:read", "orders:write"]);
    let later = idp.login("alice").await;
    assert_eq!(
        idp.verify(&later).await.header("x-auth-roles"),
        Some("orders:read,orders:write")
    );
    let bad = idp
        .admin(
            "PUT",
            "/admin/users/alice/roles",
            Some(r#"{"roles": ["a,b"]}"#),
        )
        .await;
    assert_eq!(bad.status, 400);
}

#[tokio::test]
async fn admin_mints_sessions_for_externally_authenticated_subjects() {
    let (_redis, idp) = setup().await;
    let r = idp
        .admin(
            "POST",
            "/admin/sessions",
            Some(r#"{"username": "sso-user@example.com", "roles": ["support"]}"#),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["token_type"], "Bearer");
    let v = idp.verify(r.json()["access_token"].as_str().unwrap()).await;
    assert_eq!(
        (v.header("x-auth-subject"), v.header("x-auth-roles")),
        (Some("sso-user@example.com"), Some("support"))
    );
    let malformed = idp
        .admin("POST", "/admin/sessions", Some("{not json"))
        .await;
    assert_eq!(malformed.status, 400);
}

#[tokio::test]
async fn admin_api_refuses_missing_or_wrong_token() {
    let (_redis, idp) = setup().await;
    let routes = [
        ("GET", "/admin/users/alice/sessions"),
        ("DELETE", "/admin/users/alice/sessions"),
        ("DELETE", "/admin/sessions/AAAAAAAAAAAAAAAAAAAAAA"),
        ("PUT", "/admin/users/alice/roles"),
        ("POST", "/admin/sessions"),
    ];
    for (method, path) in routes {
        for auth in [
            None,
            Some("Bearer wrong-admin-token"),
            Some("Basic YWRtaW46YWRtaW4="),
        ] {
            let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", *a)).collect();
            let r = send(
                method,
                &idp.admin_url(path),
                &headers,
                r#"{"roles": []}"#.into(),
            )
            .await;
            assert_eq!(r.status, 401, "{method} {path} with {auth:?}");
            assert!(r.header("www-authenticate").is_some());
        }
    }
}

#[tokio::test]
async fn jwks_answers_304_when_unchanged() {
    let (_redis, idp) = setup().await;
    let first = send(
        "GET",
        &idp.url("/.well-known/jwks.json"),
        &[],
        String::new(),
    )
    .await;
    let etag = first.header("etag").unwrap().to_owned();
    let keys = first.json()["keys"].as_array().unwrap().clone();
    assert_eq!(keys[0]["alg"], "EdDSA");
    assert!(
        keys[0]["kid"].is_string() && keys[0].get("d").is_none(),
        "public parts only"
    );
    let again = send(
        "GET",
        &idp.url("/.well-known/jwks.json"),
        &[("if-none-match", &etag)],
        String::new(),
    )
    .await;
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    let stale = send(
        "GET",
        &idp.url("/.well-known/jwks.json"),
        &[("if-none-match", "\"other\"")],
        String::new(),
    )
    .await;
    assert_eq!(stale.status, 200);
}

#[tokio::test]
async fn redis_never_holds_a_reference_token_in_clear() {
    let (redis, idp) = setup().await;
    let tokens = [idp.login("alice").await, idp.login("bob").await];
    idp.verify(&tokens[0]).await;
    idp.admin("DELETE", "/admin/users/bob/sessions", None).await;
    let dump = redis.dump();
    assert!(
        dump.contains("tg:s:"),
        "the dump should hold sessions: {dump}"
    );
    for t in &tokens {
        assert!(!dump.contains(t.as_str()), "reference token found in Redis");
    }
}

#[tokio::test]
async fn redis_down_gives_503_and_the_idp_recovers_by_itself() {
    let (mut redis, idp) = setup().await;
    redis.kill();
    let url = idp.url("/oauth2/token");
    let form = "grant_type=password&client_id=cli&username=alice&password=wonderland";
    let down = post_form(&url, &[], form).await;
    assert_eq!(down.status, 503, "{}", down.body);
    assert_eq!(down.json()["error"], "temporarily_unavailable");
    redis.restart();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let r = post_form(&url, &[], form).await;
        if r.status == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "IdP did not recover: {} {}",
            r.status,
            r.body
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[test]
fn config_errors_name_the_file_and_key_and_exit_non_zero() {
    let dir = std::env::temp_dir().join(format!("tokengate-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("idp.toml");
    std::fs::write(&file, "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"short\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tokengate"))
        .args(["idp", "--config"])
        .arg(&file)
        .env_remove("TOKENGATE_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("idp.toml") && err.contains("admin.token"),
        "{err}"
    );

    std::fs::write(&file, "[server]\nlisten = \"nonsense\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tokengate"))
        .args(["idp", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("idp.toml") && err.contains("listen"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_example_config_loads() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/idp.toml");
    let config = tokengate_idp::config::IdpConfig::load(&path).expect("config/idp.toml is valid");
    tokengate_idp::keys::KeySet::load(&config.signing_key_paths()).expect("its key loads");
}

#[tokio::test]
async fn keys_rotate_without_logging_anyone_out() {
    let redis = TestRedis::start();
    let (dir, files) = key_files(
        "keys",
        &[
            tokengate_idp::keys::SigningKey::generate_ed25519_pem().unwrap(),
            tokengate_idp::keys::SigningKey::generate_p256_pem().unwrap(),
        ],
    );
    let (old, new) = (files[0].clone(), files[1].clone());
    let start = |paths: Vec<std::path::PathBuf>| {
        let mut config = idp_config(&redis.url());
        config.tokens.signing_keys = paths;
        // One issuer for both IdPs (each listens on a port of its own).
        config.tokens.issuer = "https://idp.example".into();
        let keys = tokengate_idp::keys::KeySet::load(&config.signing_key_paths()).unwrap();
        TestIdp::spawn_with_keys(config, keys)
    };
    let old_idp = start(vec![old.clone()]).await;
    let token = old_idp.login("alice").await;
    drop(old_idp);

    // The new key signs, the old one still verifies the sessions it signed.
    let idp = start(vec![new, old]).await;
    let v = idp.verify(&token).await;
    assert_eq!(
        v.status, 200,
        "a session signed by the previous key must survive rotation"
    );
    let jwks = idp.jwks().await;
    let algs: Vec<_> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["alg"].clone())
        .collect();
    assert_eq!(
        algs,
        vec![serde_json::json!("ES256"), serde_json::json!("EdDSA")]
    );
    let fresh = idp.login("alice").await;
    let v = idp.verify(&fresh).await;
    let header = jsonwebtoken::decode_header(v.header("x-auth-value-token").unwrap()).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_value_token_forged_in_redis_is_not_accepted() {
    let (redis, idp) = setup().await;
    let token = idp.login("alice").await;
    let sid = idp
        .verify(&token)
        .await
        .header("x-auth-session")
        .unwrap()
        .to_owned();
    // Someone with write access to Redis swaps in a token that is not signed by the IdP.
    let forged = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhbGljZSJ9.";
    redis
        .query(&[
            "HSET",
            &format!("tg:s:{{{sid}}}"),
            "vt",
            forged,
            "roles",
            "[\"admin\"]",
        ])
        .unwrap();
    assert_eq!(idp.verify(&token).await.status, 401);
}

#[test]
fn hash_password_prints_an_argon2id_hash() {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tokengate"))
        .arg("hash-password")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"s3cret\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let hash = String::from_utf8(out.stdout).unwrap();
    assert!(
        hash.starts_with("$argon2id$") && !hash.contains("s3cret"),
        "{hash}"
    );
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_header_timeout() {
    use tokio::io::AsyncReadExt;
    let redis = TestRedis::start();
    let mut config = idp_config(&redis.url());
    config.server.header_timeout = std::time::Duration::from_millis(300);
    let idp = TestIdp::spawn(config).await;
    let mut silent = tokio::net::TcpStream::connect(idp.public).await.unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        silent.read_to_end(&mut buf),
    )
    .await;
    assert!(read.is_ok(), "the IdP kept a silent connection open");
}

#[tokio::test]
async fn client_credentials_presented_are_always_checked() {
    let (_redis, idp) = setup().await;
    let url = idp.url("/oauth2/token");
    let login = "grant_type=password&username=alice&password=wonderland";
    // RFC 6749 §4.3.2 / §3.2.1: wrong credentials on the password grant are refused, not ignored.
    let wrong = post_form(
        &url,
        &[("authorization", &basic("reports", "wrong"))],
        login,
    )
    .await;
    assert_eq!(
        (wrong.status, wrong.json()["error"].as_str()),
        (401, Some("invalid_client"))
    );
    let wrong_form = post_form(
        &url,
        &[],
        &format!("{login}&client_id=reports&client_secret=wrong"),
    )
    .await;
    assert_eq!(wrong_form.status, 401);
    // A public client has no secret to present.
    let public_with_secret =
        post_form(&url, &[], &format!("{login}&client_id=cli&client_secret=x")).await;
    assert_eq!(public_with_secret.status, 401);
    // No client at all: the password grant is off unless a client lists it.
    let anonymous = post_form(&url, &[], login).await;
    assert_eq!(
        (anonymous.status, anonymous.json()["error"].as_str()),
        (401, Some("invalid_client"))
    );
    let unknown = post_form(&url, &[], &format!("{login}&client_id=nobody")).await;
    assert_eq!(unknown.status, 401);
    // A confidential client must authenticate; naming it is not enough.
    let named = post_form(&url, &[], "grant_type=client_credentials&client_id=reports").await;
    assert_eq!(named.status, 401);
    // The right client, but one that does not list the grant.
    let not_allowed = post_form(
        &url,
        &[("authorization", &basic("reports", CLIENT_SECRET))],
        login,
    )
    .await;
    assert_eq!(
        (not_allowed.status, not_allowed.json()["error"].as_str()),
        (400, Some("unauthorized_client"))
    );
    let public_cc = post_form(&url, &[], "grant_type=client_credentials&client_id=cli").await;
    assert_eq!(public_cc.json()["error"], "unauthorized_client");
    // Basic and form credentials together are ambiguous.
    let twice = post_form(
        &url,
        &[("authorization", &basic("reports", CLIENT_SECRET))],
        &format!("grant_type=client_credentials&client_id=reports&client_secret={CLIENT_SECRET}"),
    )
    .await;
    assert_eq!(twice.json()["error"], "invalid_request");
    // Introspection takes confidential clients only.
    let token = idp.login("alice").await;
    let by_public = post_form(
        &idp.url("/oauth2/introspect"),
        &[],
        &format!("token={token}&client_id=cli"),
    )
    .await;
    assert_eq!(by_public.status, 401);
}

#[tokio::test]
async fn scope_narrows_roles_and_the_answer_names_the_scope_granted() {
    let redis = TestRedis::start();
    let mut config = idp_config(&redis.url());
    config.users[0].roles = vec!["orders:read".into(), "orders:write".into()];
    let idp = TestIdp::spawn(config).await;
    let url = idp.url("/oauth2/token");
    let login = |scope: &str| {
        let form =
            format!("grant_type=password&client_id=cli&username=alice&password=wonderland{scope}");
        let url = url.clone();
        async move { post_form(&url, &[], &form).await }
    };
    // No scope asked: every role, and the answer says which.
    let all = login("").await;
    assert_eq!(all.json()["scope"], "orders:read orders:write");
    // Asked for one held and one not: the held one only.
    let narrowed = login("&scope=orders:write+admin").await;
    assert_eq!(narrowed.status, 200, "{}", narrowed.body);
    assert_eq!(narrowed.json()["scope"], "orders:write");
    let token = narrowed.json()["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        idp.verify(&token).await.header("x-auth-roles"),
        Some("orders:write")
    );
    // Exactly what was asked: no scope in the answer (RFC 6749 §5.1).
    let exact = login("&scope=orders:read").await;
    assert!(exact.json().get("scope").is_none(), "{}", exact.body);
    // Nothing held of what was asked.
    let none = login("&scope=admin").await;
    assert_eq!(
        (none.status, none.json()["error"].as_str()),
        (400, Some("invalid_scope"))
    );
    let malformed = login("&scope=a%22b").await;
    assert_eq!(malformed.json()["error"], "invalid_scope");
    // The client_credentials grant narrows the client's own roles the same way.
    let cc = post_form(
        &url,
        &[("authorization", &basic("reports", CLIENT_SECRET))],
        "grant_type=client_credentials&scope=orders:read",
    )
    .await;
    assert_eq!(cc.json()["error"], "invalid_scope");
}
