//! The gateway's configuration: typed, with defaults, validated right after parsing.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
pub use tokengate_server::ConfigError;
pub use tokengate_store::StoreConfig;

mod validate;
pub use validate::{MAX_EJECTION, MAX_RETRIES, origin};

/// The whole `gateway.toml`; build it with [`GatewayConfig::load`], or in code for tests.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// `[server]`: the public listener (required).
    pub server: ServerConfig,
    /// `[admin]`: the admin listener (required).
    pub admin: AdminConfig,
    /// `[store]`: the token store the IdP writes; default: Redis at `127.0.0.1:6379`.
    #[serde(default)]
    pub store: StoreConfig,
    /// `[idp]`: where the IdP's signing keys are (required).
    pub idp: IdpConfig,
    /// `[cache]`: the local token cache.
    #[serde(default)]
    pub cache: CacheConfig,
    /// `[sync]`: the background task that applies events and reports last use.
    #[serde(default)]
    pub sync: SyncConfig,
    /// `[[routes]]`, matched by longest `path_prefix` (and `host`); none: every request is 404.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Browser sessions: the gateway signs browsers in at the IdP and keeps a session cookie.
    #[serde(default)]
    pub browser: Option<BrowserConfig>,
    /// `[log]`: the access log.
    #[serde(default)]
    pub log: LogConfig,
    /// `[protection]`: the brake on token guessing.
    #[serde(default)]
    pub protection: ProtectionConfig,
}

/// `[protection]`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProtectionConfig {
    /// Answers of `401 invalid_token` one client address may get, as a rate (`"20/s"`); beyond
    /// it (and its burst) the address gets `429` without a cache or store lookup until it slows
    /// down. `"off"` turns the brake off.
    #[serde(default = "d::invalid_token_rate")]
    pub invalid_token_rate: String,
    /// `401`s one address may get at once after a quiet spell; default 50.
    #[serde(default = "d::invalid_token_burst")]
    pub invalid_token_burst: u64,
}

impl Default for ProtectionConfig {
    fn default() -> Self {
        ProtectionConfig {
            invalid_token_rate: d::invalid_token_rate(),
            invalid_token_burst: d::invalid_token_burst(),
        }
    }
}

impl ProtectionConfig {
    /// The brake as a rate limit per client address, `None` when it is off.
    pub fn invalid_token_limit(&self) -> Option<RateLimitConfig> {
        (self.invalid_token_rate != "off").then(|| RateLimitConfig {
            rate: self.invalid_token_rate.clone(),
            burst: Some(self.invalid_token_burst),
            per: Per::ClientAddress,
            max_keys: default_max_keys(),
        })
    }
}

/// `[server]`: the public listener; its connection limits apply to the admin listener too.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address of the public listener; port 0 picks a free one (see `Gateway::public_addr`).
    pub listen: SocketAddr,
    /// Connections served at once (default 10,000); at the limit, idle ones are closed.
    #[serde(default = "d::max_connections")]
    pub max_connections: usize,
    /// Time to send a request head, and longest idle time between requests (default `10s`).
    #[serde(default = "d::header_timeout", with = "humantime_serde")]
    pub header_timeout: Duration,
    /// Time an upstream has to answer (the response head) before the client gets 504.
    #[serde(default = "d::upstream_timeout", with = "humantime_serde")]
    pub upstream_timeout: Duration,
    /// Time to connect to an upstream before the client gets 502.
    #[serde(default = "d::connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Longest time in-flight requests get to finish on shutdown (default `10s`).
    #[serde(default = "d::drain_timeout", with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// Largest request body forwarded; a larger `Content-Length` gets 413 at once, a longer
    /// chunked body is cut off and answered 413.
    #[serde(default = "d::max_body_bytes")]
    pub max_body_bytes: u64,
    /// PEM certificate chain; with `tls_key`, the listener speaks HTTPS (HTTP/2 by ALPN).
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, SEC1 or PKCS#1).
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// Threads that serve the public listener, each on a single-threaded runtime with a socket
    /// of its own on `listen` (`SO_REUSEPORT`: the kernel spreads connections over them, as
    /// over nginx's workers); `max_connections` is shared out among them. `0` (the default):
    /// the process's one work-stealing runtime serves it.
    #[serde(default)]
    pub workers: usize,
    /// The lean HTTP/1.1 path (issue #28), as far as it is built: requests without a body from
    /// HTTP/1 clients go to their upstream over the gateway's own HTTP/1.1 connections rather
    /// than hyper's client (on by default; `false` sends everything through hyper).
    #[serde(default = "d::http1_fast_path")]
    pub http1_fast_path: bool,
}

