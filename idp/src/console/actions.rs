//! The console's actions (its forms' `POST`s): creating a user, and what a user's page offers
//! (ending sessions, roles, password, disabling, removing a passkey). They call `admin`'s functions, so the console
//! and the admin API leave the same audit entries.

use axum::extract::State;
use axum::response::Response;
use tokengate_store::SessionRead;

use super::auth::{Admin, csrf_refused};
use super::layout::{see_other, unavailable};
use super::pages::{user_link, user_page, users_page};
use crate::admin::{self, NewUser, UserPatch};
use crate::audit::Actor;
use crate::error::ApiError;
use crate::extract::FormBody;
use crate::state::AppState;

/// Roles typed into a field: separated by spaces or commas.
fn roles_field(form: &FormBody) -> Vec<String> {
    form.get("roles")
        .ok()
        .flatten()
        .unwrap_or("")
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|r| !r.is_empty())
        .map(str::to_owned)
        .collect()
}

/// What an action's error says on a page.
fn error_text(e: &ApiError) -> &'static str {
    match e {
        ApiError::InvalidRequest(why) => why,
        ApiError::Conflict => "A user of that name exists already.",
        ApiError::NotFound => "Not found: it may have ended or been deleted meanwhile.",
        _ => "That did not work; please try again in a moment.",
    }
}

/// `POST /console/users`: a new user.
pub(super) async fn create_user(
    State(state): State<AppState>,
    admin: Admin,
    form: FormBody,
) -> Result<Response, Response> {
    if !admin.sent_csrf(&form) {
        return Ok(csrf_refused(&admin));
    }
    let username = form.get("username").ok().flatten().unwrap_or("");
    let new = NewUser {
        username: username.to_owned(),
        password: form.get("password").ok().flatten().map(str::to_owned),
        roles: roles_field(&form),
        disabled: false,
    };
    match admin::create(&state, &admin.actor(), new).await {
        Ok(user) => Ok(see_other(&user_link(&user.username, Some("created")))),
        Err(ApiError::Unavailable) => Err(unavailable()),
        Err(e) => users_page(&state, &admin, "", None, Some(error_text(&e))).await,
    }
}

/// `POST /console/user`: one of the actions on a user's page (`action` names it).
pub(super) async fn user_action(
    State(state): State<AppState>,
    admin: Admin,
    form: FormBody,
) -> Result<Response, Response> {
    if !admin.sent_csrf(&form) {
        return Ok(csrf_refused(&admin));
    }
    let username = form.get("username").ok().flatten().unwrap_or("");
    let actor = admin.actor();
    let result = match form.get("action").ok().flatten().unwrap_or("") {
        "end-session" => {
            let id = form.get("session").ok().flatten().unwrap_or("");
            end_own_session(&state, &actor, username, id)
                .await
                .map(|()| "ended")
        }
        "end-all" => admin::end_sessions(&state, &actor, username)
            .await
            .map(|_| "ended-all"),
        "roles" => {
            let patch = UserPatch {
                roles: Some(roles_field(&form)),
                ..UserPatch::default()
            };
            admin::change(&state, &actor, username, patch)
                .await
                .map(|_| "roles")
        }
        "password" => {
            let patch = UserPatch {
                password: Some(form.get("password").ok().flatten().unwrap_or("").to_owned()),
                ..UserPatch::default()
            };
            admin::change(&state, &actor, username, patch)
                .await
                .map(|_| "password")
        }
        "disable" | "enable" => {
            let disable = form.get("action").ok().flatten() == Some("disable");
            let patch = UserPatch {
                disabled: Some(disable),
                ..UserPatch::default()
            };
            admin::change(&state, &actor, username, patch)
                .await
                .map(|_| if disable { "disabled" } else { "enabled" })
        }
        "remove-passkey" => {
            let id = form.get("passkey").ok().flatten().unwrap_or("");
            admin::remove_passkey(&state, &actor, username, id)
                .await
                .map(|()| "passkey-removed")
        }
        _ => Err(ApiError::InvalidRequest("unknown action")),
    };
    match result {
        Ok(done) => Ok(see_other(&user_link(username, Some(done)))),
        Err(ApiError::Unavailable) => Err(unavailable()),
        Err(e) => user_page(&state, &admin, username, None, Some(error_text(&e))).await,
    }
}

/// Ends one session of `username` (a session id posted for another user is not found).
async fn end_own_session(
    state: &AppState,
    actor: &Actor,
    username: &str,
    id: &str,
) -> Result<(), ApiError> {
    let owned = match tokengate_store::SessionId::parse(id) {
        Some(parsed) => state
            .store
            .lookup(&parsed)
            .await
            .map_err(|e| state.store_error(e))?
            .is_some_and(|s| s.subject == username),
        None => false,
    };
    if !owned {
        return Err(ApiError::NotFound);
    }
    admin::end_session(state, actor, id).await
}
