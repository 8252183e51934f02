//! OpenID Connect Back-Channel Logout 1.0, received from upstream providers: a person's session
//! at the provider ends, and so do the tokengate sessions made from signing in there.
//!
//! At a sign-in through a provider with `backchannel_logout = true`, the IdP notes in the store
//! which user the provider's `sid` and `sub` belong to (for the longest a session lasts). The
//! provider POSTs a logout token to `/oauth2/upstream/{name}/backchannel-logout`; once it
//! verifies (`crate::upstreams`) and its `jti` is new to every replica, every session of that
//! user made through that provider ends (the single sign-on session too), gateways drop them
//! from the event stream, and the audit trail names the provider as the actor.
//!
//! A `sid` ends all of the user's sessions from that provider, not only those of the one
//! sign-in: sessions made through the code flow do not carry the upstream session they came
//! from, and ending more than asked errs on the safe side.

use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http::{HeaderValue, StatusCode, header};
use serde_json::{Map, Value};
use tokengate_store::{CodeId, Notes, SessionAdmin};

use crate::audit::{self, Actor};
use crate::error::ApiError;
use crate::extract::{ClientAddr, FormBody};
use crate::metrics::{KindLabels, UpstreamReasonLabels};
use crate::state::{AppState, Live};
use crate::upstreams::{LOGOUT_TOKEN_MAX_AGE, Upstream, UpstreamError};

/// The public listener's route for logout tokens.
pub fn routes() -> Router<Live> {
    Router::new().route("/oauth2/upstream/{name}/backchannel-logout", post(receive))
}

/// The store's name for what a provider's `kind` (`sid`, `sub`, `jti`) of `value` refers to.
fn note_id(kind: &str, upstream: &str, value: &str) -> CodeId {
    CodeId::of_code(&format!("upstream-{kind}\u{0}{upstream}\u{0}{value}"))
}

/// Notes which user the provider's session (`sid`) and subject (`sub`) of a sign-in belong to,
/// when the provider may log them out. A failure is logged: the sign-in goes on, and only a
/// logout from the provider would miss it.
pub async fn remember_sign_in(
    state: &AppState,
    upstream: &Upstream,
    claims: &Map<String, Value>,
    username: &str,
) {
    if !upstream.config.backchannel_logout {
        return;
    }
    let ttl = Duration::from_secs(state.issuer.max_lifetime());
    let name = upstream.name();
    for kind in ["sid", "sub"] {
        let Some(value) = claims.get(kind).and_then(Value::as_str) else {
            continue;
        };
        let id = note_id(kind, name, value);
        if let Err(e) = state.store.put_note(&id, username, ttl).await {
            let _ = state.store_error(e);
            tracing::warn!(upstream = %name, "a back-channel logout from this sign-in's provider would not find its sessions");
        }
    }
}

/// `POST /oauth2/upstream/{name}/backchannel-logout` with a `logout_token`: `200` once the
/// sessions ended (or there were none), `400` for a token that does not verify or was used
/// before (nothing ends), `503` while the provider's keys cannot be fetched.
async fn receive(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ClientAddr(address): ClientAddr,
    form: FormBody,
) -> Result<Response, ApiError> {
    let upstream = state
        .upstreams
        .get(&name)
        .filter(|u| u.config.backchannel_logout)
        .ok_or(ApiError::NotFound)?
        .clone();
    let token = form.require("logout_token", "logout_token is required")?;
    let refused = |reason: &'static str| {
        state
            .metrics
            .upstream_failures
            .get_or_create(&UpstreamReasonLabels {
                upstream: name.clone(),
                reason,
            })
            .inc();
    };
    let logout = match upstream.verify_logout(&state.metrics, token).await {
        Ok(logout) => logout,
        Err(e @ (UpstreamError::Unreachable(_) | UpstreamError::Timeout(_))) => {
            tracing::warn!(upstream = %name, error = %e, "back-channel logout: the provider's keys cannot be fetched");
            refused(e.reason());
            return Err(ApiError::Unavailable);
        }
        Err(e) => {
            tracing::info!(upstream = %name, error = %e, "back-channel logout token refused");
            refused(e.reason());
            return Err(ApiError::InvalidRequest("invalid logout token"));
        }
    };
    // Every replica shares the store: a token is taken once, by one of them.
    let ttl = Duration::from_secs(LOGOUT_TOKEN_MAX_AGE + 60);
    let first = state
        .store
        .put_note_once(&note_id("jti", &name, &logout.jti), "used", ttl)
        .await
        .map_err(|e| state.store_error(e))?;
    if !first {
        tracing::info!(upstream = %name, "back-channel logout token replayed");
        refused("replayed");
        return Err(ApiError::InvalidRequest("logout token used before"));
    }
    let mut username = None;
    for (kind, value) in [("sid", &logout.sid), ("sub", &logout.sub)] {
        if username.is_some() {
            break;
        }
        if let Some(value) = value {
            username = state
                .store
                .note(&note_id(kind, &name, value))
                .await
                .map_err(|e| state.store_error(e))?;
        }
    }
    let ended = match &username {
        Some(username) => end_sessions(&state, &name, username).await?,
        None => 0,
    };
    if let Some(username) = &username {
        let actor = Actor {
            who: format!("{}{name}", crate::sessions::UPSTREAM),
            address,
        };
        audit::record(&state, &actor, "session.backchannel_logout", username).await;
    }
    tracing::info!(upstream = %name, subject = ?username.as_deref().map(tokengate_server::Outside), ended, "back-channel logout from the provider");
    let mut response = StatusCode::OK.into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// Ends every live session of `username` made through `upstream`; answers how many.
async fn end_sessions(state: &AppState, upstream: &str, username: &str) -> Result<usize, ApiError> {
    let sessions = state
        .store
        .sessions(username)
        .await
        .map_err(|e| state.store_error(e))?;
    let mut ended = Vec::new();
    // The provider's factors follow its name in the method (`sessions::upstream_method`).
    let through =
        |s: &tokengate_store::Session| crate::sessions::upstream_of(&s.method) == Some(upstream);
    for session in sessions.into_iter().filter(through) {
        if state
            .store
            .revoke(&session.id)
            .await
            .map_err(|e| state.store_error(e))?
        {
            ended.push(session);
        }
    }
    crate::outbox::queue(state, &ended).await;
    let ended = ended.len();
    state
        .metrics
        .revocations
        .get_or_create(&KindLabels {
            kind: "backchannel_logout",
        })
        .inc_by(ended as u64);
    Ok(ended)
}
