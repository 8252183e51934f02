//! The `[store]` section, the same in the IdP's and the gateway's configuration.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::{AnyStore, RedisOptions, RedisStore, StoreError};

/// A `[store]` setting that cannot work: its key within the section, and why. A service names
/// its file and section around it (`ConfigError::Invalid` with `store.<key>`).
#[derive(Debug, thiserror::Error)]
#[error("`{key}`: {message}")]
pub struct StoreConfigError {
    /// The key below `store.` (`redis_url`, `nodes`, ...).
    pub key: &'static str,
    /// What is wrong with it.
    pub message: String,
}

fn invalid(key: &'static str, message: impl Into<String>) -> StoreConfigError {
    StoreConfigError {
        key,
        message: message.into(),
    }
}

/// How the store reaches Redis.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StoreMode {
    /// One Redis server at `redis_url`.
    #[default]
    Standalone,
    /// Redis Cluster through seed `nodes`.
    Cluster,
    /// The master named `master_name`, found through `sentinels`; `redis_url` then only
    /// carries the master's password, database and scheme (`rediss://`).
    Sentinel,
}

/// `[store]`: where the token store is, shared by the IdP and every gateway.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `standalone` (default), `cluster` or `sentinel`.
    #[serde(default)]
    pub mode: StoreMode,
    /// `redis://` or `rediss://` (TLS); may carry a password and a database.
    #[serde(default = "defaults::redis_url")]
    pub redis_url: String,
    /// Seed nodes of a Redis Cluster (`mode = "cluster"`).
    #[serde(default)]
    pub nodes: Vec<String>,
    /// Sentinels that know the master (`mode = "sentinel"`).
    #[serde(default)]
    pub sentinels: Vec<String>,
    /// The master's name at the sentinels.
    #[serde(default)]
    pub master_name: Option<String>,
    /// Prefix of every key, so that several deployments can share one Redis.
    #[serde(default = "defaults::key_prefix")]
    pub key_prefix: String,
    /// Events kept for gateways that fall behind.
    #[serde(default = "defaults::events_max_len")]
    pub events_max_len: usize,
    /// How long one store command may take before the store counts as unreachable.
    #[serde(default = "defaults::timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// PEM file of the certificates `rediss://` servers are verified against (default: the
    /// system's roots). Standalone and cluster modes.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // URLs may carry a password.
        f.debug_struct("StoreConfig")
            .field("mode", &self.mode)
            .field("key_prefix", &self.key_prefix)
            .finish_non_exhaustive()
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            mode: StoreMode::Standalone,
            redis_url: defaults::redis_url(),
            nodes: Vec::new(),
            sentinels: Vec::new(),
            master_name: None,
            key_prefix: defaults::key_prefix(),
            events_max_len: defaults::events_max_len(),
            timeout: defaults::timeout(),
            tls_ca_file: None,
        }
    }
}

/// Every URL is a `redis://` or `rediss://` URL the client accepts.
fn check_urls(key: &'static str, urls: &[String]) -> Result<(), StoreConfigError> {
    for url in urls {
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Err(invalid(key, "must start with redis:// or rediss://"));
        }
        if let Err(e) = redis::Client::open(url.as_str()) {
            return Err(invalid(key, format!("not a Redis URL: {e}")));
        }
    }
    Ok(())
}

mod defaults {
    use std::time::Duration;
    pub fn redis_url() -> String {
        "redis://127.0.0.1:6379".to_owned()
    }
    pub fn key_prefix() -> String {
        "tg".to_owned()
    }
    pub fn events_max_len() -> usize {
        100_000
    }
    pub fn timeout() -> Duration {
        Duration::from_secs(1)
    }
}

impl StoreConfig {
    /// A standalone Redis store at `url`, everything else default.
    pub fn redis(url: &str) -> Self {
        StoreConfig {
            redis_url: url.to_owned(),
            ..Self::default()
        }
    }

