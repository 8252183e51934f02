//! Browser sessions at the gateway, without a browser: sign-in through `/.tokengate/`, the
//! cookie's attributes, what backends see, CSRF, logout, and every way a sign-in callback or a
//! cookie can be wrong. (`tests/browser_gateway.rs` does the same in a real Chromium.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use support::gateway_browser::{BrowserStack, GATEWAY_SECRET, OTHER_CLIENT};
use support::oidc::{Browser, location_query};
use support::{PASSWORD, Reply, eventually, send};
use tokengate_gateway::login::{LoginState, Sealer};
use tokengate_store::{ReferenceToken, now_unix};

const HTML: (&str, &str) = ("accept", "text/html,application/xhtml+xml,*/*;q=0.8");
const COOKIE: &str = "tokengate";
const LOGIN_COOKIE: &str = "tokengate-login";

/// The `Set-Cookie` header that sets `name`.
fn set_cookie<'r>(reply: &'r Reply, name: &str) -> &'r str {
    reply
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|v| v.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no Set-Cookie for {name}: {:?}", reply.headers))
}

/// Starts a sign-in at the gateway for `rd`; returns the IdP authorize URL.
async fn start(stack: &BrowserStack, b: &Browser, rd: &str) -> String {
    let query = serde_urlencoded::to_string([("rd", rd)]).unwrap();
    let reply = b
        .get(&stack.url(&format!("/.tokengate/login?{query}")))
        .await;
    assert_eq!(reply.status, 302, "{}", reply.body);
    let to = reply.header("location").unwrap().to_owned();
    assert!(to.starts_with(&stack.idp.url("/oauth2/authorize?")), "{to}");
    let q = location_query(&reply);
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["client_id"], "gateway");
    assert_eq!(
        q["redirect_uri"],
        stack.url("/.tokengate/callback"),
        "the callback is under public_url"
    );
    assert!(b.cookie(LOGIN_COOKIE).is_some());
    to
}

/// Signs in as alice at the IdP; returns the callback URL the IdP sent the browser to.
async fn sign_in_at_idp(b: &Browser, authorize: &str) -> String {
    let reply = b.sign_in(authorize, "alice", PASSWORD).await;
    assert_eq!(reply.status, 302, "{}", reply.body);
    reply.header("location").unwrap().to_owned()
}

/// A whole sign-in: returns the callback's reply (which sets the cookie).
async fn sign_in(stack: &BrowserStack, b: &Browser, rd: &str) -> Reply {
    let authorize = start(stack, b, rd).await;
    let callback = sign_in_at_idp(b, &authorize).await;
    b.get(&callback).await
}

/// The sign-in under way in `b`'s state cookie, opened as the gateway does.
fn sign_in_state(sealer: &Sealer, b: &Browser) -> LoginState {
    let sealed = b.cookie(LOGIN_COOKIE).expect("a sign-in state cookie");
    sealer.open(&sealed, LOGIN_COOKIE, now_unix(), 600).unwrap()
}

/// A GET with these headers and no cookie jar.
async fn get(url: &str, headers: &[(&str, &str)]) -> Reply {
    send("GET", url, headers, String::new()).await
}

/// A GET with exactly this `Cookie` header.
async fn with_cookie(url: &str, cookie: &str) -> Reply {
    get(url, &[("cookie", cookie)]).await
}

fn echoed(reply: &Reply) -> serde_json::Value {
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()["headers"].clone()
}

