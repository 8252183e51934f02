//! Browser sessions at the gateway in a real headless Chromium: a protected page sends the
//! browser to sign in and back with a cookie; the page's `fetch()` reaches a protected API with
//! the cookie; a forced logout ends it; a page of another origin cannot use it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use axum::response::Html;
use support::browser::Chrome;
use support::gateway_browser::BrowserStack;
use support::{PASSWORD, eventually};

/// `fetch(url, {method})` from the page; the answer's status and body.
async fn fetch(chrome: &Chrome, url: &str, method: &str) -> (u64, String) {
    let script = r#"
const [url, method, done] = arguments;
fetch(url, { method, credentials: 'same-origin' })
  .then(async (r) => done({ status: r.status, body: await r.text() }))
  .catch((e) => done({ status: 0, body: String(e) }));
"#;
    let answer = chrome
        .client
        .execute_async(script, vec![url.into(), method.into()])
        .await
        .unwrap();
    (
        answer["status"].as_u64().unwrap(),
        answer["body"].as_str().unwrap().to_owned(),
    )
}

/// A page of another origin (another port of the same host: same site, so the browser sends
/// the `SameSite=Lax` cookie with its form) that posts to the gateway's API.
async fn cross_origin_page(target: String) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let page = format!(
        r#"<!doctype html><html><body><form method="post" action="{target}">
<input name="amount" value="1000"><button id="go" type="submit">go</button></form></body></html>"#
    );
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(move || {
            let page = page.clone();
            async move { Html(page) }
        }),
    );
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, task)
}

async fn sign_in(chrome: &Chrome) {
    chrome.wait_for("input[name=username]").await;
    chrome.fill("input[name=username]", "alice").await;
    chrome.fill("input[name=password]", PASSWORD).await;
    chrome.click("button[type=submit]").await;
}

#[tokio::test]
async fn a_browser_app_through_the_gateway_in_a_real_browser() {
    let stack = BrowserStack::start().await;
    let chrome = Chrome::start().await;
    let c = &chrome.client;
    let page = stack.url("/app/page");

    // A protected page: off to the IdP's sign-in form, then back on the page.
    c.goto(&page).await.unwrap();
    chrome
        .wait_for_url(&stack.idp.url("/oauth2/authorize"))
        .await;
    chrome.screenshot("gateway-signin").await;
    sign_in(&chrome).await;
    chrome.wait_for_url(&page).await;
    let cookie = c.get_named_cookie("tokengate").await.unwrap();
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(cookie.path(), Some("/"));
    assert_eq!(format!("{:?}", cookie.same_site()), "Some(Lax)");
    // The page's script cannot read it.
    let visible = c.execute("return document.cookie", vec![]).await.unwrap();
    assert!(
        !visible.as_str().unwrap().contains("tokengate="),
        "{visible}"
    );
    chrome.screenshot("gateway-app-page").await;

    // The page calls a protected API with its cookie: the backend gets identity, no cookie.
    let (status, body) = fetch(&chrome, "/app/api/orders", "GET").await;
    assert_eq!(status, 200, "{body}");
    let echoed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echoed["headers"]["x-auth-subject"], "alice");
    assert_eq!(echoed["headers"]["x-auth-roles"], "orders:read");
    let forwarded_cookies = echoed["headers"]["cookie"].as_str().unwrap_or("");
    for name in ["tokengate=", "tokengate_idp=", "tokengate_csrf="] {
        assert!(!forwarded_cookies.contains(name), "{forwarded_cookies}");
    }
    // Same-origin POST: Chromium sends Origin, which is allowed.
    let (status, body) = fetch(&chrome, "/app/api/orders", "POST").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = fetch(&chrome, "/.tokengate/session", "GET").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"subject\":\"alice\""), "{body}");

    // A page of another origin posting to the API with the cookie: refused.
    let (evil, server) = cross_origin_page(stack.url("/app/api/orders")).await;
    c.goto(&evil).await.unwrap();
    chrome.wait_for("#go").await;
    chrome.click("#go").await;
    chrome.wait_for_url(&stack.url("/app/api/orders")).await;
    chrome.wait_for("body").await;
    let refused = c.source().await.unwrap();
    assert!(refused.contains("cross_site_request"), "{refused}");
    server.abort();

    // A forced logout by an administrator: the next fetch is 401, the next navigation signs in.
    c.goto(&page).await.unwrap();
    chrome.wait_for_url(&page).await;
    let out = stack
        .idp
        .admin("DELETE", "/admin/users/alice/sessions", None)
        .await;
    assert_eq!(out.status, 200);
    let last = std::sync::Mutex::new((0, String::new()));
    let ended = eventually(Duration::from_secs(5), || {
        let (chrome, last) = (&chrome, &last);
        async move {
            let answer = fetch(chrome, "/app/api/orders", "GET").await;
            let done = answer.0 == 401;
            *last.lock().unwrap() = answer;
            done
        }
    })
    .await;
    let last = last.into_inner().unwrap();
    assert!(ended, "the session outlived a forced logout: {last:?}");
    assert!(
        last.1.contains("\"error\""),
        "JSON, not a redirect: {}",
        last.1
    );
    c.goto(&page).await.unwrap();
    chrome
        .wait_for_url(&stack.idp.url("/oauth2/authorize"))
        .await;
    chrome.wait_for("input[name=username]").await;
    chrome.stop().await;
}
