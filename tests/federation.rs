//! Federation: signing in at tokengate through a real, independent OpenID Connect provider
//! (`oidc-provider` under Node.js, its own sign-in and consent forms), and every way that can
//! go wrong with the provider answering the bad thing for real.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClientId, CsrfToken, IssuerUrl, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, RedirectUrl, Scope, TokenResponse,
};
use support::browser::Chrome;
use support::oidc::{Browser, Http, Rp, hidden_fields, location_query, unescape};
use support::upstream::{CLIENT_ID, CLIENT_SECRET, TestUpstream, UpstreamOptions};
use support::{
    EchoBackend, Reply, TestGateway, TestIdp, TestRedis, eventually, gateway_config, get,
    idp_config,
};
use tokengate_idp::config::{ClientConfig, Grant, UpstreamConfig};

const WEB: &str = "http://127.0.0.1:3000/callback";
const ALICE: &str = "alice@example.com";

/// Redis, an upstream provider and an IdP that signs in through it as `corp`.
struct Fed {
    redis: TestRedis,
    upstream: TestUpstream,
    idp: TestIdp,
    callback: String,
}

fn corp(issuer: &str) -> UpstreamConfig {
    toml::from_str(&format!(
        r#"
name = "corp"
issuer = "{issuer}"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
scopes = ["openid", "profile", "email", "groups"]
username_claim = "email"
roles_claim = "groups"
role_map = {{ "eng" = ["orders:read"], "ops" = ["orders:read", "orders:admin"] }}
default_roles = ["staff"]
allowed_domains = ["example.com"]
timeout = "1s"
backchannel_logout = true
"#
    ))
    .unwrap()
}

impl Fed {
    async fn start(options: UpstreamOptions) -> Self {
        Self::start_with(options, None, None).await
    }

    /// Also registers public client `app`, returning to `app_redirect`, and trusts `ca_file`
    /// for an HTTPS provider.
    async fn start_with(
        options: UpstreamOptions,
        app_redirect: Option<&str>,
        ca_file: Option<&Path>,
    ) -> Self {
        let redis = TestRedis::start();
        // The IdP's address first: the provider must know its callback.
        let listen = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let callback = format!("http://{listen}/oauth2/upstream/corp/callback");
        let upstream = TestUpstream::start(&callback, options).await;
        let mut config = idp_config(&redis.url());
        config.server.listen = listen;
        config.clients.push(ClientConfig::public(
            "web",
            &[Grant::AuthorizationCode],
            &[WEB],
        ));
        if let Some(redirect) = app_redirect {
            config.clients.push(ClientConfig::public(
                "app",
                &[Grant::AuthorizationCode],
                &[redirect],
            ));
        }
        let mut upstream_config = corp(&upstream.issuer);
        upstream_config.tls_ca_file = ca_file.map(Path::to_owned);
        config.upstreams.push(upstream_config);
        let idp = TestIdp::spawn(config).await;
        Fed {
            redis,
            upstream,
            idp,
            callback,
        }
    }

    async fn relying_party(&self) -> Rp {
        self.relying_party_for("web", WEB).await
    }

    async fn relying_party_for(&self, client_id: &str, redirect: &str) -> Rp {
        let http = Http::new();
        let meta =
            CoreProviderMetadata::discover_async(IssuerUrl::new(self.idp.url("")).unwrap(), &http)
                .await
                .unwrap();
        let token_url = meta.token_endpoint().cloned().unwrap();
        CoreClient::from_provider_metadata(meta, ClientId::new(client_id.to_owned()), None)
            .set_redirect_uri(RedirectUrl::new(redirect.to_owned()).unwrap())
            .set_token_uri(token_url)
    }

