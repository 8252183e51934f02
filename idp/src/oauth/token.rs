//! `/oauth2/token` (RFC 6749 §3.2): the client is authenticated once, then each grant is
//! answered by its own function.

use std::net::IpAddr;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::HeaderMap;
use tokengate_store::{ReferenceToken, UserDirectory};

use crate::access::Noted;
use crate::clients::Client;
use crate::config::{Grant, check_subject};
use crate::credentials::Kind;
use crate::error::ApiError;
use crate::extract::{self, ClientAddr, FormBody};
use crate::metrics::GrantLabels;
use crate::oauth::authorize;
use crate::oauth::reply::token_response;
use crate::oauth::scope::{Granted, Scope};
use crate::second_factor;
use crate::sessions::{Issued, NewSession};
use crate::state::AppState;

fn grant_type(name: &str) -> Result<Grant, ApiError> {
    match name {
        "password" => Ok(Grant::Password),
        "client_credentials" => Ok(Grant::ClientCredentials),
        "authorization_code" => Ok(Grant::AuthorizationCode),
        _ => Err(ApiError::UnsupportedGrantType),
    }
}

/// Every grant comes from a client that may use it: a confidential client authenticated by its
/// secret, or a public client by its id (RFC 6749 §3.2.1). The grant itself is answered by its
/// own function below.
pub(super) async fn token(
    State(state): State<AppState>,
    ClientAddr(address): ClientAddr,
    headers: HeaderMap,
    form: FormBody,
) -> Response {
    let mut noted = Noted::default();
    let mut response = answer(&state, address, &headers, &form, &mut noted)
        .await
        .into_response();
    response.extensions_mut().insert(noted);
    response
}

/// The token endpoint's answer; what the access log tells of the request goes into `noted`
/// as it is learned (as presented: also when it turns out wrong).
async fn answer(
    state: &AppState,
    address: Option<IpAddr>,
    headers: &HeaderMap,
    form: &FormBody,
    noted: &mut Noted,
) -> Result<Response, ApiError> {
    noted.client_id = match extract::basic(headers) {
        Ok(Some((id, _))) => Some(id),
        _ => form.get("client_id").ok().flatten().map(str::to_owned),
    };
    let grant = grant_type(form.require("grant_type", "grant_type is required")?)?;
    noted.grant = Some(grant.as_str());
    if grant == Grant::Password {
        noted.subject = form.get("username").ok().flatten().map(str::to_owned);
    }
    let state = state.clone();
    let client = state
        .client(headers, form, address)
        .await
        .inspect_err(|e| {
            if matches!(e, ApiError::InvalidClient) {
                count_failed(&state, grant);
            }
        })?
        .ok_or(ApiError::InvalidClient)
        .inspect_err(|_| count_failed(&state, grant))?;
    if !client.may_use(grant) {
        tracing::info!(client_id = %client.id, grant = grant.as_str(), "grant not allowed for this client");
        return Err(ApiError::UnauthorizedClient(
            "this client may not use this grant type",
        ));
    }
    let scope = Scope::parse(form.get("scope")?)?;
    match grant {
        Grant::Password => password(&state, &client, form, &scope, address).await,
        Grant::ClientCredentials => client_credentials(&state, &client, &scope).await,
        Grant::AuthorizationCode => authorize::exchange(&state, &client, form).await,
    }
}

/// Counts a failed login through `grant`.
fn count_failed(state: &AppState, grant: Grant) {
    state
        .metrics
        .logins_failed
        .get_or_create(&GrantLabels {
            grant: grant.as_str(),
        })
        .inc();
}

/// `grant_type=password`: a user's name and password, behind the login throttle; the session is
/// the user's, unless the user was disabled or deleted meanwhile.
async fn password(
    state: &AppState,
    client: &Client,
    form: &FormBody,
    scope: &Scope,
    address: Option<IpAddr>,
) -> Result<Response, ApiError> {
    let username = form.require("username", "username is required")?;
    let password = form.require("password", "password is required")?;
    let roles = match check_subject(username) {
        Ok(()) => {
            state
                .check_credentials(Kind::User, username, password, address)
                .await?
        }
        Err(_) => None,
    };
    let Some(roles) = roles else {
        count_failed(state, Grant::Password);
        tracing::info!(username, "login failed");
        return Err(ApiError::InvalidGrant);
    };
    // A user with a second factor sends its code as `otp`.
    let user = state
        .store
        .user(username)
        .await
        .map_err(|e| state.store_error(e))?;
    let mut method = Grant::Password.as_str().to_owned();
    let secret = user.and_then(|u| u.otp_secret);
    if secret.is_none() && state.mfa_required(&roles, client) {
        return Err(ApiError::InvalidRequest(
            "this user must sign in with a second factor: enrol one at /account/otp first",
        ));
    }
    if let Some(secret) = secret {
        let code = form.require(
            "otp",
            "otp is required: this user signs in with a second factor",
        )?;
        match second_factor::check_code(state, username, &secret, code, address).await? {
            Ok(()) => {}
            Err(second_factor::Refused::Wrong) => {
                count_failed(state, Grant::Password);
                return Err(ApiError::InvalidGrant);
            }
            Err(second_factor::Refused::Locked(wait)) => return Err(ApiError::Locked(wait)),
        }
        method.push_str(crate::sessions::WITH_OTP);
    }
    let granted = scope.grant(&roles)?;
    let new = NewSession::access(username, granted.roles.clone(), &method).for_client(&client.id);
    let issued = state
        .issue_admitted(ReferenceToken::generate(), new)
        .await?
        .ok_or(ApiError::InvalidGrant)?;
    Ok(issued_answer(
        state,
        Grant::Password,
        client,
        &issued,
        &granted,
    ))
}

/// `grant_type=client_credentials`: the client's own session, with the roles it holds (as
/// configured, or as an administrator set them).
async fn client_credentials(
    state: &AppState,
    client: &Client,
    scope: &Scope,
) -> Result<Response, ApiError> {
    let roles = state
        .issuer
        .roles_of(&client.id, &client.roles)
        .await
        .map_err(|e| state.store_error(e))?;
    let granted = scope.grant(&roles)?;
    let new = NewSession::access(
        &client.id,
        granted.roles.clone(),
        Grant::ClientCredentials.as_str(),
    )
    .for_client(&client.id);
    let issued = state
        .issuer
        .issue(new)
        .await
        .map_err(|e| state.issue_error(e))?;
    Ok(issued_answer(
        state,
        Grant::ClientCredentials,
        client,
        &issued,
        &granted,
    ))
}

/// The answer for a session issued through `grant`, counted and logged; the scope is named when
/// it differs from the one asked for.
fn issued_answer(
    state: &AppState,
    grant: Grant,
    client: &Client,
    issued: &Issued,
    granted: &Granted,
) -> Response {
    state.count_issued(grant.as_str());
    tracing::info!(subject = %issued.session.subject, client_id = %client.id, session = %issued.session.id, grant = grant.as_str(), "session issued");
    token_response(issued, granted.differs.then_some(granted.scope.as_str()))
}
