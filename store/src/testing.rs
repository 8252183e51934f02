//! Test support: a `redis-server` of the test's own on a free port, and the contract suite that
//! every store implementation must pass.

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

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

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

pub const SENTINEL_MASTER: &str = "mymaster";

impl TestSentinel {
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

/// A loopback port nothing listens on (bound once and released).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let port = listener.local_addr().expect("local address").port();
    drop(listener);
    // Make sure nothing answers there (another test's server started meanwhile).
    if TcpStream::connect(("127.0.0.1", port)).is_ok() {
        return free_port();
    }
    port
}

/// The contract every store implementation passes. Each function is one behaviour.
pub mod suite {
    use std::time::Duration;

    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use crate::{
        AuthCode, CodeId, Event, MAX_AUDIT_PAGE, MAX_USERNAME_LEN, Redeemed, ReferenceToken,
        Renewal, Session, SessionId, SessionKind, StoreError, TokenStore, User, ValueToken,
        now_unix,
    };

    /// A session that is live now, for `subject`.
    pub fn session(subject: &str) -> Session {
        let now = now_unix();
        Session {
            id: ReferenceToken::generate().session_id(),
            subject: subject.to_owned(),
            roles: vec!["orders:read".to_owned()],
            value_token: ValueToken(format!("header.{subject}.signature")),
            created_at: now,
            last_used_at: now,
            idle_timeout: 600,
            max_expires_at: now + 3600,
            client_id: None,
            method: "password".to_owned(),
            kind: SessionKind::Access,
        }
    }

