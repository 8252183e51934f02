//! One-time passwords as a second factor, end to end: a signed-in user enrols on the IdP's page
//! with a code computed here, signs in again with the password and the next code, and cannot use
//! a code twice; the password grant asks for `otp`; wrong codes count toward the login lockout;
//! an administrator removes the factor. A real IdP, a real Redis, a browser without script.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use support::oidc::{Browser, hidden_fields, location_query, unescape};
use support::*;
use tokengate_idp::config::{ClientConfig, Grant};
use tokengate_idp::otp;

const WEB: &str = "http://127.0.0.1:3000/callback";

async fn setup(max_failures: u32) -> (TestRedis, TestIdp) {
    let redis = TestRedis::start();
    let mut config = idp_config(&redis.url());
    config.login.max_failures = max_failures;
    config.clients.push(ClientConfig::public(
        "web",
        &[Grant::AuthorizationCode],
        &[WEB],
    ));
    let idp = TestIdp::spawn(config).await;
    (redis, idp)
}

fn authorize_url(idp: &TestIdp) -> String {
    let query = serde_urlencoded::to_string([
        ("response_type", "code"),
        ("client_id", "web"),
        ("redirect_uri", WEB),
        ("scope", "openid"),
        ("state", "s1"),
        (
            "code_challenge",
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        ),
        ("code_challenge_method", "S256"),
    ])
    .unwrap();
    idp.url(&format!("/oauth2/authorize?{query}"))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Waits out the end of a 30 s step, so that the codes computed next stay valid for the test.
async fn early_in_a_step() {
    let into = now() % otp::STEP;
    if into > otp::STEP - 8 {
        tokio::time::sleep(Duration::from_secs(otp::STEP - into)).await;
    }
}

/// The code of `step` (the current step plus `offset`) for a base32 key.
fn code(key: &str, offset: i64) -> String {
    let secret = base32_decode(key);
    let step = (now() / otp::STEP).checked_add_signed(offset).unwrap();
    format!("{:06}", otp::hotp(&secret, step, 6))
}

fn base32_decode(text: &str) -> Vec<u8> {
    let (mut out, mut buffer, mut bits) = (Vec::new(), 0u32, 0u32);
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'2'..=b'7' => c - b'2' + 26,
            _ => panic!("not base32: {text}"),
        };
        buffer = (buffer << 5) | u32::from(v);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    out
}

/// The enrolment page's key (the text under the QR code).
fn key_of(page: &str) -> String {
    let start = page.find("<code>").expect("the key") + "<code>".len();
    let end = start + page[start..].find("</code>").unwrap();
    unescape(&page[start..end])
}

/// Posts the first form of `page` to `action` with its hidden fields and `extra`.
async fn submit(browser: &Browser, url: String, page: &str, extra: &[(&str, &str)]) -> Reply {
    let mut form = hidden_fields(page);
    form.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    browser.post_form(&url, &form).await
}

/// The recovery codes of the page after enrolment.
fn recovery_codes_of(page: &str) -> Vec<String> {
    page.split("<li><code>")
        .skip(1)
        .map(|rest| unescape(&rest[..rest.find("</code>").unwrap()]))
        .collect()
}

/// Signs alice in through the form and enrols a second factor; the key and the recovery codes.
async fn enrol(idp: &TestIdp) -> (String, Vec<String>) {
    let browser = Browser::new();
    let signed = browser
        .sign_in(&authorize_url(idp), "alice", PASSWORD)
        .await;
    assert_eq!(signed.status, 302, "{}", signed.body);
    let page = browser.get(&idp.url("/account/otp")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("<svg"), "a QR code");
    let key = key_of(&page.body);
    let wrong = submit(
        &browser,
        idp.url("/account/otp"),
        &page.body,
        &[("code", "000000")],
    )
    .await;
    assert!(wrong.body.contains("not right"), "{}", wrong.body);
    // The previous step's code: the current and next stay for the sign-ins after.
    let on = submit(
        &browser,
        idp.url("/account/otp"),
        &wrong.body,
        &[("code", &code(&key, -1))],
    )
    .await;
    assert_eq!(on.status, 200, "{}", on.body);
    assert!(on.body.contains("Second factor on"), "{}", on.body);
    let codes = recovery_codes_of(&on.body);
    assert_eq!(codes.len(), 10, "{}", on.body);
    (key, codes)
}

