//! Browser sessions: the gateway as a confidential client of the IdP. It signs browsers in
//! (authorization code flow with PKCE and `state`), keeps the reference token in an HttpOnly
//! cookie, and answers its own paths under `/.tokengate/`:
//!
//! * `GET /.tokengate/login?rd=PATH`: starts a sign-in, returning to `PATH` (on this gateway only);
//! * `GET /.tokengate/callback`: exchanges the code over the back channel, sets the cookie;
//! * `POST /.tokengate/logout`: revokes the session at the IdP, clears the cookie, and goes
//!   through the IdP's logout;
//! * `GET /.tokengate/session`: who is signed in.
//!
//! The cookie holds a reference token, so a browser session is an ordinary session: the same
//! cache, last use, forced logout and role changes. Cookie-authenticated unsafe requests must
//! come from an allowed origin (CSRF).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::digest::{SHA256, digest};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use tokengate_store::{ReferenceToken, SessionRead, now_unix};
use tokio_util::sync::CancellationToken;

use crate::cache::{Identity, TokenCache};
use crate::config::{BrowserConfig, origin};
use crate::cors::Cors;
use crate::headers;
use crate::login::{LoginState, Sealer, safe_rd};
use crate::reject::{Body, Reject, json, text};
use tokengate_server::cookies::{self, SameSite};

/// Paths under this prefix are the gateway's own when `[browser]` is configured.
pub const PREFIX: &str = "/.tokengate/";
const SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");
const SEC_FETCH_MODE: HeaderName = HeaderName::from_static("sec-fetch-mode");
/// Largest answer read from the IdP.
const MAX_IDP_BODY: usize = 64 * 1024;
/// How long a `state` is remembered as used (at least the longest `login_timeout` in use).
const USED_STATES: u64 = 100_000;

/// The IdP's endpoints, from its discovery document.
#[derive(Debug)]
struct Endpoints {
    authorization: String,
    token: String,
    revocation: String,
    end_session: String,
}

/// How a request on a `browser` route proved who it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// An `Authorization` header, which a browser route takes first.
    Bearer,
    /// The session cookie: unsafe methods must then come from an allowed origin.
    Cookie,
}

/// What authenticating a request on a `browser` route comes to.
pub enum Admission {
    /// Signed in (by bearer token or cookie, origin checked for the cookie).
    Session(Arc<Identity>),
    /// A navigation without a session: the redirect to sign in.
    SignIn(Response<Body>),
}

/// Browser sessions for `browser = true` routes: the session cookie, sign-in at the IdP, the
/// callback, logout and the origin check. Built from `[browser]`, replaced whole on reload.
pub struct Browser {
    /// The session cookie's name.
    pub cookie: String,
    /// The sign-in state cookie (`{cookie}-login`) and the ID token cookie (`{cookie}-id`).
    login_cookie: String,
    id_cookie: String,
    secure: bool,
    issuer: String,
    client_id: String,
    client_secret: String,
    public_url: String,
    callback: String,
    allowed_origins: Vec<String>,
    login_timeout: Duration,
    sealer: Sealer,
    /// `state` values already redeemed here: a replayed callback stops before the IdP (which
    /// would end the session on a code's second use).
    used: moka::sync::Cache<String, ()>,
    endpoints: RwLock<Option<Arc<Endpoints>>>,
    http: Client<HttpConnector, Full<Bytes>>,
}

