//! The admin listener: users, sessions, forced logout, roles, minting sessions for subjects
//! that another login system authenticated, and the audit trail. Every `/admin` route needs the
//! admin bearer token. The actions that change something are functions of their own, taking
//! the [`Actor`], so the console does exactly what the API does, and both leave an audit entry.

use axum::extract::{Path, RawQuery, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use http::StatusCode;
use serde::Deserialize;
use tokengate_store::{
    AuditTrail, Changed, MAX_AUDIT_PAGE, MAX_USERS_PAGE, ReferenceToken, SessionAdmin, SessionId,
    SessionRead, User, UserDirectory, change_user, now_unix,
};

use crate::audit::{self, Actor};
use crate::config::{MAX_SUBJECT_LEN, check_roles, check_subject};
use crate::error::ApiError;
use crate::extract::{ClientAddr, JsonBody, bearer};
use crate::metrics::KindLabels;
use crate::oauth::reply::token_response;
use crate::outbox;
use crate::sessions::NewSession;
use crate::state::{AppState, Live};
use crate::users::check_password;

/// Users per page of `GET /admin/users` unless `limit` says otherwise.
const DEFAULT_PAGE: usize = 100;

/// The `/admin/*` API routes, every one behind `require_admin` (the admin token).
pub fn routes(live: Live) -> Router<Live> {
    Router::new()
        .route("/admin/users", post(create_user).get(list_users))
        .route(
            "/admin/users/{username}",
            get(get_user).patch(update_user).delete(delete_user),
        )
        .route(
            "/admin/users/{username}/sessions",
            get(list_sessions).delete(logout),
        )
        .route("/admin/users/{username}/roles", put(set_roles))
        .route("/admin/users/{username}/passkeys", get(list_passkeys))
        .route(
            "/admin/users/{username}/passkeys/{id}",
            delete(delete_passkey),
        )
        .route("/admin/sessions/{id}", delete(revoke_session))
        .route("/admin/sessions", post(mint_session))
        .route("/admin/audit", get(read_audit))
        .route_layer(middleware::from_fn_with_state(live, require_admin))
}

/// Refuses a missing or wrong admin token (compared in constant time).
pub(crate) async fn require_admin(
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

/// `username` if it is a valid subject name, else `400 invalid_request` (also used by the
/// console).
pub fn subject(username: &str) -> Result<&str, ApiError> {
    check_subject(username).map_err(|_| ApiError::InvalidRequest("invalid username"))?;
    Ok(username)
}

/// `400 invalid_request` unless every role is valid (see `config::check_roles`).
pub fn valid_roles(roles: &[String]) -> Result<(), ApiError> {
    check_roles(roles).map_err(|_| ApiError::InvalidRequest("invalid roles"))
}

/// A user as the admin API shows it: never the password hash.
fn user_json(user: &User) -> serde_json::Value {
    serde_json::json!({
        "username": user.username,
        "roles": user.roles,
        "disabled": user.disabled,
        "upstream": user.upstream,
        "second_factor": user.otp_secret.is_some(),
        "created_at": user.created_at,
        "updated_at": user.updated_at,
    })
}

/// The hash of a password an administrator set, once it is checked.
async fn new_password_hash(state: &AppState, password: &str) -> Result<String, ApiError> {
    check_password(password).map_err(ApiError::InvalidRequest)?;
    state.users.hash(password).await.map_err(|e| {
        tracing::error!(error = %e, "hashing a new password failed");
        ApiError::Internal
    })
}

/// The stored user of that name, or 404.
async fn stored_user(state: &AppState, username: &str) -> Result<User, ApiError> {
    state
        .store
        .user(username)
        .await
        .map_err(|e| state.store_error(e))?
        .ok_or(ApiError::NotFound)
}

/// Changes the stored user of that name by `apply`, from a fresh read each time the record
/// changed under it (`change_user`: no change made meanwhile is lost); 404 if there is none,
/// and `apply`'s error when it refuses the user as stored. Answers the user as written.
async fn change_stored(
    state: &AppState,
    username: &str,
    apply: impl FnMut(&mut User) -> Result<(), ApiError> + Send,
) -> Result<User, ApiError> {
    match change_user(&state.store, username, now_unix(), apply)
        .await
        .map_err(|e| state.store_error(e))?
    {
        Changed::Done(user, ()) => Ok(user),
        Changed::Refused(e) => Err(e),
        Changed::Missing => Err(ApiError::NotFound),
    }
}

/// Revokes every session of a subject; how many were live.
async fn revoke_subject(state: &AppState, subject: &str) -> Result<usize, ApiError> {
    // Read first, for the clients to tell (back-channel logout): a session made in between
    // ends all the same, only unannounced.
    let sessions = state
        .store
        .sessions(subject)
        .await
        .map_err(|e| state.store_error(e))?;
    let revoked = state
        .store
        .revoke_subject(subject)
        .await
        .map_err(|e| state.store_error(e))?;
    let ended: Vec<_> = sessions
        .into_iter()
        .filter(|s| revoked.contains(&s.id))
        .collect();
    outbox::queue(state, &ended).await;
    state
        .metrics
        .revocations
        .get_or_create(&KindLabels { kind: "subject" })
        .inc_by(revoked.len() as u64);
    Ok(revoked.len())
}

/// A user to create.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// 1 to 256 bytes, no control characters.
    pub username: String,
    /// Checked for length, then hashed with argon2id; `None`: no password, so password sign-ins
    /// always fail.
    pub password: Option<String>,
    /// Required (may be empty); each 1 to 128 visible ASCII characters without commas.
    pub roles: Vec<String>,
    /// A disabled user cannot sign in; default `false`.
    #[serde(default)]
    pub disabled: bool,
}

/// Creates a user; [`ApiError::Conflict`] if the name is taken.
pub async fn create(state: &AppState, actor: &Actor, new: NewUser) -> Result<User, ApiError> {
    let username = subject(&new.username)?;
    valid_roles(&new.roles)?;
    let password_hash = match &new.password {
        Some(password) => Some(new_password_hash(state, password).await?),
        None => None,
    };
    let now = now_unix();
    let user = User {
        username: username.to_owned(),
        password_hash,
        roles: new.roles,
        disabled: new.disabled,
        upstream: None,
        otp_secret: None,
        recovery_codes: Vec::new(),
        passkeys: Vec::new(),
        created_at: now,
        updated_at: now,
    };
    let created = state
        .store
        .create_user(&user)
        .await
        .map_err(|e| state.store_error(e))?;
    if !created {
        return Err(ApiError::Conflict);
    }
    tracing::info!(username = %user.username, "user created");
    audit::record(state, actor, "user.create", &user.username).await;
    Ok(user)
}

async fn create_user(
    State(state): State<AppState>,
    ClientAddr(address): ClientAddr,
    JsonBody(body): JsonBody<NewUser>,
) -> Result<Response, ApiError> {
    let user = create(&state, &Actor::admin_token(address), body).await?;
    Ok((StatusCode::CREATED, Json(user_json(&user))).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    #[serde(default)]
    prefix: String,
    cursor: Option<String>,
    limit: Option<usize>,
}

async fn list_users(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<serde_json::Value>, ApiError> {
    let query: ListQuery = serde_urlencoded::from_str(query.as_deref().unwrap_or(""))
        .map_err(|_| ApiError::InvalidRequest("malformed query"))?;
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_USERS_PAGE).contains(&limit) {
        return Err(ApiError::InvalidRequest("limit must be 1 to 1000"));
    }
    let cursor = query.cursor.filter(|c| !c.is_empty());
    let too_long = |s: &str| s.len() > MAX_SUBJECT_LEN;
    if too_long(&query.prefix) || cursor.as_deref().is_some_and(too_long) {
        return Err(ApiError::InvalidRequest(
            "prefix and cursor must be at most 256 bytes",
        ));
    }
    let page = state
        .store
        .list_users(&query.prefix, cursor.as_deref(), limit)
        .await
        .map_err(|e| state.store_error(e))?;
    let users: Vec<_> = page.users.iter().map(user_json).collect();
    Ok(Json(
        serde_json::json!({ "users": users, "next": page.next }),
    ))
}

/// Longest credential id taken in a path: 1023 bytes (WebAuthn's bound) in base64url.
const MAX_PASSKEY_ID: usize = 1364;

/// A user's passkey as the admin API shows it (never its key).
fn passkey_json(passkey: &tokengate_store::Passkey) -> serde_json::Value {
    serde_json::json!({
        "id": passkey.id,
        "synced": passkey.backup_eligible,
        "sign_count": passkey.sign_count,
        "created_at": passkey.created_at,
        "last_used_at": passkey.last_used_at,
    })
}

/// `GET /admin/users/{username}/passkeys`.
async fn list_passkeys(
    State(state): State<AppState>,
    Path(username): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let user = stored_user(&state, subject(&username)?).await?;
    let passkeys: Vec<_> = user.passkeys.iter().map(passkey_json).collect();
    Ok(Json(serde_json::json!({ "passkeys": passkeys })))
}

/// Removes one passkey of a user (a lost or stolen device), audited; 404 when the user has no
/// passkey of that id. Their sessions stay: end them too when the device was stolen.
pub async fn remove_passkey(
    state: &AppState,
    actor: &Actor,
    username: &str,
    id: &str,
) -> Result<(), ApiError> {
    let username = subject(username)?;
    if id.is_empty() || id.len() > MAX_PASSKEY_ID {
        return Err(ApiError::InvalidRequest("invalid passkey id"));
    }
    change_stored(state, username, |user| {
        let before = user.passkeys.len();
        user.passkeys.retain(|p| p.id != id);
        if user.passkeys.len() == before {
            return Err(ApiError::NotFound);
        }
        Ok(())
    })
    .await?;
    crate::passkeys::release(state, id, username).await;
    tracing::info!(subject = ?tokengate_server::Outside(username), "passkey removed by an administrator");
    audit::record(state, actor, "user.passkey_remove", username).await;
    Ok(())
}

/// `DELETE /admin/users/{username}/passkeys/{id}`.
async fn delete_passkey(
    State(state): State<AppState>,
    ClientAddr(address): ClientAddr,
    Path((username, id)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    remove_passkey(&state, &Actor::admin_token(address), &username, &id).await?;
    Ok(Json(serde_json::json!({ "removed": 1 })))
}

async fn get_user(
    State(state): State<AppState>,
    Path(username): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let user = stored_user(&state, subject(&username)?).await?;
    Ok(Json(user_json(&user)))
}

/// A change to a user: each field that is there replaces what the user had.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    /// A new password (8 to 1024 bytes), hashed before it is stored.
    pub password: Option<String>,
    /// Replaces every role, in the user's live sessions too.
    pub roles: Option<Vec<String>>,
    /// `true` also revokes every session of the user.
    pub disabled: Option<bool>,
    /// `false` removes the user's second factor (a lost phone): they sign in with a password
    /// alone until they enrol again. `true` is refused: only the user can enrol.
    pub second_factor: Option<bool>,
}

/// Changes a user. New roles reach every live session too; disabling revokes every session
/// (after the user is saved disabled, so no sign-in racing it keeps a session). Answers the
/// user as the API shows it, with `revoked` or `sessions_updated`.
pub async fn change(
    state: &AppState,
    actor: &Actor,
    username: &str,
    patch: UserPatch,
) -> Result<serde_json::Value, ApiError> {
    let username = subject(username)?;
    if let Some(roles) = &patch.roles {
        valid_roles(roles)?;
    }
    if patch.second_factor == Some(true) {
        return Err(ApiError::InvalidRequest(
            "second_factor can only be removed (false): a user enrols at /account/otp",
        ));
    }
    let password_hash = match &patch.password {
        Some(password) => Some(new_password_hash(state, password).await?),
        None => None,
    };
    let user = change_stored(state, username, |user| {
        if let Some(hash) = &password_hash {
            user.password_hash = Some(hash.clone());
        }
        if let Some(roles) = &patch.roles {
            user.roles = roles.clone();
        }
        if let Some(disabled) = patch.disabled {
            user.disabled = disabled;
        }
        if patch.second_factor == Some(false) {
            user.otp_secret = None;
            user.recovery_codes.clear();
        }
        Ok(())
    })
    .await?;
    let mut body = user_json(&user);
    if patch.password.is_some() {
        audit::record(state, actor, "user.password", username).await;
    }
    if patch.second_factor == Some(false) {
        audit::record(state, actor, "user.second_factor_remove", username).await;
    }
    match patch.disabled {
        Some(true) => {
            let revoked = revoke_subject(state, username).await?;
            tracing::info!(subject = ?tokengate_server::Outside(username), revoked, "user disabled");
            audit::record(state, actor, "user.disable", username).await;
            body["revoked"] = revoked.into();
            return Ok(body);
        }
        Some(false) => audit::record(state, actor, "user.enable", username).await,
        None => {}
    }
    if let Some(roles) = &patch.roles {
        let updated = state
            .issuer
            .set_roles(username, roles)
            .await
            .map_err(|e| state.issue_error(e))?;
        tracing::info!(subject = ?tokengate_server::Outside(username), sessions = updated, "user's roles replaced");
        audit::record(state, actor, &roles_action(roles), username).await;
        body["sessions_updated"] = updated.into();
    } else {
        tracing::info!(subject = ?tokengate_server::Outside(username), "user changed");
    }
    Ok(body)
}

/// The audit action of setting roles, with the roles set.
fn roles_action(roles: &[String]) -> String {
    format!("user.roles [{}]", roles.join(" "))
}

async fn update_user(
    State(state): State<AppState>,
    ClientAddr(address): ClientAddr,
    Path(username): Path<String>,
    JsonBody(patch): JsonBody<UserPatch>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let body = change(&state, &Actor::admin_token(address), &username, patch).await?;
    Ok(Json(body))
}

/// Deletes a user and revokes every session. The user is disabled first, so that from then on
/// no sign-in keeps a session, and a retry after a failure part-way finds the user still there.
async fn delete_user(
    State(state): State<AppState>,
    ClientAddr(address): ClientAddr,
    Path(username): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let username = subject(&username)?;
    change_stored(&state, username, |user| {
        user.disabled = true;
        Ok(())
    })
    .await?;
    let revoked = revoke_subject(&state, username).await?;
    state
        .store
        .delete_user(username)
        .await
        .map_err(|e| state.store_error(e))?;
    tracing::info!(subject = ?tokengate_server::Outside(username), revoked, "user deleted");
    audit::record(
        &state,
        &Actor::admin_token(address),
        "user.delete",
        username,
    )
    .await;
    Ok(Json(
        serde_json::json!({ "deleted": true, "revoked": revoked }),
    ))
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
                "client_id": s.client_id,
                "method": s.method,
                "amr": crate::sessions::amr(&s.method),
            })
        })
        .collect();
    Ok(Json(serde_json::json!({ "sessions": list })))
}

