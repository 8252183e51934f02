//! `tokengate dev` as a user runs it: a real process, its printed instructions, its logs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

use support::{get, post_form, send};

/// A `tokengate dev` process, killed when the test ends, however it ends: a failed assertion
/// must not leave it holding the walkthrough's fixed ports for the next run.
struct Dev(std::process::Child);

impl Drop for Dev {
    fn drop(&mut self) {
        // Already stopped (the test's SIGTERM): both calls are harmless.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for Dev {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Dev {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

#[tokio::test]
async fn dev_walkthrough_works_and_no_secret_reaches_the_log() {
    let mut child = Dev(Command::new(env!("CARGO_BIN_EXE_tokengate"))
        .args([
            "dev",
            "--idp-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap());
    // The first lines name the listeners and the admin token.
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let (mut banner, mut line) = (String::new(), String::new());
    while !banner.contains("In a browser:") {
        line.clear();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "dev exited early: {banner}"
        );
        banner.push_str(&line);
    }
    let word_after = |marker: &str| {
        let rest = &banner[banner.find(marker).unwrap() + marker.len()..];
        rest.split_whitespace()
            .next()
            .unwrap()
            .trim_end_matches([',', ')'])
            .to_owned()
    };
    let idp = word_after("IdP ");
    let admin = word_after("admin API on ");
    let gateway = word_after("gateway ");
    let admin_token = word_after("Admin token: ");
    let console = word_after("console ");
    let console_password = word_after("sign in as admin / ");
    assert_eq!(console, format!("{admin}/console/"));
    let demo = word_after("In a browser: ");
    let demo = demo.trim_end_matches('/');
    // The IdP is named by localhost, where passkeys work over plain http (an IP address cannot
    // be a WebAuthn relying party id): its passkeys page asks for a sign-in, it is not off.
    assert!(idp.starts_with("http://localhost:"), "{idp}");
    let passkeys = get(&format!("{idp}/account/passkeys")).await;
    assert_eq!(passkeys.status, 401, "{}", passkeys.body);

    let login = post_form(
        &format!("{idp}/oauth2/token"),
        &[],
        "grant_type=password&client_id=cli&username=alice&password=wonderland",
    )
    .await;
    assert_eq!(login.status, 200, "{}", login.body);
    let token = login.json()["access_token"].as_str().unwrap().to_owned();
    let auth = format!("Bearer {token}");
    let verified = send(
        "GET",
        &format!("{idp}/auth/verify"),
        &[("authorization", &auth)],
        String::new(),
    )
    .await;
    assert_eq!(verified.status, 200);
    let value_token = verified.header("x-auth-value-token").unwrap().to_owned();
    // Through the gateway to the echo backend (the gateway loads its keys at start: wait).
    let mut through = send(
        "GET",
        &format!("{gateway}/api/orders"),
        &[("authorization", &auth)],
        String::new(),
    )
    .await;
    for _ in 0..100 {
        if through.status != 503 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        through = send(
            "GET",
            &format!("{gateway}/api/orders"),
            &[("authorization", &auth)],
            String::new(),
        )
        .await;
    }
    assert_eq!(through.status, 200, "{}", through.body);
    assert_eq!(through.json()["headers"]["x-auth-subject"], "alice");
    let failed = post_form(
        &format!("{idp}/oauth2/token"),
        &[],
        "grant_type=password&client_id=cli&username=alice&password=guess-123",
    )
    .await;
    assert_eq!(failed.status, 400);
    // The demo app signs in through the IdP's page (code flow with PKCE) and calls the API
    // through the gateway with the token it got.
    let browser = support::oidc::Browser::new();
    let start = browser.get(&format!("{demo}/login")).await;
    assert_eq!(start.status, 303, "{}", start.body);
    let authorize = start.header("location").unwrap().to_owned();
    assert!(
        authorize.starts_with(&format!("{idp}/oauth2/authorize?")),
        "{authorize}"
    );
    let back = browser.sign_in(&authorize, "alice", "wonderland").await;
    assert_eq!(back.status, 302, "{}", back.body);
    let callback = back.header("location").unwrap().to_owned();
    assert!(
        callback.starts_with(&format!("{demo}/callback?")),
        "{callback}"
    );
    let code = support::oidc::location_query(&back)["code"].clone();
    let home = browser.get(&callback).await;
    assert_eq!(home.status, 303, "{}", home.body);
    let page = browser.get(&format!("{demo}/")).await;
    assert!(page.body.contains("Hello, alice"), "{}", page.body);
    let called = browser.get(&format!("{demo}/call")).await;
    assert!(called.body.contains("200 from"), "{}", called.body);
    assert!(called.body.contains("x-auth-subject"), "{}", called.body);
    let sso = browser.cookie("tokengate_idp").unwrap();

    // The browser app behind the gateway: the gateway signs the browser in itself (single
    // sign-on here, so no form) and keeps the session in an HttpOnly cookie.
    let app = format!("{gateway}/app/");
    let html = [("accept", "text/html")];
    let nav = browser.send("GET", &app, &html, String::new()).await;
    assert_eq!(nav.status, 302, "{}", nav.body);
    let login = browser
        .get(&format!("{gateway}{}", nav.header("location").unwrap()))
        .await;
    assert_eq!(login.status, 302, "{}", login.body);
    let back = browser.get(login.header("location").unwrap()).await;
    assert_eq!(back.status, 302, "{}", back.body);
    let gateway_code = support::oidc::location_query(&back)["code"].clone();
    let landed = browser.get(back.header("location").unwrap()).await;
    assert_eq!(landed.header("location"), Some("/app/"), "{}", landed.body);
    let page = browser.send("GET", &app, &html, String::new()).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("browser app"), "{}", page.body);
    let api = browser.get(&format!("{gateway}/app/api/orders")).await;
    assert_eq!(api.json()["headers"]["x-auth-subject"], "alice");
    let cookie = browser.cookie("tokengate").unwrap();

    let admin_auth = format!("Bearer {admin_token}");
    let logout = send(
        "DELETE",
        &format!("{admin}/admin/users/alice/sessions"),
        &[("authorization", &admin_auth)],
        String::new(),
    )
    .await;
    // The password grant's session, the browser's IdP session, the demo app's session and the
    // gateway's browser session.
    assert_eq!(logout.json()["revoked"], 4);
    let after = send(
        "GET",
        &format!("{idp}/auth/verify"),
        &[("authorization", &auth)],
        String::new(),
    )
    .await;
    assert_eq!(after.status, 401);
    let ok = support::eventually(std::time::Duration::from_secs(5), || async {
        send(
            "GET",
            &format!("{gateway}/api/orders"),
            &[("authorization", &auth)],
            String::new(),
        )
        .await
        .status
            == 401
    })
    .await;
    assert!(ok, "the gateway kept accepting a logged-out token");
    let ok = support::eventually(std::time::Duration::from_secs(5), || async {
        browser
            .get(&format!("{gateway}/app/api/orders"))
            .await
            .status
            == 401
    })
    .await;
    assert!(ok, "the gateway kept accepting a logged-out cookie");

    // The console, with the demo administrator it printed.
    let console_browser = support::oidc::Browser::new();
    let signed_in =
        support::oidc::console_sign_in(&console_browser, &admin, "admin", &console_password).await;
    assert_eq!(signed_in.status, 303, "{}", signed_in.body);
    let overview = console_browser.get(&console).await;
    assert_eq!(overview.status, 200, "{}", overview.body);
    assert!(overview.body.contains("Overview"), "{}", overview.body);
    let console_cookie = console_browser.cookie("tokengate_console").unwrap();

    // SIGTERM: a graceful stop that exits 0.
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "graceful stop must exit 0, got {status}");
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(
        log.contains("forced logout"),
        "debug log expected, got: {log}"
    );
    for secret in [
        token.as_str(),
        &value_token,
        &admin_token,
        "wonderland",
        "guess-123",
        &code,
        &sso,
        &gateway_code,
        &cookie,
        &console_password,
        &console_cookie,
    ] {
        assert!(!log.contains(secret), "a secret reached the log: {secret}");
    }
}

#[tokio::test]
async fn echo_runs_alone_and_help_points_to_the_demo() {
    let mut child = Dev(Command::new(env!("CARGO_BIN_EXE_tokengate"))
        .args(["echo", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap());
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("echo backend listening") {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "echo exited early"
        );
    }
    let addr = line
        .split("listen=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let reply = send(
        "GET",
        &format!("http://{addr}/api/orders?x=1"),
        &[("x-test", "1")],
        String::new(),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["headers"]["x-test"], "1");
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    assert!(child.wait().unwrap().success());

    let help = Command::new(env!("CARGO_BIN_EXE_tokengate"))
        .arg("--help")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("tokengate dev --help"), "{text}");
    assert!(text.contains("echo"), "{text}");
}
