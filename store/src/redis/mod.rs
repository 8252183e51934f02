//! The Redis store: one server, a Redis Cluster, or the master of a Sentinel group.
//!
//! * `schema`: the key schema and the Lua scripts on it (the only place that knows them).
//! * `connection`: connections per topology, TLS, and the event reader's own connection.
//! * `events`: the event stream: publishing, its head, and the blocking reader with gap
//!   detection.
//!
//! The store's operations, one file per trait (or pair of traits) they implement:
//!
//! * `sessions`: [`SessionRead`](crate::SessionRead) and [`SessionAdmin`](crate::SessionAdmin).
//! * `usage`: [`UsageReport`](crate::UsageReport).
//! * `renewal`: [`TokenRenewal`](crate::TokenRenewal).
//! * `users`: [`UserDirectory`](crate::UserDirectory).
//! * `codes`: [`Codes`](crate::Codes); `pending`: [`PendingSignIns`](crate::PendingSignIns) and
//!   [`Notes`](crate::Notes).
//! * `deliveries`: [`Deliveries`](crate::Deliveries).
//! * `throttle`: [`LoginThrottle`](crate::LoginThrottle).
//! * `audit`: [`AuditTrail`](crate::AuditTrail).
//! * [`EventStream`](crate::EventStream) and [`Health`] are here, with the connections (the
//!   stream itself is in `events`).

mod audit;
mod codes;
mod connection;
mod deliveries;
// The fuzz helpers in `testing` reach the decoders.
pub(crate) mod events;
mod pending;
mod renewal;
pub(crate) mod schema;
mod sessions;
mod throttle;
mod usage;
mod users;

use std::sync::Arc;
use std::time::Duration;

use redis::{Cmd, ErrorKind, Script, ServerErrorKind, Value};

use self::connection::Con;
pub use self::connection::RedisOptions;
use self::events::EventReader;
use self::schema::{Keys, Scripts};
use crate::{
    Event, EventBatch, EventCursor, EventStream, Health, Reporter, SessionId, StoreError,
    ValueToken,
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

impl EventStream for RedisStore {
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
}

impl Health for RedisStore {
    async fn ping(&self) -> Result<(), StoreError> {
        let mut con = self.con.clone();
        let _: String = redis::cmd("PING")
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
}