    /// A user with a password, created now.
    pub fn user(username: &str) -> User {
        let now = now_unix();
        User {
            username: username.to_owned(),
            password_hash: Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_owned()),
            roles: vec!["orders:read".to_owned()],
            disabled: false,
            upstream: None,
            created_at: now,
            updated_at: now,
        }
    }

    /// What a code for `subject` stands for.
    pub fn auth_code(subject: &str) -> AuthCode {
        AuthCode {
            client_id: "web".to_owned(),
            redirect_uri: "http://127.0.0.1:3000/callback".to_owned(),
            code_challenge: Some("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".to_owned()),
            nonce: Some("n-0S6_WzA2Mj".to_owned()),
            scope: Some("openid orders:read".to_owned()),
            subject: subject.to_owned(),
            roles: vec!["orders:read".to_owned()],
            auth_time: now_unix(),
            method: "password".to_owned(),
        }
    }

    /// A token shaped like a value token (unsigned: the store does not verify) expiring at `exp`.
    pub fn token_expiring(subject: &str, exp: u64) -> ValueToken {
        let claims = format!(r#"{{"sub":"{subject}","exp":{exp}}}"#);
        ValueToken(format!(
            "eyJhbGciOiJFZERTQSJ9.{}.c2lnbmF0dXJl",
            URL_SAFE_NO_PAD.encode(claims)
        ))
    }

    /// A live session of `subject` whose value token expires at `exp`.
    fn session_expiring(subject: &str, exp: u64) -> Session {
        let mut s = session(subject);
        s.value_token = token_expiring(subject, exp);
        s
    }

    async fn due_ids<S: TokenStore>(
        store: &S,
        before: u64,
        skip: usize,
        limit: usize,
    ) -> Vec<SessionId> {
        store
            .value_tokens_due(before, skip, limit)
            .await
            .expect("due")
            .into_iter()
            .map(|s| s.id)
            .collect()
    }

    async fn events_since<S: TokenStore>(store: &S, cursor: &crate::EventCursor) -> Vec<Event> {
        store
            .read_events(cursor, Duration::from_millis(10))
            .await
            .expect("read events")
            .events
    }

    pub async fn create_then_lookup<S: TokenStore>(store: &S) {
        let s = session("alice");
        store.create(&s).await.expect("create");
        assert_eq!(store.lookup(&s.id).await.expect("lookup"), Some(s));
        let unknown = ReferenceToken::generate().session_id();
        assert_eq!(store.lookup(&unknown).await.expect("lookup"), None);
    }

    pub async fn ended_sessions_are_not_found<S: TokenStore>(store: &S) {
        let mut idle = session("alice");
        idle.last_used_at = now_unix() - 700; // idle timeout 600 passed
        store.create(&idle).await.expect("create");
        assert_eq!(store.lookup(&idle.id).await.expect("lookup"), None);
        assert!(store.sessions("alice").await.expect("list").is_empty());
    }

    pub async fn touch_extends_but_never_shortens_or_revives<S: TokenStore>(store: &S) {
        let now = now_unix();
        let mut s = session("alice");
        s.last_used_at = now - 100;
        store.create(&s).await.expect("create");

        assert_eq!(store.touch(&[(s.id.clone(), now)]).await.expect("touch"), 1);
        let got = store.lookup(&s.id).await.expect("lookup").expect("live");
        assert_eq!(got.last_used_at, now);
        assert_eq!(got.expires_at(), now + 600);

        // An older report never moves the expiry back.
        assert_eq!(
            store
                .touch(&[(s.id.clone(), now - 50)])
                .await
                .expect("touch"),
            0
        );
        let got = store.lookup(&s.id).await.expect("lookup").expect("live");
        assert_eq!(got.last_used_at, now);

        // Use never extends past the absolute lifetime.
        store
            .touch(&[(s.id.clone(), now + 3500)])
            .await
            .expect("touch");
        let got = store.lookup(&s.id).await.expect("lookup").expect("live");
        assert_eq!(got.expires_at(), s.max_expires_at);

        // A revoked session stays revoked whatever is reported later.
        assert!(store.revoke(&s.id).await.expect("revoke"));
        assert_eq!(
            store
                .touch(&[(s.id.clone(), now + 10)])
                .await
                .expect("touch"),
            0
        );
        assert_eq!(store.lookup(&s.id).await.expect("lookup"), None);
        // Unknown sessions in a batch are skipped, the rest applied.
        let other = session("bob");
        store.create(&other).await.expect("create");
        let unknown = ReferenceToken::generate().session_id();
        let batch = [(unknown, now + 5), (other.id.clone(), now + 5)];
        assert_eq!(store.touch(&batch).await.expect("touch"), 1);
    }

    pub async fn revoke_publishes_once<S: TokenStore>(store: &S) {
        let s = session("alice");
        store.create(&s).await.expect("create");
        let cursor = store.events_head().await.expect("head");
        assert!(store.revoke(&s.id).await.expect("revoke"));
        assert_eq!(store.lookup(&s.id).await.expect("lookup"), None);
        assert!(!store.revoke(&s.id).await.expect("revoke again"));
        assert_eq!(
            events_since(store, &cursor).await,
            vec![Event::Revoked {
                session: s.id.clone()
            }]
        );
        assert!(store.sessions("alice").await.expect("list").is_empty());
    }

    pub async fn revoke_subject_ends_every_session_of_that_subject_only<S: TokenStore>(store: &S) {
        let mut alice: Vec<Session> = (0..3).map(|_| session("alice")).collect();
        let bob = session("bob");
        for s in alice.iter().chain([&bob]) {
            store.create(s).await.expect("create");
        }
        let cursor = store.events_head().await.expect("head");
        let mut revoked = store.revoke_subject("alice").await.expect("revoke subject");
        revoked.sort();
        alice.sort_by(|a, b| a.id.cmp(&b.id));
        let ids: Vec<SessionId> = alice.iter().map(|s| s.id.clone()).collect();
        assert_eq!(revoked, ids);
        for s in &alice {
            assert_eq!(store.lookup(&s.id).await.expect("lookup"), None);
        }
        assert!(store.sessions("alice").await.expect("list").is_empty());
        assert_eq!(store.sessions("bob").await.expect("list"), vec![bob]);
        let events = events_since(store, &cursor).await;
        let [Event::SubjectRevoked { subject, sessions }] = events.as_slice() else {
            panic!("expected one forced-logout event, got {events:?}");
        };
        assert_eq!(subject, "alice");
        let mut sessions = sessions.clone();
        sessions.sort();
        assert_eq!(sessions, ids);
        assert!(
            store
                .revoke_subject("nobody")
                .await
                .expect("revoke")
                .is_empty()
        );
    }

    pub async fn sessions_lists_live_sessions<S: TokenStore>(store: &S) {
        let a = session("carol");
        let b = session("carol");
        store.create(&a).await.expect("create");
        store.create(&b).await.expect("create");
        let mut listed = store.sessions("carol").await.expect("list");
        listed.sort_by(|x, y| x.id.cmp(&y.id));
        let mut expected = vec![a, b];
        expected.sort_by(|x, y| x.id.cmp(&y.id));
        assert_eq!(listed, expected);
        // Subjects with characters that mean something to Redis are kept apart.
        let odd = session("x}{y:*");
        store.create(&odd).await.expect("create");
        assert_eq!(store.sessions("x}{y:*").await.expect("list"), vec![odd]);
    }

    pub async fn update_sessions_replaces_roles_of_live_sessions<S: TokenStore>(store: &S) {
        let live = session("dave");
        let gone = session("dave");
        store.create(&live).await.expect("create");
        store.create(&gone).await.expect("create");
        store.revoke(&gone.id).await.expect("revoke");
        let cursor = store.events_head().await.expect("head");
        let roles = vec!["admin".to_owned(), "orders:write".to_owned()];
        let token = ValueToken("new.value.token".to_owned());
        let updates = [
            (live.id.clone(), roles.clone(), token.clone()),
            (gone.id.clone(), roles.clone(), token.clone()),
        ];
        assert_eq!(store.update_sessions(&updates).await.expect("update"), 1);
        let got = store.lookup(&live.id).await.expect("lookup").expect("live");
        assert_eq!(got.expires_at(), live.expires_at());
        assert_eq!((got.roles, got.value_token), (roles, token));
        assert_eq!(store.lookup(&gone.id).await.expect("lookup"), None);
        assert_eq!(
            events_since(store, &cursor).await,
            vec![Event::RolesChanged {
                sessions: vec![live.id.clone()]
            }]
        );
    }

    pub async fn value_tokens_come_due_by_expiry<S: TokenStore>(store: &S) {
        let now = now_unix();
        let soon = session_expiring("alice", now + 100);
        let later = session_expiring("bob", now + 200);
        let far = session_expiring("carol", now + 1000);
        let mut to_the_end = session("dave");
        to_the_end.value_token = token_expiring("dave", to_the_end.max_expires_at);
        let revoked = session_expiring("erin", now + 50);
        let logged_out = session_expiring("frank", now + 60);
        let mut idle = session_expiring("grace", now + 70);
        idle.last_used_at = now - 700; // idle timeout 600 passed
        for s in [
            &soon,
            &later,
            &far,
            &to_the_end,
            &revoked,
            &logged_out,
            &idle,
        ] {
            store.create(s).await.expect("create");
        }
        store.revoke(&revoked.id).await.expect("revoke");
        store.revoke_subject("frank").await.expect("revoke subject");

        // Soonest first; ended sessions are never due.
        let (a, b, c) = (soon.id.clone(), later.id.clone(), far.id.clone());
        assert_eq!(
            due_ids(store, now + 500, 0, 10).await,
            [a.clone(), b.clone()]
        );
        assert_eq!(
            due_ids(store, now + 150, 0, 10).await,
            std::slice::from_ref(&a)
        );
        assert_eq!(
            due_ids(store, now + 500, 0, 1).await,
            std::slice::from_ref(&a)
        );
        assert_eq!(
            due_ids(store, now + 500, 1, 10).await,
            std::slice::from_ref(&b)
        );
        assert_eq!(due_ids(store, now + 500, 2, 10).await, []);
        // A token that lasts as long as its session has nothing left to renew.
        assert_eq!(
            due_ids(store, now + 5000, 0, 10).await,
            [a.clone(), b.clone(), c.clone()]
        );
        // The returned session is the whole record.
        let got = store.value_tokens_due(now + 150, 0, 1).await.expect("due");
        assert_eq!(got, std::slice::from_ref(&soon));

        // A role change's new token moves the session in the schedule.
        let roles = vec!["admin".to_owned()];
        let token = token_expiring("alice", now + 2000);
        store
            .update_sessions(&[(a.clone(), roles, token)])
            .await
            .expect("update");
        assert_eq!(
            due_ids(store, now + 500, 0, 10).await,
            std::slice::from_ref(&b)
        );
        assert_eq!(due_ids(store, now + 5000, 0, 10).await, [b, c, a]);
    }

    pub async fn renewed_value_tokens_replace_without_an_event<S: TokenStore>(store: &S) {
        let now = now_unix();
        let s = session_expiring("alice", now + 100);
        store.create(&s).await.expect("create");
        let cursor = store.events_head().await.expect("head");
        let fresh = token_expiring("alice", now + 400);
        let renewal = Renewal {
            session: s.id.clone(),
            replaces: s.value_token.clone(),
            token: fresh.clone(),
        };
        assert_eq!(
            store
                .replace_value_tokens(std::slice::from_ref(&renewal))
                .await
                .expect("replace"),
            1
        );
        let got = store.lookup(&s.id).await.expect("lookup").expect("live");
        assert_eq!(got.value_token, fresh);
        assert_eq!(
            (got.expires_at(), got.roles),
            (s.expires_at(), s.roles.clone())
        );
        assert_eq!(
            events_since(store, &cursor).await,
            [],
            "a renewal must not become an event"
        );
        assert_eq!(due_ids(store, now + 200, 0, 10).await, []);
        assert_eq!(
            due_ids(store, now + 500, 0, 10).await,
            std::slice::from_ref(&s.id)
        );

        // A renewal made from a token the session no longer holds (a role change or another
        // replica's renewal came first) changes nothing.
        let late = Renewal {
            token: token_expiring("alice", now + 450),
            ..renewal
        };
        assert_eq!(
            store.replace_value_tokens(&[late]).await.expect("replace"),
            0
        );
        let got = store.lookup(&s.id).await.expect("lookup").expect("live");
        assert_eq!(got.value_token, fresh);

        // Ended and unknown sessions are not renewed, nor brought back.
        store.revoke(&s.id).await.expect("revoke");
        let after_revoke = Renewal {
            session: s.id.clone(),
            replaces: fresh,
            token: token_expiring("alice", now + 500),
        };
        let unknown = Renewal {
            session: ReferenceToken::generate().session_id(),
            ..after_revoke.clone()
        };
        let replaced = store
            .replace_value_tokens(&[after_revoke, unknown])
            .await
            .expect("replace");
        assert_eq!(replaced, 0);
        assert_eq!(store.lookup(&s.id).await.expect("lookup"), None);
        assert_eq!(due_ids(store, now + 5000, 0, 10).await, []);
        assert_eq!(store.replace_value_tokens(&[]).await.expect("replace"), 0);
    }

    pub async fn one_holder_at_a_time_has_the_renewal_lease<S: TokenStore>(store: &S) {
        let ttl = Duration::from_millis(300);
        assert!(store.renewal_lease("idp-a", ttl).await.expect("lease"));
        assert!(!store.renewal_lease("idp-b", ttl).await.expect("lease"));
        // The holder keeps it as long as it asks again in time.
        tokio::time::sleep(ttl / 2).await;
        assert!(store.renewal_lease("idp-a", ttl).await.expect("lease"));
        tokio::time::sleep(ttl / 2).await;
        assert!(!store.renewal_lease("idp-b", ttl).await.expect("lease"));
        // A holder that stopped asking (crashed) loses it when it runs out.
        tokio::time::sleep(ttl + Duration::from_millis(100)).await;
        assert!(store.renewal_lease("idp-b", ttl).await.expect("lease"));
        assert!(!store.renewal_lease("idp-a", ttl).await.expect("lease"));
    }

    pub async fn subject_roles_round_trip<S: TokenStore>(store: &S) {
        assert_eq!(store.subject_roles("erin").await.expect("get"), None);
        let roles = vec!["a".to_owned(), "b".to_owned()];
        store.set_subject_roles("erin", &roles).await.expect("set");
        assert_eq!(store.subject_roles("erin").await.expect("get"), Some(roles));
        store
            .set_subject_roles("carol", &["x".to_owned()])
            .await
            .expect("set");
        assert!(store.clear_subject_roles("carol").await.expect("clear"));
        assert_eq!(store.subject_roles("carol").await.expect("get"), None);
        assert!(!store.clear_subject_roles("carol").await.expect("clear"));
    }

    pub async fn events_resume_from_cursor_at_least_once<S: TokenStore>(store: &S) {
        let start = store.events_head().await.expect("head");
        let (a, b) = (session("f"), session("g"));
        store.create(&a).await.expect("create");
        store.create(&b).await.expect("create");
        store.revoke(&a.id).await.expect("revoke");
        let first = store
            .read_events(&start, Duration::from_millis(10))
            .await
            .expect("read");
        assert!(!first.gap);
        assert_eq!(
            first.events,
            vec![Event::Revoked {
                session: a.id.clone()
            }]
        );
        // Nothing new after the returned cursor.
        let empty = store
            .read_events(&first.cursor, Duration::from_millis(10))
            .await
            .expect("read");
        assert!(empty.events.is_empty() && !empty.gap);
        assert_eq!(empty.cursor, first.cursor);
        store.revoke(&b.id).await.expect("revoke");
        let next = store
            .read_events(&first.cursor, Duration::from_millis(10))
            .await
            .expect("read");
        assert_eq!(
            next.events,
            vec![Event::Revoked {
                session: b.id.clone()
            }]
        );
        // Reading again from an old position delivers the same events again (at-least-once).
        let again = store
            .read_events(&start, Duration::from_millis(10))
            .await
            .expect("read");
        assert_eq!(again.events.len(), 2);
        assert_eq!(again.cursor, next.cursor);
    }

    pub async fn blocked_reader_wakes_on_event<S: TokenStore>(store: &S) {
        let s = session("h");
        store.create(&s).await.expect("create");
        let head = store.events_head().await.expect("head");
        let reader = {
            let store = store.clone();
            tokio::spawn(async move { store.read_events(&head, Duration::from_secs(20)).await })
        };
        let started = std::time::Instant::now();
        store.revoke(&s.id).await.expect("revoke");
        let batch = reader.await.expect("join").expect("read");
        assert_eq!(
            batch.events,
            vec![Event::Revoked {
                session: s.id.clone()
            }]
        );
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "reader was not woken"
        );
    }

    /// `store` must keep at most `max_len` events (a few hundred at most).
    pub async fn login_failures_lock_out_per_key<S: TokenStore>(store: &S) {
        let (window, lockout) = (Duration::from_secs(60), Duration::from_secs(30));
        let fail = |key: &'static str| store.login_failed(key, 3, window, lockout);
        assert!(!fail("user:alice").await.expect("count"));
        assert!(!fail("user:alice").await.expect("count"));
        assert_eq!(store.login_locked("user:alice").await.expect("check"), None);
        // A success forgets the failures so far.
        store.login_succeeded("user:alice").await.expect("clear");
        assert!(!fail("user:alice").await.expect("count"));
        assert!(!fail("user:alice").await.expect("count"));
        assert!(
            fail("user:alice").await.expect("count"),
            "third failure must lock"
        );
        let left = store
            .login_locked("user:alice")
            .await
            .expect("check")
            .expect("locked");
        assert!(
            left > Duration::from_secs(28) && left <= lockout,
            "{left:?}"
        );
        // Other keys (and names with braces) are untouched; a success does not lift a lock.
        assert_eq!(store.login_locked("user:{bob}").await.expect("check"), None);
        store.login_succeeded("user:alice").await.expect("clear");
        assert!(
            store
                .login_locked("user:alice")
                .await
                .expect("check")
                .is_some()
        );
        // A short lockout ends by itself.
        assert!(
            store
                .login_failed("addr:10.0.0.1", 1, window, Duration::from_millis(50))
                .await
                .expect("count")
        );
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(
            store.login_locked("addr:10.0.0.1").await.expect("check"),
            None
        );
    }

    pub async fn trimmed_stream_is_reported_as_gap<S: TokenStore>(store: &S, max_len: usize) {
        let start = store.events_head().await.expect("head");
        for _ in 0..(max_len * 3 + 300) {
            let s = session("i");
            store.create(&s).await.expect("create");
            store.revoke(&s.id).await.expect("revoke");
        }
        let batch = store
            .read_events(&start, Duration::from_millis(10))
            .await
            .expect("read");
        assert!(batch.gap, "a reader behind the trimmed stream must be told");
    }

    pub async fn sessions_keep_client_method_and_kind<S: TokenStore>(store: &S) {
        let mut browser = session("alice");
        browser.client_id = Some("web".to_owned());
        browser.method = "upstream:corp".to_owned();
        browser.kind = SessionKind::Browser;
        store.create(&browser).await.expect("create");
        assert_eq!(
            store.lookup(&browser.id).await.expect("lookup"),
            Some(browser.clone())
        );
        let mut plain = session("alice");
        plain.method = String::new();
        store.create(&plain).await.expect("create");
        assert_eq!(
            store.lookup(&plain.id).await.expect("lookup"),
            Some(plain.clone())
        );
        // A role change keeps what the session is and where it came from.
        let roles = vec!["admin".to_owned()];
        let token = ValueToken("re.signed.token".to_owned());
        store
            .update_sessions(&[(browser.id.clone(), roles.clone(), token.clone())])
            .await
            .expect("update");
        let got = store
            .lookup(&browser.id)
            .await
            .expect("lookup")
            .expect("live");
        assert_eq!(
            (got.client_id, got.method, got.kind),
            (browser.client_id, browser.method, SessionKind::Browser)
        );
    }

    pub async fn users_are_created_once_read_updated_and_deleted<S: TokenStore>(store: &S) {
        assert_eq!(store.user("alice").await.expect("get"), None);
        let alice = user("alice");
        assert!(store.create_user(&alice).await.expect("create"));
        let mut other = user("alice");
        other.roles = vec!["admin".to_owned()];
        assert!(
            !store.create_user(&other).await.expect("create again"),
            "a name is taken once"
        );
        assert_eq!(store.user("alice").await.expect("get"), Some(alice.clone()));

        let mut changed = alice.clone();
        changed.password_hash = None;
        changed.roles = vec!["a".to_owned(), "b".to_owned()];
        changed.disabled = true;
        changed.upstream = Some("corp".to_owned());
        changed.updated_at += 5;
        assert!(store.update_user(&changed).await.expect("update"));
        assert_eq!(
            store.user("alice").await.expect("get"),
            Some(changed.clone())
        );
        // And back: optional fields come back too.
        assert!(store.update_user(&alice).await.expect("update"));
        assert_eq!(store.user("alice").await.expect("get"), Some(alice.clone()));
        assert!(!store.update_user(&user("nobody")).await.expect("update"));
        assert_eq!(store.user("nobody").await.expect("get"), None);

        assert!(store.delete_user("alice").await.expect("delete"));
        assert_eq!(store.user("alice").await.expect("get"), None);
        assert!(!store.delete_user("alice").await.expect("delete again"));
        assert!(
            store
                .create_user(&other)
                .await
                .expect("create after delete")
        );
        assert_eq!(store.user("alice").await.expect("get"), Some(other));

        // Names with characters that mean something to Redis are kept apart.
        let odd = user("x}{y:*");
        assert!(store.create_user(&odd).await.expect("create"));
        assert_eq!(store.user("x}{y:*").await.expect("get"), Some(odd));
        assert_eq!(store.user("x}{y").await.expect("get"), None);
        // Names past the bound are refused, and never found.
        let long = "a".repeat(MAX_USERNAME_LEN + 1);
        assert!(matches!(
            store.create_user(&user(&long)).await,
            Err(StoreError::Invalid { .. })
        ));
        assert_eq!(store.user(&long).await.expect("get"), None);
        assert!(
            store
                .create_user(&user(&"a".repeat(MAX_USERNAME_LEN)))
                .await
                .expect("create at the bound")
        );
    }

    pub async fn users_are_listed_by_name_in_pages<S: TokenStore>(store: &S) {
        let mut created: Vec<User> = [
            "al", "alice", "alicia", "albert", "al}{x", "al:*", "bob", "zed", "ålice", "Alice",
        ]
        .into_iter()
        .map(user)
        .collect();
        for u in &created {
            assert!(store.create_user(u).await.expect("create"));
        }
        // Bytewise order, as Rust orders strings.
        created.sort_by(|a, b| a.username.cmp(&b.username));
        let names: Vec<&str> = created.iter().map(|u| u.username.as_str()).collect();
        let all = store.list_users("", None, 1000).await.expect("list");
        assert_eq!(all.users, created);
        assert_eq!(all.next, None);

        // Paging through a prefix, two at a time, gives every match once, in order.
        let wanted: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| n.starts_with("al"))
            .collect();
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = store
                .list_users("al", after.as_deref(), 2)
                .await
                .expect("list");
            assert!(page.users.len() <= 2);
            seen.extend(page.users.iter().map(|u| u.username.clone()));
            match page.next {
                Some(next) => {
                    assert_eq!(
                        Some(&next),
                        seen.last(),
                        "the cursor is the page's last name"
                    );
                    after = Some(next);
                }
                None => break,
            }
        }
        assert_eq!(seen, wanted);

        // An exact last page says there is no next one.
        let exact = store.list_users("b", None, 1).await.expect("list");
        assert_eq!((exact.users.len(), exact.next), (1, None));
        assert!(
            store
                .list_users("nobody", None, 10)
                .await
                .expect("list")
                .users
                .is_empty()
        );
        // A limit of 0 is taken as 1; a deleted user is no longer listed.
        assert_eq!(
            store
                .list_users("", None, 0)
                .await
                .expect("list")
                .users
                .len(),
            1
        );
        assert!(store.delete_user("alice").await.expect("delete"));
        let after_delete = store.list_users("alic", None, 10).await.expect("list");
        let listed: Vec<&str> = after_delete
            .users
            .iter()
            .map(|u| u.username.as_str())
            .collect();
        assert_eq!(listed, ["alicia"]);
    }

    pub async fn codes_are_redeemed_once_then_replayed_then_forgotten<S: TokenStore>(store: &S) {
        let code = ReferenceToken::generate();
        let id = CodeId::of_code(code.expose());
        let record = auth_code("alice");
        let ttl = Duration::from_secs(60);
        assert!(store.create_code(&id, &record, ttl).await.expect("create"));
        assert!(
            !store
                .create_code(&id, &auth_code("mallory"), ttl)
                .await
                .expect("create again"),
            "a code is never overwritten"
        );
        let (first, second) = (session("alice").id, session("alice").id);
        assert_eq!(
            store.redeem_code(&id, &first).await.expect("redeem"),
            Redeemed::Fresh(record)
        );
        for _ in 0..2 {
            assert_eq!(
                store.redeem_code(&id, &second).await.expect("replay"),
                Redeemed::Replayed(Some(first.clone())),
                "a replay names the session the first use made"
            );
        }
        let unknown = CodeId::of_code(ReferenceToken::generate().expose());
        assert_eq!(
            store.redeem_code(&unknown, &first).await.expect("redeem"),
            Redeemed::Unknown
        );

        // A spent code is remembered until its TTL ends, then forgotten; so is an unused one.
        let short = Duration::from_millis(300);
        let spent = CodeId::of_code(ReferenceToken::generate().expose());
        let unused = CodeId::of_code(ReferenceToken::generate().expose());
        assert!(
            store
                .create_code(&spent, &auth_code("bob"), short)
                .await
                .expect("create")
        );
        assert!(
            store
                .create_code(&unused, &auth_code("bob"), short)
                .await
                .expect("create")
        );
        assert!(matches!(
            store.redeem_code(&spent, &first).await.expect("redeem"),
            Redeemed::Fresh(_)
        ));
        assert_eq!(
            store.redeem_code(&spent, &second).await.expect("replay"),
            Redeemed::Replayed(Some(first.clone()))
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        for id in [&spent, &unused] {
            while store.redeem_code(id, &second).await.expect("redeem") != Redeemed::Unknown {
                assert!(
                    std::time::Instant::now() < deadline,
                    "a code outlived its TTL"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    fn audit_entry(n: usize) -> crate::AuditEntry {
        crate::AuditEntry {
            id: String::new(),
            at: now_unix(),
            actor: "console:admin".into(),
            action: "session.revoke".into(),
            target: format!("user{n}"),
            address: "127.0.0.1".into(),
        }
    }

    pub async fn audit_is_read_newest_first_in_pages<S: TokenStore>(store: &S) {
        assert_eq!(
            store.audit(None, 10).await.expect("empty"),
            crate::AuditPage::default()
        );
        for n in 0..5 {
            store.append_audit(&audit_entry(n)).await.expect("append");
        }
        let first = store.audit(None, 2).await.expect("page");
        let targets = |p: &crate::AuditPage| -> Vec<String> {
            p.entries.iter().map(|e| e.target.clone()).collect()
        };
        assert_eq!(targets(&first), ["user4", "user3"]);
        let e = &first.entries[0];
        assert_eq!(
            (e.actor.as_str(), e.action.as_str(), e.address.as_str()),
            ("console:admin", "session.revoke", "127.0.0.1")
        );
        assert!(e.at > 0 && !e.id.is_empty());
        let second = store.audit(first.next.as_deref(), 2).await.expect("page 2");
        assert_eq!(targets(&second), ["user2", "user1"]);
        let last = store
            .audit(second.next.as_deref(), 2)
            .await
            .expect("page 3");
        assert_eq!(targets(&last), ["user0"]);
        assert_eq!(last.next, None);
        assert!(matches!(
            store.audit(Some("not a cursor"), 2).await,
            Err(StoreError::Invalid { .. })
        ));
    }

    /// The store keeps at most `max_len` audit entries, the newest.
    pub async fn audit_trail_is_bounded<S: TokenStore>(store: &S, max_len: usize) {
        for n in 0..max_len + 5 {
            store.append_audit(&audit_entry(n)).await.expect("append");
        }
        let page = store.audit(None, MAX_AUDIT_PAGE).await.expect("page");
        assert_eq!(page.entries.len(), max_len);
        assert_eq!(page.entries[0].target, format!("user{}", max_len + 4));
        assert_eq!(page.entries[max_len - 1].target, "user5");
    }

    pub async fn reporters_are_remembered_by_last_report<S: TokenStore>(store: &S) {
        let now = now_unix();
        store.report_seen("gw-a", now - 100).await.expect("a");
        store.report_seen("gw-b", now - 10).await.expect("b");
        store.report_seen("gw-a", now).await.expect("a again");
        // An older report never moves a reporter back.
        store.report_seen("gw-b", now - 50).await.expect("b late");
        let seen = store.reporters(now - 60).await.expect("reporters");
        let names: Vec<(&str, u64)> = seen
            .iter()
            .map(|r| (r.name.as_str(), r.last_seen))
            .collect();
        assert_eq!(names, [("gw-a", now), ("gw-b", now - 10)]);
        assert_eq!(store.reporters(now - 5).await.expect("recent").len(), 1);
    }

    pub async fn pending_records_are_taken_once_then_forgotten<S: TokenStore>(store: &S) {
        let id = CodeId::of_code(ReferenceToken::generate().expose());
        let ttl = Duration::from_secs(60);
        assert!(
            store
                .create_pending(&id, "first", ttl)
                .await
                .expect("create")
        );
        assert!(
            !store
                .create_pending(&id, "second", ttl)
                .await
                .expect("create"),
            "a pending record is never overwritten"
        );
        assert_eq!(
            store.take_pending(&id).await.expect("take").as_deref(),
            Some("first")
        );
        assert_eq!(store.take_pending(&id).await.expect("again"), None);
        let unknown = CodeId::of_code(ReferenceToken::generate().expose());
        assert_eq!(store.take_pending(&unknown).await.expect("take"), None);
        let short = CodeId::of_code(ReferenceToken::generate().expose());
        assert!(
            store
                .create_pending(&short, "brief", Duration::from_millis(200))
                .await
                .expect("create")
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(store.take_pending(&short).await.expect("take"), None);
    }

    /// Generates one `#[tokio::test]` per contract behaviour. `$make` is a closure from the
    /// maximum event count to `(store, guard)`; the guard lives as long as the test.
    #[macro_export]
    macro_rules! store_contract_tests {
        ($make:expr) => {
            $crate::store_contract_tests!(@each $make;
                create_then_lookup,
                ended_sessions_are_not_found,
                touch_extends_but_never_shortens_or_revives,
                revoke_publishes_once,
                revoke_subject_ends_every_session_of_that_subject_only,
                sessions_lists_live_sessions,
                update_sessions_replaces_roles_of_live_sessions,
                value_tokens_come_due_by_expiry,
                renewed_value_tokens_replace_without_an_event,
                one_holder_at_a_time_has_the_renewal_lease,
                subject_roles_round_trip,
                events_resume_from_cursor_at_least_once,
                blocked_reader_wakes_on_event,
                login_failures_lock_out_per_key,
                sessions_keep_client_method_and_kind,
                users_are_created_once_read_updated_and_deleted,
                users_are_listed_by_name_in_pages,
                codes_are_redeemed_once_then_replayed_then_forgotten,
                audit_is_read_newest_first_in_pages,
                reporters_are_remembered_by_last_report,
                pending_records_are_taken_once_then_forgotten
            );
            #[tokio::test]
            async fn trimmed_stream_is_reported_as_gap() {
                let (store, _guard) = ($make)(10);
                $crate::testing::suite::trimmed_stream_is_reported_as_gap(&store, 10).await;
            }
            #[tokio::test]
            async fn audit_trail_is_bounded() {
                let (store, _guard) = ($make)(10);
                $crate::testing::suite::audit_trail_is_bounded(&store, 10).await;
            }
        };
        (@each $make:expr; $($name:ident),*) => {
            $(
                #[tokio::test]
                async fn $name() {
                    let (store, _guard) = ($make)(10_000);
                    $crate::testing::suite::$name(&store).await;
                }
            )*
        };
    }
}

/// Entry points for the fuzz targets (`fuzz/`) and the replay of their corpus: the store's
/// decoders, fed fields an attacker with write access to Redis could have planted.
pub mod fuzz {
    use crate::{Event, SessionId};

    /// Splits `data` at NUL bytes into alternating names and values.
    fn fields(data: &[u8]) -> Vec<(String, String)> {
        let parts: Vec<String> = data
            .split(|b| *b == 0)
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect();
        parts
            .chunks(2)
            .map(|c| (c[0].clone(), c.get(1).cloned().unwrap_or_default()))
            .collect()
    }

    /// Decodes a session hash; a decoded session must be self-consistent.
    pub fn session_record(data: &[u8]) {
        let Some(id) = SessionId::parse("AAAAAAAAAAAAAAAAAAAAAA") else {
            panic!("a valid session id was refused");
        };
        if let Some(s) = crate::redis::schema::decode_session(id, fields(data)) {
            assert!(s.expires_at() <= s.max_expires_at);
            let _ = s.is_live(crate::now_unix());
        }
    }

    /// Decodes an event stream entry; a decoded event names only well-formed session ids.
    pub fn event_entry(data: &[u8]) {
        let map = fields(data)
            .into_iter()
            .map(|(k, v)| (k, redis::Value::BulkString(v.into_bytes())))
            .collect();
        let entry = redis::streams::StreamId {
            id: "1-1".to_owned(),
            map,
            milliseconds_elapsed_from_delivery: None,
            delivered_count: None,
        };
        if let Some(event) = crate::redis::events::decode_event(&entry) {
            assert!(matches!(
                event,
                Event::Revoked { .. } | Event::RolesChanged { .. } | Event::SubjectRevoked { .. }
            ));
            for s in event.sessions() {
                assert!(SessionId::parse(s.as_str()).is_some());
            }
        }
    }
}
