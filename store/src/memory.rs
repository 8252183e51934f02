//! The in-memory store: the embedded default of `tokengate dev`, one process only.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;

use crate::user::{cut_page, username_fits};
use crate::{
    AuditEntry, AuditPage, AuthCode, CodeId, DEFAULT_AUDIT_MAX_LEN, Event, EventBatch, EventCursor,
    MAX_AUDIT_PAGE, MAX_REPORTERS, MAX_USERS_PAGE, Redeemed, Renewal, Reporter, Session, SessionId,
    StoreError, TokenStore, User, UserPage, ValueToken, now_unix,
};

/// How many events are kept for readers that fall behind.
const DEFAULT_EVENTS_MAX_LEN: usize = 10_000;
/// Creations between two sweeps of expired sessions.
const SWEEP_EVERY: u64 = 1024;

#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    /// The sequence number of the newest event, so readers can wait without polling.
    newest: watch::Sender<u64>,
    events_max_len: usize,
    audit_max_len: usize,
}

#[derive(Default)]
struct State {
    sessions: HashMap<SessionId, Session>,
    by_subject: HashMap<String, BTreeSet<SessionId>>,
    roles: HashMap<String, Vec<String>>,
    events: VecDeque<(u64, Event)>,
    seq: u64,
    creations: u64,
    /// Failed logins by key: failures, when the window ends, when a lockout ends.
    logins: HashMap<String, (u32, std::time::Instant, Option<std::time::Instant>)>,
    /// The renewal schedule, by value token expiry, and where each session stands in it.
    schedule: BTreeSet<(u64, SessionId)>,
    scheduled: HashMap<SessionId, u64>,
    /// The renewal lease: its holder and when it runs out.
    lease: Option<(String, std::time::Instant)>,
    users: BTreeMap<String, User>,
    /// Authorization codes: the record, the session its first use made, when it expires.
    codes: HashMap<CodeId, (AuthCode, Option<SessionId>, std::time::Instant)>,
    /// The audit trail, oldest first, each entry under its sequence number.
    audit: VecDeque<(u64, AuditEntry)>,
    audit_seq: u64,
    /// When each reporter of last use was last seen.
    reporters: HashMap<String, u64>,
    /// Pending records (sign-ins waiting for an upstream provider) and when they expire.
    pending: HashMap<CodeId, (String, std::time::Instant)>,
}

