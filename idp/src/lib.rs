//! The identity provider: issues reference tokens, keeps signed value tokens in the store,
//! revokes and re-roles sessions, and publishes the changes every gateway applies.
//!
//! * `config`: the typed configuration, validated on load.
//! * `state`: what every handler shares (`AppState`), with the checks several of them need.
//! * `router`: the public and admin listeners' routes and the layers around every request.
//! * `keys`: signing keys and the published JWKS.
//! * `password`: argon2id hashing, bounded in concurrency, with the decoy hash that keeps
//!   checks from telling which names exist.
//! * `credentials`: confidential clients' secret checks.
//! * `users`: the user directory in the token store, seeded from the configuration.
//! * `sessions`: creating sessions and (re)signing their value tokens.
//! * `renewal`: the background task that renews value tokens before they expire.
//! * `reload`: reloading the configuration file without a restart.
//! * `throttle`: the login throttle: lockouts by name and by address.
//! * `clients`: registered clients: grants, redirect URIs, public or confidential.
//! * `upstreams`: upstream OpenID Connect providers as a relying party sees them (discovery,
//!   keys, the code exchange, the id_token's verification).
//! * `oauth/`: OAuth 2 and OpenID Connect on the public listener: the token endpoints, the
//!   authorization code flow, OpenID Connect and scopes.
//! * `federation`: signing in through an upstream provider: the start and callback routes and
//!   the mapping of an upstream identity to a user.
//! * `backchannel`: OpenID Connect Back-Channel Logout received from upstream providers.
//! * `outbox`: Back-Channel Logout sent: logout tokens queued in the store and delivered to
//!   the clients whose sessions ended.
//! * `otp`, `second_factor`: one-time passwords (TOTP) as a second factor: the codes, and the
//!   enrolment page, the code page of a sign-in and the password grant's `otp`.
//! * `passkeys`: the pages of passkeys: the account's list, adding and removing one, the
//!   passkey page of a sign-in (a second factor, or without a password).
//! * `webauthn`: passkeys (WebAuthn Level 2), the relying party's checks of a registration
//!   and an assertion (type, challenge, origin, rpIdHash, flags, signature, counter).
//! * `pages`: the HTML pages (askama templates, CSP); cookies are `tokengate_server::cookies`.
//! * `admin`: the admin listener's API, behind the admin token.
//! * `console/`: the admin console on the admin listener: pages for people who sign in through
//!   the IdP's own code flow and hold `admin.console_role`.
//! * `audit`: the trail of every administrator's action, kept in the store.
//! * `access`: the access log's lines (who asked for what, and the outcome).
//! * `metrics`: the IdP's Prometheus metrics, and the recent samples the console shows as rates.
//! * `extract`, `error`: request parsing and the one place errors become responses.

#![warn(missing_docs)]

pub mod access;
pub mod admin;
pub mod audit;
pub mod backchannel;
pub mod clients;
pub mod config;
pub mod console;
pub mod credentials;
pub mod error;
pub mod extract;
pub mod federation;
pub mod keys;
pub mod metrics;
pub mod oauth;
pub mod otp;
pub mod outbox;
pub mod pages;
pub mod passkeys;
pub mod password;
pub mod reload;
pub mod renewal;
pub mod router;
pub mod second_factor;
pub mod sessions;
pub mod state;
pub mod throttle;
pub mod upstreams;
pub mod users;
pub mod webauthn;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::service::TowerToHyperService;
use tokengate_store::AnyStore;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::access::AccessLog;
use crate::config::IdpConfig;
use crate::extract::ClientAddr;
use crate::keys::KeySet;
use crate::outbox::Outbox;
use crate::password::Hasher;
use crate::reload::Reloader;
use crate::renewal::RenewalTask;
use crate::state::{AppState, Lasting, Live};
use crate::upstreams::Upstreams;

