//! `AnyStore`: the implementation chosen at start-up, dispatching every trait to it.

use std::time::Duration;

use crate::{
    AuditEntry, AuditPage, AuditTrail, AuthCode, Claimed, CodeId, Codes, Deliveries, EventBatch,
    EventCursor, EventStream, Health, LoginThrottle, MemoryStore, Notes, PendingSignIns, Redeemed,
    RedisStore, Renewal, Replaced, Reporter, Session, SessionAdmin, SessionId, SessionRead,
    StoreError, TokenRenewal, UsageReport, User, UserDirectory, UserPage, ValueToken,
};

/// One of the two implementations, chosen at start-up from the configuration.
#[derive(Clone, Debug)]
pub enum AnyStore {
    /// One Redis server, a Cluster or a Sentinel-watched master.
    Redis(RedisStore),
    /// The embedded in-memory store of `tokengate dev` (one process only).
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

impl SessionRead for AnyStore {
    async fn lookup(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        dispatch!(self, s => s.lookup(id).await)
    }
}

impl EventStream for AnyStore {
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
}

impl UsageReport for AnyStore {
    async fn touch(&self, uses: &[(SessionId, u64)]) -> Result<usize, StoreError> {
        dispatch!(self, s => s.touch(uses).await)
    }
    async fn report_seen(&self, reporter: &str, at: u64) -> Result<(), StoreError> {
        dispatch!(self, s => s.report_seen(reporter, at).await)
    }
}

impl SessionAdmin for AnyStore {
    async fn create(&self, session: &Session) -> Result<(), StoreError> {
        dispatch!(self, s => s.create(session).await)
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
    async fn subject_roles(&self, subject: &str) -> Result<Option<Vec<String>>, StoreError> {
        dispatch!(self, s => s.subject_roles(subject).await)
    }
    async fn set_subject_roles(&self, subject: &str, roles: &[String]) -> Result<(), StoreError> {
        dispatch!(self, s => s.set_subject_roles(subject, roles).await)
    }
    async fn clear_subject_roles(&self, subject: &str) -> Result<bool, StoreError> {
        dispatch!(self, s => s.clear_subject_roles(subject).await)
    }
}

impl TokenRenewal for AnyStore {
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

    async fn release_renewal_lease(&self, holder: &str) -> Result<bool, StoreError> {
        dispatch!(self, s => s.release_renewal_lease(holder).await)
    }
}

impl UserDirectory for AnyStore {
    async fn use_otp_step(
        &self,
        username: &str,
        step: u64,
        keep: Duration,
    ) -> Result<bool, StoreError> {
        dispatch!(self, s => s.use_otp_step(username, step, keep).await)
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
    async fn replace_user(&self, current: &User, new: &User) -> Result<Replaced, StoreError> {
        dispatch!(self, s => s.replace_user(current, new).await)
    }
    async fn claim_passkey(&self, id: &str, username: &str) -> Result<Claimed, StoreError> {
        dispatch!(self, s => s.claim_passkey(id, username).await)
    }
    async fn release_passkey(&self, id: &str, username: &str) -> Result<bool, StoreError> {
        dispatch!(self, s => s.release_passkey(id, username).await)
    }
    async fn passkey_owner(&self, id: &str) -> Result<Option<String>, StoreError> {
        dispatch!(self, s => s.passkey_owner(id).await)
    }
    async fn list_users(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<UserPage, StoreError> {
        dispatch!(self, s => s.list_users(prefix, after, limit).await)
    }
}

impl Codes for AnyStore {
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
}

impl PendingSignIns for AnyStore {
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

impl Notes for AnyStore {
    async fn put_note(&self, id: &CodeId, value: &str, ttl: Duration) -> Result<(), StoreError> {
        dispatch!(self, s => s.put_note(id, value, ttl).await)
    }
    async fn put_note_once(
        &self,
        id: &CodeId,
        value: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        dispatch!(self, s => s.put_note_once(id, value, ttl).await)
    }
    async fn note(&self, id: &CodeId) -> Result<Option<String>, StoreError> {
        dispatch!(self, s => s.note(id).await)
    }
}

impl Deliveries for AnyStore {
    async fn queue_delivery(
        &self,
        id: &str,
        payload: &str,
        due_ms: u64,
    ) -> Result<bool, StoreError> {
        dispatch!(self, s => s.queue_delivery(id, payload, due_ms).await)
    }
    async fn deliveries_due(
        &self,
        now_ms: u64,
        hold: Duration,
        limit: usize,
    ) -> Result<Vec<(String, String)>, StoreError> {
        dispatch!(self, s => s.deliveries_due(now_ms, hold, limit).await)
    }
    async fn finish_delivery(&self, id: &str) -> Result<bool, StoreError> {
        dispatch!(self, s => s.finish_delivery(id).await)
    }
}

impl LoginThrottle for AnyStore {
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
}

impl AuditTrail for AnyStore {
    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        dispatch!(self, s => s.append_audit(entry).await)
    }
    async fn audit(&self, before: Option<&str>, limit: usize) -> Result<AuditPage, StoreError> {
        dispatch!(self, s => s.audit(before, limit).await)
    }
}

impl Health for AnyStore {
    async fn ping(&self) -> Result<(), StoreError> {
        dispatch!(self, s => s.ping().await)
    }
    async fn reporters(&self, since: u64) -> Result<Vec<Reporter>, StoreError> {
        dispatch!(self, s => s.reporters(since).await)
    }
}
