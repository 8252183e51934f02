//! Sign-in through the authorization code flow with PKCE and OpenID Connect, against a running
//! IdP on a real Redis. The relying party is the independent `openidconnect` crate; the browser
//! is a cookie-keeping HTTP client (`tests/browser.rs` drives a real Chromium).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, RedirectUrl, Scope, TokenResponse,
};
use support::oidc::{Browser, Http, Rp, location_query};
use support::{PASSWORD, TestIdp, TestRedis, idp_config, post_form, send};
use tokengate_idp::config::{ClientConfig, Grant};
use tokengate_idp::password::hash_password;

const WEB: &str = "http://127.0.0.1:3000/callback";
const WEB_HOME: &str = "http://127.0.0.1:3000/";
const APP2: &str = "http://127.0.0.1:3001/callback";
const PORTAL: &str = "http://127.0.0.1:3002/cb";
const PORTAL_SECRET: &str = "portal-secret-123";

async fn setup() -> (TestRedis, TestIdp) {
    let redis = TestRedis::start();
    let mut config = idp_config(&redis.url());
    let mut web = ClientConfig::public("web", &[Grant::AuthorizationCode], &[WEB]);
    web.post_logout_redirect_uris = vec![WEB_HOME.to_owned()];
    config.clients.push(web);
    config.clients.push(ClientConfig::public(
        "app2",
        &[Grant::AuthorizationCode],
        &[APP2],
    ));
    let mut portal = ClientConfig::confidential(
        "portal",
        hash_password(PORTAL_SECRET).unwrap(),
        &[Grant::AuthorizationCode],
    );
    portal.redirect_uris = vec![PORTAL.to_owned()];
    config.clients.push(portal);
    let idp = TestIdp::spawn(config).await;
    (redis, idp)
}

async fn relying_party(idp: &TestIdp, client_id: &str, secret: Option<&str>, redirect: &str) -> Rp {
    let http = Http::new();
    let issuer = IssuerUrl::new(idp.url("")).unwrap();
    let meta = CoreProviderMetadata::discover_async(issuer, &http)
        .await
        .expect("discovery");
    let token_url = meta.token_endpoint().cloned().expect("token_endpoint");
    CoreClient::from_provider_metadata(
        meta,
        ClientId::new(client_id.to_owned()),
        secret.map(|s| ClientSecret::new(s.to_owned())),
    )
    .set_redirect_uri(RedirectUrl::new(redirect.to_owned()).unwrap())
    .set_token_uri(token_url)
}

/// A code-flow request's pieces, with PKCE and a nonce.
struct Flow {
    url: String,
    state: CsrfToken,
    nonce: Nonce,
    verifier: openidconnect::PkceCodeVerifier,
}

fn start(rp: &Rp, scopes: &[&str]) -> Flow {
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut req = rp.authorize_url(
        CoreAuthenticationFlow::AuthorizationCode,
        CsrfToken::new_random,
        Nonce::new_random,
    );
    for s in scopes {
        req = req.add_scope(Scope::new((*s).to_owned()));
    }
    let (url, state, nonce) = req.set_pkce_challenge(challenge).url();
    Flow {
        url: url.to_string(),
        state,
        nonce,
        verifier,
    }
}

