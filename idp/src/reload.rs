//! Reloading the configuration file without a restart (`SIGHUP`, `POST /admin/reload`).
//!
//! The new file is read and validated whole, and everything it names is built (signing keys,
//! upstream providers' CA files, clients, the session issuer) before anything changes; then the
//! state in force ([`Live`]) is swapped in one atomic store. A request in flight finishes with
//! the state it started with. What lasts (the store, metrics, last-use reports) is carried over;
//! settings that only a restart can change keep their running value, and the log names each.

use std::path::PathBuf;
use std::sync::Arc;

use tokengate_server::ConfigError;
use tokengate_server::reload::{Kept, Reloaded};
use tokio::sync::Mutex;

use crate::config::IdpConfig;
use crate::keys::{KeyError, KeySet};
use crate::state::{AppState, Lasting, Live};
use crate::upstreams::Upstreams;

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The IdP runs without a file (tests, `tokengate dev`): there is nothing to read.
    #[error("this IdP was not started from a configuration file")]
    NoFile,
    /// The file cannot be read or parsed, or fails validation.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A signing key the new file names cannot be loaded or published.
    #[error("{file}: `tokens.signing_keys`: {source}")]
    Keys {
        /// The configuration file's path.
        file: String,
        /// Why the key failed.
        #[source]
        source: KeyError,
    },
    /// An upstream the new file names cannot get an HTTP client (its `tls_ca_file`).
    #[error("{file}: `upstreams`: {message}")]
    Upstream {
        /// The configuration file's path.
        file: String,
        /// What failed, naming the upstream.
        message: String,
    },
}

/// Applies new configuration files to a running IdP.
pub struct Reloader {
    path: Option<PathBuf>,
    /// The configuration in force; held while a reload runs, so reloads never interleave.
    current: Mutex<IdpConfig>,
    live: Live,
    lasting: Lasting,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Reloader {
    /// `path` is the file a reload reads (`None`: reloads answer [`ReloadError::NoFile`]);
    /// `config` is the one in force.
    pub fn new(path: Option<PathBuf>, config: IdpConfig, live: Live, lasting: Lasting) -> Self {
        Reloader {
            path,
            current: Mutex::new(config),
            live,
            lasting,
        }
    }

    /// Reads, checks and applies the configuration file; logs and counts the outcome.
    pub async fn reload(&self) -> Result<Reloaded, ReloadError> {
        let result = self.try_reload().await;
        match &result {
            Ok(done) => {
                tracing::info!(changed = ?done.changed, needs_restart = ?done.needs_restart, "configuration reloaded");
            }
            Err(e) => {
                tracing::error!(error = %e, "reload refused; the running configuration is unchanged")
            }
        }
        self.lasting.metrics.config_loaded(result.is_ok());
        result
    }

    async fn try_reload(&self) -> Result<Reloaded, ReloadError> {
        let path = self.path.as_ref().ok_or(ReloadError::NoFile)?;
        let file = path.display().to_string();
        let mut new = IdpConfig::load(path)?;
        // Every file the new configuration names is read before anything changes.
        let keys = KeySet::load(&new.signing_key_paths())
            .and_then(|keys| keys.public_jwks().map(|_| keys))
            .map_err(|source| ReloadError::Keys {
                file: file.clone(),
                source,
            })?;
        let upstreams = Upstreams::new(&new.upstreams, &new.base_dir).map_err(|message| {
            ReloadError::Upstream {
                file: file.clone(),
                message,
            }
        })?;

        let mut current = self.current.lock().await;
        let needs_restart = keep_restart_only(&current, &mut new).log();
        let state = AppState::new(&new, &self.lasting, Arc::new(keys), upstreams)
            .map_err(|source| ReloadError::Keys { file, source })?;
        let running = self.live.load();
        let changed = changes(&current, &new, &running, &state);
        self.live.store(state);
        if new.users != current.users
            && let Err(e) = self.lasting.users.seed(&new.users).await
        {
            tracing::warn!(error = %e, "writing the new seed users failed; they are written at the next reload or start");
        }
        *current = new;
        Ok(Reloaded {
            changed,
            needs_restart,
        })
    }
}

/// The sections a reload changed, as `POST /admin/reload` names them.
fn changes(
    current: &IdpConfig,
    new: &IdpConfig,
    running: &AppState,
    next: &AppState,
) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let mut note = |name, differs: bool| {
        if differs {
            changed.push(name);
        }
    };
    note("clients", new.clients != current.clients);
    note("users", new.users != current.users);
    // By what is published: a key file replaced under the same name is a change too.
    note("signing_keys", running.keys.jwks() != next.keys.jwks());
    let tokens = |c: &IdpConfig| crate::config::TokensConfig {
        signing_keys: Vec::new(),
        ..c.tokens.clone()
    };
    note("tokens", tokens(new) != tokens(current));
    note("login", new.login != current.login);
    note("upstreams", new.upstreams != current.upstreams);
    note("admin", new.admin != current.admin);
    note("server", new.server != current.server);
    changed
}

/// Puts back into `new` every setting that only a restart can change, naming those that differ.
fn keep_restart_only(current: &IdpConfig, new: &mut IdpConfig) -> Kept {
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
    kept.keep_shown(
        "server.header_timeout",
        &c.server.header_timeout,
        &mut n.server.header_timeout,
    );
    kept.keep_shown(
        "server.drain_timeout",
        &c.server.drain_timeout,
        &mut n.server.drain_timeout,
    );
    // Every token names its issuer and the console its URL: both are fixed at the start.
    kept.keep_shown("tokens.issuer", &c.tokens.issuer, &mut n.tokens.issuer);
    kept.keep_shown(
        "admin.public_url",
        &c.admin.public_url,
        &mut n.admin.public_url,
    );
    kept.keep_shown("log", &c.log, &mut n.log);
    // The store's URL may carry a password: never shown.
    kept.keep("store", &c.store, &mut n.store, |_| {
        "the running connection".to_owned()
    });
    kept
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::path::Path;

    const BASE: &str = r#"
[server]
listen = "127.0.0.1:7000"
[admin]
listen = "127.0.0.1:7001"
token = "an-admin-token-of-some-length"
"#;

    fn config(extra: &str) -> IdpConfig {
        IdpConfig::parse(&format!("{BASE}{extra}"), Path::new("idp.toml")).unwrap()
    }

    #[test]
    fn settings_that_need_a_restart_keep_their_running_value() {
        let current = config("");
        let mut new =
            config("[tokens]\nissuer = \"https://idp.example\"\nvalue_token_ttl = \"30s\"\n");
        new.server.listen = "127.0.0.1:7100".parse().unwrap();
        let kept = keep_restart_only(&current, &mut new);
        let keys: Vec<_> = kept.entries().iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["server.listen", "tokens.issuer"]);
        assert_eq!(kept.entries()[0].1, "127.0.0.1:7000");
        assert_eq!(new.server.listen, current.server.listen);
        assert_eq!(new.tokens.issuer, current.tokens.issuer);
        // What reloads live is left as the new file says.
        assert_eq!(new.tokens.value_token_ttl.as_secs(), 30);
        assert!(
            keep_restart_only(&current, &mut current.clone())
                .entries()
                .is_empty()
        );
    }
}
