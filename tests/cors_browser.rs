//! CORS in a real headless Chromium: pages served from other origins call the gateway with
//! `fetch`. From the allowed origin, a cookie route with credentials and the README's policy
//! route with a bearer token work (preflights included) and the page reads the answers, the
//! gateway's refusals too; from another origin the browser blocks them. The backend never
//! sees a preflight.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::{Arc, Mutex};

use axum::http::{Method, Uri};
use axum::response::{Html, IntoResponse};
use fantoccini::cookies::Cookie;
use support::browser::Chrome;
use support::{TestGateway, TestIdp, TestRedis, idp_config};

/// A backend that records `METHOD path` and answers it as JSON.
async fn backend() -> (std::net::SocketAddr, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let app = axum::Router::new().fallback(move |method: Method, uri: Uri| {
        let log = log.clone();
        async move {
            log.lock().unwrap().push(format!("{method} {}", uri.path()));
            axum::Json(serde_json::json!({"method": method.as_str(), "path": uri.path()}))
                .into_response()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, seen)
}

/// A blank page on a port of its own: an origin of its own, on the gateway's site.
async fn page() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(|| async { Html("<!doctype html><title>spa</title><body>spa</body>") }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    origin
}

/// `fetch(url, init)` from the page: status (0 when the browser blocked it), body, and the
/// `x-request-id` the page can read.
async fn fetch(chrome: &Chrome, url: &str, init: serde_json::Value) -> (u64, String, bool) {
    let script = r#"
const [url, init, done] = arguments;
fetch(url, init)
  .then(async (r) => done({ status: r.status, body: await r.text(),
                            id: r.headers.get('x-request-id') !== null }))
  .catch((e) => done({ status: 0, body: String(e), id: false }));
"#;
    let answer = chrome
        .client
        .execute_async(script, vec![url.into(), init])
        .await
        .unwrap();
    (
        answer["status"].as_u64().unwrap(),
        answer["body"].as_str().unwrap().to_owned(),
        answer["id"].as_bool().unwrap(),
    )
}

#[tokio::test]
async fn pages_of_other_origins_call_the_gateway_as_its_cors_allows() {
    let redis = TestRedis::start();
    let idp = TestIdp::spawn(idp_config(&redis.url())).await;
    let (backend, seen) = backend().await;
    let (spa, other) = (page().await, page().await);
    let readme = include_str!("../README.md");
    let block = &readme[readme.find("<!-- policy-example").unwrap()..];
    let start = block.find("```toml\n").unwrap() + "```toml\n".len();
    let policy = block[start..start + block[start..].find("```").unwrap()]
        .replace("http://127.0.0.1:9001", &format!("http://{backend}"))
        .replace("https://app.example.com", &spa);
    let listen = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let public = listen.local_addr().unwrap();
    drop(listen);
    let gateway_url = format!("http://{public}");
    let text = format!(
        r#"
[server]
listen = "{public}"
[admin]
listen = "127.0.0.1:0"
[store]
redis_url = "{redis}"
[idp]
jwks_url = "{jwks}"
[browser]
issuer = "{issuer}"
client_id = "gateway"
client_secret = "gateway-client-secret"
public_url = "{gateway_url}"
[[routes]]
path_prefix = "/app/api/"
upstream = "http://{backend}"
browser = true
cors = {{ allowed_origins = ["{spa}"], allowed_methods = ["GET", "PUT", "DELETE"], allowed_headers = ["content-type"], allow_credentials = true }}
{policy}
"#,
        redis = redis.url(),
        jwks = idp.url("/.well-known/jwks.json"),
        issuer = idp.url(""),
    );
    let config: tokengate_gateway::config::GatewayConfig = toml::from_str(&text).unwrap();
    let _gateway = TestGateway::spawn(config).await;
    let token = idp.login("alice").await;

    let chrome = Chrome::start().await;
    let c = &chrome.client;
    // The session cookie, as the gateway's sign-in would set it (it holds a reference token).
    c.goto(&format!("{gateway_url}/nothing-here"))
        .await
        .unwrap();
    let cookie = Cookie::parse(format!(
        "tokengate={token}; Path=/; HttpOnly; SameSite=Lax; Domain=127.0.0.1"
    ))
    .unwrap();
    c.add_cookie(cookie).await.unwrap();

    let cart = format!("{gateway_url}/app/api/cart");
    let put_json = serde_json::json!({
        "method": "PUT", "credentials": "include",
        "headers": {"content-type": "application/json"}, "body": "{}"
    });
    let bearer = |method: &str| serde_json::json!({"method": method, "headers": {"authorization": format!("Bearer {token}")}});
    let order = format!("{gateway_url}/shop/orders/7");
    let orders = format!("{gateway_url}/shop/orders");

    // From the allowed origin.
    c.goto(&spa).await.unwrap();
    chrome.wait_for("body").await;
    // A cookie route with credentials: preflight (PUT, JSON), then the PUT with the cookie,
    // through the CSRF check, and the page reads the answer.
    let (status, body, _) = fetch(&chrome, &cart, put_json.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"method\":\"PUT\""), "{body}");
    // The README's route with a bearer token: preflight for `authorization`, then the GET; the
    // page reads the exposed x-request-id.
    let (status, body, id) = fetch(&chrome, &order, bearer("GET")).await;
    assert_eq!(status, 200, "{body}");
    assert!(id, "x-request-id is exposed");
    // A rule's refusal is readable by the page, with the rule it names.
    let (status, body, _) = fetch(&chrome, &orders, bearer("POST")).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("refused by rule 3 of the route"), "{body}");
    chrome.screenshot("cors-allowed-origin").await;

    // From another origin: the browser blocks every one of them.
    c.goto(&other).await.unwrap();
    chrome.wait_for("body").await;
    for (url, init) in [
        (&cart, put_json.clone()),
        (&order, bearer("GET")),
        (
            &cart,
            serde_json::json!({"method": "GET", "credentials": "include"}),
        ),
    ] {
        let (status, body, _) = fetch(&chrome, url, init.clone()).await;
        assert_eq!(status, 0, "{url} {init}: {body}");
    }
    chrome.stop().await;

    let seen = seen.lock().unwrap().clone();
    assert!(seen.iter().any(|s| s == "PUT /app/api/cart"), "{seen:?}");
    assert!(seen.iter().any(|s| s == "GET /shop/orders/7"), "{seen:?}");
    assert!(
        !seen.iter().any(|s| s.starts_with("OPTIONS")),
        "a preflight reached the backend: {seen:?}"
    );
    assert!(
        !seen.iter().any(|s| s == "POST /shop/orders"),
        "refused by rule 3: {seen:?}"
    );
}