/// Ends every session of a user (forced logout); how many were live.
pub async fn end_sessions(
    state: &AppState,
    actor: &Actor,
    username: &str,
) -> Result<usize, ApiError> {
    let username = subject(username)?;
    let revoked = revoke_subject(state, username).await?;
    tracing::info!(subject = ?tokengate_server::Outside(username), revoked, "forced logout");
    audit::record(state, actor, "user.logout", username).await;
    Ok(revoked)
}

/// Ends one session; [`ApiError::NotFound`] if it is not live.
pub async fn end_session(state: &AppState, actor: &Actor, id: &str) -> Result<(), ApiError> {
    let id = SessionId::parse(id).ok_or(ApiError::NotFound)?;
    let session = state
        .store
        .lookup(&id)
        .await
        .map_err(|e| state.store_error(e))?;
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
    if let Some(session) = &session {
        outbox::queue(state, std::slice::from_ref(session)).await;
    }
    let target = match session.map(|s| s.subject) {
        Some(owner) => format!("{owner} session {id}"),
        None => format!("session {id}"),
    };
    audit::record(state, actor, "session.revoke", &target).await;
    Ok(())
}

async fn logout(
    State(state): State<AppState>,
    ClientAddr(address): ClientAddr,
    Path(username): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let revoked = end_sessions(&state, &Actor::admin_token(address), &username).await?;
    Ok(Json(serde_json::json!({ "revoked": revoked })))
}

