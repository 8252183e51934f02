//! Reloading the configuration file without a restart (`SIGHUP`, `POST /admin/reload`).
//!
//! The new file is read and validated whole, and everything it names is built (routes, the TLS
//! certificate and key, the browser client) before anything changes; then the request path's
//! [`Live`] part and the certificate are swapped in atomically. A broken file changes nothing.
//! Settings that need a restart (listen addresses, the store, the cache's size, ...) keep their
//! running value, and the log names each one.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use aws_lc_rs::constant_time::verify_slices_are_equal;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::browser::{Browser, DiscoveryTask};
use crate::cache::TokenCache;
use crate::config::{ConfigError, GatewayConfig};
use crate::health;
use crate::jwks::{Jwks, JwksError, Keys};
use crate::metrics::Metrics;
use crate::proxy::{Live, Proxy};
use crate::routes::{Route, Routes};
use crate::tls::{self, Certificate, TlsError};
use tokengate_server::reload::Kept;
pub use tokengate_server::reload::Reloaded;

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// Started from a config built in code (as tests do): there is nothing to read again.
    #[error("this gateway was not started from a configuration file")]
    NoFile,
    /// The file cannot be read, parsed or validated.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The route at this index has an upstream that cannot be parsed.
    #[error("routes[{0}]: bad upstream")]
    Route(usize),
    /// `server.tls_cert` or `server.tls_key` cannot be loaded.
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    /// `idp.jwks_url` cannot be used to fetch keys from.
    #[error("idp.jwks_url: {0}")]
    Jwks(#[from] JwksError),
}

/// The request path's routes, built from their configuration. A route of `previous` with the
/// same prefix, host and rate limit hands its limiter's state on.
pub fn routes(
    config: &GatewayConfig,
    metrics: &Metrics,
    previous: Option<&Routes>,
) -> Result<Routes, ReloadError> {
    let routes = config
        .routes
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let host = r.host.as_ref().map(|h| h.to_ascii_lowercase());
            let old = previous.and_then(|p| p.get(&r.path_prefix, host.as_deref()));
            Route::new(r, &config.server, metrics, old).ok_or(ReloadError::Route(i))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Routes::new(routes))
}

/// The browser client of `[browser]`, if any.
pub fn browser(config: &GatewayConfig) -> Option<Arc<Browser>> {
    let tls = config.server.tls_cert.is_some();
    config
        .browser
        .as_ref()
        .map(|b| Arc::new(Browser::new(b, tls)))
}

/// The parts of a running gateway that a reload changes.
#[derive(Clone)]
pub struct Parts {
    /// Routes and `[browser]`, swapped whole.
    pub proxy: Arc<Proxy>,
    /// The token cache: its TTLs (`[cache]`).
    pub tokens: Arc<TokenCache>,
    /// The signing keys: where they come from (`[idp]`).
    pub keys: Arc<Keys>,
    /// The TLS certificate, when the gateway serves TLS.
    pub certificate: Option<Arc<Certificate>>,
    /// Where reloads are counted.
    pub metrics: Arc<Metrics>,
}

/// Applies new configuration files to a running gateway.
pub struct Reloader {
    path: Option<PathBuf>,
    /// The configuration in force; held while a reload runs, so reloads never interleave.
    current: Mutex<GatewayConfig>,
    proxy: Arc<Proxy>,
    tokens: Arc<TokenCache>,
    keys: Arc<Keys>,
    certificate: Option<Arc<Certificate>>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    /// Stops the discovery of a browser client that a reload replaced.
    discovery: Mutex<CancellationToken>,
    /// Stops the health checks of a route table that a reload replaced.
    health: Mutex<CancellationToken>,
}

impl Reloader {
    /// `path` is `None` for a gateway started without a file: a reload then fails with
    /// [`ReloadError::NoFile`]. Discovery for `[browser]` starts with [`Reloader::discover`].
    pub fn new(
        path: Option<PathBuf>,
        config: GatewayConfig,
        parts: Parts,
        shutdown: CancellationToken,
    ) -> Self {
        let Parts {
            proxy,
            tokens,
            keys,
            certificate,
            metrics,
        } = parts;
        Reloader {
            path,
            current: Mutex::new(config),
            proxy,
            tokens,
            keys,
            certificate,
            metrics,
            discovery: Mutex::new(shutdown.child_token()),
            health: Mutex::new(shutdown.child_token()),
            shutdown,
        }
    }

