//! `/oauth2/authorize`: the authorization code flow (RFC 6749 §4.1) with PKCE (RFC 7636, `S256`
//! only) under OAuth 2.1's rules. A person signs in on the IdP's own page, or not at all when
//! the browser holds a live IdP session (single sign-on); the client gets a code bound to itself,
//! its redirect URI, its PKCE challenge and its nonce, good once for a minute.
//!
//! A request whose client or redirect URI cannot be trusted gets an error page and never a
//! redirect (RFC 6749 §4.1.2.1); every other error goes back to the client with `state`.

use std::net::IpAddr;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::response::Response;
use axum::routing::get;
use http::{HeaderMap, StatusCode};
use tokengate_store::{
    AuthCode, CodeId, Codes, Redeemed, ReferenceToken, SessionAdmin, SessionRead,
};

use crate::clients::Client;
use crate::credentials::Kind;
use crate::error::ApiError;
use crate::extract::{ClientAddr, FormBody};
use crate::metrics::{GrantLabels, KindLabels};
use crate::oauth::reply::{token_body, token_reply};
use crate::oauth::request::{
    AuthorizeRequest, Refusal, code_method, finish_sign_in, issue_code, pkce_matches, signed_in,
};
use crate::pages::{self, SignIn};
use crate::sessions::NewSession;
use crate::state::{AppState, Live};

const MAX_USERNAME: usize = 256;
const MAX_PASSWORD: usize = 1024;

/// `/oauth2/authorize` (the sign-in page and its form) and the page's stylesheet.
pub fn routes() -> Router<Live> {
    Router::new()
        .route("/oauth2/authorize", get(show).post(sign_in))
        .route("/oauth2/assets/style.css", get(pages::style))
}

/// `GET /oauth2/authorize`: a code at once with a live IdP session, else the sign-in page.
async fn show(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let params = match FormBody::from_query(query.as_deref()) {
        Ok(params) => params,
        Err(_) => {
            return Refusal::Page("The sign-in link is malformed.")
                .into_response(&state.issuer_name);
        }
    };
    let request = match AuthorizeRequest::parse(&params, &state) {
        Ok(request) => request,
        Err(refusal) => return refusal.into_response(&state.issuer_name),
    };
    if request.prompt.as_deref() != Some("login") {
        match signed_in(&state, &headers).await {
            Ok(Some((session, user))) => {
                // A second factor this sign-in needs and the browser's session lacks: asked
                // now (a code), or enrolled first.
                if request.needs_mfa(&state, &user.roles)
                    && !crate::sessions::has_second_factor(&session.method)
                {
                    if let Some(page) = crate::passkeys::challenge(
                        &state,
                        &headers,
                        &request,
                        &user.username,
                        &user.roles,
                    )
                    .await
                    {
                        return page;
                    }
                    if let Some(page) = crate::second_factor::challenge(
                        &state,
                        &headers,
                        &request,
                        &user.username,
                        &user.roles,
                    )
                    .await
                    {
                        return page;
                    }
                    return crate::second_factor::to_enrolment(&request);
                }
                return issue_code(
                    &state,
                    &request,
                    &user.username,
                    &user.roles,
                    session.created_at,
                    None,
                    &code_method(&session.method),
                )
                .await;
            }
            Ok(None) => {}
            Err(e) => {
                let _ = state.store_error(e);
                return request
                    .refuse("temporarily_unavailable", "the token store is unreachable")
                    .into_response(&state.issuer_name);
            }
        }
    }
    if request.prompt.as_deref() == Some("none") {
        return request
            .refuse("login_required", "no one is signed in")
            .into_response(&state.issuer_name);
    }
    sign_in_page(&state, &headers, &request, None, "", StatusCode::OK)
}

/// `POST /oauth2/authorize`: the sign-in form.
async fn sign_in(
    State(state): State<AppState>,
    ClientAddr(address): ClientAddr,
    headers: HeaderMap,
    form: FormBody,
) -> Response {
    let request = match AuthorizeRequest::parse(&form, &state) {
        Ok(request) => request,
        Err(refusal) => return refusal.into_response(&state.issuer_name),
    };
    if !pages::csrf_matches(&headers, form.get("csrf").ok().flatten().unwrap_or("")) {
        return sign_in_page(
            &state,
            &headers,
            &request,
            Some("This sign-in form expired or did not come from this site. Please sign in again."),
            "",
            StatusCode::FORBIDDEN,
        );
    }
    let username = form.get("username").ok().flatten().unwrap_or("");
    let password = form.get("password").ok().flatten().unwrap_or("");
    if username.len() > MAX_USERNAME || password.len() > MAX_PASSWORD {
        return sign_in_page(
            &state,
            &headers,
            &request,
            Some("Wrong username or password."),
            "",
            StatusCode::BAD_REQUEST,
        );
    }
    match check_password(&state, username, password, address).await {
        Ok(Some(roles)) => {
            if let Some(page) =
                crate::passkeys::challenge(&state, &headers, &request, username, &roles).await
            {
                return page;
            }
            if let Some(page) =
                crate::second_factor::challenge(&state, &headers, &request, username, &roles).await
            {
                return page;
            }
            if request.needs_mfa(&state, &roles) {
                return crate::second_factor::enrol_first(&state, &request, username).await;
            }
            finish_sign_in(&state, &request, username, &roles, "password").await
        }
        Ok(None) => {
            state
                .metrics
                .logins_failed
                .get_or_create(&GrantLabels {
                    grant: "authorization_code",
                })
                .inc();
            sign_in_page(
                &state,
                &headers,
                &request,
                Some("Wrong username or password."),
                username,
                StatusCode::OK,
            )
        }
        Err(ApiError::Locked(wait)) => pages::locked_out(wait),
        Err(_) => pages::message(
            StatusCode::SERVICE_UNAVAILABLE,
            "Try again",
            "Signing in is not possible right now. Please try again in a moment.",
        ),
    }
}

