//! The Redis store: one server, a Redis Cluster, or the master of a Sentinel group.
//!
//! * `schema`: the key schema and the Lua scripts on it (the only place that knows them).
//! * `connection`: connections per topology, TLS, and the event reader's own connection.
//! * `events`: the event stream: publishing, its head, and the blocking reader with gap
//!   detection.

mod connection;
// The fuzz helpers in `testing` reach the decoders.
pub(crate) mod events;
pub(crate) mod schema;

use std::sync::Arc;
use std::time::Duration;

use redis::{Cmd, ErrorKind, Script, ServerErrorKind, Value};

use self::connection::Con;
pub use self::connection::RedisOptions;
use self::events::EventReader;
use self::schema::{Keys, Scripts, decode_session, decode_user, session_fields, user_fields};
use crate::user::{cut_page, username_fits};
use crate::{
    AuditEntry, AuditPage, AuthCode, CodeId, Event, EventBatch, EventCursor, MAX_AUDIT_PAGE,
    MAX_REPORTERS, MAX_USERS_PAGE, Redeemed, Renewal, Reporter, Session, SessionId, StoreError,
    TokenStore, User, UserPage, ValueToken, now_unix,
};

/// Sessions, indexes and events in Redis.
#[derive(Clone)]
pub struct RedisStore {
    con: Con,
    shared: Arc<Shared>,
}

struct Shared {
    /// Blocking stream reads, on a connection of their own.
    reader: EventReader,
    keys: Keys,
    options: RedisOptions,
    scripts: Scripts,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password.
        f.debug_struct("RedisStore")
            .field("key_prefix", &self.shared.options.key_prefix)
            .finish_non_exhaustive()
    }
}

fn is_noscript(e: &redis::RedisError) -> bool {
    e.kind() == ErrorKind::Server(ServerErrorKind::NoScript)
}

impl RedisStore {
    /// A store for `url` (`redis://[:password@]host:port[/db]`). Connects lazily: the process can
    /// start while Redis is still down and recovers by itself when it comes back.
    pub fn connect(url: &str, options: RedisOptions) -> Result<Self, StoreError> {
        let (con, source) = connection::standalone(url, &options)?;
        Ok(Self::with(con, source, options))
    }

    /// A store on a Redis Cluster reached through `nodes` (seed URLs; the rest of the cluster
    /// is discovered). Connects on first use, like [`RedisStore::connect`].
    pub fn connect_cluster(nodes: &[String], options: RedisOptions) -> Result<Self, StoreError> {
        let (con, source) = connection::cluster(nodes, &options)?;
        Ok(Self::with(con, source, options))
    }

    /// A store on the master named `master_name`, found through `sentinels` (URLs of Sentinel
    /// nodes) and found again after a failover. `master_url` carries what the master itself
    /// needs (password, database, `rediss://`); its host and port are ignored.
    pub fn connect_sentinel(
        sentinels: &[String],
        master_name: &str,
        master_url: &str,
        options: RedisOptions,
    ) -> Result<Self, StoreError> {
        let (con, source) = connection::sentinel(sentinels, master_name, master_url, &options)?;
        Ok(Self::with(con, source, options))
    }

    fn with(con: Con, source: connection::Source, options: RedisOptions) -> Self {
        RedisStore {
            con,
            shared: Arc::new(Shared {
                reader: EventReader::new(source),
                keys: Keys::new(&options.key_prefix),
                options,
                scripts: Scripts::new(),
            }),
        }
    }

    /// Runs calls of one script, loading it first if Redis does not know it yet (every script
    /// here is safe to run twice).
    async fn eval_each<T: redis::FromRedisValue>(
        &self,
        script: &Script,
        calls: impl Fn(&str) -> Vec<Cmd>,
    ) -> Result<Vec<T>, StoreError> {
        let cmds = calls(script.get_hash());
        match self.con.query_each(&cmds).await {
            Err(e) if is_noscript(&e) => {
                let mut con = self.con.clone();
                script
                    .prepare_invoke()
                    .load_async(&mut con)
                    .await
                    .map_err(StoreError::unavailable)?;
                self.con
                    .query_each(&cmds)
                    .await
                    .map_err(StoreError::unavailable)
            }
            other => other.map_err(StoreError::unavailable),
        }
    }

