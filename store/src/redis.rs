//! The Redis store and its key schema, the only place that knows it.
//!
//! Keys (`tg` is the configurable prefix; `{...}` is the Redis Cluster hash tag):
//!
//! | key                          | type   | holds                                              |
//! |------------------------------|--------|----------------------------------------------------|
//! | `tg:s:{<session id>}`        | hash   | one session; expires with the session              |
//! | `tg:u:{<subject>}:sessions`  | zset   | the subject's session ids, scored by max expiry    |
//! | `tg:u:{<subject>}:roles`     | string | roles an administrator set (JSON array)            |
//! | `tg:{events}`                | stream | revocations and role changes, bounded length       |
//! | `tg:{events}:seq`            | string | the sequence number of the newest event            |
//! | `tg:{events}:epoch`          | string | made once per data set: a new one means data loss  |
//! | `tg:l:{<login key>}:n`       | string | failed logins in the current window (expires)      |
//! | `tg:l:{<login key>}:lock`    | string | present while the login key is locked out          |
//!
//! `<subject>` and `<login key>` are base64url-encoded so that braces in a username cannot move the hash tag.
//! Every script touches one key or keys of one hash tag; steps that span slots are ordered so
//! that repeating them after a failure is safe.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelServerType};
use redis::streams::StreamReadReply;
use redis::{
    AsyncConnectionConfig, Client, Cmd, ErrorKind, Pipeline, RedisFuture, RedisResult, Script,
    ServerErrorKind, Value,
};
use tokio::sync::{Mutex, OnceCell};

use crate::{
    Event, EventBatch, EventCursor, Session, SessionId, StoreError, TokenStore, ValueToken,
    now_unix,
};

/// Options of the Redis store beyond its URL.
#[derive(Clone, Debug)]
pub struct RedisOptions {
    /// Prefix of every key, so several deployments can share one Redis.
    pub key_prefix: String,
    /// Events kept in the stream (approximately; Redis trims in whole nodes).
    pub events_max_len: usize,
    /// How long one command may take before the store counts as unreachable.
    pub response_timeout: Duration,
    /// How long connecting may take.
    pub connect_timeout: Duration,
    /// PEM certificates that `rediss://` servers are verified against, instead of the
    /// system's roots.
    pub tls_roots: Option<Vec<u8>>,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            key_prefix: "tg".to_owned(),
            events_max_len: 100_000,
            response_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            tls_roots: None,
        }
    }
}

/// Sessions, indexes and events in Redis: one server, or a Redis Cluster.
#[derive(Clone)]
pub struct RedisStore {
    con: Con,
    shared: Arc<Shared>,
}

/// Where commands go: one server (a connection manager that reconnects by itself), or a
/// cluster (a cluster connection, made on first use, that follows slots and reconnects).
#[derive(Clone)]
enum Con {
    Single(ConnectionManager),
    Cluster(Arc<LazyCluster>),
    Sentinel(Arc<SentinelMaster>),
}

/// The master of a Sentinel-monitored group: asked of the sentinels on first use and again
/// whenever the connection fails or the server it reaches is no longer the master.
struct SentinelMaster {
    sentinel: Mutex<SentinelClient>,
    current: std::sync::RwLock<Option<MultiplexedConnection>>,
    options: RedisOptions,
}

impl SentinelMaster {
    /// A client for the current master, as the sentinels see it.
    async fn master(&self) -> RedisResult<Client> {
        let mut sentinel = self.sentinel.lock().await;
        // Each sentinel gets the connect timeout; there are rarely more than a handful.
        let limit = self.options.connect_timeout * 4;
        tokio::time::timeout(limit, sentinel.async_get_client())
            .await
            .map_err(|_| {
                redis::RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no sentinel named a master in time",
                ))
            })?
    }

    async fn connection(&self) -> RedisResult<MultiplexedConnection> {
        if let Some(con) = self.cached() {
            return Ok(con);
        }
        let client = self.master().await?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.options.connect_timeout))
            .set_response_timeout(Some(self.options.response_timeout));
        let con = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(con.clone());
        Ok(con)
    }

    fn cached(&self) -> Option<MultiplexedConnection> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Forgets the connection after an error that may mean a failover; returns whether the
    /// command can safely be tried again on the (new) master.
    fn forget_after(&self, e: &redis::RedisError) -> bool {
        let demoted = e.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly);
        let gone = e.is_io_error()
            || e.is_timeout()
            || e.is_connection_dropped()
            || e.is_connection_refusal();
        if demoted || gone {
            *self
                .current
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        }
        // Refused or read-only: nothing was done, so trying the new master is safe.
        demoted || e.is_connection_refusal()
    }
}