#[tokio::test]
async fn code_flow_with_pkce_and_openid_connect_through_an_independent_client() {
    let (_redis, idp) = setup().await;
    let rp = relying_party(&idp, "web", None, WEB).await;
    let flow = start(&rp, &["orders:read"]);
    let browser = Browser::new();

    // The sign-in page: a form, no script, a CSP, a CSRF cookie.
    let page = browser.get(&flow.url).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("name=\"username\"") && page.body.contains("name=\"password\""));
    assert!(!page.body.contains("<script"));
    let csp = page.header("content-security-policy").unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert!(browser.cookie("tokengate_csrf").is_some());

    // Signing in redirects to the client with a code and the state.
    let back = browser.sign_in(&flow.url, "alice", PASSWORD).await;
    assert_eq!(back.status, 302, "{}", back.body);
    assert!(back.header("location").unwrap().starts_with(WEB));
    let query = location_query(&back);
    assert_eq!(&query["state"], flow.state.secret());
    assert_eq!(query["iss"], idp.url(""));
    let sso = back
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("tokengate_idp="))
        .expect("an IdP session cookie");
    assert!(
        sso.contains("HttpOnly") && sso.contains("SameSite=Lax"),
        "{sso}"
    );
    assert!(
        !sso.contains("Secure"),
        "plain HTTP: no Secure flag ({sso})"
    );

    // The client exchanges the code; the ID token verifies with the client library.
    let http = Http::new();
    let tokens = rp
        .exchange_code(AuthorizationCode::new(query["code"].clone()))
        .set_pkce_verifier(flow.verifier)
        .request_async(&http)
        .await
        .expect("code exchange");
    let id_token = tokens.id_token().expect("an ID token for the openid scope");
    let claims = id_token
        .claims(&rp.id_token_verifier(), &flow.nonce)
        .expect("a valid ID token");
    assert_eq!(claims.subject().as_str(), "alice");
    assert_eq!(claims.audiences()[0].as_str(), "web");
    assert!(claims.auth_time().is_some());
    let scopes: Vec<String> = tokens
        .scopes()
        .unwrap()
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(scopes, ["openid", "orders:read"]);

    // The access token is a reference token like any other, with the roles asked for.
    let access = tokens.access_token().secret().to_owned();
    let verify = idp.verify(&access).await;
    assert_eq!(verify.status, 200);
    assert_eq!(verify.header("x-auth-roles"), Some("orders:read"));
    let info = send(
        "GET",
        &idp.url("/oauth2/userinfo"),
        &[("authorization", &format!("Bearer {access}"))],
        String::new(),
    )
    .await;
    assert_eq!(info.status, 200);
    assert_eq!(info.json()["sub"], "alice");
    let info = rp
        .user_info(tokens.access_token().clone(), Some(claims.subject().clone()))
        .unwrap()
        .request_async::<openidconnect::EmptyAdditionalClaims, _, openidconnect::core::CoreGenderClaim>(&http)
        .await
        .expect("userinfo through the client library");
    assert_eq!(info.subject().as_str(), "alice");

    // The IdP session cookie is no bearer token.
    let cookie = browser.cookie("tokengate_idp").unwrap();
    assert_eq!(idp.verify(&cookie).await.status, 401);
}

#[tokio::test]
async fn a_second_application_signs_in_without_the_form_and_forced_logout_ends_that() {
    let (_redis, idp) = setup().await;
    let browser = Browser::new();
    let web = relying_party(&idp, "web", None, WEB).await;
    let first = browser
        .sign_in(&start(&web, &[]).url, "alice", PASSWORD)
        .await;
    assert_eq!(first.status, 302);

    // Single sign-on: the second application gets a code at once.
    let app2 = relying_party(&idp, "app2", None, APP2).await;
    let flow = start(&app2, &[]);
    let sso = browser.get(&flow.url).await;
    assert_eq!(sso.status, 302, "{}", sso.body);
    assert!(sso.header("location").unwrap().starts_with(APP2));
    let tokens = app2
        .exchange_code(AuthorizationCode::new(location_query(&sso)["code"].clone()))
        .set_pkce_verifier(flow.verifier)
        .request_async(&Http::new())
        .await
        .unwrap();
    let access = tokens.access_token().secret().to_owned();
    assert_eq!(idp.verify(&access).await.status, 200);

    // prompt=login asks again even so.
    let again = browser
        .get(&format!("{}&prompt=login", start(&app2, &[]).url))
        .await;
    assert_eq!(again.status, 200);

    // Forced logout ends the API session and the browser's IdP session alike.
    let out = idp
        .admin("DELETE", "/admin/users/alice/sessions", None)
        .await;
    assert_eq!(out.status, 200, "{}", out.body);
    // The browser's IdP session and app2's session (web's code was never exchanged).
    assert_eq!(out.json()["revoked"], 2);
    assert_eq!(idp.verify(&access).await.status, 401);
    let form_again = browser.get(&start(&app2, &[]).url).await;
    assert_eq!(form_again.status, 200, "the sign-in form, not a code");
    // prompt=none without a session: back to the client with login_required.
    let none = browser
        .get(&format!("{}&prompt=none", start(&app2, &[]).url))
        .await;
    assert_eq!(location_query(&none)["error"], "login_required");
}

