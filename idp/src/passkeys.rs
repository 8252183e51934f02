//! Passkeys (WebAuthn) of local users, when `[webauthn]` is configured: the pages and forms of
//! their ceremonies; the checks themselves are `crate::webauthn`'s.
//!
//! * `GET /account/passkeys`, for someone signed in to the IdP (its single-sign-on cookie):
//!   their passkeys, a form that adds one (`navigator.credentials.create`) and one that removes
//!   each. `POST /account/passkeys` takes the new credential, `POST /account/passkeys/remove`
//!   removes one; both audited.
//! * Second factor: once a password is right, a user with a passkey is asked for it
//!   ([`challenge`]), or for a code instead when they also have one-time passwords.
//! * Without a password: `GET /oauth2/authorize/passkey` with the authorization request, linked
//!   from the sign-in page; the browser offers the passkeys it holds for this site
//!   (discoverable credentials), and the user must be verified on the device.
//!
//! `POST /oauth2/authorize/passkey` takes an assertion of either kind. Every ceremony's
//! challenge is held in the store for [`CEREMONY_TTL`] and taken back once, so any replica
//! checks it and none takes it twice. Assertions go through the login lockout
//! (`second_factor::behind_lockout`). The script that talks to `navigator.credentials` is
//! `/oauth2/assets/passkeys.js` (`crate::pages`), the only one the pages load.

use std::net::IpAddr;
use std::time::Duration;