#[tokio::test]
async fn enrol_then_sign_in_with_password_and_code_each_code_once() {
    let (_redis, idp) = setup(0).await;
    early_in_a_step().await;
    assert_eq!(
        Browser::new().get(&idp.url("/account/otp")).await.status,
        401,
        "enrolment needs someone signed in"
    );
    let (key, recovery) = enrol(&idp).await;
    let user = idp.admin("GET", "/admin/users/alice", None).await.json();
    assert_eq!(user["second_factor"], true);
    assert!(
        !user.to_string().contains(&key),
        "the secret never leaves the IdP"
    );
    assert!(!user.to_string().contains(&recovery[0]));

    // The password alone now leads to the code page, not to the application.
    let browser = Browser::new();
    let page = browser
        .sign_in(&authorize_url(&idp), "alice", PASSWORD)
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("Enter your code"), "{}", page.body);
    assert!(page.header("location").is_none());
    let action = idp.url("/oauth2/authorize/otp");
    let wrong = submit(&browser, action.clone(), &page.body, &[("code", "123456")]).await;
    assert!(wrong.body.contains("not right"), "{}", wrong.body);
    let now_code = code(&key, 0);
    let done = submit(
        &browser,
        action.clone(),
        &wrong.body,
        &[("code", &now_code)],
    )
    .await;
    assert_eq!(done.status, 302, "{}", done.body);
    assert!(location_query(&done).contains_key("code"));

    // The same code again, in another browser: refused.
    let other = Browser::new();
    let page = other.sign_in(&authorize_url(&idp), "alice", PASSWORD).await;
    let replay = submit(&other, action.clone(), &page.body, &[("code", &now_code)]).await;
    assert_eq!(replay.status, 200);
    assert!(replay.body.contains("not right"), "a code is good once");
    // The code page's record is taken once too.
    let stale = submit(&other, action, &page.body, &[("code", &code(&key, 1))]).await;
    assert_eq!(stale.status, 403, "{}", stale.body);

    // A recovery code in place of a code, once.
    let lost = Browser::new();
    let page = lost.sign_in(&authorize_url(&idp), "alice", PASSWORD).await;
    let action = idp.url("/oauth2/authorize/otp");
    let rescued = submit(&lost, action.clone(), &page.body, &[("code", &recovery[3])]).await;
    assert_eq!(rescued.status, 302, "{}", rescued.body);
    let audit = idp.admin("GET", "/admin/audit", None).await.body;
    assert!(audit.contains("user.recovery_code_use"), "{audit}");
    let again = Browser::new();
    let page = again.sign_in(&authorize_url(&idp), "alice", PASSWORD).await;
    let reused = submit(&again, action, &page.body, &[("code", &recovery[3])]).await;
    assert!(
        reused.body.contains("not right"),
        "a recovery code is good once"
    );

    // The password grant asks for the code.
    let grant = |otp: Option<String>| {
        let url = idp.url("/oauth2/token");
        async move {
            let mut form = format!(
                "grant_type=password&client_id={CLI_CLIENT}&username=alice&password={PASSWORD}"
            );
            if let Some(otp) = otp {
                form.push_str(&format!("&otp={otp}"));
            }
            post_form(&url, &[], &form).await
        }
    };
    let missing = grant(None).await;
    assert_eq!(missing.status, 400);
    assert_eq!(
        missing.json()["error"],
        "invalid_request",
        "{}",
        missing.body
    );
    assert_eq!(grant(Some(now_code)).await.status, 400, "used already");
    let next = grant(Some(code(&key, 1))).await;
    assert_eq!(next.status, 200, "{}", next.body);
    assert_eq!(
        amr(&idp, &next).await,
        ["pwd", "otp", "mfa"],
        "the value token says how"
    );

    // An administrator removes the factor: the password alone signs in again.
    let removed = idp
        .admin(
            "PATCH",
            "/admin/users/alice",
            Some(r#"{"second_factor": false}"#),
        )
        .await;
    assert_eq!(removed.status, 200, "{}", removed.body);
    assert_eq!(removed.json()["second_factor"], false);
    let password_only = grant(None).await;
    assert_eq!(password_only.status, 200);
    assert_eq!(amr(&idp, &password_only).await, ["pwd"]);
}

