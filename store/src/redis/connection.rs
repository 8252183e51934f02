//! Connections and topology: one server, a Redis Cluster, or the master of a Sentinel group;
//! TLS for `rediss://`. Commands share one connection; the event reader makes its own.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Client, Cmd, ErrorKind, FromRedisValue, Pipeline, RedisFuture,
    RedisResult, ServerErrorKind, Value,
};
use tokio::sync::{Mutex, OnceCell};

use crate::StoreError;

/// Options of the Redis store beyond its URL.
#[derive(Clone, Debug)]
pub struct RedisOptions {
    /// Prefix of every key, so several deployments can share one Redis.
    pub key_prefix: String,
    /// Events kept in the stream (approximately; Redis trims in whole nodes).
    pub events_max_len: usize,
    /// Audit entries kept (exactly: the trail is small and written rarely).
    pub audit_max_len: usize,
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
            audit_max_len: crate::DEFAULT_AUDIT_MAX_LEN,
            response_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            tls_roots: None,
        }
    }
}

/// The connections of one server at `url` (`redis://[:password@]host:port[/db]`), made
/// lazily: the process can start while Redis is still down and recovers by itself when it
/// comes back.
pub(super) fn standalone(url: &str, options: &RedisOptions) -> Result<(Con, Source), StoreError> {
    let client = match &options.tls_roots {
        Some(roots) => Client::build_with_tls(url, certificates(roots)),
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
    Ok((Con::Single(con), Source::Single(Box::new(client))))
}

/// The connections of a Redis Cluster reached through `nodes` (seed URLs; the rest of the
/// cluster is discovered), made on first use.
pub(super) fn cluster(
    nodes: &[String],
    options: &RedisOptions,
) -> Result<(Con, Source), StoreError> {
    let client = cluster_client(nodes, options, options.response_timeout)?;
    let con = Con::Cluster(Arc::new(LazyCluster {
        client,
        con: OnceCell::new(),
    }));
    Ok((con, Source::Cluster(nodes.to_vec())))
}

/// The connections of the master named `master_name`, found through `sentinels` (URLs of
/// Sentinel nodes) and found again after a failover. `master_url` carries what the master
/// itself needs (password, database, `rediss://`); its host and port are ignored.
pub(super) fn sentinel(
    sentinels: &[String],
    master_name: &str,
    master_url: &str,
    options: &RedisOptions,
) -> Result<(Con, Source), StoreError> {
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
    Ok((Con::Sentinel(master.clone()), Source::Sentinel(master)))
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
        builder = builder.certs(certificates(roots));
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

/// Where commands go: one server (a connection manager that reconnects by itself), or a
/// cluster (a cluster connection, made on first use, that follows slots and reconnects).
#[derive(Clone)]
pub(super) enum Con {
    Single(ConnectionManager),
    Cluster(Arc<LazyCluster>),
    Sentinel(Arc<SentinelMaster>),
}

impl Con {
    /// Runs commands that may address different slots, answers in their order: one pipeline on
    /// a single server; on a cluster (where a pipeline must stay within one slot) all at once,
    /// each to its node, so that a batch costs about one round trip there too, not one per
    /// command. The commands of one call must not depend on each other's order.
    pub(super) async fn query_each<T: FromRedisValue>(&self, cmds: &[Cmd]) -> RedisResult<Vec<T>> {
        match self {
            Con::Single(_) | Con::Sentinel(_) => {
                let mut pipe = redis::pipe();
                for cmd in cmds {
                    pipe.add_command(cmd.clone());
                }
                pipe.query_async(&mut self.clone()).await
            }
            Con::Cluster(_) => {
                let each = cmds.iter().map(|cmd| {
                    let mut con = self.clone();
                    async move { cmd.query_async(&mut con).await }
                });
                futures_util::future::try_join_all(each).await
            }
        }
    }
}

/// The master of a Sentinel-monitored group: asked of the sentinels on first use and again
/// whenever the connection fails or the server it reaches is no longer the master.
pub(super) struct SentinelMaster {
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

pub(super) struct LazyCluster {
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

/// Where the event reader's connections come from.
pub(super) enum Source {
    Single(Box<Client>),
    /// The current master, through the sentinels.
    Sentinel(Arc<SentinelMaster>),
    /// Seed nodes; the reader's cluster connection is made with a response timeout that
    /// covers the longest wait asked of it.
    Cluster(Vec<String>),
}

/// The event reader's own connection.
pub(super) enum Reader {
    Single(MultiplexedConnection),
    /// With the response timeout it was made with.
    Cluster(ClusterConnection, Duration),
}

impl Source {
    /// A new connection for blocking reads: without a response timeout on one server (each
    /// read sets its own), with one of at least `needed` on a cluster.
    pub(super) async fn reader(
        &self,
        options: &RedisOptions,
        needed: Duration,
    ) -> Result<Reader, StoreError> {
        let single = |client: Client| async move {
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(options.connect_timeout))
                .set_response_timeout(None);
            client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map(Reader::Single)
        };
        let reader = match self {
            Source::Single(client) => single(Client::clone(client)).await,
            Source::Sentinel(master) => match master.master().await {
                Ok(client) => single(client).await,
                Err(e) => Err(e),
            },
            Source::Cluster(nodes) => {
                // Room for the usual wait, so that a steady reader is made once.
                let timeout = needed.max(Duration::from_secs(5));
                let client = cluster_client(nodes, options, timeout)?;
                let con = client.get_async_connection().await;
                con.map(|con| Reader::Cluster(con, timeout))
            }
        };
        reader.map_err(StoreError::unavailable)
    }
}
