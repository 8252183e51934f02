//! The browser client's unit tests.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::config::GatewayConfig;

fn config(public_url: &str) -> GatewayConfig {
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:1"
[idp]
jwks_url = "http://127.0.0.1:7000/.well-known/jwks.json"
[browser]
issuer = "http://127.0.0.1:7000"
client_id = "gateway"
client_secret = "s3cret"
public_url = "{public_url}"
"#
    );
    GatewayConfig::parse(&text, std::path::Path::new("test.toml")).unwrap()
}

fn browser() -> Browser {
    let config = config("http://127.0.0.1:8080/");
    Browser::new(config.browser.as_ref().unwrap(), false)
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(*k, v.parse().unwrap());
    }
    h
}

#[test]
fn unsafe_requests_need_an_allowed_origin() {
    let b = browser();
    let post = Method::POST;
    let ok = Ok(());
    let refused = Err(Reject::CrossSite);
    assert_eq!(b.check_origin(&Method::GET, &headers(&[])), ok);
    assert_eq!(
        b.check_origin(&post, &headers(&[("origin", "http://127.0.0.1:8080")])),
        ok
    );
    assert_eq!(
        b.check_origin(
            &post,
            &headers(&[("referer", "http://127.0.0.1:8080/app/x?y")])
        ),
        ok
    );
    for bad in [
        headers(&[]),
        headers(&[("origin", "http://127.0.0.1:8081")]),
        headers(&[("origin", "null")]),
        headers(&[("referer", "http://evil/http://127.0.0.1:8080/")]),
        headers(&[
            ("origin", "http://127.0.0.1:8080"),
            ("sec-fetch-site", "cross-site"),
        ]),
        headers(&[
            ("origin", "http://127.0.0.1:8080"),
            ("origin", "http://evil"),
        ]),
    ] {
        assert_eq!(b.check_origin(&post, &bad), refused, "{bad:?}");
    }
    for method in [Method::PUT, Method::DELETE, Method::PATCH] {
        assert_eq!(b.check_origin(&method, &headers(&[])), refused);
    }
}

#[test]
fn navigations_are_html_gets_not_fetches() {
    let req = |method: Method, pairs: &[(&'static str, &str)]| {
        let mut r = Request::builder().method(method).uri("/app/");
        for (k, v) in pairs {
            r = r.header(*k, *v);
        }
        r.body(()).unwrap()
    };
    let html = ("accept", "text/html,application/xhtml+xml,*/*;q=0.8");
    assert!(is_navigation(&req(Method::GET, &[html])));
    assert!(is_navigation(&req(
        Method::GET,
        &[html, ("sec-fetch-mode", "navigate")]
    )));
    assert!(!is_navigation(&req(
        Method::GET,
        &[html, ("sec-fetch-mode", "cors")]
    )));
    assert!(!is_navigation(&req(Method::GET, &[("accept", "*/*")])));
    assert!(!is_navigation(&req(Method::POST, &[html])));
}

#[test]
fn sign_in_keeps_the_path_and_query_encoded() {
    let b = browser();
    let req = Request::get("/app/x?a=1&b=%2F").body(()).unwrap();
    let response = b.sign_in(&req);
    assert_eq!(response.status(), StatusCode::FOUND);
    assert_eq!(
        response.headers()[header::LOCATION],
        "/.tokengate/login?rd=%2Fapp%2Fx%3Fa%3D1%26b%3D%252F"
    );
}

#[test]
fn under_tls_the_cookie_is_secure_with_the_host_prefix() {
    let config = config("https://app.example.com");
    let b = Browser::new(config.browser.as_ref().unwrap(), true);
    assert_eq!(b.cookie, "__Host-tokengate");
    let mut response = redirect(StatusCode::FOUND, "/");
    b.set_cookie(&mut response, &b.cookie, "tok", 60);
    assert_eq!(
        response.headers()[header::SET_COOKIE],
        "__Host-tokengate=tok; Path=/; HttpOnly; SameSite=Lax; Secure; Max-Age=60"
    );
}

#[test]
fn own_cookies_take_the_configured_name() {
    assert_eq!(
        browser().own_cookies(),
        ["tokengate", "tokengate-login", "tokengate-id"]
    );
}
