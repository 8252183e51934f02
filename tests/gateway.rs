//! The gateway end to end: Redis, the IdP, two gateways and an echo backend, on real sockets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use support::*;
use tokengate_idp::keys::{KeySet, SigningKey};
use tokengate_store::Verifier;

struct World {
    redis: TestRedis,
    idp: TestIdp,
    backend: EchoBackend,
}

async fn world() -> World {
    let redis = TestRedis::start();
    let idp = TestIdp::spawn(idp_config(&redis.url())).await;
    let backend = EchoBackend::start().await;
    World {
        redis,
        idp,
        backend,
    }
}

impl World {
    async fn gateway(&self) -> TestGateway {
        TestGateway::spawn(gateway_config(
            &self.redis.url(),
            &self.idp,
            &self.backend.url(),
        ))
        .await
    }
}

#[tokio::test]
async fn a_valid_token_reaches_the_backend_as_a_verified_value_token_with_role_headers() {
    let w = world().await;
    let gw = w.gateway().await;
    let token = w.idp.login("alice").await;
    let auth = format!("Bearer {token}");
    let r = gw
        .get(
            "/api/orders?x=1",
            &[
                ("authorization", &auth),
                ("x-auth-subject", "mallory"),
                ("X-Auth-Roles", "admin"),
                ("x-auth-extra", "1"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = r.json();
    assert_eq!(seen["path"], "/api/orders");
    let h = &seen["headers"];
    // The upstream is addressed as itself; the client's host travels in X-Forwarded-Host.
    assert_eq!(h["host"], w.backend.addr.to_string());
    assert_eq!(h["x-forwarded-host"], gw.public.to_string());
    assert_eq!(
        h["x-auth-subject"], "alice",
        "spoofed identity must be replaced"
    );
    assert_eq!(h["x-auth-roles"], "orders:read");
    assert!(
        h.get("x-auth-extra").is_none(),
        "client X-Auth-* headers are stripped"
    );
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    let value = h["authorization"]
        .as_str()
        .unwrap()
        .strip_prefix("Bearer ")
        .unwrap();
    assert_ne!(value, token);
    let jwks = send(
        "GET",
        &w.idp.url("/.well-known/jwks.json"),
        &[],
        String::new(),
    )
    .await;
    let claims = Verifier::new(&serde_json::from_str(&jwks.body).unwrap(), &w.idp.url(""))
        .verify(value)
        .unwrap();
    assert_eq!(claims.sub, "alice");
    assert_eq!(h["x-auth-session"], claims.sid.as_str());
}

#[tokio::test]
async fn errors_answer_as_the_contract_says() {
    let w = world().await;
    let gw = w.gateway().await;
    let token = w.idp.login("alice").await;

    let none = gw.get("/api/x", &[]).await;
    assert_eq!(none.status, 401);
    assert_eq!(
        none.header("www-authenticate"),
        Some(r#"Bearer realm="tokengate""#)
    );
    for bad in [
        "Bearer garbage",
        "Basic YTpi",
        "Bearer ",
        &format!("Bearer {}", "A".repeat(43)),
    ] {
        let r = gw.get("/api/x", &[("authorization", bad)]).await;
        assert_eq!(r.status, 401, "{bad}");
        assert!(
            r.header("www-authenticate")
                .unwrap()
                .contains(r#"error="invalid_token""#)
        );
    }
    let twice = format!("Bearer {token}");
    let r = gw
        .get(
            "/api/x",
            &[("authorization", &twice), ("authorization", &twice)],
        )
        .await;
    assert_eq!(r.status, 401, "several Authorization headers are refused");

    let forbidden = gw.get_with_token("/admin-only/x", &token).await;
    assert_eq!(forbidden.status, 403);
    assert!(
        forbidden
            .header("www-authenticate")
            .unwrap()
            .contains("insufficient_scope")
    );
    assert_eq!(gw.get("/nowhere", &[]).await.status, 404);
    assert_eq!(gw.get("/dead/x", &[]).await.status, 502);

    let public = gw.get("/public/x", &[("x-auth-subject", "mallory")]).await;
    assert_eq!(public.status, 200);
    assert!(public.json()["headers"].get("x-auth-subject").is_none());
}

#[tokio::test]
async fn forced_logout_and_role_change_reach_both_gateways() {
    let w = world().await;
    let (a, b) = (w.gateway().await, w.gateway().await);
    let token = w.idp.login("alice").await;
    for gw in [&a, &b] {
        assert_eq!(gw.get_with_token("/api/x", &token).await.status, 200);
    }
    let r = w
        .idp
        .admin(
            "PUT",
            "/admin/users/alice/roles",
            Some(r#"{"roles": ["orders:read", "admin"]}"#),
        )
        .await;
    assert_eq!(r.status, 200);
    for gw in [&a, &b] {
        let ok = eventually(Duration::from_secs(5), || async {
            gw.get_with_token("/admin-only/x", &token).await.status == 200
        })
        .await;
        assert!(ok, "role change not applied by a gateway");
    }
    w.idp
        .admin("DELETE", "/admin/users/alice/sessions", None)
        .await;
    for gw in [&a, &b] {
        let ok = eventually(Duration::from_secs(5), || async {
            gw.get_with_token("/api/x", &token).await.status == 401
        })
        .await;
        assert!(ok, "forced logout not applied by a gateway");
    }
}

#[tokio::test]
async fn last_use_is_reported_to_the_store() {
    let w = world().await;
    let gw = w.gateway().await;
    let token = w.idp.login("alice").await;
    let before = w
        .idp
        .admin("GET", "/admin/users/alice/sessions", None)
        .await
        .json()["sessions"][0]["last_used_at"]
        .as_u64()
        .unwrap();
    // Last use is kept in whole seconds: wait for the clock to move on, then use the token.
    let moved = eventually(Duration::from_secs(3), || async {
        tokengate_store::now_unix() > before
    })
    .await;
    assert!(moved);
    assert_eq!(gw.get_with_token("/api/x", &token).await.status, 200);
    let reported = eventually(Duration::from_secs(5), || async {
        let s = w
            .idp
            .admin("GET", "/admin/users/alice/sessions", None)
            .await
            .json();
        s["sessions"][0]["last_used_at"].as_u64().unwrap() > before
    })
    .await;
    assert!(reported, "the sessions listing never showed the use");
}

#[tokio::test]
async fn cached_tokens_cost_redis_nothing_per_request() {
    let w = world().await;
    let gw = w.gateway().await;
    let token = w.idp.login("alice").await;
    assert_eq!(gw.get_with_token("/api/x", &token).await.status, 200);
    let commands = || -> u64 {
        let info: String =
            redis::from_redis_value(w.redis.query(&["INFO", "commandstats"]).unwrap()).unwrap();
        info.lines()
            .filter_map(|l| l.split("calls=").nth(1))
            .filter_map(|rest| rest.split(',').next()?.parse::<u64>().ok())
            .sum()
    };
    let before = commands();
    for _ in 0..1000 {
        assert_eq!(gw.get_with_token("/api/x", &token).await.status, 200);
    }
    let used = commands() - before;
    // The background sync reads events and reports last use on its own schedule; the requests
    // themselves add nothing. A generous bound still tells "constant" from "one per request".
    assert!(used < 200, "{used} Redis commands for 1000 cached requests");
}

#[tokio::test]
async fn with_the_cache_off_every_request_reads_the_store() {
    let w = world().await;
    let mut config = gateway_config(&w.redis.url(), &w.idp, &w.backend.url());
    config.cache.enabled = false;
    let gw = TestGateway::spawn(config).await;
    let token = w.idp.login("alice").await;
    let reads = || -> u64 {
        let info: String =
            redis::from_redis_value(w.redis.query(&["INFO", "commandstats"]).unwrap()).unwrap();
        info.lines()
            .find(|l| l.starts_with("cmdstat_hgetall:"))
            .and_then(|l| l.split("calls=").nth(1)?.split(',').next()?.parse().ok())
            .unwrap_or(0)
    };
    let before = reads();
    for _ in 0..5 {
        assert_eq!(gw.get_with_token("/api/x", &token).await.status, 200);
    }
    assert_eq!(reads() - before, 5);
    // A revocation needs no event to take effect.
    let sid = w
        .idp
        .verify(&token)
        .await
        .header("x-auth-session")
        .unwrap()
        .to_owned();
    w.idp
        .admin("DELETE", &format!("/admin/sessions/{sid}"), None)
        .await;
    assert_eq!(gw.get_with_token("/api/x", &token).await.status, 401);
}

#[tokio::test]
async fn cached_tokens_survive_redis_going_down_and_uncached_ones_get_503() {
    let mut w = world().await;
    let gw = w.gateway().await;
    let cached = w.idp.login("alice").await;
    let uncached = w.idp.login("bob").await;
    assert_eq!(gw.get_with_token("/api/x", &cached).await.status, 200);
    w.redis.kill();
    assert_eq!(gw.get_with_token("/api/x", &cached).await.status, 200);
    assert_eq!(
        gw.get_with_token("/api/x", &uncached).await.status,
        503,
        "never 401 when the store is down"
    );
}

#[test]
fn the_example_gateway_config_loads() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/gateway.toml");
    tokengate_gateway::config::GatewayConfig::load(&path).expect("config/gateway.toml is valid");
}

#[tokio::test]
async fn a_revocation_issued_while_the_gateway_is_cut_off_is_applied_after_it_reconnects() {
    let w = world().await;
    let gw = w.gateway().await;
    let token = w.idp.login("alice").await;
    assert_eq!(gw.get_with_token("/api/x", &token).await.status, 200);
    // Cut every client off (the gateway's blocking reader included), then revoke.
    w.redis
        .query(&["CLIENT", "KILL", "TYPE", "normal"])
        .unwrap();
    let revoked = eventually(Duration::from_secs(5), || async {
        w.idp
            .admin("DELETE", "/admin/users/alice/sessions", None)
            .await
            .status
            == 200
    })
    .await;
    assert!(revoked, "the IdP could not revoke after reconnecting");
    let applied = eventually(Duration::from_secs(5), || async {
        gw.get_with_token("/api/x", &token).await.status == 401
    })
    .await;
    assert!(applied, "the revocation never reached the gateway");
}

#[tokio::test]
async fn a_new_signing_key_is_fetched_when_a_token_names_it() {
    let redis = TestRedis::start();
    let backend = EchoBackend::start().await;
    let (dir, files) = key_files(
        "gw-keys",
        &[
            tokengate_idp::keys::SigningKey::generate_ed25519_pem().unwrap(),
            tokengate_idp::keys::SigningKey::generate_ed25519_pem().unwrap(),
        ],
    );
    let (old, new) = (files[0].clone(), files[1].clone());
    let config = |listen: std::net::SocketAddr, keys: Vec<std::path::PathBuf>| {
        let mut c = idp_config(&redis.url());
        c.server.listen = listen;
        c.tokens.signing_keys = keys;
        let keys = tokengate_idp::keys::KeySet::load(&c.signing_key_paths()).unwrap();
        (c, keys)
    };
    let (c, keys) = config("127.0.0.1:0".parse().unwrap(), vec![old.clone()]);
    let first = TestIdp::spawn_with_keys(c, keys).await;
    let gw = TestGateway::spawn(gateway_config(&redis.url(), &first, &backend.url())).await;
    let before = first.login("alice").await;
    assert_eq!(gw.get_with_token("/api/x", &before).await.status, 200);

    // The IdP restarts on the same address with a new key first.
    let addr = first.public;
    drop(first);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::net::TcpListener::bind(addr).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the IdP's port never came free"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (c, keys) = config(addr, vec![new.clone(), old.clone()]);
    let second = TestIdp::spawn_with_keys(c, keys).await;
    let after = second.login("alice").await;
    assert_eq!(
        gw.get_with_token("/api/x", &after).await.status,
        200,
        "unknown kid must trigger a key refresh"
    );
    assert_eq!(gw.get_with_token("/api/x", &before).await.status, 200);
    let _ = std::fs::remove_dir_all(&dir);
}

fn command_calls(redis: &TestRedis, command: &str) -> u64 {
    let info: String =
        redis::from_redis_value(redis.query(&["INFO", "commandstats"]).unwrap()).unwrap();
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(&prefix)?.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn concurrent_misses_of_one_token_read_the_store_once() {
    let w = world().await;
    let gw = std::sync::Arc::new(w.gateway().await);
    let token = w.idp.login("alice").await;
    let before = command_calls(&w.redis, "hgetall");
    let requests: Vec<_> = (0..50)
        .map(|_| {
            let (gw, token) = (gw.clone(), token.clone());
            tokio::spawn(async move { gw.get_with_token("/api/x", &token).await.status })
        })
        .collect();
    for r in requests {
        assert_eq!(r.await.unwrap(), 200);
    }
    let reads = command_calls(&w.redis, "hgetall") - before;
    assert!(reads <= 2, "{reads} store reads for one token");
    // Garbage tokens are remembered as unknown: a flood of one costs one read.
    let garbage = "A".repeat(43);
    let before = command_calls(&w.redis, "hgetall");
    for _ in 0..20 {
        assert_eq!(gw.get_with_token("/api/x", &garbage).await.status, 401);
    }
    assert_eq!(command_calls(&w.redis, "hgetall") - before, 1);
}

#[tokio::test]
async fn a_graceful_stop_writes_pending_last_use_reports() {
    let w = world().await;
    let mut config = gateway_config(&w.redis.url(), &w.idp, &w.backend.url());
    config.sync.interval = Duration::from_secs(3600); // only the stop itself reports
    let gw = TestGateway::spawn(config).await;
    let token = w.idp.login("alice").await;
    let listing = || async {
        w.idp
            .admin("GET", "/admin/users/alice/sessions", None)
            .await
            .json()
    };
    let before = listing().await["sessions"][0]["last_used_at"]
        .as_u64()
        .unwrap();
    assert!(
        eventually(Duration::from_secs(3), || async {
            tokengate_store::now_unix() > before
        })
        .await
    );
    assert_eq!(gw.get_with_token("/api/x", &token).await.status, 200);
    gw.stop().await;
    let after = listing().await["sessions"][0]["last_used_at"]
        .as_u64()
        .unwrap();
    assert!(after > before, "the use before the stop was not reported");
}

#[tokio::test]
async fn oversized_headers_get_431() {
    let w = world().await;
    let gw = w.gateway().await;
    let big = "x".repeat(32 * 1024);
    let r = gw.get("/public/x", &[("x-big", &big)]).await;
    assert_eq!(r.status, 431);
    assert_eq!(
        gw.get("/public/x", &[]).await.status,
        200,
        "the gateway still serves"
    );
}

#[tokio::test]
async fn upstream_lists_are_served_in_turn_and_a_refusing_one_is_passed_over() {
    let w = world().await;
    let other = EchoBackend::start().await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let mut config = gateway_config(&w.redis.url(), &w.idp, &w.backend.url());
    config.routes[2].upstream = vec![w.backend.url(), other.url()];
    config.routes[3].upstream = vec![dead, other.url()];
    let gw = TestGateway::spawn(config).await;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..4 {
        let r = gw.get("/public/x", &[]).await;
        assert_eq!(r.status, 200);
        seen.insert(r.json()["backend"].as_str().unwrap().to_owned());
    }
    assert_eq!(seen.len(), 2, "both upstreams should serve");
    // A request that meets the dead upstream is retried on the live one (nothing was sent):
    // none fails.
    let mut failures = 0;
    for _ in 0..6 {
        match gw.get("/dead/x", &[]).await.status {
            200 => {}
            502 => failures += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(
        failures, 0,
        "{failures} requests failed on a refusing upstream"
    );
}

#[tokio::test]
async fn request_ids_are_kept_or_made_and_metrics_count_requests() {
    let w = world().await;
    let gw = w.gateway().await;
    let kept = gw.get("/public/x", &[("x-request-id", "abc-123")]).await;
    assert_eq!(kept.header("x-request-id"), Some("abc-123"));
    assert_eq!(kept.json()["headers"]["x-request-id"], "abc-123");
    let (a, b) = (
        gw.get("/public/x", &[]).await,
        gw.get("/public/x", &[("x-request-id", "bad id")]).await,
    );
    let (a, b) = (
        a.header("x-request-id").unwrap().to_owned(),
        b.header("x-request-id").unwrap().to_owned(),
    );
    assert_ne!(a, b);
    assert_ne!(b, "bad id");
    assert_eq!(gw.get("/nowhere", &[]).await.status, 404);
    let metrics = send(
        "GET",
        &format!("http://{}/metrics", gw.admin),
        &[],
        String::new(),
    )
    .await
    .body;
    assert!(
        metrics.contains("tokengate_requests_total{status=\"200\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tokengate_requests_total{status=\"404\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tokengate_request_duration_seconds_count 4"),
        "{metrics}"
    );
}

#[tokio::test]
async fn https_with_http2_by_alpn() {
    use http_body_util::BodyExt;
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;

    let w = world().await;
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut config = gateway_config(&w.redis.url(), &w.idp, &w.backend.url());
    config.server.tls_cert = Some(fixtures.join("localhost.crt"));
    config.server.tls_key = Some(fixtures.join("localhost.key"));
    let gw = TestGateway::spawn(config).await;
    let token = w.idp.login("alice").await;

    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(fixtures.join("ca.crt")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut client = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    client.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(gw.public).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(client))
        .connect(name, tcp)
        .await
        .unwrap();
    assert_eq!(
        tls.get_ref().1.alpn_protocol(),
        Some(&b"h2"[..]),
        "HTTP/2 negotiated"
    );
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(format!("https://localhost:{}/api/x", gw.public.port()))
        .header("authorization", format!("Bearer {token}"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(req).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), http::Version::HTTP_2);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let seen: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(seen["headers"]["x-auth-subject"], "alice");
    assert_eq!(seen["headers"]["x-forwarded-proto"], "https");
}

#[tokio::test]
async fn routes_can_be_limited_to_a_host() {
    let w = world().await;
    let other = EchoBackend::start().await;
    let mut config = gateway_config(&w.redis.url(), &w.idp, &w.backend.url());
    let mut special = config.routes[2].clone();
    special.host = Some("api.example.com".to_owned());
    special.upstream = vec![other.url()];
    config.routes.push(special);
    let gw = TestGateway::spawn(config).await;
    let backend_of = |r: Reply| r.json()["backend"].as_str().unwrap().to_owned();
    let named = gw
        .get("/public/x", &[("host", "API.example.com:8080")])
        .await;
    assert_eq!(backend_of(named), other.addr.to_string());
    let default = gw.get("/public/x", &[("host", "www.example.com")]).await;
    assert_eq!(backend_of(default), w.backend.addr.to_string());
}

/// A backend that accepts any `Upgrade` and then echoes bytes; answers 200 to anything else.
async fn upgrade_backend() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                if !head.contains("upgrade: echo") {
                    let _ = stream
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nno")
                        .await;
                    return;
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n")
                    .await;
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn websocket_upgrades_pass_through_on_routes_that_allow_them() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let w = world().await;
    let backend = upgrade_backend().await;
    let mut config = gateway_config(&w.redis.url(), &w.idp, &w.backend.url());
    let mut ws = config.routes[2].clone();
    ws.path_prefix = "/ws/".into();
    ws.upstream = vec![format!("http://{backend}")];
    ws.websocket = true;
    let mut plain = ws.clone();
    plain.path_prefix = "/no-ws/".into();
    plain.websocket = false;
    config.routes.extend([ws, plain]);
    let gw = TestGateway::spawn(config).await;

    let upgrade = |path: &'static str| async move {
        let mut s = tokio::net::TcpStream::connect(gw.public).await.unwrap();
        let req = format!(
            "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(s.read(&mut byte).await.unwrap(), 1);
            head.push(byte[0]);
        }
        (s, String::from_utf8(head).unwrap())
    };
    let (mut s, head) = upgrade("/ws/chat").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s.write_all(b"ping").await.unwrap();
    let mut echoed = [0u8; 4];
    s.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"ping");

    let (_s, head) = upgrade("/no-ws/chat").await;
    assert!(
        head.starts_with("HTTP/1.1 200"),
        "Upgrade must not pass on other routes: {head}"
    );
}

#[tokio::test]
async fn a_slow_upstream_gets_504_and_other_routes_stay_served() {
    let w = world().await;
    // Accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let mut config = gateway_config(&w.redis.url(), &w.idp, &w.backend.url());
    config.server.upstream_timeout = Duration::from_millis(300);
    let mut slow = config.routes[2].clone();
    slow.path_prefix = "/slow/".into();
    slow.upstream = vec![format!("http://{silent_addr}")];
    config.routes.push(slow);
    let gw = std::sync::Arc::new(TestGateway::spawn(config).await);
    let stuck = {
        let gw = gw.clone();
        tokio::spawn(async move { gw.get("/slow/x", &[]).await.status })
    };
    assert_eq!(
        gw.get("/public/x", &[]).await.status,
        200,
        "other routes keep working"
    );
    assert_eq!(stuck.await.unwrap(), 504);
}

#[tokio::test]
async fn the_gateway_keeps_serving_when_the_idp_is_down() {
    let w = world().await;
    let gw = w.gateway().await;
    let cached = w.idp.login("alice").await;
    let stored = w.idp.login("bob").await;
    assert_eq!(gw.get_with_token("/api/x", &cached).await.status, 200);
    let World {
        redis,
        idp,
        backend,
    } = w;
    drop(idp);
    assert_eq!(gw.get_with_token("/api/x", &cached).await.status, 200);
    assert_eq!(
        gw.get_with_token("/api/x", &stored).await.status,
        200,
        "tokens in Redis still validate"
    );
    drop((redis, backend));
}

#[tokio::test]
async fn event_lag_and_last_use_batches_are_measured() {
    let w = world().await;
    let gw = w.gateway().await;
    let token = w.idp.login("alice").await;
    assert_eq!(gw.get_with_token("/api/x", &token).await.status, 200);
    w.idp
        .admin("DELETE", "/admin/users/alice/sessions", None)
        .await;
    let metric = |name: &'static str| {
        let admin = gw.admin;
        async move {
            let body = send(
                "GET",
                &format!("http://{admin}/metrics"),
                &[],
                String::new(),
            )
            .await
            .body;
            body.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
                .unwrap_or(-1.0)
        }
    };
    assert!(
        eventually(Duration::from_secs(5), || async {
            metric("tokengate_events_applied_total ").await >= 1.0
        })
        .await
    );
    assert!(metric("tokengate_event_lag_seconds ").await >= 0.0);
    assert!(
        eventually(Duration::from_secs(5), || async {
            metric("tokengate_last_use_batches_total ").await >= 1.0
        })
        .await
    );
}

#[tokio::test]
async fn idle_and_slow_connections_are_closed_after_the_header_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let w = world().await;
    let mut config = gateway_config(&w.redis.url(), &w.idp, &w.backend.url());
    config.server.header_timeout = Duration::from_millis(300);
    let gw = TestGateway::spawn(config).await;
    let closed = |mut s: tokio::net::TcpStream| async move {
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
        (read.is_ok(), String::from_utf8_lossy(&buf).into_owned())
    };
    // Connects and never sends a byte.
    let silent = tokio::net::TcpStream::connect(gw.public).await.unwrap();
    assert!(closed(silent).await.0, "a silent connection must be closed");
    // Sends half a request head.
    let mut slow = tokio::net::TcpStream::connect(gw.public).await.unwrap();
    slow.write_all(b"GET /public/x HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    assert!(closed(slow).await.0, "a slow request head must be cut off");
    // One request, then idle on keep-alive.
    let mut idle = tokio::net::TcpStream::connect(gw.public).await.unwrap();
    idle.write_all(b"GET /public/x HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let (was_closed, text) = closed(idle).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(was_closed, "an idle keep-alive connection must be closed");
}

/// An upstream that answers one request per connection and closes it, counting connections.
async fn closing_upstream() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    (url, count)
}

#[tokio::test]
async fn a_keep_alive_client_survives_an_upstream_that_closes_every_connection() {
    let w = world().await;
    let (closing, connections) = closing_upstream().await;
    let mut config = gateway_config(&w.redis.url(), &w.idp, &w.backend.url());
    config.routes.push(
        toml::from_str(&format!(
            "path_prefix = \"/closing/\"\nupstream = \"{closing}\"\nauth = false"
        ))
        .unwrap(),
    );
    let gw = TestGateway::spawn(config).await;
    // One client connection, several requests in turn.
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let get = |path: &str| {
        let req = http::Request::get(format!("http://{}{path}", gw.public))
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        client.request(req)
    };
    for _ in 0..3 {
        let r = get("/closing/x").await.unwrap();
        assert_eq!(r.status(), 200);
        http_body_util::BodyExt::collect(r.into_body())
            .await
            .unwrap();
    }
    // The upstream closed after each answer: each request got a connection of its own.
    assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 3);
    for _ in 0..3 {
        let r = get("/public/x").await.unwrap();
        assert_eq!(r.status(), 200);
        http_body_util::BodyExt::collect(r.into_body())
            .await
            .unwrap();
    }
}

/// The value token a backend received through the gateway.
fn forwarded_value_token(reply: &Reply) -> String {
    assert_eq!(reply.status, 200, "{}", reply.body);
    let auth = reply.json()["headers"]["authorization"].clone();
    auth.as_str()
        .unwrap()
        .strip_prefix("Bearer ")
        .unwrap()
        .to_owned()
}

/// The issuer of the short-lived value tokens' IdPs: fixed, so that an IdP started again on
/// another port still verifies (and renews) what the first one signed.
const SHORT_LIVED_ISSUER: &str = "http://idp.tokengate.test";

/// An IdP whose value tokens last 30 s (the shortest allowed), and a gateway whose cache
/// entries could live 10 minutes: only the value token's own expiry makes the gateway read the
/// store again.
fn short_lived_idp_config(redis: &TestRedis) -> tokengate_idp::config::IdpConfig {
    let mut config = idp_config(&redis.url());
    config.tokens.issuer = SHORT_LIVED_ISSUER.to_owned();
    config.tokens.value_token_ttl = Duration::from_secs(30);
    config
}

async fn short_lived_value_tokens(
    redis: &TestRedis,
    keys: KeySet,
) -> (TestIdp, TestGateway, EchoBackend) {
    let idp = TestIdp::spawn_with_keys(short_lived_idp_config(redis), keys).await;
    let backend = EchoBackend::start().await;
    let mut gw_config = gateway_config(&redis.url(), &idp, &backend.url());
    gw_config.idp.issuer = SHORT_LIVED_ISSUER.to_owned();
    gw_config.cache.max_staleness = Duration::from_secs(600);
    let gw = TestGateway::spawn(gw_config).await;
    (idp, gw, backend)
}

#[tokio::test]
async fn value_tokens_are_short_lived_and_renewed_without_an_event() {
    let redis = TestRedis::start();
    let (idp, gw, _backend) = short_lived_value_tokens(&redis, KeySet::ephemeral().unwrap()).await;
    let verifier = Verifier::new(
        &serde_json::from_value(idp.jwks().await).unwrap(),
        SHORT_LIVED_ISSUER,
    );
    let alice = idp.login("alice").await;
    let bob = idp.login("bob").await;
    let first = forwarded_value_token(&gw.get_with_token("/api/x", &alice).await);
    let claims = verifier.verify(&first).unwrap();
    assert!(
        claims.exp > claims.iat && claims.exp <= claims.iat + 30,
        "exp {} iat {}",
        claims.exp,
        claims.iat
    );
    assert_eq!(gw.get_with_token("/api/x", &bob).await.status, 200);
    idp.revoke_session(&bob).await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            gw.get_with_token("/api/x", &bob).await.status == 401
        })
        .await
    );
    let events = || -> u64 {
        redis::from_redis_value(redis.query(&["XLEN", "tg:{events}"]).unwrap()).unwrap()
    };
    let events_before = events();

    // The IdP renews the token once less than half is left (15 s); the gateway reads the store
    // again before its copy expires, and forwards the renewed token. No request fails meanwhile.
    let renewed = std::sync::Mutex::new(String::new());
    let picked_up = eventually(Duration::from_secs(40), || async {
        let token = forwarded_value_token(&gw.get_with_token("/api/x", &alice).await);
        let changed = token != first;
        *renewed.lock().unwrap() = token;
        changed
    })
    .await;
    assert!(
        picked_up,
        "the gateway never forwarded a renewed value token"
    );
    let renewed = renewed.into_inner().unwrap();
    let now = tokengate_store::now_unix();
    assert!(
        now < claims.exp,
        "picked up only after the first token expired"
    );
    let fresh = verifier.verify(&renewed).unwrap();
    assert!(fresh.exp > claims.exp && fresh.exp <= fresh.iat + 30);
    assert_eq!(
        (fresh.sub, fresh.sid, fresh.roles),
        (claims.sub, claims.sid, claims.roles)
    );
    assert_eq!(
        events(),
        events_before,
        "a renewal must not publish an event"
    );

    // The revoked session was not renewed, nor brought back.
    let metrics = send("GET", &idp.admin_url("/metrics"), &[], String::new())
        .await
        .body;
    assert!(
        metrics.contains("tokengate_idp_value_tokens_resigned_total "),
        "{metrics}"
    );
    assert!(!metrics.contains("tokengate_idp_value_tokens_resigned_total 0"));
    let bob_sid = tokengate_store::ReferenceToken::parse(&bob)
        .unwrap()
        .session_id()
        .to_string();
    let key = format!("tg:s:{{{bob_sid}}}");
    let exists: i64 = redis::from_redis_value(redis.query(&["EXISTS", &key]).unwrap()).unwrap();
    let scheduled = redis.query(&["ZSCORE", "tg:{renewal}", &bob_sid]).unwrap();
    assert_eq!((exists, scheduled), (0, redis::Value::Nil));
    assert_eq!(gw.get_with_token("/api/x", &bob).await.status, 401);
}

#[tokio::test]
async fn a_value_token_that_expired_while_the_idp_was_down_gets_503_until_it_is_renewed() {
    let redis = TestRedis::start();
    let (dir, files) = key_files("ttl-outage", &[SigningKey::generate_ed25519_pem().unwrap()]);
    let (idp, gw, _backend) = short_lived_value_tokens(&redis, KeySet::load(&files).unwrap()).await;
    let alice = idp.login("alice").await;
    let first = forwarded_value_token(&gw.get_with_token("/api/x", &alice).await);
    drop(idp);

    // Served from the cache, then "cannot validate now": never 401, the session is fine.
    let unavailable = eventually(Duration::from_secs(40), || async {
        let status = gw.get_with_token("/api/x", &alice).await.status;
        assert!(status == 200 || status == 503, "status {status}");
        status == 503
    })
    .await;
    assert!(unavailable, "an expired value token was still forwarded");
    let metrics = send(
        "GET",
        &format!("http://{}/metrics", gw.admin),
        &[],
        String::new(),
    )
    .await;
    assert!(
        !metrics
            .body
            .contains("tokengate_value_tokens_expired_total 0")
    );

    // The IdP comes back (same key and issuer) and renews the expired token at once; the
    // client's reference token works again.
    let config = short_lived_idp_config(&redis);
    let _idp = TestIdp::spawn_with_keys(config, KeySet::load(&files).unwrap()).await;
    let back = eventually(Duration::from_secs(10), || async {
        gw.get_with_token("/api/x", &alice).await.status == 200
    })
    .await;
    assert!(back, "the session never recovered after the IdP came back");
    let renewed = forwarded_value_token(&gw.get_with_token("/api/x", &alice).await);
    assert_ne!(renewed, first);
    let _ = std::fs::remove_dir_all(&dir);
}