    async fn publish(&self, event: &Event) -> Result<(), StoreError> {
        let shared = &self.shared;
        let max_len = shared.options.events_max_len;
        events::publish(&self.con, &shared.keys, &shared.scripts, max_len, event).await
    }

    /// Puts sessions at their value token's expiry in the renewal schedule (or moves them).
    async fn schedule<'a>(
        &self,
        entries: impl IntoIterator<Item = (&'a SessionId, &'a ValueToken)>,
    ) -> Result<(), StoreError> {
        let mut cmd = redis::cmd("ZADD");
        cmd.arg(&self.shared.keys.renewal);
        let mut any = false;
        for (id, token) in entries {
            cmd.arg(token.renewal_due()).arg(id.as_str());
            any = true;
        }
        if !any {
            return Ok(());
        }
        let _: Value = cmd
            .query_async(&mut self.con.clone())
            .await
            .map_err(StoreError::unavailable)?;
        Ok(())
    }

    /// `command` (`HGETALL`, `DEL`) on the record of each of these sessions.
    fn on_each_session<'a>(
        &self,
        command: &str,
        ids: impl IntoIterator<Item = &'a SessionId>,
    ) -> Vec<Cmd> {
        ids.into_iter()
            .map(|id| {
                let mut cmd = redis::cmd(command);
                cmd.arg(self.shared.keys.session(id));
                cmd
            })
            .collect()
    }

    /// `ZREM` of session ids from an index (the subject's, or the renewal schedule).
    fn unindex<'a>(index: &str, ids: impl IntoIterator<Item = &'a str>) -> Cmd {
        let mut cmd = redis::cmd("ZREM");
        cmd.arg(index);
        for id in ids {
            cmd.arg(id);
        }
        cmd
    }
}

impl TokenStore for RedisStore {
    async fn create(&self, s: &Session) -> Result<(), StoreError> {
        let fields = session_fields(s).map_err(|_| StoreError::Corrupt { what: "roles" })?;
        let mut con = self.con.clone();
        // Indexes first: a session that exists is always reachable by a forced logout, and
        // always in the renewal schedule.
        self.schedule([(&s.id, &s.value_token)]).await?;
        self.shared
            .scripts
            .index_add
            .key(self.shared.keys.subject(&s.subject, "sessions"))
            .arg(s.id.as_str())
            .arg(s.max_expires_at)
            .arg(now_unix())
            .invoke_async::<Value>(&mut con)
            .await
            .map_err(StoreError::unavailable)?;
        self.shared
            .scripts
            .create
            .key(self.shared.keys.session(&s.id))
            .arg(s.expires_at())
            .arg(fields)
            .invoke_async::<Value>(&mut con)
            .await
            .map_err(StoreError::unavailable)?;
        Ok(())
    }

    async fn lookup(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        let mut con = self.con.clone();
        let fields: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(self.shared.keys.session(id))
            .query_async(&mut con)
            .await
            .map_err(StoreError::unavailable)?;
        if fields.is_empty() {
            return Ok(None);
        }
        let session =
            decode_session(id.clone(), fields).ok_or(StoreError::Corrupt { what: "session" })?;
        Ok(session.is_live(now_unix()).then_some(session))
    }

    async fn touch(&self, uses: &[(SessionId, u64)]) -> Result<usize, StoreError> {
        if uses.is_empty() {
            return Ok(0);
        }
        let extended: Vec<i64> = self
            .eval_each(&self.shared.scripts.touch, |sha| {
                uses.iter()
                    .map(|(id, last_used)| {
                        let mut cmd = redis::cmd("EVALSHA");
                        cmd.arg(sha)
                            .arg(1)
                            .arg(self.shared.keys.session(id))
                            .arg(*last_used);
                        cmd
                    })
                    .collect()
            })
            .await?;
        Ok(extended.iter().filter(|n| **n == 1).count())
    }