#[tokio::test]
async fn a_browser_signs_in_through_the_gateway_and_its_cookie_session_stays_revocable() {
    let stack = BrowserStack::start().await;
    let b = Browser::new();

    // A navigation without a session goes to sign in, keeping where it wanted to go.
    let nav = b
        .send("GET", &stack.url("/app/page?x=1"), &[HTML], String::new())
        .await;
    assert_eq!(nav.status, 302);
    assert_eq!(
        nav.header("location"),
        Some("/.tokengate/login?rd=%2Fapp%2Fpage%3Fx%3D1")
    );
    // Anything else gets 401 JSON, never a redirect.
    for headers in [
        vec![("accept", "application/json")],
        vec![HTML, ("sec-fetch-mode", "cors")],
    ] {
        let api = b
            .send("GET", &stack.url("/app/page"), &headers, String::new())
            .await;
        assert_eq!(api.status, 401);
        assert!(api.header("location").is_none());
        assert_eq!(api.json()["error"], "unauthorized");
    }
    let post = b
        .send("POST", &stack.url("/app/page"), &[HTML], String::new())
        .await;
    assert_eq!(post.status, 401);
    let no_session = b.get(&stack.url("/.tokengate/session")).await;
    assert_eq!(no_session.status, 401);

    // Sign in; the callback sets the cookie and returns to the page.
    let done = sign_in(&stack, &b, "/app/page?x=1").await;
    assert_eq!(done.status, 302, "{}", done.body);
    assert_eq!(done.header("location"), Some("/app/page?x=1"));
    let cookie = set_cookie(&done, COOKIE);
    for attribute in ["; Path=/", "; HttpOnly", "; SameSite=Lax", "; Max-Age="] {
        assert!(cookie.contains(attribute), "{attribute} missing: {cookie}");
    }
    assert!(!cookie.contains("Secure"), "no TLS here: {cookie}");
    let max_age: u64 = cookie.rsplit("Max-Age=").next().unwrap().parse().unwrap();
    // The session's absolute lifetime (12 h by default), not its idle timeout.
    assert!((43_000..=43_200).contains(&max_age), "{max_age}");
    assert!(set_cookie(&done, LOGIN_COOKIE).contains("Max-Age=0"));
    let token = b.cookie(COOKIE).unwrap();
    assert!(ReferenceToken::parse(&token).is_ok(), "a reference token");

    // The page, with identity headers; neither cookie reaches the backend, others do.
    let with_others =
        format!("a=1; {COOKIE}={token}; tokengate_idp=sso-cookie; tokengate_csrf=c; b=2");
    let page = get(&stack.url("/app/page"), &[HTML, ("cookie", &with_others)]).await;
    let headers = echoed(&page);
    assert_eq!(headers["x-auth-subject"], "alice");
    assert_eq!(headers["x-auth-roles"], "orders:read");
    assert_eq!(headers["cookie"], "a=1; b=2");
    assert!(
        headers["authorization"]
            .as_str()
            .unwrap()
            .starts_with("Bearer ey")
    );
    // The IdP's route gets the IdP's cookie, never the gateway's; other routes get neither.
    let sso = with_cookie(&stack.url("/sso/x"), &with_others).await;
    assert_eq!(
        echoed(&sso)["cookie"],
        "a=1; tokengate_idp=sso-cookie; tokengate_csrf=c; b=2"
    );
    let public = with_cookie(&stack.url("/public/x"), &with_others).await;
    assert_eq!(echoed(&public)["cookie"], "a=1; b=2");
    let only_ours = format!("{COOKIE}={token}; tokengate_idp=x");
    let public = with_cookie(&stack.url("/public/x"), &only_ours).await;
    assert!(echoed(&public).get("cookie").is_none());
    // Every cookie the IdP sets, by name as a browser holds them (the upstream sign-in's state
    // cookie is set with Path=/ and reaches every port of the host), stays away from backends
    // on every route but the IdP's own.
    let idp_cookies = "tokengate_idp=1; tokengate_csrf=2; tokengate_console=3; \
                       tokengate_console_login=4; tokengate_upstream=5";
    let all = format!("a=1; {COOKIE}={token}; {idp_cookies}; b=2");
    for path in ["/app/page", "/public/x"] {
        let reply = get(&stack.url(path), &[HTML, ("cookie", &all)]).await;
        assert_eq!(echoed(&reply)["cookie"], "a=1; b=2", "{path}");
    }
    let sso = with_cookie(&stack.url("/sso/x"), &all).await;
    assert_eq!(echoed(&sso)["cookie"], format!("a=1; {idp_cookies}; b=2"));

    // Who is signed in.
    let session = b.get(&stack.url("/.tokengate/session")).await;
    assert_eq!(session.status, 200, "{}", session.body);
    let s = session.json();
    assert_eq!(s["subject"], "alice");
    assert_eq!(s["roles"], serde_json::json!(["orders:read"]));
    assert!(s["expires_at"].as_u64().unwrap() > now_unix());

    // CSRF: cookie-authenticated unsafe requests need an allowed origin.
    let origin = stack.origin();
    let referer = format!("{origin}/app/page");
    for (headers, status) in [
        (vec![("origin", origin.as_str())], 200),
        (vec![("referer", referer.as_str())], 200),
        (vec![], 403),
        (vec![("origin", "http://127.0.0.1:1")], 403),
        (vec![("origin", "null")], 403),
        (vec![("referer", "http://evil.example/")], 403),
        (
            vec![
                ("origin", origin.as_str()),
                ("sec-fetch-site", "cross-site"),
            ],
            403,
        ),
    ] {
        let reply = b
            .send("POST", &stack.url("/app/api/orders"), &headers, "{}".into())
            .await;
        assert_eq!(reply.status, status, "{headers:?}: {}", reply.body);
        if status == 403 {
            assert_eq!(reply.json()["error"], "cross_site_request");
        }
    }
    // A bearer token is not sent by a browser on its own: no origin check.
    let bearer = format!("Bearer {token}");
    let reply = send(
        "POST",
        &stack.url("/app/api/orders"),
        &[("authorization", &bearer)],
        String::new(),
    )
    .await;
    assert_eq!(reply.status, 200);

    // Two cookies of the gateway's name: neither counts, and no redirect loop.
    let twice = format!("{COOKIE}={token}; {COOKIE}={token}");
    for headers in [
        vec![("cookie", twice.as_str())],
        vec![("cookie", twice.as_str()), HTML],
    ] {
        let reply = get(&stack.url("/app/page"), &headers).await;
        assert_eq!(reply.status, 401, "{headers:?}");
    }
    // Garbage in the cookie.
    for garbage in ["x", "not-a-token", &"A".repeat(43), &"A".repeat(5000)] {
        let c = format!("{COOKIE}={garbage}");
        let reply = with_cookie(&stack.url("/app/api/orders"), &c).await;
        assert_eq!(reply.status, 401, "{garbage}");
    }
    // Not even text: unreadable, so no session.
    let c = format!("{COOKIE}={}", "é".repeat(10));
    let reply = with_cookie(&stack.url("/app/api/orders"), &c).await;
    assert_eq!(reply.status, 401);

    // A role change reaches the cookie session like any other, through the event stream.
    let changed = stack
        .idp
        .admin(
            "PUT",
            "/admin/users/alice/roles",
            Some(r#"{"roles": ["reports:read"]}"#),
        )
        .await;
    assert_eq!(changed.status, 200, "{}", changed.body);
    assert!(
        eventually(Duration::from_secs(5), || async {
            b.get(&stack.url("/app/api/orders")).await.status == 403
        })
        .await,
        "the cookie session kept its old roles"
    );
    let session = b.get(&stack.url("/.tokengate/session")).await;
    assert_eq!(session.json()["roles"], serde_json::json!(["reports:read"]));

    // A forced logout ends the cookie session like any other.
    let out = stack
        .idp
        .admin("DELETE", "/admin/users/alice/sessions", None)
        .await;
    assert_eq!(out.status, 200);
    assert!(
        eventually(Duration::from_secs(5), || async {
            b.get(&stack.url("/app/api/orders")).await.status == 401
        })
        .await,
        "the revoked cookie still works"
    );
    let nav = b
        .send("GET", &stack.url("/app/page"), &[HTML], String::new())
        .await;
    assert_eq!(nav.status, 302);
}

#[tokio::test]
async fn logout_revokes_at_the_idp_clears_the_cookie_and_goes_through_the_idps_logout() {
    let stack = BrowserStack::start().await;
    let b = Browser::new();
    assert_eq!(sign_in(&stack, &b, "/app/").await.status, 302);
    let token = b.cookie(COOKIE).unwrap();
    assert_eq!(b.get(&stack.url("/app/api/x")).await.status, 200);

    // Logout is an unsafe request like any other: a cross-site form cannot sign anyone out.
    let refused = b
        .send(
            "POST",
            &stack.url("/.tokengate/logout"),
            &[("origin", "http://evil.example")],
            String::new(),
        )
        .await;
    assert_eq!(refused.status, 403);
    assert_eq!(b.get(&stack.url("/app/api/x")).await.status, 200);

    let origin = stack.origin();
    let out = b
        .send(
            "POST",
            &stack.url("/.tokengate/logout"),
            &[("origin", &origin)],
            String::new(),
        )
        .await;
    assert_eq!(out.status, 303, "{}", out.body);
    assert!(set_cookie(&out, COOKIE).contains("Max-Age=0"));
    let to = out.header("location").unwrap();
    assert!(to.starts_with(&stack.idp.url("/oauth2/logout?")), "{to}");
    let q = location_query(&out);
    assert_eq!(q["post_logout_redirect_uri"], format!("{origin}/"));
    assert!(q.contains_key("id_token_hint"));
    // The IdP signs the browser out and returns to the gateway.
    let idp_out = b.get(to).await;
    assert_eq!(idp_out.status, 302, "{}", idp_out.body);
    assert!(
        idp_out
            .header("location")
            .unwrap()
            .starts_with(&format!("{origin}/"))
    );
    assert!(b.cookie("tokengate_idp").is_none());

    // The token is revoked at the IdP, not only forgotten by this browser.
    let c = format!("{COOKIE}={token}");
    let reply = with_cookie(&stack.url("/app/api/x"), &c).await;
    assert_eq!(reply.status, 401);
    assert_eq!(stack.idp.verify(&token).await.status, 401);
}

#[tokio::test]
async fn sign_in_callbacks_refuse_tampered_replayed_expired_and_foreign_state() {
    let stack = BrowserStack::start().await;

    // Tampered state cookie.
    let b = Browser::new();
    let authorize = start(&stack, &b, "/app/").await;
    let callback = sign_in_at_idp(&b, &authorize).await;
    let sealed = b.cookie(LOGIN_COOKIE).unwrap();
    let mut chars: Vec<char> = sealed.chars().collect();
    let i = chars.len() / 2;
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    let tampered: String = chars.into_iter().collect();
    let c = format!("{LOGIN_COOKIE}={tampered}");
    let reply = with_cookie(&callback, &c).await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()["error"], "sign_in_failed");
    assert!(reply.header("set-cookie").is_none());
    // No state cookie at all (a callback opened in another browser).
    let reply = get(&callback, &[]).await;
    assert_eq!(reply.status, 400);
    // The state in the URL is not the cookie's.
    let c = format!("{LOGIN_COOKIE}={sealed}");
    let other_state = callback.replace("state=", "state=x");
    let reply = with_cookie(&other_state, &c).await;
    assert_eq!(reply.status, 400);
    // The untouched callback still works once ...
    let ok = b.get(&callback).await;
    assert_eq!(ok.status, 302, "{}", ok.body);
    let token = b.cookie(COOKIE).unwrap();
    // ... and a replay is refused here, before the IdP, so the session it made lives on.
    let reply = with_cookie(&callback, &c).await;
    assert_eq!(reply.status, 400);
    assert_eq!(stack.idp.verify(&token).await.status, 200);

    // An expired state, sealed as the gateway would have an hour ago.
    let b = Browser::new();
    let authorize = start(&stack, &b, "/app/").await;
    let callback = sign_in_at_idp(&b, &authorize).await;
    let q: std::collections::BTreeMap<String, String> =
        serde_urlencoded::from_str(callback.split_once('?').unwrap().1).unwrap();
    let sealer = Sealer::new(GATEWAY_SECRET);
    let mine = sign_in_state(&sealer, &b);
    assert_eq!(mine.state, q["state"]);
    let old = LoginState {
        issued_at: now_unix() - 3600,
        ..mine.clone()
    };
    let c = format!(
        "{LOGIN_COOKIE}={}",
        sealer.seal(&old, LOGIN_COOKIE).unwrap()
    );
    let reply = with_cookie(&callback, &c).await;
    assert_eq!(reply.status, 400);
    // Sealed with another key (another gateway's secret): refused too.
    let c = format!(
        "{LOGIN_COOKIE}={}",
        Sealer::new("not-the-secret")
            .seal(&mine, LOGIN_COOKIE)
            .unwrap()
    );
    let reply = with_cookie(&callback, &c).await;
    assert_eq!(reply.status, 400);

    // A code issued to another client, with this gateway's own valid state.
    let b = Browser::new();
    let authorize = start(&stack, &b, "/app/").await;
    let q: std::collections::BTreeMap<String, String> =
        serde_urlencoded::from_str(authorize.split_once('?').unwrap().1).unwrap();
    let foreign = stack.idp.url(&format!(
        "/oauth2/authorize?{}",
        serde_urlencoded::to_string([
            ("response_type", "code"),
            ("client_id", OTHER_CLIENT),
            ("redirect_uri", &q["redirect_uri"]),
            ("state", &q["state"]),
            ("code_challenge", &q["code_challenge"]),
            ("code_challenge_method", "S256"),
        ])
        .unwrap()
    ));
    let callback = sign_in_at_idp(&b, &foreign).await;
    assert!(callback.contains("code="), "{callback}");
    let reply = b.get(&callback).await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert!(b.cookie(COOKIE).is_none());
}