#[tokio::test]
async fn a_recovery_code_sent_several_times_at_once_signs_in_once() {
    let (_redis, idp) = setup(0).await;
    let (_key, recovery) = enrol(&idp).await;
    // Four browsers at the code page, then the same recovery code from each at once: each
    // request checks it against the record it read, but only one takes it from the record.
    let mut waiting = Vec::new();
    for _ in 0..4 {
        let browser = Browser::new();
        let page = browser
            .sign_in(&authorize_url(&idp), "alice", PASSWORD)
            .await;
        assert!(page.body.contains("Enter your code"), "{}", page.body);
        waiting.push((browser, page.body));
    }
    let action = idp.url("/oauth2/authorize/otp");
    let extra = [("code", recovery[5].as_str())];
    let send = |i: usize| submit(&waiting[i].0, action.clone(), &waiting[i].1, &extra);
    let (a, b, c, d) = tokio::join!(send(0), send(1), send(2), send(3));
    let answers = [a, b, c, d];
    let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 302).count(),
        1,
        "one sign-in with the code: {statuses:?}"
    );
    for refused in answers.iter().filter(|a| a.status != 302) {
        assert!(refused.body.contains("not right"), "{}", refused.body);
    }
    // Nine codes are left, the others still good.
    let later = Browser::new();
    let page = later.sign_in(&authorize_url(&idp), "alice", PASSWORD).await;
    let rescued = submit(&later, action, &page.body, &[("code", &recovery[6])]).await;
    assert_eq!(rescued.status, 302, "{}", rescued.body);
}