/// The roles of the user behind a password, through the login throttle (the same lockout as
/// the password grant); wrong or unknown names are counted.
async fn check_password(
    state: &AppState,
    username: &str,
    password: &str,
    address: Option<IpAddr>,
) -> Result<Option<Vec<String>>, ApiError> {
    if username.is_empty() || password.is_empty() || crate::config::check_subject(username).is_err()
    {
        return Ok(None);
    }
    state
        .check_credentials(Kind::User, username, password, address)
        .await
}

/// The sign-in page, with the CSRF cookie its form needs.
fn sign_in_page(
    state: &AppState,
    headers: &HeaderMap,
    request: &AuthorizeRequest,
    error: Option<&str>,
    username: &str,
    status: StatusCode,
) -> Response {
    let csrf = pages::csrf_token(headers);
    let targets: Vec<String> = pages::origin(&request.redirect_uri).into_iter().collect();
    let hidden = request.hidden();
    let upstreams = state
        .upstreams
        .names()
        .iter()
        .map(|name| (name.clone(), start_link(name, &hidden)))
        .collect();
    let passkey_link = state.webauthn.as_ref().map(|_| {
        let query = serde_urlencoded::to_string(&hidden).unwrap_or_default();
        format!("/oauth2/authorize/passkey?{query}")
    });
    let page = SignIn {
        client_id: &request.client.id,
        error,
        upstreams,
        hidden,
        csrf: &csrf,
        username,
        passkey_link,
    };
    pages::with_csrf(
        pages::page(status, &page, &targets),
        &csrf,
        state.secure_cookies(),
    )
}

/// The sign-in page's link for upstream `name`, carrying the authorize request (the route is
/// `federation::sign_in`'s).
fn start_link(name: &str, request: &[(&'static str, String)]) -> String {
    let query = serde_urlencoded::to_string(request).unwrap_or_default();
    format!("/oauth2/upstream/{name}/start?{query}")
}

/// Redeems a code for `client`: once, with the redirect URI and PKCE verifier it was issued
/// for; `token` is the session about to be made from it. A second use of a code ends the session
/// its first use made (RFC 6749 §4.1.2).
pub async fn redeem(
    state: &AppState,
    client: &Client,
    code: &str,
    redirect_uri: &str,
    verifier: Option<&str>,
    token: &ReferenceToken,
) -> Result<AuthCode, ApiError> {
    let redeemed = state
        .store
        .redeem_code(&CodeId::of_code(code), &token.session_id())
        .await
        .map_err(|e| state.store_error(e))?;
    let record = match redeemed {
        Redeemed::Fresh(record) => record,
        Redeemed::Replayed(first) => {
            tracing::warn!(client_id = %client.id, "an authorization code was used twice; ending the session it made");
            let session = match &first {
                Some(first) => state
                    .store
                    .lookup(first)
                    .await
                    .map_err(|e| state.store_error(e))?,
                None => None,
            };
            if let Some(first) = first
                && state
                    .store
                    .revoke(&first)
                    .await
                    .map_err(|e| state.store_error(e))?
            {
                crate::outbox::queue(state, session.as_slice()).await;
                state
                    .metrics
                    .revocations
                    .get_or_create(&KindLabels {
                        kind: "code_replay",
                    })
                    .inc();
            }
            return Err(ApiError::InvalidGrant);
        }
        Redeemed::Unknown => return Err(ApiError::InvalidGrant),
    };
    let pkce = match (&record.code_challenge, verifier) {
        (Some(challenge), Some(verifier)) => pkce_matches(verifier, challenge),
        (Some(_), None) | (None, Some(_)) => false,
        (None, None) => !client.is_public(),
    };
    if record.client_id != client.id || record.redirect_uri != redirect_uri || !pkce {
        tracing::info!(client_id = %client.id, "authorization code refused (client, redirect URI or PKCE verifier)");
        return Err(ApiError::InvalidGrant);
    }
    Ok(record)
}

/// `grant_type=authorization_code` at `/oauth2/token`: the code once, by the client it was
/// issued to, with the same redirect URI and the PKCE verifier of its challenge. A second use
/// of a code ends the session its first use made (RFC 6749 §4.1.2).
pub async fn exchange(
    state: &AppState,
    client: &Client,
    form: &FormBody,
) -> Result<Response, ApiError> {
    let code = form.require("code", "code is required")?;
    let redirect_uri = form.require("redirect_uri", "redirect_uri is required")?;
    let verifier = form.get("code_verifier")?;
    let token = ReferenceToken::generate();
    let record = redeem(state, client, code, redirect_uri, verifier, &token).await?;
    let new = NewSession::access(&record.subject, record.roles.clone(), &record.method)
        .for_client(&client.id);
    let issued = state
        .issue_admitted(token, new)
        .await?
        .ok_or(ApiError::InvalidGrant)?;
    state.count_issued("authorization_code");
    tracing::info!(subject = %record.subject, client_id = %client.id, session = %issued.session.id, "session issued for an authorization code");
    let openid = record
        .scope
        .as_deref()
        .is_some_and(|s| s.split(' ').any(|t| t == "openid"));
    let mut body = token_body(&issued, record.scope.as_deref());
    if openid {
        let id_token = crate::oauth::oidc::id_token(
            state,
            &issued.session,
            &client.id,
            record.nonce.clone(),
            record.auth_time,
        )
        .map_err(|e| {
            tracing::error!(error = %e, "signing an ID token failed");
            ApiError::Internal
        })?;
        body["id_token"] = id_token.into();
    }
    Ok(token_reply(body))
}