/// `[admin]`: health, readiness, metrics and reload, on a listener of their own.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the admin listener; must differ from `server.listen`.
    pub listen: SocketAddr,
    /// Bearer token for `POST /admin/reload` (also `TOKENGATE_GATEWAY_ADMIN_TOKEN`); without
    /// one, that endpoint answers 404 and only `SIGHUP` reloads.
    #[serde(default)]
    pub token: Option<String>,
}

impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// `[idp]`: the IdP whose value tokens the gateway verifies.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IdpConfig {
    /// The IdP's JWKS, an `http://` URL (e.g. `http://idp:7000/.well-known/jwks.json`).
    pub jwks_url: String,
    /// The `iss` every value token must carry: the IdP's `tokens.issuer`. Empty (the default):
    /// the scheme, host and port of `jwks_url`, which is the IdP's own default.
    #[serde(default = "d::issuer")]
    pub issuer: String,
    /// How often the JWKS is re-fetched (conditionally: unchanged keys cost a 304).
    #[serde(default = "d::jwks_refresh", with = "humantime_serde")]
    pub jwks_refresh: Duration,
}

impl IdpConfig {
    /// The issuer value tokens must name.
    pub fn issuer(&self) -> String {
        if !self.issuer.is_empty() {
            return self.issuer.clone();
        }
        match self.jwks_url.parse::<http::Uri>() {
            Ok(uri) => match (uri.scheme_str(), uri.authority()) {
                (Some(scheme), Some(authority)) => format!("{scheme}://{authority}"),
                _ => self.jwks_url.clone(),
            },
            Err(_) => self.jwks_url.clone(),
        }
    }
}

/// `[cache]`: reference token → verified identity, in this process.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// `false` turns the local cache off: every request reads the store and verifies the value
    /// token (what a gateway without a local cache costs; for comparison, not for production).
    #[serde(default = "d::yes")]
    pub enabled: bool,
    /// Tokens (known or unknown) kept at most (default 100,000); past that, some are evicted.
    #[serde(default = "d::max_entries")]
    pub max_entries: u64,
    /// Longest an entry is served without the store being asked again.
    #[serde(default = "d::max_staleness", with = "humantime_serde")]
    pub max_staleness: Duration,
    /// How long an unknown token is remembered as unknown.
    #[serde(default = "d::negative_ttl", with = "humantime_serde")]
    pub negative_ttl: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            enabled: true,
            max_entries: d::max_entries(),
            max_staleness: d::max_staleness(),
            negative_ttl: d::negative_ttl(),
        }
    }
}

/// `[sync]`: the background task's pace.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SyncConfig {
    /// Period of last-use reports (and the longest wait for events per read).
    #[serde(default = "d::sync_interval", with = "humantime_serde")]
    pub interval: Duration,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            interval: d::sync_interval(),
        }
    }
}

