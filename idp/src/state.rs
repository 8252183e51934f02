//! What every handler shares: the store, the session issuer, keys, clients, users, metrics and
//! the settings read on each request, with the checks and answers several handlers need
//! (credentials behind the throttle, client authentication, issuing a user's session).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use aws_lc_rs::digest::{SHA256, digest};
use axum::extract::FromRef;
use http::HeaderMap;
use subtle::ConstantTimeEq;
use tokengate_store::{AnyStore, ReferenceToken, StoreError, UsageLog};

use crate::access::AccessLog;
use crate::clients::{Client, Clients};
use crate::config::{CONSOLE_CLIENT_ID, ClientConfig, Grant, IdpConfig};
use crate::credentials::{Credentials, Kind};
use crate::error::ApiError;
use crate::extract::{self, FormBody};
use crate::keys::{KeyError, KeySet};
use crate::metrics::{Activity, GrantLabels, Metrics};
use crate::password::Hasher;
use crate::sessions::{IssueError, Issued, Issuer, NewSession};
use crate::throttle::Throttle;
use crate::upstreams::Upstreams;
use crate::users::Users;

/// The console's settings, from `[admin]`.
#[derive(Clone, Debug)]
pub struct ConsoleSettings {
    /// The role a user needs.
    pub role: String,
    /// Seconds without a page load that end a console session.
    pub idle_timeout: u64,
    /// The admin listener's URL, without the trailing slash.
    pub url: String,
}

impl ConsoleSettings {
    /// Where the IdP sends the console's sign-ins back to.
    pub fn redirect_uri(&self) -> String {
        format!("{}/console/callback", self.url)
    }

    /// Whether the console's cookies get `Secure`.
    pub fn secure(&self) -> bool {
        self.url.starts_with("https://")
    }
}

/// What every handler shares: one snapshot of the state in force, taken per request from
/// [`Live`], so a request runs to its end with the configuration it started with.
#[derive(Clone, Debug)]
pub struct AppState(Arc<Shared>);

/// The state in force, swapped whole by a reload: one atomic load per request.
#[derive(Clone, Debug)]
pub struct Live(Arc<ArcSwap<Shared>>);

impl Live {
    /// Wraps the first state; a reload swaps in the next with [`Live::store`].
    pub fn new(state: AppState) -> Self {
        Live(Arc::new(ArcSwap::new(state.0)))
    }

    /// The state in force now.
    pub fn load(&self) -> AppState {
        AppState(self.0.load_full())
    }

    /// Puts `state` in force; requests already running keep the one they took.
    pub fn store(&self, state: AppState) {
        self.0.store(state.0);
    }
}

impl FromRef<Live> for AppState {
    fn from_ref(live: &Live) -> AppState {
        live.load()
    }
}

/// What lasts as long as the process, whatever a reload changes: the store and what counts or
/// remembers (metrics, last-use reports, users' seeding), and what the bound listeners fixed
/// (the issuer URL, the console's URL).
#[derive(Clone, Debug)]
pub struct Lasting {
    /// The token store; a reload never reconnects it.
    pub store: AnyStore,
    /// The user directory, kept so seeding carries on across reloads.
    pub users: Arc<Users>,
    /// The process's metrics; counts survive reloads.
    pub metrics: Arc<Metrics>,
    /// Last-use reports from `/auth/verify`, flushed to the store every second.
    pub usage: Arc<UsageLog>,
    /// Samples of the totals, taken with the usage flush, for the console's rates.
    pub activity: Arc<Activity>,
    /// The access log, when `[log] access = true`.
    pub access: Option<Arc<AccessLog>>,
    /// Wakes the back-channel logout sender when something was queued.
    pub outbox: Arc<tokio::sync::Notify>,
    hasher: Hasher,
    issuer_name: String,
    console_url: String,
}

impl Lasting {
    /// `issuer` is the IdP's issuer URL, `console_url` the admin listener's URL (the console
    /// registers itself there as a client).
    pub fn new(store: AnyStore, hasher: Hasher, issuer: String, console_url: String) -> Self {
        Lasting {
            users: Arc::new(Users::new(store.clone(), hasher.clone())),
            metrics: Arc::new(Metrics::new()),
            usage: Arc::new(UsageLog::new()),
            activity: Arc::new(Activity::default()),
            access: None,
            outbox: Arc::default(),
            store,
            hasher,
            issuer_name: issuer,
            console_url,
        }
    }
}

