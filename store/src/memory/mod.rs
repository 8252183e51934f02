//! The in-memory store: the embedded default of `tokengate dev`, one process only.
//!
//! One state behind one lock (here), and the store's operations in one file per trait (or pair
//! of traits) they implement, as in `redis/`:
//!
//! * `sessions`: [`SessionRead`](crate::SessionRead) and [`SessionAdmin`](crate::SessionAdmin).
//! * `events`: [`EventStream`](crate::EventStream).
//! * `usage`: [`UsageReport`](crate::UsageReport).
//! * `renewal`: [`TokenRenewal`](crate::TokenRenewal).
//! * `users`: [`UserDirectory`](crate::UserDirectory).
//! * `codes`: [`Codes`](crate::Codes); `pending`: [`PendingSignIns`](crate::PendingSignIns) and
//!   [`Notes`](crate::Notes).
//! * `deliveries`: [`Deliveries`](crate::Deliveries).
//! * `throttle`: [`LoginThrottle`](crate::LoginThrottle).
//! * `audit`: [`AuditTrail`](crate::AuditTrail).
//! * [`Health`] is here.

mod audit;
mod codes;
mod deliveries;
mod events;
mod pending;
mod renewal;
mod sessions;
mod throttle;
mod usage;
mod users;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use crate::{
    AuditEntry, AuthCode, CodeId, DEFAULT_AUDIT_MAX_LEN, Event, Health, Reporter, Session,
    SessionId, StoreError, User,
};

/// How many events are kept for readers that fall behind.
const DEFAULT_EVENTS_MAX_LEN: usize = 10_000;
/// Creations between two sweeps of expired sessions.
const SWEEP_EVERY: u64 = 1024;

/// The token store in this process's memory: the embedded default of `tokengate dev`, passing the same contract suite as Redis.
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
    /// Notes and when they expire.
    notes: HashMap<CodeId, (String, std::time::Instant)>,
    /// Deliveries by when they are due (Unix ms), and each one's payload and due time.
    due: BTreeSet<(u64, String)>,
    deliveries: HashMap<String, (String, u64)>,
    /// The last one-time-password step each user used, and until when it is kept.
    otp_steps: HashMap<String, (u64, std::time::Instant)>,
    /// The user who claimed each passkey credential id.
    passkey_owners: HashMap<String, String>,
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
    /// An empty store.
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
        if let Some(old) = self.scheduled.insert(*id, due) {
            self.schedule.remove(&(old, *id));
        }
        self.schedule.insert((due, *id));
    }

    fn unschedule(&mut self, id: &SessionId) {
        if let Some(due) = self.scheduled.remove(id) {
            self.schedule.remove(&(due, *id));
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
            .map(|s| s.id)
            .collect();
        for id in expired {
            self.remove(&id);
        }
    }
}

impl Health for MemoryStore {
    async fn ping(&self) -> Result<(), StoreError> {
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
}