    async fn revoke(&self, id: &SessionId) -> Result<bool, StoreError> {
        let mut con = self.con.clone();
        let subject: Option<String> = self
            .shared
            .scripts
            .revoke
            .key(self.shared.keys.session(id))
            .invoke_async(&mut con)
            .await
            .map_err(StoreError::unavailable)?;
        let Some(subject) = subject else {
            return Ok(false);
        };
        self.publish(&Event::Revoked {
            session: id.clone(),
        })
        .await?;
        let keys = &self.shared.keys;
        let unindex = [
            Self::unindex(&keys.subject(&subject, "sessions"), [id.as_str()]),
            Self::unindex(&keys.renewal, [id.as_str()]),
        ];
        let _: Vec<Value> = self
            .con
            .query_each(&unindex)
            .await
            .map_err(StoreError::unavailable)?;
        Ok(true)
    }

    async fn revoke_subject(&self, subject: &str) -> Result<Vec<SessionId>, StoreError> {
        let index = self.shared.keys.subject(subject, "sessions");
        let mut con = self.con.clone();
        let ids: Vec<String> = redis::cmd("ZRANGE")
            .arg(&index)
            .arg(0)
            .arg(-1)
            .query_async(&mut con)
            .await
            .map_err(StoreError::unavailable)?;
        let ids: Vec<SessionId> = ids.iter().filter_map(|s| SessionId::parse(s)).collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // Delete, then announce, then unindex: after a failure part-way, a retry finds the
        // same ids in the index and announces them again (harmless), so none is forgotten.
        let deletes = self.on_each_session("DEL", &ids);
        let deleted: Vec<i64> = self
            .con
            .query_each(&deletes)
            .await
            .map_err(StoreError::unavailable)?;
        self.publish(&Event::SubjectRevoked {
            subject: subject.to_owned(),
            sessions: ids.clone(),
        })
        .await?;
        let unindex = [
            Self::unindex(&index, ids.iter().map(SessionId::as_str)),
            Self::unindex(&self.shared.keys.renewal, ids.iter().map(SessionId::as_str)),
        ];
        let _: Vec<Value> = self
            .con
            .query_each(&unindex)
            .await
            .map_err(StoreError::unavailable)?;
        Ok(ids
            .into_iter()
            .zip(deleted)
            .filter(|(_, n)| *n == 1)
            .map(|(id, _)| id)
            .collect())
    }

    async fn sessions(&self, subject: &str) -> Result<Vec<Session>, StoreError> {
        let index = self.shared.keys.subject(subject, "sessions");
        let mut con = self.con.clone();
        let ids: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(&index)
            .arg(format!("({}", now_unix()))
            .arg("+inf")
            .query_async(&mut con)
            .await
            .map_err(StoreError::unavailable)?;
        let ids: Vec<SessionId> = ids.iter().filter_map(|s| SessionId::parse(s)).collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let reads = self.on_each_session("HGETALL", &ids);
        let records: Vec<Vec<(String, String)>> = self
            .con
            .query_each(&reads)
            .await
            .map_err(StoreError::unavailable)?;
        let now = now_unix();
        let mut sessions = Vec::with_capacity(ids.len());
        let mut ended = Vec::new();
        for (id, fields) in ids.into_iter().zip(records) {
            if fields.is_empty() {
                ended.push(id);
                continue;
            }
            match decode_session(id.clone(), fields) {
                Some(s) if s.is_live(now) => sessions.push(s),
                Some(_) => ended.push(id),
                None => return Err(StoreError::Corrupt { what: "session" }),
            }
        }
        if !ended.is_empty() {
            // Idle-expired sessions leave their index entry behind; tidy up on the way.
            let _: Value = redis::cmd("ZREM")
                .arg(&index)
                .arg(ended.iter().map(SessionId::as_str).collect::<Vec<_>>())
                .query_async(&mut con)
                .await
                .map_err(StoreError::unavailable)?;
        }
        Ok(sessions)
    }

