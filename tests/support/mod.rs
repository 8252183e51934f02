//! Test support: the IdP on real sockets against a `redis-server` of the test's own, and a
//! small HTTP client. Everything stops when dropped.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokengate_idp::Idp;
use tokengate_idp::config::{
    AdminConfig, ClientConfig, Grant, IdpConfig, ServerConfig, TokensConfig, UserConfig,
};
use tokengate_idp::keys::KeySet;
use tokengate_idp::password::hash_password;
#[allow(unused_imports)]
pub use tokengate_store::testing::TestRedis;
use tokengate_store::{AnyStore, StoreConfig};
use tokio_util::sync::CancellationToken;

pub mod browser;
pub mod gateway_browser;
pub mod oidc;
pub mod stack;
pub mod upstream;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
pub const PASSWORD: &str = "wonderland";
pub const CLIENT_SECRET: &str = "reports-secret";
/// The public client allowed the password grant.
pub const CLI_CLIENT: &str = "cli";

/// A config with users alice and bob, confidential client `reports`, public client `cli` (the
/// password grant), listening on free ports.
pub fn idp_config(redis_url: &str) -> IdpConfig {
    let hash = hash_password(PASSWORD).unwrap();
    let user = |name: &str| UserConfig {
        username: name.to_owned(),
        password_hash: hash.clone(),
        roles: vec!["orders:read".to_owned()],
    };
    IdpConfig {
        server: ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            max_connections: 256,
            header_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(2),
        },
        admin: AdminConfig::new("127.0.0.1:0".parse().unwrap(), ADMIN_TOKEN),
        store: StoreConfig::redis(redis_url),
        tokens: TokensConfig::default(),
        login: Default::default(),
        log: Default::default(),
        users: vec![user("alice"), user("bob")],
        clients: vec![
            ClientConfig {
                roles: vec!["reports:write".to_owned()],
                ..ClientConfig::confidential(
                    "reports",
                    hash_password(CLIENT_SECRET).unwrap(),
                    &[Grant::ClientCredentials],
                )
            },
            ClientConfig::public(CLI_CLIENT, &[Grant::Password], &[]),
        ],
        upstreams: Vec::new(),
        mfa: Default::default(),
        webauthn: None,
        base_dir: ".".into(),
    }
}

/// The IdP serving in this process on real sockets.
pub struct TestIdp {
    pub public: SocketAddr,
    pub admin: SocketAddr,
    shutdown: CancellationToken,
}

impl TestIdp {
    /// The IdP with a fresh ephemeral signing key.
    pub async fn spawn(config: IdpConfig) -> Self {
        Self::spawn_with_keys(config, KeySet::ephemeral().unwrap()).await
    }