/// One `[[routes]]` entry: which requests, to which upstream, under which rules.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Matched against the request path, longest prefix first; must start with `/`.
    pub path_prefix: String,
    /// Only requests for this host (the `Host` header or `:authority`, port ignored, any case).
    #[serde(default)]
    pub host: Option<String>,
    /// `http://host:port` with no path, or a list of them (see `balance`; failing upstreams
    /// are ejected for a while, unhealthy ones get no traffic).
    #[serde(deserialize_with = "one_or_many")]
    pub upstream: Vec<String>,
    /// Any one of these roles grants access; empty means any valid token.
    #[serde(default)]
    pub roles: Vec<String>,
    /// `false` for a public route (no token needed; identity headers still stripped).
    #[serde(default = "d::yes")]
    pub auth: bool,
    /// Pass `Upgrade` requests (WebSocket) through to the upstream; elsewhere `Upgrade` is dropped.
    #[serde(default)]
    pub websocket: bool,
    /// Takes the session cookie of `[browser]` as well as a bearer token; navigations without a
    /// session are sent to sign in.
    #[serde(default)]
    pub browser: bool,
    /// The route to the IdP itself: its sign-in cookie (`tokengate_idp`) is forwarded here, and
    /// nowhere else.
    #[serde(default)]
    pub idp: bool,
    /// `{ rate = "100/s", burst = 200, per = "subject" }`: more gets `429` (local to this
    /// gateway: N replicas behind a balancer let through up to N times the rate).
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    /// Allowed responses carry the `RateLimit` header too (a `429` always does).
    #[serde(default)]
    pub rate_limit_headers: bool,
    /// Keys (subjects, sessions, addresses) the limit remembers at most; past that the least
    /// recently limited go first, so memory stays bounded whatever the traffic.
    #[serde(default = "default_max_keys")]
    pub rate_limit_max_keys: usize,
    /// Time an upstream of this route has to answer (the response head); default
    /// `server.upstream_timeout`.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Time to connect to an upstream of this route; default `server.connect_timeout`.
    #[serde(default, with = "humantime_serde")]
    pub connect_timeout: Option<Duration>,
    /// Requests in flight to one upstream at most (default unlimited); when every upstream
    /// that may take traffic is at its limit, `503` with `Retry-After: 1`.
    #[serde(default)]
    pub max_requests: Option<u32>,
    /// How the next upstream is chosen.
    #[serde(default)]
    pub balance: Balance,
    /// Retries of one request on another upstream (default 1): connect failures for any
    /// method; timeouts, failures mid-exchange and `502/503/504` for idempotent methods whose
    /// body is empty or held. Bounded by a budget of 20 % of the route's requests.
    #[serde(default = "d::retries")]
    pub retries: u32,
    /// Consecutive failures (connect failures, timeouts, failures mid-exchange and, with
    /// `eject_on_5xx`, `5xx` answers) that eject an upstream (default 5).
    #[serde(default = "d::eject_after")]
    pub eject_after: u32,
    /// How long the first ejection lasts (default `10s`); each ejection soon after the last one
    /// doubles it, up to 5 minutes.
    #[serde(default = "d::eject_for", with = "humantime_serde")]
    pub eject_for: Duration,
    /// `5xx` answers count towards `eject_after` (default true).
    #[serde(default = "d::yes")]
    pub eject_on_5xx: bool,
    /// Active health checks of the upstreams, off the request path; none by default.
    #[serde(default)]
    pub health_check: Option<HealthCheckConfig>,
    /// `[[routes.rules]]`, in order: the first whose methods and path match decides; none
    /// matches: `roles` decides, as without rules.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// `cors = { allowed_origins = [...], ... }`: preflights answered by the gateway, CORS
    /// headers on the answers to allowed origins; none by default.
    #[serde(default)]
    pub cors: Option<CorsConfig>,
}

/// A route's `cors`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// Origins (`scheme://host[:port]`) whose pages may call the route; `["*"]` for any, never
    /// with `allow_credentials`.
    pub allowed_origins: Vec<String>,
    /// Methods a preflight may ask for (default `GET`, `HEAD`, `POST`).
    #[serde(default = "d::cors_methods")]
    pub allowed_methods: Vec<String>,
    /// Request headers a preflight may ask for (e.g. `authorization`, `content-type`).
    #[serde(default)]
    pub allowed_headers: Vec<String>,
    /// Response headers a page may read beyond the safelisted ones.
    #[serde(default)]
    pub expose_headers: Vec<String>,
    /// Pages may send cookies (and a bearer token) and read the answer:
    /// `Access-Control-Allow-Credentials: true`.
    #[serde(default)]
    pub allow_credentials: bool,
    /// How long a browser may keep a preflight's answer (`Access-Control-Max-Age`); default:
    /// the browser's (5 s).
    #[serde(default, with = "humantime_serde")]
    pub max_age: Option<Duration>,
}

