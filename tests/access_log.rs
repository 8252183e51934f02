//! The gateway's access log (`[log] access = true`) and W3C trace context, on real processes:
//! one JSON line per request with every field, never a token, hostile values kept to one short
//! line, the file reopened on `SIGUSR1`; `traceparent` joined or started and passed upstream.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::PathBuf;
use std::time::Duration;

use support::stack::{Options, Stack};
use support::{Reply, send};

const PARENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

async fn stack(log: &std::path::Path) -> Stack {
    Stack::start(Options {
        gateways: 1,
        gateway_extra: format!(
            "[log]\naccess = true\naccess_path = \"{}\"\n",
            log.display()
        ),
        ..Options::default()
    })
    .await
}

fn log_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tokengate-access-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("access.log");
    let _ = std::fs::remove_file(&file);
    file
}

/// The log's lines, once there are at least `n`.
async fn lines(file: &std::path::Path, n: usize) -> Vec<serde_json::Value> {
    lines_until(file, |text| text.lines().count() >= n).await
}

/// The lines of the log once its text satisfies `done` (the writer batches lines, so a line
/// can follow the answer by a few milliseconds).
async fn lines_until(
    file: &std::path::Path,
    done: impl Fn(&str) -> bool,
) -> Vec<serde_json::Value> {
    let enough = support::eventually(Duration::from_secs(5), || async {
        std::fs::read_to_string(file).is_ok_and(|t| done(&t))
    })
    .await;
    let text = std::fs::read_to_string(file).unwrap_or_default();
    assert!(enough, "the log never got what the test waits for:\n{text}");
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn echoed(reply: &Reply) -> serde_json::Value {
    reply.json()["headers"].clone()
}

#[tokio::test]
async fn every_request_gets_one_line_with_every_field_and_never_a_token() {
    let file = log_path("fields");
    let stack = stack(&file).await;
    let gw = &stack.gateways[0];
    let token = stack.login("alice").await;
    let bearer = format!("Bearer {token}");

    let ok = send(
        "GET",
        &gw.url("/api/orders?card=4111"),
        &[
            ("authorization", &bearer),
            ("traceparent", PARENT),
            ("tracestate", "congo=t61rcWkgMzE"),
            ("user-agent", "curl/8.5"),
        ],
        "hello".into(),
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    // The backend joins the caller's trace, under a span of the gateway's.
    let seen = echoed(&ok);
    let value_token = seen["authorization"].as_str().unwrap().to_owned();
    stack.secret(value_token.trim_start_matches("Bearer "));
    let traceparent = seen["traceparent"].as_str().unwrap();
    assert!(
        traceparent.starts_with(&format!("00-{PARENT_TRACE}-")),
        "{traceparent}"
    );
    assert_ne!(&traceparent[36..52], "00f067aa0ba902b7");
    assert!(traceparent.ends_with("-01"));
    assert_eq!(seen["tracestate"], "congo=t61rcWkgMzE");

    let public = send(
        "GET",
        &gw.url("/public/x"),
        &[("traceparent", "garbage")],
        String::new(),
    )
    .await;
    assert_eq!(public.status, 200);
    let started = echoed(&public)["traceparent"].as_str().unwrap().to_owned();
    assert_eq!(started.len(), 55, "{started}");
    assert!(!started.contains(PARENT_TRACE));
    assert!(echoed(&public).get("tracestate").is_none());

    let missing = send("GET", &gw.url("/api/x"), &[], String::new()).await;
    assert_eq!(missing.status, 401);
    let invalid = send(
        "GET",
        &gw.url("/api/x"),
        &[("authorization", "Bearer nope")],
        String::new(),
    )
    .await;
    assert_eq!(invalid.status, 401);
    let forbidden = send(
        "GET",
        &gw.url("/admin-only/x"),
        &[("authorization", &bearer)],
        String::new(),
    )
    .await;
    assert_eq!(forbidden.status, 403);
    let dead = send("GET", &gw.url("/dead/x"), &[], String::new()).await;
    assert_eq!(dead.status, 502);
    let nowhere = send("GET", &gw.url("/nowhere"), &[], String::new()).await;
    assert_eq!(nowhere.status, 404);

    let lines = lines(&file, 7).await;
    assert_eq!(lines.len(), 7);
    let ok_line = &lines[0];
    let session = Stack::session_id(&token);
    for (field, value) in [
        ("method", serde_json::json!("GET")),
        ("path", "/api/orders".into()),
        ("protocol", "HTTP/1.1".into()),
        ("route", "/api/".into()),
        ("status", 200.into()),
        ("upstream", stack.backend.addr.to_string().into()),
        ("bytes_in", 5.into()),
        ("session", session.clone().into()),
        ("subject", "alice".into()),
        ("client_id", "cli".into()),
        ("user_agent", "curl/8.5".into()),
        ("trace_id", PARENT_TRACE.into()),
        ("client_address", "127.0.0.1".into()),
        ("reason", serde_json::Value::Null),
    ] {
        assert_eq!(ok_line[field], value, "{field} in {ok_line}");
    }
    assert!(
        ok_line.get("query").is_none(),
        "the query is off by default"
    );
    assert_eq!(ok_line["bytes_out"].as_u64().unwrap(), ok.body.len() as u64);
    assert!(
        ok_line["duration_ms"].as_f64().unwrap()
            >= ok_line["upstream_duration_ms"].as_f64().unwrap()
    );
    assert!(ok_line["time"].as_str().unwrap().ends_with('Z'));
    assert!(!ok_line["request_id"].as_str().unwrap().is_empty());
    assert_eq!(lines[1]["trace_id"].as_str().unwrap(), &started[3..35]);
    assert_eq!(lines[1]["route"], "/public/");
    assert_eq!(lines[1]["session"], serde_json::Value::Null);
    let reasons: Vec<&str> = lines[2..]
        .iter()
        .map(|l| l["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons,
        [
            "missing_token",
            "invalid_token",
            "insufficient_scope",
            "upstream_unreachable",
            "no_route"
        ]
    );
    assert_eq!(lines[4]["subject"], "alice");
    assert_eq!(lines[6]["route"], serde_json::Value::Null);
    assert!(lines[5]["upstream"].as_str().is_some());

    let text = std::fs::read_to_string(&file).unwrap();
    for secret in stack.secrets().iter().filter(|s| s.len() >= 8) {
        assert!(
            !text.contains(secret.as_str()),
            "a secret is in the access log"
        );
    }
    assert!(!text.contains("nope"));
    stack.assert_logs_clean();
}

#[tokio::test]
async fn hostile_values_stay_one_short_line_and_the_file_is_reopened_on_sigusr1() {
    let file = log_path("hostile");
    let stack = stack(&file).await;
    let gw = &stack.gateways[0];
    let long = "x".repeat(10_000);
    let hostile = "a\"b\\c é \\n{\"forged\":true}";
    let cases = [
        ("user-agent", long.as_str()),
        ("user-agent", hostile),
        ("x-request-id", long.as_str()),
        ("x-request-id", hostile),
    ];
    for (name, value) in cases {
        let r = send(
            "GET",
            &gw.url(&format!("/public/{}", "p".repeat(5000))),
            &[(name, value)],
            String::new(),
        )
        .await;
        assert_eq!(r.status, 200, "{name}");
    }
    let lines = lines(&file, cases.len()).await;
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(text.lines().count(), cases.len(), "{text}");
    for line in text.lines() {
        assert!(line.len() < 2048, "a line of {} bytes", line.len());
    }
    for line in &lines {
        assert!(line["path"].as_str().unwrap().len() <= 256);
        assert!(line["user_agent"].as_str().unwrap_or("").len() <= 256);
        assert!(line["request_id"].as_str().unwrap().len() <= 256);
        assert!(line.get("forged").is_none());
    }
    assert!(lines.iter().any(|l| {
        l["user_agent"]
            .as_str()
            .unwrap_or("")
            .contains("{\"forged\":true}")
    }));

    // logrotate moves the file away, then signals: new lines go to a new file.
    let rotated = file.with_extension("log.1");
    std::fs::rename(&file, &rotated).unwrap();
    gw.signal("USR1");
    let reopened = support::eventually(Duration::from_secs(5), || async {
        gw.log_text().contains("access log reopened")
    })
    .await;
    assert!(reopened, "{}", gw.log_text());
    let r = send("GET", &gw.url("/public/after"), &[], String::new()).await;
    assert_eq!(r.status, 200);
    let after = self::lines(&file, 1).await;
    assert_eq!(after[0]["path"], "/public/after");
    assert_eq!(
        std::fs::read_to_string(&rotated).unwrap().lines().count(),
        cases.len()
    );
    let metrics = support::get(&gw.admin_url("/metrics")).await.body;
    assert!(
        metrics.contains("tokengate_access_log_dropped_total 0"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_client_id_with_a_line_break_cannot_forge_an_idp_log_line() {
    let file = log_path("forge");
    let stack = stack(&file).await;
    let forged = "x\r\n2026-01-01T00:00:00Z  INFO forged: admin signed in";
    let form = serde_urlencoded::to_string([
        ("grant_type", "client_credentials"),
        ("client_id", forged),
        ("client_secret", "wrong"),
    ])
    .unwrap();
    let r = support::post_form(&stack.idp.url("/oauth2/token"), &[], &form).await;
    assert_eq!(r.status, 401, "{}", r.body);
    let logged = support::eventually(Duration::from_secs(5), || async {
        stack
            .idp
            .log_text()
            .contains("client authentication failed")
    })
    .await;
    assert!(logged);
    for line in stack.idp.log_text().lines() {
        assert!(
            !line.contains("forged") || line.contains("client authentication failed"),
            "a forged line: {line}"
        );
    }
}

#[tokio::test]
async fn the_idp_logs_client_grant_and_outcome_and_never_a_secret() {
    let file = log_path("idp");
    let stack = Stack::start(Options {
        gateways: 0,
        idp_extra: format!(
            "[log]\naccess = true\naccess_path = \"{}\"\naccess_query = true\n",
            file.display()
        ),
        ..Options::default()
    })
    .await;
    let token = stack.login("alice").await;
    let wrong = support::post_form(
        &stack.idp.url("/oauth2/token"),
        &[],
        "grant_type=password&client_id=cli&username=alice&password=not-hers",
    )
    .await;
    assert_eq!(wrong.status, 400, "{}", wrong.body);
    let hostile = format!("x\r\n\u{1b}[31m{}", "y".repeat(10 * 1024));
    let form = serde_urlencoded::to_string([
        ("grant_type", "client_credentials"),
        ("client_id", hostile.as_str()),
        ("client_secret", "wrong-secret"),
    ])
    .unwrap();
    let r = support::post_form(&stack.idp.url("/oauth2/token"), &[], &form).await;
    assert_eq!(r.status, 401, "{}", r.body);
    let code_query = "/oauth2/authorize?client_id=cli&code_challenge=c&state=secret-state";
    support::get(&stack.idp.url(code_query)).await;

    // The authorize request came last: its line, and the three before it, are there once it is.
    let lines = lines_until(&file, |text| {
        text.contains("\"/oauth2/authorize\"") && text.lines().count() >= 4
    })
    .await;
    let token_lines: Vec<_> = lines
        .iter()
        .filter(|l| l["route"] == "/oauth2/token")
        .collect();
    assert_eq!(token_lines.len(), 3, "{lines:?}");
    let (ok, refused, unknown) = (token_lines[0], token_lines[1], token_lines[2]);
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["client_id"], "cli");
    assert_eq!(ok["grant"], "password");
    assert_eq!(ok["subject"], "alice");
    assert_eq!(ok["outcome"], "ok");
    assert_eq!(ok["method"], "POST");
    assert!(ok["duration_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(refused["outcome"], "invalid_grant");
    assert_eq!(refused["subject"], "alice");
    assert_eq!(unknown["outcome"], "invalid_client");
    assert_eq!(unknown["grant"], "client_credentials");
    let shown = unknown["client_id"].as_str().unwrap();
    assert!(
        shown.starts_with("x\r\n\u{1b}[31m") && shown.len() <= 256,
        "{shown:?}"
    );
    let authorize = lines
        .iter()
        .find(|l| l["path"] == "/oauth2/authorize")
        .unwrap();
    assert_eq!(authorize["query"], "client_id=cli&code_challenge=c&state=-");

    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(text.lines().count(), lines.len());
    assert!(text.lines().all(|l| l.len() < 4096), "a line is too long");
    for secret in [
        token.as_str(),
        support::PASSWORD,
        "not-hers",
        "wrong-secret",
        "secret-state",
    ] {
        assert!(!text.contains(secret), "{secret} is in the access log");
    }
}
