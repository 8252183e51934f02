//! The IdP and gateways on a highly available Redis: a three-master Redis Cluster
//! (`redis-cli --cluster create`) and a Sentinel group (master, replica, three sentinels), all
//! started by the tests from `redis-server`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use support::stack::Load;
use support::*;
use tokengate_store::testing::{SENTINEL_MASTER, TestCluster, TestSentinel};
use tokengate_store::{StoreConfig, StoreMode};

fn cluster_store(cluster: &TestCluster) -> StoreConfig {
    StoreConfig {
        mode: StoreMode::Cluster,
        nodes: cluster.urls(),
        ..StoreConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_works_on_a_redis_cluster() {
    let cluster = TestCluster::start();
    let mut idp_conf = idp_config("redis://unused");
    idp_conf.store = cluster_store(&cluster);
    idp_conf.store.validate().unwrap();
    let idp = TestIdp::spawn(idp_conf).await;
    let backend = EchoBackend::start().await;
    let gateway = |_: ()| {
        let mut conf = gateway_config("redis://unused", &idp, &backend.url());
        conf.store = cluster_store(&cluster);
        TestGateway::spawn(conf)
    };
    let (a, b) = (gateway(()).await, gateway(()).await);

    // Login, and validation through both gateways.
    let token = idp.login("alice").await;
    let other = idp.login("bob").await;
    for gw in [&a, &b] {
        let r = gw.get_with_token("/api/x", &token).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["headers"]["x-auth-subject"], "alice");
    }

    // Last use reaches the store (sessions are spread over the cluster's slots).
    let listing = || async {
        idp.admin("GET", "/admin/users/alice/sessions", None)
            .await
            .json()["sessions"][0]["last_used_at"]
            .as_u64()
            .unwrap()
    };
    let before = listing().await;
    assert!(
        eventually(Duration::from_secs(3), || async {
            tokengate_store::now_unix() > before
        })
        .await
    );
    assert_eq!(a.get_with_token("/api/x", &token).await.status, 200);
    assert!(
        eventually(Duration::from_secs(5), || async {
            listing().await > before
        })
        .await,
        "last use never reported on the cluster"
    );

    // A role change reaches both gateways.
    let r = idp
        .admin(
            "PUT",
            "/admin/users/alice/roles",
            Some(r#"{"roles": ["orders:read", "admin"]}"#),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    for gw in [&a, &b] {
        assert!(
            eventually(Duration::from_secs(5), || async {
                gw.get_with_token("/admin-only/x", &token).await.status == 200
            })
            .await,
            "role change not applied on the cluster"
        );
    }

    // A forced logout too, and only for that user.
    let r = idp
        .admin("DELETE", "/admin/users/alice/sessions", None)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    for gw in [&a, &b] {
        assert!(
            eventually(Duration::from_secs(5), || async {
                gw.get_with_token("/api/x", &token).await.status == 401
            })
            .await,
            "forced logout not applied on the cluster"
        );
        assert_eq!(gw.get_with_token("/api/x", &other).await.status, 200);
    }
    // The keys really are spread over more than one node.
    let holding = cluster
        .query_all(&["DBSIZE"])
        .into_iter()
        .filter(|r| {
            r.as_ref()
                .ok()
                .and_then(|v| redis::from_redis_value::<i64>(v.clone()).ok())
                > Some(0)
        })
        .count();
    assert!(holding >= 2, "all keys on {holding} node(s)");
}

fn sentinel_store(group: &TestSentinel) -> StoreConfig {
    StoreConfig {
        mode: StoreMode::Sentinel,
        sentinels: group.sentinel_urls(),
        master_name: Some(SENTINEL_MASTER.to_owned()),
        ..StoreConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_failover_under_load_loses_nothing() {
    let group = TestSentinel::start();
    let mut idp_conf = idp_config("redis://unused");
    idp_conf.store = sentinel_store(&group);
    idp_conf.store.validate().unwrap();
    let idp = TestIdp::spawn(idp_conf).await;
    let backend = EchoBackend::start().await;
    let mut gw_conf = gateway_config("redis://unused", &idp, &backend.url());
    gw_conf.store = sentinel_store(&group);
    let gw = TestGateway::spawn(gw_conf).await;

    let cached = idp.login("alice").await;
    let uncached = idp.login("bob").await;
    assert_eq!(gw.get_with_token("/api/warm", &cached).await.status, 200);
    let load = Load::start(
        &[format!("http://{}/api/load", gw.public)],
        Some(&cached),
        3,
    );
    let old_master = group.master_port();
    let switch = tokio::task::spawn_blocking(move || {
        group.failover();
        group
    });
    let group = switch.await.unwrap();
    assert_ne!(group.master_port(), old_master);

    // Tokens the gateway never saw, and new logins, work again within seconds.
    assert!(
        eventually(Duration::from_secs(15), || async {
            gw.get_with_token("/api/after", &uncached).await.status == 200
        })
        .await,
        "an uncached token never worked after the failover"
    );
    assert!(
        eventually(Duration::from_secs(15), || async {
            post_form(
                &idp.url("/oauth2/token"),
                &[],
                &format!("grant_type=password&client_id=cli&username=bob&password={PASSWORD}"),
            )
            .await
            .status
                == 200
        })
        .await,
        "logins never worked after the failover"
    );
    let tally = load.stop_after(20).await;
    assert!(tally.total() >= 20, "{tally:?}");
    assert_eq!(
        tally.count(Some(200)),
        tally.total(),
        "a cached token failed during the failover: {tally:?}"
    );

    // A revocation issued on the new master reaches the gateway.
    idp.revoke_session(&cached).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            gw.get_with_token("/api/x", &cached).await.status == 401
        })
        .await,
        "a revocation after the failover never reached the gateway"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_speaks_tls_to_redis() {
    use tokengate_store::Health;
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let redis = TestRedis::start_tls(
        &fixtures.join("localhost.crt"),
        &fixtures.join("localhost.key"),
    );
    let url = redis.tls_url().unwrap();
    let store = |ca: Option<std::path::PathBuf>| StoreConfig {
        redis_url: url.clone(),
        tls_ca_file: ca,
        ..StoreConfig::default()
    };
    // The test CA is not among the system's roots: no connection without tls_ca_file.
    let untrusted = store(None).connect().unwrap();
    assert!(
        untrusted.ping().await.is_err(),
        "an untrusted server was accepted"
    );
    let trusted = store(Some(fixtures.join("ca.crt")));
    trusted.validate().unwrap();
    let mut idp_conf = idp_config(&url);
    idp_conf.store = trusted.clone();
    let idp = TestIdp::spawn(idp_conf).await;
    let backend = EchoBackend::start().await;
    let mut gw_conf = gateway_config(&url, &idp, &backend.url());
    gw_conf.store = trusted;
    let gw = TestGateway::spawn(gw_conf).await;
    let token = idp.login("alice").await;
    assert_eq!(gw.get_with_token("/api/x", &token).await.status, 200);
    // Sessions really are on that server (its plain port shows them).
    assert!(
        redis.dump().contains(":s:{"),
        "no session on the TLS server"
    );
}