/// One `[[routes.rules]]`: which requests it is for, and what it asks of them.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Methods it is for (upper case); absent: every method.
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    /// A glob below the route's `path_prefix`, without a leading `/`: `*` stands for one
    /// segment, `**` for any number (`orders/*/refunds`, `admin/**`); absent: every path.
    #[serde(default)]
    pub path: Option<String>,
    /// Any one of these roles.
    #[serde(default)]
    pub roles_any: Option<Vec<String>>,
    /// Every one of these roles.
    #[serde(default)]
    pub roles_all: Option<Vec<String>>,
    /// The session's `client_id` is one of these.
    #[serde(default)]
    pub clients: Option<Vec<String>>,
    /// The token's subject is one of these.
    #[serde(default)]
    pub subjects: Option<Vec<String>>,
    /// `false`: refused outright (default `true`: allowed when what it asks holds).
    #[serde(default = "d::yes")]
    pub allow: bool,
}

/// How a route picks among its upstreams.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Each in turn.
    #[default]
    RoundRobin,
    /// The one with fewer requests in flight of two picked at random (power of two choices).
    LeastRequests,
}

impl Balance {
    /// The name in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Balance::RoundRobin => "round_robin",
            Balance::LeastRequests => "least_requests",
        }
    }
}

/// `health_check = { path = "/healthz", interval = "2s", timeout = "1s", unhealthy_after = 3,
/// healthy_after = 2 }` on a route: a `GET` of `path` on every upstream each `interval`; any
/// `2xx` within `timeout` passes.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// Path (and query) asked for; must start with `/` (default `/healthz`).
    #[serde(default = "d::health_path")]
    pub path: String,
    /// Time between two checks of one upstream (default `2s`).
    #[serde(default = "d::health_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// Time one check may take (default `1s`); at most `interval`.
    #[serde(default = "d::health_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Failed checks in a row that make an upstream unhealthy (default 3).
    #[serde(default = "d::unhealthy_after")]
    pub unhealthy_after: u32,
    /// Passed checks in a row that make an unhealthy upstream healthy again (default 2).
    #[serde(default = "d::healthy_after")]
    pub healthy_after: u32,
}

/// `[browser]`: the gateway as a confidential client of the IdP, for browser sessions.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BrowserConfig {
    /// The IdP's issuer URL; its endpoints come from `{issuer}/.well-known/openid-configuration`.
    pub issuer: String,
    /// This gateway's client at the IdP (registered as confidential, with the callback URL).
    pub client_id: String,
    /// `TOKENGATE_BROWSER_CLIENT_SECRET` supplies it when absent here.
    #[serde(default)]
    pub client_secret: Option<String>,
    /// How browsers reach this gateway, without a path; the callback is
    /// `{public_url}/.tokengate/callback`.
    pub public_url: String,
    /// Default `tokengate`, or `__Host-tokengate` when the gateway serves TLS.
    #[serde(default)]
    pub cookie_name: Option<String>,
    /// Origins allowed to send cookie-authenticated unsafe requests; default: `public_url`'s.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// How long a sign-in may take from `/.tokengate/login` to the callback.
    #[serde(default = "d::login_timeout", with = "humantime_serde")]
    pub login_timeout: Duration,
}

impl std::fmt::Debug for BrowserConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrowserConfig")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("public_url", &self.public_url)
            .field("cookie_name", &self.cookie_name)
            .field("allowed_origins", &self.allowed_origins)
            .field("login_timeout", &self.login_timeout)
            .finish()
    }
}

impl BrowserConfig {
    /// Whether cookies are `Secure`: the gateway serves TLS, or browsers reach it over HTTPS
    /// (TLS ended in front of it).
    pub fn secure(&self, tls: bool) -> bool {
        tls || self.public_url().starts_with("https://")
    }

    /// The session cookie's name: `cookie_name`, else `__Host-tokengate` when cookies are
    /// `Secure` (the prefix binds it to this host, `Secure` and `Path=/`), else `tokengate`.
    pub fn cookie_name(&self, tls: bool) -> String {
        match &self.cookie_name {
            Some(name) => name.clone(),
            None if self.secure(tls) => "__Host-tokengate".to_owned(),
            None => "tokengate".to_owned(),
        }
    }

    /// `public_url` without a trailing slash.
    pub fn public_url(&self) -> &str {
        self.public_url.trim_end_matches('/')
    }