struct LazyCluster {
    client: ClusterClient,
    con: OnceCell<ClusterConnection>,
}

impl LazyCluster {
    async fn get(&self) -> RedisResult<ClusterConnection> {
        self.con
            .get_or_try_init(|| self.client.get_async_connection())
            .await
            .cloned()
    }
}

impl ConnectionLike for Con {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Con::Single(c) => c.req_packed_command(cmd),
            Con::Cluster(lazy) => Box::pin(async move {
                let mut con = lazy.get().await?;
                con.req_packed_command(cmd).await
            }),
            Con::Sentinel(master) => Box::pin(async move {
                let result = master.connection().await?.req_packed_command(cmd).await;
                match result {
                    Err(e) if master.forget_after(&e) => {
                        master.connection().await?.req_packed_command(cmd).await
                    }
                    other => other,
                }
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Con::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Con::Cluster(lazy) => Box::pin(async move {
                let mut con = lazy.get().await?;
                con.req_packed_commands(pipeline, offset, count).await
            }),
            Con::Sentinel(master) => Box::pin(async move {
                let mut con = master.connection().await?;
                let result = con.req_packed_commands(pipeline, offset, count).await;
                match result {
                    Err(e) if master.forget_after(&e) => {
                        let mut con = master.connection().await?;
                        con.req_packed_commands(pipeline, offset, count).await
                    }
                    other => other,
                }
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Con::Single(c) => c.get_db(),
            Con::Cluster(_) | Con::Sentinel(_) => 0,
        }
    }
}

/// Where blocking stream reads come from.
enum Source {
    Single(Box<Client>),
    /// The current master, through the sentinels.
    Sentinel(Arc<SentinelMaster>),
    /// Seed nodes; the reader's cluster connection is made with a response timeout that
    /// covers the longest wait asked of it.
    Cluster(Vec<String>),
}

/// The reader's own connection.
enum Reader {
    Single(MultiplexedConnection),
    /// With the response timeout it was made with.
    Cluster(ClusterConnection, Duration),
}

struct Shared {
    source: Source,
    /// The connection for blocking stream reads: its own, so a blocked read never delays
    /// lookups, and its response timeout fits each read's wait.
    reader: Mutex<Option<Reader>>,
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

#[derive(Clone, Debug)]
struct Keys {
    prefix: String,
    events: String,
    events_seq: String,
    events_epoch: String,
}

impl Keys {
    fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_owned(),
            events: format!("{prefix}:{{events}}"),
            events_seq: format!("{prefix}:{{events}}:seq"),
            events_epoch: format!("{prefix}:{{events}}:epoch"),
        }
    }
    fn session(&self, id: &SessionId) -> String {
        format!("{}:s:{{{}}}", self.prefix, id.as_str())
    }
    fn login(&self, key: &str, what: &str) -> String {
        format!(
            "{}:l:{{{}}}:{what}",
            self.prefix,
            URL_SAFE_NO_PAD.encode(key.as_bytes())
        )
    }
    fn subject(&self, subject: &str, what: &str) -> String {
        format!(
            "{}:u:{{{}}}:{what}",
            self.prefix,
            URL_SAFE_NO_PAD.encode(subject.as_bytes())
        )
    }
}

struct Scripts {
    create: Script,
    index_add: Script,
    touch: Script,
    revoke: Script,
    update: Script,
    publish: Script,
    head: Script,
    login_failed: Script,
}

impl Scripts {
    fn new() -> Self {
        Scripts {
            // KEYS[1] session; ARGV sub, roles, vt, created, last_used, idle, max_exp, expire_at
            create: Script::new(
                r"redis.call('HSET', KEYS[1], 'sub', ARGV[1], 'roles', ARGV[2], 'vt', ARGV[3],
                  'created', ARGV[4], 'last_used', ARGV[5], 'idle', ARGV[6], 'max_exp', ARGV[7])
                  redis.call('EXPIREAT', KEYS[1], ARGV[8])
                  return 1",
            ),
            // KEYS[1] subject index; ARGV sid, max_exp, now. Prunes ended sessions and keeps the
            // index alive as long as its longest-lived session.
            index_add: Script::new(
                r"redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
                  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
                  local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
                  if #last == 2 then
                    redis.call('EXPIREAT', KEYS[1], math.floor(tonumber(last[2])) + 1)
                  end
                  return 1",
            ),
            // KEYS[1] session; ARGV last_used. Never revives (missing key: 0), never shortens.
            touch: Script::new(
                r"local h = redis.call('HMGET', KEYS[1], 'last_used', 'idle', 'max_exp')
                  if not h[1] or not h[2] or not h[3] then return 0 end
                  local lu = tonumber(ARGV[1])
                  if lu <= tonumber(h[1]) then return 0 end
                  local exp = math.min(lu + tonumber(h[2]), tonumber(h[3]))
                  redis.call('HSET', KEYS[1], 'last_used', ARGV[1])
                  redis.call('EXPIREAT', KEYS[1], exp)
                  return 1",
            ),
            // KEYS[1] session. Deletes it and answers its subject, or nil if there was none.
            revoke: Script::new(
                r"local sub = redis.call('HGET', KEYS[1], 'sub')
                  if not sub then return false end
                  redis.call('DEL', KEYS[1])
                  return sub",
            ),
            // KEYS[1] session; ARGV roles, vt. Keeps the expiry; skips ended sessions.
            update: Script::new(
                r"if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
                  redis.call('HSET', KEYS[1], 'roles', ARGV[1], 'vt', ARGV[2])
                  return 1",
            ),
            // KEYS[1] seq, KEYS[2] stream; ARGV maxlen, type, sids, sub. One number per event,
            // in the same step as the event, so a reader can see a gap.
            publish: Script::new(
                r"local seq = redis.call('INCR', KEYS[1])
                  local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*',
                    'seq', seq, 'type', ARGV[2], 'sids', ARGV[3], 'sub', ARGV[4])
                  return {id, seq}",
            ),
            // KEYS[1] failure count, KEYS[2] lock; ARGV limit, window ms, lockout ms.
            login_failed: Script::new(
                r"local n = redis.call('INCR', KEYS[1])
                  if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
                  if n >= tonumber(ARGV[1]) then
                    redis.call('SET', KEYS[2], '1', 'PX', ARGV[3])
                    redis.call('DEL', KEYS[1])
                    return 1
                  end
                  return 0",
            ),
            // KEYS[1] seq, KEYS[2] stream, KEYS[3] epoch. The epoch (made on first use: a
            // Redis that lost its data makes a new one), the newest event's id and number.
            head: Script::new(
                r"local t = redis.call('TIME')
                  redis.call('SET', KEYS[3], t[1] .. '.' .. t[2], 'NX')
                  local epoch = redis.call('GET', KEYS[3])
                  local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
                  local seq = redis.call('GET', KEYS[1]) or '0'
                  if #last == 0 then return {epoch, '0-0', seq} end
                  return {epoch, last[1][1], seq}",
            ),
        }
    }
}

