//! The gateway's configuration: typed, with defaults, validated right after parsing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
pub use tokengate_server::ConfigError;
pub use tokengate_store::StoreConfig;

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    pub server: ServerConfig,
    pub admin: AdminConfig,
    #[serde(default)]
    pub store: StoreConfig,
    pub idp: IdpConfig,
    #[serde(default)]
    pub cache: CacheConfig,
    #[serde(default)]
    pub sync: SyncConfig,
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

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    #[serde(default = "d::max_connections")]
    pub max_connections: usize,
    #[serde(default = "d::header_timeout", with = "humantime_serde")]
    pub header_timeout: Duration,
    /// Time an upstream has to answer (the response head) before the client gets 504.
    #[serde(default = "d::upstream_timeout", with = "humantime_serde")]
    pub upstream_timeout: Duration,
    /// Time to connect to an upstream before the client gets 502.
    #[serde(default = "d::connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
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
}

#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
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

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IdpConfig {
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

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// `false` turns the local cache off: every request reads the store and verifies the value
    /// token (what a gateway without a local cache costs; for comparison, not for production).
    #[serde(default = "d::yes")]
    pub enabled: bool,
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

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub path_prefix: String,
    /// Only requests for this host (the `Host` header or `:authority`, port ignored, any case).
    #[serde(default)]
    pub host: Option<String>,
    /// `http://host:port` with no path, or a list of them (round-robin; one that refused a
    /// connection is skipped for a few seconds).
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
}

/// `[browser]`: the gateway as a confidential client of the IdP, for browser sessions.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BrowserConfig {
    /// The IdP's issuer URL; its endpoints come from `{issuer}/.well-known/openid-configuration`.
    pub issuer: String,
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

    fn validate(
        &self,
        tls: bool,
        invalid: impl Fn(String, &str) -> ConfigError,
    ) -> Result<(), ConfigError> {
        let key = |k: &str| format!("browser.{k}");
        if !self.issuer.starts_with("http://") || self.issuer.parse::<http::Uri>().is_err() {
            return Err(invalid(key("issuer"), "must be an http:// URL"));
        }
        if self.client_id.is_empty() {
            return Err(invalid(key("client_id"), "must not be empty"));
        }
        if self.client_secret.as_deref().is_none_or(str::is_empty) {
            return Err(invalid(
                key("client_secret"),
                "is required (or set TOKENGATE_BROWSER_CLIENT_SECRET)",
            ));
        }
        let public = self.public_url().parse::<http::Uri>().ok();
        let public_ok = public.as_ref().is_some_and(|u| {
            matches!(u.scheme_str(), Some("http" | "https"))
                && u.authority().is_some()
                && matches!(u.path(), "" | "/")
                && u.query().is_none()
        });
        if !public_ok {
            return Err(invalid(
                key("public_url"),
                "must be http(s)://host[:port] without a path",
            ));
        }
        let name = self.cookie_name(tls);
        let token_char = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if name.is_empty() || !name.bytes().all(token_char) {
            return Err(invalid(
                key("cookie_name"),
                "must be a cookie name (letters, digits, - _ .)",
            ));
        }
        if tokengate_server::cookies::IDP_COOKIES.contains(&name.as_str()) {
            return Err(invalid(
                key("cookie_name"),
                "is the name of one of the IdP's own cookies",
            ));
        }
        if (name.starts_with("__Host-") || name.starts_with("__Secure-")) && !self.secure(tls) {
            return Err(invalid(
                key("cookie_name"),
                "the __Host- and __Secure- prefixes need a Secure cookie: set server.tls_cert or an https:// public_url",
            ));
        }
        for (i, o) in self.allowed_origins.iter().enumerate() {
            if origin(o).as_deref() != Some(o.trim_end_matches('/').to_ascii_lowercase().as_str()) {
                return Err(invalid(
                    format!("browser.allowed_origins[{i}]"),
                    "must be an origin: scheme://host[:port]",
                ));
            }
        }
        if self.login_timeout.is_zero() {
            return Err(invalid(key("login_timeout"), "must be more than 0"));
        }
        Ok(())
    }
}

/// `scheme://host[:port]` of an http(s) URL, lower-case.
pub fn origin(url: &str) -> Option<String> {
    let uri = url.parse::<http::Uri>().ok()?;
    let scheme = uri
        .scheme_str()
        .filter(|s| matches!(*s, "http" | "https"))?;
    Some(format!("{scheme}://{}", uri.authority()?).to_ascii_lowercase())
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
}