    /// `allowed_origins`, or the origin of `public_url`.
    pub fn allowed_origins(&self) -> Vec<String> {
        if self.allowed_origins.is_empty() {
            origin(self.public_url()).into_iter().collect()
        } else {
            self.allowed_origins
                .iter()
                .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                .collect()
        }
    }
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(url) => vec![url],
        OneOrMany::Many(urls) => urls,
    })
}

mod d {
    use std::time::Duration;
    pub fn http1_fast_path() -> bool {
        true
    }
    pub fn max_connections() -> usize {
        10_000
    }
    pub fn header_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn upstream_timeout() -> Duration {
        Duration::from_secs(30)
    }
    pub fn connect_timeout() -> Duration {
        Duration::from_secs(5)
    }
    pub fn drain_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn max_body_bytes() -> u64 {
        10 * 1024 * 1024
    }
    /// Empty: the IdP's URL as the JWKS URL gives it (see [`super::IdpConfig::issuer`]).
    pub fn issuer() -> String {
        String::new()
    }
    pub fn jwks_refresh() -> Duration {
        Duration::from_secs(60)
    }
    pub fn max_entries() -> u64 {
        100_000
    }
    pub fn max_staleness() -> Duration {
        Duration::from_secs(60)
    }
    pub fn negative_ttl() -> Duration {
        Duration::from_secs(5)
    }
    pub fn sync_interval() -> Duration {
        Duration::from_secs(1)
    }
    pub fn invalid_token_rate() -> String {
        "20/s".to_owned()
    }
    pub fn invalid_token_burst() -> u64 {
        50
    }
    pub fn login_timeout() -> Duration {
        Duration::from_secs(600)
    }
    pub fn yes() -> bool {
        true
    }
    pub fn cors_methods() -> Vec<String> {
        ["GET", "HEAD", "POST"].map(str::to_owned).to_vec()
    }
    pub fn retries() -> u32 {
        1
    }
    pub fn eject_after() -> u32 {
        5
    }
    pub fn eject_for() -> Duration {
        Duration::from_secs(10)
    }
    pub fn health_path() -> String {
        "/healthz".to_owned()
    }
    pub fn health_interval() -> Duration {
        Duration::from_secs(2)
    }
    pub fn health_timeout() -> Duration {
        Duration::from_secs(1)
    }
    pub fn unhealthy_after() -> u32 {
        3
    }
    pub fn healthy_after() -> u32 {
        2
    }
}

/// What one limit counts by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Per {
    /// The token's subject: every session of one user shares one bucket.
    Subject,
    /// The session (one sign-in).
    Session,
    /// The client (`client_id`) the session was issued to: every user of one application
    /// shares one bucket. Sessions without a client share the bucket of no client.
    Client,
    /// The TCP peer's IP address (the address the gateway sees, not `X-Forwarded-For`).
    ClientAddress,
    /// Every request of the route together.
    Route,
}

impl Per {
    /// The name in the config file; also the `per` label of the rate-limited counter and the
    /// policy name in `RateLimit` headers.
    pub fn as_str(self) -> &'static str {
        match self {
            Per::Subject => "subject",
            Per::Session => "session",
            Per::Client => "client",
            Per::ClientAddress => "client_address",
            Per::Route => "route",
        }
    }

    /// Whether the key comes from the identity, so the route must be protected.
    pub fn needs_identity(self) -> bool {
        matches!(self, Per::Subject | Per::Session | Per::Client)
    }
}

/// `rate_limit = { rate = "100/s", burst = 200, per = "subject" }` on a route.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// `N/s`, `N/m`, `N/h` or `N/d` (also `sec`, `min`, `hour`, `day`).
    pub rate: String,
    /// Requests that may come at once after a quiet spell; default: the rate's `N`.
    #[serde(default)]
    pub burst: Option<u64>,
    /// Which key each request is counted under (required).
    pub per: Per,
    /// Keys remembered at most (each takes 16 to 40 bytes, with the map's spare room): the
    /// route's `rate_limit_max_keys`, not a key of this table.
    #[serde(skip, default = "default_max_keys")]
    pub max_keys: usize,
}

/// `rate_limit_max_keys`'s default.
pub fn default_max_keys() -> usize {
    100_000
}

/// `[log]`, the same on both services.
pub use tokengate_server::access::LogConfig;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
