//! The admin console (`/console/` on the admin listener): pages for the people who end a stolen
//! session or lock an account, with the same actions as the admin API (through `admin`'s
//! functions, so both leave the same audit entries).
//!
//! Signing in: the console is a public client of the IdP itself (`tokengate-console`, PKCE
//! S256, redirect URI `{admin.public_url}/console/callback`). The code it gets back is redeemed
//! in process, with the same checks as `/oauth2/token`, and becomes a browser session in the
//! store issued to the console client: revocable, ended by a forced logout, idle after
//! `admin.console_idle_timeout`, and never a bearer token (its kind is refused everywhere a
//! bearer token is taken, and the IdP's single sign-on ignores sessions issued to a client).
//!
//! Every request re-reads the user and checks `admin.console_role`; every form posts a CSRF
//! token derived from the session cookie (which a page on another site can neither read nor
//! send: `HttpOnly`, `SameSite=Strict`, `Path=/console/`).

// A handler's error here is the page to show instead (`Result<Response, Response>`): as large as
// its success, and boxing it would buy nothing.
#![allow(clippy::result_large_err)]

use std::net::IpAddr;

use askama::Template;
use aws_lc_rs::digest::{SHA256, digest};
use axum::Router;
use axum::extract::{FromRequestParts, RawQuery, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use subtle::ConstantTimeEq;
use tokengate_store::{
    ReferenceToken, Session, SessionKind, StoreError, TokenStore, User, now_unix,
};

use crate::admin::{self, NewUser, UserPatch};
use crate::audit::{self, Actor};
use crate::config::CONSOLE_CLIENT_ID;
use crate::error::ApiError;
use crate::extract::{ClientAddr, FormBody};
use crate::oauth::authorize::{self, pkce_challenge};
use crate::pages;
use crate::sessions::NewSession;
use crate::state::AppState;
use tokengate_server::cookies::{self, SameSite};

/// The console session cookie: the reference token of the console's browser session.
pub const SESSION_COOKIE: &str = cookies::CONSOLE;
/// The state and PKCE verifier of a sign-in under way.
const LOGIN_COOKIE: &str = cookies::CONSOLE_LOGIN;
/// Where the console's cookies are sent, and only there.
const COOKIE_PATH: &str = "/console/";
/// How long a sign-in may take.
const LOGIN_TTL: u64 = 600;
/// Users per page.
const USERS_PAGE: usize = 25;
/// Audit entries per page.
const AUDIT_PAGE: usize = 50;
/// A gateway counts as active if it reported last use this recently.
const ACTIVE_GATEWAY_SECS: u64 = 300;

const CONSOLE_STYLE: &str = include_str!("../assets/console.css");

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/console", get(|| async { Redirect::to("/console/") }))
        .route("/console/", get(overview))
        .route("/console/assets/style.css", get(style))
        .route("/console/login", get(login))
        .route("/console/callback", get(callback))
        .route("/console/logout", post(logout))
        .route("/console/users", get(users).post(create_user))
        .route("/console/user", get(user).post(user_action))
        .route("/console/clients", get(clients))
        .route("/console/audit", get(audit_trail))
}

async fn style() -> Response {
    let css = [include_str!("../assets/style.css"), CONSOLE_STYLE].concat();
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        css,
    )
        .into_response()
}

/// What the layout shows of the person signed in.
pub struct Nav {
    pub admin: String,
    pub csrf: String,
}

#[derive(Template)]
#[template(path = "console/message.html")]
struct MessagePage<'a> {
    nav: Option<Nav>,
    title: &'a str,
    message: &'a str,
    link: Option<(&'a str, &'a str)>,
}

#[derive(Template)]
#[template(path = "console/overview.html")]
struct OverviewPage {
    nav: Option<Nav>,
    window: String,
    sign_ins: String,
    failed_sign_ins: String,
    totals: crate::metrics::Totals,
    gateways: Vec<(String, String)>,
    active_minutes: u64,
}

struct UserRow {
    username: String,
    link: String,
    roles: String,
    status: &'static str,
}

