//! What the store does, one trait per concern, so that each consumer names only what it uses:
//! a gateway reads sessions ([`SessionRead`]), follows events ([`EventStream`]) and reports
//! last use ([`UsageReport`]); the IdP also manages sessions, renews value tokens, and keeps
//! users, codes, pending sign-ins, the login throttle and the audit trail. [`TokenStore`] is
//! all of them at once.

use std::future::Future;
use std::time::Duration;

use crate::{
    AuditEntry, AuditPage, AuthCode, Claimed, CodeId, EventBatch, EventCursor, Redeemed, Renewal,
    Replaced, Reporter, Session, SessionId, StoreError, User, UserPage, ValueToken,
};

/// Every store operation, for code that needs the whole store (the IdP's state, the contract
/// suite). Implemented by every type that implements each narrow trait.
pub trait TokenStore:
    SessionRead
    + EventStream
    + UsageReport
    + SessionAdmin
    + TokenRenewal
    + UserDirectory
    + Codes
    + PendingSignIns
    + Notes
    + Deliveries
    + LoginThrottle
    + AuditTrail
    + Health
    + Clone
    + 'static
{
}

impl<S> TokenStore for S where
    S: SessionRead
        + EventStream
        + UsageReport
        + SessionAdmin
        + TokenRenewal
        + UserDirectory
        + Codes
        + PendingSignIns
        + Notes
        + Deliveries
        + LoginThrottle
        + AuditTrail
        + Health
        + Clone
        + 'static
{
}

/// Reading a session by its id: what a gateway does on a cache miss.
pub trait SessionRead: Send + Sync {
    /// The live session with this id, if any.
    fn lookup(
        &self,
        id: &SessionId,
    ) -> impl Future<Output = Result<Option<Session>, StoreError>> + Send;
}

/// The event stream a gateway follows to drop what it has cached (revocations, role changes).
pub trait EventStream: Send + Sync {
    /// The position just after the newest event: where a reader with an empty cache starts.
    fn events_head(&self) -> impl Future<Output = Result<EventCursor, StoreError>> + Send;

    /// Events after `after`, waiting up to `wait` for one to arrive. `gap` in the answer says
    /// events may have been lost (stream trimmed, store reset): the reader must drop its cache.
    fn read_events(
        &self,
        after: &EventCursor,
        wait: Duration,
    ) -> impl Future<Output = Result<EventBatch, StoreError>> + Send;
}

/// Last-use reports, written by a gateway in batches ([`crate::UsageLog`]).
pub trait UsageReport: Send + Sync {
    /// Reports last use for a batch of sessions in one round trip. Each session's expiry becomes
    /// `min(last_used + idle_timeout, max_expires_at)`; it never shrinks and a revoked or expired
    /// session is never revived. Returns how many sessions were extended.
    fn touch(
        &self,
        uses: &[(SessionId, u64)],
    ) -> impl Future<Output = Result<usize, StoreError>> + Send;

