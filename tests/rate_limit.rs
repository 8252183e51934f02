//! Per-route rate limits at the gateway, on real processes: exact counts per subject, the
//! draft `RateLimit` headers, address limits that refuse before any token lookup, and limiter
//! state that survives a reload.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use support::send;
use support::stack::{Options, Stack};

async fn stack() -> Stack {
    let routes = r#"
[[routes]]
path_prefix = "/limited/"
upstream = "{backend}"
rate_limit = { rate = "1/s", burst = 5, per = "subject" }
rate_limit_headers = true
[[routes]]
path_prefix = "/by-address/"
upstream = "{backend}"
rate_limit = { rate = "2/m", per = "client_address" }
[[routes]]
path_prefix = "/by-client/"
upstream = "{backend}"
rate_limit = { rate = "1/h", burst = 2, per = "client" }
"#;
    Stack::start(Options {
        gateways: 1,
        gateway_extra: routes.to_owned(),
        ..Options::default()
    })
    .await
}

#[tokio::test]
async fn a_subject_gets_exactly_its_burst_and_others_are_not_affected() {
    let stack = stack().await;
    let gw = &stack.gateways[0];
    let alice = format!("Bearer {}", stack.login("alice").await);
    let bob = format!("Bearer {}", stack.login("bob").await);
    let url = gw.url("/limited/x");
    // One token a second after a burst of five: the twenty below arrive well within a second
    // of each other, so exactly five pass whatever the machine's load.
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (url, alice) = (url.clone(), alice.clone());
            tokio::spawn(async move {
                send("GET", &url, &[("authorization", &alice)], String::new()).await
            })
        })
        .collect();
    let mut replies = Vec::new();
    for t in tasks {
        replies.push(t.await.unwrap());
    }
    let passed = replies.iter().filter(|r| r.status == 200).count();
    let limited: Vec<_> = replies.iter().filter(|r| r.status == 429).collect();
    assert_eq!(
        passed,
        5,
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert_eq!(limited.len(), 15);
    for r in &limited {
        assert_eq!(r.json()["error"], "rate_limited");
        let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert_eq!(retry, 1);
        assert_eq!(r.header("ratelimit-policy"), Some("\"subject\";q=5;w=5"));
        assert_eq!(
            r.header("ratelimit"),
            Some(format!("\"subject\";r=0;t={retry}").as_str())
        );
    }
    // Allowed answers carry the state too (rate_limit_headers = true).
    let ok = replies.iter().find(|r| r.status == 200).unwrap();
    assert_eq!(ok.header("ratelimit-policy"), Some("\"subject\";q=5;w=5"));
    assert!(
        ok.header("ratelimit")
            .unwrap()
            .starts_with("\"subject\";r=")
    );

    // Another subject has a bucket of its own.
    let other = send("GET", &url, &[("authorization", &bob)], String::new()).await;
    assert_eq!(other.status, 200);
    // The bucket refills at the rate: one more passes within a second or so.
    let refilled = support::eventually(Duration::from_secs(3), || async {
        send("GET", &url, &[("authorization", &alice)], String::new())
            .await
            .status
            == 200
    })
    .await;
    assert!(refilled);
    let metrics = support::get(&gw.admin_url("/metrics")).await.body;
    let line = "tokengate_rate_limited_total{route=\"/limited/\",per=\"subject\"}";
    let counted: f64 = metrics
        .lines()
        .find(|l| l.starts_with(line))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("{line} missing:\n{metrics}"));
    assert!(counted >= 15.0, "{counted}");
}

#[tokio::test]
async fn an_address_limit_refuses_before_any_token_lookup_and_survives_a_reload() {
    let stack = stack().await;
    let gw = &stack.gateways[0];
    let token = format!("Bearer {}", stack.login("alice").await);
    let url = gw.url("/by-address/x");
    for _ in 0..2 {
        let r = send("GET", &url, &[("authorization", &token)], String::new()).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    // Over the limit, even an unknown token gets 429, not 401: no lookup was made.
    let misses = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("tokengate_cache_misses_total"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap()
    };
    let before = misses(&support::get(&gw.admin_url("/metrics")).await.body);
    for _ in 0..5 {
        let r = send(
            "GET",
            &url,
            &[("authorization", "Bearer never-issued-token")],
            String::new(),
        )
        .await;
        assert_eq!(r.status, 429, "{}", r.body);
        assert_eq!(
            r.header("ratelimit-policy"),
            Some("\"client_address\";q=2;w=60")
        );
    }
    let after = misses(&support::get(&gw.admin_url("/metrics")).await.body);
    assert_eq!(before, after, "a limited request looked its token up");

    // A reload that leaves this route's limit as it is keeps its state.
    let path = stack.gateway_config_path(0);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        format!(
            "{text}\n[[routes]]\npath_prefix = \"/other/\"\nupstream = \"{}\"\nauth = false\n",
            stack.backend.url()
        ),
    )
    .unwrap();
    gw.signal("HUP");
    let reloaded = support::eventually(Duration::from_secs(5), || async {
        support::stack::try_get(&gw.url("/other/x")).await == Some(200)
    })
    .await;
    assert!(reloaded, "{}", gw.log_text());
    let r = send("GET", &url, &[("authorization", &token)], String::new()).await;
    assert_eq!(r.status, 429, "the limit forgot its state on reload");
}

