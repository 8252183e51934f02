//! The whole product as an operator runs it: `tokengate idp` and `tokengate gateway` processes
//! started from the built binary with debug logging to files, a `redis-server` of the test's own,
//! and a recording backend. For the fault and attack suites, which kill, stop and restart parts.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokengate_store::testing::free_port;
use tokio_util::sync::CancellationToken;

use super::{ADMIN_TOKEN, CLI_CLIENT, CLIENT_SECRET, PASSWORD, Reply, TestRedis, post_form, send};

/// What differs between stacks.
#[derive(Clone, Debug)]
pub struct Options {
    pub gateways: usize,
    /// Redis keeps its data across a restart (append-only file).
    pub persistent_redis: bool,
    /// Extra lines for the gateways' `[server]` section.
    pub gateway_server: String,
    /// Extra lines for the gateways' `[admin]` section.
    pub gateway_admin: String,
    /// Extra sections at the end of the gateways' config (`[log]`, more `[[routes]]`);
    /// `{backend}` in it becomes the recording backend's URL.
    pub gateway_extra: String,
    /// The gateways' `sync.interval`.
    pub sync_interval: &'static str,
    /// Extra sections for the IdP's config.
    pub idp_extra: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            gateways: 2,
            persistent_redis: false,
            gateway_server: String::new(),
            gateway_admin: String::new(),
            gateway_extra: String::new(),
            sync_interval: "100ms",
            idp_extra: String::new(),
        }
    }
}

/// One `tokengate` process; killed when dropped.
pub struct Proc {
    pub name: String,
    pub public: SocketAddr,
    pub admin: SocketAddr,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl Proc {
    fn start(name: &str, args: Vec<String>, log: PathBuf) -> (Child, PathBuf) {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_tokengate"))
            .args(&args)
            .env("RUST_LOG", "debug")
            .env_remove("TOKENGATE_ADMIN_TOKEN")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        (child, log)
    }

    fn spawn(
        name: &str,
        args: Vec<String>,
        log: PathBuf,
        public: SocketAddr,
        admin: SocketAddr,
    ) -> Self {
        let (child, log) = Self::start(name, args.clone(), log);
        Proc {
            name: name.to_owned(),
            public,
            admin,
            args,
            log,
            child: Some(child),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.public)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("process running").id()
    }

    /// Waits until `/readyz` answers 200; panics with the log if the process exits first.
    pub async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("{} exited with {status}:\n{}", self.name, self.log_text());
            }
            if try_get(&self.admin_url("/readyz")).await == Some(200) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} never became ready:\n{}",
                self.name,
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL: a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the process again with the same config and ports, and waits until it is ready.
    pub async fn restart(&mut self) {
        self.kill();
        let (child, _) = Self::start(&self.name, self.args.clone(), self.log.clone());
        self.child = Some(child);
        self.wait_ready().await;
    }

    /// Sends a signal (`TERM`, `STOP`, `CONT`) with kill(1).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits for the process to exit (after a signal), up to `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        let child = self.child.as_mut().expect("process running");
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(Instant::now() < deadline, "{} did not exit", self.name);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // A stopped process must be continued before it can die.
            let _ = Command::new("kill")
                .arg("-CONT")
                .arg(child.id().to_string())
                .status();
        }
        self.kill();
    }
}

/// A backend that answers every request with what it received (method, path, headers, body
/// length) once it has read the whole body, and records every path (as `PATH` when the head
/// arrived, and `PATH#complete` once the whole body did). A path containing `/slow`
/// is answered after 400 ms.
pub struct Backend {
    pub addr: SocketAddr,
    pub paths: Arc<Mutex<Vec<String>>>,
    /// Requests received and not yet answered.
    pub in_flight: Arc<AtomicUsize>,
    shutdown: CancellationToken,
}

