//! Redis of the test's own: one server, a Sentinel group or a Cluster, each on free loopback
//! ports and killed when dropped.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` started for one test on a free loopback port, killed when dropped.
pub struct TestRedis {
    child: Option<Child>,
    port: u16,
    dir: std::path::PathBuf,
    persistent: bool,
    cluster: bool,
    replica_of: Option<u16>,
    /// A TLS port next to the plain one, with the certificate and key files it serves.
    tls: Option<(u16, std::path::PathBuf, std::path::PathBuf)>,
}

impl TestRedis {
    /// Starts a server with no persistence and waits until it answers.
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// Starts a server that writes every change to an append-only file, so a restart keeps the
    /// data (as a production Redis with `appendfsync always` does).
    pub fn start_persistent() -> Self {
        Self::start_with(true)
    }

    /// A server that also speaks TLS (`rediss://`, see [`TestRedis::tls_url`]) with the given
    /// PEM certificate and key; clients are not asked for certificates.
    pub fn start_tls(cert: &std::path::Path, key: &std::path::Path) -> Self {
        let mut redis = Self::start();
        redis.kill();
        redis.tls = Some((free_port(), cert.to_owned(), key.to_owned()));
        redis.spawn();
        redis
    }

    /// `rediss://127.0.0.1:PORT` of the TLS port.
    pub fn tls_url(&self) -> Option<String> {
        self.tls
            .as_ref()
            .map(|(port, _, _)| format!("rediss://127.0.0.1:{port}"))
    }

    /// A server in cluster mode, not yet part of a cluster (see [`TestCluster`]).
    fn start_cluster_node() -> Self {
        // The cluster bus listens on port + 10000: keep both free and in range.
        let port = loop {
            let p = free_port();
            if p < 55_000 && TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok() {
                break p;
            }
        };
        Self::start_on(port, false, true)
    }

    fn start_with(persistent: bool) -> Self {
        Self::start_on(free_port(), persistent, false)
    }