async fn revoke_session(
    State(state): State<AppState>,
    ClientAddr(address): ClientAddr,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    end_session(&state, &Actor::admin_token(address), &id).await?;
    Ok(Json(serde_json::json!({ "revoked": 1 })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RolesBody {
    roles: Vec<String>,
}

async fn set_roles(
    State(state): State<AppState>,
    ClientAddr(address): ClientAddr,
    Path(username): Path<String>,
    JsonBody(body): JsonBody<RolesBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let username = subject(&username)?;
    valid_roles(&body.roles)?;
    // A user in the store signs in with its own roles: they change first.
    match change_stored(&state, username, |user| {
        user.roles = body.roles.clone();
        Ok(())
    })
    .await
    {
        Ok(_) | Err(ApiError::NotFound) => {}
        Err(e) => return Err(e),
    }
    let updated = state
        .issuer
        .set_roles(username, &body.roles)
        .await
        .map_err(|e| state.issue_error(e))?;
    tracing::info!(subject = ?tokengate_server::Outside(username), sessions = updated, "roles replaced");
    let actor = Actor::admin_token(address);
    audit::record(&state, &actor, &roles_action(&body.roles), username).await;
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
    ClientAddr(address): ClientAddr,
    JsonBody(body): JsonBody<MintBody>,
) -> Result<Response, ApiError> {
    let username = subject(&body.username)?;
    let user = state
        .store
        .user(username)
        .await
        .map_err(|e| state.store_error(e))?;
    let disabled = ApiError::InvalidRequest("the user is disabled or was deleted");
    if user.as_ref().is_some_and(|u| u.disabled) {
        return Err(disabled);
    }
    let roles = match (body.roles, &user) {
        (Some(roles), _) => roles,
        (None, Some(user)) => user.roles.clone(),
        (None, None) => state
            .issuer
            .roles_of(username, &[])
            .await
            .map_err(|e| state.store_error(e))?,
    };
    valid_roles(&roles)?;
    let new = NewSession::access(username, roles, "admin");
    let issued = match user {
        // A user's session, unless the user was disabled or deleted meanwhile.
        Some(_) => state
            .issue_admitted(ReferenceToken::generate(), new)
            .await?
            .ok_or(disabled)?,
        None => state
            .issuer
            .issue(new)
            .await
            .map_err(|e| state.issue_error(e))?,
    };
    state.count_issued("admin");
    tracing::info!(subject = ?tokengate_server::Outside(username), session = %issued.session.id, "session minted by an administrator");
    let target = format!("{username} session {}", issued.session.id);
    audit::record(
        &state,
        &Actor::admin_token(address),
        "session.mint",
        &target,
    )
    .await;
    Ok(token_response(&issued, None))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    cursor: Option<String>,
    limit: Option<usize>,
}

/// `GET /admin/audit?cursor=`: the audit trail, newest first, in pages.
async fn read_audit(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<serde_json::Value>, ApiError> {
    let query: AuditQuery = serde_urlencoded::from_str(query.as_deref().unwrap_or(""))
        .map_err(|_| ApiError::InvalidRequest("malformed query"))?;
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_AUDIT_PAGE).contains(&limit) {
        return Err(ApiError::InvalidRequest("limit must be 1 to 1000"));
    }
    let cursor = query.cursor.filter(|c| !c.is_empty());
    let page = state
        .store
        .audit(cursor.as_deref(), limit)
        .await
        .map_err(|e| match e {
            tokengate_store::StoreError::Invalid { .. } => {
                ApiError::InvalidRequest("malformed cursor")
            }
            e => state.store_error(e),
        })?;
    Ok(Json(audit::page_json(&page)))
}
