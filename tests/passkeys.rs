//! Passkeys end to end over HTTP: the passkey page's script allowed by its hash alone, bad
//! assertions refused and counted toward the login lockout, ceremonies used once, the routes off
//! without `[webauthn]`. A real IdP on `localhost` (the relying party id), a real Redis.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use base64::Engine;
use support::oidc::{Browser, hidden_fields};
use support::*;
use tokengate_idp::config::{ClientConfig, Grant, WebauthnConfig};

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
    // The passkey page loads one script, allowed by its hash and nothing else.
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