#[tokio::test]
async fn a_replayed_code_is_refused_and_ends_the_session_it_made() {
    let (_redis, idp) = setup().await;
    let rp = relying_party(&idp, "web", None, WEB).await;
    let flow = start(&rp, &[]);
    let back = Browser::new().sign_in(&flow.url, "alice", PASSWORD).await;
    let code = location_query(&back)["code"].clone();
    let form = |verifier: &str| {
        format!(
            "grant_type=authorization_code&client_id=web&code={code}&redirect_uri={}&code_verifier={verifier}",
            urlencode(WEB)
        )
    };
    let verifier = flow.verifier.secret().to_owned();
    let first = post_form(&idp.url("/oauth2/token"), &[], &form(&verifier)).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let access = first.json()["access_token"].as_str().unwrap().to_owned();
    assert_eq!(idp.verify(&access).await.status, 200);
    let second = post_form(&idp.url("/oauth2/token"), &[], &form(&verifier)).await;
    assert_eq!(
        (second.status, second.json()["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    assert_eq!(
        idp.verify(&access).await.status,
        401,
        "the first session ended"
    );
}

fn urlencode(s: &str) -> String {
    serde_urlencoded::to_string([("", s)]).unwrap()[1..].to_owned()
}

#[tokio::test]
async fn pkce_redirect_uri_and_client_are_bound_to_the_code() {
    let (_redis, idp) = setup().await;
    let rp = relying_party(&idp, "web", None, WEB).await;
    let token_url = idp.url("/oauth2/token");
    let code_for = |flow: &Flow| {
        let url = flow.url.clone();
        async move {
            let back = Browser::new().sign_in(&url, "alice", PASSWORD).await;
            location_query(&back)["code"].clone()
        }
    };
    let exchange = |code: String, extra: String| {
        let url = token_url.clone();
        async move {
            post_form(
                &url,
                &[],
                &format!("grant_type=authorization_code&code={code}{extra}"),
            )
            .await
        }
    };
    let good_redirect = format!("&redirect_uri={}", urlencode(WEB));

    // Missing and wrong verifiers.
    let flow = start(&rp, &[]);
    let code = code_for(&flow).await;
    let r = exchange(code, format!("&client_id=web{good_redirect}")).await;
    assert_eq!(r.json()["error"], "invalid_grant");
    let flow = start(&rp, &[]);
    let code = code_for(&flow).await;
    let wrong = "x".repeat(43);
    let r = exchange(
        code,
        format!("&client_id=web{good_redirect}&code_verifier={wrong}"),
    )
    .await;
    assert_eq!(r.json()["error"], "invalid_grant");

    // A redirect URI other than the one the code was issued for.
    let flow = start(&rp, &[]);
    let code = code_for(&flow).await;
    let r = exchange(
        code,
        format!(
            "&client_id=web&redirect_uri={}&code_verifier={}",
            urlencode(APP2),
            flow.verifier.secret()
        ),
    )
    .await;
    assert_eq!(r.json()["error"], "invalid_grant");

    // Another client presenting the code.
    let flow = start(&rp, &[]);
    let code = code_for(&flow).await;
    let r = exchange(
        code,
        format!(
            "&client_id=app2{good_redirect}&code_verifier={}",
            flow.verifier.secret()
        ),
    )
    .await;
    assert_eq!(r.json()["error"], "invalid_grant");

    // A code that was never issued.
    let r = exchange("made-up".into(), format!("&client_id=web{good_redirect}")).await;
    assert_eq!(r.json()["error"], "invalid_grant");

    // A confidential client authenticates for its code; without PKCE is allowed for it.
    let portal = relying_party(&idp, "portal", Some(PORTAL_SECRET), PORTAL).await;
    let flow = start(&portal, &[]);
    let code = code_for(&flow).await;
    let tokens = portal
        .exchange_code(AuthorizationCode::new(code))
        .set_pkce_verifier(flow.verifier)
        .request_async(&Http::new())
        .await;
    assert!(tokens.is_ok(), "{tokens:?}");
}

#[tokio::test]
async fn authorization_requests_are_checked_before_anyone_is_sent_anywhere() {
    let (_redis, idp) = setup().await;
    let authorize = |query: &str| {
        let url = idp.url(&format!("/oauth2/authorize?{query}"));
        async move { send("GET", &url, &[], String::new()).await }
    };
    let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    let pkce = format!("code_challenge={challenge}&code_challenge_method=S256");
    let web = urlencode(WEB);

    // Unknown client, unregistered or look-alike redirect URIs: a page, never a redirect.
    for query in [
        format!("response_type=code&client_id=nobody&redirect_uri={web}&{pkce}"),
        format!("response_type=code&client_id=web&{pkce}"),
        format!(
            "response_type=code&client_id=web&redirect_uri=http%3A%2F%2Fevil.example%2Fcallback&{pkce}"
        ),
        format!("response_type=code&client_id=web&redirect_uri={web}%2F..%2Fother&{pkce}"),
        format!(
            "response_type=code&client_id=web&redirect_uri=HTTP%3A%2F%2F127.0.0.1%3A3000%2Fcallback&{pkce}"
        ),
        format!("response_type=code&client_id=web&redirect_uri={web}&redirect_uri={web}&{pkce}"),
        format!("response_type=code&client_id=web&redirect_uri=%ZZ&{pkce}"),
    ] {
        let r = authorize(&query).await;
        assert_eq!(r.status, 400, "{query}: {}", r.body);
        assert!(r.header("location").is_none(), "{query}");
        assert!(r.body.contains("<html"), "{query}");
    }

    // Everything else goes back to the client, with the state.
    for (query, error) in [
        (
            format!("client_id=web&redirect_uri={web}&state=s1&{pkce}"),
            "invalid_request",
        ),
        (
            format!("response_type=token&client_id=web&redirect_uri={web}&state=s1&{pkce}"),
            "unsupported_response_type",
        ),
        (
            format!("response_type=code&client_id=web&redirect_uri={web}&state=s1"),
            "invalid_request",
        ),
        (
            format!(
                "response_type=code&client_id=web&redirect_uri={web}&state=s1&code_challenge={challenge}&code_challenge_method=plain"
            ),
            "invalid_request",
        ),
        (
            format!(
                "response_type=code&client_id=web&redirect_uri={web}&state=s1&code_challenge={challenge}"
            ),
            "invalid_request",
        ),
        (
            format!(
                "response_type=code&client_id=web&redirect_uri={web}&state=s1&code_challenge=short&code_challenge_method=S256"
            ),
            "invalid_request",
        ),
        (
            format!(
                "response_type=code&client_id=web&redirect_uri={web}&state=s1&{pkce}&scope=a%22b"
            ),
            "invalid_scope",
        ),
    ] {
        let r = authorize(&query).await;
        assert_eq!(r.status, 302, "{query}: {}", r.body);
        assert!(r.header("location").unwrap().starts_with(WEB), "{query}");
        let q = location_query(&r);
        assert_eq!(q["error"], error, "{query}");
        assert_eq!(q["state"], "s1", "{query}");
    }

    // A client without the grant.
    let cli = authorize(&format!(
        "response_type=code&client_id=cli&redirect_uri={web}&{pkce}"
    ))
    .await;
    assert_eq!(cli.status, 400);

    // Oversized input is refused, not served.
    let huge = authorize(&format!(
        "response_type=code&client_id=web&redirect_uri={web}&{pkce}&state={}",
        "s".repeat(4000)
    ))
    .await;
    assert_eq!(location_query(&huge)["error"], "invalid_request");
    assert!(!location_query(&huge).contains_key("state"));
}

#[tokio::test]
async fn the_sign_in_form_needs_its_csrf_token_and_the_right_password() {
    let (_redis, idp) = setup().await;
    let rp = relying_party(&idp, "web", None, WEB).await;
    let flow = start(&rp, &[]);
    let browser = Browser::new();
    let page = browser.get(&flow.url).await;
    let mut form = support::oidc::hidden_fields(&page.body);
    form.retain(|(k, _)| k != "csrf");
    form.push(("username".into(), "alice".into()));
    form.push(("password".into(), PASSWORD.into()));
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let forged = browser
        .post_form(&idp.url("/oauth2/authorize"), &form)
        .await;
    assert_eq!(forged.status, 403);
    assert!(forged.header("location").is_none());

    // Without the cookie, the field alone is not enough either.
    let fresh = Browser::new();
    let page = fresh.get(&flow.url).await;
    let mut form = support::oidc::hidden_fields(&page.body);
    form.push(("username".into(), "alice".into()));
    form.push(("password".into(), PASSWORD.into()));
    fresh.forget("tokengate_csrf");
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(
        fresh
            .post_form(&idp.url("/oauth2/authorize"), &form)
            .await
            .status,
        403
    );

    let wrong = Browser::new()
        .sign_in(&flow.url, "alice", "wrong-password")
        .await;
    assert_eq!(wrong.status, 200);
    assert!(wrong.body.contains("Wrong username or password"));
    assert!(wrong.header("location").is_none());
    let unknown = Browser::new().sign_in(&flow.url, "mallory", PASSWORD).await;
    assert!(unknown.body.contains("Wrong username or password"));
}

#[tokio::test]
async fn logout_ends_the_session_and_returns_only_to_registered_addresses() {
    let (_redis, idp) = setup().await;
    let rp = relying_party(&idp, "web", None, WEB).await;
    let flow = start(&rp, &[]);
    let browser = Browser::new();
    let back = browser.sign_in(&flow.url, "alice", PASSWORD).await;
    let tokens = rp
        .exchange_code(AuthorizationCode::new(
            location_query(&back)["code"].clone(),
        ))
        .set_pkce_verifier(flow.verifier)
        .request_async(&Http::new())
        .await
        .unwrap();
    let access = tokens.access_token().secret().to_owned();
    let hint = tokens.id_token().unwrap().to_string();

    // An address not registered for the client: refused, nothing ends.
    let evil = browser
        .get(&idp.url(&format!(
            "/oauth2/logout?id_token_hint={hint}&post_logout_redirect_uri={}",
            urlencode("http://evil.example/")
        )))
        .await;
    assert_eq!(evil.status, 400);
    assert_eq!(idp.verify(&access).await.status, 200);

    let out = browser
        .get(&idp.url(&format!(
            "/oauth2/logout?id_token_hint={hint}&post_logout_redirect_uri={}&state=bye",
            urlencode(WEB_HOME)
        )))
        .await;
    assert_eq!(out.status, 302, "{}", out.body);
    assert_eq!(
        out.header("location"),
        Some(format!("{WEB_HOME}?state=bye").as_str())
    );
    assert_eq!(idp.verify(&access).await.status, 401);
    assert!(browser.cookie("tokengate_idp").is_none());
    assert_eq!(
        browser.get(&start(&rp, &[]).url).await.status,
        200,
        "signed out: the form again"
    );

    // Without a hint, a link alone signs no one out: a confirmation form comes first.
    let again = browser
        .sign_in(&start(&rp, &[]).url, "alice", PASSWORD)
        .await;
    assert_eq!(again.status, 302);
    let confirm = browser.get(&idp.url("/oauth2/logout")).await;
    assert_eq!(confirm.status, 200);
    assert!(browser.cookie("tokengate_idp").is_some());
    let mut form = support::oidc::hidden_fields(&confirm.body);
    form.push(("confirm".into(), "yes".into()));
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let done = browser.post_form(&idp.url("/oauth2/logout"), &form).await;
    assert_eq!(done.status, 200);
    assert!(browser.cookie("tokengate_idp").is_none());
}

#[tokio::test]
async fn discovery_names_the_issuer_and_its_endpoints() {
    let (_redis, idp) = setup().await;
    let doc = send(
        "GET",
        &idp.url("/.well-known/openid-configuration"),
        &[],
        String::new(),
    )
    .await;
    assert_eq!(doc.status, 200);
    let doc = doc.json();
    assert_eq!(doc["issuer"], idp.url(""));
    assert_eq!(
        doc["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    assert_eq!(doc["token_endpoint"], idp.url("/oauth2/token"));
}

#[tokio::test]
async fn bad_input_on_the_new_endpoints_gets_clear_errors() {
    let (_redis, idp) = setup().await;
    let token = idp.url("/oauth2/token");
    // The code grant without its parts.
    for (form, error) in [
        (
            "grant_type=authorization_code&client_id=web",
            "invalid_request",
        ),
        (
            "grant_type=authorization_code&client_id=web&code=x",
            "invalid_request",
        ),
        (
            "grant_type=authorization_code&client_id=web&code=x&code=y&redirect_uri=z",
            "invalid_request",
        ),
    ] {
        let r = post_form(&token, &[], form).await;
        assert_eq!(
            (r.status, r.json()["error"].as_str()),
            (400, Some(error)),
            "{form}"
        );
    }
    let long_code = format!(
        "grant_type=authorization_code&client_id=web&code={}&redirect_uri=x",
        "c".repeat(20_000)
    );
    assert_eq!(post_form(&token, &[], &long_code).await.status, 413);
    // Userinfo without, with a garbage and with a repeated bearer token.
    let userinfo = idp.url("/oauth2/userinfo");
    assert_eq!(send("GET", &userinfo, &[], String::new()).await.status, 401);
    let garbage = send(
        "GET",
        &userinfo,
        &[("authorization", "Bearer not.a.token")],
        String::new(),
    )
    .await;
    assert_eq!(garbage.status, 401);
    assert!(
        garbage
            .header("www-authenticate")
            .unwrap()
            .contains("invalid_token")
    );
    // Logout with a forged or garbled hint, or a broken query.
    for query in [
        "id_token_hint=a.b.c",
        "id_token_hint=%ZZ",
        "state=1&state=2",
    ] {
        let r = send(
            "GET",
            &idp.url(&format!("/oauth2/logout?{query}")),
            &[],
            String::new(),
        )
        .await;
        assert_eq!(r.status, 400, "{query}: {}", r.body);
    }
    // The sign-in form with oversized fields: the page again, no crash.
    let rp = relying_party(&idp, "web", None, WEB).await;
    let flow = start(&rp, &[]);
    let big = Browser::new()
        .sign_in(&flow.url, &"u".repeat(5000), &"p".repeat(5000))
        .await;
    assert_eq!(big.status, 400);
    assert!(big.body.contains("Wrong username or password"));
    // A query longer than the IdP reads.
    let long = send(
        "GET",
        &idp.url(&format!(
            "/oauth2/authorize?client_id=web&x={}",
            "a".repeat(9000)
        )),
        &[],
        String::new(),
    )
    .await;
    assert!(long.status == 400 || long.status == 431, "{}", long.status);
}