    async fn update_sessions(
        &self,
        updates: &[(SessionId, Vec<String>, ValueToken)],
    ) -> Result<usize, StoreError> {
        if updates.is_empty() {
            return Ok(0);
        }
        let encoded = updates
            .iter()
            .map(|(_, roles, _)| serde_json::to_string(roles))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| StoreError::Corrupt { what: "roles" })?;
        let done: Vec<i64> = self
            .eval_each(&self.shared.scripts.update, |sha| {
                updates
                    .iter()
                    .zip(&encoded)
                    .map(|((id, _, token), roles)| {
                        let mut cmd = redis::cmd("EVALSHA");
                        cmd.arg(sha)
                            .arg(1)
                            .arg(self.shared.keys.session(id))
                            .arg(roles)
                            .arg(token.expose());
                        cmd
                    })
                    .collect()
            })
            .await?;
        let updated: Vec<&(SessionId, Vec<String>, ValueToken)> = updates
            .iter()
            .zip(&done)
            .filter(|(_, n)| **n == 1)
            .map(|(update, _)| update)
            .collect();
        let count = updated.len();
        if count > 0 {
            let sessions = updated.iter().map(|(id, _, _)| id.clone()).collect();
            self.publish(&Event::RolesChanged { sessions }).await?;
            self.schedule(updated.iter().map(|(id, _, token)| (id, token)))
                .await?;
        }
        Ok(count)
    }

    async fn value_tokens_due(
        &self,
        before: u64,
        skip: usize,
        limit: usize,
    ) -> Result<Vec<Session>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let schedule = &self.shared.keys.renewal;
        let mut con = self.con.clone();
        loop {
            let entries: Vec<(String, f64)> = redis::cmd("ZRANGEBYSCORE")
                .arg(schedule)
                .arg("-inf")
                .arg(before)
                .arg("WITHSCORES")
                .arg("LIMIT")
                .arg(skip)
                .arg(limit)
                .query_async(&mut con)
                .await
                .map_err(StoreError::unavailable)?;
            if entries.is_empty() {
                return Ok(Vec::new());
            }
            let ids: Vec<Option<SessionId>> =
                entries.iter().map(|(id, _)| SessionId::parse(id)).collect();
            let reads = self.on_each_session("HGETALL", ids.iter().flatten());
            let mut records = self
                .con
                .query_each::<Vec<(String, String)>>(&reads)
                .await
                .map_err(StoreError::unavailable)?
                .into_iter();
            let now = now_unix();
            let mut due = Vec::new();
            let mut done = Vec::new();
            for ((member, score), id) in entries.iter().zip(ids) {
                let session = id.and_then(|id| decode_session(id, records.next()?));
                match session {
                    Some(s) if s.is_live(now) && (*score as u64) < s.max_expires_at => due.push(s),
                    // Ended (or unreadable), or its token lasts as long as the session.
                    _ => done.push(member.as_str()),
                }
            }
            if !done.is_empty() {
                let _: Value = Self::unindex(schedule, done.iter().copied())
                    .query_async(&mut con)
                    .await
                    .map_err(StoreError::unavailable)?;
            }
            // Every entry read had nothing to renew: the next ones moved up; read again.
            if !due.is_empty() || entries.len() < limit {
                return Ok(due);
            }
        }
    }

    async fn replace_value_tokens(&self, renewals: &[Renewal]) -> Result<usize, StoreError> {
        if renewals.is_empty() {
            return Ok(0);
        }
        let done: Vec<i64> = self
            .eval_each(&self.shared.scripts.replace, |sha| {
                renewals
                    .iter()
                    .map(|r| {
                        let mut cmd = redis::cmd("EVALSHA");
                        cmd.arg(sha)
                            .arg(1)
                            .arg(self.shared.keys.session(&r.session))
                            .arg(r.replaces.expose())
                            .arg(r.token.expose());
                        cmd
                    })
                    .collect()
            })
            .await?;
        let replaced: Vec<&Renewal> = renewals
            .iter()
            .zip(&done)
            .filter(|(_, n)| **n == 1)
            .map(|(r, _)| r)
            .collect();
        // After the tokens: a failure in between leaves an earlier entry, renewed once more.
        self.schedule(replaced.iter().map(|r| (&r.session, &r.token)))
            .await?;
        Ok(replaced.len())
    }

    async fn renewal_lease(&self, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        let taken: i64 = self
            .shared
            .scripts
            .lease
            .key(&self.shared.keys.renewal_lease)
            .arg(holder)
            .arg(ttl.as_millis().max(1) as u64)
            .invoke_async(&mut self.con.clone())
            .await
            .map_err(StoreError::unavailable)?;
        Ok(taken == 1)
    }

    async fn subject_roles(&self, subject: &str) -> Result<Option<Vec<String>>, StoreError> {
        let mut con = self.con.clone();
        let raw: Option<String> = redis::cmd("GET")
            .arg(self.shared.keys.subject(subject, "roles"))
            .query_async(&mut con)
            .await
            .map_err(StoreError::unavailable)?;
        raw.map(|r| serde_json::from_str(&r).map_err(|_| StoreError::Corrupt { what: "roles" }))
            .transpose()
    }

    async fn set_subject_roles(&self, subject: &str, roles: &[String]) -> Result<(), StoreError> {
        let raw =
            serde_json::to_string(roles).map_err(|_| StoreError::Corrupt { what: "roles" })?;
        let mut con = self.con.clone();
        let _: Value = redis::cmd("SET")
            .arg(self.shared.keys.subject(subject, "roles"))
            .arg(raw)
            .query_async(&mut con)
            .await
            .map_err(StoreError::unavailable)?;
        Ok(())
    }

    async fn clear_subject_roles(&self, subject: &str) -> Result<bool, StoreError> {
        let mut con = self.con.clone();
        let removed: i64 = redis::cmd("DEL")
            .arg(self.shared.keys.subject(subject, "roles"))
            .query_async(&mut con)
            .await
            .map_err(StoreError::unavailable)?;
        Ok(removed == 1)
    }

    async fn events_head(&self) -> Result<EventCursor, StoreError> {
        events::head(
            &mut self.con.clone(),
            &self.shared.keys,
            &self.shared.scripts,
        )
        .await
    }

    async fn read_events(
        &self,
        after: &EventCursor,
        wait: Duration,
    ) -> Result<EventBatch, StoreError> {
        let shared = &self.shared;
        shared
            .reader
            .read(&shared.keys, &shared.scripts, &shared.options, after, wait)
            .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut con = self.con.clone();
        let _: String = redis::cmd("PING")
            .query_async(&mut con)
            .await
            .map_err(StoreError::unavailable)?;
        Ok(())
    }

    async fn login_failed(
        &self,
        key: &str,
        limit: u32,
        window: Duration,
        lockout: Duration,
    ) -> Result<bool, StoreError> {
        let mut con = self.con.clone();
        let locked: i64 = self
            .shared
            .scripts
            .login_failed
            .key(self.shared.keys.login(key, "n"))
            .key(self.shared.keys.login(key, "lock"))
            .arg(limit)
            .arg(window.as_millis().max(1) as u64)
            .arg(lockout.as_millis().max(1) as u64)
            .invoke_async(&mut con)
            .await
            .map_err(StoreError::unavailable)?;
        Ok(locked == 1)
    }

    async fn login_locked(&self, key: &str) -> Result<Option<Duration>, StoreError> {
        let mut con = self.con.clone();
        let ms: i64 = redis::cmd("PTTL")
            .arg(self.shared.keys.login(key, "lock"))
            .query_async(&mut con)
            .await
            .map_err(StoreError::unavailable)?;
        Ok((ms > 0).then(|| Duration::from_millis(ms as u64)))
    }

    async fn login_succeeded(&self, key: &str) -> Result<(), StoreError> {
        let mut con = self.con.clone();
        let _: Value = redis::cmd("DEL")
            .arg(self.shared.keys.login(key, "n"))
            .query_async(&mut con)
            .await
            .map_err(StoreError::unavailable)?;
        Ok(())
    }

    async fn create_user(&self, user: &User) -> Result<bool, StoreError> {
        if !username_fits(&user.username) {
            return Err(StoreError::Invalid { what: "username" });
        }
        self.put_user(user, false).await
    }

    async fn user(&self, username: &str) -> Result<Option<User>, StoreError> {
        if !username_fits(username) {
            return Ok(None);
        }
        let mut con = self.con.clone();
        let fields: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(self.shared.keys.subject(username, "user"))
            .query_async(&mut con)
            .await
            .map_err(StoreError::unavailable)?;
        if fields.is_empty() {
            return Ok(None);
        }
        decode_user(fields)
            .map(Some)
            .ok_or(StoreError::Corrupt { what: "user" })
    }

    async fn update_user(&self, user: &User) -> Result<bool, StoreError> {
        if !username_fits(&user.username) {
            return Ok(false);
        }
        self.put_user(user, true).await
    }

    async fn delete_user(&self, username: &str) -> Result<bool, StoreError> {
        if !username_fits(username) {
            return Ok(false);
        }
        let mut con = self.con.clone();
        // Record first, index after: a retry after a failure in between finds the name still
        // indexed and removes it.
        let deleted: i64 = redis::cmd("DEL")
            .arg(self.shared.keys.subject(username, "user"))
            .query_async(&mut con)
            .await
            .map_err(StoreError::unavailable)?;
        let _: Value = redis::cmd("ZREM")
            .arg(&self.shared.keys.users)
            .arg(username)
            .query_async(&mut con)
            .await
            .map_err(StoreError::unavailable)?;
        Ok(deleted == 1)
    }

    async fn list_users(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<UserPage, StoreError> {
        let limit = limit.clamp(1, MAX_USERS_PAGE);
        let (min, max) = lex_range(prefix, after);
        let mut con = self.con.clone();
        // One more than asked: whether it is there says whether there is a next page.
        let mut names: Vec<String> = redis::cmd("ZRANGEBYLEX")
            .arg(&self.shared.keys.users)
            .arg(min)
            .arg(max)
            .arg("LIMIT")
            .arg(0)
            .arg(limit + 1)
            .query_async(&mut con)
            .await
            .map_err(StoreError::unavailable)?;
        let next = cut_page(&mut names, limit, String::as_str);
        if names.is_empty() {
            return Ok(UserPage {
                users: Vec::new(),
                next,
            });
        }
        let reads: Vec<Cmd> = names
            .iter()
            .map(|name| {
                let mut cmd = redis::cmd("HGETALL");
                cmd.arg(self.shared.keys.subject(name, "user"));
                cmd
            })
            .collect();
        let records: Vec<Vec<(String, String)>> = self
            .con
            .query_each(&reads)
            .await
            .map_err(StoreError::unavailable)?;
        let mut users = Vec::with_capacity(records.len());
        // A name without a record is one whose create or delete is under way (or was cut
        // short): not a user (yet).
        for fields in records.into_iter().filter(|f| !f.is_empty()) {
            users.push(decode_user(fields).ok_or(StoreError::Corrupt { what: "user" })?);
        }
        Ok(UserPage { users, next })
    }

    async fn create_code(
        &self,
        id: &CodeId,
        code: &AuthCode,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let record = serde_json::to_string(code).map_err(|_| StoreError::Corrupt {
            what: "authorization code",
        })?;
        let mut con = self.con.clone();
        let created: i64 = self
            .shared
            .scripts
            .create_code
            .key(self.shared.keys.code(id))
            .arg(ttl.as_millis().max(1) as u64)
            .arg(record)
            .invoke_async(&mut con)
            .await
            .map_err(StoreError::unavailable)?;
        Ok(created == 1)
    }

    async fn redeem_code(&self, id: &CodeId, session: &SessionId) -> Result<Redeemed, StoreError> {
        let mut con = self.con.clone();
        let (outcome, value): (i64, Option<String>) = self
            .shared
            .scripts
            .redeem_code
            .key(self.shared.keys.code(id))
            .arg(session.as_str())
            .invoke_async(&mut con)
            .await
            .map_err(StoreError::unavailable)?;
        let corrupt = StoreError::Corrupt {
            what: "authorization code",
        };
        Ok(match (outcome, value) {
            (1, Some(record)) => {
                Redeemed::Fresh(serde_json::from_str(&record).map_err(|_| corrupt)?)
            }
            (2, first) => Redeemed::Replayed(first.as_deref().and_then(SessionId::parse)),
            (0, _) => Redeemed::Unknown,
            _ => return Err(corrupt),
        })
    }

    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let mut con = self.con.clone();
        let _: Value = redis::cmd("XADD")
            .arg(&self.shared.keys.audit)
            .arg("MAXLEN")
            .arg(self.shared.options.audit_max_len.max(1))
            .arg("*")
            .arg("at")
            .arg(entry.at)
            .arg("actor")
            .arg(&entry.actor)
            .arg("action")
            .arg(&entry.action)
            .arg("target")
            .arg(&entry.target)
            .arg("addr")
            .arg(&entry.address)
            .query_async(&mut con)
            .await
            .map_err(StoreError::unavailable)?;
        Ok(())
    }

    async fn audit(&self, before: Option<&str>, limit: usize) -> Result<AuditPage, StoreError> {
        let end = match before {
            Some(id) if is_stream_id(id) => format!("({id}"),
            Some(_) => {
                return Err(StoreError::Invalid {
                    what: "audit cursor",
                });
            }
            None => "+".to_owned(),
        };
        let limit = limit.clamp(1, MAX_AUDIT_PAGE);
        let mut con = self.con.clone();
        let raw: Vec<(String, Vec<(String, String)>)> = redis::cmd("XREVRANGE")
            .arg(&self.shared.keys.audit)
            .arg(end)
            .arg("-")
            .arg("COUNT")
            .arg(limit + 1)
            .query_async(&mut con)
            .await
            .map_err(StoreError::unavailable)?;
        let mut entries = raw
            .into_iter()
            .map(|(id, fields)| {
                let mut entry = AuditEntry {
                    id,
                    ..AuditEntry::default()
                };
                for (k, v) in fields {
                    match k.as_str() {
                        "at" => entry.at = v.parse().unwrap_or(0),
                        "actor" => entry.actor = v,
                        "action" => entry.action = v,
                        "target" => entry.target = v,
                        "addr" => entry.address = v,
                        _ => {}
                    }
                }
                entry
            })
            .collect();
        let next = cut_page(&mut entries, limit, |e| e.id.as_str());
        Ok(AuditPage { entries, next })
    }

    async fn report_seen(&self, reporter: &str, at: u64) -> Result<(), StoreError> {
        let mut con = self.con.clone();
        let key = &self.shared.keys.reporters;
        let _: Value = redis::cmd("ZADD")
            .arg(key)
            .arg("GT")
            .arg(at)
            .arg(reporter)
            .query_async(&mut con)
            .await
            .map_err(StoreError::unavailable)?;
        // Keep the newest MAX_REPORTERS (ranks are by score, lowest first).
        let _: Value = redis::cmd("ZREMRANGEBYRANK")
            .arg(key)
            .arg(0)
            .arg(-(MAX_REPORTERS as i64) - 1)
            .query_async(&mut con)
            .await
            .map_err(StoreError::unavailable)?;
        Ok(())
    }

    async fn reporters(&self, since: u64) -> Result<Vec<Reporter>, StoreError> {
        let mut con = self.con.clone();
        let raw: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(&self.shared.keys.reporters)
            .arg("+inf")
            .arg(since)
            .arg("BYSCORE")
            .arg("REV")
            .arg("WITHSCORES")
            .query_async(&mut con)
            .await
            .map_err(StoreError::unavailable)?;
        Ok(raw
            .into_iter()
            .map(|(name, at)| Reporter {
                name,
                last_seen: at as u64,
            })
            .collect())
    }
    async fn create_pending(
        &self,
        id: &CodeId,
        record: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut con = self.con.clone();
        let created: Option<String> = redis::cmd("SET")
            .arg(self.shared.keys.pending(id))
            .arg(record)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64)
            .query_async(&mut con)
            .await
            .map_err(StoreError::unavailable)?;
        Ok(created.is_some())
    }

    async fn take_pending(&self, id: &CodeId) -> Result<Option<String>, StoreError> {
        let mut con = self.con.clone();
        redis::cmd("GETDEL")
            .arg(self.shared.keys.pending(id))
            .query_async(&mut con)
            .await
            .map_err(StoreError::unavailable)
    }
}

