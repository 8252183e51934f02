//! The public listener: token endpoint, revocation, introspection, JWKS, forward-auth.

use std::net::IpAddr;

use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::Deserialize;
use tokengate_store::{ReferenceToken, Session, SessionKind, TokenStore, now_unix};

use crate::config::{Grant, check_subject};
use crate::credentials::Kind;
use crate::error::ApiError;
use crate::extract::{ClientAddr, FormBody, bearer};
use crate::metrics::{GrantLabels, KindLabels};
use crate::oauth::authorize;
use crate::oauth::clients::Client;
use crate::oauth::reply::token_response;
use crate::oauth::scope::{Granted, Scope};
use crate::sessions::{Issued, NewSession};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/oauth2/token", post(token))
        .route("/oauth2/revoke", post(revoke))
        .route("/oauth2/introspect", post(introspect))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/auth/verify", any(verify))
}

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
async fn token(
    State(state): State<AppState>,
    ClientAddr(address): ClientAddr,
    headers: HeaderMap,
    form: FormBody,
) -> Result<Response, ApiError> {
    let grant = grant_type(form.require("grant_type", "grant_type is required")?)?;
    let client = state
        .client(&headers, &form, address)
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
        Grant::Password => password(&state, &client, &form, &scope, address).await,
        Grant::ClientCredentials => client_credentials(&state, &client, &scope).await,
        Grant::AuthorizationCode => authorize::exchange(&state, &client, &form).await,
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
    let granted = scope.grant(&roles)?;
    let new = NewSession::access(username, granted.roles.clone(), Grant::Password.as_str())
        .for_client(&client.id);
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

/// RFC 7009: the client authenticates (a public client names itself) and may revoke only
/// tokens issued to it (§2.1). Unknown tokens get 200 too, so the answer tells nothing.
async fn revoke(
    State(state): State<AppState>,
    ClientAddr(address): ClientAddr,
    headers: HeaderMap,
    form: FormBody,
) -> Result<StatusCode, ApiError> {
    let client = state
        .client(&headers, &form, address)
        .await?
        .ok_or(ApiError::InvalidClient)?;
    let token = form.require("token", "token is required")?;
    if let Ok(token) = ReferenceToken::parse(token) {
        let id = token.session_id();
        let session = state
            .store
            .lookup(&id)
            .await
            .map_err(|e| state.store_error(e))?;
        if session
            .as_ref()
            .is_some_and(|s| s.client_id.as_deref() != Some(client.id.as_str()))
        {
            tracing::info!(client_id = %client.id, session = %id, "revocation of another client's token refused");
            return Err(ApiError::UnauthorizedClient(
                "the token was issued to another client",
            ));
        }
        if session.is_some()
            && state
                .store
                .revoke(&id)
                .await
                .map_err(|e| state.store_error(e))?
        {
            state
                .metrics
                .revocations
                .get_or_create(&KindLabels { kind: "token" })
                .inc();
            tracing::info!(session = %id, "session revoked by its token");
        }
    }
    Ok(StatusCode::OK)
}

/// RFC 7662; the caller authenticates with the admin token or as a confidential client.
async fn introspect(
    State(state): State<AppState>,
    ClientAddr(address): ClientAddr,
    headers: HeaderMap,
    form: FormBody,
) -> Result<Response, ApiError> {
    let admin = bearer(&headers)?.is_some_and(|t| state.is_admin_token(t));
    if !admin {
        let client = state.client(&headers, &form, address).await?;
        if client.is_none_or(|c| c.is_public()) {
            return Err(ApiError::InvalidClient);
        }
    }
    let token = form.require("token", "token is required")?;
    let body = match state
        .issuer
        .resolve(token, SessionKind::Access)
        .await
        .map_err(|e| state.store_error(e))?
    {
        Some(s) => serde_json::json!({
            "active": true,
            "sub": s.subject,
            "sid": s.id.as_str(),
            "scope": s.roles.join(" "),
            "roles": s.roles,
            "token_type": "Bearer",
            "iss": state.issuer_name,
            "iat": s.created_at,
            "exp": s.expires_at(),
        }),
        None => serde_json::json!({ "active": false }),
    };
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response())
}

/// The public keys, answered `304` when the caller already has them.
async fn jwks(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let etag = state.keys.etag();
    let fresh = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == "*" || t.as_bytes() == etag.as_bytes());
    let cache = (
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    if fresh {
        return (
            StatusCode::NOT_MODIFIED,
            [(header::ETAG, etag.clone()), cache],
        )
            .into_response();
    }
    (
        [
            (header::ETAG, etag.clone()),
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            cache,
        ],
        state.keys.jwks().clone(),
    )
        .into_response()
}

#[derive(Deserialize)]
struct VerifyQuery {
    /// Comma-separated roles, any of which grants access.
    roles: Option<String>,
}

/// Forward-auth (nginx `auth_request`, Traefik ForwardAuth, Envoy ext_authz HTTP).
async fn verify(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let token = match bearer(&headers) {
        Ok(Some(t)) => t,
        Ok(None) if headers.contains_key(header::AUTHORIZATION) => {
            return Err(ApiError::InvalidToken);
        }
        Ok(None) => return Err(ApiError::MissingToken),
        Err(_) => return Err(ApiError::InvalidToken),
    };
    let session: Session = state
        .issuer
        .resolve(token, SessionKind::Access)
        .await
        .map_err(|e| state.store_error(e))?
        .ok_or(ApiError::InvalidToken)?;
    let query: VerifyQuery = serde_urlencoded::from_str(query.as_deref().unwrap_or(""))
        .map_err(|_| ApiError::InvalidRequest("malformed query"))?;
    if let Some(wanted) = query.roles {
        let allowed = wanted.split(',').map(str::trim).filter(|r| !r.is_empty());
        let mut allowed = allowed.peekable();
        if allowed.peek().is_some()
            && !allowed
                .into_iter()
                .any(|w| session.roles.iter().any(|r| r == w))
        {
            return Err(ApiError::InsufficientScope);
        }
    }
    state.usage.record(&session.id, now_unix());
    // Subjects may be UTF-8 (sent as obs-text); control characters were refused at login.
    let value = |s: &str| HeaderValue::from_bytes(s.as_bytes()).map_err(|_| ApiError::Internal);
    let mut response = StatusCode::OK.into_response();
    let h = response.headers_mut();
    h.insert("x-auth-subject", value(&session.subject)?);
    h.insert("x-auth-roles", value(&session.roles.join(","))?);
    h.insert("x-auth-session", value(session.id.as_str())?);
    h.insert("x-auth-value-token", value(session.value_token.expose())?);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}