/// How often last-use reports from `/auth/verify` are written.
const USAGE_FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// Why [`Idp::new`] or [`Idp::bind`] failed: the IdP does not start.
#[derive(Debug, thiserror::Error)]
pub enum IdpError {
    /// A signing key cannot publish its public half in the JWKS.
    #[error("signing keys: {0}")]
    Keys(#[from] keys::KeyError),
    /// The decoy password hash could not be made.
    #[error("credentials: {0}")]
    Credentials(#[from] password::HashError),
    /// An upstream's HTTP client could not be built (its `tls_ca_file`, the system's roots).
    #[error("{0}")]
    Upstream(String),
    /// `[log] access_path` cannot be opened.
    #[error(transparent)]
    AccessLog(#[from] tokengate_server::access::OpenError),
    /// A listener's address is taken or not ours.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// `server.listen` or `admin.listen`.
        addr: SocketAddr,
        /// The error from `bind`.
        #[source]
        source: std::io::Error,
    },
}

/// Serves an axum router through the shared connection handling (no TLS: the IdP sits inside).
async fn serve(
    listener: TcpListener,
    app: Router,
    limits: tokengate_server::Limits,
    shutdown: CancellationToken,
) {
    tokengate_server::serve(listener, None, limits, shutdown, move |peer| {
        let address = ClientAddr(Some(peer.ip()));
        TowerToHyperService::new(tower::ServiceExt::map_request(
            app.clone(),
            move |mut req: http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(address);
                req
            },
        ))
    })
    .await;
}

/// An IdP ready to bind its listeners.
pub struct Idp {
    config: IdpConfig,
    store: AnyStore,
    keys: Arc<KeySet>,
    hasher: Hasher,
    upstreams: Upstreams,
}

impl Idp {
    /// Builds the IdP from a validated configuration, a store and its signing keys.
    pub fn new(config: IdpConfig, store: AnyStore, keys: KeySet) -> Result<Self, IdpError> {
        // A key set that cannot publish itself fails here, before any port is bound.
        keys.public_jwks()?;
        // So does an upstream whose TLS roots cannot be read.
        let upstreams =
            Upstreams::new(&config.upstreams, &config.base_dir).map_err(IdpError::Upstream)?;
        Ok(Idp {
            upstreams,
            config,
            store,
            keys: Arc::new(keys),
            hasher: Hasher::new()?,
        })
    }

    /// Binds both listeners; nothing is served until [`BoundIdp::serve`]. Without
    /// `tokens.issuer`, the issuer is `http://` and the public listener's address.
    pub async fn bind(self) -> Result<BoundIdp, IdpError> {
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| IdpError::Bind { addr, source })
        };
        let public = bind(self.config.server.listen).await?;
        let admin = bind(self.config.admin.listen).await?;
        let issuer = match self.config.tokens.issuer.as_str() {
            "" => {
                let addr = public.local_addr().unwrap_or(self.config.server.listen);
                if addr.ip().is_unspecified() {
                    tracing::warn!(listen = %addr, "tokens.issuer is not set and the IdP listens on every address: set it to the URL clients reach the IdP at");
                }
                format!("http://{addr}")
            }
            configured => configured.to_owned(),
        };
        let Idp {
            config,
            store,
            keys,
            hasher,
            upstreams,
        } = self;
        let console_url = match &config.admin.public_url {
            Some(url) => url.clone(),
            None => format!(
                "http://{}",
                admin.local_addr().unwrap_or(config.admin.listen)
            ),
        };
        let mut lasting = Lasting::new(store, hasher, issuer, console_url);
        lasting.access = AccessLog::start(&config.log, lasting.metrics.access_log_dropped.clone())?;
        // The start counts as the first load that took effect, as on the gateway.
        lasting.metrics.config_loaded(true);
        let live = Live::new(AppState::new(&config, &lasting, keys, upstreams)?);
        Ok(BoundIdp {
            reloader: Arc::new(Reloader::new(
                None,
                config.clone(),
                live.clone(),
                lasting.clone(),
            )),
            live,
            lasting,
            config,
            public,
            admin,
        })
    }
}

