//! Passkeys end to end, in a real headless Chromium with its virtual authenticator (CTAP2,
//! resident keys, user verification): alice enrols a passkey on her account page, signs out,
//! signs in with it and no password; with a password the passkey is the second factor; a second
//! browser without the credential cannot sign in with it; she removes it. `amr` in the ID token
//! and the value token says how each sign-in went. A real IdP on `localhost` (a secure context,
//! and the relying party id), a real Redis, chromedriver on a free port.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use base64::Engine;
use fantoccini::Locator;
use support::browser::{Chrome, VirtualAuthenticator};
use support::oidc::{Browser, hidden_fields};
use support::*;
use tokengate_idp::config::{ClientConfig, Grant, WebauthnConfig};

const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

struct Setup {
    _redis: TestRedis,
    _app: EchoBackend,
    idp: TestIdp,
    /// `http://localhost:PORT`: the origin the browser uses.
    origin: String,
    callback: String,
}

async fn setup(max_failures: u32) -> Setup {
    let redis = TestRedis::start();
    let app = EchoBackend::start().await;
    let callback = format!("{}/web/callback", app.url());
    // The relying party's origin names the port, so the IdP's port is chosen first.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let origin = format!("http://localhost:{port}");
    let mut config = idp_config(&redis.url());
    config.server.listen = format!("127.0.0.1:{port}").parse().unwrap();
    config.login.max_failures = max_failures;
    config.webauthn = Some(WebauthnConfig {
        rp_id: "localhost".to_owned(),
        origins: vec![origin.clone()],
    });
    config.clients.push(ClientConfig::public(
        "web",
        &[Grant::AuthorizationCode],
        &[&callback],
    ));
    let idp = TestIdp::spawn(config).await;
    Setup {
        _redis: redis,
        _app: app,
        idp,
        origin,
        callback,
    }
}

impl Setup {
    fn authorize_url(&self) -> String {
        let query = serde_urlencoded::to_string([
            ("response_type", "code"),
            ("client_id", "web"),
            ("redirect_uri", self.callback.as_str()),
            ("scope", "openid"),
            ("state", "s1"),
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "S256"),
        ])
        .unwrap();
        format!("{}/oauth2/authorize?{query}", self.origin)
    }

    /// The `amr` of the ID token and of the value token a code redeems for.
    async fn amr_of(&self, callback_url: &str) -> (Vec<String>, Vec<String>) {
        let query: std::collections::BTreeMap<String, String> =
            serde_urlencoded::from_str(callback_url.split_once('?').unwrap().1).unwrap();
        let form = serde_urlencoded::to_string([
            ("grant_type", "authorization_code"),
            ("code", query["code"].as_str()),
            ("redirect_uri", self.callback.as_str()),
            ("client_id", "web"),
            ("code_verifier", VERIFIER),
        ])
        .unwrap();
        let tokens = post_form(&self.idp.url("/oauth2/token"), &[], &form).await;
        assert_eq!(tokens.status, 200, "{}", tokens.body);
        let id_token = tokens.json()["id_token"].as_str().unwrap().to_owned();
        let reference = tokens.json()["access_token"].as_str().unwrap().to_owned();
        let verified = self.idp.verify(&reference).await;
        assert_eq!(verified.status, 200, "{}", verified.body);
        let value_token = verified.header("x-auth-value-token").unwrap().to_owned();
        (amr(&id_token), amr(&value_token))
    }
}

/// The `amr` claim of a JWT (its signature is the IdP's business, checked elsewhere).
fn amr(jwt: &str) -> Vec<String> {
    let payload = jwt.split('.').nth(1).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    serde_json::from_value(claims["amr"].clone()).unwrap_or_default()
}

/// Signs alice in with her password on the sign-in form.
async fn password_sign_in(chrome: &Chrome, s: &Setup) {
    chrome.client.goto(&s.authorize_url()).await.unwrap();
    chrome.wait_for("input[name=username]").await;
    chrome.fill("input[name=username]", "alice").await;
    chrome.fill("input[name=password]", PASSWORD).await;
    chrome
        .click("form[action='/oauth2/authorize'] button[type=submit]")
        .await;
}

/// Signs the browser out of the IdP: WebDriver forgets the cookies of the page it is on, so it
/// goes to one of the IdP's first.
async fn sign_out(chrome: &Chrome, s: &Setup) {
    let c = &chrome.client;
    c.goto(&format!("{}/oauth2/assets/style.css", s.origin))
        .await
        .unwrap();
    c.delete_all_cookies().await.unwrap();
}

