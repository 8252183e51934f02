//! `tokengate dev` as a user runs it: a real process, its printed instructions, its logs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

use support::{post_form, send};

#[tokio::test]
async fn dev_walkthrough_works_and_no_secret_reaches_the_log() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tokengate"))
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
        .unwrap();
    // The first lines name the listeners and the admin token.
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let (mut banner, mut line) = (String::new(), String::new());
    while !banner.contains("Admin token:") {
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
    let admin_auth = format!("Bearer {admin_token}");
    let logout = send(
        "DELETE",
        &format!("{admin}/admin/users/alice/sessions"),
        &[("authorization", &admin_auth)],
        String::new(),
    )
    .await;
    assert_eq!(logout.json()["revoked"], 1);
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
    ] {
        assert!(!log.contains(secret), "a secret reached the log: {secret}");
    }
}
