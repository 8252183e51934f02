//! Signing in to the console: the code flow against the IdP itself, the console session
//! cookie, the `Admin` every page and action is for, CSRF tokens, and signing out.

use std::net::IpAddr;

use aws_lc_rs::digest::{SHA256, digest};
use axum::extract::{FromRequestParts, RawQuery, State};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, StatusCode};
use subtle::ConstantTimeEq;
use tokengate_store::{
    ReferenceToken, Session, SessionAdmin, SessionKind, StoreError, User, UserDirectory, now_unix,
};

use super::layout::{Nav, add_cookie, message, see_other, stored, unavailable};
use crate::audit::{self, Actor};
use crate::config::CONSOLE_CLIENT_ID;
use crate::error::ApiError;
use crate::extract::{ClientAddr, FormBody};
use crate::oauth::authorize;
use crate::oauth::request::pkce_challenge;
use crate::pages;
use crate::sessions::NewSession;
use crate::state::{AppState, Live};
use tokengate_server::cookies::{self, SameSite};

/// The console session cookie: the reference token of the console's browser session.
pub const SESSION_COOKIE: &str = cookies::CONSOLE;
/// The state and PKCE verifier of a sign-in under way.
const LOGIN_COOKIE: &str = cookies::CONSOLE_LOGIN;
/// Where the console's cookies are sent, and only there.
const COOKIE_PATH: &str = "/console/";
/// How long a sign-in may take.
const LOGIN_TTL: u64 = 600;

/// The CSRF token of the forms of a console session: derived from its cookie, so it needs no
/// state of its own and is worthless without the cookie.
fn csrf_of(token: &str) -> String {
    let d = digest(
        &SHA256,
        format!("tokengate-console-csrf:{token}").as_bytes(),
    );
    URL_SAFE_NO_PAD.encode(d.as_ref())
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
    /// The CSRF token the forms of this session carry.
    pub(super) fn csrf(&self) -> &str {
        &self.csrf
    }

    pub(super) fn nav(&self) -> Option<Nav> {
        Some(Nav {
            admin: self.user.username.clone(),
            csrf: self.csrf.clone(),
        })
    }

    pub(super) fn actor(&self) -> Actor {
        Actor::console(&self.user.username, self.address)
    }

    /// Whether the form carries this session's CSRF token (compared in constant time).
    pub(super) fn sent_csrf(&self, form: &FormBody) -> bool {
        let sent = form.get("csrf").ok().flatten().unwrap_or("");
        bool::from(sent.as_bytes().ct_eq(self.csrf.as_bytes()))
    }
}

impl FromRequestParts<Live> for Admin {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        live: &Live,
    ) -> Result<Self, Response> {
        let state = &live.load();
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
pub(super) async fn login(State(state): State<AppState>, RawQuery(query): RawQuery) -> Response {
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
pub(super) async fn callback(
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
    // Issued like every user's session: kept only if the user may still sign in. A failure was
    // counted and logged there; the person sees the store-down page.
    let issued = state
        .issue_admitted(token, new)
        .await
        .map_err(|_| unavailable())?
        .ok_or_else(|| refused(&state, &user.username))?;
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
pub(super) async fn logout(
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

pub(super) fn csrf_refused(admin: &Admin) -> Response {
    tracing::info!(subject = %admin.user.username, "console form refused: CSRF token missing or wrong");
    message(
        StatusCode::FORBIDDEN,
        admin.nav(),
        "Form refused",
        "This form expired or did not come from the console. Nothing was changed; please try again.",
        Some(("/console/", "Back to the console")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_csrf_token_follows_the_session() {
        assert_eq!(csrf_of("a"), csrf_of("a"));
        assert_ne!(csrf_of("a"), csrf_of("b"));
        assert_eq!(csrf_of("a").len(), 43);
    }
}