    /// Notes that `reporter` wrote last-use reports at `at`; at most
    /// [`MAX_REPORTERS`](crate::MAX_REPORTERS) are kept.
    fn report_seen(
        &self,
        reporter: &str,
        at: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Sessions as the IdP manages them: created at sign-in, revoked, listed and given new roles,
/// and the roles an administrator set for a subject.
pub trait SessionAdmin: Send + Sync {
    /// Stores a new session. The subject's index is written first, so that a forced logout can
    /// never miss a session that exists.
    fn create(&self, session: &Session) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Revokes one session and publishes [`Event::Revoked`](crate::Event::Revoked). `false` if
    /// it did not exist.
    fn revoke(&self, id: &SessionId) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Revokes every session of a subject (forced logout) and publishes
    /// [`Event::SubjectRevoked`](crate::Event::SubjectRevoked). Returns the sessions that were
    /// live.
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
    /// then publishes [`Event::RolesChanged`](crate::Event::RolesChanged). Returns how many were
    /// updated.
    fn update_sessions(
        &self,
        updates: &[(SessionId, Vec<String>, ValueToken)],
    ) -> impl Future<Output = Result<usize, StoreError>> + Send;

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
}

/// The IdP's renewal of value tokens before they expire.
///
/// Sessions are kept in a renewal schedule, ordered by their value token's `exp`: written by
/// [`SessionAdmin::create`], [`SessionAdmin::update_sessions`] and `replace_value_tokens`, left
/// by [`SessionAdmin::revoke`] and [`SessionAdmin::revoke_subject`], and tidied by
/// `value_tokens_due` of sessions that ended by themselves.
pub trait TokenRenewal: Send + Sync {
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

    /// Gives the renewal lease up if `holder` has it (an IdP stopping gracefully), so that
    /// another replica, or the same IdP restarted, renews at once instead of after the lease runs
    /// out. `true` if it was `holder`'s.
    fn release_renewal_lease(
        &self,
        holder: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

/// Users kept in the store: the IdP's directory.
pub trait UserDirectory: Send + Sync {
    /// Stores a new user: `false`, and nothing written, if the name is taken. A name longer than
    /// [`MAX_USERNAME_LEN`](crate::MAX_USERNAME_LEN) is refused with [`StoreError::Invalid`].
    fn create_user(&self, user: &User) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// The user with this name, if any.
    fn user(&self, username: &str)
    -> impl Future<Output = Result<Option<User>, StoreError>> + Send;

    /// Replaces a user's record (every field as given), whatever it holds now: `false` if there
    /// is no such user. A change made from a record read before goes through
    /// [`replace_user`](Self::replace_user) (or [`crate::change_user`]) instead, so that it
    /// never undoes a change made meanwhile.
    fn update_user(&self, user: &User) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Replaces a user's record with `new` only if it still is `current` field for field (as
    /// the caller read it): atomically, so of two changes made from the same record one is
    /// written and the other answered [`Replaced::Changed`], to be made again from a fresh
    /// read. `new` must name the same user ([`StoreError::Invalid`] otherwise).
    fn replace_user(
        &self,
        current: &User,
        new: &User,
    ) -> impl Future<Output = Result<Replaced, StoreError>> + Send;

    /// Deletes a user (not its sessions): `false` if there was none. The claims of its passkeys'
    /// credential ids ([`claim_passkey`](Self::claim_passkey)) are given up first.
    fn delete_user(&self, username: &str) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Claims a passkey's credential id (base64url, as the user record keeps it) for
    /// `username`, atomically: a credential id belongs to one user at most, so that it names
    /// its user unambiguously. Made before the passkey is added to the user's record, given up
    /// ([`release_passkey`](Self::release_passkey)) after it is removed.
    fn claim_passkey(
        &self,
        id: &str,
        username: &str,
    ) -> impl Future<Output = Result<Claimed, StoreError>> + Send;

    /// Gives up `username`'s claim of a credential id: `false` if it was not theirs.
    fn release_passkey(
        &self,
        id: &str,
        username: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// The user who claimed a credential id, if any.
    fn passkey_owner(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<String>, StoreError>> + Send;

    /// Takes one-time-password step `step` for `username`: `true` when it is later than every
    /// step the user used before (a code is good once, on every replica), `false` otherwise. The
    /// last step is kept for `keep`, longer than a step's code verifies.
    fn use_otp_step(
        &self,
        username: &str,
        step: u64,
        keep: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Users whose name starts with `prefix`, ordered by name (bytewise), after the name `after`
    /// (the previous page's `next`), at most `limit` (1 to
    /// [`MAX_USERS_PAGE`](crate::MAX_USERS_PAGE); clamped).
    fn list_users(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Result<UserPage, StoreError>> + Send;
}

/// Authorization codes, kept under their hash and redeemed once.
pub trait Codes: Send + Sync {
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
}

/// Sign-ins waiting for an upstream provider, each taken back once.
pub trait PendingSignIns: Send + Sync {
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

/// Short records kept under the hash of a name until they expire, shared by every IdP on the
/// store: which user an upstream provider's session belongs to, and the logout tokens used.
pub trait Notes: Send + Sync {
    /// Keeps `value` under `id` for `ttl`, replacing what was there.
    fn put_note(
        &self,
        id: &CodeId,
        value: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Keeps `value` under `id` for `ttl` unless something is kept there: `true` when this call
    /// wrote it (the first use of a one-time name), `false` when it was there already.
    fn put_note_once(
        &self,
        id: &CodeId,
        value: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// What is kept under `id`, until its TTL ends.
    fn note(&self, id: &CodeId) -> impl Future<Output = Result<Option<String>, StoreError>> + Send;
}

/// Deliveries owed to others (the back-channel logout tokens of clients), queued in the store so
/// that any IdP replica delivers them and a restart loses none. Each is an opaque payload under
/// an id, due at a time; a replica takes the due ones for a while, and finishes or requeues each.
pub trait Deliveries: Send + Sync {
    /// Queues `payload` under `id`, due at `due_ms` (Unix milliseconds), replacing what was queued
    /// under `id` (a retry). `false`, and nothing queued, when the queue holds
    /// [`MAX_DELIVERIES`](crate::MAX_DELIVERIES) others already.
    fn queue_delivery(
        &self,
        id: &str,
        payload: &str,
        due_ms: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Takes up to `limit` deliveries due at `now_ms`, soonest first, as `(id, payload)`: each is
    /// held for `hold` (no other call gets it before then, so a replica that stops while
    /// delivering leaves it to the others), until it is finished or queued again.
    fn deliveries_due(
        &self,
        now_ms: u64,
        hold: Duration,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<(String, String)>, StoreError>> + Send;

    /// Removes the delivery under `id` (delivered, or given up): `false` if there was none.
    fn finish_delivery(&self, id: &str) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

/// Failed logins counted per key, shared by every IdP on the store.
pub trait LoginThrottle: Send + Sync {
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
}

/// The bounded audit trail of administrators' actions.
pub trait AuditTrail: Send + Sync {
    /// Appends an administrator's action to the audit trail (its `id` is given by the store);
    /// the oldest entries beyond the store's bound are dropped.
    fn append_audit(
        &self,
        entry: &AuditEntry,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Audit entries, newest first, older than the entry `before` (the previous page's
    /// `next`), at most `limit` (1 to [`MAX_AUDIT_PAGE`](crate::MAX_AUDIT_PAGE); clamped). A
    /// malformed `before` is [`StoreError::Invalid`].
    fn audit(
        &self,
        before: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Result<AuditPage, StoreError>> + Send;
}

/// What operators look at: whether the store answers, and which reporters (gateways) wrote
/// last-use reports lately.
pub trait Health: Send + Sync {
    /// Checks that the store answers.
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The reporters seen at or after `since`, most recent first.
    fn reporters(
        &self,
        since: u64,
    ) -> impl Future<Output = Result<Vec<Reporter>, StoreError>> + Send;
}