    fn start_on(port: u16, persistent: bool, cluster: bool) -> Self {
        let dir =
            std::env::temp_dir().join(format!("tokengate-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create a directory for redis-server");
        let mut redis = TestRedis {
            child: None,
            port,
            dir,
            persistent,
            cluster,
            replica_of: None,
            tls: None,
        };
        redis.spawn();
        redis
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", ""])
            // A replica's first sync starts at once instead of after the default 5 s.
            .args(["--repl-diskless-sync-delay", "0"])
            .args(if self.persistent {
                ["--appendonly", "yes", "--appendfsync", "always"].as_slice()
            } else {
                ["--appendonly", "no"].as_slice()
            })
            .args(
                self.replica_of
                    .map(|p| {
                        vec![
                            "--replicaof".to_owned(),
                            "127.0.0.1".to_owned(),
                            p.to_string(),
                        ]
                    })
                    .unwrap_or_default(),
            )
            .args(
                self.tls
                    .iter()
                    .flat_map(|(port, cert, key)| {
                        [
                            "--tls-port".into(),
                            port.to_string().into(),
                            "--tls-cert-file".into(),
                            cert.clone().into_os_string(),
                            "--tls-key-file".into(),
                            key.clone().into_os_string(),
                            // Redis wants a CA even when it asks clients for nothing.
                            "--tls-ca-cert-file".into(),
                            cert.clone().into_os_string(),
                            "--tls-auth-clients".into(),
                            "no".into(),
                        ]
                    })
                    .collect::<Vec<std::ffi::OsString>>(),
            )
            .args(if self.cluster {
                ["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"].as_slice()
            } else {
                [].as_slice()
            })
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server (is it installed? .ci/run installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.query(&["PING"]).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not come up on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The URL clients connect with.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port: empty, unless started persistent.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Runs one command on a fresh connection and returns the reply.
    pub fn query(&self, args: &[&str]) -> redis::RedisResult<redis::Value> {
        let client = redis::Client::open(self.url())?;
        let mut con = client.get_connection_with_timeout(Duration::from_secs(1))?;
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut con)
    }

    /// Every key and every value in the server, as text (for "no raw token in a dump" checks).
    pub fn dump(&self) -> String {
        let mut out = String::new();
        let keys: Vec<String> = match self.query(&["KEYS", "*"]) {
            Ok(v) => redis::from_redis_value(v).unwrap_or_default(),
            Err(e) => panic!("KEYS failed: {e}"),
        };
        for key in keys {
            out.push_str(&key);
            out.push('\n');
            let kind: String = self
                .query(&["TYPE", &key])
                .ok()
                .and_then(|v| redis::from_redis_value(v).ok())
                .unwrap_or_default();
            let value = match kind.as_str() {
                "string" => self.query(&["GET", &key]),
                "hash" => self.query(&["HGETALL", &key]),
                "zset" => self.query(&["ZRANGE", &key, "0", "-1", "WITHSCORES"]),
                "stream" => self.query(&["XRANGE", &key, "-", "+"]),
                "set" => self.query(&["SMEMBERS", &key]),
                "list" => self.query(&["LRANGE", &key, "0", "-1"]),
                _ => continue,
            };
            out.push_str(&format!("{value:?}\n"));
        }
        out
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Sentinel group of the test's own: a master, one replica and three sentinels watching them
/// as `mymaster`, each on a free port; everything is killed when dropped.
pub struct TestSentinel {
    servers: Vec<TestRedis>,
    sentinels: Vec<(Child, u16)>,
    dir: std::path::PathBuf,
}

/// The master name the test sentinels watch.
pub const SENTINEL_MASTER: &str = "mymaster";

impl TestSentinel {
    /// Starts a master, a replica and three sentinels, and waits until they agree.
    pub fn start() -> Self {
        let master = TestRedis::start();
        let mut replica = TestRedis {
            child: None,
            port: free_port(),
            dir: master.dir.with_extension("replica"),
            persistent: false,
            cluster: false,
            replica_of: Some(master.port),
            tls: None,
        };
        std::fs::create_dir_all(&replica.dir).expect("replica dir");
        replica.spawn();
        let dir = master.dir.with_extension("sentinels");
        std::fs::create_dir_all(&dir).expect("sentinel dir");
        let mut group = TestSentinel {
            servers: vec![master, replica],
            sentinels: Vec::new(),
            dir,
        };
        group.wait("the replica never synced", |g| {
            g.servers[1]
                .query(&["INFO", "replication"])
                .ok()
                .and_then(|v| redis::from_redis_value::<String>(v).ok())
                .is_some_and(|i| i.contains("master_link_status:up"))
        });
        for i in 0..3 {
            let port = free_port();
            let conf = group.dir.join(format!("sentinel{i}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                     sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {master} 2\n\
                     sentinel down-after-milliseconds {SENTINEL_MASTER} 1000\n\
                     sentinel failover-timeout {SENTINEL_MASTER} 5000\n",
                    dir = group.dir.display(),
                    master = group.servers[0].port,
                ),
            )
            .expect("write sentinel.conf");
            let child = Command::new("redis-server")
                .arg(&conf)
                .arg("--sentinel")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start redis-server --sentinel");
            group.sentinels.push((child, port));
        }
        group.wait("the sentinels never named the master", |g| {
            g.sentinels.iter().all(|(_, port)| {
                let addr = g.ask(
                    *port,
                    &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_MASTER],
                );
                addr.get(1).and_then(|p| p.parse::<u16>().ok()) == Some(g.servers[0].port)
            })
        });
        group
    }

    fn wait(&self, what: &str, ready: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ready(self) {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A sentinel's reply as flat text fields (empty if it does not answer).
    fn ask(&self, port: u16, args: &[&str]) -> Vec<String> {
        let query = || -> redis::RedisResult<Vec<String>> {
            let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
            let mut con = client.get_connection_with_timeout(Duration::from_secs(1))?;
            let mut cmd = redis::cmd(args[0]);
            for a in &args[1..] {
                cmd.arg(*a);
            }
            cmd.query(&mut con)
        };
        query().unwrap_or_default()
    }

    /// URLs of the three sentinels.
    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|(_, port)| format!("redis://127.0.0.1:{port}"))
            .collect()
    }

    /// The port of the master, as the first sentinel names it.
    pub fn master_port(&self) -> u16 {
        let addr = self.ask(
            self.sentinels[0].1,
            &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_MASTER],
        );
        addr.get(1).and_then(|p| p.parse().ok()).unwrap_or(0)
    }

    /// Promotes the replica (`SENTINEL FAILOVER`) and waits until the sentinels name it and it
    /// answers as the master.
    pub fn failover(&self) {
        // A forced failover asks no other sentinel, but this one must know the replica (it
        // learns of it from the master's INFO, every 10 s at first).
        self.wait("the sentinel never saw the replica", |g| {
            let info = g.ask(g.sentinels[0].1, &["SENTINEL", "MASTER", SENTINEL_MASTER]);
            info.iter()
                .position(|f| f == "num-slaves")
                .and_then(|i| info.get(i + 1))
                .is_some_and(|n| n == "1")
        });
        let before = self.master_port();
        let reply = self.ask(
            self.sentinels[0].1,
            &["SENTINEL", "FAILOVER", SENTINEL_MASTER],
        );
        let _ = reply;
        self.wait("the failover never completed", |g| {
            let now = g.master_port();
            now != before
                && g.servers.iter().any(|s| {
                    s.port == now
                        && s.query(&["ROLE"])
                            .ok()
                            .and_then(|v| redis::from_redis_value::<Vec<redis::Value>>(v).ok())
                            .and_then(|r| r.first().cloned())
                            .and_then(|r| redis::from_redis_value::<String>(r).ok())
                            .is_some_and(|role| role == "master")
                })
        });
    }
}

impl Drop for TestSentinel {
    fn drop(&mut self) {
        for (child, _) in &mut self.sentinels {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A three-master Redis Cluster (no replicas) of the test's own, made with
/// `redis-cli --cluster create` on free ports; every server is killed when dropped.
pub struct TestCluster {
    nodes: Vec<TestRedis>,
}

impl TestCluster {
    /// Starts a three-node Redis Cluster and waits until its slots are assigned.
    pub fn start() -> Self {
        let nodes: Vec<TestRedis> = (0..3).map(|_| TestRedis::start_cluster_node()).collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let cluster = TestCluster { nodes };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cluster.nodes.iter().all(|n| {
            n.query(&["CLUSTER", "INFO"])
                .ok()
                .and_then(|v| redis::from_redis_value::<String>(v).ok())
                .is_some_and(|info| info.contains("cluster_state:ok"))
        }) {
            assert!(
                Instant::now() < deadline,
                "the test cluster never became ready"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        cluster
    }

    /// Seed URLs of every node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(TestRedis::url).collect()
    }

    /// The servers, to query (each answers only for its own slots) or kill.
    pub fn nodes(&self) -> &[TestRedis] {
        &self.nodes
    }

    /// Runs a command on every node and returns the replies.
    pub fn query_all(&self, args: &[&str]) -> Vec<redis::RedisResult<redis::Value>> {
        self.nodes.iter().map(|n| n.query(args)).collect()
    }
}

/// A loopback port nothing listens on (bound once and released), never one this process handed
/// out before: the kernel may give a released port out again at once, and two servers of one
/// test (an IdP's public and admin listeners, say) would then be told the same port.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        let port = listener.local_addr().expect("local address").port();
        drop(listener);
        let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
        if given.contains(&port) {
            continue;
        }
        // Make sure nothing answers there (another test's server started meanwhile).
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            continue;
        }
        given.push(port);
        return port;
    }
}
