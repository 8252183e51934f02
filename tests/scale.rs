//! The IdP and gateways on a highly available Redis: a three-master Redis Cluster started by
//! the test (`redis-cli --cluster create`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use support::*;
use tokengate_store::testing::TestCluster;
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