use askama::Template;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use axum::Router;
use axum::extract::{Query, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use tokengate_store::{
    Changed, Claimed, MAX_PASSKEYS, Passkey, User, UserDirectory, change_user, now_unix,
};

use crate::error::ApiError;
use crate::extract::{ClientAddr, FormBody};
use crate::oauth::request::{AuthorizeRequest, Refusal, finish_sign_in, signed_in};
use crate::pages;
use crate::second_factor::{
    Proof, Refused, behind_lockout, continue_to, hold_record, take_record, unavailable,
};
use crate::state::{AppState, Live};
use crate::webauthn::{self, RelyingParty, Stored};

/// How long a ceremony's challenge waits for the browser's answer.
pub const CEREMONY_TTL: Duration = Duration::from_secs(300);

/// The public listener's routes of passkeys.
pub fn routes() -> Router<Live> {
    Router::new()
        .route("/account/passkeys", get(account_page).post(register))
        .route("/account/passkeys/remove", post(remove))
        .route(
            "/oauth2/authorize/passkey",
            get(passwordless_page).post(answer),
        )
        .route("/oauth2/assets/passkeys.js", get(pages::passkeys_script))
}

/// Why a passkey page or form went no further: each becomes its page in [`PasskeyError::page`].
#[derive(Debug, thiserror::Error)]
pub enum PasskeyError {
    /// `[webauthn]` is not configured.
    #[error("passkeys are off")]
    Off,
    /// No single-sign-on session.
    #[error("not signed in")]
    NotSignedIn,
    /// The user signs in through an upstream provider.
    #[error("federated user")]
    Federated,
    /// The form's CSRF token or ceremony is missing, expired, used or another's.
    #[error("ceremony expired or not from this site")]
    Expired,
    /// A field of the browser's answer is missing, too long or not base64url.
    #[error("malformed field {0}")]
    Field(&'static str),
    /// The account holds [`MAX_PASSKEYS`] already, or this credential already.
    #[error("passkey not added")]
    NotAdded,
    /// The browser's answer failed a check.
    #[error("passkey refused: {0}")]
    Refused(#[from] webauthn::Refused),
    /// Too many failed sign-ins for the name or address.
    #[error("locked out")]
    Locked(Duration),
    /// The store could not be reached (logged where it happened).
    #[error("temporarily unavailable")]
    Unavailable,
}

impl PasskeyError {
    /// The page of an error that ends a request (those that show the form again say so on it).
    fn page(&self) -> Response {
        match self {
            PasskeyError::Off => pages::message(
                StatusCode::NOT_FOUND,
                "Passkeys",
                "Passkeys are not set up on this sign-in service.",
            ),
            PasskeyError::NotSignedIn => pages::message(
                StatusCode::UNAUTHORIZED,
                "Sign in first",
                "Sign in to an application through tokengate, then open this page again to manage your passkeys.",
            ),
            PasskeyError::Federated => pages::message(
                StatusCode::OK,
                "Passkeys",
                "You sign in through your organisation's provider: its own factors protect your account.",
            ),
            PasskeyError::Expired => pages::message(
                StatusCode::FORBIDDEN,
                "Start again",
                "This page expired or did not come from this site. Please start again.",
            ),
            PasskeyError::Field(_) | PasskeyError::NotAdded | PasskeyError::Refused(_) => {
                pages::message(
                    StatusCode::BAD_REQUEST,
                    "Passkey not accepted",
                    "The passkey's answer was not accepted. Please start again.",
                )
            }
            PasskeyError::Locked(wait) => pages::locked_out(*wait),
            PasskeyError::Unavailable => unavailable(),
        }
    }
}

/// What a ceremony is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
enum Purpose {
    /// Adding a passkey to the signed-in user's account.
    Register,
    /// The second factor after a right password.
    SecondFactor,
    /// Signing in without a password.
    Passwordless,
}

/// A ceremony waiting for the browser's answer, as the store holds it (never logged).
#[derive(Deserialize, Serialize)]
struct Ceremony {
    purpose: Purpose,
    /// base64url of the random challenge.
    challenge: String,
    /// The user it is for: the signed-in one (register), the one whose password was right
    /// (second factor); none without a password (the passkey names its user).
    username: Option<String>,
    /// The roles of a second-factor sign-in, as the password check found them.
    roles: Vec<String>,
}

impl Ceremony {
    fn new(purpose: Purpose, username: Option<&str>, roles: &[String]) -> Option<Self> {
        let mut challenge = [0u8; 32];
        SystemRandom::new().fill(&mut challenge).ok()?;
        Some(Ceremony {
            purpose,
            challenge: URL_SAFE_NO_PAD.encode(challenge),
            username: username.map(str::to_owned),
            roles: roles.to_vec(),
        })
    }
}

/// One passkey as the account page lists it.
struct Listed {
    id: String,
    label: String,
    kind: &'static str,
    created: String,
    used: Option<String>,
}

/// The add form's ceremony.
struct AddForm {
    ceremony: String,
    challenge: String,
    rp_id: String,
    user_id: String,
    exclude: String,
}

/// The account page of passkeys.
#[derive(Template)]
#[template(path = "passkeys.html")]
struct AccountPage<'a> {
    username: &'a str,
    passkeys: Vec<Listed>,
    add: Option<AddForm>,
    csrf: &'a str,
    error: Option<&'a str>,
    notice: Option<&'a str>,
    /// The sign-in to go on with once a passkey is added (a required second factor), if any.
    next: Option<&'a str>,
    script_integrity: &'static str,
}

/// The `continue` of a link to the account page.
#[derive(Deserialize)]
struct ContinueQuery {
    #[serde(rename = "continue")]
    next: Option<String>,
}

/// The passkey page of a sign-in (a second factor, or without a password).
#[derive(Template)]
#[template(path = "passkey_signin.html")]
struct SignInPage<'a> {
    client_id: &'a str,
    hidden: Vec<(&'static str, String)>,
    second_factor: bool,
    offer_code: bool,
    ceremony: &'a str,
    challenge: &'a str,
    rp_id: &'a str,
    allow: String,
    csrf: &'a str,
    error: Option<&'a str>,
    script_integrity: &'static str,
}

/// The relying party, or [`PasskeyError::Off`].
fn relying_party(state: &AppState) -> Result<&RelyingParty, PasskeyError> {
    state.webauthn.as_ref().ok_or(PasskeyError::Off)
}

/// A form field of the browser's answer: base64url, not empty, at most `max` bytes decoded.
fn field(form: &FormBody, name: &'static str, max: usize) -> Result<Vec<u8>, PasskeyError> {
    let text = form.get(name).ok().flatten().unwrap_or("");
    if text.is_empty() || text.len() > max.div_ceil(3) * 4 {
        return Err(PasskeyError::Field(name));
    }
    URL_SAFE_NO_PAD
        .decode(text)
        .ok()
        .filter(|bytes| bytes.len() <= max)
        .ok_or(PasskeyError::Field(name))
}

/// The store's error, logged, as [`PasskeyError::Unavailable`].
fn store_down(state: &AppState, e: tokengate_store::StoreError) -> PasskeyError {
    let _ = state.store_error(e);
    PasskeyError::Unavailable
}

/// A date for people, from Unix seconds (UTC, to the day).
fn day(unix: u64) -> String {
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let days = (unix / 86_400) as i64 + 719_468;
    let era = days.div_euclid(146_097);
    let doe = days.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// `GET /account/passkeys`, with the sign-in to go on with once one is added, if any.
async fn account_page(
    State(state): State<AppState>,
    Query(query): Query<ContinueQuery>,
    headers: HeaderMap,
) -> Response {
    let next = continue_to(query.next.as_deref());
    match account_user(&state, &headers).await {
        Ok(user) => {
            let page = Notes {
                next,
                ..Notes::default()
            };
            render_account(&state, &headers, &user, page, StatusCode::OK).await
        }
        Err(e) => e.page(),
    }
}

/// What the account page says besides the passkeys.
#[derive(Clone, Copy, Default)]
struct Notes<'a> {
    error: Option<&'a str>,
    notice: Option<&'a str>,
    /// The sign-in to go on with (`continue`).
    next: Option<&'a str>,
}

/// The signed-in local user, when passkeys are on.
async fn account_user(state: &AppState, headers: &HeaderMap) -> Result<User, PasskeyError> {
    relying_party(state)?;
    let user = match signed_in(state, headers).await {
        Ok(Some((_, user))) => user,
        Ok(None) => return Err(PasskeyError::NotSignedIn),
        Err(e) => return Err(store_down(state, e)),
    };
    if user.upstream.is_some() {
        return Err(PasskeyError::Federated);
    }
    Ok(user)
}

/// The account page of `user`, with a new ceremony to add a passkey while there is room.
async fn render_account(
    state: &AppState,
    headers: &HeaderMap,
    user: &User,
    notes: Notes<'_>,
    status: StatusCode,
) -> Response {
    let Some(rp) = state.webauthn.as_ref() else {
        return PasskeyError::Off.page();
    };
    let add =
        if user.passkeys.len() < MAX_PASSKEYS && user.username.len() <= webauthn::MAX_USER_HANDLE {
            let Some(ceremony) = Ceremony::new(Purpose::Register, Some(&user.username), &[]) else {
                return unavailable();
            };
            let id = match hold_record(state, &ceremony, CEREMONY_TTL).await {
                Ok(id) => id,
                Err(page) => return page,
            };
            Some(AddForm {
                ceremony: id,
                challenge: ceremony.challenge,
                rp_id: rp.id().to_owned(),
                user_id: URL_SAFE_NO_PAD.encode(user.username.as_bytes()),
                exclude: passkey_ids(user),
            })
        } else {
            None
        };
    let passkeys = user
        .passkeys
        .iter()
        .map(|p| Listed {
            id: p.id.clone(),
            label: p.id.chars().take(12).collect(),
            kind: if p.backup_eligible {
                "synced"
            } else {
                "this device"
            },
            created: day(p.created_at),
            used: (p.last_used_at > 0).then(|| day(p.last_used_at)),
        })
        .collect();
    let csrf = pages::csrf_token(headers);
    let page = AccountPage {
        username: &user.username,
        passkeys,
        add,
        csrf: &csrf,
        error: notes.error,
        notice: notes.notice,
        next: notes.next,
        script_integrity: pages::passkeys_script_hash(),
    };
    pages::with_csrf(
        pages::page_with_passkeys(status, &page, &[]),
        &csrf,
        state.secure_cookies(),
    )
}

/// The user's credential ids, comma-separated (the script's `excludeCredentials` or
/// `allowCredentials`).
fn passkey_ids(user: &User) -> String {
    user.passkeys
        .iter()
        .map(|p| p.id.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// `POST /account/passkeys`: the new credential from `navigator.credentials.create`.
async fn register(
    State(state): State<AppState>,
    ClientAddr(address): ClientAddr,
    headers: HeaderMap,
    form: FormBody,
) -> Response {
    let mut user = match account_user(&state, &headers).await {
        Ok(user) => user,
        Err(e) => return e.page(),
    };
    let next = continue_to(form.get("continue").ok().flatten());
    match add_passkey(&state, &headers, &form, &mut user).await {
        Ok(()) => {
            tracing::info!(subject = ?tokengate_server::Outside(&user.username), "passkey added");
            crate::audit::record(
                &state,
                &crate::audit::Actor::user(&user.username, address),
                "user.passkey_add",
                &user.username,
            )
            .await;
            let notes = Notes {
                notice: Some("Passkey added."),
                next,
                ..Notes::default()
            };
            render_account(&state, &headers, &user, notes, StatusCode::OK).await
        }
        Err(e @ (PasskeyError::Refused(_) | PasskeyError::Field(_) | PasskeyError::NotAdded)) => {
            tracing::info!(subject = ?tokengate_server::Outside(&user.username), reason = %e, "passkey not added");
            let notes = Notes {
                error: Some("The passkey was not added. Try again, or with another device."),
                next,
                ..Notes::default()
            };
            render_account(&state, &headers, &user, notes, StatusCode::BAD_REQUEST).await
        }
        Err(e) => e.page(),
    }
}

/// Checks the registration `form` answers and keeps its passkey on `user`.
async fn add_passkey(
    state: &AppState,
    headers: &HeaderMap,
    form: &FormBody,
    user: &mut User,
) -> Result<(), PasskeyError> {
    let rp = relying_party(state)?;
    let ceremony = match take_record::<Ceremony>(state, headers, form, "ceremony").await {
        Ok(Some(c))
            if c.purpose == Purpose::Register
                && c.username.as_deref() == Some(user.username.as_str()) =>
        {
            c
        }
        Ok(_) => return Err(PasskeyError::Expired),
        Err(_) => return Err(PasskeyError::Unavailable),
    };
    let challenge = URL_SAFE_NO_PAD
        .decode(&ceremony.challenge)
        .map_err(|_| PasskeyError::Expired)?;
    let client_data = field(form, "client_data", webauthn::MAX_CLIENT_DATA)?;
    let attestation = field(form, "attestation", webauthn::MAX_ATTESTATION)?;
    let made = rp.register(&challenge, &client_data, &attestation, true)?;
    let now = now_unix();
    let passkey = Passkey {
        id: URL_SAFE_NO_PAD.encode(&made.id),
        public_key: URL_SAFE_NO_PAD.encode(&made.public_key),
        sign_count: made.sign_count,
        backup_eligible: made.backup_eligible,
        created_at: now,
        last_used_at: 0,
    };
    // The credential id is claimed first: one user's at most, so it names its user alone.
    let claim = state
        .store
        .claim_passkey(&passkey.id, &user.username)
        .await
        .map_err(|e| store_down(state, e))?;
    if claim == Claimed::ByAnother {
        tracing::warn!(subject = ?tokengate_server::Outside(&user.username), "passkey not added: its credential id is another user's");
        return Err(PasskeyError::NotAdded);
    }
    let added = change_user(&state.store, &user.username, now, |u| {
        if u.passkeys.len() >= MAX_PASSKEYS || u.passkeys.iter().any(|p| p.id == passkey.id) {
            return Err(PasskeyError::NotAdded);
        }
        u.passkeys.push(passkey.clone());
        Ok(())
    })
    .await;
    let refused = match added {
        Ok(Changed::Done(new, ())) => {
            *user = new;
            return Ok(());
        }
        Ok(Changed::Refused(e)) => e,
        Ok(Changed::Missing) => PasskeyError::NotSignedIn,
        // Written or not, the claim stays: it blocks only this credential id for others.
        Err(e) => return Err(store_down(state, e)),
    };
    // A claim made for this passkey alone is given up again.
    if claim == Claimed::Now {
        release(state, &passkey.id, &user.username).await;
    }
    Err(refused)
}

/// Gives up `username`'s claim of the credential id of a passkey no longer in their record. A
/// failure is logged and left: the claim then blocks that credential id alone, for other users.
pub(crate) async fn release(state: &AppState, id: &str, username: &str) {
    if let Err(e) = state.store.release_passkey(id, username).await {
        let _ = state.store_error(e);
    }
}

/// `POST /account/passkeys/remove`: removes one of the signed-in user's passkeys.
async fn remove(
    State(state): State<AppState>,
    ClientAddr(address): ClientAddr,
    headers: HeaderMap,
    form: FormBody,
) -> Response {
    let user = match account_user(&state, &headers).await {
        Ok(user) => user,
        Err(e) => return e.page(),
    };
    if !pages::csrf_matches(&headers, form.get("csrf").ok().flatten().unwrap_or("")) {
        return PasskeyError::Expired.page();
    }
    let id = form.get("id").ok().flatten().unwrap_or("");
    let removed = change_user(&state.store, &user.username, now_unix(), |u| {
        let before = u.passkeys.len();
        u.passkeys.retain(|p| p.id != id);
        if u.passkeys.len() == before {
            return Err(());
        }
        Ok(())
    })
    .await;
    let user = match removed {
        Ok(Changed::Done(user, ())) => user,
        Ok(Changed::Refused(())) => {
            let notes = Notes {
                error: Some("That passkey is not on this account."),
                ..Notes::default()
            };
            return render_account(&state, &headers, &user, notes, StatusCode::NOT_FOUND).await;
        }
        Ok(Changed::Missing) => return PasskeyError::NotSignedIn.page(),
        Err(e) => return store_down(&state, e).page(),
    };
    release(&state, id, &user.username).await;
    tracing::info!(subject = ?tokengate_server::Outside(&user.username), "passkey removed");
    crate::audit::record(
        &state,
        &crate::audit::Actor::user(&user.username, address),
        "user.passkey_remove",
        &user.username,
    )
    .await;
    let notes = Notes {
        notice: Some("Passkey removed."),
        ..Notes::default()
    };
    render_account(&state, &headers, &user, notes, StatusCode::OK).await
}

/// After a right password: the passkey page when `username` has a passkey (and passkeys are
/// on), `None` otherwise.
pub async fn challenge(
    state: &AppState,
    headers: &HeaderMap,
    request: &AuthorizeRequest,
    username: &str,
    roles: &[String],
) -> Option<Response> {
    state.webauthn.as_ref()?;
    let user = match state.store.user(username).await {
        Ok(user) => user?,
        Err(e) => return Some(store_down(state, e).page()),
    };
    if user.passkeys.is_empty() {
        return None;
    }
    let ceremony = Ceremony::new(Purpose::SecondFactor, Some(username), roles)?;
    Some(
        sign_in_page(
            state,
            headers,
            request,
            &ceremony,
            Some(&user),
            None,
            StatusCode::OK,
        )
        .await,
    )
}

/// `GET /oauth2/authorize/passkey`: signing in without a password, for the authorization
/// request in the query.
async fn passwordless_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    if let Err(e) = relying_party(&state) {
        return e.page();
    }
    let request = match FormBody::from_query(query.as_deref())
        .map_err(|_| Refusal::Page("The sign-in link is malformed."))
        .and_then(|params| AuthorizeRequest::parse(&params, &state))
    {
        Ok(request) => request,
        Err(refusal) => return refusal.into_response(&state.issuer_name),
    };
    let Some(ceremony) = Ceremony::new(Purpose::Passwordless, None, &[]) else {
        return unavailable();
    };
    sign_in_page(
        &state,
        &headers,
        &request,
        &ceremony,
        None,
        None,
        StatusCode::OK,
    )
    .await
}

/// The passkey page of a sign-in for `ceremony`, held in the store under a new id; `user` is
/// the one whose password was right (a second factor), whose passkeys the browser may use.
async fn sign_in_page(
    state: &AppState,
    headers: &HeaderMap,
    request: &AuthorizeRequest,
    ceremony: &Ceremony,
    user: Option<&User>,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let Some(rp) = state.webauthn.as_ref() else {
        return PasskeyError::Off.page();
    };
    let id = match hold_record(state, ceremony, CEREMONY_TTL).await {
        Ok(id) => id,
        Err(page) => return page,
    };
    let csrf = pages::csrf_token(headers);
    let page = SignInPage {
        client_id: &request.client.id,
        hidden: request.hidden(),
        second_factor: ceremony.purpose == Purpose::SecondFactor,
        offer_code: user.is_some_and(|u| u.otp_secret.is_some()),
        ceremony: &id,
        challenge: &ceremony.challenge,
        rp_id: rp.id(),
        allow: user.map(passkey_ids).unwrap_or_default(),
        csrf: &csrf,
        error,
        script_integrity: pages::passkeys_script_hash(),
    };
    let targets: Vec<String> = pages::origin(&request.redirect_uri).into_iter().collect();
    pages::with_csrf(
        pages::page_with_passkeys(status, &page, &targets),
        &csrf,
        state.secure_cookies(),
    )
}

/// `POST /oauth2/authorize/passkey`: the browser's assertion (or, on a second factor's page, a
/// wish to use a code instead).
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
    if let Err(e) = relying_party(&state) {
        return e.page();
    }
    let ceremony = match take_record::<Ceremony>(&state, &headers, &form, "ceremony").await {
        Ok(Some(c)) if c.purpose != Purpose::Register => c,
        Ok(_) => return PasskeyError::Expired.page(),
        Err(page) => return page,
    };
    if form.get("use_code").ok().flatten() == Some("1") {
        if let (Purpose::SecondFactor, Some(username)) = (ceremony.purpose, &ceremony.username)
            && let Some(page) = crate::second_factor::challenge(
                &state,
                &headers,
                &request,
                username,
                &ceremony.roles,
            )
            .await
        {
            return page;
        }
        return PasskeyError::Expired.page();
    }
    match assert(&state, &form, &ceremony, address).await {
        Ok((user, backup_eligible)) => {
            let factor = crate::sessions::with_passkey(backup_eligible);
            let (method, roles) = match ceremony.purpose {
                Purpose::SecondFactor => (format!("password{factor}"), ceremony.roles),
                _ => (format!("{}{factor}", crate::sessions::PASSKEY), user.roles),
            };
            finish_sign_in(&state, &request, &user.username, &roles, &method).await
        }
        Err(e @ (PasskeyError::Refused(_) | PasskeyError::Field(_))) => {
            tracing::info!(reason = %e, "passkey sign-in refused");
            let user = match &ceremony.username {
                Some(name) => state.store.user(name).await.ok().flatten(),
                None => None,
            };
            let Some(retry) = Ceremony::new(
                ceremony.purpose,
                ceremony.username.as_deref(),
                &ceremony.roles,
            ) else {
                return unavailable();
            };
            sign_in_page(
                &state,
                &headers,
                &request,
                &retry,
                user.as_ref(),
                Some("That passkey was not accepted. Try again, or use another way to sign in."),
                StatusCode::OK,
            )
            .await
        }
        Err(e) => e.page(),
    }
}

/// Checks the assertion `form` carries for `ceremony`, behind the login lockout: the user it
/// signs in and whether the passkey may be synced. A good one's counter and last use are kept.
async fn assert(
    state: &AppState,
    form: &FormBody,
    ceremony: &Ceremony,
    address: Option<IpAddr>,
) -> Result<(User, bool), PasskeyError> {
    let rp = relying_party(state)?;
    let challenge = URL_SAFE_NO_PAD
        .decode(&ceremony.challenge)
        .map_err(|_| PasskeyError::Expired)?;
    let credential = field(form, "credential", webauthn::MAX_CREDENTIAL_ID)?;
    let client_data = field(form, "client_data", webauthn::MAX_CLIENT_DATA)?;
    let authenticator_data = field(form, "authenticator_data", webauthn::MAX_AUTHENTICATOR_DATA)?;
    let signature = field(form, "signature", webauthn::MAX_SIGNATURE)?;
    // The user: the one whose password was right, or the one the passkey names.
    let username = match &ceremony.username {
        Some(name) => name.clone(),
        None => {
            let handle = field(form, "user_handle", webauthn::MAX_USER_HANDLE)?;
            String::from_utf8(handle).map_err(|_| PasskeyError::Field("user_handle"))?
        }
    };
    if crate::config::check_subject(&username).is_err() {
        return Err(PasskeyError::Field("user_handle"));
    }
    let require_uv = ceremony.purpose == Purpose::Passwordless;
    let credential = URL_SAFE_NO_PAD.encode(&credential);
    let mut outcome = Err(PasskeyError::Refused(webauthn::Refused::BadSignature));
    let checked = behind_lockout(state, &username, address, "passkey", async {
        let user = state
            .store
            .user(&username)
            .await
            .map_err(|e| state.store_error(e))?;
        let Some(user) = user.filter(|u| !u.disabled && u.upstream.is_none()) else {
            return Ok(Proof::Wrong);
        };
        let Some(i) = user.passkeys.iter().position(|p| p.id == credential) else {
            return Ok(Proof::Wrong);
        };
        let Ok(public_key) = URL_SAFE_NO_PAD.decode(&user.passkeys[i].public_key) else {
            return Ok(Proof::Wrong);
        };
        let stored = Stored {
            public_key: &public_key,
            sign_count: user.passkeys[i].sign_count,
        };
        let asserted = match rp.authenticate(
            &challenge,
            &client_data,
            &authenticator_data,
            &signature,
            stored,
            require_uv,
        ) {
            Ok(asserted) => asserted,
            Err(refused) => {
                outcome = Err(PasskeyError::Refused(refused));
                return Ok(Proof::Wrong);
            }
        };
        // The credential id names this user alone (a passkey added before ids were claimed is
        // claimed on its first use).
        let claim = state
            .store
            .claim_passkey(&credential, &username)
            .await
            .map_err(|e| state.store_error(e))?;
        if claim == Claimed::ByAnother {
            tracing::warn!(subject = ?tokengate_server::Outside(&username), "passkey refused: its credential id is another user's");
            return Ok(Proof::Wrong);
        }
        // Counter and last use are kept on the record as it is now (another sign-in or a
        // change may have come in between), the counter checked again against it.
        let now = now_unix();
        let used = change_user(&state.store, &username, now, |u| {
            let Some(p) = u.passkeys.iter_mut().find(|p| p.id == credential) else {
                return Err(None);
            };
            if (asserted.sign_count != 0 || p.sign_count != 0)
                && asserted.sign_count <= p.sign_count
            {
                return Err(Some(webauthn::Refused::CounterRegression));
            }
            p.sign_count = asserted.sign_count;
            p.last_used_at = now;
            Ok(p.backup_eligible)
        })
        .await
        .map_err(|e| state.store_error(e))?;
        match used {
            Changed::Done(user, backup_eligible) => {
                outcome = Ok((user, backup_eligible));
                Ok(Proof::Right)
            }
            // Removed meanwhile.
            Changed::Refused(None) => Ok(Proof::Gone),
            Changed::Refused(Some(refused)) => {
                outcome = Err(PasskeyError::Refused(refused));
                Ok(Proof::Wrong)
            }
            Changed::Missing => Ok(Proof::Gone),
        }
    })
    .await;
    match checked {
        Ok(Ok(())) => outcome,
        Ok(Err(Refused::Locked(wait))) => Err(PasskeyError::Locked(wait)),
        Ok(Err(Refused::Wrong)) => match outcome {
            Err(e) => Err(e),
            Ok(_) => Err(PasskeyError::Refused(webauthn::Refused::BadSignature)),
        },
        Err(ApiError::Locked(wait)) => Err(PasskeyError::Locked(wait)),
        Err(_) => Err(PasskeyError::Unavailable),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_shown_as_days() {
        assert_eq!(day(0), "1970-01-01");
        assert_eq!(day(951_782_400), "2000-02-29");
        assert_eq!(day(1_764_892_800), "2025-12-05");
    }

    #[test]
    fn fields_are_bounded_before_they_are_decoded() {
        let form = FormBody::from_query(Some("a=AAAA&b=%2B%2B&c=")).expect("form");
        assert_eq!(field(&form, "a", 3).expect("a"), [0, 0, 0]);
        assert!(matches!(
            field(&form, "a", 2),
            Err(PasskeyError::Field("a"))
        ));
        assert!(matches!(
            field(&form, "b", 10),
            Err(PasskeyError::Field("b"))
        ));
        assert!(matches!(
            field(&form, "c", 10),
            Err(PasskeyError::Field("c"))
        ));
        assert!(matches!(
            field(&form, "d", 10),
            Err(PasskeyError::Field("d"))
        ));
    }
}
