//! The token store contract shared by the IdP (which writes it) and the gateways (which read it).
//!
//! * `token`: reference tokens and the session ids derived from their hash (the store never sees
//!   a reference token in clear).
//! * `record`: what a session holds and when it expires; a value token's renewal.
//! * `user`: users kept in the store (the IdP's directory), listed in pages by name.
//! * `code`: authorization codes, kept under their hash and redeemed once.
//! * `claims`: the value token's claims and their verification (the store alone cannot mint).
//! * `event`: revocations and role changes, delivered at least once, with gap detection.
//! * `redis`: the Redis implementation: its key schema and scripts (`redis/schema.rs`, the only
//!   place that knows them), connections per topology, and the event stream.
//! * `usage`: last-use reports, coalesced and written in batches.
//! * `audit`: the bounded audit trail of administrators' actions, and who reported last use.
//! * `config`: the `[store]` section both services share, and `StoreConfigError`, which names the
//!   key (a service adds its file and section).
//! * `memory`: the in-memory implementation, the embedded default of `tokengate dev`.
//! * `error`: what callers see go wrong; no driver type in it (the driver's error stays opaque
//!   inside `DriverError`, for logs).
//!
//! Both implementations pass one contract suite (`testing::suite`).

mod audit;
mod claims;
mod code;
mod config;
mod error;
mod event;
mod memory;
mod record;
mod redis;
mod token;
mod usage;
mod user;

#[cfg(any(test, feature = "testing"))]
#[allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]
pub mod testing;

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use audit::{
    AuditEntry, AuditPage, DEFAULT_AUDIT_MAX_LEN, MAX_AUDIT_PAGE, MAX_REPORTERS, Reporter,
};
pub use claims::{Claims, EXPIRY_MARGIN, Verifier, VerifyError};
pub use code::{AuthCode, Redeemed};
pub use config::{StoreConfig, StoreConfigError, StoreMode};
pub use error::{DriverError, StoreError};
pub use event::{Event, EventBatch, EventCursor};
pub use memory::MemoryStore;
pub use record::{Renewal, Session, SessionKind, ValueToken};
pub use redis::{RedisOptions, RedisStore};
pub use token::{CodeId, ReferenceToken, SessionId, TokenFormatError, bearer_credentials};
pub use usage::UsageLog;
pub use user::{MAX_USERNAME_LEN, MAX_USERS_PAGE, User, UserPage};

