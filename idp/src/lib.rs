//! The identity provider: issues reference tokens, keeps signed value tokens in the store,
//! revokes and re-roles sessions, and publishes the changes every gateway applies.
//!
//! * `config`: the typed configuration, validated on load.
//! * `keys`: signing keys and the published JWKS.
//! * `password`: argon2id hashing, bounded in concurrency, with the decoy hash that keeps
//!   checks from telling which names exist.
//! * `credentials`: confidential clients' secret checks.
//! * `clients`: registered clients: grants, redirect URIs, public or confidential.
//! * `scope`: a requested scope narrows a session's roles.
//! * `users`: the user directory in the token store, seeded from the configuration.
//! * `sessions`: creating sessions and (re)signing their value tokens.
//! * `renewal`: the background task that renews value tokens before they expire.
//! * `oauth`: the public listener (token, revoke, introspect, JWKS, forward-auth).
//! * `token`: the token endpoint's answers, shared by every grant and the admin API.
//! * `authorize`: the authorization code flow with PKCE: sign-in page, single sign-on, codes.
//! * `upstream`, `federation`: signing in through upstream OpenID Connect providers (the
//!   provider as a relying party sees it; the start and callback routes and user mapping).
//! * `oidc`: OpenID Connect: discovery, ID tokens, userinfo, RP-initiated logout.
//! * `pages`: the HTML pages (askama templates, CSP); cookies are `tokengate_server::cookies`.
//! * `admin`: the admin listener's API, behind the admin token.
//! * `console`: the admin console on the admin listener: pages for people who sign in through
//!   the IdP's own code flow and hold `admin.console_role`.
//! * `audit`: the trail of every administrator's action, kept in the store.
//! * `extract`, `error`: request parsing and the one place errors become responses.

pub mod admin;
pub mod audit;
pub mod authorize;
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
pub mod oidc;
pub mod pages;
pub mod password;
pub mod renewal;
pub mod scope;
pub mod sessions;
pub mod throttle;
pub mod token;
pub mod upstream;
pub mod users;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::digest::{SHA256, digest};
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use http::{HeaderMap, header};
use hyper_util::service::TowerToHyperService;
use subtle::ConstantTimeEq;
use tokengate_store::{AnyStore, ReferenceToken, StoreError, TokenStore, UsageLog};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::clients::{Client, Clients};
use crate::config::{CONSOLE_CLIENT_ID, ClientConfig, Grant, IdpConfig};
use crate::console::ConsoleSettings;
use crate::credentials::{Credentials, Kind};
use crate::error::ApiError;
use crate::extract::{ClientAddr, FormBody};
use crate::keys::KeySet;
use crate::metrics::{Activity, GrantLabels, Metrics, RequestLabels, RouteLabels};
use crate::password::Hasher;
use crate::renewal::RenewalTask;
use crate::sessions::{IssueError, Issued, Issuer, NewSession};
use crate::throttle::Throttle;
use crate::users::Users;