impl GatewayConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_owned(),
            source,
        })?;
        let mut config = Self::parse(&text, path)?;
        if config.admin.token.is_none() {
            config.admin.token = std::env::var("TOKENGATE_GATEWAY_ADMIN_TOKEN").ok();
        }
        if let Some(browser) = &mut config.browser
            && browser.client_secret.is_none()
        {
            browser.client_secret = std::env::var("TOKENGATE_BROWSER_CLIENT_SECRET").ok();
        }
        config.validate(path)?;
        Ok(config)
    }

    /// Parses TOML without validating it (see [`GatewayConfig::validate`]); `path` names the
    /// file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            file: path.to_owned(),
            message: e.to_string(),
        })
    }

    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: String, message: &str| ConfigError::Invalid {
            file: path.to_owned(),
            key,
            message: message.to_owned(),
        };
        if self.server.tls_cert.is_some() != self.server.tls_key.is_some() {
            return Err(invalid(
                "server.tls_cert".into(),
                "tls_cert and tls_key go together",
            ));
        }
        if self.server.listen == self.admin.listen {
            return Err(invalid(
                "admin.listen".into(),
                "must differ from server.listen",
            ));
        }
        self.store
            .validate()
            .map_err(|e| invalid(format!("store.{}", e.key), &e.message))?;
        if !self.idp.jwks_url.starts_with("http://") {
            return Err(invalid("idp.jwks_url".into(), "must be an http:// URL"));
        }
        if self.server.max_body_bytes == 0 {
            return Err(invalid(
                "server.max_body_bytes".into(),
                "must be at least 1",
            ));
        }
        if self.server.max_connections == 0 {
            return Err(invalid(
                "server.max_connections".into(),
                "must be at least 1",
            ));
        }
        if self.cache.max_entries == 0 {
            return Err(invalid("cache.max_entries".into(), "must be at least 1"));
        }
        if self.cache.max_staleness.is_zero() {
            return Err(invalid("cache.max_staleness".into(), "must be more than 0"));
        }
        if let Some(limit) = self.protection.invalid_token_limit() {
            limit.validate().map_err(|e| {
                let key = match e.key {
                    "burst" => "protection.invalid_token_burst",
                    _ => "protection.invalid_token_rate",
                };
                invalid(key.into(), e.message)
            })?;
        }
        if self.log.access_path.is_empty() {
            return Err(invalid(
                "log.access_path".into(),
                "must be - (standard output) or a file",
            ));
        }
        if self.sync.interval.is_zero() {
            return Err(invalid("sync.interval".into(), "must be more than 0"));
        }
        for (i, route) in self.routes.iter().enumerate() {
            if !route.path_prefix.starts_with('/') {
                return Err(invalid(
                    format!("routes[{i}].path_prefix"),
                    "must start with /",
                ));
            }
            let ok = |url: &String| {
                url.parse::<http::Uri>().ok().is_some_and(|u| {
                    u.scheme_str() == Some("http")
                        && u.authority().is_some()
                        && matches!(u.path(), "" | "/")
                })
            };
            if route.upstream.is_empty() || !route.upstream.iter().all(ok) {
                return Err(invalid(
                    format!("routes[{i}].upstream"),
                    "must be http://host:port without a path, or a non-empty list of them",
                ));
            }
            if route.browser && self.browser.is_none() {
                return Err(invalid(
                    format!("routes[{i}].browser"),
                    "needs a [browser] section",
                ));
            }
            if route.rate_limit_max_keys == 0 {
                return Err(invalid(
                    format!("routes[{i}].rate_limit_max_keys"),
                    "must be at least 1",
                ));
            }
            if let Some(limit) = &route.rate_limit {
                limit
                    .validate()
                    .map_err(|e| invalid(format!("routes[{i}].rate_limit.{}", e.key), e.message))?;
                if limit.per.needs_identity() && !route.auth {
                    return Err(invalid(
                        format!("routes[{i}].rate_limit.per"),
                        "subject, session and client need a protected route: use client_address or route on auth = false",
                    ));
                }
            }
            if route.browser && !route.auth {
                return Err(invalid(
                    format!("routes[{i}].browser"),
                    "a browser route is a protected route: remove auth = false",
                ));
            }
        }
        if let Some(browser) = &self.browser {
            browser.validate(self.server.tls_cert.is_some(), invalid)?;
        }
        Ok(())
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
mod tests {
    use super::*;

    const BASE: &str = r#"
[server]
listen = "127.0.0.1:8080"
[admin]
listen = "127.0.0.1:9090"
[idp]
jwks_url = "http://127.0.0.1:7000/.well-known/jwks.json"
"#;
    const BROWSER: &str = r#"
[browser]
issuer = "http://127.0.0.1:7000"
client_id = "gateway"
client_secret = "s3cret"
public_url = "http://127.0.0.1:8080"
"#;