async fn text_of(chrome: &Chrome, css: &str) -> String {
    chrome
        .client
        .find(Locator::Css(css))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn enrol_a_passkey_then_sign_in_with_it_with_and_without_a_password() {
    let s = setup(0).await;
    let chrome = Chrome::start().await;
    let c = &chrome.client;
    chrome
        .add_virtual_authenticator(VirtualAuthenticator::passkey())
        .await;

    // Enrol: sign in with the password, then add a passkey on the account page.
    password_sign_in(&chrome, &s).await;
    chrome.wait_for_url(&s.callback).await;
    c.goto(&format!("{}/account/passkeys", s.origin))
        .await
        .unwrap();
    chrome.wait_for("form#passkey-add").await;
    chrome.screenshot("passkeys-account").await;
    chrome.click("form#passkey-add button[type=submit]").await;
    chrome.wait_for("p.notice").await;
    assert_eq!(text_of(&chrome, "p.notice").await, "Passkey added.");
    assert_eq!(
        c.find_all(Locator::Css("ul.passkeys li"))
            .await
            .unwrap()
            .len(),
        1
    );
    chrome.screenshot("passkeys-added").await;
    let listed = s.idp.admin("GET", "/admin/audit", None).await.body;
    assert!(listed.contains("user.passkey_add"), "{listed}");

    // Sign out (the browser forgets its session), then sign in with the passkey alone.
    sign_out(&chrome, &s).await;
    c.goto(&s.authorize_url()).await.unwrap();
    chrome.wait_for("a#passkey-link").await;
    chrome.click("a#passkey-link").await;
    chrome.wait_for("form#passkey-signin").await;
    chrome.screenshot("passkeys-signin").await;
    chrome
        .click("form#passkey-signin button[type=submit]")
        .await;
    let landed = chrome.wait_for_url(&s.callback).await;
    let (id_amr, value_amr) = s.amr_of(&landed).await;
    assert_eq!(id_amr, ["hwk", "mfa"], "passwordless, user verified");
    assert_eq!(value_amr, ["hwk", "mfa"]);

    // With the password, the passkey is the second factor.
    sign_out(&chrome, &s).await;
    password_sign_in(&chrome, &s).await;
    chrome.wait_for("form#passkey-signin").await;
    assert!(
        text_of(&chrome, "h2").await.contains("Confirm"),
        "asked for the passkey after the password"
    );
    chrome
        .click("form#passkey-signin button[type=submit]")
        .await;
    let landed = chrome.wait_for_url(&s.callback).await;
    let (id_amr, value_amr) = s.amr_of(&landed).await;
    assert_eq!(id_amr, ["pwd", "hwk", "mfa"]);
    assert_eq!(value_amr, ["pwd", "hwk", "mfa"]);

    // A second browser, whose authenticator does not hold the credential, cannot use it.
    let other = Chrome::start().await;
    other
        .add_virtual_authenticator(VirtualAuthenticator::passkey())
        .await;
    other.client.goto(&s.authorize_url()).await.unwrap();
    other.wait_for("a#passkey-link").await;
    other.click("a#passkey-link").await;
    other.wait_for("form#passkey-signin").await;
    other.click("form#passkey-signin button[type=submit]").await;
    other.wait_for("p.webauthn-error:not([hidden])").await;
    assert!(
        text_of(&other, "p.webauthn-error")
            .await
            .contains("did not answer")
    );
    assert!(
        !other
            .client
            .current_url()
            .await
            .unwrap()
            .as_str()
            .starts_with(&s.callback)
    );
    other.stop().await;

    // Alice removes her passkey; the password alone signs her in again.
    sign_out(&chrome, &s).await;
    password_sign_in(&chrome, &s).await;
    chrome.wait_for("form#passkey-signin").await;
    chrome
        .click("form#passkey-signin button[type=submit]")
        .await;
    chrome.wait_for_url(&s.callback).await;
    c.goto(&format!("{}/account/passkeys", s.origin))
        .await
        .unwrap();
    chrome.wait_for("form.inline button").await;
    chrome.click("form.inline button").await;
    chrome.wait_for("p.notice").await;
    assert_eq!(text_of(&chrome, "p.notice").await, "Passkey removed.");
    sign_out(&chrome, &s).await;
    password_sign_in(&chrome, &s).await;
    let landed = chrome.wait_for_url(&s.callback).await;
    assert_eq!(s.amr_of(&landed).await.0, ["pwd"]);

    // She adds one again; an administrator lists it and removes it (a lost device), and the
    // browser's credential no longer signs her in.
    c.goto(&format!("{}/account/passkeys", s.origin))
        .await
        .unwrap();
    chrome.wait_for("form#passkey-add").await;
    chrome.click("form#passkey-add button[type=submit]").await;
    chrome.wait_for("p.notice").await;
    let idp = &s.idp;
    let listed = idp.admin("GET", "/admin/users/alice/passkeys", None).await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    let passkeys = listed.json()["passkeys"].as_array().unwrap().clone();
    assert_eq!(passkeys.len(), 1, "{}", listed.body);
    assert_eq!(passkeys[0]["synced"], false);
    assert!(listed.json()["passkeys"][0].get("public_key").is_none());
    let id = passkeys[0]["id"].as_str().unwrap().to_owned();
    let path = format!("/admin/users/alice/passkeys/{id}");
    let removed = idp.admin("DELETE", &path, None).await;
    assert_eq!(removed.status, 200, "{}", removed.body);
    assert_eq!(idp.admin("DELETE", &path, None).await.status, 404);
    assert_eq!(
        idp.admin("GET", "/admin/users/nobody/passkeys", None)
            .await
            .status,
        404
    );
    let empty = idp
        .admin("GET", "/admin/users/alice/passkeys", None)
        .await
        .json();
    assert_eq!(empty["passkeys"].as_array().unwrap().len(), 0);
    let audit = idp.admin("GET", "/admin/audit", None).await.body;
    assert!(audit.contains("admin-token"), "{audit}");
    assert_eq!(audit.matches("user.passkey_remove").count(), 2, "{audit}");
    sign_out(&chrome, &s).await;
    c.goto(&s.authorize_url()).await.unwrap();
    chrome.wait_for("a#passkey-link").await;
    chrome.click("a#passkey-link").await;
    chrome.wait_for("form#passkey-signin").await;
    chrome
        .click("form#passkey-signin button[type=submit]")
        .await;
    chrome
        .wait_for("p.error[role=alert]:not(.webauthn-error)")
        .await;
    assert!(
        text_of(&chrome, "p.error[role=alert]:not(.webauthn-error)")
            .await
            .contains("not accepted")
    );
    chrome.stop().await;
}

#[tokio::test]
async fn bad_assertions_are_refused_and_count_toward_the_lockout() {
    let s = setup(3).await;
    let browser = Browser::new();
    let url = s
        .authorize_url()
        .replacen("/oauth2/authorize?", "/oauth2/authorize/passkey?", 1);
    let post = |page: String, fields: Vec<(&'static str, String)>| {
        let browser = &browser;
        let action = s.idp.url("/oauth2/authorize/passkey");
        async move {
            let mut form = hidden_fields(&page);
            form.retain(|(k, _)| !fields.iter().any(|(f, _)| f == k));
            form.extend(fields.into_iter().map(|(k, v)| (k.to_owned(), v)));
            let form: Vec<(&str, &str)> =
                form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            browser.post_form(&action, &form).await
        }
    };
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let forged = || {
        vec![
            ("credential", b64(b"no-such-credential")),
            (
                "client_data",
                b64(br#"{"type":"webauthn.get","challenge":"AAAA","origin":"http://evil"}"#),
            ),
            ("authenticator_data", b64(&[0; 37])),
            ("signature", b64(&[0; 64])),
            ("user_handle", b64(b"alice")),
        ]
    };
    // The passkey page loads one script, allowed by its hash (and origin), nothing inline.
    let page = browser.get(&url).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let csp = page.header("content-security-policy").unwrap().to_owned();
    assert!(csp.contains("script-src 'sha256-"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");

    // A field that is not base64url, or too long: refused, not counted, no panic.
    let long = post(page.body.clone(), vec![("credential", "A".repeat(5000))]).await;
    assert_eq!(long.status, 200, "{}", long.body);
    assert!(long.body.contains("not accepted"), "{}", long.body);

    // The ceremony is used once.
    let replay = post(page.body.clone(), forged()).await;
    assert_eq!(replay.status, 403, "{}", replay.body);

    // Three forged assertions for alice lock her name out, as wrong passwords would.
    let mut page = long.body;
    for _ in 0..3 {
        let refused = post(page, forged()).await;
        assert_eq!(refused.status, 200, "{}", refused.body);
        assert!(refused.body.contains("not accepted"), "{}", refused.body);
        page = refused.body;
    }
    let locked = post(page, forged()).await;
    assert_eq!(locked.status, 429, "{}", locked.body);
    // The password too, now.
    let password = Browser::new()
        .sign_in(&s.authorize_url(), "alice", PASSWORD)
        .await;
    assert_eq!(password.status, 429, "{}", password.body);

    // Passkeys off: the routes answer 404 and the sign-in page offers none.
    let redis = TestRedis::start();
    let idp = TestIdp::spawn(idp_config(&redis.url())).await;
    let off = get(&idp.url("/account/passkeys")).await;
    assert_eq!(off.status, 404);
    let signin = get(&idp.url("/oauth2/authorize/passkey")).await;
    assert_eq!(signin.status, 404);
}

#[tokio::test]
async fn the_console_lists_a_users_passkeys_and_removes_one() {
    use tokengate_store::{AnyStore, Passkey, UserDirectory};
    let redis = TestRedis::start();
    let mut config = idp_config(&redis.url());
    config.webauthn = Some(WebauthnConfig {
        rp_id: "localhost".to_owned(),
        origins: vec!["http://localhost:7000".to_owned()],
    });
    config.users.push(tokengate_idp::config::UserConfig {
        username: "root".to_owned(),
        password_hash: tokengate_idp::password::hash_password(PASSWORD).unwrap(),
        roles: vec!["tokengate:admin".to_owned()],
    });
    let store: AnyStore = config.store.connect().unwrap();
    let idp = TestIdp::spawn(config).await;
    // A passkey as the account page would have kept it (the browser ceremonies are the other
    // test's).
    let mut alice = None;
    for _ in 0..100 {
        alice = store.user("alice").await.unwrap();
        if alice.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let mut alice = alice.expect("alice is seeded");
    alice.passkeys.push(Passkey {
        id: "Y29uc29sZS1wYXNza2V5".to_owned(),
        public_key: "pQECAyYgASFYIA".to_owned(),
        sign_count: 0,
        backup_eligible: true,
        created_at: 1,
        last_used_at: 0,
    });
    assert!(store.update_user(&alice).await.unwrap());

    let admin = idp.admin_url("");
    let browser = Browser::new();
    let signed_in = support::oidc::console_sign_in(&browser, &admin, "root", PASSWORD).await;
    assert_eq!(signed_in.status, 303, "{}", signed_in.body);
    let page = browser
        .get(&format!("{admin}/console/user?name=alice"))
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("<h3>Passkeys</h3>"), "{}", page.body);
    assert!(page.body.contains("Y29uc29sZS1w") && page.body.contains("synced"));
    let csrf = hidden_fields(&page.body)
        .into_iter()
        .find(|(k, _)| k == "csrf")
        .unwrap()
        .1;
    let remove = |id: &'static str| {
        let (browser, admin, csrf) = (&browser, &admin, &csrf);
        async move {
            browser
                .post_form(
                    &format!("{admin}/console/user"),
                    &[
                        ("csrf", csrf.as_str()),
                        ("username", "alice"),
                        ("passkey", id),
                        ("action", "remove-passkey"),
                    ],
                )
                .await
        }
    };
    let unknown = remove("bm8tc3VjaA").await;
    assert_eq!(unknown.status, 400, "{}", unknown.body);
    let removed = remove("Y29uc29sZS1wYXNza2V5").await;
    assert_eq!(removed.status, 303, "{}", removed.body);
    let after = browser
        .get(&format!("{admin}{}", removed.header("location").unwrap()))
        .await;
    assert!(after.body.contains("Passkey removed."), "{}", after.body);
    assert!(!after.body.contains("<h3>Passkeys</h3>"));
    assert!(
        store
            .user("alice")
            .await
            .unwrap()
            .unwrap()
            .passkeys
            .is_empty()
    );
    let audit = idp.admin("GET", "/admin/audit", None).await.body;
    assert!(audit.contains("console:root"), "{audit}");
    assert!(audit.contains("user.passkey_remove"), "{audit}");
}

/// Adds the passkey of `attestation` (a recorded registration; its client data made here for
/// this page's challenge) on `browser`'s account page: the page's answer.
async fn add_recorded_passkey(s: &Setup, browser: &Browser, attestation: &str) -> Reply {
    let page = browser.get(&s.idp.url("/account/passkeys")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let challenge = page
        .body
        .split_once("data-challenge=\"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(challenge, _)| challenge.to_owned())
        .expect("the add form's challenge");
    let client_data = format!(
        r#"{{"type":"webauthn.create","challenge":"{challenge}","origin":"{}","crossOrigin":false}}"#,
        s.origin
    );
    let client_data = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(client_data);
    let add = page
        .body
        .split_once("id=\"passkey-add\"")
        .expect("add form")
        .1;
    let mut form = hidden_fields(&format!("<form {add}"));
    form.retain(|(k, _)| k != "client_data" && k != "attestation");
    form.push(("client_data".into(), client_data));
    form.push(("attestation".into(), attestation.to_owned()));
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    browser
        .post_form(&s.idp.url("/account/passkeys"), &form)
        .await
}

#[tokio::test]
async fn a_credential_id_belongs_to_one_user_only() {
    let s = setup(10).await;
    let fixture: serde_json::Value =
        serde_json::from_str(include_str!("../idp/src/webauthn/chromium.json")).unwrap();
    let attestation = fixture["attestation"].as_str().unwrap();
    let id = fixture["id"].as_str().unwrap();
    let signed_in = |name: &'static str| {
        let url = s.authorize_url();
        async move {
            let browser = Browser::new();
            let reply = browser.sign_in(&url, name, PASSWORD).await;
            assert_eq!(reply.status, 302, "{}", reply.body);
            browser
        }
    };
    let passkeys_of = |name: &'static str| {
        let idp = &s.idp;
        async move {
            let listed = idp
                .admin("GET", &format!("/admin/users/{name}/passkeys"), None)
                .await;
            assert_eq!(listed.status, 200, "{}", listed.body);
            listed.json()["passkeys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    let alice = signed_in("alice").await;
    let bob = signed_in("bob").await;

    let added = add_recorded_passkey(&s, &alice, attestation).await;
    assert_eq!(added.status, 200, "{}", added.body);
    assert!(added.body.contains("Passkey added."), "{}", added.body);
    assert_eq!(passkeys_of("alice").await, [id]);

    // The same credential (an authenticator answering for bob with alice's credential id) is
    // refused: a credential id names one user.
    let refused = add_recorded_passkey(&s, &bob, attestation).await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(refused.body.contains("was not added"), "{}", refused.body);
    assert!(passkeys_of("bob").await.is_empty());

    // Once alice's is removed (by an administrator here), the credential id is free again.
    let removed = s
        .idp
        .admin("DELETE", &format!("/admin/users/alice/passkeys/{id}"), None)
        .await;
    assert_eq!(removed.status, 200, "{}", removed.body);
    let added = add_recorded_passkey(&s, &bob, attestation).await;
    assert_eq!(added.status, 200, "{}", added.body);
    assert_eq!(passkeys_of("bob").await, [id]);
    let refused = add_recorded_passkey(&s, &alice, attestation).await;
    assert_eq!(refused.status, 400, "{}", refused.body);
}

#[tokio::test]
async fn a_required_second_factor_can_be_a_passkey_added_on_the_way() {
    let s = setup(0).await;
    let chrome = Chrome::start().await;
    let c = &chrome.client;
    chrome
        .add_virtual_authenticator(VirtualAuthenticator::passkey())
        .await;
    // The client asks for the MFA class; alice has no second factor yet.
    let url = format!(
        "{}&acr_values=urn%3Atokengate%3Aacr%3Amfa",
        s.authorize_url()
    );
    c.goto(&url).await.unwrap();
    chrome.wait_for("input[name=username]").await;
    chrome.fill("input[name=username]", "alice").await;
    chrome.fill("input[name=password]", PASSWORD).await;
    chrome
        .click("form[action='/oauth2/authorize'] button[type=submit]")
        .await;
    // Enrolment offers a passkey instead of an app's codes, and goes on to the sign-in after.
    chrome.wait_for("a#passkey-instead").await;
    chrome.screenshot("passkeys-enrolment-choice").await;
    chrome.click("a#passkey-instead").await;
    chrome.wait_for("form#passkey-add").await;
    chrome.click("form#passkey-add button[type=submit]").await;
    chrome.wait_for("a#continue").await;
    assert_eq!(text_of(&chrome, "p.notice").await, "Passkey added.");
    chrome.click("a#continue").await;
    // Back at the sign-in, the password's session is asked for the new passkey.
    chrome.wait_for("form#passkey-signin").await;
    chrome
        .click("form#passkey-signin button[type=submit]")
        .await;
    let landed = chrome.wait_for_url(&s.callback).await;
    let (id_amr, value_amr) = s.amr_of(&landed).await;
    assert_eq!(id_amr, ["pwd", "hwk", "mfa"]);
    assert_eq!(value_amr, ["pwd", "hwk", "mfa"]);
    chrome.stop().await;
}