    /// Whether `token` is the admin token that may ask for a reload (`None`: no token is
    /// configured, so nothing is).
    pub fn admin_token_matches(&self, presented: &[u8]) -> Option<bool> {
        let current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let token = current.admin.token.as_deref()?;
        Some(verify_slices_are_equal(token.as_bytes(), presented).is_ok())
    }

    /// Finds the IdP's endpoints for the browser client in force, in the background.
    pub fn discover(&self) {
        if let Some(browser) = self.proxy.live().browser() {
            self.start_discovery(browser.clone());
        }
    }

    /// Starts the health checks of the routes in force, stopping those of the table before.
    pub fn check_health(&self) {
        let token = self.shutdown.child_token();
        let previous = std::mem::replace(
            &mut *self.health.lock().unwrap_or_else(|p| p.into_inner()),
            token.clone(),
        );
        previous.cancel();
        health::spawn_all(self.proxy.live().routes(), &token);
    }

    fn start_discovery(&self, browser: Arc<Browser>) {
        let token = self.shutdown.child_token();
        let previous = std::mem::replace(
            &mut *self.discovery.lock().unwrap_or_else(|p| p.into_inner()),
            token.clone(),
        );
        previous.cancel();
        tokio::spawn(
            DiscoveryTask { browser }
                .run(token)
                .instrument(tracing::info_span!("discovery")),
        );
    }

    /// Reads, checks and applies the configuration file; logs and counts the outcome.
    pub fn reload(&self) -> Result<Reloaded, ReloadError> {
        let result = self.try_reload();
        match &result {
            Ok(done) => {
                tracing::info!(changed = ?done.changed, needs_restart = ?done.needs_restart, "configuration reloaded");
            }
            Err(e) => {
                tracing::error!(error = %e, "reload refused; the running configuration is unchanged")
            }
        }
        self.metrics.config_loaded(result.is_ok());
        result
    }

    fn try_reload(&self) -> Result<Reloaded, ReloadError> {
        let path = self.path.as_ref().ok_or(ReloadError::NoFile)?;
        let mut new = GatewayConfig::load(path)?;
        // Every file the new configuration names is read, even where a restart is needed to
        // use it, so that a broken one is reported now rather than at the next start.
        let certificate = match (&new.server.tls_cert, &new.server.tls_key) {
            (Some(cert), Some(key)) => Some(tls::load(cert, key)?),
            _ => None,
        };
        let jwks = Jwks::new(&new.idp.jwks_url, &new.idp.issuer())?;
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let needs_restart = keep_restart_only(&current, &mut new).log();

        // Build everything first: nothing below may fail once the swap begins.
        let routes = routes(&new, &self.metrics, Some(self.proxy.live().routes()))?;
        let browser_changed = new.browser != current.browser;
        let browser = if browser_changed {
            browser(&new)
        } else {
            self.proxy.live().browser().cloned()
        };

        let mut changed = Vec::new();
        if new.routes != current.routes {
            changed.push("routes");
        }
        if browser_changed {
            changed.push("browser");
        }
        if new.admin != current.admin {
            changed.push("admin");
        }
        if new.cache != current.cache {
            self.tokens.set_ttls(&new.cache);
            changed.push("cache");
        }
        if new.idp != current.idp {
            let (keys, period) = (self.keys.clone(), new.idp.jwks_refresh);
            tokio::spawn(async move { keys.replace_source(jwks, period).await });
            changed.push("idp");
        }
        self.proxy.replace(Live::new(routes, browser.clone()));
        if new.routes != current.routes {
            // Unchanged upstream settings kept their state (and health) with their route.
            self.check_health();
        }
        if let (Some(swap), Some(certificate)) = (&self.certificate, certificate)
            && swap.store(certificate)
        {
            changed.push("tls");
        }
        if browser_changed && let Some(browser) = browser {
            self.start_discovery(browser);
        }
        *current = new;
        Ok(Reloaded {
            changed,
            needs_restart,
        })
    }
}

