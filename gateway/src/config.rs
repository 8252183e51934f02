//! The gateway's configuration: typed, with defaults, validated right after parsing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
pub use tokengate_server::ConfigError;
pub use tokengate_store::StoreConfig;

#[derive(Clone, Debug, Deserialize)]
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
}

#[derive(Clone, Debug, Deserialize)]
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

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    pub listen: SocketAddr,
}

#[derive(Clone, Debug, Deserialize)]
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

#[derive(Clone, Debug, Deserialize)]
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

#[derive(Clone, Debug, Deserialize)]
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

#[derive(Clone, Debug, Deserialize)]
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
        let config = Self::parse(&text, path)?;
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
        }
        Ok(())
    }
}