    /// `tokengate_idp_upstream_failures_total` for `reason`.
    async fn failures(&self, reason: &str) -> u64 {
        let metrics = get(&self.idp.admin_url("/metrics")).await.body;
        let name = format!(
            "tokengate_idp_upstream_failures_total{{upstream=\"corp\",reason=\"{reason}\"}} "
        );
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&name))
            .map_or(0, |v| v.trim().parse().unwrap())
    }

    /// No user of that name, hence no session either.
    async fn assert_no_user(&self, username: &str) {
        let user = self
            .idp
            .admin("GET", &format!("/admin/users/{username}"), None)
            .await;
        assert_eq!(user.status, 404, "{}", user.body);
    }
}

struct Flow {
    url: String,
    state: CsrfToken,
    nonce: Nonce,
    verifier: openidconnect::PkceCodeVerifier,
}

fn flow(rp: &Rp) -> Flow {
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, state, nonce) = rp
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("openid".to_owned()))
        .set_pkce_challenge(challenge)
        .url();
    Flow {
        url: url.to_string(),
        state,
        nonce,
        verifier,
    }
}

/// What the person does at the provider.
#[derive(Clone, Copy)]
enum AtUpstream {
    SignIn(&'static str),
    Cancel,
}

/// The attribute `name` of the first tag that has it, unescaped.
fn attribute(html: &str, name: &str) -> String {
    let start = html.find(&format!("{name}=\"")).expect(name) + name.len() + 2;
    let end = start + html[start..].find('"').unwrap();
    unescape(&html[start..end])
}

/// tokengate's sign-in page, then its button for the provider: the IdP's answer to that.
async fn press_upstream_button(fed: &Fed, browser: &Browser, authorize_url: &str) -> Reply {
    let page = browser.get(authorize_url).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let button = page
        .body
        .split("<a class=\"upstream\"")
        .nth(1)
        .expect("a button for the upstream");
    assert!(button.contains("Sign in with corp"), "{button}");
    let start = attribute(button, "href");
    browser.get(&fed.idp.url(&start)).await
}

/// From tokengate's sign-in page, through the provider button and the provider's own forms,
/// to the provider's redirect back to tokengate: the callback URL (not opened yet).
async fn to_callback(fed: &Fed, browser: &Browser, authorize_url: &str, how: AtUpstream) -> String {
    let mut reply = press_upstream_button(fed, browser, authorize_url).await;
    for _ in 0..12 {
        match reply.status {
            302 | 303 => {
                let location = reply.header("location").unwrap().to_owned();
                if location.starts_with(&fed.callback) {
                    return location;
                }
                reply = browser.get(&fed.upstream.url(&location)).await;
            }
            200 => {
                let action = attribute(&reply.body, "action");
                reply = match how {
                    AtUpstream::Cancel => {
                        browser
                            .get(&fed.upstream.url(&format!("{action}/abort")))
                            .await
                    }
                    AtUpstream::SignIn(login) if reply.body.contains("name=\"login\"") => {
                        let form = [("prompt", "login"), ("login", login), ("password", "any")];
                        browser.post_form(&fed.upstream.url(&action), &form).await
                    }
                    AtUpstream::SignIn(_) => {
                        let form = [("prompt", "consent")];
                        browser.post_form(&fed.upstream.url(&action), &form).await
                    }
                };
            }
            other => panic!("the provider answered {other}: {}", reply.body),
        }
    }
    panic!("the provider never sent the browser back");
}

/// Signs in through the provider and exchanges the code: the access token.
async fn sign_in(fed: &Fed, browser: &Browser, login: &'static str) -> (Reply, Option<String>) {
    let (back, signed) = sign_in_for_factors(fed, browser, login).await;
    (back, signed.map(|(access, _, _)| access))
}

/// As [`sign_in`]; with the access token, the `amr` and `acr` of tokengate's verified ID token.
async fn sign_in_for_factors(
    fed: &Fed,
    browser: &Browser,
    login: &'static str,
) -> (Reply, Option<(String, Vec<String>, Option<String>)>) {
    let rp = fed.relying_party().await;
    let flow = flow(&rp);
    let callback = to_callback(fed, browser, &flow.url, AtUpstream::SignIn(login)).await;
    let back = browser.get(&callback).await;
    if back.status != 302 {
        return (back, None);
    }
    let query = location_query(&back);
    assert_eq!(&query["state"], flow.state.secret());
    let tokens = rp
        .exchange_code(AuthorizationCode::new(query["code"].clone()))
        .set_pkce_verifier(flow.verifier)
        .request_async(&Http::new())
        .await
        .expect("tokens for the code");
    let id_token = tokens.id_token().expect("an id_token");
    let claims = id_token
        .claims(&rp.id_token_verifier(), &flow.nonce)
        .expect("tokengate's id_token verifies");
    assert_eq!(claims.subject().as_str(), ALICE);
    let amr = claims
        .auth_method_refs()
        .into_iter()
        .flatten()
        .map(|a| a.to_string())
        .collect();
    let acr = claims.auth_context_ref().map(|a| a.to_string());
    let access = tokens.access_token().secret().to_owned();
    (back, Some((access, amr, acr)))
}

/// The `amr` of the value token behind `access`, as gateways and backends see it.
async fn value_token_amr(fed: &Fed, access: &str) -> Vec<String> {
    use base64::Engine;
    let verified = fed.idp.verify(access).await;
    assert_eq!(verified.status, 200, "{}", verified.body);
    let value_token = verified.header("x-auth-value-token").unwrap();
    let payload = value_token.split('.').nth(1).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    serde_json::from_value(claims["amr"].clone()).unwrap_or_default()
}

#[tokio::test]
async fn the_providers_factors_are_kept_in_the_id_token_and_the_value_token() {
    // A provider that names no factors: none are made up.
    let fed = Fed::start(UpstreamOptions::default()).await;
    let (back, signed) = sign_in_for_factors(&fed, &Browser::new(), "alice").await;
    let (access, amr, acr) = signed.unwrap_or_else(|| panic!("{}", back.body));
    assert!(amr.is_empty(), "{amr:?}");
    assert_eq!(acr, None);
    assert!(value_token_amr(&fed, &access).await.is_empty());

    // One that asked for a second factor (its id_token says `amr`): passed through, and the
    // sign-in meets tokengate's MFA class.
    let fed = Fed::start(UpstreamOptions {
        amr: Some("pwd,otp,mfa"),
        ..Default::default()
    })
    .await;
    let (back, signed) = sign_in_for_factors(&fed, &Browser::new(), "alice").await;
    let (access, amr, acr) = signed.unwrap_or_else(|| panic!("{}", back.body));
    assert_eq!(amr, ["pwd", "otp", "mfa"]);
    assert_eq!(acr.as_deref(), Some("urn:tokengate:acr:mfa"));
    assert_eq!(value_token_amr(&fed, &access).await, ["pwd", "otp", "mfa"]);
    // The provider's back-channel logout still finds the session made through it.
    let r = send_logout(&fed, &logout_token(&fed, "signing.pem", |_| {})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(fed.idp.verify(&access).await.status, 401);
}

#[tokio::test]
async fn sign_in_through_an_upstream_gives_a_revocable_session_with_mapped_roles() {
    let fed = Fed::start(UpstreamOptions::default()).await;
    let backend = EchoBackend::start().await;
    let gw1 = TestGateway::spawn(gateway_config(&fed.redis.url(), &fed.idp, &backend.url())).await;
    let gw2 = TestGateway::spawn(gateway_config(&fed.redis.url(), &fed.idp, &backend.url())).await;

    let browser = Browser::new();
    let (back, access) = sign_in(&fed, &browser, "alice").await;
    assert!(back.header("location").unwrap().starts_with(WEB));
    let access = access.unwrap();
    assert!(browser.cookie("tokengate_idp").is_some(), "an IdP session");

    // The value token at the backend carries the roles mapped from the provider's groups.
    for gw in [&gw1, &gw2] {
        let r = gw.get_with_token("/api/orders", &access).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let roles = r.json()["headers"]["x-auth-roles"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(roles, "staff,orders:read,orders:admin");
    }
    let user = fed
        .idp
        .admin("GET", &format!("/admin/users/{ALICE}"), None)
        .await;
    assert_eq!(user.status, 200, "{}", user.body);
    assert_eq!(user.json()["upstream"], "corp");
    let metrics = get(&fed.idp.admin_url("/metrics")).await.body;
    assert!(
        metrics.contains("tokengate_idp_upstream_signins_total{upstream=\"corp\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains(
        "tokengate_idp_upstream_duration_seconds_count{upstream=\"corp\",call=\"token\"} 1"
    ));

    // Forced logout at tokengate ends it on both gateways.
    let out = fed
        .idp
        .admin("DELETE", &format!("/admin/users/{ALICE}/sessions"), None)
        .await;
    assert_eq!(out.status, 200, "{}", out.body);
    for gw in [&gw1, &gw2] {
        assert!(
            eventually(Duration::from_secs(5), || async {
                gw.get_with_token("/api/orders", &access).await.status == 401
            })
            .await
        );
    }

    // Roles an administrator sets are an override kept across sign-ins.
    let set = fed
        .idp
        .admin(
            "PATCH",
            &format!("/admin/users/{ALICE}"),
            Some(r#"{"roles": ["orders:read"]}"#),
        )
        .await;
    assert_eq!(set.status, 200, "{}", set.body);
    let (_, again) = sign_in(&fed, &Browser::new(), "alice").await;
    let r = gw1.get_with_token("/api/orders", &again.unwrap()).await;
    assert_eq!(r.json()["headers"]["x-auth-roles"], "orders:read");
    // Removed, the next sign-in takes the provider's groups again.
    let path = format!("/admin/users/{ALICE}/roles");
    let removed = fed.idp.admin("DELETE", &path, None).await;
    assert_eq!(removed.status, 200, "{}", removed.body);
    assert_eq!(removed.json()["override_removed"], true);
    let (_, third) = sign_in(&fed, &Browser::new(), "alice").await;
    let r = gw1.get_with_token("/api/orders", &third.unwrap()).await;
    assert_eq!(
        r.json()["headers"]["x-auth-roles"],
        "staff,orders:read,orders:admin"
    );
    let local = fed
        .idp
        .admin("DELETE", "/admin/users/alice/roles", None)
        .await;
    assert_eq!(
        local.status, 409,
        "a local user has no override: {}",
        local.body
    );
    let anonymous = support::send("DELETE", &fed.idp.admin_url(&path), &[], String::new()).await;
    assert_eq!(anonymous.status, 401);
}

#[tokio::test]
async fn a_callback_in_another_browser_or_a_second_time_is_refused() {
    let fed = Fed::start(UpstreamOptions::default()).await;
    let rp = fed.relying_party().await;
    let browser = Browser::new();
    let callback = to_callback(&fed, &browser, &flow(&rp).url, AtUpstream::SignIn("alice")).await;

    // Another browser (login CSRF: someone else's callback): no state cookie.
    let other = Browser::new().get(&callback).await;
    assert_eq!(other.status, 400, "{}", other.body);
    assert!(
        other.body.contains("This sign-in expired"),
        "{}",
        other.body
    );
    // A state that is not the one sent (the browser's own sign-in stays usable).
    let forged = callback.replace("state=", "state=x");
    assert_eq!(browser.get(&forged).await.status, 400);
    fed.assert_no_user(ALICE).await;

    // The first use works; a replay, even with the state cookie, finds nothing.
    let cookie = browser.cookie("tokengate_upstream").unwrap();
    let first = browser.get(&callback).await;
    assert_eq!(first.status, 302, "{}", first.body);
    assert!(
        browser.cookie("tokengate_upstream").is_none(),
        "cleared once used"
    );
    let again = send_with_cookie(&callback, &cookie).await;
    assert_eq!(again.status, 400, "{}", again.body);
    assert_eq!(fed.failures("state").await, 3);
}

async fn send_with_cookie(url: &str, state: &str) -> Reply {
    let cookie = format!("tokengate_upstream={state}");
    support::send("GET", url, &[("cookie", &cookie)], String::new()).await
}

#[tokio::test]
async fn cancelling_at_the_upstream_signs_no_one_in() {
    let fed = Fed::start(UpstreamOptions::default()).await;
    let rp = fed.relying_party().await;
    let browser = Browser::new();
    let callback = to_callback(&fed, &browser, &flow(&rp).url, AtUpstream::Cancel).await;
    assert!(callback.contains("error=access_denied"), "{callback}");
    let back = browser.get(&callback).await;
    assert_eq!(back.status, 403, "{}", back.body);
    assert!(back.body.contains("Sign-in cancelled"), "{}", back.body);
    assert!(browser.cookie("tokengate_idp").is_none());
    assert_eq!(fed.failures("denied").await, 1);
}

#[tokio::test]
async fn a_username_outside_the_allowed_domains_is_refused() {
    let fed = Fed::start(UpstreamOptions::default()).await;
    let browser = Browser::new();
    let (back, access) = sign_in(&fed, &browser, "mallory").await;
    assert!(access.is_none());
    assert_eq!(back.status, 403, "{}", back.body);
    assert!(back.body.contains("domain"), "{}", back.body);
    fed.assert_no_user("mallory@elsewhere.test").await;
    assert_eq!(fed.failures("domain").await, 1);
}

/// Signs in with a provider that misbehaves: the page tokengate answers at the callback.
async fn refused_by(options: UpstreamOptions, reason: &str) -> Reply {
    let fed = Fed::start(options).await;
    let rp = fed.relying_party().await;
    let browser = Browser::new();
    let callback = to_callback(&fed, &browser, &flow(&rp).url, AtUpstream::SignIn("alice")).await;
    let back = browser.get(&callback).await;
    assert_eq!(back.status, 502, "{reason}: {}", back.body);
    assert!(browser.cookie("tokengate_idp").is_none(), "{reason}");
    fed.assert_no_user(ALICE).await;
    assert_eq!(fed.failures(reason).await, 1, "{reason}");
    back
}

#[tokio::test]
async fn id_tokens_that_do_not_verify_sign_no_one_in() {
    let cases = [
        ("key", "signature"),
        ("kid", "unknown_key"),
        ("aud", "audience"),
        ("exp", "expired"),
        ("nonce", "nonce"),
        ("iss", "issuer"),
    ];
    for (tamper, reason) in cases {
        let options = UpstreamOptions {
            tamper: Some(tamper),
            ..Default::default()
        };
        let page = refused_by(options, reason).await;
        assert!(page.body.contains("could not be verified"), "{}", page.body);
    }
}

#[tokio::test]
async fn a_slow_or_stopped_upstream_gets_a_bounded_wait_and_a_clear_page() {
    let slow = UpstreamOptions {
        delay: Some(Duration::from_secs(3)),
        ..Default::default()
    };
    let started = std::time::Instant::now();
    let page = refused_by(slow, "timeout").await;
    assert!(
        page.body.contains("did not answer in time"),
        "{}",
        page.body
    );
    assert!(started.elapsed() < Duration::from_secs(20));

    let mut fed = Fed::start(UpstreamOptions::default()).await;
    let rp = fed.relying_party().await;
    let browser = Browser::new();
    let callback = to_callback(&fed, &browser, &flow(&rp).url, AtUpstream::SignIn("alice")).await;
    fed.upstream.stop().await;
    let back = browser.get(&callback).await;
    assert_eq!(back.status, 502, "{}", back.body);
    assert!(
        back.body.contains("did not answer in time"),
        "{}",
        back.body
    );
    fed.assert_no_user(ALICE).await;
    assert_eq!(fed.failures("unreachable").await, 1);
}

#[tokio::test]
async fn the_whole_round_trip_in_a_real_browser() {
    // The application's page: any answer will do, the browser only has to land there.
    let app = EchoBackend::start().await;
    let app_cb = format!("{}/app/callback", app.url());
    let fed = Fed::start_with(UpstreamOptions::default(), Some(&app_cb), None).await;
    let rp = fed.relying_party_for("app", &app_cb).await;
    let gw1 = TestGateway::spawn(gateway_config(&fed.redis.url(), &fed.idp, &app.url())).await;
    let gw2 = TestGateway::spawn(gateway_config(&fed.redis.url(), &fed.idp, &app.url())).await;
    let chrome = Chrome::start().await;
    let c = &chrome.client;

    // tokengate's sign-in page, with a button for the provider.
    let first = flow(&rp);
    c.goto(&first.url).await.unwrap();
    chrome.wait_for("a.upstream").await;
    chrome.screenshot("federation-signin").await;
    chrome.click("a.upstream").await;

    // The provider's own sign-in form, then its consent form.
    chrome.wait_for("input[name=login]").await;
    chrome.screenshot("federation-upstream").await;
    chrome.fill("input[name=login]", "alice").await;
    chrome.fill("input[name=password]", "any").await;
    chrome.click("button[type=submit]").await;
    chrome.wait_for("input[value=consent]").await;
    chrome.click("button[type=submit]").await;

    // Back at the application with a code, which it exchanges.
    let landed = chrome.wait_for_url(&app_cb).await;
    let q: std::collections::BTreeMap<String, String> =
        serde_urlencoded::from_str(landed.split_once('?').unwrap().1).unwrap();
    assert_eq!(&q["state"], first.state.secret());
    let tokens = rp
        .exchange_code(AuthorizationCode::new(q["code"].clone()))
        .set_pkce_verifier(first.verifier)
        .request_async(&Http::new())
        .await
        .unwrap();
    let claims = tokens
        .id_token()
        .unwrap()
        .claims(&rp.id_token_verifier(), &first.nonce)
        .unwrap();
    assert_eq!(claims.subject().as_str(), ALICE);
    let access = tokens.access_token().secret().to_owned();

    // The value token at the backend carries the mapped roles, on both gateways.
    for gw in [&gw1, &gw2] {
        let r = gw.get_with_token("/api/orders", &access).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(
            r.json()["headers"]["x-auth-roles"],
            "staff,orders:read,orders:admin"
        );
    }

    // Forced logout at tokengate ends it on both gateways, and the browser's IdP session.
    let out = fed
        .idp
        .admin("DELETE", &format!("/admin/users/{ALICE}/sessions"), None)
        .await;
    assert_eq!(out.status, 200, "{}", out.body);
    for gw in [&gw1, &gw2] {
        assert!(
            eventually(Duration::from_secs(5), || async {
                gw.get_with_token("/api/orders", &access).await.status == 401
            })
            .await
        );
    }
    c.goto(&flow(&rp).url).await.unwrap();
    chrome.wait_for("a.upstream").await;
    chrome.stop().await;
}

/// A CA and a certificate for 127.0.0.1 it signed, made by OpenSSL: (ca, cert, key).
fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let openssl = |args: &[&str]| {
        let status = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl");
        assert!(status.success(), "openssl {args:?}");
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &["-days", "1", "-subj", "/CN=test-ca"],
            &["-keyout", "ca.key", "-out", "ca.pem"],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"][..],
            &ec,
            &[
                "-subj",
                "/CN=127.0.0.1",
                "-keyout",
                "leaf.key",
                "-out",
                "leaf.csr",
            ],
        ]
        .concat(),
    );
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "leaf.ext",
        "-out",
        "leaf.pem",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("leaf.pem"),
        dir.join("leaf.key"),
    )
}

#[tokio::test]
async fn an_https_upstream_is_trusted_through_its_ca_and_only_through_it() {
    let base = std::env::temp_dir().join(format!("tokengate-fed-tls-{}", std::process::id()));
    let (ca, cert, key) = certificates(&base.join("right"));
    let (other_ca, _, _) = certificates(&base.join("other"));
    let tls = UpstreamOptions {
        tls: Some((cert, key)),
        ..Default::default()
    };

    // Discovery over HTTPS, verified against the configured CA: off to the provider.
    let fed = Fed::start_with(tls.clone(), None, Some(&ca)).await;
    assert!(fed.upstream.issuer.starts_with("https://"));
    let rp = fed.relying_party().await;
    let sent = press_upstream_button(&fed, &Browser::new(), &flow(&rp).url).await;
    assert_eq!(sent.status, 302, "{}", sent.body);
    let location = sent.header("location").unwrap();
    assert!(
        location.starts_with(&format!("{}/auth?", fed.upstream.issuer)),
        "{location}"
    );

    // A certificate from a CA that is not the configured one: nothing is sent anywhere.
    let fed = Fed::start_with(tls, None, Some(&other_ca)).await;
    let rp = fed.relying_party().await;
    let refused = press_upstream_button(&fed, &Browser::new(), &flow(&rp).url).await;
    assert_eq!(refused.status, 502, "{}", refused.body);
    assert_eq!(fed.failures("unreachable").await, 1);
    let _ = std::fs::remove_dir_all(&base);
}

/// A logout token from the provider, signed with its key (`signing.pem`, as it publishes it) or
/// with `key` instead; `change` edits the claims first.
fn logout_token(
    fed: &Fed,
    key: &str,
    change: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>),
) -> String {
    let mut claims = serde_json::json!({
        "iss": fed.upstream.issuer,
        "aud": CLIENT_ID,
        "iat": tokengate_store::now_unix(),
        "jti": tokengate_store::ReferenceToken::generate().session_id().as_str(),
        "sub": "alice",
        "events": { "http://schemas.openid.net/event/backchannel-logout": {} },
    });
    change(claims.as_object_mut().unwrap());
    let pem = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/upstream/keys/{key}")),
    )
    .unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some("upstream-key-1".into());
    header.typ = Some("logout+jwt".into());
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(&pem).unwrap();
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