/// An IdP with its listeners bound.
pub struct BoundIdp {
    live: Live,
    lasting: Lasting,
    reloader: Arc<Reloader>,
    config: IdpConfig,
    public: TcpListener,
    admin: TcpListener,
}

impl BoundIdp {
    /// The public listener's address (with the port the OS chose for `:0`).
    pub fn public_addr(&self) -> SocketAddr {
        self.public
            .local_addr()
            .unwrap_or(self.config.server.listen)
    }

    /// The admin listener's address (with the port the OS chose for `:0`).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.local_addr().unwrap_or(self.config.admin.listen)
    }

    /// The admin console's URL (`/console/` on the admin listener).
    pub fn console_url(&self) -> String {
        format!("{}/console/", self.live.load().console.url)
    }

    /// The issuer URL: `iss` of every token, base of every OpenID Connect endpoint.
    pub fn issuer(&self) -> String {
        self.live.load().issuer_name.clone()
    }

    /// Reloads from `path` on [`Reloader::reload`] (`SIGHUP`, `POST /admin/reload`); without
    /// it, a reload answers that there is no file.
    pub fn reload_from(mut self, path: PathBuf) -> Self {
        self.reloader = Arc::new(Reloader::new(
            Some(path),
            self.config.clone(),
            self.live.clone(),
            self.lasting.clone(),
        ));
        self
    }

    /// The access log, when `[log] access = true` (to reopen its file on `SIGUSR1`).
    pub fn access_log(&self) -> Option<Arc<AccessLog>> {
        self.lasting.access.clone()
    }

    /// What applies a new configuration file to this IdP.
    pub fn reloader(&self) -> Arc<Reloader> {
        self.reloader.clone()
    }

    /// Serves until `shutdown`, then drains connections and writes pending last-use reports.
    pub async fn serve(self, shutdown: CancellationToken) {
        let idp = self;
        let public_app = router::public(&idp.live);
        let admin_app = router::admin(&idp.live, idp.reloader.clone());
        let s = &idp.config.server;
        let limits =
            tokengate_server::Limits::new(s.max_connections, s.header_timeout, s.drain_timeout);
        let state = idp.lasting.clone();
        // Seed users before the first request is served (connections wait in the backlog
        // meanwhile), so a seed user can sign in as soon as the IdP answers; with the store
        // down, keep trying while serving.
        let seeds = &idp.config.users;
        if let Err(e) = idp.lasting.users.seed(seeds).await {
            tracing::warn!(error = %e, "writing the seed users failed; will retry");
        }
        let flusher = {
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(USAGE_FLUSH_INTERVAL);
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tick.tick() => {}
                    }
                    state.activity.sample(state.metrics.totals());
                    if let Err(e) = state.usage.flush(&state.store).await {
                        tracing::warn!(error = %e, "writing last-use reports failed; will retry");
                    }
                }
            })
        };
        let live = idp.live.clone();
        let renewal = RenewalTask::following(
            idp.lasting.store.clone(),
            move || live.load().issuer.clone(),
            &idp.lasting.metrics,
        );
        let renewal = tokio::spawn(
            renewal
                .run(shutdown.clone())
                .instrument(tracing::info_span!("renewal")),
        );
        let outbox = Outbox::new(
            idp.live.clone(),
            idp.lasting.store.clone(),
            idp.lasting.outbox.clone(),
        );
        let outbox = tokio::spawn(
            outbox
                .run(shutdown.clone())
                .instrument(tracing::info_span!("backchannel_logout")),
        );
        tokio::join!(
            serve(idp.public, public_app, limits, shutdown.clone()),
            serve(idp.admin, admin_app, limits, shutdown.clone()),
            idp.lasting.users.keep_seeding(seeds, &shutdown),
        );
        let _ = flusher.await;
        let _ = renewal.await;
        let _ = outbox.await;
        let lasting = &idp.lasting;
        if let Err(e) = lasting.usage.flush(&lasting.store).await {
            tracing::warn!(error = %e, pending = lasting.usage.len(), "last-use reports lost at shutdown");
        }
        if let Some(access) = &lasting.access {
            access.close();
        }
    }
}