    /// The key a config is refused for, or `None` if it is accepted.
    fn refused(text: &str) -> Option<String> {
        let path = Path::new("gateway.toml");
        match GatewayConfig::parse(text, path).unwrap().validate(path) {
            Ok(()) => None,
            Err(ConfigError::Invalid { key, file, .. }) => {
                assert_eq!(file, path);
                Some(key)
            }
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn browser_settings_are_checked_by_key() {
        assert_eq!(refused(&format!("{BASE}{BROWSER}")), None);
        let route = "[[routes]]\npath_prefix = \"/app/\"\nupstream = \"http://127.0.0.1:1\"\nbrowser = true\n";
        assert_eq!(refused(&format!("{BASE}{BROWSER}{route}")), None);
        assert_eq!(
            refused(&format!("{BASE}{route}")).as_deref(),
            Some("routes[0].browser")
        );
        assert_eq!(
            refused(&format!("{BASE}{BROWSER}{route}auth = false\n")).as_deref(),
            Some("routes[0].browser")
        );
        for (change, key) in [
            (
                ("issuer = \"http://127.0.0.1:7000\"", "issuer = \"ftp://x\""),
                "browser.issuer",
            ),
            (("client_secret = \"s3cret\"", ""), "browser.client_secret"),
            (
                ("client_id = \"gateway\"", "client_id = \"\""),
                "browser.client_id",
            ),
            (
                (
                    "public_url = \"http://127.0.0.1:8080\"",
                    "public_url = \"http://h/app\"",
                ),
                "browser.public_url",
            ),
            (
                ("client_id", "cookie_name = \"tokengate_idp\"\nclient_id"),
                "browser.cookie_name",
            ),
            (
                ("client_id", "cookie_name = \"__Host-x\"\nclient_id"),
                "browser.cookie_name",
            ),
            (
                ("client_id", "cookie_name = \"a b\"\nclient_id"),
                "browser.cookie_name",
            ),
            (
                (
                    "client_id",
                    "allowed_origins = [\"http://h/path\"]\nclient_id",
                ),
                "browser.allowed_origins[0]",
            ),
        ] {
            let text = format!("{BASE}{}", BROWSER.replacen(change.0, change.1, 1));
            assert_eq!(refused(&text).as_deref(), Some(key), "{change:?}");
        }
    }

    #[test]
    fn rate_limits_are_checked_by_key() {
        let route = |limit: &str, auth: bool| {
            format!(
                "{BASE}[[routes]]\npath_prefix = \"/api/\"\nupstream = \"http://127.0.0.1:1\"\nauth = {auth}\nrate_limit = {limit}\n"
            )
        };
        let ok = r#"{ rate = "100/s", burst = 200, per = "subject" }"#;
        assert_eq!(refused(&route(ok, true)), None);
        for (limit, auth, key) in [
            (r#"{ rate = "100", per = "route" }"#, true, "rate"),
            (r#"{ rate = "0/s", per = "route" }"#, true, "rate"),
            (
                r#"{ rate = "1/s", burst = 0, per = "route" }"#,
                true,
                "burst",
            ),
            (r#"{ rate = "1/s", per = "session" }"#, false, "per"),
        ] {
            assert_eq!(
                refused(&route(limit, auth)).as_deref(),
                Some(format!("routes[0].rate_limit.{key}").as_str()),
                "{limit}"
            );
        }
        let keys = route(r#"{ rate = "1/s", per = "route" }"#, true) + "rate_limit_max_keys = 0\n";
        assert_eq!(
            refused(&keys).as_deref(),
            Some("routes[0].rate_limit_max_keys")
        );
        let unknown = route(r#"{ rate = "1/s", per = "planet" }"#, true);
        assert!(GatewayConfig::parse(&unknown, Path::new("g.toml")).is_err());
    }

    #[test]
    fn browser_defaults_follow_tls_and_public_url() {
        let config =
            GatewayConfig::parse(&format!("{BASE}{BROWSER}"), Path::new("g.toml")).unwrap();
        let browser = config.browser.unwrap();
        assert_eq!(browser.cookie_name(false), "tokengate");
        assert_eq!(browser.cookie_name(true), "__Host-tokengate");
        let behind_tls = BrowserConfig {
            public_url: "https://app.example.com".into(),
            ..browser.clone()
        };
        assert!(behind_tls.secure(false));
        assert_eq!(behind_tls.cookie_name(false), "__Host-tokengate");
        assert_eq!(browser.allowed_origins(), ["http://127.0.0.1:8080"]);
        assert_eq!(browser.login_timeout, Duration::from_secs(600));
        let debug = format!("{browser:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
        assert!(debug.contains("<redacted>"));
    }
}
