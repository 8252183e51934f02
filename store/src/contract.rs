//! The contract suite run against each implementation (memory, one Redis server, a Sentinel
//! group, a Redis Cluster), and what only Redis can be asked (key TTLs, restarts).

mod memory {
    use crate::MemoryStore;
    crate::store_contract_tests!(|max_len| (MemoryStore::bounded(max_len, max_len), ()));
}

mod redis {
    use crate::testing::TestRedis;
    use crate::{RedisOptions, RedisStore};

    fn store(max_len: usize) -> (RedisStore, TestRedis) {
        let redis = TestRedis::start();
        let options = RedisOptions {
            events_max_len: max_len,
            audit_max_len: max_len,
            ..RedisOptions::default()
        };
        let store = RedisStore::connect(&redis.url(), options).expect("connect");
        (store, redis)
    }

    crate::store_contract_tests!(store);
}

mod sentinel {
    use crate::testing::{SENTINEL_MASTER, TestSentinel};
    use crate::{RedisOptions, RedisStore};

    fn store(max_len: usize) -> (RedisStore, TestSentinel) {
        let group = TestSentinel::start();
        let options = RedisOptions {
            events_max_len: max_len,
            audit_max_len: max_len,
            ..RedisOptions::default()
        };
        let store = RedisStore::connect_sentinel(
            &group.sentinel_urls(),
            SENTINEL_MASTER,
            "redis://ignored",
            options,
        )
        .expect("connect");
        (store, group)
    }

    crate::store_contract_tests!(store);
}

mod cluster {
    use crate::testing::TestCluster;
    use crate::{RedisOptions, RedisStore};

    fn store(max_len: usize) -> (RedisStore, TestCluster) {
        let cluster = TestCluster::start();
        let options = RedisOptions {
            events_max_len: max_len,
            audit_max_len: max_len,
            ..RedisOptions::default()
        };
        let store = RedisStore::connect_cluster(&cluster.urls(), options).expect("connect");
        (store, cluster)
    }

    crate::store_contract_tests!(store);
}

mod redis_specific {
    use std::time::Duration;

    use crate::testing::{TestRedis, suite};
    use crate::{
        EventStream, Health, RedisOptions, RedisStore, SessionAdmin, SessionRead, TokenRenewal,
        UsageReport, now_unix,
    };

    fn connect(redis: &TestRedis) -> RedisStore {
        RedisStore::connect(&redis.url(), RedisOptions::default()).expect("connect")
    }

    fn ttl(redis: &TestRedis, key: &str) -> i64 {
        redis::from_redis_value(redis.query(&["TTL", key]).expect("TTL")).expect("integer")
    }

    #[tokio::test]
    async fn redis_expiry_follows_last_use() {
        let redis = TestRedis::start();
        let store = connect(&redis);
        let mut s = suite::session("alice");
        s.last_used_at = now_unix() - 500; // 100 s of idle time left
        store.create(&s).await.expect("create");
        let key = format!("tg:s:{{{}}}", s.id);
        assert!(
            (95..=101).contains(&ttl(&redis, &key)),
            "ttl {}",
            ttl(&redis, &key)
        );
        store.touch(&[(s.id, now_unix())]).await.expect("touch");
        assert!(
            (595..=601).contains(&ttl(&redis, &key)),
            "ttl {}",
            ttl(&redis, &key)
        );
    }

    #[tokio::test]
    async fn the_renewal_schedule_forgets_ended_sessions() {
        let redis = TestRedis::start();
        let store = connect(&redis);
        let count = || -> i64 {
            redis::from_redis_value(redis.query(&["ZCARD", "tg:{renewal}"]).expect("ZCARD"))
                .expect("integer")
        };
        let now = now_unix();
        let mut idle = suite::session("alice");
        idle.value_token = suite::token_expiring("alice", now + 100);
        idle.last_used_at = now - 700; // ends as it is written: its hash expires at once
        let revoked = suite::session("alice");
        let forced = suite::session("bob");
        for s in [&idle, &revoked, &forced] {
            store.create(s).await.expect("create");
        }
        assert_eq!(count(), 3);
        store.revoke(&revoked.id).await.expect("revoke");
        store.revoke_subject("bob").await.expect("revoke subject");
        assert_eq!(count(), 1, "revocations leave the schedule");
        // A session that ended by itself leaves when the scan for due tokens meets it.
        let due = store.value_tokens_due(now + 200, 0, 10).await.expect("due");
        assert!(due.is_empty());
        assert_eq!(count(), 0, "an ended session's entry must not stay");
    }

    #[tokio::test]
    async fn a_session_written_before_kinds_existed_is_an_access_session() {
        let redis = TestRedis::start();
        let store = connect(&redis);
        let s = suite::session("alice");
        let key = format!("tg:s:{{{}}}", s.id);
        let (created, idle, max_exp) = (
            s.created_at.to_string(),
            s.idle_timeout.to_string(),
            s.max_expires_at.to_string(),
        );
        // The fields the previous version wrote, and no others.
        let mut old = vec!["HSET", &key, "sub", "alice", "roles", r#"["orders:read"]"#];
        old.extend(["vt", s.value_token.expose(), "created", &created]);
        old.extend(["last_used", &created, "idle", &idle, "max_exp", &max_exp]);
        redis.query(&old).expect("HSET");
        let got = store.lookup(&s.id).await.expect("lookup").expect("live");
        assert_eq!(
            (got.client_id, got.method.as_str(), got.kind),
            (None, "", crate::SessionKind::Access)
        );
        assert_eq!((got.subject, got.roles), (s.subject, s.roles));
    }

    #[tokio::test]
    async fn reader_detects_a_redis_that_lost_its_data() {
        let mut redis = TestRedis::start();
        let store = connect(&redis);
        let s = suite::session("alice");
        store.create(&s).await.expect("create");
        store.revoke(&s.id).await.expect("revoke");
        let cursor = store
            .read_events(
                &store.events_head().await.expect("head"),
                Duration::from_millis(5),
            )
            .await
            .expect("read")
            .cursor;

        redis.restart();
        // The same store object recovers by itself once Redis is back.
        let mut result = store.read_events(&cursor, Duration::from_millis(5)).await;
        for _ in 0..50 {
            if result.is_ok() {
                break;
            }
            result = store.read_events(&cursor, Duration::from_millis(5)).await;
        }
        let batch = result.expect("read after restart");
        assert!(
            batch.gap,
            "events before the restart are lost: the reader must drop its cache"
        );
        let again = store
            .read_events(&batch.cursor, Duration::from_millis(5))
            .await
            .expect("read");
        assert!(!again.gap);
    }

    #[tokio::test]
    async fn operations_fail_with_unavailable_and_recover() {
        let mut redis = TestRedis::start();
        let store = connect(&redis);
        let s = suite::session("alice");
        store.create(&s).await.expect("create");
        redis.kill();
        assert!(matches!(
            store.lookup(&s.id).await,
            Err(crate::StoreError::Unavailable(_))
        ));
        redis.restart();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while store.ping().await.is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "store did not reconnect"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The restarted Redis is empty: the session is gone, and the answer says so.
        assert_eq!(store.lookup(&s.id).await.expect("lookup"), None);
    }
}
