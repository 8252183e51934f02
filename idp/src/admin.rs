//! The admin listener: sessions, forced logout, roles, and minting sessions for subjects that
//! another login system authenticated. Every `/admin` route needs the admin bearer token.

use axum::extract::{Path, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use tokengate_store::{SessionId, TokenStore};

use crate::AppState;
use crate::config::{check_roles, check_subject};
use crate::error::ApiError;
use crate::extract::{JsonBody, bearer};
use crate::metrics::{GrantLabels, KindLabels};
use crate::oauth::token_response;
use crate::sessions::NewSession;

pub fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route(
            "/admin/users/{username}/sessions",
            get(list_sessions).delete(logout),
        )
        .route("/admin/users/{username}/roles", put(set_roles))
        .route("/admin/sessions/{id}", delete(revoke_session))
        .route("/admin/sessions", post(mint_session))
        .route_layer(middleware::from_fn_with_state(state, require_admin))
}

/// Refuses a missing or wrong admin token (compared in constant time).
async fn require_admin(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let ok = bearer(req.headers())
        .ok()
        .flatten()
        .is_some_and(|t| state.is_admin_token(t));
    if !ok {
        state.metrics.admin_auth_failures.inc();
        return Err(ApiError::AdminUnauthorized);
    }
    Ok(next.run(req).await)
}

fn subject(username: &str) -> Result<&str, ApiError> {
    check_subject(username).map_err(|_| ApiError::InvalidRequest("invalid username"))?;
    Ok(username)
}

async fn list_sessions(
    State(state): State<AppState>,
    Path(username): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let sessions = state
        .store
        .sessions(subject(&username)?)
        .await
        .map_err(|e| state.store_error(e))?;
    let list: Vec<_> = sessions
        .iter()
        .map(|s| {
            serde_json::json!({
                "id": s.id.as_str(),
                "created_at": s.created_at,
                "last_used_at": s.last_used_at,
                "expires_at": s.expires_at(),
                "roles": s.roles,
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "sessions": list })))
}

async fn logout(
    State(state): State<AppState>,
    Path(username): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let revoked = state
        .store
        .revoke_subject(subject(&username)?)
        .await
        .map_err(|e| state.store_error(e))?;
    state
        .metrics
        .revocations
        .get_or_create(&KindLabels { kind: "subject" })
        .inc_by(revoked.len() as u64);
    tracing::info!(subject = %username, revoked = revoked.len(), "forced logout");
    Ok(Json(serde_json::json!({ "revoked": revoked.len() })))
}

async fn revoke_session(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = SessionId::parse(&id).ok_or(ApiError::NotFound)?;
    if !state
        .store
        .revoke(&id)
        .await
        .map_err(|e| state.store_error(e))?
    {
        return Err(ApiError::NotFound);
    }
    state
        .metrics
        .revocations
        .get_or_create(&KindLabels { kind: "session" })
        .inc();
    tracing::info!(session = %id, "session revoked by an administrator");
    Ok(Json(serde_json::json!({ "revoked": 1 })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RolesBody {
    roles: Vec<String>,
}

async fn set_roles(
    State(state): State<AppState>,
    Path(username): Path<String>,
    JsonBody(body): JsonBody<RolesBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let username = subject(&username)?;
    check_roles(&body.roles).map_err(|_| ApiError::InvalidRequest("invalid roles"))?;
    let updated = state
        .issuer
        .set_roles(username, &body.roles)
        .await
        .map_err(|e| state.issue_error(e))?;
    tracing::info!(subject = %username, sessions = updated, "roles replaced");
    Ok(Json(
        serde_json::json!({ "roles": body.roles, "sessions_updated": updated }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MintBody {
    username: String,
    roles: Option<Vec<String>>,
}

async fn mint_session(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<MintBody>,
) -> Result<Response, ApiError> {
    let username = subject(&body.username)?;
    let roles = match body.roles {
        Some(roles) => roles,
        None => {
            let configured = state.credentials.user_roles(username).unwrap_or_default();
            state
                .issuer
                .roles_of(username, configured)
                .await
                .map_err(|e| state.store_error(e))?
        }
    };
    check_roles(&roles).map_err(|_| ApiError::InvalidRequest("invalid roles"))?;
    let issued = state
        .issuer
        .issue(NewSession::access(username, roles, "admin"))
        .await
        .map_err(|e| state.issue_error(e))?;
    state
        .metrics
        .tokens_issued
        .get_or_create(&GrantLabels { grant: "admin" })
        .inc();
    tracing::info!(subject = %username, session = %issued.session.id, "session minted by an administrator");
    Ok(token_response(&issued))
}