    pub async fn spawn_with_keys(config: IdpConfig, keys: KeySet) -> Self {
        let store: AnyStore = config.store.connect().unwrap();
        let bound = Idp::new(config, store, keys).unwrap().bind().await.unwrap();
        let (public, admin) = (bound.public_addr(), bound.admin_addr());
        let shutdown = CancellationToken::new();
        tokio::spawn(bound.serve(shutdown.clone()));
        TestIdp {
            public,
            admin,
            shutdown,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.public)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// Logs in with the password grant and returns the reference token.
    pub async fn login(&self, user: &str) -> String {
        let r = post_form(
            &self.url("/oauth2/token"),
            &[],
            &format!(
                "grant_type=password&client_id={CLI_CLIENT}&username={user}&password={PASSWORD}"
            ),
        )
        .await;
        assert_eq!(r.status, 200, "login failed: {}", r.body);
        r.json()["access_token"].as_str().unwrap().to_owned()
    }

    pub async fn admin(&self, method: &str, path: &str, body: Option<&str>) -> Reply {
        let auth = format!("Bearer {ADMIN_TOKEN}");
        let headers = [
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
        ];
        send(
            method,
            &self.admin_url(path),
            &headers,
            body.unwrap_or("").to_owned(),
        )
        .await
    }

    /// Revokes the session of a reference token through the admin API.
    pub async fn revoke_session(&self, reference_token: &str) {
        let sid = tokengate_store::ReferenceToken::parse(reference_token)
            .unwrap()
            .session_id();
        let r = self
            .admin("DELETE", &format!("/admin/sessions/{sid}"), None)
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
    }

    /// The published JWKS.
    pub async fn jwks(&self) -> serde_json::Value {
        let r = get(&self.url("/.well-known/jwks.json")).await;
        assert_eq!(r.status, 200, "JWKS: {}", r.body);
        r.json()
    }

    /// `/auth/verify` with a bearer token.
    pub async fn verify(&self, token: &str) -> Reply {
        let auth = format!("Bearer {token}");
        send(
            "GET",
            &self.url("/auth/verify"),
            &[("authorization", auth.as_str())],
            String::new(),
        )
        .await
    }
}

impl Drop for TestIdp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub async fn send(method: &str, url: &str, headers: &[(&str, &str)], body: String) -> Reply {
    try_send(method, url, headers, body)
        .await
        .unwrap_or_else(|e| panic!("request failed: {e}"))
}

/// [`send`] for a server that may not be listening yet.
pub async fn try_send(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: String,
) -> Result<Reply, String> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(Duration::from_secs(20), client.request(req))
        .await
        .map_err(|_| "request timed out".to_owned())?
        .map_err(|e| format!("{e:?}"))?;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// A plain GET.
pub async fn get(url: &str) -> Reply {
    send("GET", url, &[], String::new()).await
}

pub async fn post_form(url: &str, headers: &[(&str, &str)], form: &str) -> Reply {
    let mut all = vec![("content-type", "application/x-www-form-urlencoded")];
    all.extend_from_slice(headers);
    send("POST", url, &all, form.to_owned()).await
}

/// A backend that answers 200 with the request's method, path and headers as JSON.
pub struct EchoBackend {
    pub addr: SocketAddr,
    shutdown: CancellationToken,
}

impl EchoBackend {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        tokio::spawn(tokengate_gateway::echo::serve(listener, shutdown.clone()));
        EchoBackend { addr, shutdown }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for EchoBackend {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A gateway in this process on real sockets.
pub struct TestGateway {
    pub public: SocketAddr,
    pub admin: SocketAddr,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<Result<(), tokengate_gateway::GatewayError>>>,
}

/// The routes every test gateway has: `/api/` needs `orders:read`, `/admin-only/` needs
/// `admin`, `/public/` is open; all to `backend`.
pub fn backend_routes(backend: &str) -> String {
    format!(
        r#"[[routes]]
path_prefix = "/api/"
upstream = "{backend}"
roles = ["orders:read"]
[[routes]]
path_prefix = "/admin-only/"
upstream = "{backend}"
roles = ["admin"]
[[routes]]
path_prefix = "/public/"
upstream = "{backend}"
auth = false"#
    )
}

/// A gateway config: `/api/` needs `orders:read`, `/admin-only/` needs `admin`, `/public/` is
/// open, `/dead/` points at a closed port.
pub fn gateway_config(
    redis_url: &str,
    idp: &TestIdp,
    backend: &str,
) -> tokengate_gateway::config::GatewayConfig {
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:0"
upstream_timeout = "2s"
[admin]
listen = "127.0.0.1:0"
[store]
redis_url = "{redis_url}"
[idp]
jwks_url = "{jwks}"
[cache]
max_staleness = "60s"
[sync]
interval = "100ms"
{routes}
[[routes]]
path_prefix = "/dead/"
upstream = "{dead}"
auth = false
"#,
        jwks = idp.url("/.well-known/jwks.json"),
        routes = backend_routes(backend),
    );
    toml::from_str(&toml).unwrap()
}

impl TestGateway {
    /// Starts a gateway and waits until `/readyz` says it has keys and reached the store.
    pub async fn spawn(config: tokengate_gateway::config::GatewayConfig) -> Self {
        let store = config.store.connect().unwrap();
        let gateway = tokengate_gateway::Gateway::bind(config, store)
            .await
            .unwrap();
        let (public, admin) = (gateway.public_addr(), gateway.admin_addr());
        let shutdown = CancellationToken::new();
        let task = Some(tokio::spawn(gateway.serve(shutdown.clone())));
        let gw = TestGateway {
            public,
            admin,
            shutdown,
            task,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while send("GET", &format!("http://{admin}/readyz"), &[], String::new())
            .await
            .status
            != 200
        {
            assert!(
                std::time::Instant::now() < deadline,
                "gateway never became ready"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        gw
    }

    /// Stops the gateway as SIGTERM does and waits until it has finished.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }

    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        send(
            "GET",
            &format!("http://{}{path}", self.public),
            headers,
            String::new(),
        )
        .await
    }

    pub async fn get_with_token(&self, path: &str, token: &str) -> Reply {
        let auth = format!("Bearer {token}");
        self.get(path, &[("authorization", &auth)]).await
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Polls `check` until it holds, up to `limit`.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Writes PEM signing keys into a fresh folder of the system's temp dir; returns the folder (for
/// the caller to remove) and one file per key, in order.
pub fn key_files(name: &str, pems: &[String]) -> (std::path::PathBuf, Vec<std::path::PathBuf>) {
    let dir = std::env::temp_dir().join(format!("tokengate-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let files = pems
        .iter()
        .enumerate()
        .map(|(i, pem)| {
            let file = dir.join(format!("key{i}.pem"));
            std::fs::write(&file, pem).unwrap();
            file
        })
        .collect();
    (dir, files)
}