/// Puts back into `new` every setting that only a restart can change, naming those that differ.
fn keep_restart_only(current: &GatewayConfig, new: &mut GatewayConfig) -> Kept {
    let mut kept = Kept::default();
    let (c, n) = (current, &mut *new);
    kept.keep(
        "server.listen",
        &c.server.listen,
        &mut n.server.listen,
        |v| v.to_string(),
    );
    kept.keep("admin.listen", &c.admin.listen, &mut n.admin.listen, |v| {
        v.to_string()
    });
    kept.keep_shown(
        "server.max_connections",
        &c.server.max_connections,
        &mut n.server.max_connections,
    );
    kept.keep_shown("server.workers", &c.server.workers, &mut n.server.workers);
    kept.keep_shown(
        "server.header_timeout",
        &c.server.header_timeout,
        &mut n.server.header_timeout,
    );
    kept.keep_shown(
        "server.upstream_timeout",
        &c.server.upstream_timeout,
        &mut n.server.upstream_timeout,
    );
    kept.keep_shown(
        "server.connect_timeout",
        &c.server.connect_timeout,
        &mut n.server.connect_timeout,
    );
    kept.keep_shown(
        "server.drain_timeout",
        &c.server.drain_timeout,
        &mut n.server.drain_timeout,
    );
    kept.keep_shown(
        "server.max_body_bytes",
        &c.server.max_body_bytes,
        &mut n.server.max_body_bytes,
    );
    if c.server.tls_cert.is_some() != n.server.tls_cert.is_some() {
        let was = if c.server.tls_cert.is_some() {
            "on"
        } else {
            "off"
        };
        kept.push("server.tls_cert", format!("TLS {was}"));
        n.server.tls_cert = c.server.tls_cert.clone();
        n.server.tls_key = c.server.tls_key.clone();
    }
    // The store's URL may carry a password: never shown.
    kept.keep("store", &c.store, &mut n.store, |_| {
        "the running connection".to_owned()
    });
    kept.keep_shown("cache.enabled", &c.cache.enabled, &mut n.cache.enabled);
    kept.keep_shown(
        "cache.max_entries",
        &c.cache.max_entries,
        &mut n.cache.max_entries,
    );
    kept.keep_shown("sync", &c.sync, &mut n.sync);
    kept.keep_shown("log", &c.log, &mut n.log);
    kept.keep_shown("protection", &c.protection, &mut n.protection);
    kept
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::path::Path;

    const BASE: &str = r#"
[server]
listen = "127.0.0.1:8080"
[admin]
listen = "127.0.0.1:9090"
[idp]
jwks_url = "http://127.0.0.1:7000/.well-known/jwks.json"
"#;

    fn config(extra: &str) -> GatewayConfig {
        GatewayConfig::parse(&format!("{BASE}{extra}"), Path::new("g.toml")).unwrap()
    }

    #[test]
    fn settings_that_need_a_restart_keep_their_running_value() {
        let current = config("");
        let mut new = config("[cache]\nmax_entries = 5\n");
        new.server.listen = "127.0.0.1:8081".parse().unwrap();
        new.routes =
            config("[[routes]]\npath_prefix = \"/a/\"\nupstream = \"http://127.0.0.1:1\"\n").routes;
        let kept = keep_restart_only(&current, &mut new);
        let kept = kept.entries();
        assert_eq!(kept.len(), 2, "{kept:?}");
        assert_eq!(kept[0], ("server.listen".into(), "127.0.0.1:8080".into()));
        assert_eq!(kept[1].0, "cache.max_entries");
        assert_eq!(new.server.listen, current.server.listen);
        assert_eq!(new.cache, current.cache);
        // What reloads live is left as the new file says.
        assert_eq!(new.routes.len(), 1);
        assert!(
            keep_restart_only(&current, &mut current.clone())
                .entries()
                .is_empty()
        );
    }
}
