//! `/auth/verify`: forward-auth for proxies that ask the IdP about each request.

use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::Deserialize;
use tokengate_store::{Session, SessionKind, now_unix};

use crate::error::ApiError;
use crate::extract::bearer;
use crate::state::AppState;

#[derive(Deserialize)]
struct VerifyQuery {
    /// Comma-separated roles, any of which grants access.
    roles: Option<String>,
}

/// Forward-auth (nginx `auth_request`, Traefik ForwardAuth, Envoy ext_authz HTTP).
pub(super) async fn verify(
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