/// Largest request body accepted (forms and admin JSON are small).
const MAX_BODY_BYTES: usize = 16 * 1024;
/// How often last-use reports from `/auth/verify` are written.
const USAGE_FLUSH_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum IdpError {
    #[error("signing keys: {0}")]
    Keys(#[from] keys::KeyError),
    #[error("credentials: {0}")]
    Credentials(#[from] password::HashError),
    #[error("{0}")]
    Upstream(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// What every handler shares.
#[derive(Clone, Debug)]
pub struct AppState(Arc<Shared>);

#[derive(Debug)]
pub struct Shared {
    pub store: AnyStore,
    pub issuer: Arc<Issuer>,
    pub issuer_name: String,
    pub keys: Arc<KeySet>,
    pub credentials: Credentials,
    pub clients: Clients,
    pub users: Users,
    pub metrics: Metrics,
    pub usage: UsageLog,
    pub throttle: Throttle,
    pub console: ConsoleSettings,
    /// Recent samples of the metrics the console shows as rates.
    pub activity: Activity,
    pub upstreams: upstream::Upstreams,
    admin_token_digest: [u8; 32],
    request_timeout: Duration,
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, data).as_ref());
    out
}

impl AppState {
    /// Whether `token` is the admin token. Both sides are hashed first, so the comparison takes
    /// the same time whatever the length or content of the guess.
    /// Whether cookies get `Secure`: the IdP is reached over HTTPS (its issuer URL says so).
    pub fn secure_cookies(&self) -> bool {
        self.issuer_name.starts_with("https://")
    }

    pub fn is_admin_token(&self, token: &str) -> bool {
        sha256(token.as_bytes())
            .ct_eq(&self.admin_token_digest)
            .into()
    }

    /// Checks a username's password or a client's secret, behind the login throttle: a name or
    /// address under lockout gets [`ApiError::Locked`] before anything is checked. `Ok(None)`
    /// when the credentials are wrong (counted as a failure).
    pub async fn check_credentials(
        &self,
        kind: Kind,
        name: &str,
        secret: &str,
        address: Option<IpAddr>,
    ) -> Result<Option<Vec<String>>, ApiError> {
        let key = match kind {
            Kind::User => format!("user:{name}"),
            Kind::Client => format!("client:{name}"),
        };
        let throttled = self
            .throttle
            .check(&key, address)
            .await
            .map_err(|e| self.store_error(e))?;
        if let Err(wait) = throttled {
            self.metrics.logins_throttled.inc();
            tracing::info!(name, address = ?address, "attempt refused during a lockout");
            return Err(ApiError::Locked(wait));
        }
        let roles = match kind {
            Kind::User => self
                .users
                .check_password(name, secret)
                .await
                .map_err(|e| self.store_error(e))?
                .map(|user| user.roles),
            Kind::Client => self.credentials.check(name, secret).await,
        };
        if roles.is_some() {
            self.throttle
                .succeeded(&key)
                .await
                .map_err(|e| self.store_error(e))?;
        } else if self
            .throttle
            .failed(&key, address)
            .await
            .map_err(|e| self.store_error(e))?
        {
            self.metrics.login_lockouts.inc();
            tracing::warn!(name, address = ?address, "too many failed attempts; locked out");
        }
        Ok(roles)
    }

    /// The client a token-endpoint request comes from (RFC 6749 §2.3): a confidential client
    /// by its secret (HTTP Basic or the form, not both), a public client by `client_id` alone.
    /// Credentials that are presented are always checked: wrong ones, an unknown client, or a
    /// confidential client without its secret are `invalid_client`, never ignored. `Ok(None)`
    /// when the request names no client at all.
    pub async fn client(
        &self,
        headers: &HeaderMap,
        form: &FormBody,
        address: Option<IpAddr>,
    ) -> Result<Option<Arc<Client>>, ApiError> {
        let (form_id, form_secret) = (form.get("client_id")?, form.get("client_secret")?);
        let (id, secret) = match (extract::basic(headers)?, form_id, form_secret) {
            (Some(_), _, Some(_)) => {
                return Err(ApiError::InvalidRequest("client credentials sent twice"));
            }
            (Some((id, _)), Some(named), None) if named != id => {
                return Err(ApiError::InvalidRequest(
                    "client_id differs from the authenticated client",
                ));
            }
            (Some((id, secret)), _, None) => (id, Some(secret)),
            (None, Some(id), secret) => (id.to_owned(), secret.map(str::to_owned)),
            (None, None, Some(_)) => {
                return Err(ApiError::InvalidRequest("client_secret without client_id"));
            }
            (None, None, None) => return Ok(None),
        };
        let client = match secret {
            Some(secret) => self
                .check_credentials(Kind::Client, &id, &secret, address)
                .await?
                .and_then(|_| self.clients.get(&id)),
            None => self.clients.get(&id).filter(|c| c.is_public()),
        };
        match client {
            Some(client) => Ok(Some(client.clone())),
            None => {
                tracing::info!(client_id = %id, "client authentication failed");
                Err(ApiError::InvalidClient)
            }
        }
    }

    /// Counts and logs a store failure; the client sees 503.
    pub fn store_error(&self, e: StoreError) -> ApiError {
        self.metrics.store_errors.inc();
        tracing::error!(error = %e, source = ?std::error::Error::source(&e), "token store operation failed");
        match e {
            StoreError::Unavailable(_) => ApiError::Unavailable,
            _ => ApiError::Internal,
        }
    }

    /// A new session for a user, behind `token`, kept only if the user may still sign in
    /// (`Users::admit`: a disable or delete racing the sign-in ends it): `None` then.
    pub async fn issue_admitted(
        &self,
        token: ReferenceToken,
        new: NewSession,
    ) -> Result<Option<Issued>, ApiError> {
        let issued = self
            .issuer
            .issue_as(token, new)
            .await
            .map_err(|e| self.issue_error(e))?;
        let admitted = self
            .users
            .admit(&issued.session)
            .await
            .map_err(|e| self.store_error(e))?;
        Ok(admitted.then_some(issued))
    }

    /// Counts a session issued through `grant`.
    pub fn count_issued(&self, grant: &'static str) {
        self.metrics
            .tokens_issued
            .get_or_create(&GrantLabels { grant })
            .inc();
    }

    pub fn issue_error(&self, e: IssueError) -> ApiError {
        match e {
            IssueError::Store(e) => self.store_error(e),
            IssueError::Key(e) => {
                tracing::error!(error = %e, "signing a value token failed");
                ApiError::Internal
            }
        }
    }
}

/// Per request: a span, a deadline, and the request metrics (by route template, never by the
/// raw path, which may be anything a client sends).
async fn observe(
    State((state, listener)): State<(AppState, &'static str)>,
    req: Request,
    next: Next,
) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let span = tracing::info_span!("request", listener, method = %req.method(), route = %route);
    let started = Instant::now();
    let response = match tokio::time::timeout(
        state.request_timeout,
        next.run(req).instrument(span.clone()),
    )
    .await
    {
        Ok(response) => response,
        Err(_) => ApiError::Unavailable.into_response(),
    };
    let status = response.status().as_u16();
    span.in_scope(|| {
        tracing::debug!(
            status,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "request done"
        )
    });
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            listener,
            route: route.clone(),
            status,
        })
        .inc();
    state
        .metrics
        .request_duration
        .get_or_create(&RouteLabels { listener, route })
        .observe(started.elapsed().as_secs_f64());
    response
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn readyz(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    state.store.ping().await.map_err(|e| state.store_error(e))?;
    if !state.users.seeded() {
        return Err(ApiError::Unavailable);
    }
    Ok(Json(serde_json::json!({ "status": "ready" })))
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

async fn not_found() -> ApiError {
    ApiError::NotFound
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
    upstreams: upstream::Upstreams,
}

impl Idp {
    /// Builds the IdP from a validated configuration, a store and its signing keys.
    pub fn new(config: IdpConfig, store: AnyStore, keys: KeySet) -> Result<Self, IdpError> {
        // A key set that cannot publish itself fails here, before any port is bound.
        keys.public_jwks()?;
        // So does an upstream whose TLS roots cannot be read.
        let upstreams = upstream::Upstreams::new(&config.upstreams, &config.base_dir)
            .map_err(IdpError::Upstream)?;
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
        // The console is a client of the IdP itself: public, PKCE, one redirect URI.
        let mut clients = config.clients.clone();
        clients.push(ClientConfig::public(
            CONSOLE_CLIENT_ID,
            &[Grant::AuthorizationCode],
            &[&format!("{console_url}/console/callback")],
        ));
        let sessions = Arc::new(Issuer::new(
            store.clone(),
            keys.clone(),
            &issuer,
            &config.tokens,
        )?);
        let state = AppState(Arc::new(Shared {
            issuer: sessions,
            issuer_name: issuer,
            keys,
            credentials: Credentials::new(&config.clients, hasher.clone()),
            clients: Clients::new(&clients),
            users: Users::new(store.clone(), hasher),
            metrics: Metrics::new(),
            usage: UsageLog::new(),
            throttle: Throttle::new(store.clone(), &config.login),
            console: ConsoleSettings {
                role: config.admin.console_role.clone(),
                idle_timeout: config.admin.console_idle_timeout.as_secs(),
                url: console_url,
            },
            activity: Activity::default(),
            upstreams,
            store,
            admin_token_digest: sha256(config.admin.token.as_bytes()),
            request_timeout: config.server.request_timeout,
        }));
        Ok(BoundIdp {
            state,
            config,
            public,
            admin,
        })
    }
}

/// An IdP with its listeners bound.
pub struct BoundIdp {
    state: AppState,
    config: IdpConfig,
    public: TcpListener,
    admin: TcpListener,
}

impl BoundIdp {
    pub fn public_addr(&self) -> SocketAddr {
        self.public
            .local_addr()
            .unwrap_or(self.config.server.listen)
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.local_addr().unwrap_or(self.config.admin.listen)
    }

    /// The admin console's URL (`/console/` on the admin listener).
    pub fn console_url(&self) -> String {
        format!("{}/console/", self.state.console.url)
    }

    /// The issuer URL: `iss` of every token, base of every OpenID Connect endpoint.
    pub fn issuer(&self) -> &str {
        &self.state.issuer_name
    }

    fn router(&self, listener: &'static str, routes: Router<AppState>) -> Router {
        routes
            .route("/healthz", get(healthz))
            .route("/metrics", get(metrics))
            .fallback(not_found)
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
            .layer(middleware::from_fn_with_state(
                (self.state.clone(), listener),
                observe,
            ))
            .with_state(self.state.clone())
    }

    /// Serves until `shutdown`, then drains connections and writes pending last-use reports.
    pub async fn serve(self, shutdown: CancellationToken) {
        let idp = self;
        let public_app = idp.router(
            "public",
            oauth::routes()
                .merge(authorize::routes())
                .merge(oidc::routes())
                .merge(federation::routes()),
        );
        let admin_app = idp.router(
            "admin",
            admin::routes(idp.state.clone())
                .merge(console::routes())
                .merge(federation::admin_routes(idp.state.clone()))
                .route("/readyz", get(readyz)),
        );
        let s = &idp.config.server;
        let limits =
            tokengate_server::Limits::new(s.max_connections, s.header_timeout, s.drain_timeout);
        let state = idp.state.clone();
        // Seed users before the first request is served (connections wait in the backlog
        // meanwhile), so a seed user can sign in as soon as the IdP answers; with the store
        // down, keep trying while serving.
        let seeds = &idp.config.users;
        if let Err(e) = idp.state.users.seed(seeds).await {
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
        let renewal = RenewalTask::new(
            idp.state.store.clone(),
            idp.state.issuer.clone(),
            &idp.state.metrics,
        );
        let renewal = tokio::spawn(
            renewal
                .run(shutdown.clone())
                .instrument(tracing::info_span!("renewal")),
        );
        tokio::join!(
            serve(idp.public, public_app, limits, shutdown.clone()),
            serve(idp.admin, admin_app, limits, shutdown.clone()),
            idp.state.users.keep_seeding(seeds, &shutdown),
        );
        let _ = flusher.await;
        let _ = renewal.await;
        if let Err(e) = idp.state.usage.flush(&idp.state.store).await {
            tracing::warn!(error = %e, pending = idp.state.usage.len(), "last-use reports lost at shutdown");
        }
    }
}