#[tokio::test]
async fn sign_in_returns_only_to_paths_on_this_gateway() {
    let stack = BrowserStack::start().await;
    let sealer = Sealer::new(GATEWAY_SECRET);
    for (rd, expected) in [
        ("/app/x?y=1", "/app/x?y=1"),
        ("//evil.example", "/"),
        ("https://evil.example", "/"),
        ("http:evil.example", "/"),
        ("/\\evil.example", "/"),
        ("\\\\evil.example", "/"),
        ("/%2F%2Fevil.example", "/"),
        ("%2F%2Fevil.example", "/"),
        ("/%5Cevil.example", "/"),
        ("/%252F%252Fevil.example", "/"),
        ("/x\r\nlocation: //evil", "/"),
        ("/x\tx", "/"),
        ("javascript:alert(1)", "/"),
        ("", "/"),
    ] {
        let b = Browser::new();
        start(&stack, &b, rd).await;
        let state = sign_in_state(&sealer, &b);
        assert_eq!(state.rd, expected, "{rd:?}");
    }
    // The whole way round: an off-site rd lands on / of the gateway.
    let b = Browser::new();
    let done = sign_in(&stack, &b, "//evil.example/x").await;
    assert_eq!(done.status, 302);
    assert_eq!(done.header("location"), Some("/"));
    // rd missing altogether.
    let reply = b.get(&stack.url("/.tokengate/login")).await;
    assert_eq!(reply.status, 302);
}
