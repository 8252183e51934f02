//! Sign-in in a real headless Chromium: the form, the redirect with a code, single sign-on for
//! a second application, logout, and a forced logout that ends the browser's IdP session.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClientId, CsrfToken, IssuerUrl, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, TokenResponse,
};
use support::browser::Chrome;
use support::oidc::{Http, Rp};
use support::{EchoBackend, PASSWORD, TestIdp, TestRedis, idp_config};
use tokengate_idp::config::{ClientConfig, Grant};

async fn relying_party(idp: &TestIdp, client_id: &str, redirect: &str) -> Rp {
    let http = Http::new();
    let meta = CoreProviderMetadata::discover_async(IssuerUrl::new(idp.url("")).unwrap(), &http)
        .await
        .unwrap();
    let token_url = meta.token_endpoint().cloned().unwrap();
    CoreClient::from_provider_metadata(meta, ClientId::new(client_id.to_owned()), None)
        .set_redirect_uri(RedirectUrl::new(redirect.to_owned()).unwrap())
        .set_token_uri(token_url)
}

fn start(rp: &Rp) -> (String, CsrfToken, Nonce, PkceCodeVerifier) {
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, state, nonce) = rp
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .set_pkce_challenge(challenge)
        .url();
    (url.to_string(), state, nonce, verifier)
}

fn query(url: &str) -> std::collections::BTreeMap<String, String> {
    serde_urlencoded::from_str(url.split_once('?').map_or("", |(_, q)| q)).unwrap()
}

#[tokio::test]
async fn signing_in_in_a_real_browser() {
    let redis = TestRedis::start();
    // The applications' pages: any answer will do, the browser only has to land there.
    let app = EchoBackend::start().await;
    let (web_cb, app2_cb, home) = (
        format!("{}/web/callback", app.url()),
        format!("{}/app2/callback", app.url()),
        format!("{}/", app.url()),
    );
    let mut config = idp_config(&redis.url());
    let mut web = ClientConfig::public("web", &[Grant::AuthorizationCode], &[&web_cb]);
    web.post_logout_redirect_uris = vec![home.clone()];
    config.clients.push(web);
    config.clients.push(ClientConfig::public(
        "app2",
        &[Grant::AuthorizationCode],
        &[&app2_cb],
    ));
    let idp = TestIdp::spawn(config).await;
    let (web, app2) = (
        relying_party(&idp, "web", &web_cb).await,
        relying_party(&idp, "app2", &app2_cb).await,
    );
    let chrome = Chrome::start().await;
    let c = &chrome.client;

    // The sign-in form.
    let (url, state, nonce, verifier) = start(&web);
    c.goto(&url).await.unwrap();
    chrome.wait_for("input[name=username]").await;
    chrome.screenshot("signin").await;
    chrome.fill("input[name=username]", "alice").await;
    chrome.fill("input[name=password]", PASSWORD).await;
    chrome.click("button[type=submit]").await;

    // Back at the application with a code, which the application exchanges.
    let landed = chrome.wait_for_url(&web_cb).await;
    let q = query(&landed);
    assert_eq!(&q["state"], state.secret());
    let tokens = web
        .exchange_code(AuthorizationCode::new(q["code"].clone()))
        .set_pkce_verifier(verifier)
        .request_async(&Http::new())
        .await
        .unwrap();
    let id_token = tokens.id_token().unwrap().clone();
    id_token
        .claims(&web.id_token_verifier(), &nonce)
        .expect("a valid ID token");
    let access = tokens.access_token().secret().to_owned();
    assert_eq!(idp.verify(&access).await.status, 200);

    // The IdP's cookie as the browser keeps it.
    c.goto(&idp.url("/.well-known/openid-configuration"))
        .await
        .unwrap();
    let cookie = c.get_named_cookie("tokengate_idp").await.unwrap();
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(format!("{:?}", cookie.same_site()), "Some(Lax)");

    // A second application: no form, straight back with a code.
    let (url2, _, _, _) = start(&app2);
    c.goto(&url2).await.unwrap();
    let landed = chrome.wait_for_url(&app2_cb).await;
    assert!(query(&landed).contains_key("code"));

    // Logout through the IdP, back to the application's home.
    let logout = idp.url(&format!(
        "/oauth2/logout?{}",
        serde_urlencoded::to_string([
            ("id_token_hint", id_token.to_string()),
            ("post_logout_redirect_uri", home.clone()),
        ])
        .unwrap()
    ));
    c.goto(&logout).await.unwrap();
    chrome.wait_for_url(&home).await;
    assert_eq!(idp.verify(&access).await.status, 401);
    let (url, _, _, _) = start(&web);
    c.goto(&url).await.unwrap();
    chrome.wait_for("input[name=username]").await;

    // Signed in again; a forced logout by an administrator ends the browser's session too.
    chrome.fill("input[name=username]", "alice").await;
    chrome.fill("input[name=password]", PASSWORD).await;
    chrome.click("button[type=submit]").await;
    chrome.wait_for_url(&web_cb).await;
    let out = idp
        .admin("DELETE", "/admin/users/alice/sessions", None)
        .await;
    assert_eq!(out.status, 200);
    let (url2, _, _, _) = start(&app2);
    c.goto(&url2).await.unwrap();
    chrome.wait_for("input[name=username]").await;
    assert!(
        c.current_url()
            .await
            .unwrap()
            .as_str()
            .starts_with(&idp.url("/oauth2/authorize"))
    );
    chrome.stop().await;
}