#[tokio::test]
async fn every_user_of_one_client_shares_its_bucket() {
    let stack = stack().await;
    let gw = &stack.gateways[0];
    // Both signed in through the `cli` client (the password grant).
    let alice = format!("Bearer {}", stack.login("alice").await);
    let bob = format!("Bearer {}", stack.login("bob").await);
    let url = gw.url("/by-client/x");
    let status = |auth: String| {
        let url = url.clone();
        async move {
            send("GET", &url, &[("authorization", &auth)], String::new())
                .await
                .status
        }
    };
    assert_eq!(status(alice.clone()).await, 200);
    assert_eq!(status(bob.clone()).await, 200);
    assert_eq!(status(alice).await, 429);
    assert_eq!(status(bob).await, 429);
}

/// A GET from a source address of our choosing on the loopback range (127.0.0.2, ...).
async fn get_from(source: [u8; 4], gateway: std::net::SocketAddr, path: &str, token: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind((std::net::Ipv4Addr::from(source), 0).into())
        .unwrap();
    let mut stream = socket.connect(gateway).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nhost: gw\r\nauthorization: Bearer {token}\r\nconnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let head = String::from_utf8_lossy(&response);
    head.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn guessing_tokens_from_one_address_is_braked_and_others_are_not() {
    // The brake is on by default: 20 invalid tokens a second, bursts of 50, per address.
    let stack = Stack::start(Options {
        gateways: 1,
        ..Options::default()
    })
    .await;
    let gw = &stack.gateways[0];
    let token = stack.login("alice").await;
    let misses = || async {
        let text = support::get(&gw.admin_url("/metrics")).await.body;
        text.lines()
            .find(|l| l.starts_with("tokengate_cache_misses_total"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap()
    };
    let before = misses().await;
    let mut statuses = std::collections::BTreeMap::new();
    let started = std::time::Instant::now();
    for _ in 0..200 {
        let guess = tokengate_store::ReferenceToken::generate();
        let status = get_from([127, 0, 0, 1], gw.public, "/api/x", guess.expose()).await;
        *statuses.entry(status).or_insert(0) += 1;
    }
    // The same address with a good token waits too, right after its guesses (at 20 a second,
    // a pause of 50 ms is slowing down: so this comes before anything slower, like reading
    // the metrics); another address does not.
    assert_eq!(
        get_from([127, 0, 0, 1], gw.public, "/api/x", &token).await,
        429
    );
    // The burst, and what 20 a second refilled while the guesses went on (a slow machine takes
    // longer over them, and is allowed more).
    let elapsed = started.elapsed().as_secs_f64();
    let unauthorized = statuses.get(&401).copied().unwrap_or(0);
    let braked = statuses.get(&429).copied().unwrap_or(0);
    assert_eq!(unauthorized + braked, 200, "{statuses:?}");
    let allowed = 50.0 + 20.0 * elapsed + 1.0;
    assert!(
        unauthorized >= 50 && f64::from(unauthorized) <= allowed,
        "{statuses:?} in {elapsed:.2} s (at most {allowed:.0} allowed)"
    );
    // Past the allowance, guesses never reach the store: a lookup for each 401, none for a 429.
    let looked_up = misses().await - before;
    assert!(
        looked_up <= f64::from(unauthorized),
        "{looked_up} store lookups for {unauthorized} guesses answered 401 and {braked} braked"
    );
    assert_eq!(
        get_from([127, 0, 0, 2], gw.public, "/api/x", &token).await,
        200
    );
    assert_eq!(
        get_from([127, 0, 0, 2], gw.public, "/api/x", "wrong").await,
        401
    );
}