async fn send_logout(fed: &Fed, token: &str) -> Reply {
    let form = serde_urlencoded::to_string([("logout_token", token)]).unwrap();
    support::post_form(
        &fed.idp.url("/oauth2/upstream/corp/backchannel-logout"),
        &[],
        &form,
    )
    .await
}

#[tokio::test]
async fn a_logout_at_the_provider_ends_the_sessions_made_through_it_on_every_gateway() {
    let fed = Fed::start(UpstreamOptions::default()).await;
    let backend = EchoBackend::start().await;
    let gw1 = TestGateway::spawn(gateway_config(&fed.redis.url(), &fed.idp, &backend.url())).await;
    let gw2 = TestGateway::spawn(gateway_config(&fed.redis.url(), &fed.idp, &backend.url())).await;
    let browser = Browser::new();
    let (_, access) = sign_in(&fed, &browser, "alice").await;
    let access = access.unwrap();
    // A session of the same user made otherwise (here by the admin API) is not the provider's.
    let minted = fed
        .idp
        .admin(
            "POST",
            "/admin/sessions",
            Some(&format!(r#"{{"username": "{ALICE}"}}"#)),
        )
        .await;
    assert_eq!(minted.status, 200, "{}", minted.body);
    for gw in [&gw1, &gw2] {
        assert_eq!(gw.get_with_token("/api/orders", &access).await.status, 200);
    }

    // Tokens that do not verify end nothing.
    let forged = [
        ("bad signature", logout_token(&fed, "stray.pem", |_| {})),
        (
            "other audience",
            logout_token(&fed, "signing.pem", |c| {
                c.insert("aud".into(), "someone-else".into());
            }),
        ),
        (
            "nonce present",
            logout_token(&fed, "signing.pem", |c| {
                c.insert("nonce".into(), "n".into());
            }),
        ),
        (
            "no event",
            logout_token(&fed, "signing.pem", |c| {
                c.remove("events");
            }),
        ),
        (
            "neither sub nor sid",
            logout_token(&fed, "signing.pem", |c| {
                c.remove("sub");
            }),
        ),
        (
            "issued long ago",
            logout_token(&fed, "signing.pem", |c| {
                c.insert("iat".into(), (tokengate_store::now_unix() - 3600).into());
            }),
        ),
    ];
    for (what, token) in &forged {
        let r = send_logout(&fed, token).await;
        assert_eq!(r.status, 400, "{what}: {}", r.body);
        assert_eq!(r.json()["error"], "invalid_request", "{what}");
    }
    assert_eq!(gw1.get_with_token("/api/orders", &access).await.status, 200);

    // The provider's own logout token ends every session made through it, on both gateways.
    let token = logout_token(&fed, "signing.pem", |_| {});
    let r = send_logout(&fed, &token).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    for gw in [&gw1, &gw2] {
        assert!(
            eventually(Duration::from_secs(5), || async {
                gw.get_with_token("/api/orders", &access).await.status == 401
            })
            .await,
            "the session still works after the provider's logout"
        );
    }
    let sessions = fed
        .idp
        .admin("GET", &format!("/admin/users/{ALICE}/sessions"), None)
        .await;
    let left = sessions.json()["sessions"].as_array().unwrap().clone();
    let minted = minted.json()["access_token"].as_str().unwrap().to_owned();
    let minted = tokengate_store::ReferenceToken::parse(&minted).unwrap();
    assert_eq!(
        left.len(),
        1,
        "only the admin-minted session is left: {left:?}"
    );
    assert_eq!(left[0]["id"], minted.session_id().as_str());

    // A replayed token is refused, by any replica (the store remembers its jti).
    let again = send_logout(&fed, &token).await;
    assert_eq!(again.status, 400, "{}", again.body);
    let audit = fed.idp.admin("GET", "/admin/audit", None).await;
    let entry = &audit.json()["entries"][0];
    assert_eq!(entry["action"], "session.backchannel_logout");
    assert_eq!(entry["actor"], "upstream:corp");
    assert_eq!(entry["target"], ALICE);
    // An upstream that does not take back-channel logout has no such endpoint.
    let none = support::post_form(
        &fed.idp.url("/oauth2/upstream/other/backchannel-logout"),
        &[],
        "logout_token=x",
    )
    .await;
    assert_eq!(none.status, 404);
}

#[tokio::test]
async fn signing_out_at_the_real_provider_ends_the_tokengate_session_everywhere() {
    let fed = Fed::start(UpstreamOptions::default()).await;
    let backend = EchoBackend::start().await;
    let gw1 = TestGateway::spawn(gateway_config(&fed.redis.url(), &fed.idp, &backend.url())).await;
    let gw2 = TestGateway::spawn(gateway_config(&fed.redis.url(), &fed.idp, &backend.url())).await;
    let browser = Browser::new();
    let (_, access) = sign_in(&fed, &browser, "alice").await;
    let access = access.unwrap();
    for gw in [&gw1, &gw2] {
        assert_eq!(gw.get_with_token("/api/orders", &access).await.status, 200);
    }
    // The person signs out at the provider (its end-session page, then "yes"); the provider
    // sends its logout token to tokengate's back-channel endpoint.
    let page = browser.get(&fed.upstream.url("/session/end")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let mut form = hidden_fields(&page.body);
    form.push(("logout".into(), "yes".into()));
    let fields: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let done = browser
        .post_form(&fed.upstream.url("/session/end/confirm"), &fields)
        .await;
    assert!(
        [200, 302, 303].contains(&done.status),
        "{}: {}",
        done.status,
        done.body
    );
    for gw in [&gw1, &gw2] {
        assert!(
            eventually(Duration::from_secs(5), || async {
                gw.get_with_token("/api/orders", &access).await.status == 401
            })
            .await,
            "the session outlived the provider's logout ({}: {})",
            done.status,
            done.body
        );
    }
    let sessions = fed
        .idp
        .admin("GET", &format!("/admin/users/{ALICE}/sessions"), None)
        .await;
    assert_eq!(sessions.json()["sessions"], serde_json::json!([]));
}