/// Most login keys kept; past it, the ones whose window and lockout are over go first.
const MAX_LOGIN_KEYS: usize = 100_000;
/// Codes kept before the expired ones are swept out.
const MAX_CODES: usize = 100_000;

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").finish_non_exhaustive()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::with_events_max_len(DEFAULT_EVENTS_MAX_LEN)
    }

    /// A store that keeps only the newest `max_len` events (tests use a small one).
    pub fn with_events_max_len(max_len: usize) -> Self {
        Self::bounded(max_len, DEFAULT_AUDIT_MAX_LEN)
    }

    /// A store that keeps only the newest `events_max_len` events and `audit_max_len` audit
    /// entries.
    pub fn bounded(events_max_len: usize, audit_max_len: usize) -> Self {
        MemoryStore {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                newest: watch::channel(0).0,
                events_max_len: events_max_len.max(1),
                audit_max_len: audit_max_len.max(1),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn publish(&self, state: &mut State, event: Event) {
        state.seq += 1;
        state.events.push_back((state.seq, event));
        while state.events.len() > self.inner.events_max_len {
            state.events.pop_front();
        }
        self.inner.newest.send_replace(state.seq);
    }
}

impl State {
    fn live(&mut self, id: &SessionId, now: u64) -> Option<&mut Session> {
        let expired = self.sessions.get(id).is_some_and(|s| !s.is_live(now));
        if expired {
            self.remove(id);
        }
        self.sessions.get_mut(id)
    }

    /// Puts a session at `due` in the renewal schedule (moving it if it was there).
    fn schedule(&mut self, id: &SessionId, due: u64) {
        if let Some(old) = self.scheduled.insert(id.clone(), due) {
            self.schedule.remove(&(old, id.clone()));
        }
        self.schedule.insert((due, id.clone()));
    }

    fn unschedule(&mut self, id: &SessionId) {
        if let Some(due) = self.scheduled.remove(id) {
            self.schedule.remove(&(due, id.clone()));
        }
    }

    fn remove(&mut self, id: &SessionId) -> Option<Session> {
        self.unschedule(id);
        let session = self.sessions.remove(id)?;
        if let Some(ids) = self.by_subject.get_mut(&session.subject) {
            ids.remove(id);
            if ids.is_empty() {
                self.by_subject.remove(&session.subject);
            }
        }
        Some(session)
    }

    fn sweep(&mut self, now: u64) {
        let expired: Vec<SessionId> = self
            .sessions
            .values()
            .filter(|s| !s.is_live(now))
            .map(|s| s.id.clone())
            .collect();
        for id in expired {
            self.remove(&id);
        }
    }
}

impl TokenStore for MemoryStore {
    async fn create(&self, session: &Session) -> Result<(), StoreError> {
        let mut state = self.state();
        state.creations += 1;
        if state.creations.is_multiple_of(SWEEP_EVERY) {
            state.sweep(now_unix());
        }
        state
            .by_subject
            .entry(session.subject.clone())
            .or_default()
            .insert(session.id.clone());
        state.schedule(&session.id, session.value_token.renewal_due());
        state.sessions.insert(session.id.clone(), session.clone());
        Ok(())
    }

    async fn lookup(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        Ok(self.state().live(id, now_unix()).map(|s| s.clone()))
    }

    async fn touch(&self, uses: &[(SessionId, u64)]) -> Result<usize, StoreError> {
        let now = now_unix();
        let mut state = self.state();
        let mut extended = 0;
        for (id, last_used) in uses {
            if let Some(session) = state.live(id, now)
                && *last_used > session.last_used_at
            {
                session.last_used_at = *last_used;
                extended += 1;
            }
        }
        Ok(extended)
    }

    async fn revoke(&self, id: &SessionId) -> Result<bool, StoreError> {
        let mut state = self.state();
        let existed = state.live(id, now_unix()).is_some();
        if existed {
            state.remove(id);
            self.publish(
                &mut state,
                Event::Revoked {
                    session: id.clone(),
                },
            );
        }
        Ok(existed)
    }

    async fn revoke_subject(&self, subject: &str) -> Result<Vec<SessionId>, StoreError> {
        let now = now_unix();
        let mut state = self.state();
        let ids: Vec<SessionId> = state
            .by_subject
            .get(subject)
            .map(|ids| ids.iter().cloned().collect())
            .unwrap_or_default();
        let mut live = Vec::with_capacity(ids.len());
        for id in &ids {
            if state.live(id, now).is_some() {
                live.push(id.clone());
            }
            state.remove(id);
        }
        if !ids.is_empty() {
            let event = Event::SubjectRevoked {
                subject: subject.to_owned(),
                sessions: ids,
            };
            self.publish(&mut state, event);
        }
        Ok(live)
    }

    async fn sessions(&self, subject: &str) -> Result<Vec<Session>, StoreError> {
        let now = now_unix();
        let mut state = self.state();
        let ids: Vec<SessionId> = state
            .by_subject
            .get(subject)
            .map(|ids| ids.iter().cloned().collect())
            .unwrap_or_default();
        Ok(ids
            .iter()
            .filter_map(|id| state.live(id, now).map(|s| s.clone()))
            .collect())
    }

    async fn update_sessions(
        &self,
        updates: &[(SessionId, Vec<String>, ValueToken)],
    ) -> Result<usize, StoreError> {
        let now = now_unix();
        let mut state = self.state();
        let mut updated = Vec::with_capacity(updates.len());
        for (id, roles, token) in updates {
            if let Some(session) = state.live(id, now) {
                session.roles = roles.clone();
                session.value_token = token.clone();
                state.schedule(id, token.renewal_due());
                updated.push(id.clone());
            }
        }
        let count = updated.len();
        if count > 0 {
            self.publish(&mut state, Event::RolesChanged { sessions: updated });
        }
        Ok(count)
    }

    async fn value_tokens_due(
        &self,
        before: u64,
        skip: usize,
        limit: usize,
    ) -> Result<Vec<Session>, StoreError> {
        let now = now_unix();
        let mut state = self.state();
        let entries: Vec<(u64, SessionId)> = state
            .schedule
            .iter()
            .take_while(|(due, _)| *due <= before)
            .skip(skip)
            .cloned()
            .collect();
        let mut sessions = Vec::new();
        for (due, id) in entries {
            if sessions.len() == limit {
                break;
            }
            match state.live(&id, now).map(|s| s.clone()) {
                Some(s) if due < s.max_expires_at => sessions.push(s),
                // Ended, or its token already lasts as long as the session: nothing to renew.
                _ => state.unschedule(&id),
            }
        }
        Ok(sessions)
    }

    async fn replace_value_tokens(&self, renewals: &[Renewal]) -> Result<usize, StoreError> {
        let now = now_unix();
        let mut state = self.state();
        let mut replaced = 0;
        for r in renewals {
            let Some(session) = state.live(&r.session, now) else {
                continue;
            };
            if session.value_token != r.replaces {
                continue;
            }
            session.value_token = r.token.clone();
            state.schedule(&r.session, r.token.renewal_due());
            replaced += 1;
        }
        Ok(replaced)
    }

    async fn renewal_lease(&self, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        let now = std::time::Instant::now();
        let mut state = self.state();
        if let Some((other, until)) = &state.lease
            && other != holder
            && *until > now
        {
            return Ok(false);
        }
        state.lease = Some((holder.to_owned(), now + ttl));
        Ok(true)
    }

    async fn subject_roles(&self, subject: &str) -> Result<Option<Vec<String>>, StoreError> {
        Ok(self.state().roles.get(subject).cloned())
    }

    async fn set_subject_roles(&self, subject: &str, roles: &[String]) -> Result<(), StoreError> {
        self.state()
            .roles
            .insert(subject.to_owned(), roles.to_vec());
        Ok(())
    }

    async fn clear_subject_roles(&self, subject: &str) -> Result<bool, StoreError> {
        Ok(self.state().roles.remove(subject).is_some())
    }

    async fn events_head(&self) -> Result<EventCursor, StoreError> {
        let seq = self.state().seq;
        Ok(EventCursor {
            epoch: String::new(),
            id: seq.to_string(),
            seq,
        })
    }

    async fn read_events(
        &self,
        after: &EventCursor,
        wait: Duration,
    ) -> Result<EventBatch, StoreError> {
        let mut newest = self.inner.newest.subscribe();
        if *newest.borrow_and_update() <= after.seq {
            // Timing out just means no event arrived; the answer below is then empty.
            let _ = tokio::time::timeout(wait, newest.changed()).await;
        }
        let state = self.state();
        let oldest_kept = state.events.front().map(|(seq, _)| *seq);
        let gap = after.seq > state.seq || oldest_kept.is_some_and(|oldest| oldest > after.seq + 1);
        let events: Vec<Event> = state
            .events
            .iter()
            .filter(|(seq, _)| *seq > after.seq)
            .map(|(_, e)| e.clone())
            .collect();
        let seq = if gap || !events.is_empty() {
            state.seq
        } else {
            after.seq
        };
        Ok(EventBatch {
            events,
            cursor: EventCursor {
                epoch: String::new(),
                id: seq.to_string(),
                seq,
            },
            gap,
        })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn login_failed(
        &self,
        key: &str,
        limit: u32,
        window: Duration,
        lockout: Duration,
    ) -> Result<bool, StoreError> {
        let now = std::time::Instant::now();
        let mut state = self.state();
        if state.logins.len() >= MAX_LOGIN_KEYS {
            state
                .logins
                .retain(|_, (_, ends, locked)| *ends > now || locked.is_some_and(|l| l > now));
        }
        let entry = state
            .logins
            .entry(key.to_owned())
            .or_insert((0, now + window, None));
        if entry.1 <= now {
            *entry = (0, now + window, entry.2);
        }
        entry.0 += 1;
        if entry.0 >= limit {
            *entry = (0, now + window, Some(now + lockout));
            return Ok(true);
        }
        Ok(false)
    }

    async fn login_locked(&self, key: &str) -> Result<Option<Duration>, StoreError> {
        let now = std::time::Instant::now();
        Ok(self
            .state()
            .logins
            .get(key)
            .and_then(|(_, _, locked)| *locked)
            .filter(|until| *until > now)
            .map(|until| until - now))
    }

    async fn login_succeeded(&self, key: &str) -> Result<(), StoreError> {
        if let Some(entry) = self.state().logins.get_mut(key) {
            entry.0 = 0;
        }
        Ok(())
    }

    async fn create_user(&self, user: &User) -> Result<bool, StoreError> {
        if !username_fits(&user.username) {
            return Err(StoreError::Invalid { what: "username" });
        }
        let mut state = self.state();
        if state.users.contains_key(&user.username) {
            return Ok(false);
        }
        state.users.insert(user.username.clone(), user.clone());
        Ok(true)
    }

    async fn user(&self, username: &str) -> Result<Option<User>, StoreError> {
        Ok(self.state().users.get(username).cloned())
    }

    async fn update_user(&self, user: &User) -> Result<bool, StoreError> {
        Ok(match self.state().users.get_mut(&user.username) {
            Some(stored) => {
                *stored = user.clone();
                true
            }
            None => false,
        })
    }

    async fn delete_user(&self, username: &str) -> Result<bool, StoreError> {
        Ok(self.state().users.remove(username).is_some())
    }

    async fn list_users(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<UserPage, StoreError> {
        let limit = limit.clamp(1, MAX_USERS_PAGE);
        let start = match after {
            Some(after) if after >= prefix => Bound::Excluded(after.to_owned()),
            _ => Bound::Included(prefix.to_owned()),
        };
        let state = self.state();
        let mut users: Vec<User> = state
            .users
            .range((start, Bound::Unbounded))
            .take_while(|(name, _)| name.starts_with(prefix))
            .take(limit + 1)
            .map(|(_, user)| user.clone())
            .collect();
        let next = cut_page(&mut users, limit, |u| &u.username);
        Ok(UserPage { users, next })
    }

    async fn create_code(
        &self,
        id: &CodeId,
        code: &AuthCode,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let now = std::time::Instant::now();
        let mut state = self.state();
        if state.codes.len() >= MAX_CODES {
            state.codes.retain(|_, (_, _, expires)| *expires > now);
        }
        if state.codes.get(id).is_some_and(|(_, _, e)| *e > now) {
            return Ok(false);
        }
        state
            .codes
            .insert(id.clone(), (code.clone(), None, now + ttl));
        Ok(true)
    }

    async fn redeem_code(&self, id: &CodeId, session: &SessionId) -> Result<Redeemed, StoreError> {
        let now = std::time::Instant::now();
        let mut state = self.state();
        Ok(match state.codes.get_mut(id) {
            Some((_, _, expires)) if *expires <= now => {
                state.codes.remove(id);
                Redeemed::Unknown
            }
            Some((_, Some(first), _)) => Redeemed::Replayed(Some(first.clone())),
            Some((code, used, _)) => {
                *used = Some(session.clone());
                Redeemed::Fresh(code.clone())
            }
            None => Redeemed::Unknown,
        })
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let mut state = self.state();
        state.audit_seq += 1;
        let seq = state.audit_seq;
        state.audit.push_back((
            seq,
            AuditEntry {
                id: seq.to_string(),
                ..entry.clone()
            },
        ));
        while state.audit.len() > self.inner.audit_max_len {
            state.audit.pop_front();
        }
        Ok(())
    }

    async fn audit(&self, before: Option<&str>, limit: usize) -> Result<AuditPage, StoreError> {
        let before = match before {
            Some(b) => b.parse::<u64>().map_err(|_| StoreError::Invalid {
                what: "audit cursor",
            })?,
            None => u64::MAX,
        };
        let limit = limit.clamp(1, MAX_AUDIT_PAGE);
        let state = self.state();
        let mut entries: Vec<AuditEntry> = state
            .audit
            .iter()
            .rev()
            .filter(|(seq, _)| *seq < before)
            .take(limit + 1)
            .map(|(_, e)| e.clone())
            .collect();
        let next = cut_page(&mut entries, limit, |e| e.id.as_str());
        Ok(AuditPage { entries, next })
    }

    async fn report_seen(&self, reporter: &str, at: u64) -> Result<(), StoreError> {
        let mut state = self.state();
        let seen = state.reporters.entry(reporter.to_owned()).or_insert(at);
        *seen = (*seen).max(at);
        if state.reporters.len() > MAX_REPORTERS
            && let Some(oldest) = state
                .reporters
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(name, _)| name.clone())
        {
            state.reporters.remove(&oldest);
        }
        Ok(())
    }

    async fn reporters(&self, since: u64) -> Result<Vec<Reporter>, StoreError> {
        let mut seen: Vec<Reporter> = self
            .state()
            .reporters
            .iter()
            .filter(|(_, at)| **at >= since)
            .map(|(name, at)| Reporter {
                name: name.clone(),
                last_seen: *at,
            })
            .collect();
        seen.sort_by(|a, b| b.last_seen.cmp(&a.last_seen).then(a.name.cmp(&b.name)));
        Ok(seen)
    }
    async fn create_pending(
        &self,
        id: &CodeId,
        record: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let now = std::time::Instant::now();
        let mut state = self.state();
        if state.pending.len() >= MAX_CODES {
            state.pending.retain(|_, (_, expires)| *expires > now);
        }
        if state.pending.get(id).is_some_and(|(_, e)| *e > now) {
            return Ok(false);
        }
        state
            .pending
            .insert(id.clone(), (record.to_owned(), now + ttl));
        Ok(true)
    }

    async fn take_pending(&self, id: &CodeId) -> Result<Option<String>, StoreError> {
        let now = std::time::Instant::now();
        Ok(self
            .state()
            .pending
            .remove(id)
            .filter(|(_, expires)| *expires > now)
            .map(|(record, _)| record))
    }
}
