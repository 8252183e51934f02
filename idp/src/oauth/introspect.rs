//! `/oauth2/introspect` (RFC 7662).

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, header};
use tokengate_store::SessionKind;

use crate::error::ApiError;
use crate::extract::{ClientAddr, FormBody, bearer};
use crate::state::AppState;

/// RFC 7662; the caller authenticates with the admin token or as a confidential client.
pub(super) async fn introspect(
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