impl Browser {
    /// `tls`: the gateway serves HTTPS (cookies are `Secure`).
    pub fn new(config: &BrowserConfig, tls: bool) -> Self {
        let cookie = config.cookie_name(tls);
        let login_cookie = format!("{cookie}-login");
        let id_cookie = format!("{cookie}-id");
        let secret = config.client_secret.clone().unwrap_or_default();
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        Browser {
            cookie,
            login_cookie,
            id_cookie,
            secure: config.secure(tls),
            issuer: config.issuer.trim_end_matches('/').to_owned(),
            client_id: config.client_id.clone(),
            sealer: Sealer::new(&secret),
            client_secret: secret,
            public_url: config.public_url().to_owned(),
            callback: format!("{}/.tokengate/callback", config.public_url()),
            allowed_origins: config.allowed_origins(),
            login_timeout: config.login_timeout,
            used: moka::sync::Cache::builder()
                .max_capacity(USED_STATES)
                .time_to_live(config.login_timeout + Duration::from_secs(60))
                .build(),
            endpoints: RwLock::new(None),
            http: Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector),
        }
    }

    /// The gateway's own cookies, which never reach a backend.
    pub fn own_cookies(&self) -> [&str; 3] {
        [&self.cookie, &self.login_cookie, &self.id_cookie]
    }

    /// Whether the IdP's endpoints are known (discovery succeeded).
    pub fn ready(&self) -> bool {
        self.endpoints().is_some()
    }

    fn endpoints(&self) -> Option<Arc<Endpoints>> {
        self.endpoints
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A request on a `browser` route: the session behind its bearer header or, without one,
    /// its one session cookie; a cookie-authenticated unsafe request must come from an allowed
    /// origin (CSRF): one of `allowed_origins`, or one the route's `cors` lets send
    /// credentials (what CORS allows, CSRF does not refuse). A navigation without a usable
    /// session is sent to sign in.
    pub async fn authenticate<B>(
        &self,
        req: &Request<B>,
        tokens: &TokenCache,
        cors: Option<&Cors>,
    ) -> Result<Admission, Reject> {
        match self.identify(req, tokens).await {
            Ok((identity, via)) => {
                if via == Via::Cookie {
                    match self.check_origin(req.method(), req.headers()) {
                        Err(Reject::CrossSite)
                            if cors.is_some_and(|c| c.trusts_credentialed(req.headers()))
                                && !cross_site(req.headers()) => {}
                        checked => checked?,
                    }
                }
                Ok(Admission::Session(identity))
            }
            // Two session cookies would only come back after signing in: no redirect then.
            Err(Reject::MissingToken | Reject::InvalidToken)
                if is_navigation(req) && self.session_cookie(req.headers()).is_ok() =>
            {
                Ok(Admission::SignIn(self.sign_in(req)))
            }
            Err(reject) => Err(reject),
        }
    }

    /// The session behind the request's one bearer header, else its one session cookie.
    pub async fn identify<B>(
        &self,
        req: &Request<B>,
        tokens: &TokenCache,
    ) -> Result<(Arc<Identity>, Via), Reject> {
        if let Some(value) = headers::authorization(req.headers())? {
            let identity = tokens.authenticate(value.as_bytes()).await?;
            return Ok((identity, Via::Bearer));
        }
        match self.session_cookie(req.headers())? {
            None => Err(Reject::MissingToken),
            Some(token) => Ok((tokens.authenticate_token(token).await?, Via::Cookie)),
        }
    }

    /// The session token in the request's cookie: `Ok(None)` when there is none, an error when
    /// there are several.
    pub fn session_cookie<'r>(&self, headers: &'r HeaderMap) -> Result<Option<&'r str>, Reject> {
        match cookies::find(headers, &self.cookie) {
            cookies::Found::None => Ok(None),
            cookies::Found::One(token) => Ok(Some(token)),
            cookies::Found::Many => Err(Reject::InvalidToken),
        }
    }

    /// CSRF defence for a cookie-authenticated request: a safe method, or an unsafe one from
    /// an allowed origin (`Origin`, else `Referer`); `Sec-Fetch-Site: cross-site` never passes.
    pub fn check_origin(&self, method: &Method, headers: &HeaderMap) -> Result<(), Reject> {
        if matches!(
            *method,
            Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
        ) {
            return Ok(());
        }
        if cross_site(headers) {
            return Err(Reject::CrossSite);
        }
        let one = |name: HeaderName| {
            let mut values = headers.get_all(name).iter();
            match (values.next(), values.next()) {
                (Some(v), None) => v.to_str().ok(),
                _ => None,
            }
        };
        let from = match one(header::ORIGIN) {
            Some(o) => Some(o.to_ascii_lowercase()),
            None => one(header::REFERER).and_then(origin),
        };
        match from {
            Some(o) if self.allowed_origins.contains(&o) => Ok(()),
            _ => Err(Reject::CrossSite),
        }
    }

    /// Answers a request for one of the gateway's own paths. `identity` is the request's session
    /// (cookie or bearer), for the paths that need it.
    pub async fn answer<B>(
        &self,
        req: &Request<B>,
        tokens: &TokenCache,
        identity: Result<Arc<Identity>, Reject>,
    ) -> Result<Response<Body>, Reject> {
        let path = &req.uri().path()[PREFIX.len() - 1..];
        match (req.method(), path) {
            (&Method::GET, "/login") => self.login(req),
            (&Method::GET, "/callback") => self.callback(req, tokens).await,
            (&Method::POST, "/logout") => {
                self.check_origin(req.method(), req.headers())?;
                self.logout(req, tokens).await
            }
            (&Method::GET, "/session") => self.session(tokens, &*identity?).await,
            _ => Err(Reject::NoRoute),
        }
    }

    /// `302` to sign in, returning to where the browser wanted to go.
    pub fn sign_in<B>(&self, req: &Request<B>) -> Response<Body> {
        let rd = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let query = serde_urlencoded::to_string([("rd", rd)]).unwrap_or_default();
        redirect(StatusCode::FOUND, &format!("{PREFIX}login?{query}"))
    }

    fn login<B>(&self, req: &Request<B>) -> Result<Response<Body>, Reject> {
        let query = req.uri().query().unwrap_or("");
        let params: Vec<(String, String)> =
            serde_urlencoded::from_str(query).map_err(|_| Reject::BadSignIn)?;
        let rd = params
            .iter()
            .find(|(k, _)| k == "rd")
            .map_or("/", |(_, v)| v.as_str());
        let endpoints = self.endpoints().ok_or(Reject::Unavailable)?;
        let state = LoginState {
            state: ReferenceToken::generate().expose().to_owned(),
            verifier: ReferenceToken::generate().expose().to_owned(),
            rd: safe_rd(rd).to_owned(),
            issued_at: now_unix(),
        };
        let challenge = URL_SAFE_NO_PAD.encode(digest(&SHA256, state.verifier.as_bytes()));
        let sealed = self
            .sealer
            .seal(&state, &self.login_cookie)
            .ok_or(Reject::Unavailable)?;
        let query = serde_urlencoded::to_string([
            ("response_type", "code"),
            ("client_id", &self.client_id),
            ("redirect_uri", &self.callback),
            ("scope", "openid"),
            ("state", &state.state),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ])
        .map_err(|_| Reject::BadSignIn)?;
        let mut response = redirect(
            StatusCode::FOUND,
            &format!("{}?{query}", endpoints.authorization),
        );
        self.set_cookie(
            &mut response,
            &self.login_cookie,
            &sealed,
            self.login_timeout.as_secs(),
        );
        Ok(response)
    }

    /// `/.tokengate/callback`: the IdP sent the browser back with a code.
    async fn callback<B>(
        &self,
        req: &Request<B>,
        tokens: &TokenCache,
    ) -> Result<Response<Body>, Reject> {
        let (code, state) = self.verify_state(req)?;
        let issued = self.exchange_code(&code, &state).await?;
        self.signed_in(issued, &state, tokens).await
    }

    /// The callback's code, once its `state` matches the sealed sign-in state of this browser,
    /// fresh and used once.
    fn verify_state<B>(&self, req: &Request<B>) -> Result<(String, LoginState), Reject> {
        let params: Vec<(String, String)> =
            serde_urlencoded::from_str(req.uri().query().unwrap_or(""))
                .map_err(|_| Reject::BadSignIn)?;
        let param = |name: &str| {
            let mut found = params.iter().filter(|(k, _)| k == name);
            match (found.next(), found.next()) {
                (Some((_, v)), None) => Some(v.as_str()),
                _ => None,
            }
        };
        if let Some(error) = param("error") {
            tracing::info!(error = %error.chars().take(64).collect::<String>(), "sign-in not completed at the IdP");
            return Err(Reject::BadSignIn);
        }
        let (Some(code), Some(state_param)) = (param("code"), param("state")) else {
            return Err(Reject::BadSignIn);
        };
        let cookies::Found::One(sealed) = cookies::find(req.headers(), &self.login_cookie) else {
            tracing::info!("sign-in callback without exactly one state cookie");
            return Err(Reject::BadSignIn);
        };
        let state = self
            .sealer
            .open(
                sealed,
                &self.login_cookie,
                now_unix(),
                self.login_timeout.as_secs(),
            )
            .map_err(|e| {
                tracing::info!(error = %e, "sign-in state refused");
                Reject::BadSignIn
            })?;
        if verify_slices_are_equal(state.state.as_bytes(), state_param.as_bytes()).is_err() {
            tracing::info!("sign-in state does not match the callback's");
            return Err(Reject::BadSignIn);
        }
        if !self
            .used
            .entry(state.state.clone())
            .or_insert(())
            .is_fresh()
        {
            tracing::info!("sign-in callback replayed");
            return Err(Reject::BadSignIn);
        }
        Ok((code.to_owned(), state))
    }

    /// The code exchanged at the IdP's token endpoint, as the confidential client, with the
    /// sign-in's PKCE verifier.
    async fn exchange_code(&self, code: &str, state: &LoginState) -> Result<TokenResponse, Reject> {
        let endpoints = self.endpoints().ok_or(Reject::Unavailable)?;
        let form = serde_urlencoded::to_string([
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", &self.callback),
            ("code_verifier", &state.verifier),
            ("client_id", &self.client_id),
            ("client_secret", &self.client_secret),
        ])
        .map_err(|_| Reject::BadSignIn)?;
        let (status, body) = self.post(&endpoints.token, form).await?;
        if status != StatusCode::OK {
            let error = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or_default();
            tracing::warn!(%status, error = %error, "the IdP refused the authorization code");
            return Err(if status.is_server_error() {
                Reject::Unavailable
            } else {
                Reject::BadSignIn
            });
        }
        serde_json::from_slice(&body).map_err(|_| Reject::Unavailable)
    }

    /// The session cookie set (and the ID token kept for logout), back to where the browser
    /// wanted to go.
    async fn signed_in(
        &self,
        tokens_body: TokenResponse,
        state: &LoginState,
        tokens: &TokenCache,
    ) -> Result<Response<Body>, Reject> {
        let identity = tokens
            .authenticate_token(&tokens_body.access_token)
            .await
            .map_err(Reject::from)?;
        // The cookie lives as long as the session can: its absolute end, not the idle timeout
        // (use slides the idle end on).
        let max_age = match tokens.store().lookup(&identity.session).await {
            Ok(Some(session)) => session.max_expires_at.saturating_sub(now_unix()),
            _ => tokens_body.expires_in,
        };
        tracing::info!(session = %identity.session, "browser signed in");
        let mut response = redirect(StatusCode::FOUND, &state.rd);
        self.set_cookie(
            &mut response,
            &self.cookie,
            &tokens_body.access_token,
            max_age,
        );
        if let Some(id_token) = tokens_body.id_token.as_deref().filter(|t| {
            // A compact JWT, small enough for a cookie, and nothing that could break it.
            t.len() <= 3000
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        }) {
            self.set_cookie(&mut response, &self.id_cookie, id_token, max_age);
        }
        self.set_cookie(&mut response, &self.login_cookie, "", 0);
        Ok(response)
    }

    async fn logout<B>(
        &self,
        req: &Request<B>,
        tokens: &TokenCache,
    ) -> Result<Response<Body>, Reject> {
        let endpoints = self.endpoints().ok_or(Reject::Unavailable)?;
        if let Ok(Some(token)) = self.session_cookie(req.headers())
            && let Ok(token) = ReferenceToken::parse(token)
        {
            let form = serde_urlencoded::to_string([
                ("token", token.expose()),
                ("client_id", &self.client_id),
                ("client_secret", &self.client_secret),
            ])
            .map_err(|_| Reject::BadSignIn)?;
            let id = token.session_id();
            match self.post(&endpoints.revocation, form).await {
                Ok((StatusCode::OK, _)) => tracing::info!(session = %id, "browser signed out"),
                Ok((status, _)) => {
                    tracing::warn!(session = %id, %status, "the IdP refused to revoke a browser session")
                }
                Err(_) => {
                    tracing::warn!(session = %id, "revoking a browser session failed: IdP unreachable")
                }
            }
            tokens.invalidate(&[id]);
        }
        let mut params = vec![
            ("client_id", self.client_id.clone()),
            ("post_logout_redirect_uri", format!("{}/", self.public_url)),
        ];
        if let cookies::Found::One(hint) = cookies::find(req.headers(), &self.id_cookie) {
            params.push(("id_token_hint", hint.to_owned()));
        }
        let query = serde_urlencoded::to_string(&params).map_err(|_| Reject::BadSignIn)?;
        let mut response = redirect(
            StatusCode::SEE_OTHER,
            &format!("{}?{query}", endpoints.end_session),
        );
        self.set_cookie(&mut response, &self.cookie, "", 0);
        self.set_cookie(&mut response, &self.id_cookie, "", 0);
        Ok(response)
    }

    async fn session(
        &self,
        tokens: &TokenCache,
        identity: &Identity,
    ) -> Result<Response<Body>, Reject> {
        let session = tokens
            .store()
            .lookup(&identity.session)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "cannot read a session now");
                Reject::Unavailable
            })?
            .ok_or(Reject::InvalidToken)?;
        let body = serde_json::json!({
            "subject": session.subject,
            "roles": identity.roles,
            "expires_at": session.expires_at(),
        });
        let mut response = json(StatusCode::OK, body.to_string());
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Ok(response)
    }

    fn set_cookie(&self, response: &mut Response<Body>, name: &str, value: &str, max_age: u64) {
        let cookie = cookies::set(name, value, SameSite::Lax, self.secure, Some(max_age));
        if let Ok(cookie) = HeaderValue::from_str(&cookie) {
            response.headers_mut().append(header::SET_COOKIE, cookie);
        }
    }

    /// A form POST to the IdP; its status and (bounded) body.
    async fn post(&self, url: &str, form: String) -> Result<(StatusCode, Bytes), Reject> {
        let req = Request::post(url)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json")
            .body(Full::new(Bytes::from(form)))
            .map_err(|_| Reject::Unavailable)?;
        self.exchange(req).await
    }

    async fn exchange(&self, req: Request<Full<Bytes>>) -> Result<(StatusCode, Bytes), Reject> {
        let unreachable = |e: &dyn std::fmt::Display| {
            tracing::warn!(error = %e, "IdP request failed");
            Reject::Unavailable
        };
        let response = tokio::time::timeout(Duration::from_secs(10), self.http.request(req))
            .await
            .map_err(|e| unreachable(&e))?
            .map_err(|e| unreachable(&e))?;
        let status = response.status();
        let body = http_body_util::Limited::new(response.into_body(), MAX_IDP_BODY)
            .collect()
            .await
            .map_err(|e| unreachable(&*e))?
            .to_bytes();
        Ok((status, body))
    }

    /// Reads the IdP's discovery document once.
    async fn discover(&self) -> Result<Endpoints, String> {
        let url = format!("{}/.well-known/openid-configuration", self.issuer);
        let req = Request::get(&url)
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let (status, body) = self
            .exchange(req)
            .await
            .map_err(|_| "unreachable".to_owned())?;
        if status != StatusCode::OK {
            return Err(format!("answered {status}"));
        }
        let doc: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        if doc["issuer"].as_str().map(|i| i.trim_end_matches('/')) != Some(&self.issuer) {
            return Err("the document names another issuer".into());
        }
        let endpoint = |name: &str| {
            doc[name]
                .as_str()
                .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
                .map(str::to_owned)
                .ok_or_else(|| format!("no {name}"))
        };
        Ok(Endpoints {
            authorization: endpoint("authorization_endpoint")?,
            token: endpoint("token_endpoint")?,
            revocation: endpoint("revocation_endpoint")?,
            end_session: endpoint("end_session_endpoint")?,
        })
    }
}

