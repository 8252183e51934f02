//! Users kept in the token store, end to end: the admin users API, sign-in with users made at
//! run time, seed users from the configuration, and what disabling and deleting a user does to
//! its sessions on every gateway. Real sockets, a real Redis started by each test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::stack::{Options, Stack};
use support::*;
use tokengate_idp::keys::{KeySet, SigningKey};
use tokengate_idp::sessions::{Issuer, NewSession};

/// How long an event may take to reach a gateway here (they sync every 100 ms).
const PROPAGATION: Duration = Duration::from_secs(5);

async fn setup() -> (TestRedis, TestIdp) {
    let redis = TestRedis::start();
    let idp = TestIdp::spawn(idp_config(&redis.url())).await;
    (redis, idp)
}

/// The password grant for `user` with `password`, at the token endpoint `url`.
async fn sign_in_at(url: &str, user: &str, password: &str) -> Reply {
    post_form(
        url,
        &[],
        &format!("grant_type=password&client_id=cli&username={user}&password={password}"),
    )
    .await
}

async fn sign_in(idp: &TestIdp, user: &str, password: &str) -> Reply {
    sign_in_at(&idp.url("/oauth2/token"), user, password).await
}

async fn create_user(idp: &TestIdp, body: serde_json::Value) -> Reply {
    idp.admin("POST", "/admin/users", Some(&body.to_string()))
        .await
}

async fn patch_user(idp: &TestIdp, user: &str, body: serde_json::Value) -> Reply {
    let path = format!("/admin/users/{user}");
    idp.admin("PATCH", &path, Some(&body.to_string())).await
}

/// Signs in and returns the reference token.
async fn token_of(idp: &TestIdp, user: &str, password: &str) -> String {
    let r = sign_in(idp, user, password).await;
    assert_eq!(r.status, 200, "sign-in of {user} failed: {}", r.body);
    r.json()["access_token"].as_str().unwrap().to_owned()
}