/// Store operations. The IdP uses all of them; a gateway only `lookup`, `touch`, `events_head`
/// and `read_events`.
///
/// Sessions are also kept in a renewal schedule, ordered by their value token's `exp`: written
/// by `create`, `update_sessions` and `replace_value_tokens`, left by `revoke` and
/// `revoke_subject`, and tidied by `value_tokens_due` of sessions that ended by themselves.
pub trait TokenStore: Clone + Send + Sync + 'static {
    /// Stores a new session. The subject's index is written first, so that a forced logout can
    /// never miss a session that exists.
    fn create(&self, session: &Session) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The live session with this id, if any.
    fn lookup(
        &self,
        id: &SessionId,
    ) -> impl Future<Output = Result<Option<Session>, StoreError>> + Send;

    /// Reports last use for a batch of sessions in one round trip. Each session's expiry becomes
    /// `min(last_used + idle_timeout, max_expires_at)`; it never shrinks and a revoked or expired
    /// session is never revived. Returns how many sessions were extended.
    fn touch(
        &self,
        uses: &[(SessionId, u64)],
    ) -> impl Future<Output = Result<usize, StoreError>> + Send;

    /// Revokes one session and publishes [`Event::Revoked`]. `false` if it did not exist.
    fn revoke(&self, id: &SessionId) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Revokes every session of a subject (forced logout) and publishes
    /// [`Event::SubjectRevoked`]. Returns the sessions that were live.
    fn revoke_subject(
        &self,
        subject: &str,
    ) -> impl Future<Output = Result<Vec<SessionId>, StoreError>> + Send;

    /// The live sessions of a subject.
    fn sessions(
        &self,
        subject: &str,
    ) -> impl Future<Output = Result<Vec<Session>, StoreError>> + Send;

    /// Replaces roles and value token of live sessions (those that ended meanwhile are skipped),
    /// then publishes [`Event::RolesChanged`]. Returns how many were updated.
    fn update_sessions(
        &self,
        updates: &[(SessionId, Vec<String>, ValueToken)],
    ) -> impl Future<Output = Result<usize, StoreError>> + Send;

    /// Live sessions whose value token expires at or before `before` (Unix seconds), soonest
    /// first: what the IdP renews. At most `limit`, after passing over the first `skip` entries
    /// of the schedule (those the caller could not renew this round). Entries of sessions that
    /// ended, or whose value token already lasts until the session's absolute end, leave the
    /// schedule on the way. Empty when nothing more is due.
    fn value_tokens_due(
        &self,
        before: u64,
        skip: usize,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Session>, StoreError>> + Send;

    /// Replaces value tokens with renewed ones, **without publishing an event**: a renewal
    /// changes nothing a gateway has cached but the token's expiry, and a gateway re-reads the
    /// store before its copy expires. Each renewal applies only if its session is live and still
    /// holds the token the renewal replaces. Returns how many were replaced.
    fn replace_value_tokens(
        &self,
        renewals: &[Renewal],
    ) -> impl Future<Output = Result<usize, StoreError>> + Send;

    /// Takes the renewal lease for `holder` for `ttl`, or keeps it if `holder` has it already:
    /// one IdP replica at a time renews value tokens (two at once would only waste signatures).
    /// `false` while another holder's lease runs.
    fn renewal_lease(
        &self,
        holder: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Roles an administrator set for a subject, which replace the configured ones.
    fn subject_roles(
        &self,
        subject: &str,
    ) -> impl Future<Output = Result<Option<Vec<String>>, StoreError>> + Send;

    /// Records the roles an administrator set for a subject.
    fn set_subject_roles(
        &self,
        subject: &str,
        roles: &[String],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Forgets the roles an administrator set for a subject: `false` if none were set.
    fn clear_subject_roles(
        &self,
        subject: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// The position just after the newest event: where a reader with an empty cache starts.
    fn events_head(&self) -> impl Future<Output = Result<EventCursor, StoreError>> + Send;

    /// Events after `after`, waiting up to `wait` for one to arrive. `gap` in the answer says
    /// events may have been lost (stream trimmed, store reset): the reader must drop its cache.
    fn read_events(
        &self,
        after: &EventCursor,
        wait: Duration,
    ) -> impl Future<Output = Result<EventBatch, StoreError>> + Send;

    /// Checks that the store answers.
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Counts a failed login against `key` (a username or client address): failures count
    /// within `window` of the first; the `limit`th locks the key for `lockout` and the count
    /// starts over. Returns whether this failure started a lockout. Shared by every IdP on the
    /// store, so replicas do not multiply the attempts allowed.
    fn login_failed(
        &self,
        key: &str,
        limit: u32,
        window: Duration,
        lockout: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// How long `key` stays locked out, if it is.
    fn login_locked(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Option<Duration>, StoreError>> + Send;

    /// Forgets the failures counted against `key` (a lockout in force stays).
    fn login_succeeded(&self, key: &str) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Stores a new user: `false`, and nothing written, if the name is taken. A name longer than
    /// [`MAX_USERNAME_LEN`] is refused with [`StoreError::Invalid`].
    fn create_user(&self, user: &User) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// The user with this name, if any.
    fn user(&self, username: &str)
    -> impl Future<Output = Result<Option<User>, StoreError>> + Send;

    /// Replaces a user's record (every field as given): `false` if there is no such user.
    fn update_user(&self, user: &User) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Deletes a user (not its sessions): `false` if there was none.
    fn delete_user(&self, username: &str) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Users whose name starts with `prefix`, ordered by name (bytewise), after the name `after`
    /// (the previous page's `next`), at most `limit` (1 to [`MAX_USERS_PAGE`]; clamped).
    fn list_users(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Result<UserPage, StoreError>> + Send;

    /// Stores an authorization code's record under its id for `ttl`: `false`, and nothing
    /// written, if that id is taken (a code must be generated again).
    fn create_code(
        &self,
        id: &CodeId,
        code: &AuthCode,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Redeems a code, atomically: the first call spends it, remembers `session` (the session
    /// the caller is about to create) and answers [`Redeemed::Fresh`]; every later call answers
    /// [`Redeemed::Replayed`] with that session, until the code's TTL ends; then, or for a code
    /// never issued, [`Redeemed::Unknown`].
    fn redeem_code(
        &self,
        id: &CodeId,
        session: &SessionId,
    ) -> impl Future<Output = Result<Redeemed, StoreError>> + Send;

    /// Appends an administrator's action to the audit trail (its `id` is given by the store);
    /// the oldest entries beyond the store's bound are dropped.
    fn append_audit(
        &self,
        entry: &AuditEntry,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Audit entries, newest first, older than the entry `before` (the previous page's
    /// `next`), at most `limit` (1 to [`MAX_AUDIT_PAGE`]; clamped). A malformed `before` is
    /// [`StoreError::Invalid`].
    fn audit(
        &self,
        before: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Result<AuditPage, StoreError>> + Send;

    /// Notes that `reporter` wrote last-use reports at `at`; at most [`MAX_REPORTERS`] are kept.
    fn report_seen(
        &self,
        reporter: &str,
        at: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The reporters seen at or after `since`, most recent first.
    fn reporters(
        &self,
        since: u64,
    ) -> impl Future<Output = Result<Vec<Reporter>, StoreError>> + Send;
    /// Stores a short-lived record to be taken back once (a sign-in waiting for an upstream
    /// provider, under its `state`'s hash): `false`, and nothing written, if the id is taken.
    fn create_pending(
        &self,
        id: &CodeId,
        record: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Takes a pending record back, atomically: the first call gets it, every later call (and
    /// any after its TTL) gets `None`.
    fn take_pending(
        &self,
        id: &CodeId,
    ) -> impl Future<Output = Result<Option<String>, StoreError>> + Send;
}

/// One of the two implementations, chosen at start-up from the configuration.
#[derive(Clone, Debug)]
pub enum AnyStore {
    Redis(RedisStore),
    Memory(MemoryStore),
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            AnyStore::Redis($s) => $e,
            AnyStore::Memory($s) => $e,
        }
    };
}

impl TokenStore for AnyStore {
    async fn create(&self, session: &Session) -> Result<(), StoreError> {
        dispatch!(self, s => s.create(session).await)
    }
    async fn lookup(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        dispatch!(self, s => s.lookup(id).await)
    }
    async fn touch(&self, uses: &[(SessionId, u64)]) -> Result<usize, StoreError> {
        dispatch!(self, s => s.touch(uses).await)
    }
    async fn revoke(&self, id: &SessionId) -> Result<bool, StoreError> {
        dispatch!(self, s => s.revoke(id).await)
    }
    async fn revoke_subject(&self, subject: &str) -> Result<Vec<SessionId>, StoreError> {
        dispatch!(self, s => s.revoke_subject(subject).await)
    }
    async fn sessions(&self, subject: &str) -> Result<Vec<Session>, StoreError> {
        dispatch!(self, s => s.sessions(subject).await)
    }
    async fn update_sessions(
        &self,
        updates: &[(SessionId, Vec<String>, ValueToken)],
    ) -> Result<usize, StoreError> {
        dispatch!(self, s => s.update_sessions(updates).await)
    }
    async fn value_tokens_due(
        &self,
        before: u64,
        skip: usize,
        limit: usize,
    ) -> Result<Vec<Session>, StoreError> {
        dispatch!(self, s => s.value_tokens_due(before, skip, limit).await)
    }
    async fn replace_value_tokens(&self, renewals: &[Renewal]) -> Result<usize, StoreError> {
        dispatch!(self, s => s.replace_value_tokens(renewals).await)
    }
    async fn renewal_lease(&self, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        dispatch!(self, s => s.renewal_lease(holder, ttl).await)
    }
    async fn subject_roles(&self, subject: &str) -> Result<Option<Vec<String>>, StoreError> {
        dispatch!(self, s => s.subject_roles(subject).await)
    }
    async fn set_subject_roles(&self, subject: &str, roles: &[String]) -> Result<(), StoreError> {
        dispatch!(self, s => s.set_subject_roles(subject, roles).await)
    }
    async fn clear_subject_roles(&self, subject: &str) -> Result<bool, StoreError> {
        dispatch!(self, s => s.clear_subject_roles(subject).await)
    }
    async fn events_head(&self) -> Result<EventCursor, StoreError> {
        dispatch!(self, s => s.events_head().await)
    }
    async fn read_events(
        &self,
        after: &EventCursor,
        wait: Duration,
    ) -> Result<EventBatch, StoreError> {
        dispatch!(self, s => s.read_events(after, wait).await)
    }
    async fn ping(&self) -> Result<(), StoreError> {
        dispatch!(self, s => s.ping().await)
    }
    async fn login_failed(
        &self,
        key: &str,
        limit: u32,
        window: Duration,
        lockout: Duration,
    ) -> Result<bool, StoreError> {
        dispatch!(self, s => s.login_failed(key, limit, window, lockout).await)
    }
    async fn login_locked(&self, key: &str) -> Result<Option<Duration>, StoreError> {
        dispatch!(self, s => s.login_locked(key).await)
    }
    async fn login_succeeded(&self, key: &str) -> Result<(), StoreError> {
        dispatch!(self, s => s.login_succeeded(key).await)
    }
    async fn create_user(&self, user: &User) -> Result<bool, StoreError> {
        dispatch!(self, s => s.create_user(user).await)
    }
    async fn user(&self, username: &str) -> Result<Option<User>, StoreError> {
        dispatch!(self, s => s.user(username).await)
    }
    async fn update_user(&self, user: &User) -> Result<bool, StoreError> {
        dispatch!(self, s => s.update_user(user).await)
    }
    async fn delete_user(&self, username: &str) -> Result<bool, StoreError> {
        dispatch!(self, s => s.delete_user(username).await)
    }
    async fn list_users(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<UserPage, StoreError> {
        dispatch!(self, s => s.list_users(prefix, after, limit).await)
    }
    async fn create_code(
        &self,
        id: &CodeId,
        code: &AuthCode,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        dispatch!(self, s => s.create_code(id, code, ttl).await)
    }
    async fn redeem_code(&self, id: &CodeId, session: &SessionId) -> Result<Redeemed, StoreError> {
        dispatch!(self, s => s.redeem_code(id, session).await)
    }
    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        dispatch!(self, s => s.append_audit(entry).await)
    }
    async fn audit(&self, before: Option<&str>, limit: usize) -> Result<AuditPage, StoreError> {
        dispatch!(self, s => s.audit(before, limit).await)
    }
    async fn report_seen(&self, reporter: &str, at: u64) -> Result<(), StoreError> {
        dispatch!(self, s => s.report_seen(reporter, at).await)
    }
    async fn reporters(&self, since: u64) -> Result<Vec<Reporter>, StoreError> {
        dispatch!(self, s => s.reporters(since).await)
    }
    async fn create_pending(
        &self,
        id: &CodeId,
        record: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        dispatch!(self, s => s.create_pending(id, record, ttl).await)
    }
    async fn take_pending(&self, id: &CodeId) -> Result<Option<String>, StoreError> {
        dispatch!(self, s => s.take_pending(id).await)
    }
}

/// Seconds since the Unix epoch, the unit of every time in the store.
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod contract {
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
}

#[cfg(test)]
mod redis_specific {
    use std::time::Duration;

    use crate::testing::{TestRedis, suite};
    use crate::{RedisOptions, RedisStore, TokenStore, now_unix};

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
        store
            .touch(&[(s.id.clone(), now_unix())])
            .await
            .expect("touch");
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