/// The state behind one [`AppState`]: built from one configuration plus [`Lasting`].
#[derive(Debug)]
pub struct Shared {
    /// The token store, shared with [`Lasting`].
    pub store: AnyStore,
    /// Creates sessions and signs their value tokens with `keys`.
    pub issuer: Arc<Issuer>,
    /// The issuer URL (`iss`), without a trailing slash.
    pub issuer_name: String,
    /// The signing keys and the JWKS they publish.
    pub keys: Arc<KeySet>,
    /// Secret checks of confidential clients (from `[[clients]]`).
    pub credentials: Credentials,
    /// Registered clients, with the console's own client added.
    pub clients: Clients,
    /// The user directory, shared with [`Lasting`].
    pub users: Arc<Users>,
    /// The process's metrics, shared with [`Lasting`].
    pub metrics: Arc<Metrics>,
    /// Pending last-use reports, shared with [`Lasting`].
    pub usage: Arc<UsageLog>,
    /// The login throttle, with `[login]`'s limits.
    pub throttle: Throttle,
    /// The console's settings, from `[admin]`.
    pub console: ConsoleSettings,
    /// Recent samples of the metrics the console shows as rates.
    pub activity: Arc<Activity>,
    /// Upstream providers for federation; discovery results survive only until a reload.
    pub upstreams: Upstreams,
    /// The access log, when `[log] access = true`.
    pub access: Option<Arc<AccessLog>>,
    /// Wakes the back-channel logout sender, shared with [`Lasting`].
    pub outbox: Arc<tokio::sync::Notify>,
    /// Roles whose holders must sign in with a second factor (`[mfa] required_for_roles`).
    pub mfa_roles: Vec<String>,
    /// The relying party of passkeys (`[webauthn]`); `None`: passkeys are off.
    pub webauthn: Option<crate::webauthn::RelyingParty>,
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
    /// The state `config` describes, around what lasts: built whole at the start and by every
    /// reload.
    pub fn new(
        config: &IdpConfig,
        lasting: &Lasting,
        keys: Arc<KeySet>,
        upstreams: Upstreams,
    ) -> Result<Self, KeyError> {
        let Lasting {
            store,
            users,
            metrics,
            usage,
            activity,
            access,
            outbox,
            hasher,
            issuer_name,
            console_url,
        } = lasting.clone();
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
            &issuer_name,
            &config.tokens,
        )?);
        Ok(AppState(Arc::new(Shared {
            issuer: sessions,
            issuer_name,
            keys,
            credentials: Credentials::new(&config.clients, hasher),
            clients: Clients::new(&clients),
            users,
            metrics,
            usage,
            throttle: Throttle::new(store.clone(), &config.login),
            console: ConsoleSettings {
                role: config.admin.console_role.clone(),
                idle_timeout: config.admin.console_idle_timeout.as_secs(),
                url: console_url,
            },
            activity,
            upstreams,
            access,
            outbox,
            mfa_roles: config.mfa.required_for_roles.clone(),
            webauthn: config
                .webauthn
                .as_ref()
                .map(|w| crate::webauthn::RelyingParty::new(&w.rp_id, &w.origins)),
            store,
            admin_token_digest: sha256(config.admin.token.as_bytes()),
            request_timeout: config.server.request_timeout,
        })))
    }

    /// Whether someone holding `roles` signing in to `client` must use a second factor.
    pub fn mfa_required(&self, roles: &[String], client: &crate::clients::Client) -> bool {
        client.require_mfa || roles.iter().any(|r| self.mfa_roles.contains(r))
    }

    /// How long a request may take before it is answered `503`.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// Whether cookies get `Secure`: the IdP is reached over HTTPS (its issuer URL says so).
    pub fn secure_cookies(&self) -> bool {
        self.issuer_name.starts_with("https://")
    }

    /// Whether `token` is the admin token. Both sides are hashed first, so the comparison takes
    /// the same time whatever the length or content of the guess.
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
        // A right password of a user with a second factor is half a sign-in: the name's
        // failures are cleared only once the code is right too (`second_factor::check_code`),
        // so that guessing codes with a known password still ends in a lockout.
        let (roles, half) = match kind {
            Kind::User => self
                .users
                .check_password(name, secret)
                .await
                .map_err(|e| self.store_error(e))?
                .map_or((None, false), |user| {
                    let half = user.otp_secret.is_some();
                    (Some(user.roles), half)
                }),
            Kind::Client => (self.credentials.check(name, secret).await, false),
        };
        if roles.is_some() {
            if !half {
                self.throttle
                    .succeeded(&key)
                    .await
                    .map_err(|e| self.store_error(e))?;
            }
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
                tracing::info!(client_id = ?tokengate_server::Outside(&id), "client authentication failed");
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

    /// Logs an issuing failure and maps it: a store error as [`AppState::store_error`], a
    /// signing failure as `500`.
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