    /// The first setting that cannot work, if any.
    pub fn validate(&self) -> Result<(), StoreConfigError> {
        match self.mode {
            StoreMode::Standalone => {
                check_urls("redis_url", std::slice::from_ref(&self.redis_url))?
            }
            StoreMode::Cluster => {
                if self.nodes.is_empty() {
                    return Err(invalid(
                        "nodes",
                        "mode = \"cluster\" needs at least one seed node",
                    ));
                }
                check_urls("nodes", &self.nodes)?;
            }
            StoreMode::Sentinel => {
                if self.sentinels.is_empty() {
                    return Err(invalid(
                        "sentinels",
                        "mode = \"sentinel\" needs at least one sentinel",
                    ));
                }
                check_urls("sentinels", &self.sentinels)?;
                if self.master_name.as_deref().is_none_or(str::is_empty) {
                    return Err(invalid(
                        "master_name",
                        "mode = \"sentinel\" needs the name the sentinels monitor",
                    ));
                }
                check_urls("redis_url", std::slice::from_ref(&self.redis_url))?;
            }
        }
        if self.key_prefix.is_empty() || self.key_prefix.contains(['{', '}']) {
            return Err(invalid("key_prefix", "must be non-empty, without braces"));
        }
        if self.events_max_len < 100 {
            return Err(invalid("events_max_len", "must be at least 100"));
        }
        if self.timeout.is_zero() {
            return Err(invalid("timeout", "must be more than 0"));
        }
        if let Some(file) = &self.tls_ca_file {
            if self.mode == StoreMode::Sentinel {
                return Err(invalid(
                    "tls_ca_file",
                    "not supported with mode = \"sentinel\" (the system's roots are used)",
                ));
            }
            if !file.is_file() {
                return Err(invalid(
                    "tls_ca_file",
                    format!("{} is not a file", file.display()),
                ));
            }
        }
        Ok(())
    }

    /// The store this section describes (connections are made lazily).
    pub fn connect(&self) -> Result<AnyStore, StoreError> {
        let tls_roots =
            match &self.tls_ca_file {
                Some(file) => Some(std::fs::read(file).map_err(|e| {
                    StoreError::Config(format!("cannot read {}: {e}", file.display()))
                })?),
                None => None,
            };
        let options = RedisOptions {
            key_prefix: self.key_prefix.clone(),
            events_max_len: self.events_max_len,
            audit_max_len: crate::DEFAULT_AUDIT_MAX_LEN,
            response_timeout: self.timeout,
            connect_timeout: self.timeout,
            tls_roots,
        };
        Ok(AnyStore::Redis(match self.mode {
            StoreMode::Standalone => RedisStore::connect(&self.redis_url, options)?,
            StoreMode::Cluster => RedisStore::connect_cluster(&self.nodes, options)?,
            StoreMode::Sentinel => RedisStore::connect_sentinel(
                &self.sentinels,
                self.master_name.as_deref().unwrap_or_default(),
                &self.redis_url,
                options,
            )?,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(config: &StoreConfig) -> Option<&'static str> {
        config.validate().err().map(|e| e.key)
    }

    #[test]
    fn the_default_and_a_plain_url_are_valid() {
        assert_eq!(key_of(&StoreConfig::default()), None);
        assert_eq!(
            key_of(&StoreConfig::redis("rediss://:pw@redis:6380/2")),
            None
        );
    }

    #[test]
    fn the_first_setting_that_cannot_work_is_named() {
        assert_eq!(
            key_of(&StoreConfig::redis("http://redis:6379")),
            Some("redis_url")
        );
        let cluster = StoreConfig {
            mode: StoreMode::Cluster,
            ..StoreConfig::default()
        };
        assert_eq!(key_of(&cluster), Some("nodes"));
        let sentinel = StoreConfig {
            mode: StoreMode::Sentinel,
            sentinels: vec!["redis://127.0.0.1:26379".into()],
            ..StoreConfig::default()
        };
        assert_eq!(key_of(&sentinel), Some("master_name"));
        let braces = StoreConfig {
            key_prefix: "{tg}".into(),
            ..StoreConfig::default()
        };
        assert_eq!(key_of(&braces), Some("key_prefix"));
        let short = StoreConfig {
            events_max_len: 10,
            ..StoreConfig::default()
        };
        assert_eq!(key_of(&short), Some("events_max_len"));
    }

    #[test]
    fn an_error_shows_its_key_and_why() {
        let e = StoreConfig::redis("http://redis:6379")
            .validate()
            .expect_err("not a Redis URL");
        assert_eq!(
            e.to_string(),
            "`redis_url`: must start with redis:// or rediss://"
        );
    }
}
