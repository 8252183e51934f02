//! The second factor of local users, step 1: one-time passwords (TOTP, `crate::otp`).
//!
//! * Enrolment, `GET /account/otp` for someone signed in to the IdP (its single-sign-on
//!   cookie): a new secret as a QR code of its `otpauth://` URI and as text, held in the store
//!   for [`ENROLMENT_TTL`]; `POST /account/otp` with a first code from the app turns it on.
//! * Sign-in: once a password is right, a user with a secret is asked for a code
//!   ([`challenge`]); `POST /oauth2/authorize/otp` takes it. The password grant takes it as the
//!   `otp` parameter.
//!
//! A code is good once on every replica (the store keeps the last step each user used), and
//! wrong codes count against the same login lockout as wrong passwords. Enrolment also makes ten
//! recovery codes, shown once and kept as argon2id hashes; the code page takes one in place of a
//! code, once.

use std::net::IpAddr;
use std::time::Duration;

use askama::Template;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{HeaderValue, StatusCode, header};
use serde::{Deserialize, Serialize};
use tokengate_store::{
    Changed, CodeId, PendingSignIns, ReferenceToken, UserDirectory, change_user, now_unix,
};

use crate::error::ApiError;
use crate::extract::{ClientAddr, FormBody};
use crate::oauth::request::{AuthorizeRequest, finish_sign_in, signed_in, start_sso};
use crate::otp;
use crate::pages;
use crate::state::{AppState, Live};

/// How long an enrolment page's secret waits for its first code.
pub const ENROLMENT_TTL: Duration = Duration::from_secs(600);
/// How long the code page waits after a right password.
pub const CHALLENGE_TTL: Duration = Duration::from_secs(300);
/// How long the last step a user used is kept: longer than any code verifies (three steps).
const STEP_KEPT: Duration = Duration::from_secs(4 * otp::STEP);
/// The issuer named in authenticator apps.
const APP_ISSUER: &str = "tokengate";
/// Recovery codes made at enrolment.
const RECOVERY_CODES: usize = 10;

/// The public listener's routes of the second factor.
pub fn routes() -> Router<Live> {
    Router::new()
        .route("/account/otp", get(enrol_page).post(enrol))
        .route("/oauth2/authorize/otp", post(answer))
}

/// The enrolment page.
#[derive(Template)]
#[template(path = "otp_enrol.html")]
struct Enrol<'a> {
    /// The sign-in to go on with once enrolled (a required second factor), if any.
    next: Option<&'a str>,
    username: &'a str,
    /// The QR code (an SVG made here from the code's modules alone, so it is rendered as is).
    qr: &'a str,
    /// The secret in base32, for typing into an app.
    secret: &'a str,
    enrolment: &'a str,
    csrf: &'a str,
    error: Option<&'a str>,
    /// The passkeys page, to add one instead (when passkeys are on), with the same `continue`.
    passkey_link: Option<String>,
}

/// The code page of a sign-in.
#[derive(Template)]
#[template(path = "otp_signin.html")]
struct Challenge<'a> {
    client_id: &'a str,
    hidden: Vec<(&'static str, String)>,
    pending: &'a str,
    csrf: &'a str,
    error: Option<&'a str>,
}

/// The page after enrolment, with the recovery codes (shown only there).
#[derive(Template)]
#[template(path = "otp_done.html")]
struct Done<'a> {
    codes: Vec<String>,
    /// The sign-in to go on with, if enrolment interrupted one.
    next: Option<&'a str>,
}

/// Longest `continue` the enrolment page carries.
const MAX_CONTINUE: usize = 4096;

/// The sign-in to go on with after enrolment: only ever this IdP's own authorize endpoint (never
/// an open redirect).
pub(crate) fn continue_to(next: Option<&str>) -> Option<&str> {
    next.filter(|n| n.starts_with("/oauth2/authorize?") && n.len() <= MAX_CONTINUE)
}

/// The `continue` of an enrolment link.
#[derive(Deserialize)]
struct EnrolQuery {
    #[serde(rename = "continue")]
    next: Option<String>,
}

