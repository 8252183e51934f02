//! `/oauth2/revoke` (RFC 7009).

use axum::extract::State;
use http::{HeaderMap, StatusCode};
use tokengate_store::{ReferenceToken, SessionAdmin, SessionRead};

use crate::error::ApiError;
use crate::extract::{ClientAddr, FormBody};
use crate::metrics::KindLabels;
use crate::state::AppState;

/// RFC 7009: the client authenticates (a public client names itself) and may revoke only
/// tokens issued to it (§2.1). Unknown tokens get 200 too, so the answer tells nothing.
pub(super) async fn revoke(
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
            if let Some(session) = &session {
                crate::outbox::queue(&state, std::slice::from_ref(session)).await;
            }
        }
    }
    Ok(StatusCode::OK)
}