#[derive(Template)]
#[template(path = "console/users.html")]
struct UsersPage<'a> {
    nav: Option<Nav>,
    csrf: &'a str,
    prefix: &'a str,
    users: Vec<UserRow>,
    next: Option<String>,
    notice: Option<&'a str>,
    error: Option<&'a str>,
}

struct SessionRow {
    id: String,
    created: String,
    last_used: String,
    expires: String,
    client: String,
    method: String,
}

#[derive(Template)]
#[template(path = "console/user.html")]
struct UserPage<'a> {
    nav: Option<Nav>,
    csrf: &'a str,
    username: &'a str,
    status: &'static str,
    disabled: bool,
    upstream: Option<&'a str>,
    roles: String,
    sessions: Vec<SessionRow>,
    notice: Option<&'a str>,
    error: Option<&'a str>,
}

struct ClientRow {
    id: String,
    builtin: bool,
    kind: &'static str,
    grants: String,
    redirect_uris: Vec<String>,
}

#[derive(Template)]
#[template(path = "console/clients.html")]
struct ClientsPage {
    nav: Option<Nav>,
    clients: Vec<ClientRow>,
}

struct AuditRow {
    when: String,
    actor: String,
    action: String,
    target: String,
    address: String,
}

#[derive(Template)]
#[template(path = "console/audit.html")]
struct AuditPage {
    nav: Option<Nav>,
    entries: Vec<AuditRow>,
    next: Option<String>,
}

/// A page of the console: the security headers of every IdP page (no script, no framing, no
/// sniffing, no caching); forms post to the console only.
fn page(status: StatusCode, template: &impl Template) -> Response {
    pages::page(status, template, &[])
}

fn message(
    status: StatusCode,
    nav: Option<Nav>,
    title: &str,
    text: &str,
    link: Option<(&str, &str)>,
) -> Response {
    page(
        status,
        &MessagePage {
            nav,
            title,
            message: text,
            link,
        },
    )
}

/// A store's answer, or the page that says the store cannot be reached (the failure counted
/// and logged).
fn stored<T>(state: &AppState, answer: Result<T, StoreError>) -> Result<T, Response> {
    answer.map_err(|e| {
        let _ = state.store_error(e);
        unavailable()
    })
}

/// A page's query; what does not parse counts as no query at all.
fn query_of<T: serde::de::DeserializeOwned + Default>(query: Option<&str>) -> T {
    serde_urlencoded::from_str(query.unwrap_or("")).unwrap_or_default()
}

fn unavailable() -> Response {
    message(
        StatusCode::SERVICE_UNAVAILABLE,
        None,
        "Try again",
        "The token store cannot be reached right now. Please try again in a moment.",
        None,
    )
}

/// The CSRF token of the forms of a console session: derived from its cookie, so it needs no
/// state of its own and is worthless without the cookie.
fn csrf_of(token: &str) -> String {
    let d = digest(
        &SHA256,
        format!("tokengate-console-csrf:{token}").as_bytes(),
    );
    URL_SAFE_NO_PAD.encode(d.as_ref())
}

