//! The admin console: signing in through the IdP's own code flow, its pages in a real headless
//! Chromium, its actions reaching a running gateway, its CSRF and role checks, and the audit
//! trail of the console and the admin API.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::PathBuf;
use std::time::Duration;

use fantoccini::Locator;
use support::browser::Chrome;
use support::oidc::{Browser, console_sign_in, hidden_fields};
use support::{
    EchoBackend, PASSWORD, TestGateway, TestIdp, TestRedis, eventually, gateway_config, idp_config,
};
use tokengate_idp::config::UserConfig;
use tokengate_idp::password::hash_password;
use tokengate_store::ReferenceToken;

/// A username that would run as script if a page did not escape it.
const EVIL: &str = "<script>alert(\"x\")</script>'o";

fn admin_user() -> UserConfig {
    UserConfig {
        username: "root".to_owned(),
        password_hash: hash_password(PASSWORD).unwrap(),
        roles: vec!["tokengate:admin".to_owned()],
    }
}

/// Saves a screenshot under `target/screenshots/`; with `TOKENGATE_UPDATE_SCREENSHOTS=1`, also
/// where the README shows it (`docs/console/`), so a test run leaves the source tree alone.
async fn screenshot(chrome: &Chrome, name: &str) {
    let taken = chrome.screenshot(name).await;
    if std::env::var_os("TOKENGATE_UPDATE_SCREENSHOTS").is_some() {
        let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/console");
        std::fs::create_dir_all(&docs).unwrap();
        std::fs::copy(taken, docs.join(format!("{name}.png"))).unwrap();
    }
}

fn session_id(token: &str) -> String {
    ReferenceToken::parse(token)
        .unwrap()
        .session_id()
        .to_string()
}

async fn status_becomes(gw: &TestGateway, path: &str, token: &str, status: u16) -> bool {
    eventually(Duration::from_secs(5), || async {
        gw.get_with_token(path, token).await.status == status
    })
    .await
}