impl RedisStore {
    /// Writes a user's record whole: a new one (`replace` false) or over an existing one. A new
    /// name is indexed before its record is written, so a record is never missing from the
    /// index (a retry after a failure in between is harmless); a replaced one is indexed again
    /// after, which sets right an index entry lost to a create and a delete of the name racing.
    async fn put_user(&self, user: &User, replace: bool) -> Result<bool, StoreError> {
        let fields = user_fields(user).map_err(|_| StoreError::Corrupt { what: "roles" })?;
        if !replace {
            self.index_user(&user.username).await?;
        }
        let mut con = self.con.clone();
        let written: i64 = self
            .shared
            .scripts
            .put_user
            .key(self.shared.keys.subject(&user.username, "user"))
            .arg(if replace { "1" } else { "0" })
            .arg(fields)
            .invoke_async(&mut con)
            .await
            .map_err(StoreError::unavailable)?;
        if replace && written == 1 {
            self.index_user(&user.username).await?;
        }
        Ok(written == 1)
    }

    async fn index_user(&self, username: &str) -> Result<(), StoreError> {
        let mut con = self.con.clone();
        let _: Value = redis::cmd("ZADD")
            .arg(&self.shared.keys.users)
            .arg(0)
            .arg(username)
            .query_async(&mut con)
            .await
            .map_err(StoreError::unavailable)?;
        Ok(())
    }
}