/// Sends someone who must use a second factor and has none to enrolment, to come back to
/// `request` once enrolled (the browser's single-sign-on session carries them there).
pub fn to_enrolment(request: &AuthorizeRequest) -> Response {
    let back = format!(
        "/oauth2/authorize?{}",
        serde_urlencoded::to_string(request.hidden()).unwrap_or_default()
    );
    let link = format!(
        "/account/otp?{}",
        serde_urlencoded::to_string([("continue", back.as_str())]).unwrap_or_default()
    );
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(location) = HeaderValue::from_str(&link) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// After a right password, for someone who must use a second factor and has none: the
/// browser's single-sign-on session (by password alone, so it does not satisfy the requirement
/// by itself), and enrolment.
pub async fn enrol_first(state: &AppState, request: &AuthorizeRequest, username: &str) -> Response {
    let Some(cookie) = start_sso(state, username, "password").await else {
        return unavailable();
    };
    let mut response = to_enrolment(request);
    if let Ok(cookie) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// A sign-in waiting for its code, as the store holds it.
#[derive(Deserialize, Serialize)]
struct Pending {
    username: String,
    roles: Vec<String>,
}

/// An enrolment waiting for its first code.
#[derive(Deserialize, Serialize)]
struct Enrolment {
    username: String,
    secret: String,
}

/// Why a code was not taken.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// Wrong, or used before.
    Wrong,
    /// The name or address is locked out for this long.
    Locked(Duration),
}

/// Checks `code` against `secret` for `username`, behind the login lockout: a right code is
/// taken once (every replica refuses it after), a wrong or reused one counts as a failed login.
pub async fn check_code(
    state: &AppState,
    username: &str,
    secret: &str,
    code: &str,
    address: Option<IpAddr>,
) -> Result<Result<(), Refused>, ApiError> {
    behind_lockout(state, username, address, "one-time password", async {
        let step = otp::decode_secret(secret).and_then(|s| otp::verify(&s, code, now_unix()));
        let taken = match step {
            Some(step) => state
                .store
                .use_otp_step(username, step, STEP_KEPT)
                .await
                .map_err(|e| state.store_error(e))?,
            None => false,
        };
        Ok(if taken { Proof::Right } else { Proof::Wrong })
    })
    .await
}

/// What a second-factor proof came to.
pub(crate) enum Proof {
    /// Right: clears the name's failures.
    Right,
    /// Wrong: counts as a failed login.
    Wrong,
    /// The user went away meanwhile: refused, neither counted nor clearing failures.
    Gone,
}

/// `attempt` (checking a code or a recovery code of `username`) behind the login lockout, as a
/// password is: refused at once during a lockout; a right proof clears the name's failures, a
/// wrong one counts as a failed login.
pub(crate) async fn behind_lockout(
    state: &AppState,
    username: &str,
    address: Option<IpAddr>,
    what: &str,
    attempt: impl Future<Output = Result<Proof, ApiError>>,
) -> Result<Result<(), Refused>, ApiError> {
    let key = format!("user:{username}");
    let throttled = state
        .throttle
        .check(&key, address)
        .await
        .map_err(|e| state.store_error(e))?;
    if let Err(wait) = throttled {
        state.metrics.logins_throttled.inc();
        return Ok(Err(Refused::Locked(wait)));
    }
    match attempt.await? {
        Proof::Right => {
            state
                .throttle
                .succeeded(&key)
                .await
                .map_err(|e| state.store_error(e))?;
            Ok(Ok(()))
        }
        Proof::Gone => Ok(Err(Refused::Wrong)),
        Proof::Wrong => {
            if state
                .throttle
                .failed(&key, address)
                .await
                .map_err(|e| state.store_error(e))?
            {
                state.metrics.login_lockouts.inc();
                tracing::warn!(subject = ?tokengate_server::Outside(username), address = ?address, "too many failed attempts; locked out");
            }
            tracing::info!(subject = ?tokengate_server::Outside(username), what, "second factor refused");
            Ok(Err(Refused::Wrong))
        }
    }
}

/// New recovery codes: ten random characters of base32 each (50 bits), as `xxxxx-xxxxx`.
fn recovery_codes() -> Vec<String> {
    (0..RECOVERY_CODES)
        .map(|_| {
            let random = otp::base32(&otp::new_secret()).to_ascii_lowercase();
            format!("{}-{}", &random[..5], &random[5..10])
        })
        .collect()
}

/// Whether `code` has the shape of a recovery code rather than of a one-time password.
fn is_recovery_code(code: &str) -> bool {
    code.trim().contains('-')
}

/// Signs in with one of `user`'s recovery codes in place of a one-time password, behind the
/// login lockout: a right one is used up (and audited), a wrong one counts as a failed login.
async fn use_recovery_code(
    state: &AppState,
    user: tokengate_store::User,
    code: &str,
    address: Option<IpAddr>,
) -> Result<Result<(), Refused>, ApiError> {
    let username = user.username.clone();
    let mut left = 0;
    let used = behind_lockout(state, &username, address, "recovery code", async {
        let code = code.trim().to_ascii_lowercase();
        let mut found = None;
        if code.len() <= 32 {
            for hash in &user.recovery_codes {
                if state.users.verify(hash, &code).await {
                    found = Some(hash);
                    break;
                }
            }
        }
        let Some(hash) = found else {
            return Ok(Proof::Wrong);
        };
        // Taken from the record as it is now: of two requests with the same code at once, one
        // takes it and the other finds it gone (used, so wrong).
        let taken = change_user(&state.store, &username, now_unix(), |u| {
            let i = u.recovery_codes.iter().position(|h| h == hash).ok_or(())?;
            u.recovery_codes.remove(i);
            Ok(())
        })
        .await
        .map_err(|e| state.store_error(e))?;
        Ok(match taken {
            Changed::Done(user, ()) => {
                left = user.recovery_codes.len();
                Proof::Right
            }
            Changed::Refused(()) => Proof::Wrong,
            Changed::Missing => Proof::Gone,
        })
    })
    .await?;
    if used.is_ok() {
        tracing::info!(subject = ?tokengate_server::Outside(&username), left, "signed in with a recovery code");
        crate::audit::record(
            state,
            &crate::audit::Actor::user(&username, address),
            "user.recovery_code_use",
            &username,
        )
        .await;
    }
    Ok(used)
}

/// The record a second-factor form names in `field` (`pending`, `enrolment`), taken from the
/// store: each is good once. `Ok(None)` when the form did not come from this site (its CSRF
/// token), names nothing, or its record expired; `Err` with the page to answer when the store
/// cannot be reached.
pub(crate) async fn take_record<T: serde::de::DeserializeOwned>(
    state: &AppState,
    headers: &HeaderMap,
    form: &FormBody,
    field: &str,
) -> Result<Option<T>, Response> {
    if !pages::csrf_matches(headers, form.get("csrf").ok().flatten().unwrap_or("")) {
        return Ok(None);
    }
    let id = form.get(field).ok().flatten().unwrap_or("");
    if ReferenceToken::parse(id).is_err() {
        return Ok(None);
    }
    match state.store.take_pending(&CodeId::of_code(id)).await {
        Ok(taken) => Ok(taken.and_then(|r| serde_json::from_str(&r).ok())),
        Err(e) => {
            let _ = state.store_error(e);
            Err(unavailable())
        }
    }
}

/// Keeps `record` in the store for `ttl` under a new random id, which the page's form carries
/// back ([`take_record`]); `Err` with the page to answer when it cannot be kept.
pub(crate) async fn hold_record<T: Serialize>(
    state: &AppState,
    record: &T,
    ttl: Duration,
) -> Result<String, Response> {
    let id = ReferenceToken::generate().expose().to_owned();
    let record = serde_json::to_string(record).map_err(|_| unavailable())?;
    match state
        .store
        .create_pending(&CodeId::of_code(&id), &record, ttl)
        .await
    {
        Ok(true) => Ok(id),
        Ok(false) => Err(unavailable()),
        Err(e) => {
            let _ = state.store_error(e);
            Err(unavailable())
        }
    }
}

pub(crate) fn unavailable() -> Response {
    pages::message(
        StatusCode::SERVICE_UNAVAILABLE,
        "Try again",
        "This is not possible right now. Please try again in a moment.",
    )
}

/// After a right password: the code page when `username` has a second factor, `None` when it
/// has none (the sign-in goes on).
pub async fn challenge(
    state: &AppState,
    headers: &HeaderMap,
    request: &AuthorizeRequest,
    username: &str,
    roles: &[String],
) -> Option<Response> {
    let user = match state.store.user(username).await {
        Ok(user) => user?,
        Err(e) => {
            let _ = state.store_error(e);
            return Some(unavailable());
        }
    };
    user.otp_secret.as_ref()?;
    let pending = Pending {
        username: username.to_owned(),
        roles: roles.to_vec(),
    };
    Some(challenge_page(state, headers, request, &pending, None, StatusCode::OK).await)
}

/// The code page for `pending`, held in the store under a new id.
async fn challenge_page(
    state: &AppState,
    headers: &HeaderMap,
    request: &AuthorizeRequest,
    pending: &Pending,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let id = match hold_record(state, pending, CHALLENGE_TTL).await {
        Ok(id) => id,
        Err(page) => return page,
    };
    let csrf = pages::csrf_token(headers);
    let page = Challenge {
        client_id: &request.client.id,
        hidden: request.hidden(),
        pending: &id,
        csrf: &csrf,
        error,
    };
    let targets: Vec<String> = pages::origin(&request.redirect_uri).into_iter().collect();
    pages::with_csrf(
        pages::page(status, &page, &targets),
        &csrf,
        state.secure_cookies(),
    )
}

/// `POST /oauth2/authorize/otp`: the code of a sign-in whose password was right.
async fn answer(
    State(state): State<AppState>,
    ClientAddr(address): ClientAddr,
    headers: HeaderMap,
    form: FormBody,
) -> Response {
    let request = match AuthorizeRequest::parse(&form, &state) {
        Ok(request) => request,
        Err(refusal) => return refusal.into_response(&state.issuer_name),
    };
    let expired = || {
        pages::message(
            StatusCode::FORBIDDEN,
            "Sign in again",
            "This sign-in expired or did not come from this site. Please sign in again.",
        )
    };
    let pending = match take_record::<Pending>(&state, &headers, &form, "pending").await {
        Ok(Some(pending)) => pending,
        Ok(None) => return expired(),
        Err(page) => return page,
    };
    let user = match state.store.user(&pending.username).await {
        Ok(user) => user.filter(|u| !u.disabled),
        Err(e) => {
            let _ = state.store_error(e);
            return unavailable();
        }
    };
    let Some(user) = user.filter(|u| u.otp_secret.is_some()) else {
        return expired();
    };
    let code = form.get("code").ok().flatten().unwrap_or("");
    let checked = match &user.otp_secret {
        Some(_) if is_recovery_code(code) => use_recovery_code(&state, user, code, address).await,
        Some(secret) => check_code(&state, &pending.username, secret, code, address).await,
        None => return expired(),
    };
    match checked {
        Ok(Ok(())) => {
            finish_sign_in(
                &state,
                &request,
                &pending.username,
                &pending.roles,
                "password+otp",
            )
            .await
        }
        Ok(Err(Refused::Wrong)) => {
            challenge_page(
                &state,
                &headers,
                &request,
                &pending,
                Some("That code is not right, or was used already. Enter the current one."),
                StatusCode::OK,
            )
            .await
        }
        Ok(Err(Refused::Locked(wait))) => pages::locked_out(wait),
        Err(_) => unavailable(),
    }
}

/// `GET /account/otp`: a new secret to enrol, for someone signed in.
async fn enrol_page(
    State(state): State<AppState>,
    Query(query): Query<EnrolQuery>,
    headers: HeaderMap,
) -> Response {
    let next = continue_to(query.next.as_deref());
    let user = match signed_in(&state, &headers).await {
        Ok(Some((_, user))) => user,
        Ok(None) => return not_signed_in(),
        Err(e) => {
            let _ = state.store_error(e);
            return unavailable();
        }
    };
    if user.upstream.is_some() {
        return pages::message(
            StatusCode::OK,
            "Second factor",
            "You sign in through your organisation's provider: its own second factor protects your account.",
        );
    }
    if user.otp_secret.is_some() {
        return pages::message(
            StatusCode::OK,
            "Second factor",
            "A second factor is on for this account already. An administrator can remove it (a lost phone) so that you enrol again.",
        );
    }
    let secret = otp::new_secret();
    enrolment_page(&state, &headers, &user.username, &secret, next, None).await
}

fn not_signed_in() -> Response {
    pages::message(
        StatusCode::UNAUTHORIZED,
        "Sign in first",
        "Sign in to an application through tokengate, then open this page again to set up a second factor.",
    )
}

/// The enrolment page for `secret`, held in the store under a new id.
async fn enrolment_page(
    state: &AppState,
    headers: &HeaderMap,
    username: &str,
    secret: &[u8],
    next: Option<&str>,
    error: Option<&str>,
) -> Response {
    let uri = otp::otpauth_uri(APP_ISSUER, username, secret);
    let Some(qr) = otp::qr_svg(&uri) else {
        return unavailable();
    };
    let record = Enrolment {
        username: username.to_owned(),
        secret: otp::encode_secret(secret),
    };
    let id = match hold_record(state, &record, ENROLMENT_TTL).await {
        Ok(id) => id,
        Err(page) => return page,
    };
    let csrf = pages::csrf_token(headers);
    let page = Enrol {
        next,
        username,
        qr: &qr,
        secret: &otp::base32(secret),
        enrolment: &id,
        csrf: &csrf,
        error,
        passkey_link: passkey_link(state, username, next),
    };
    pages::with_csrf(
        pages::page(StatusCode::OK, &page, &[]),
        &csrf,
        state.secure_cookies(),
    )
}

/// `POST /account/otp`: the first code from the app; the second factor is on once it is right.
async fn enrol(
    State(state): State<AppState>,
    ClientAddr(address): ClientAddr,
    headers: HeaderMap,
    form: FormBody,
) -> Response {
    let user = match signed_in(&state, &headers).await {
        Ok(Some((_, user))) => user,
        Ok(None) => return not_signed_in(),
        Err(e) => {
            let _ = state.store_error(e);
            return unavailable();
        }
    };
    let expired = || {
        pages::message(
            StatusCode::FORBIDDEN,
            "Start again",
            "This page expired or did not come from this site. Open it again to set up a second factor.",
        )
    };
    let taken = take_record::<Enrolment>(&state, &headers, &form, "enrolment").await;
    let enrolment = match taken {
        Ok(Some(enrolment)) if enrolment.username == user.username => enrolment,
        Ok(_) => return expired(),
        Err(page) => return page,
    };
    let Some(secret) = otp::decode_secret(&enrolment.secret) else {
        return expired();
    };
    let code = form.get("code").ok().flatten().unwrap_or("");
    let next = continue_to(form.get("continue").ok().flatten());
    match check_code(&state, &user.username, &enrolment.secret, code, address).await {
        Ok(Ok(())) => {}
        Ok(Err(Refused::Wrong)) => {
            return enrolment_page(
                &state,
                &headers,
                &user.username,
                &secret,
                next,
                Some("That code is not right. Enter the one your app shows now."),
            )
            .await;
        }
        Ok(Err(Refused::Locked(wait))) => return pages::locked_out(wait),
        Err(_) => return unavailable(),
    }
    let codes = recovery_codes();
    let mut hashes = Vec::with_capacity(codes.len());
    for code in &codes {
        match state.users.hash(code).await {
            Ok(hash) => hashes.push(hash),
            Err(e) => {
                tracing::error!(error = %e, "hashing recovery codes failed");
                return unavailable();
            }
        }
    }
    let enrolled = change_user(&state.store, &user.username, now_unix(), |u| {
        u.otp_secret = Some(enrolment.secret.clone());
        u.recovery_codes = hashes.clone();
        Ok::<_, std::convert::Infallible>(())
    })
    .await;
    match enrolled {
        Ok(Changed::Done(..)) => {}
        Ok(Changed::Missing) => return not_signed_in(),
        Ok(Changed::Refused(never)) => match never {},
        Err(e) => {
            let _ = state.store_error(e);
            return unavailable();
        }
    }
    tracing::info!(subject = ?tokengate_server::Outside(&user.username), "second factor enrolled (one-time passwords)");
    crate::audit::record(
        &state,
        &crate::audit::Actor::user(&user.username, address),
        "user.otp_enrol",
        &user.username,
    )
    .await;
    pages::page(StatusCode::OK, &Done { codes, next }, &[])
}

/// The link to the passkeys account page, for `username`'s enrolment page to offer a passkey
/// instead (going on to `next` once added): `None` while passkeys are off, or when the name is
/// too long to be a user handle.
fn passkey_link(state: &AppState, username: &str, next: Option<&str>) -> Option<String> {
    state.webauthn.as_ref()?;
    if username.len() > crate::webauthn::MAX_USER_HANDLE {
        return None;
    }
    Some(match next {
        Some(next) => format!(
            "/account/passkeys?{}",
            serde_urlencoded::to_string([("continue", next)]).unwrap_or_default()
        ),
        None => "/account/passkeys".to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enrolment_only_ever_continues_to_this_idps_sign_in() {
        let ok = "/oauth2/authorize?client_id=web";
        assert_eq!(continue_to(Some(ok)), Some(ok));
        for bad in [
            "https://evil.example/oauth2/authorize?x",
            "//evil.example/oauth2/authorize?x",
            "/oauth2/token?x",
            "/account/otp",
        ] {
            assert_eq!(continue_to(Some(bad)), None, "{bad}");
        }
        let long = format!("/oauth2/authorize?{}", "a".repeat(MAX_CONTINUE));
        assert_eq!(continue_to(Some(&long)), None);
        assert!(is_recovery_code(" abcde-fghij "));
        assert!(!is_recovery_code("123456"));
    }
}