fn names(page: &serde_json::Value) -> Vec<String> {
    page["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_created_user_signs_in_and_a_taken_name_conflicts() {
    let (_redis, idp) = setup().await;
    let created = create_user(
        &idp,
        serde_json::json!({
            "username": "dora",
            "password": "explorer-1",
            "roles": ["orders:read"],
        }),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let user = created.json();
    assert_eq!(user["username"], "dora");
    assert_eq!(user["roles"], serde_json::json!(["orders:read"]));
    assert_eq!(
        (user["disabled"].clone(), user["upstream"].clone()),
        (false.into(), serde_json::Value::Null)
    );
    assert!(user["created_at"].as_u64().unwrap() > 0);
    assert_eq!(user["created_at"], user["updated_at"]);
    let fields: Vec<&String> = user.as_object().unwrap().keys().collect();
    assert_eq!(
        fields,
        [
            "created_at",
            "disabled",
            "roles",
            "second_factor",
            "updated_at",
            "upstream",
            "username"
        ],
        "never the password or its hash"
    );
    assert!(!created.body.contains("argon2") && !created.body.contains("explorer-1"));

    let token = token_of(&idp, "dora", "explorer-1").await;
    let v = idp.verify(&token).await;
    assert_eq!(
        (
            v.status,
            v.header("x-auth-subject"),
            v.header("x-auth-roles")
        ),
        (200, Some("dora"), Some("orders:read"))
    );
    assert_eq!(
        sign_in(&idp, "dora", "explorer-2").await.json()["error"],
        "invalid_grant"
    );

    let got = idp.admin("GET", "/admin/users/dora", None).await;
    assert_eq!((got.status, got.json()), (200, user));
    assert_eq!(
        idp.admin("GET", "/admin/users/nobody", None).await.status,
        404
    );

    // A name is taken once, seed users' names included.
    for name in ["dora", "alice"] {
        let again = create_user(
            &idp,
            serde_json::json!({"username": name, "password": "another-1", "roles": []}),
        )
        .await;
        assert_eq!(again.status, 409, "{name}");
        assert_eq!(again.json(), serde_json::json!({"error": "conflict"}));
    }
    assert_eq!(token_of(&idp, "dora", "explorer-1").await.len(), 43);

    // A user without a password, or created disabled, cannot use the password grant.
    for body in [
        serde_json::json!({"username": "sso-only", "roles": []}),
        serde_json::json!({"username": "off", "password": "explorer-1", "roles": [], "disabled": true}),
    ] {
        let name = body["username"].as_str().unwrap().to_owned();
        assert_eq!(create_user(&idp, body).await.status, 201);
        let r = sign_in(&idp, &name, "explorer-1").await;
        assert_eq!(
            (r.status, r.json()["error"].clone()),
            (400, "invalid_grant".into()),
            "{name}"
        );
    }
}

#[tokio::test]
async fn users_are_listed_by_prefix_in_pages() {
    let (_redis, idp) = setup().await;
    for name in [
        "team-03", "team-01", "team-05", "teal", "team-02", "team-04",
    ] {
        let body = serde_json::json!({"username": name, "roles": []});
        assert_eq!(create_user(&idp, body).await.status, 201);
    }
    let all = idp.admin("GET", "/admin/users", None).await;
    assert_eq!(all.status, 200, "{}", all.body);
    assert_eq!(
        names(&all.json()),
        [
            "alice", "bob", "teal", "team-01", "team-02", "team-03", "team-04", "team-05"
        ],
        "seed users are users too"
    );
    assert_eq!(all.json()["next"], serde_json::Value::Null);

    let mut seen = Vec::new();
    let mut path = "/admin/users?prefix=team-&limit=2".to_owned();
    loop {
        let page = idp.admin("GET", &path, None).await.json();
        let batch = names(&page);
        assert!(batch.len() <= 2, "{page}");
        seen.extend(batch);
        match page["next"].as_str() {
            Some(next) => path = format!("/admin/users?prefix=team-&limit=2&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(
        seen,
        ["team-01", "team-02", "team-03", "team-04", "team-05"]
    );

    let none = idp
        .admin("GET", "/admin/users?prefix=zz", None)
        .await
        .json();
    assert_eq!(none, serde_json::json!({"users": [], "next": null}));
    let long = "x".repeat(257);
    for query in [
        "limit=0".to_owned(),
        "limit=1001".to_owned(),
        "limit=ten".to_owned(),
        "order=desc".to_owned(),
        format!("prefix={long}"),
        format!("cursor={long}"),
    ] {
        let r = idp
            .admin("GET", &format!("/admin/users?{query}"), None)
            .await;
        assert_eq!(r.status, 400, "{query}: {}", r.body);
        assert_eq!(r.json()["error"], "invalid_request");
    }
}

#[tokio::test]
async fn a_new_password_replaces_the_old_one() {
    let (_redis, idp) = setup().await;
    // A seed user: its password can be changed like any other's.
    let r = patch_user(
        &idp,
        "alice",
        serde_json::json!({"password": "through-the-looking-glass"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["username"], "alice");
    assert!(r.json()["updated_at"].as_u64() >= r.json()["created_at"].as_u64());
    assert_eq!(sign_in(&idp, "alice", PASSWORD).await.status, 400);
    token_of(&idp, "alice", "through-the-looking-glass").await;
    assert_eq!(
        patch_user(
            &idp,
            "nobody",
            serde_json::json!({"password": "whatever-1"})
        )
        .await
        .status,
        404
    );
}

#[tokio::test]
async fn new_roles_reach_live_sessions_and_the_user() {
    let (_redis, idp) = setup().await;
    let body =
        serde_json::json!({"username": "dora", "password": "explorer-1", "roles": ["orders:read"]});
    assert_eq!(create_user(&idp, body).await.status, 201);
    let token = token_of(&idp, "dora", "explorer-1").await;
    let r = patch_user(
        &idp,
        "dora",
        serde_json::json!({"roles": ["orders:read", "orders:write"]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["sessions_updated"], 1);
    assert_eq!(
        r.json()["roles"],
        serde_json::json!(["orders:read", "orders:write"])
    );
    assert_eq!(
        idp.verify(&token).await.header("x-auth-roles"),
        Some("orders:read,orders:write")
    );

    // The older PUT .../roles changes a store user's roles too: the next sign-in has them.
    let put = idp
        .admin(
            "PUT",
            "/admin/users/dora/roles",
            Some(r#"{"roles": ["support"]}"#),
        )
        .await;
    assert_eq!(put.status, 200, "{}", put.body);
    assert_eq!(
        idp.verify(&token).await.header("x-auth-roles"),
        Some("support")
    );
    let user = idp.admin("GET", "/admin/users/dora", None).await.json();
    assert_eq!(user["roles"], serde_json::json!(["support"]));
    let later = token_of(&idp, "dora", "explorer-1").await;
    assert_eq!(
        idp.verify(&later).await.header("x-auth-roles"),
        Some("support")
    );
}

#[tokio::test]
async fn disabling_a_user_revokes_every_session_on_every_gateway() {
    let (redis, idp) = setup().await;
    let backend = EchoBackend::start().await;
    let config = || gateway_config(&redis.url(), &idp, &backend.url());
    let gateways = [
        TestGateway::spawn(config()).await,
        TestGateway::spawn(config()).await,
    ];
    let body =
        serde_json::json!({"username": "dora", "password": "explorer-1", "roles": ["orders:read"]});
    assert_eq!(create_user(&idp, body).await.status, 201);
    let tokens = [
        token_of(&idp, "dora", "explorer-1").await,
        token_of(&idp, "dora", "explorer-1").await,
    ];
    let bob = idp.login("bob").await;
    for gw in &gateways {
        for token in tokens.iter().chain([&bob]) {
            assert_eq!(gw.get_with_token("/api/orders", token).await.status, 200);
        }
    }

    let r = patch_user(&idp, "dora", serde_json::json!({"disabled": true})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        (r.json()["disabled"].clone(), r.json()["revoked"].clone()),
        (true.into(), 2.into())
    );
    for gw in &gateways {
        for token in &tokens {
            let revoked = eventually(PROPAGATION, || async {
                gw.get_with_token("/api/orders", token).await.status == 401
            })
            .await;
            assert!(
                revoked,
                "a disabled user's session still works at a gateway"
            );
        }
        assert_eq!(gw.get_with_token("/api/orders", &bob).await.status, 200);
    }
    for token in &tokens {
        assert_eq!(idp.verify(token).await.status, 401);
    }
    let refused = sign_in(&idp, "dora", "explorer-1").await;
    assert_eq!(
        (refused.status, refused.json()["error"].clone()),
        (400, "invalid_grant".into())
    );
    let minted = idp
        .admin("POST", "/admin/sessions", Some(r#"{"username": "dora"}"#))
        .await;
    assert_eq!(
        minted.status, 400,
        "no session is minted for a disabled user"
    );

    // Enabled again, the user signs in again (the old sessions stay revoked).
    let r = patch_user(&idp, "dora", serde_json::json!({"disabled": false})).await;
    assert_eq!(r.status, 200);
    assert!(r.json().get("revoked").is_none());
    let fresh = token_of(&idp, "dora", "explorer-1").await;
    assert_eq!(
        gateways[0]
            .get_with_token("/api/orders", &fresh)
            .await
            .status,
        200
    );
    assert_eq!(
        gateways[1]
            .get_with_token("/api/orders", &tokens[0])
            .await
            .status,
        401
    );
}

#[tokio::test]
async fn deleting_a_user_revokes_its_sessions_and_its_sign_in() {
    let (_redis, idp) = setup().await;
    let body =
        serde_json::json!({"username": "dora", "password": "explorer-1", "roles": ["orders:read"]});
    assert_eq!(create_user(&idp, body).await.status, 201);
    let token = token_of(&idp, "dora", "explorer-1").await;
    let r = idp.admin("DELETE", "/admin/users/dora", None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json(), serde_json::json!({"deleted": true, "revoked": 1}));
    assert_eq!(idp.verify(&token).await.status, 401);
    assert_eq!(sign_in(&idp, "dora", "explorer-1").await.status, 400);
    assert_eq!(
        idp.admin("GET", "/admin/users/dora", None).await.status,
        404
    );
    assert_eq!(
        idp.admin("DELETE", "/admin/users/dora", None).await.status,
        404
    );
    let listed = idp.admin("GET", "/admin/users?prefix=d", None).await.json();
    assert_eq!(names(&listed), Vec::<String>::new());
    // The name is free again.
    let again = serde_json::json!({"username": "dora", "password": "explorer-2", "roles": []});
    assert_eq!(create_user(&idp, again).await.status, 201);
    assert_eq!(sign_in(&idp, "dora", "explorer-1").await.status, 400);
    token_of(&idp, "dora", "explorer-2").await;
}

#[tokio::test]
async fn bad_input_is_refused_with_invalid_request() {
    let (_redis, idp) = setup().await;
    let long_name = "u".repeat(257);
    let bad_creates = [
        serde_json::json!({"username": long_name, "password": "explorer-1", "roles": []})
            .to_string(),
        serde_json::json!({"username": "", "roles": []}).to_string(),
        serde_json::json!({"username": "tab\there", "roles": []}).to_string(),
        serde_json::json!({"username": "dora", "password": "short", "roles": []}).to_string(),
        serde_json::json!({"username": "dora", "password": "p".repeat(1025), "roles": []})
            .to_string(),
        serde_json::json!({"username": "dora", "roles": ["a,b"]}).to_string(),
        serde_json::json!({"username": "dora", "roles": [], "admin": true}).to_string(),
        serde_json::json!({"username": "dora", "password_hash": "$argon2id$x", "roles": []})
            .to_string(),
        serde_json::json!({"username": "dora"}).to_string(),
        serde_json::json!({"username": "dora", "roles": "admin"}).to_string(),
        r#"{"username": "dora", "roles": []"#.to_owned(),
        "\u{feff}not json".to_owned(),
        String::new(),
    ];
    for body in &bad_creates {
        let r = idp.admin("POST", "/admin/users", Some(body)).await;
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert_eq!(r.json()["error"], "invalid_request", "{body}");
        assert!(r.json()["error_description"].is_string(), "{body}");
    }
    assert_eq!(
        idp.admin("GET", "/admin/users/dora", None).await.status,
        404,
        "nothing was created"
    );

    let bad_patches = [
        serde_json::json!({"password": "short"}).to_string(),
        serde_json::json!({"roles": [""]}).to_string(),
        serde_json::json!({"disabled": "yes"}).to_string(),
        serde_json::json!({"username": "mallory"}).to_string(),
        "{".to_owned(),
    ];
    for body in &bad_patches {
        let r = idp.admin("PATCH", "/admin/users/alice", Some(body)).await;
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert_eq!(r.json()["error"], "invalid_request");
    }
    token_of(&idp, "alice", PASSWORD).await;

    for (method, path) in [
        ("GET", "/admin/users/"),
        ("PATCH", "/admin/users/"),
        ("DELETE", "/admin/users/"),
    ] {
        let r = idp
            .admin(method, &format!("{path}{long_name}"), Some("{}"))
            .await;
        assert_eq!(r.status, 400, "{method} {path}: {}", r.body);
    }
    let huge = serde_json::json!({"username": "dora", "password": "p".repeat(20_000), "roles": []});
    assert_eq!(create_user(&idp, huge).await.status, 413);
}

#[tokio::test]
async fn the_users_api_needs_the_admin_token() {
    let (_redis, idp) = setup().await;
    for (method, path) in [
        ("POST", "/admin/users"),
        ("GET", "/admin/users"),
        ("GET", "/admin/users/alice"),
        ("PATCH", "/admin/users/alice"),
        ("DELETE", "/admin/users/alice"),
    ] {
        for auth in [None, Some("Bearer wrong-admin-token")] {
            let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", *a)).collect();
            let body = r#"{"username": "x", "roles": [], "disabled": true}"#.to_owned();
            let r = send(method, &idp.admin_url(path), &headers, body).await;
            assert_eq!(r.status, 401, "{method} {path} with {auth:?}");
        }
    }
    assert_eq!(token_of(&idp, "alice", PASSWORD).await.len(), 43);
}

#[tokio::test]
async fn a_browser_session_is_never_a_bearer_token() {
    let redis = TestRedis::start();
    let (dir, files) = key_files("browser", &[SigningKey::generate_ed25519_pem().unwrap()]);
    let mut config = idp_config(&redis.url());
    config.tokens.signing_keys = files;
    let keys = || KeySet::load(&config.signing_key_paths()).unwrap();
    let idp = TestIdp::spawn_with_keys(config.clone(), keys()).await;
    let backend = EchoBackend::start().await;
    let gw = TestGateway::spawn(gateway_config(&redis.url(), &idp, &backend.url())).await;
    // Sessions made as the IdP makes them, with its key, in its store.
    let issuer = Issuer::new(
        config.store.connect().unwrap(),
        Arc::new(keys()),
        &idp.url(""),
        &config.tokens,
    )
    .unwrap();
    let roles = vec!["orders:read".to_owned()];
    let browser = issuer
        .issue(NewSession::browser("alice", roles.clone(), "password"))
        .await
        .unwrap();
    let access = issuer
        .issue(NewSession::access("alice", roles, "password"))
        .await
        .unwrap();
    let (browser, access) = (
        browser.token.expose().to_owned(),
        access.token.expose().to_owned(),
    );

    assert_eq!(idp.verify(&access).await.status, 200);
    assert_eq!(gw.get_with_token("/api/orders", &access).await.status, 200);
    assert_eq!(idp.verify(&browser).await.status, 401);
    assert_eq!(gw.get_with_token("/api/orders", &browser).await.status, 401);
    let admin = format!("Bearer {ADMIN_TOKEN}");
    let introspected = post_form(
        &idp.url("/oauth2/introspect"),
        &[("authorization", &admin)],
        &format!("token={browser}"),
    )
    .await;
    assert_eq!(introspected.json(), serde_json::json!({"active": false}));
    // It is a session of the user all the same: listed, and ended by a forced logout.
    let listed = idp
        .admin("GET", "/admin/users/alice/sessions", None)
        .await
        .json();
    assert_eq!(listed["sessions"].as_array().unwrap().len(), 2);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The binaries as an operator runs them: a seed user changed through the API keeps the change
/// after the IdP restarts on the same Redis, a disabled user's token stops working on both
/// gateways, and no password, hash or token reaches a log.
#[tokio::test]
async fn seed_users_keep_admin_changes_across_restarts_and_nothing_secret_is_logged() {
    let mut stack = Stack::start(Options::default()).await;
    let new_password = "through-the-looking-glass";
    stack.secret(new_password);
    let r = stack
        .admin(
            "PATCH",
            "/admin/users/alice",
            Some(&serde_json::json!({"password": new_password, "roles": ["orders:read", "orders:write"]}).to_string()),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let created = stack
        .admin(
            "POST",
            "/admin/users",
            Some(r#"{"username": "dora", "password": "explorer-secret-1", "roles": ["orders:read"]}"#),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    stack.secret("explorer-secret-1");
    for user in ["alice", "dora"] {
        let key = format!(
            "tg:u:{{{}}}:user",
            base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, user)
        );
        let hash: String =
            redis::from_redis_value(stack.redis.query(&["HGET", &key, "hash"]).unwrap()).unwrap();
        assert!(hash.starts_with("$argon2id$"));
        stack.secret(&hash);
    }

    stack.idp.restart().await;
    let alice = stack.admin("GET", "/admin/users/alice", None).await.json();
    assert_eq!(
        alice["roles"],
        serde_json::json!(["orders:read", "orders:write"])
    );
    assert_eq!(
        stack.try_login("alice").await.status,
        400,
        "the old password is gone"
    );
    let token_url = stack.idp.url("/oauth2/token");
    let signed_in = sign_in_at(&token_url, "alice", new_password).await;
    assert_eq!(signed_in.status, 200, "{}", signed_in.body);
    stack.secret(signed_in.json()["access_token"].as_str().unwrap());
    // Seed users that nobody changed are there as configured.
    stack.login("bob").await;

    let dora = sign_in_at(&token_url, "dora", "explorer-secret-1").await;
    assert_eq!(dora.status, 200, "{}", dora.body);
    let token = dora.json()["access_token"].as_str().unwrap().to_owned();
    stack.secret(&token);
    for gw in 0..2 {
        assert_eq!(stack.get(gw, "/api/orders", Some(&token)).await.status, 200);
    }
    let r = stack
        .admin("PATCH", "/admin/users/dora", Some(r#"{"disabled": true}"#))
        .await;
    assert_eq!(r.json()["revoked"], 1, "{}", r.body);
    for gw in 0..2 {
        let revoked = eventually(PROPAGATION, || async {
            stack.get(gw, "/api/orders", Some(&token)).await.status == 401
        })
        .await;
        assert!(
            revoked,
            "gateway {gw} still accepts a disabled user's token"
        );
    }
    // A wrong password for a disabled user is logged like any failed sign-in: without it.
    assert_eq!(
        sign_in_at(&token_url, "dora", "explorer-secret-1")
            .await
            .status,
        400
    );
    stack.assert_logs_clean();
}