#[derive(serde::Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: u64,
    #[serde(default)]
    id_token: Option<String>,
}

/// `Sec-Fetch-Site: cross-site`: the browser says the request comes from another site (a
/// `SameSite=Lax` session cookie would not even be sent with it, except on a navigation).
fn cross_site(headers: &HeaderMap) -> bool {
    headers
        .get(SEC_FETCH_SITE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"))
}

/// A top-level navigation of a browser (it can follow a redirect to a sign-in page): `GET` or
/// `HEAD` asking for HTML, and `Sec-Fetch-Mode: navigate` where the browser sends it.
pub fn is_navigation<B>(req: &Request<B>) -> bool {
    matches!(*req.method(), Method::GET | Method::HEAD)
        && req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/html"))
        && req
            .headers()
            .get(SEC_FETCH_MODE)
            .is_none_or(|v| v.as_bytes() == b"navigate")
}

fn redirect(status: StatusCode, location: &str) -> Response<Body> {
    let mut response = text(status, "text/plain; charset=utf-8", String::new());
    let h = response.headers_mut();
    if let Ok(location) = HeaderValue::from_str(location) {
        h.insert(header::LOCATION, location);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Finds the IdP's endpoints by discovery at start, retrying with backoff until it answers.
pub struct DiscoveryTask {
    /// Its endpoints are stored here once found.
    pub browser: Arc<Browser>,
}

impl DiscoveryTask {
    /// Returns once the endpoints are found or at `shutdown`; failures are logged, never fatal.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.browser.discover().await {
                Ok(endpoints) => {
                    tracing::info!(issuer = %self.browser.issuer, "IdP endpoints discovered");
                    *self
                        .browser
                        .endpoints
                        .write()
                        .unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(endpoints));
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, issuer = %self.browser.issuer, "IdP discovery failed; retrying");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}

#[cfg(test)]
mod tests;