fn add_cookie(response: &mut Response, cookie: &str) {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

fn see_other(to: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(location) = HeaderValue::from_str(to) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Whether `user` may use the console.
fn holds_role(state: &AppState, user: &User) -> bool {
    !user.disabled && user.roles.iter().any(|r| *r == state.console.role)
}

fn refused(state: &AppState, username: &str) -> Response {
    let text = format!(
        "You are signed in as {username}, who does not hold the role {} that the console needs. Ask an administrator for it, or sign in as someone else.",
        state.console.role
    );
    message(
        StatusCode::FORBIDDEN,
        None,
        "Not an administrator",
        &text,
        Some(("/console/login?prompt=login", "Sign in as someone else")),
    )
}

/// Someone signed in to the console who holds its role, checked again on every request.
pub struct Admin {
    pub user: User,
    pub session: Session,
    csrf: String,
    address: Option<IpAddr>,
}

impl Admin {
    fn nav(&self) -> Option<Nav> {
        Some(Nav {
            admin: self.user.username.clone(),
            csrf: self.csrf.clone(),
        })
    }

    fn actor(&self) -> Actor {
        Actor::console(&self.user.username, self.address)
    }

    /// Whether the form carries this session's CSRF token (compared in constant time).
    fn sent_csrf(&self, form: &FormBody) -> bool {
        let sent = form.get("csrf").ok().flatten().unwrap_or("");
        bool::from(sent.as_bytes().ct_eq(self.csrf.as_bytes()))
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        state: &AppState,
    ) -> Result<Self, Response> {
        let address = parts.extensions.get::<ClientAddr>().and_then(|a| a.0);
        let signed_out = || {
            if parts.method == http::Method::GET {
                see_other("/console/login")
            } else {
                message(
                    StatusCode::FORBIDDEN,
                    None,
                    "Signed out",
                    "Your console session ended. Sign in again; nothing was changed.",
                    Some(("/console/login", "Sign in")),
                )
            }
        };
        let Some(token) = cookies::get(&parts.headers, SESSION_COOKIE) else {
            return Err(signed_out());
        };
        let found = stored(state, resolve(state, token).await)?;
        let Some((session, user)) = found else {
            return Err(signed_out());
        };
        if !holds_role(state, &user) {
            tracing::info!(subject = %user.username, "console request refused: role missing");
            return Err(refused(state, &user.username));
        }
        state.usage.record(&session.id, now_unix());
        Ok(Admin {
            csrf: csrf_of(token),
            user,
            session,
            address,
        })
    }
}

/// The console session behind a cookie, and its user.
async fn resolve(state: &AppState, token: &str) -> Result<Option<(Session, User)>, StoreError> {
    let Some(session) = state.issuer.resolve(token, SessionKind::Browser).await? else {
        return Ok(None);
    };
    if session.client_id.as_deref() != Some(CONSOLE_CLIENT_ID) {
        return Ok(None);
    }
    Ok(state
        .store
        .user(&session.subject)
        .await?
        .map(|user| (session, user)))
}

/// `GET /console/login`: off to the IdP's sign-in page, with a fresh state and PKCE verifier
/// kept in a short-lived cookie.
async fn login(State(state): State<AppState>, RawQuery(query): RawQuery) -> Response {
    let login_state = ReferenceToken::generate();
    let verifier = ReferenceToken::generate();
    let redirect_uri = state.console.redirect_uri();
    let challenge = pkce_challenge(verifier.expose());
    let mut params = vec![
        ("response_type", "code"),
        ("client_id", CONSOLE_CLIENT_ID),
        ("redirect_uri", redirect_uri.as_str()),
        ("state", login_state.expose()),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ];
    if query.as_deref() == Some("prompt=login") {
        params.push(("prompt", "login"));
    }
    let to = format!("{}/oauth2/authorize", state.issuer_name);
    let mut response = pages::redirect(&to, &params);
    let value = format!("{}.{}", login_state.expose(), verifier.expose());
    let cookie = cookies::set_at(
        LOGIN_COOKIE,
        &value,
        COOKIE_PATH,
        // Sent back on the redirect from the sign-in page, a navigation from another origin.
        SameSite::Lax,
        state.console.secure(),
        Some(LOGIN_TTL),
    );
    add_cookie(&mut response, &cookie);
    response
}

fn sign_in_failed(text: &str) -> Response {
    message(
        StatusCode::BAD_REQUEST,
        None,
        "Sign-in did not complete",
        text,
        Some(("/console/login", "Try again")),
    )
}

/// `GET /console/callback`: the code, redeemed in process, becomes a console session for a user
/// who holds the console's role.
async fn callback(
    State(state): State<AppState>,
    ClientAddr(address): ClientAddr,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, Response> {
    let Ok(params) = FormBody::from_query(query.as_deref()) else {
        return Err(sign_in_failed(
            "The answer from the sign-in page is malformed.",
        ));
    };
    let one = |name| params.get(name).ok().flatten();
    if one("error").is_some() {
        return Err(sign_in_failed("The sign-in page answered with an error."));
    }
    let (Some(code), Some(sent_state)) = (one("code"), one("state")) else {
        return Err(sign_in_failed(
            "The answer from the sign-in page is incomplete.",
        ));
    };
    let Some((expected_state, verifier)) =
        cookies::get(&headers, LOGIN_COOKIE).and_then(|c| c.split_once('.'))
    else {
        return Err(sign_in_failed(
            "This sign-in took too long or began in another browser.",
        ));
    };
    if !bool::from(sent_state.as_bytes().ct_eq(expected_state.as_bytes())) {
        return Err(sign_in_failed(
            "This sign-in took too long or began in another browser.",
        ));
    }
    let Some(client) = state.clients.get(CONSOLE_CLIENT_ID).cloned() else {
        return Err(sign_in_failed("The console is not registered."));
    };
    let token = ReferenceToken::generate();
    let redirect_uri = state.console.redirect_uri();
    let record =
        match authorize::redeem(&state, &client, code, &redirect_uri, Some(verifier), &token).await
        {
            Ok(record) => record,
            Err(ApiError::Unavailable | ApiError::Internal) => return Err(unavailable()),
            Err(_) => return Err(sign_in_failed("The sign-in code was refused.")),
        };
    let clear_login = cookies::clear_at(
        LOGIN_COOKIE,
        COOKIE_PATH,
        SameSite::Lax,
        state.console.secure(),
    );
    let user = stored(&state, state.store.user(&record.subject).await)?;
    let Some(user) = user.filter(|u| holds_role(&state, u)) else {
        tracing::info!(subject = %record.subject, "console sign-in refused: role missing");
        let mut response = refused(&state, &record.subject);
        add_cookie(&mut response, &clear_login);
        return Err(response);
    };
    let new = NewSession::browser(&user.username, Vec::new(), &record.method)
        .for_client(CONSOLE_CLIENT_ID)
        .idle_after(state.console.idle_timeout);
    let issued = state.issuer.issue_as(token, new).await.map_err(|e| {
        let _ = state.issue_error(e);
        unavailable()
    })?;
    if !stored(&state, state.users.admit(&issued.session).await)? {
        return Err(refused(&state, &user.username));
    }
    tracing::info!(subject = %user.username, session = %issued.session.id, "signed in to the console");
    let actor = Actor::console(&user.username, address);
    audit::record(&state, &actor, "console.sign-in", &user.username).await;
    let mut response = see_other("/console/");
    let cookie = cookies::set_at(
        SESSION_COOKIE,
        issued.token.expose(),
        COOKIE_PATH,
        SameSite::Strict,
        state.console.secure(),
        None,
    );
    add_cookie(&mut response, &cookie);
    add_cookie(&mut response, &clear_login);
    Ok(response)
}

/// `POST /console/logout`: ends the console session.
async fn logout(
    State(state): State<AppState>,
    admin: Admin,
    form: FormBody,
) -> Result<Response, Response> {
    if !admin.sent_csrf(&form) {
        return Ok(csrf_refused(&admin));
    }
    stored(&state, state.store.revoke(&admin.session.id).await)?;
    tracing::info!(subject = %admin.user.username, "signed out of the console");
    let mut response = message(
        StatusCode::OK,
        None,
        "Signed out",
        "You are signed out of the console.",
        Some(("/console/login", "Sign in again")),
    );
    let clear = cookies::clear_at(
        SESSION_COOKIE,
        COOKIE_PATH,
        SameSite::Strict,
        state.console.secure(),
    );
    add_cookie(&mut response, &clear);
    Ok(response)
}

fn csrf_refused(admin: &Admin) -> Response {
    tracing::info!(subject = %admin.user.username, "console form refused: CSRF token missing or wrong");
    message(
        StatusCode::FORBIDDEN,
        admin.nav(),
        "Form refused",
        "This form expired or did not come from the console. Nothing was changed; please try again.",
        Some(("/console/", "Back to the console")),
    )
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn format_time(unix: u64) -> String {
    let (days, secs) = ((unix / 86_400) as i64, unix % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// `GET /console/`: what is going on.
async fn overview(State(state): State<AppState>, admin: Admin) -> Result<Response, Response> {
    let now = now_unix();
    let since = now.saturating_sub(ACTIVE_GATEWAY_SECS);
    let reporters = stored(&state, state.store.reporters(since).await)?;
    let totals = state.metrics.totals();
    let (sign_ins, failed_sign_ins, window) = match state.activity.per_minute(totals) {
        Some((rates, over)) => (
            rates.sign_ins.to_string(),
            rates.failed_sign_ins.to_string(),
            format!("Rates measured over the last {} s.", over.as_secs()),
        ),
        None => (
            "–".to_owned(),
            "–".to_owned(),
            "Rates appear once this IdP has run for a few seconds.".to_owned(),
        ),
    };
    let gateways = reporters
        .into_iter()
        .map(|r| {
            let ago = now.saturating_sub(r.last_seen);
            (r.name, format!("{ago} s ago"))
        })
        .collect();
    Ok(page(
        StatusCode::OK,
        &OverviewPage {
            nav: admin.nav(),
            window,
            sign_ins,
            failed_sign_ins,
            totals,
            gateways,
            active_minutes: ACTIVE_GATEWAY_SECS / 60,
        },
    ))
}

fn user_link(username: &str, done: Option<&str>) -> String {
    let mut params = vec![("name", username)];
    if let Some(done) = done {
        params.push(("done", done));
    }
    format!(
        "/console/user?{}",
        serde_urlencoded::to_string(params).unwrap_or_default()
    )
}

/// What a finished action says, by its code in the redirect (never text from the request).
fn notice(done: Option<&str>) -> Option<&'static str> {
    Some(match done? {
        "created" => "User created.",
        "ended" => "The session was ended.",
        "ended-all" => "Every session of this user was ended.",
        "roles" => "Roles saved; live sessions have the new roles.",
        "password" => "Password set.",
        "disabled" => "User disabled; every session was ended.",
        "enabled" => "User enabled.",
        _ => return None,
    })
}

#[derive(serde::Deserialize, Default)]
struct UsersQuery {
    #[serde(default)]
    prefix: String,
    after: Option<String>,
}

/// `GET /console/users?prefix=&after=`: users by name, a page at a time.
async fn users(
    State(state): State<AppState>,
    admin: Admin,
    RawQuery(query): RawQuery,
) -> Result<Response, Response> {
    let query: UsersQuery = query_of(query.as_deref());
    users_page(&state, &admin, &query.prefix, query.after.as_deref(), None).await
}

async fn users_page(
    state: &AppState,
    admin: &Admin,
    prefix: &str,
    after: Option<&str>,
    error: Option<&str>,
) -> Result<Response, Response> {
    let long = |s: &str| s.len() > crate::config::MAX_SUBJECT_LEN;
    let (prefix, after) = if long(prefix) || after.is_some_and(long) {
        ("", None)
    } else {
        (prefix, after.filter(|a| !a.is_empty()))
    };
    let listed = stored(
        state,
        state.store.list_users(prefix, after, USERS_PAGE).await,
    )?;
    let users = listed
        .users
        .iter()
        .map(|u| UserRow {
            username: u.username.clone(),
            link: user_link(&u.username, None),
            roles: u.roles.join(" "),
            status: if u.disabled { "disabled" } else { "active" },
        })
        .collect();
    let next = listed.next.map(|next| {
        let q = serde_urlencoded::to_string([("prefix", prefix), ("after", next.as_str())]);
        format!("/console/users?{}", q.unwrap_or_default())
    });
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    Ok(page(
        status,
        &UsersPage {
            nav: admin.nav(),
            csrf: &admin.csrf,
            prefix,
            users,
            next,
            notice: None,
            error,
        },
    ))
}

/// Roles typed into a field: separated by spaces or commas.
fn roles_field(form: &FormBody) -> Vec<String> {
    form.get("roles")
        .ok()
        .flatten()
        .unwrap_or("")
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|r| !r.is_empty())
        .map(str::to_owned)
        .collect()
}

/// What an action's error says on a page.
fn error_text(e: &ApiError) -> &'static str {
    match e {
        ApiError::InvalidRequest(why) => why,
        ApiError::Conflict => "A user of that name exists already.",
        ApiError::NotFound => "Not found: it may have ended or been deleted meanwhile.",
        _ => "That did not work; please try again in a moment.",
    }
}

/// `POST /console/users`: a new user.
async fn create_user(
    State(state): State<AppState>,
    admin: Admin,
    form: FormBody,
) -> Result<Response, Response> {
    if !admin.sent_csrf(&form) {
        return Ok(csrf_refused(&admin));
    }
    let username = form.get("username").ok().flatten().unwrap_or("");
    let new = NewUser {
        username: username.to_owned(),
        password: form.get("password").ok().flatten().map(str::to_owned),
        roles: roles_field(&form),
        disabled: false,
    };
    match admin::create(&state, &admin.actor(), new).await {
        Ok(user) => Ok(see_other(&user_link(&user.username, Some("created")))),
        Err(ApiError::Unavailable) => Err(unavailable()),
        Err(e) => users_page(&state, &admin, "", None, Some(error_text(&e))).await,
    }
}

#[derive(serde::Deserialize, Default)]
struct UserQuery {
    #[serde(default)]
    name: String,
    done: Option<String>,
}

/// `GET /console/user?name=`: one user and their live sessions.
async fn user(
    State(state): State<AppState>,
    admin: Admin,
    RawQuery(query): RawQuery,
) -> Result<Response, Response> {
    let query: UserQuery = query_of(query.as_deref());
    user_page(
        &state,
        &admin,
        &query.name,
        notice(query.done.as_deref()),
        None,
    )
    .await
}

async fn user_page(
    state: &AppState,
    admin: &Admin,
    username: &str,
    notice: Option<&str>,
    error: Option<&str>,
) -> Result<Response, Response> {
    let found = match admin::subject(username) {
        Ok(name) => stored(state, state.store.user(name).await)?,
        Err(_) => None,
    };
    let Some(user) = found else {
        return Err(message(
            StatusCode::NOT_FOUND,
            admin.nav(),
            "No such user",
            "There is no user of that name.",
            Some(("/console/users", "All users")),
        ));
    };
    let mut sessions = stored(state, state.store.sessions(&user.username).await)?;
    sessions.sort_by_key(|s| std::cmp::Reverse(s.created_at));
    let rows = sessions
        .iter()
        .map(|s| SessionRow {
            id: s.id.to_string(),
            created: format_time(s.created_at),
            last_used: format_time(s.last_used_at),
            expires: format_time(s.expires_at()),
            client: match (&s.client_id, s.kind) {
                (Some(c), _) => c.clone(),
                (None, SessionKind::Browser) => "sign-in page (single sign-on)".to_owned(),
                (None, SessionKind::Access) => "–".to_owned(),
            },
            method: if s.method.is_empty() {
                "–".to_owned()
            } else {
                s.method.clone()
            },
        })
        .collect();
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    Ok(page(
        status,
        &UserPage {
            nav: admin.nav(),
            csrf: &admin.csrf,
            username: &user.username,
            status: if user.disabled { "Disabled" } else { "Active" },
            disabled: user.disabled,
            upstream: user.upstream.as_deref(),
            roles: user.roles.join(" "),
            sessions: rows,
            notice,
            error,
        },
    ))
}

/// `POST /console/user`: one of the actions on a user's page (`action` names it).
async fn user_action(
    State(state): State<AppState>,
    admin: Admin,
    form: FormBody,
) -> Result<Response, Response> {
    if !admin.sent_csrf(&form) {
        return Ok(csrf_refused(&admin));
    }
    let username = form.get("username").ok().flatten().unwrap_or("");
    let actor = admin.actor();
    let result = match form.get("action").ok().flatten().unwrap_or("") {
        "end-session" => {
            let id = form.get("session").ok().flatten().unwrap_or("");
            end_own_session(&state, &actor, username, id)
                .await
                .map(|()| "ended")
        }
        "end-all" => admin::end_sessions(&state, &actor, username)
            .await
            .map(|_| "ended-all"),
        "roles" => {
            let patch = UserPatch {
                roles: Some(roles_field(&form)),
                ..UserPatch::default()
            };
            admin::change(&state, &actor, username, patch)
                .await
                .map(|_| "roles")
        }
        "password" => {
            let patch = UserPatch {
                password: Some(form.get("password").ok().flatten().unwrap_or("").to_owned()),
                ..UserPatch::default()
            };
            admin::change(&state, &actor, username, patch)
                .await
                .map(|_| "password")
        }
        "disable" | "enable" => {
            let disable = form.get("action").ok().flatten() == Some("disable");
            let patch = UserPatch {
                disabled: Some(disable),
                ..UserPatch::default()
            };
            admin::change(&state, &actor, username, patch)
                .await
                .map(|_| if disable { "disabled" } else { "enabled" })
        }
        _ => Err(ApiError::InvalidRequest("unknown action")),
    };
    match result {
        Ok(done) => Ok(see_other(&user_link(username, Some(done)))),
        Err(ApiError::Unavailable) => Err(unavailable()),
        Err(e) => user_page(&state, &admin, username, None, Some(error_text(&e))).await,
    }
}

/// Ends one session of `username` (a session id posted for another user is not found).
async fn end_own_session(
    state: &AppState,
    actor: &Actor,
    username: &str,
    id: &str,
) -> Result<(), ApiError> {
    let owned = match tokengate_store::SessionId::parse(id) {
        Some(parsed) => state
            .store
            .lookup(&parsed)
            .await
            .map_err(|e| state.store_error(e))?
            .is_some_and(|s| s.subject == username),
        None => false,
    };
    if !owned {
        return Err(ApiError::NotFound);
    }
    admin::end_session(state, actor, id).await
}

/// `GET /console/clients`: the registered clients, read-only.
async fn clients(State(state): State<AppState>, admin: Admin) -> Response {
    let clients = state
        .clients
        .all()
        .into_iter()
        .map(|c| ClientRow {
            id: c.id.clone(),
            builtin: c.id == CONSOLE_CLIENT_ID,
            kind: if c.is_public() {
                "public"
            } else {
                "confidential"
            },
            grants: c
                .grants
                .iter()
                .map(|g| g.as_str())
                .collect::<Vec<_>>()
                .join(" "),
            redirect_uris: c.redirect_uris.clone(),
        })
        .collect();
    page(
        StatusCode::OK,
        &ClientsPage {
            nav: admin.nav(),
            clients,
        },
    )
}

#[derive(serde::Deserialize, Default)]
struct AuditQuery {
    before: Option<String>,
}

/// `GET /console/audit?before=`: the audit trail, newest first.
async fn audit_trail(
    State(state): State<AppState>,
    admin: Admin,
    RawQuery(query): RawQuery,
) -> Result<Response, Response> {
    let query: AuditQuery = query_of(query.as_deref());
    let before = query.before.filter(|b| !b.is_empty() && b.len() <= 64);
    let trail = match state.store.audit(before.as_deref(), AUDIT_PAGE).await {
        Err(StoreError::Invalid { .. }) => tokengate_store::AuditPage::default(),
        answer => stored(&state, answer)?,
    };
    let entries = trail
        .entries
        .into_iter()
        .map(|e| AuditRow {
            when: format_time(e.at),
            actor: e.actor,
            action: e.action,
            target: e.target,
            address: e.address,
        })
        .collect();
    let next = trail.next.map(|next| {
        let q = serde_urlencoded::to_string([("before", next.as_str())]);
        format!("/console/audit?{}", q.unwrap_or_default())
    });
    Ok(page(
        StatusCode::OK,
        &AuditPage {
            nav: admin.nav(),
            entries,
            next,
        },
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn times_are_shown_in_utc() {
        assert_eq!(format_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_time(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(format_time(1_795_000_000), "2026-11-18 11:06:40 UTC");
    }

    #[test]
    fn what_the_console_shows_is_escaped() {
        let evil = "<script>alert('x')</script>\"";
        let html = UserPage {
            nav: Some(Nav {
                admin: evil.to_owned(),
                csrf: "c".to_owned(),
            }),
            csrf: "c",
            username: evil,
            status: "Active",
            disabled: false,
            upstream: None,
            roles: evil.to_owned(),
            sessions: vec![],
            notice: None,
            error: None,
        }
        .render()
        .unwrap();
        assert!(!html.contains("<script>"), "{html}");
        assert!(!html.contains("'x'"));
        assert!(html.contains("&#60;script&#62;") || html.contains("&lt;script&gt;"));
    }

    #[test]
    fn the_csrf_token_follows_the_session() {
        assert_eq!(csrf_of("a"), csrf_of("a"));
        assert_ne!(csrf_of("a"), csrf_of("b"));
        assert_eq!(csrf_of("a").len(), 43);
    }
}
