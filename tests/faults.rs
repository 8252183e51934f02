//! Faults on purpose, with real processes under load: Redis, the IdP and gateways killed,
//! stopped, cut off and restarted. Each test ends by checking that no secret reached any log
//! (every process runs with `RUST_LOG=debug`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use support::eventually;
use support::stack::{Load, Options, Stack};

/// Long enough for a reconnecting process on a loaded 2-core machine; far below `max_staleness`
/// (60 s), so passing within it proves the event path, not expiry.
const CATCH_UP: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_under_load_cached_tokens_keep_working_and_everything_recovers() {
    let mut stack = Stack::start(Options {
        persistent_redis: true,
        ..Options::default()
    })
    .await;
    let hot = stack.login("alice").await;
    let cold = stack.login("bob").await;
    for gw in 0..2 {
        assert_eq!(stack.get(gw, "/api/warm", Some(&hot)).await.status, 200);
    }
    let urls: Vec<String> = stack.gateways.iter().map(|g| g.url("/api/load")).collect();
    let load = Load::start(&urls, Some(&hot), 3);

    stack.redis.kill();
    // A token no gateway has seen cannot be checked: 503, never 401 (it may be fine).
    for gw in 0..2 {
        let r = stack.get(gw, "/api/cold", Some(&cold)).await;
        assert_eq!(r.status, 503, "{}", r.body);
    }
    assert_eq!(stack.try_login("carol").await.status, 503);

    stack.redis.restart();
    // No process restarted: the uncached token and new logins work again by themselves.
    assert!(
        eventually(CATCH_UP, || async {
            stack.get(0, "/api/cold", Some(&cold)).await.status == 200
        })
        .await,
        "the uncached token never worked again after Redis came back"
    );
    assert!(
        eventually(CATCH_UP, || async {
            stack.try_login("carol").await.status == 200
        })
        .await,
        "logins never worked again"
    );
    let fresh = stack.login("carol").await;
    assert_eq!(stack.get(1, "/api/fresh", Some(&fresh)).await.status, 200);

    let tally = load.stop_after(20).await;
    assert!(
        tally.total() >= 20,
        "too little load to mean anything: {tally:?}"
    );
    assert_eq!(
        tally.count(Some(200)),
        tally.total(),
        "a cached token failed while Redis was down: {tally:?}"
    );

    // The event stream works again too: a revocation reaches both gateways.
    let sid = Stack::session_id(&hot);
    assert_eq!(
        stack
            .admin("DELETE", &format!("/admin/sessions/{sid}"), None)
            .await
            .status,
        200
    );
    for gw in 0..2 {
        assert!(
            eventually(CATCH_UP, || async {
                stack.get(gw, "/api/after", Some(&hot)).await.status == 401
            })
            .await,
            "gateway{gw} kept a session revoked after Redis came back"
        );
    }
    stack.assert_logs_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_issued_while_a_gateway_is_cut_off_are_applied_when_it_reconnects() {
    let stack = Stack::start(Options::default()).await;
    let mut tokens = Vec::new();
    for user in ["alice", "alice", "bob", "bob", "carol"] {
        tokens.push(stack.login(user).await);
    }
    for t in &tokens {
        for gw in 0..2 {
            assert_eq!(stack.get(gw, "/api/warm", Some(t)).await.status, 200);
        }
    }
    // gateway0 is frozen, and its Redis connections are killed while it cannot notice.
    stack.gateways[0].signal("STOP");
    let logout = stack
        .admin("DELETE", "/admin/users/alice/sessions", None)
        .await;
    assert_eq!(logout.status, 200, "{}", logout.body);
    let sid = Stack::session_id(&tokens[2]);
    let revoke = stack
        .admin("DELETE", &format!("/admin/sessions/{sid}"), None)
        .await;
    assert_eq!(revoke.status, 200, "{}", revoke.body);
    stack
        .redis
        .query(&["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"])
        .unwrap();
    // The gateway that stayed connected applies them at once.
    for t in &tokens[..3] {
        assert!(
            eventually(CATCH_UP, || async {
                stack.get(1, "/api/x", Some(t)).await.status == 401
            })
            .await
        );
    }
    stack.gateways[0].signal("CONT");
    for t in &tokens[..3] {
        assert!(
            eventually(CATCH_UP, || async {
                stack.get(0, "/api/x", Some(t)).await.status == 401
            })
            .await,
            "a revocation issued while gateway0 was cut off was lost"
        );
    }
    for t in &tokens[3..] {
        assert_eq!(stack.get(0, "/api/x", Some(t)).await.status, 200);
    }
    stack.assert_logs_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_whose_events_were_trimmed_away_drops_its_cache() {
    let stack = Stack::start(Options::default()).await;
    let revoked = stack.login("alice").await;
    let other = stack.login("bob").await;
    let kept = stack.login("carol").await;
    for t in [&revoked, &other, &kept] {
        assert_eq!(stack.get(0, "/api/warm", Some(t)).await.status, 200);
    }
    // gateway0 is frozen and loses its connections, so no event can reach it early (a read
    // blocked in Redis would otherwise be answered into its socket).
    stack.gateways[0].signal("STOP");
    stack
        .redis
        .query(&["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"])
        .unwrap();
    for t in [&revoked, &other] {
        let path = format!("/admin/sessions/{}", Stack::session_id(t));
        assert!(
            eventually(CATCH_UP, || async {
                stack.admin("DELETE", &path, None).await.status == 200
            })
            .await
        );
        // The first revocation's event is trimmed away before gateway0 can read it.
        stack
            .redis
            .query(&["XTRIM", "tg:{events}", "MAXLEN", "0"])
            .unwrap();
    }
    stack.gateways[0].signal("CONT");
    assert!(
        eventually(CATCH_UP, || async {
            stack.get(0, "/api/x", Some(&revoked)).await.status == 401
        })
        .await,
        "a revoked token was served after its event was trimmed away"
    );
    assert_eq!(stack.get(0, "/api/x", Some(&kept)).await.status, 200);
    let metrics = support::send(
        "GET",
        &stack.gateways[0].admin_url("/metrics"),
        &[],
        String::new(),
    )
    .await;
    assert!(
        metrics
            .body
            .lines()
            .any(|l| l.starts_with("tokengate_cache_drops_total ") && !l.ends_with(" 0")),
        "{}",
        metrics.body
    );
    stack.assert_logs_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_keep_serving_cached_and_stored_tokens_while_the_idp_is_down() {
    let mut stack = Stack::start(Options::default()).await;
    let cached = stack.login("alice").await;
    let stored = stack.login("bob").await;
    assert_eq!(stack.get(0, "/api/warm", Some(&cached)).await.status, 200);
    let load = Load::start(&[stack.gateways[0].url("/api/load")], Some(&cached), 3);
    stack.idp.kill();
    // Never seen by a gateway: read from Redis and verified with the keys fetched earlier.
    for gw in 0..2 {
        assert_eq!(
            stack.get(gw, "/api/stored", Some(&stored)).await.status,
            200
        );
    }
    assert_eq!(stack.get(1, "/api/cached", Some(&cached)).await.status, 200);
    let tally = load.stop_after(20).await;
    assert!(tally.total() >= 20, "{tally:?}");
    assert_eq!(tally.count(Some(200)), tally.total(), "{tally:?}");
    stack.idp.restart().await;
    stack.login("carol").await;
    stack.assert_logs_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_load_finishes_requests_writes_last_use_and_exits_zero() {
    // Last use is reported only at the final flush: the sync interval outlasts the test.
    let mut stack = Stack::start(Options {
        gateways: 1,
        sync_interval: "1h",
        ..Options::default()
    })
    .await;
    let mut tokens = Vec::new();
    for user in ["alice", "bob", "carol"] {
        tokens.push(stack.login(user).await);
    }
    let before = last_used(&stack, "carol").await;
    // Times are whole seconds: let one pass so a reported use shows.
    assert!(
        eventually(Duration::from_secs(3), || async {
            tokengate_store::now_unix() > before
        })
        .await
    );
    // Slow requests (400 ms at the backend) are under way when SIGTERM arrives.
    let mut requests = Vec::new();
    for t in &tokens {
        for _ in 0..3 {
            let url = stack.gateways[0].url("/api/slow");
            let auth = format!("Bearer {t}");
            requests.push(tokio::spawn(async move {
                support::send("GET", &url, &[("authorization", &auth)], String::new())
                    .await
                    .status
            }));
        }
    }
    let in_flight = stack.backend.in_flight.clone();
    assert!(
        eventually(Duration::from_secs(10), || async {
            in_flight.load(std::sync::atomic::Ordering::SeqCst) == 9
        })
        .await,
        "the requests never reached the backend"
    );
    stack.gateways[0].signal("TERM");
    for r in requests {
        assert_eq!(
            r.await.unwrap(),
            200,
            "an in-flight request failed on SIGTERM"
        );
    }
    let status = stack.gateways[0].wait_exit(Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0), "{status}");
    // The pending last-use reports were written on the way out.
    let after = last_used(&stack, "carol").await;
    assert!(after > before, "the uses before SIGTERM were not reported");
    stack.assert_logs_clean();
}

/// The newest `last_used_at` of the user's sessions, as the admin API lists them.
async fn last_used(stack: &Stack, user: &str) -> u64 {
    let list = stack
        .admin("GET", &format!("/admin/users/{user}/sessions"), None)
        .await;
    assert_eq!(list.status, 200, "{}", list.body);
    list.json()["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["last_used_at"].as_u64())
        .max()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_or_dead_upstream_costs_its_route_only() {
    let stack = Stack::start(Options {
        gateways: 1,
        ..Options::default()
    })
    .await;
    let token = stack.login("alice").await;
    let load = Load::start(&[stack.gateways[0].url("/api/load")], Some(&token), 2);
    let started = std::time::Instant::now();
    let (silent, dead) = tokio::join!(
        stack.get(0, "/silent/x", None),
        stack.get(0, "/dead/x", None),
    );
    assert_eq!(silent.status, 504, "{}", silent.body);
    assert_eq!(dead.status, 502, "{}", dead.body);
    // upstream_timeout and connect_timeout are 1 s in this stack.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let tally = load.stop_after(10).await;
    assert!(tally.total() >= 10, "{tally:?}");
    assert_eq!(tally.count(Some(200)), tally.total(), "{tally:?}");
    stack.assert_logs_clean();
}

#[tokio::test]
async fn a_graceful_idp_stop_gives_the_renewal_lease_up_at_once() {
    let mut stack = Stack::start(Options {
        gateways: 1,
        ..Options::default()
    })
    .await;
    let lease = "tg:{renewal}:lease";
    let held = |stack: &Stack| stack.redis.dump().contains(lease);
    // The IdP's renewal task takes the lease at its first round.
    assert!(
        eventually(Duration::from_secs(10), || async { held(&stack) }).await,
        "the IdP never took the renewal lease"
    );
    stack.idp.signal("TERM");
    let status = stack.idp.wait_exit(Duration::from_secs(15)).await;
    assert!(status.success(), "{status}: {}", stack.idp.log_text());
    // Gone right after the stop: a restarted or other IdP renews at once, not when it runs out.
    assert!(!held(&stack), "the lease outlived the IdP that held it");
    assert!(stack.idp.log_text().contains("renewal lease released"));
}

/// A session in use through a gateway every 250 ms, with `value_token_ttl = "30s"`, while the IdP
/// is stopped gracefully and started again, then while its TTL is changed by reload: not one
/// request fails, and the restarted IdP renews the session's value token before it expires.
#[tokio::test]
async fn renewal_leaves_no_gap_across_a_restart_and_a_ttl_reload() {
    let mut stack = Stack::start(Options {
        gateways: 1,
        idp_extra: "value_token_ttl = \"30s\"".into(),
        ..Options::default()
    })
    .await;
    let token = stack.login("alice").await;
    let started = std::time::Instant::now();
    let mut statuses = std::collections::BTreeMap::<u16, u32>::new();
    let mut use_for = async |stack: &Stack, until: Duration| {
        while started.elapsed() < until {
            let status = stack.get(0, "/api/in-use", Some(&token)).await.status;
            *statuses.entry(status).or_default() += 1;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };
    use_for(&stack, Duration::from_secs(3)).await;
    stack.idp.signal("TERM");
    let status = stack.idp.wait_exit(Duration::from_secs(15)).await;
    assert!(status.success(), "{status}: {}", stack.idp.log_text());
    stack.idp.restart().await;
    use_for(&stack, Duration::from_secs(6)).await;

    let path = stack.dir().join("idp.toml");
    let config = std::fs::read_to_string(&path).unwrap();
    let longer = config.replace("value_token_ttl = \"30s\"", "value_token_ttl = \"40s\"");
    assert_ne!(longer, config);
    std::fs::write(&path, longer).unwrap();
    let r = stack.admin("POST", "/admin/reload", None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["changed"], serde_json::json!(["tokens"]));
    // Past half of the first token's 30 s: the restarted IdP must have renewed it by now.
    use_for(&stack, Duration::from_secs(20)).await;

    assert_eq!(statuses.keys().collect::<Vec<_>>(), [&200], "{statuses:?}");
    let metrics = support::get(&stack.idp.admin_url("/metrics")).await.body;
    let resigned = metrics
        .lines()
        .find(|l| l.starts_with("tokengate_idp_value_tokens_resigned_total"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(resigned >= 1.0, "no value token renewed:\n{metrics}");
    stack.assert_logs_clean();
}