impl Backend {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let paths = Arc::new(Mutex::new(Vec::new()));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let shutdown = CancellationToken::new();
        let (p, f, s) = (paths.clone(), in_flight.clone(), shutdown.clone());
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    _ = s.cancelled() => break,
                    a = listener.accept() => match a { Ok((stream, _)) => stream, Err(_) => continue },
                };
                let (p, f) = (p.clone(), f.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: http::Request<Incoming>| {
                        let (p, f) = (p.clone(), f.clone());
                        async move { Ok::<_, std::convert::Infallible>(answer(req, &p, &f).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Backend {
            addr,
            paths,
            in_flight,
            shutdown,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn saw(&self, needle: &str) -> bool {
        self.paths
            .lock()
            .unwrap()
            .iter()
            .any(|p| p.contains(needle))
    }
}

async fn answer(
    req: http::Request<Incoming>,
    paths: &Mutex<Vec<String>>,
    in_flight: &AtomicUsize,
) -> http::Response<Full<Bytes>> {
    in_flight.fetch_add(1, Ordering::SeqCst);
    let (parts, body) = req.into_parts();
    paths.lock().unwrap().push(parts.uri.path().to_owned());
    let length = body
        .collect()
        .await
        .map(|b| b.to_bytes().len() as i64)
        .unwrap_or(-1);
    if length >= 0 {
        let done = format!("{}#complete", parts.uri.path());
        paths.lock().unwrap().push(done);
    }
    if parts.uri.path().contains("/slow") {
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let body = serde_json::json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "headers": tokengate_gateway::echo::headers_json(&parts.headers),
        "body_bytes": length,
    });
    in_flight.fetch_sub(1, Ordering::SeqCst);
    http::Response::new(Full::new(Bytes::from(body.to_string())))
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Redis, the IdP, gateways and a backend, each a real process or socket.
pub struct Stack {
    pub redis: TestRedis,
    pub idp: Proc,
    pub gateways: Vec<Proc>,
    pub backend: Backend,
    /// A port that accepts connections and never answers (for 504s).
    pub silent: SocketAddr,
    /// The IdP's signing key (PKCS#8 PEM), for tests that forge value tokens.
    pub signing_key_pem: String,
    dir: PathBuf,
    secrets: Mutex<Vec<String>>,
    _silent: std::net::TcpListener,
}

fn addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

impl Stack {
    pub async fn start(options: Options) -> Self {
        let redis = if options.persistent_redis {
            TestRedis::start_persistent()
        } else {
            TestRedis::start()
        };
        let dir = std::env::temp_dir().join(format!(
            "tokengate-stack-{}-{}",
            std::process::id(),
            redis.port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("signing.pem");
        let made = Command::new(env!("CARGO_BIN_EXE_tokengate"))
            .args(["gen-key", "--out"])
            .arg(&key)
            .output()
            .unwrap();
        assert!(made.status.success(), "gen-key: {made:?}");
        let hash = tokengate_idp::password::hash_password(PASSWORD).unwrap();
        let client_hash = tokengate_idp::password::hash_password(CLIENT_SECRET).unwrap();
        let (idp_public, idp_admin) = (addr(), addr());
        let users: String = ["alice", "bob", "carol"]
            .iter()
            .map(|u| {
                format!(
                    "[[users]]\nusername = \"{u}\"\npassword_hash = \"{hash}\"\nroles = [\"orders:read\"]\n"
                )
            })
            .collect();
        let idp_toml = format!(
            r#"[server]
listen = "{idp_public}"
header_timeout = "2s"
[admin]
listen = "{idp_admin}"
token = "{ADMIN_TOKEN}"
[store]
redis_url = "{redis}"
[tokens]
signing_keys = ["signing.pem"]
{extra}
{users}
[[clients]]
client_id = "reports"
client_secret_hash = "{client_hash}"
roles = ["reports:write"]
[[clients]]
client_id = "{CLI_CLIENT}"
type = "public"
grants = ["password"]
"#,
            redis = redis.url(),
            extra = options.idp_extra,
        );
        let idp_config = dir.join("idp.toml");
        std::fs::write(&idp_config, idp_toml).unwrap();
        let mut idp = Proc::spawn(
            "idp",
            vec![
                "idp".into(),
                "--config".into(),
                idp_config.display().to_string(),
            ],
            dir.join("idp.log"),
            idp_public,
            idp_admin,
        );
        idp.wait_ready().await;

        let backend = Backend::start().await;
        let silent_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let silent = silent_listener.local_addr().unwrap();
        let dead = addr();
        let mut gateways = Vec::new();
        for i in 0..options.gateways {
            let (public, admin) = (addr(), addr());
            let toml = format!(
                r#"[server]
listen = "{public}"
upstream_timeout = "1s"
connect_timeout = "1s"
drain_timeout = "5s"
{server}
[admin]
listen = "{admin}"
{admin_extra}
[store]
redis_url = "{redis}"
[idp]
jwks_url = "http://{idp_public}/.well-known/jwks.json"
[cache]
max_staleness = "60s"
[sync]
interval = "{sync}"
{routes}
[[routes]]
path_prefix = "/silent/"
upstream = "http://{silent}"
auth = false
[[routes]]
path_prefix = "/dead/"
upstream = "http://{dead}"
auth = false
{extra}
"#,
                extra = options.gateway_extra.replace("{backend}", &backend.url()),
                server = options.gateway_server,
                admin_extra = options.gateway_admin,
                redis = redis.url(),
                sync = options.sync_interval,
                routes = super::backend_routes(&backend.url()),
            );
            let config = dir.join(format!("gateway{i}.toml"));
            std::fs::write(&config, toml).unwrap();
            let mut gw = Proc::spawn(
                &format!("gateway{i}"),
                vec![
                    "gateway".into(),
                    "--config".into(),
                    config.display().to_string(),
                ],
                dir.join(format!("gateway{i}.log")),
                public,
                admin,
            );
            gw.wait_ready().await;
            gateways.push(gw);
        }
        let signing_key_pem = std::fs::read_to_string(&key).unwrap();
        Stack {
            redis,
            idp,
            gateways,
            backend,
            silent,
            secrets: Mutex::new(vec![
                PASSWORD.to_owned(),
                CLIENT_SECRET.to_owned(),
                ADMIN_TOKEN.to_owned(),
                signing_key_pem
                    .lines()
                    .nth(1)
                    .unwrap_or_default()
                    .to_owned(),
            ]),
            signing_key_pem,
            dir,
            _silent: silent_listener,
        }
    }

    /// The folder the stack keeps its files and logs in (removed when the test passes).
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// The IdP's configuration file, as it was started (tests rewrite it to reload).
    pub fn idp_config_path(&self) -> PathBuf {
        self.dir.join("idp.toml")
    }

    /// The configuration file of gateway `i`, as it was started (tests rewrite it to reload).
    pub fn gateway_config_path(&self, i: usize) -> PathBuf {
        self.dir.join(format!("gateway{i}.toml"))
    }

    /// Remembers a string that must never appear in a log.
    pub fn secret(&self, s: &str) {
        self.secrets.lock().unwrap().push(s.to_owned());
    }

    /// The password grant; the reference token is remembered as a secret.
    pub async fn login(&self, user: &str) -> String {
        let r = self.try_login(user).await;
        assert_eq!(r.status, 200, "login failed: {}", r.body);
        let token = r.json()["access_token"].as_str().unwrap().to_owned();
        self.secret(&token);
        token
    }

    pub async fn try_login(&self, user: &str) -> Reply {
        post_form(
            &self.idp.url("/oauth2/token"),
            &[],
            &format!(
                "grant_type=password&client_id={CLI_CLIENT}&username={user}&password={PASSWORD}"
            ),
        )
        .await
    }

    pub async fn admin(&self, method: &str, path: &str, body: Option<&str>) -> Reply {
        let auth = format!("Bearer {ADMIN_TOKEN}");
        send(
            method,
            &self.idp.admin_url(path),
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            body.unwrap_or("").to_owned(),
        )
        .await
    }

    /// A GET through gateway `gw` with optional bearer token; a value token the backend saw is
    /// remembered as a secret.
    pub async fn get(&self, gw: usize, path: &str, token: Option<&str>) -> Reply {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("authorization", a.as_str())).collect();
        let reply = send("GET", &self.gateways[gw].url(path), &headers, String::new()).await;
        self.note_value_token(&reply);
        reply
    }

    fn note_value_token(&self, reply: &Reply) {
        if reply.status == 200
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&reply.body)
            && let Some(auth) = v["headers"]["authorization"].as_str()
            && let Some(jwt) = auth.strip_prefix("Bearer ")
        {
            self.secret(jwt);
        }
    }

    /// The session id of a reference token (as `X-Auth-Session` and the admin API name it).
    pub fn session_id(token: &str) -> String {
        tokengate_store::ReferenceToken::parse(token)
            .unwrap()
            .session_id()
            .as_str()
            .to_owned()
    }

    /// Every secret the test saw so far.
    pub fn secrets(&self) -> Vec<String> {
        self.secrets.lock().unwrap().clone()
    }

    /// Asserts that no secret the test saw (reference tokens, value tokens, passwords, the admin
    /// token, the signing key) appears in any process's log, and that the logs are debug logs.
    pub fn assert_logs_clean(&self) {
        let secrets = self.secrets.lock().unwrap().clone();
        let mut procs: Vec<&Proc> = vec![&self.idp];
        procs.extend(self.gateways.iter());
        for p in procs {
            let log = p.log_text();
            assert!(log.contains("DEBUG"), "{} wrote no debug log", p.name);
            for (n, line) in log.lines().enumerate() {
                for s in secrets.iter().filter(|s| s.len() >= 8) {
                    assert!(
                        !line.contains(s.as_str()),
                        "a secret is in {}'s log, line {}: {line}",
                        p.name,
                        n + 1
                    );
                }
            }
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("logs kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Status of a GET, or `None` if the request failed.
pub async fn try_get(url: &str) -> Option<u16> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let req = http::Request::get(url).body(Full::new(Bytes::new())).ok()?;
    let resp = tokio::time::timeout(Duration::from_secs(5), client.request(req))
        .await
        .ok()?
        .ok()?;
    Some(resp.status().as_u16())
}

/// Requests by outcome: a status, or `None` for a transport error.
#[derive(Debug, Default)]
pub struct Tally(pub BTreeMap<Option<u16>, u64>);

impl Tally {
    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }
    pub fn count(&self, status: Option<u16>) -> u64 {
        self.0.get(&status).copied().unwrap_or(0)
    }
}

/// Clients sending GETs in a loop until stopped, each on its own keep-alive connection.
pub struct Load {
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<Tally>>,
    /// Requests answered (or failed) so far, by all clients.
    done: Arc<AtomicUsize>,
}

impl Load {
    /// `clients` loops per URL, each sending `Authorization: Bearer token` if given.
    pub fn start(urls: &[String], token: Option<&str>, clients: usize) -> Self {
        let stop = CancellationToken::new();
        let done = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for url in urls {
            for _ in 0..clients {
                let (url, stop, done) = (url.clone(), stop.clone(), done.clone());
                let auth = token.map(|t| format!("Bearer {t}"));
                tasks.push(tokio::spawn(async move {
                    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
                    let mut tally = Tally::default();
                    while !stop.is_cancelled() {
                        let mut req = http::Request::get(&url);
                        if let Some(a) = &auth {
                            req = req.header("authorization", a);
                        }
                        let req = req.body(Full::new(Bytes::new())).unwrap();
                        let outcome = match tokio::time::timeout(
                            Duration::from_secs(10),
                            client.request(req),
                        )
                        .await
                        {
                            Ok(Ok(resp)) => {
                                let status = resp.status().as_u16();
                                let _ = resp.into_body().collect().await;
                                Some(status)
                            }
                            _ => None,
                        };
                        *tally.0.entry(outcome).or_default() += 1;
                        done.fetch_add(1, Ordering::SeqCst);
                    }
                    tally
                }));
            }
        }
        Load { stop, tasks, done }
    }

    /// Stops the clients once they have sent at least `min` requests in all (or 30 s passed),
    /// so that a fast test still puts a meaningful load through, and adds up what they got.
    pub async fn stop_after(self, min: usize) -> Tally {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.done.load(Ordering::SeqCst) < min && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.stop().await
    }

    /// Stops the clients and adds up what they got.
    pub async fn stop(self) -> Tally {
        self.stop.cancel();
        let mut all = Tally::default();
        for t in self.tasks {
            for (k, v) in t.await.unwrap().0 {
                *all.0.entry(k).or_default() += v;
            }
        }
        all
    }
}