#[tokio::test]
async fn console_in_a_real_browser() {
    let redis = TestRedis::start();
    let mut config = idp_config(&redis.url());
    config.users.push(admin_user());
    let idp = TestIdp::spawn(config).await;
    let backend = EchoBackend::start().await;
    let gw = TestGateway::spawn(gateway_config(&redis.url(), &idp, &backend.url())).await;
    let created = idp
        .admin(
            "POST",
            "/admin/users",
            Some(&serde_json::json!({ "username": EVIL, "roles": ["x"] }).to_string()),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let (first, second) = (idp.login("alice").await, idp.login("alice").await);
    for token in [&first, &second] {
        assert_eq!(gw.get_with_token("/api/orders", token).await.status, 200);
    }
    let chrome = Chrome::start().await;
    let c = &chrome.client;

    // Not signed in: the IdP's own sign-in page, then the overview.
    c.goto(&idp.admin_url("/console/")).await.unwrap();
    chrome.wait_for_url(&idp.url("/oauth2/authorize?")).await;
    chrome.wait_for("input[name=username]").await;
    chrome.fill("input[name=username]", "root").await;
    chrome.fill("input[name=password]", PASSWORD).await;
    chrome.click("button[type=submit]").await;
    chrome.wait_for_url(&idp.admin_url("/console/")).await;
    chrome.wait_for("#sign-ins").await;
    screenshot(&chrome, "overview").await;
    let cookie = c.get_named_cookie("tokengate_console").await.unwrap();
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(format!("{:?}", cookie.same_site()), "Some(Strict)");
    assert_eq!(cookie.path(), Some("/console/"));

    // Find a user by the start of the name.
    c.goto(&idp.admin_url("/console/users")).await.unwrap();
    chrome.fill("#prefix", "ali").await;
    chrome.click("#search").await;
    chrome.wait_for("a[href='/console/user?name=alice']").await;
    screenshot(&chrome, "users").await;
    chrome.click("a[href='/console/user?name=alice']").await;
    chrome.wait_for("#sessions").await;
    screenshot(&chrome, "user").await;

    // End one session: that token is refused at the gateway right after, the other is not.
    let one = format!(
        "#sessions form:has(input[value='{}']) button",
        session_id(&first)
    );
    chrome.click(&one).await;
    chrome.wait_for("#notice").await;
    assert!(status_becomes(&gw, "/api/orders", &first, 401).await);
    assert_eq!(gw.get_with_token("/api/orders", &second).await.status, 200);
    // Then all of them.
    chrome.click("#end-all").await;
    chrome.wait_for("#notice").await;
    chrome.wait_for("#no-sessions").await;
    assert!(status_becomes(&gw, "/api/orders", &second, 401).await);

    // Roles: 403 becomes 200 at the gateway, and back.
    let third = idp.login("alice").await;
    assert_eq!(gw.get_with_token("/admin-only/x", &third).await.status, 403);
    chrome.fill("#roles", "orders:read admin").await;
    chrome.click("#save-roles").await;
    chrome.wait_for("#notice").await;
    assert!(status_becomes(&gw, "/admin-only/x", &third, 200).await);
    chrome.fill("#roles", "orders:read").await;
    chrome.click("#save-roles").await;
    chrome.wait_for("#notice").await;
    assert!(status_becomes(&gw, "/admin-only/x", &third, 403).await);
    assert_eq!(gw.get_with_token("/api/orders", &third).await.status, 200);

    // A phone-sized screen.
    c.set_window_size(390, 844).await.unwrap();
    c.refresh().await.unwrap();
    chrome.wait_for("#roles").await;
    screenshot(&chrome, "user-phone").await;
    c.set_window_size(1280, 900).await.unwrap();

    // A name made of markup shows as text, in the list and on its page.
    c.goto(&idp.admin_url("/console/users?prefix=%3Cscript"))
        .await
        .unwrap();
    chrome.wait_for("#users a").await;
    let link = c.find(Locator::Css("#users a")).await.unwrap();
    assert_eq!(link.text().await.unwrap(), EVIL);
    link.click().await.unwrap();
    chrome.wait_for("#username").await;
    let shown = c.find(Locator::Css("#username")).await.unwrap();
    assert_eq!(shown.text().await.unwrap(), EVIL);
    assert!(!c.source().await.unwrap().contains("<script>alert"));

    // Clients, read-only, with the console's own.
    c.goto(&idp.admin_url("/console/clients")).await.unwrap();
    chrome.wait_for("#clients").await;
    assert!(c.source().await.unwrap().contains("tokengate-console"));
    screenshot(&chrome, "clients").await;

    // The audit trail lists what was done, here and through the API.
    c.goto(&idp.admin_url("/console/audit")).await.unwrap();
    chrome.wait_for("#audit").await;
    let trail = c
        .find(Locator::Css("#audit"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for seen in [
        "console.sign-in",
        "session.revoke",
        "user.logout",
        "user.roles [orders:read admin]",
        "console:root",
        "admin-token",
        "user.create",
        EVIL,
    ] {
        assert!(
            trail.contains(seen),
            "{seen} missing from the audit page: {trail}"
        );
    }
    screenshot(&chrome, "audit").await;

    // Someone without the role is refused, even after signing in.
    c.goto(&idp.admin_url("/console/login?prompt=login"))
        .await
        .unwrap();
    chrome.wait_for("input[name=username]").await;
    chrome.fill("input[name=username]", "bob").await;
    chrome.fill("input[name=password]", PASSWORD).await;
    chrome.click("button[type=submit]").await;
    chrome
        .wait_for_url(&idp.admin_url("/console/callback"))
        .await;
    chrome.wait_for("#message").await;
    let refusal = c.find(Locator::Css("#message")).await.unwrap();
    assert!(
        refusal
            .text()
            .await
            .unwrap()
            .contains("does not hold the role tokengate:admin"),
    );
    screenshot(&chrome, "refused").await;
    chrome.stop().await;
}

/// The console's own answer to a form, from the page that holds it.
fn form_of(page: &str) -> Vec<(String, String)> {
    hidden_fields(page)
}

#[tokio::test]
async fn forms_need_their_csrf_token_and_every_request_the_role() {
    let redis = TestRedis::start();
    let mut config = idp_config(&redis.url());
    config.users.push(admin_user());
    config.admin.console_idle_timeout = Duration::from_secs(120);
    let idp = TestIdp::spawn(config).await;
    let admin = idp.admin_url("");
    let browser = Browser::new();
    let signed_in = console_sign_in(&browser, &admin, "root", PASSWORD).await;
    assert_eq!(signed_in.status, 303, "{}", signed_in.body);
    let set_cookie = signed_in
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("tokengate_console="))
        .unwrap();
    assert!(set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"));
    assert!(set_cookie.contains("Path=/console/") && !set_cookie.contains("Max-Age"));
    let console_cookie = browser.cookie("tokengate_console").unwrap();
    // A session in the store, idle after admin.console_idle_timeout.
    let root = idp
        .admin("GET", "/admin/users/root/sessions", None)
        .await
        .json();
    let idle: Vec<u64> = root["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["expires_at"].as_u64().unwrap() - s["last_used_at"].as_u64().unwrap())
        .collect();
    assert!(idle.contains(&120), "{root}");

    // The pages' headers.
    let overview = browser.get(&format!("{admin}/console/")).await;
    assert_eq!(overview.status, 200, "{}", overview.body);
    let csp = overview.header("content-security-policy").unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"));
    assert!(!csp.contains("script-src"));
    assert_eq!(overview.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(overview.header("cache-control"), Some("no-store"));
    assert!(!overview.body.contains("<script"));

    // A form without its CSRF token, or with a wrong one, changes nothing.
    let token = idp.login("alice").await;
    let page = browser
        .get(&format!("{admin}/console/user?name=alice"))
        .await;
    assert_eq!(page.status, 200);
    let csrf = form_of(&page.body)
        .into_iter()
        .find(|(k, _)| k == "csrf")
        .unwrap()
        .1;
    let url = format!("{admin}/console/user");
    for form in [
        vec![("username", "alice"), ("action", "end-all")],
        vec![
            ("username", "alice"),
            ("action", "end-all"),
            ("csrf", "forged"),
        ],
    ] {
        let refused = browser.post_form(&url, &form).await;
        assert_eq!(refused.status, 403, "{}", refused.body);
        assert_eq!(idp.verify(&token).await.status, 200);
    }
    let done = browser
        .post_form(
            &url,
            &[
                ("username", "alice"),
                ("action", "end-all"),
                ("csrf", &csrf),
            ],
        )
        .await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert_eq!(idp.verify(&token).await.status, 401);

    // The admin token opens the API, not the pages; the console cookie is no bearer token.
    let with_token = support::send(
        "GET",
        &format!("{admin}/console/"),
        &[("authorization", &format!("Bearer {}", support::ADMIN_TOKEN))],
        String::new(),
    )
    .await;
    assert_eq!(with_token.status, 303);
    assert_eq!(idp.verify(&console_cookie).await.status, 401);
    let api_with_cookie = support::send(
        "GET",
        &format!("{admin}/admin/users"),
        &[("cookie", &format!("tokengate_console={console_cookie}"))],
        String::new(),
    )
    .await;
    assert_eq!(api_with_cookie.status, 401);

    // Markup in a name is text on every page.
    let evil = serde_json::json!({ "username": EVIL, "roles": [] }).to_string();
    assert_eq!(
        idp.admin("POST", "/admin/users", Some(&evil)).await.status,
        201
    );
    for path in [
        "/console/users?prefix=%3Cscript".to_owned(),
        format!(
            "/console/user?{}",
            serde_urlencoded::to_string([("name", EVIL)]).unwrap()
        ),
        "/console/audit".to_owned(),
    ] {
        let page = browser.get(&format!("{admin}{path}")).await;
        assert_eq!(page.status, 200, "{path}");
        assert!(
            !page.body.contains("<script>alert"),
            "{path}: {}",
            page.body
        );
        assert!(
            page.body.contains("&#60;script&#62;alert(&#34;x&#34;)"),
            "{path}"
        );
    }

    // The audit trail at /admin/audit has the API's actions and the console's, newest first.
    let audit = idp.admin("GET", "/admin/audit?limit=2", None).await;
    assert_eq!(audit.status, 200, "{}", audit.body);
    let page = audit.json();
    let newest = &page["entries"][0];
    assert_eq!(newest["actor"], "admin-token");
    assert_eq!(newest["action"], "user.create");
    assert_eq!(newest["target"], EVIL);
    assert_eq!(newest["address"], "127.0.0.1");
    assert!(newest["time"].as_u64().unwrap() > 0);
    let second = &page["entries"][1];
    assert_eq!(
        (second["actor"].as_str(), second["action"].as_str()),
        (Some("console:root"), Some("user.logout"))
    );
    let cursor = page["next"].as_str().unwrap();
    let older = idp
        .admin("GET", &format!("/admin/audit?cursor={cursor}"), None)
        .await
        .json();
    assert_eq!(older["entries"][0]["action"], "console.sign-in");
    assert_eq!(older["next"], serde_json::Value::Null);
    let bad = idp.admin("GET", "/admin/audit?cursor=nonsense", None).await;
    assert_eq!(bad.status, 400);
    let anonymous = support::send("GET", &idp.admin_url("/admin/audit"), &[], String::new()).await;
    assert_eq!(anonymous.status, 401);

    // Every request checks the role again: taken away, the next page is refused.
    let roles = r#"{"roles": ["orders:read"]}"#;
    assert_eq!(
        idp.admin("PUT", "/admin/users/root/roles", Some(roles))
            .await
            .status,
        200
    );
    let refused = browser.get(&format!("{admin}/console/")).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(
        refused
            .body
            .contains("does not hold the role tokengate:admin")
    );
    // A forced logout ends the console session.
    let back = r#"{"roles": ["tokengate:admin"]}"#;
    idp.admin("PUT", "/admin/users/root/roles", Some(back))
        .await;
    assert_eq!(browser.get(&format!("{admin}/console/")).await.status, 200);
    let out = idp
        .admin("DELETE", "/admin/users/root/sessions", None)
        .await;
    assert_eq!(out.status, 200);
    let ended = browser.get(&format!("{admin}/console/")).await;
    assert_eq!(ended.status, 303);
    assert_eq!(ended.header("location"), Some("/console/login"));

    // Signed in without the role: refused, and no console session is made.
    let bob = Browser::new();
    let refused = console_sign_in(&bob, &admin, "bob", PASSWORD).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(bob.cookie("tokengate_console").is_none());
    let sessions = idp
        .admin("GET", "/admin/users/bob/sessions", None)
        .await
        .json();
    // Only the IdP's own sign-in (single sign-on) session.
    assert_eq!(sessions["sessions"].as_array().unwrap().len(), 1);
}