/// The `ZRANGEBYLEX` bounds of the names that start with `prefix` and sort after `after`.
/// Names are UTF-8, which never holds the byte 0xFF: every name with the prefix sorts before
/// the prefix followed by it.
fn lex_range(prefix: &str, after: Option<&str>) -> (Vec<u8>, Vec<u8>) {
    let bound = |mark: u8, text: &[u8], tail: &[u8]| [&[mark], text, tail].concat();
    let min = match after {
        Some(after) if after >= prefix => bound(b'(', after.as_bytes(), b""),
        _ if prefix.is_empty() => b"-".to_vec(),
        _ => bound(b'[', prefix.as_bytes(), b""),
    };
    let max = if prefix.is_empty() {
        b"+".to_vec()
    } else {
        bound(b'(', prefix.as_bytes(), &[0xFF])
    };
    (min, max)
}

/// Whether `id` has the shape of a stream entry id (`<ms>-<seq>`).
fn is_stream_id(id: &str) -> bool {
    id.split_once('-').is_some_and(|(ms, seq)| {
        [ms, seq]
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 20 && p.bytes().all(|b| b.is_ascii_digit()))
    })
}

#[cfg(test)]
mod tests {
    use super::lex_range;

    #[test]
    fn lex_ranges_cover_the_prefix_after_the_cursor() {
        assert_eq!(lex_range("", None), (b"-".to_vec(), b"+".to_vec()));
        assert_eq!(
            lex_range("al", None),
            (b"[al".to_vec(), b"(al\xff".to_vec())
        );
        assert_eq!(
            lex_range("al", Some("alice")),
            (b"(alice".to_vec(), b"(al\xff".to_vec())
        );
        // A cursor before the prefix does not widen the range.
        assert_eq!(lex_range("bo", Some("alice")).0, b"[bo".to_vec());
        assert_eq!(lex_range("", Some("bob")).0, b"(bob".to_vec());
    }
}