/// A stream entry id, compared as Redis does.
fn stream_id(text: &str) -> Option<(u64, u64)> {
    let (ms, seq) = text.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

fn is_noscript(e: &redis::RedisError) -> bool {
    e.kind() == ErrorKind::Server(ServerErrorKind::NoScript)
}

impl RedisStore {
    /// A store for `url` (`redis://[:password@]host:port[/db]`). Connects lazily: the process can
    /// start while Redis is still down and recovers by itself when it comes back.
    pub fn connect(url: &str, options: RedisOptions) -> Result<Self, StoreError> {
        let client = match &options.tls_roots {
            Some(roots) => Client::build_with_tls(url, Self::certificates(roots)),
            None => Client::open(url),
        }
        .map_err(|e| StoreError::Config(e.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(options.response_timeout))
            .set_connection_timeout(Some(options.connect_timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let con = client
            .get_connection_manager_lazy(config)
            .map_err(|e| StoreError::Config(e.to_string()))?;
        Ok(Self::with(
            Con::Single(con),
            Source::Single(Box::new(client)),
            options,
        ))
    }

    /// A store on a Redis Cluster reached through `nodes` (seed URLs; the rest of the cluster
    /// is discovered). Connects on first use, like [`RedisStore::connect`].
    pub fn connect_cluster(nodes: &[String], options: RedisOptions) -> Result<Self, StoreError> {
        let client = Self::cluster_client(nodes, &options, options.response_timeout)?;
        let con = Con::Cluster(Arc::new(LazyCluster {
            client,
            con: OnceCell::new(),
        }));
        Ok(Self::with(con, Source::Cluster(nodes.to_vec()), options))
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
        let config = |e: redis::RedisError| StoreError::Config(e.to_string());
        let info = redis::IntoConnectionInfo::into_connection_info(master_url).map_err(config)?;
        let node = redis::sentinel::SentinelNodeConnectionInfo::default()
            .set_redis_connection_info(info.redis_settings().clone());
        let sentinel = SentinelClient::build(
            sentinels.to_vec(),
            master_name,
            Some(node),
            SentinelServerType::Master,
        )
        .map_err(config)?;
        let master = Arc::new(SentinelMaster {
            sentinel: Mutex::new(sentinel),
            current: std::sync::RwLock::new(None),
            options: options.clone(),
        });
        Ok(Self::with(
            Con::Sentinel(master.clone()),
            Source::Sentinel(master),
            options,
        ))
    }

    fn cluster_client(
        nodes: &[String],
        options: &RedisOptions,
        response_timeout: Duration,
    ) -> Result<ClusterClient, StoreError> {
        let mut builder = ClusterClient::builder(nodes.iter().map(String::as_str))
            .connection_timeout(options.connect_timeout)
            .response_timeout(response_timeout)
            .retries(1);
        if let Some(roots) = &options.tls_roots {
            builder = builder.certs(Self::certificates(roots));
        }
        builder
            .build()
            .map_err(|e| StoreError::Config(e.to_string()))
    }

    fn certificates(roots: &[u8]) -> redis::TlsCertificates {
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(roots.to_vec()),
        }
    }

    fn with(con: Con, source: Source, options: RedisOptions) -> Self {
        RedisStore {
            con,
            shared: Arc::new(Shared {
                source,
                reader: Mutex::new(None),
                keys: Keys::new(&options.key_prefix),
                options,
                scripts: Scripts::new(),
            }),
        }
    }

    /// Runs commands that may address different slots: one pipeline on a single server, one by
    /// one on a cluster (a cluster pipeline must stay within one slot).
    async fn query_each<T: redis::FromRedisValue>(&self, cmds: &[Cmd]) -> RedisResult<Vec<T>> {
        let mut con = self.con.clone();
        match &self.con {
            Con::Single(_) | Con::Sentinel(_) => {
                let mut pipe = redis::pipe();
                for cmd in cmds {
                    pipe.add_command(cmd.clone());
                }
                pipe.query_async(&mut con).await
            }
            Con::Cluster(_) => {
                let mut out = Vec::with_capacity(cmds.len());
                for cmd in cmds {
                    out.push(cmd.query_async(&mut con).await?);
                }
                Ok(out)
            }
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
        match self.query_each(&cmds).await {
            Err(e) if is_noscript(&e) => {
                let mut con = self.con.clone();
                script.prepare_invoke().load_async(&mut con).await?;
                Ok(self.query_each(&cmds).await?)
            }
            other => Ok(other?),
        }
    }

    async fn publish(&self, event: &Event) -> Result<(), StoreError> {
        let (kind, subject) = match event {
            Event::Revoked { .. } => ("revoked", ""),
            Event::RolesChanged { .. } => ("roles", ""),
            Event::SubjectRevoked { subject, .. } => ("subject_revoked", subject.as_str()),
        };
        let sids = event
            .sessions()
            .iter()
            .map(SessionId::as_str)
            .collect::<Vec<_>>()
            .join(" ");
        let mut invocation = self.shared.scripts.publish.prepare_invoke();
        invocation
            .key(&self.shared.keys.events_seq)
            .key(&self.shared.keys.events)
            .arg(self.shared.options.events_max_len)
            .arg(kind)
            .arg(&sids)
            .arg(subject);
        // The change itself is already made; a gateway that misses this event keeps serving the
        // session from cache (up to max_staleness), so try hard before giving up.
        let mut delay = Duration::from_millis(50);
        let mut attempt = 0;
        loop {
            let mut con = self.con.clone();
            match invocation.invoke_async::<Value>(&mut con).await {
                Ok(_) => return Ok(()),
                Err(e) if attempt < 3 => {
                    tracing::warn!(error = %e, attempt, "publishing a store event failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                    attempt += 1;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The blocking reader's connection, (re)made when needed (on a cluster, also when a read
    /// asks to wait longer than its response timeout allows). `true` when it is new, which is
    /// when the stream may have been reset behind the reader's back.
    async fn reader_connection(
        &self,
        slot: &mut Option<Reader>,
        wait: Duration,
    ) -> Result<bool, StoreError> {
        let needed = wait + self.shared.options.response_timeout;
        match slot {
            Some(Reader::Single(_)) => return Ok(false),
            Some(Reader::Cluster(_, timeout)) if *timeout >= needed => return Ok(false),
            _ => {}
        }
        let options = &self.shared.options;
        let single = |client: Client| async move {
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(options.connect_timeout))
                .set_response_timeout(None);
            client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map(Reader::Single)
        };
        *slot = Some(match &self.shared.source {
            Source::Single(client) => single(Client::clone(client)).await?,
            Source::Sentinel(master) => single(master.master().await?).await?,
            Source::Cluster(nodes) => {
                // Room for the usual wait, so that a steady reader is made once.
                let timeout = needed.max(Duration::from_secs(5));
                let client = Self::cluster_client(nodes, options, timeout)?;
                Reader::Cluster(client.get_async_connection().await?, timeout)
            }
        });
        Ok(true)
    }

    async fn head_on(&self, con: &mut impl ConnectionLike) -> Result<EventCursor, StoreError> {
        let (epoch, id, seq): (String, String, String) = self
            .shared
            .scripts
            .head
            .key(&self.shared.keys.events_seq)
            .key(&self.shared.keys.events)
            .key(&self.shared.keys.events_epoch)
            .invoke_async(con)
            .await?;
        let seq = seq.parse().map_err(|_| StoreError::Corrupt {
            what: "event sequence number",
        })?;
        Ok(EventCursor { epoch, id, seq })
    }

    async fn read_on(
        &self,
        reader: &mut Reader,
        fresh: bool,
        after: &EventCursor,
        wait: Duration,
    ) -> Result<EventBatch, StoreError> {
        match reader {
            Reader::Single(con) => {
                con.set_response_timeout(wait + self.shared.options.response_timeout);
                self.read_with(con, fresh, after, wait).await
            }
            Reader::Cluster(con, _) => self.read_with(con, fresh, after, wait).await,
        }
    }

    async fn read_with(
        &self,
        con: &mut impl ConnectionLike,
        fresh: bool,
        after: &EventCursor,
        wait: Duration,
    ) -> Result<EventBatch, StoreError> {
        if fresh {
            // A new connection may mean a restarted or failed-over Redis that lost data, or
            // whose stream is older than our position (reading on would then wait forever).
            let head = self.head_on(con).await?;
            let (newest, ours) = (stream_id(&head.id), stream_id(&after.id));
            let behind = match (newest, ours) {
                (Some(h), Some(a)) => h < a,
                _ => true,
            };
            // Events were published after our position, yet the stream holds nothing newer
            // than it: they were trimmed away.
            let trimmed = head.seq > after.seq && newest <= ours;
            if head.epoch != after.epoch || behind || trimmed || head.seq < after.seq {
                return Ok(EventBatch {
                    events: Vec::new(),
                    cursor: head,
                    gap: true,
                });
            }
        }
        let wait_ms = wait.as_millis().clamp(1, u128::from(u32::MAX)) as u64;
        let reply: Option<StreamReadReply> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(512)
            .arg("BLOCK")
            .arg(wait_ms)
            .arg("STREAMS")
            .arg(&self.shared.keys.events)
            .arg(&after.id)
            .query_async(con)
            .await?;
        let mut batch = EventBatch {
            events: Vec::new(),
            cursor: after.clone(),
            gap: false,
        };
        let entries = reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids);
        for entry in entries {
            let seq: Option<u64> = entry.get::<String>("seq").and_then(|s| s.parse().ok());
            match seq {
                // Delivered before (at-least-once): nothing new.
                Some(seq) if seq <= batch.cursor.seq => {}
                Some(seq) => {
                    if seq != batch.cursor.seq + 1 {
                        batch.gap = true;
                    }
                    match decode_event(&entry) {
                        Some(event) => batch.events.push(event),
                        None => batch.gap = true,
                    }
                    batch.cursor.seq = seq;
                }
                // An entry this version did not write: we cannot tell what it revoked.
                None => batch.gap = true,
            }
            batch.cursor.id = entry.id;
        }
        Ok(batch)
    }
}

/// A session from the fields of its hash; `None` unless every field is there and well-formed.
pub(crate) fn decode_session(id: SessionId, fields: Vec<(String, String)>) -> Option<Session> {
    let mut s = Session {
        id,
        subject: String::new(),
        roles: Vec::new(),
        value_token: ValueToken(String::new()),
        created_at: 0,
        last_used_at: 0,
        idle_timeout: 0,
        max_expires_at: 0,
    };
    let mut seen = 0u8;
    for (name, value) in fields {
        let bit = match name.as_str() {
            "sub" => {
                s.subject = value;
                1
            }
            "roles" => {
                s.roles = serde_json::from_str(&value).ok()?;
                2
            }
            "vt" => {
                s.value_token = ValueToken(value);
                4
            }
            "created" => {
                s.created_at = value.parse().ok()?;
                8
            }
            "last_used" => {
                s.last_used_at = value.parse().ok()?;
                16
            }
            "idle" => {
                s.idle_timeout = value.parse().ok()?;
                32
            }
            "max_exp" => {
                s.max_expires_at = value.parse().ok()?;
                64
            }
            _ => 0,
        };
        seen |= bit;
    }
    (seen == 127).then_some(s)
}

pub(crate) fn decode_event(entry: &redis::streams::StreamId) -> Option<Event> {
    let kind: String = entry.get("type")?;
    let sids: String = entry.get("sids")?;
    let sessions = sids
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(SessionId::parse)
        .collect::<Option<Vec<_>>>()?;
    match kind.as_str() {
        "revoked" => {
            let [session] = <[SessionId; 1]>::try_from(sessions).ok()?;
            Some(Event::Revoked { session })
        }
        "roles" => Some(Event::RolesChanged { sessions }),
        "subject_revoked" => Some(Event::SubjectRevoked {
            subject: entry.get("sub")?,
            sessions,
        }),
        _ => None,
    }
}

impl TokenStore for RedisStore {
    async fn create(&self, s: &Session) -> Result<(), StoreError> {
        let roles =
            serde_json::to_string(&s.roles).map_err(|_| StoreError::Corrupt { what: "roles" })?;
        let mut con = self.con.clone();
        // Index first: a session that exists is always reachable by a forced logout.
        self.shared
            .scripts
            .index_add
            .key(self.shared.keys.subject(&s.subject, "sessions"))
            .arg(s.id.as_str())
            .arg(s.max_expires_at)
            .arg(now_unix())
            .invoke_async::<Value>(&mut con)
            .await?;
        self.shared
            .scripts
            .create
            .key(self.shared.keys.session(&s.id))
            .arg(&s.subject)
            .arg(roles)
            .arg(s.value_token.expose())
            .arg(s.created_at)
            .arg(s.last_used_at)
            .arg(s.idle_timeout)
            .arg(s.max_expires_at)
            .arg(s.expires_at())
            .invoke_async::<Value>(&mut con)
            .await?;
        Ok(())
    }

    async fn lookup(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        let mut con = self.con.clone();
        let fields: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(self.shared.keys.session(id))
            .query_async(&mut con)
            .await?;
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
            .await?;
        let Some(subject) = subject else {
            return Ok(false);
        };
        self.publish(&Event::Revoked {
            session: id.clone(),
        })
        .await?;
        let _: Value = redis::cmd("ZREM")
            .arg(self.shared.keys.subject(&subject, "sessions"))
            .arg(id.as_str())
            .query_async(&mut con)
            .await?;
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
            .await?;
        let ids: Vec<SessionId> = ids.iter().filter_map(|s| SessionId::parse(s)).collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // Delete, then announce, then unindex: after a failure part-way, a retry finds the
        // same ids in the index and announces them again (harmless), so none is forgotten.
        let deletes: Vec<Cmd> = ids
            .iter()
            .map(|id| {
                let mut cmd = redis::cmd("DEL");
                cmd.arg(self.shared.keys.session(id));
                cmd
            })
            .collect();
        let deleted: Vec<i64> = self.query_each(&deletes).await?;
        self.publish(&Event::SubjectRevoked {
            subject: subject.to_owned(),
            sessions: ids.clone(),
        })
        .await?;
        let _: Value = redis::cmd("ZREM")
            .arg(&index)
            .arg(ids.iter().map(SessionId::as_str).collect::<Vec<_>>())
            .query_async(&mut con)
            .await?;
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
            .await?;
        let ids: Vec<SessionId> = ids.iter().filter_map(|s| SessionId::parse(s)).collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let reads: Vec<Cmd> = ids
            .iter()
            .map(|id| {
                let mut cmd = redis::cmd("HGETALL");
                cmd.arg(self.shared.keys.session(id));
                cmd
            })
            .collect();
        let records: Vec<Vec<(String, String)>> = self.query_each(&reads).await?;
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
                .await?;
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
        let updated: Vec<SessionId> = updates
            .iter()
            .zip(&done)
            .filter(|(_, n)| **n == 1)
            .map(|((id, _, _), _)| id.clone())
            .collect();
        let count = updated.len();
        if count > 0 {
            self.publish(&Event::RolesChanged { sessions: updated })
                .await?;
        }
        Ok(count)
    }

    async fn subject_roles(&self, subject: &str) -> Result<Option<Vec<String>>, StoreError> {
        let mut con = self.con.clone();
        let raw: Option<String> = redis::cmd("GET")
            .arg(self.shared.keys.subject(subject, "roles"))
            .query_async(&mut con)
            .await?;
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
            .await?;
        Ok(())
    }

    async fn events_head(&self) -> Result<EventCursor, StoreError> {
        self.head_on(&mut self.con.clone()).await
    }

    async fn read_events(
        &self,
        after: &EventCursor,
        wait: Duration,
    ) -> Result<EventBatch, StoreError> {
        let mut slot = self.shared.reader.lock().await;
        let fresh = self.reader_connection(&mut slot, wait).await?;
        let Some(con) = slot.as_mut() else {
            return Err(StoreError::Config("no reader connection".to_owned()));
        };
        let result = self.read_on(con, fresh, after, wait).await;
        if matches!(result, Err(StoreError::Unavailable(_))) {
            // Start over on a new connection (and check the stream's head) next time.
            *slot = None;
        }
        result
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut con = self.con.clone();
        let _: String = redis::cmd("PING").query_async(&mut con).await?;
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
            .await?;
        Ok(locked == 1)
    }

    async fn login_locked(&self, key: &str) -> Result<Option<Duration>, StoreError> {
        let mut con = self.con.clone();
        let ms: i64 = redis::cmd("PTTL")
            .arg(self.shared.keys.login(key, "lock"))
            .query_async(&mut con)
            .await?;
        Ok((ms > 0).then(|| Duration::from_millis(ms as u64)))
    }

    async fn login_succeeded(&self, key: &str) -> Result<(), StoreError> {
        let mut con = self.con.clone();
        let _: Value = redis::cmd("DEL")
            .arg(self.shared.keys.login(key, "n"))
            .query_async(&mut con)
            .await?;
        Ok(())
    }
}