/// The `amr` of the value token behind a token response's reference token, as the gateway and
/// backends see it.
async fn amr(idp: &TestIdp, answer: &Reply) -> Vec<String> {
    use base64::Engine;
    let token = answer.json()["access_token"].as_str().unwrap().to_owned();
    let verified = idp.verify(&token).await;
    assert_eq!(verified.status, 200, "{}", verified.body);
    let value_token = verified
        .header("x-auth-value-token")
        .expect("a value token");
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
async fn wrong_codes_count_toward_the_login_lockout_even_with_the_right_password() {
    let (_redis, idp) = setup(3).await;
    early_in_a_step().await;
    let (key, _) = enrol(&idp).await;
    let action = idp.url("/oauth2/authorize/otp");
    // Each attempt has the right password; only the codes are guessed.
    let mut last = None;
    for _ in 0..3 {
        let browser = Browser::new();
        let page = browser
            .sign_in(&authorize_url(&idp), "alice", PASSWORD)
            .await;
        if page.status != 200 {
            last = Some(page);
            break;
        }
        last = Some(submit(&browser, action.clone(), &page.body, &[("code", "999999")]).await);
    }
    let browser = Browser::new();
    let page = browser
        .sign_in(&authorize_url(&idp), "alice", PASSWORD)
        .await;
    let locked = if page.status == 200 {
        submit(&browser, action, &page.body, &[("code", &code(&key, 0))]).await
    } else {
        page
    };
    assert_eq!(locked.status, 429, "locked out: {}", locked.body);
    assert!(locked.header("retry-after").is_some());
    assert!(last.is_some());
}

#[tokio::test]
async fn a_required_second_factor_is_enrolled_before_the_code_then_asked_every_time() {
    let redis = TestRedis::start();
    let mut config = idp_config(&redis.url());
    config.login.max_failures = 0;
    config.mfa.required_for_roles = vec!["orders:read".to_owned()];
    config.clients.push(ClientConfig::public(
        "web",
        &[Grant::AuthorizationCode],
        &[WEB],
    ));
    let idp = TestIdp::spawn(config).await;
    early_in_a_step().await;

    // The password grant refuses someone who must have a second factor and has none.
    let grant = post_form(
        &idp.url("/oauth2/token"),
        &[],
        &format!("grant_type=password&client_id={CLI_CLIENT}&username=bob&password={PASSWORD}"),
    )
    .await;
    assert_eq!(grant.status, 400, "{}", grant.body);
    assert!(grant.body.contains("second factor"), "{}", grant.body);

    // The form: a right password leads to enrolment, not to the application.
    let browser = Browser::new();
    let url = authorize_url(&idp);
    let to_enrol = browser.sign_in(&url, "alice", PASSWORD).await;
    assert_eq!(to_enrol.status, 303, "{}", to_enrol.body);
    let location = to_enrol.header("location").unwrap().to_owned();
    assert!(location.starts_with("/account/otp?continue="), "{location}");
    let page = browser.get(&idp.url(&location)).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let key = key_of(&page.body);
    let done = submit(
        &browser,
        idp.url("/account/otp"),
        &page.body,
        &[("code", &code(&key, -1))],
    )
    .await;
    assert!(done.body.contains("Second factor on"), "{}", done.body);
    let start = done
        .body
        .find("href=\"/oauth2/authorize?")
        .expect("a link back to the sign-in")
        + 6;
    let back = unescape(&done.body[start..start + done.body[start..].find('"').unwrap()]);

    // Back at the sign-in, the single-sign-on session (a password alone) is not enough: a code.
    let asked = browser.get(&idp.url(&back)).await;
    assert_eq!(asked.status, 200, "{}", asked.body);
    assert!(asked.body.contains("Enter your code"), "{}", asked.body);
    let signed = submit(
        &browser,
        idp.url("/oauth2/authorize/otp"),
        &asked.body,
        &[("code", &code(&key, 0))],
    )
    .await;
    assert_eq!(signed.status, 302, "{}", signed.body);
    assert!(location_query(&signed).contains_key("code"));
    // Now the session has its second factor: the next sign-in reuses it at once.
    let again = browser.get(&url).await;
    assert_eq!(again.status, 302, "{}", again.body);
    // A forged continue never leaves the IdP.
    let forged = browser
        .get(&idp.url("/account/otp?continue=https%3A%2F%2Fevil.example%2F"))
        .await;
    assert!(!forged.body.contains("evil.example"), "{}", forged.body);
}

const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const ACR_ONE_FACTOR: &str = "urn:tokengate:acr:1fa";
const ACR_MFA: &str = "urn:tokengate:acr:mfa";

/// The claims of the ID token the code of `redirect` (an answer to the client) redeems for.
async fn id_token_of(idp: &TestIdp, redirect: &Reply) -> serde_json::Value {
    use base64::Engine;
    assert_eq!(redirect.status, 302, "{}", redirect.body);
    let code = location_query(redirect)["code"].clone();
    let form = serde_urlencoded::to_string([
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", WEB),
        ("client_id", "web"),
        ("code_verifier", VERIFIER),
    ])
    .unwrap();
    let tokens = post_form(&idp.url("/oauth2/token"), &[], &form).await;
    assert_eq!(tokens.status, 200, "{}", tokens.body);
    let id_token = tokens.json()["id_token"].as_str().unwrap().to_owned();
    let payload = id_token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn a_client_asking_for_the_mfa_class_gets_a_second_factor_first_and_acr_says_so() {
    let (_redis, idp) = setup(0).await;
    early_in_a_step().await;
    let discovery = get(&idp.url("/.well-known/openid-configuration"))
        .await
        .json();
    assert_eq!(
        discovery["acr_values_supported"],
        serde_json::json!([ACR_ONE_FACTOR, ACR_MFA])
    );
    assert_eq!(discovery["claims_parameter_supported"], true);

    // Without asking: a password signs bob in, and the ID token says one factor.
    let browser = Browser::new();
    let signed = browser.sign_in(&authorize_url(&idp), "bob", PASSWORD).await;
    let claims = id_token_of(&idp, &signed).await;
    assert_eq!(claims["acr"], ACR_ONE_FACTOR, "{claims}");
    assert_eq!(claims["amr"], serde_json::json!(["pwd"]));

    // Asking for the MFA class: bob's single-sign-on session (a password) is not enough, and
    // he has no second factor: enrolment first, then the code, then the application.
    let mfa_url = format!(
        "{}&{}",
        authorize_url(&idp),
        serde_urlencoded::to_string([("acr_values", ACR_MFA)]).unwrap()
    );
    let to_enrol = browser.get(&mfa_url).await;
    assert_eq!(to_enrol.status, 303, "{}", to_enrol.body);
    let location = to_enrol.header("location").unwrap().to_owned();
    assert!(location.starts_with("/account/otp?continue="), "{location}");
    let page = browser.get(&idp.url(&location)).await;
    let key = key_of(&page.body);
    let done = submit(
        &browser,
        idp.url("/account/otp"),
        &page.body,
        &[("code", &code(&key, -1))],
    )
    .await;
    assert!(done.body.contains("Second factor on"), "{}", done.body);
    let start = done
        .body
        .find("href=\"/oauth2/authorize?")
        .expect("a link back to the sign-in")
        + 6;
    let back = unescape(&done.body[start..start + done.body[start..].find('"').unwrap()]);
    assert!(back.contains("acr_values="), "{back}");
    let asked = browser.get(&idp.url(&back)).await;
    assert!(asked.body.contains("Enter your code"), "{}", asked.body);
    let signed = submit(
        &browser,
        idp.url("/oauth2/authorize/otp"),
        &asked.body,
        &[("code", &code(&key, 0))],
    )
    .await;
    let claims = id_token_of(&idp, &signed).await;
    assert_eq!(claims["acr"], ACR_MFA, "{claims}");
    assert_eq!(claims["amr"], serde_json::json!(["pwd", "otp", "mfa"]));
    // The session has its second factor now: asked again, it is met at once.
    let again = browser.get(&mfa_url).await;
    assert_eq!(id_token_of(&idp, &again).await["acr"], ACR_MFA);

    // The `claims` parameter asks the same: alice, who has no second factor, enrols first.
    let claims_param =
        format!(r#"{{"id_token":{{"acr":{{"essential":true,"values":["{ACR_MFA}"]}}}}}}"#);
    let claims_url = format!(
        "{}&{}",
        authorize_url(&idp),
        serde_urlencoded::to_string([("claims", claims_param.as_str())]).unwrap()
    );
    let to_enrol = Browser::new().sign_in(&claims_url, "alice", PASSWORD).await;
    assert_eq!(to_enrol.status, 303, "{}", to_enrol.body);
    let location = to_enrol.header("location").unwrap();
    assert!(location.starts_with("/account/otp?continue="), "{location}");
    // A malformed one goes back to the client as invalid_request.
    let bad = Browser::new()
        .get(&format!("{}&claims=nope", authorize_url(&idp)))
        .await;
    assert_eq!(bad.status, 302, "{}", bad.body);
    assert_eq!(location_query(&bad)["error"], "invalid_request");
}
