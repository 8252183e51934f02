//! Federation: signing in through an upstream OpenID Connect provider, turned into an ordinary
//! tokengate sign-in (browser session, authorization code, revocable sessions).
//!
//! 1. `GET /oauth2/upstream/{name}/start?<authorize request>`, linked from the sign-in page,
//!    checks the authorize request, keeps it in the store under the hash of a fresh `state`
//!    (with the `nonce` and PKCE verifier, for `PENDING_TTL`, shared by every IdP replica),
//!    binds that `state` to the browser with a cookie and sends the browser to the provider.
//! 2. `GET /oauth2/upstream/{name}/callback` takes the pending sign-in back (once: a replay
//!    finds nothing), checks it came back to the browser that started it, redeems the code,
//!    verifies the id_token (`crate::upstreams`), maps its claims to a user in the store, and finishes
//!    the original authorize request exactly as the password form does.
//!
//! Every failure answers a page, counts in `tokengate_idp_upstream_failures_total{reason}` and
//! creates nothing. No upstream token is kept.

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use axum::routing::{delete, get};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use subtle::ConstantTimeEq;
use tokengate_store::{
    Changed, CodeId, PendingSignIns, ReferenceToken, SessionAdmin, User, UserDirectory,
    change_user, now_unix,
};

use crate::backchannel;
use crate::config::{MAX_ROLES, UpstreamConfig, check_subject};
use crate::error::ApiError;
use crate::extract::FormBody;
use crate::metrics::{UpstreamLabels, UpstreamReasonLabels};
use crate::oauth::request::{self, AuthorizeRequest};
use crate::pages;
use crate::state::{AppState, Live};
use crate::upstreams::{Upstream, UpstreamError};
use tokengate_server::cookies::{self, SameSite};

/// How long a sign-in may stay at the upstream provider.
const PENDING_TTL: std::time::Duration = std::time::Duration::from_secs(600);
/// The cookie that binds a pending sign-in's `state` to the browser that started it.
pub const STATE_COOKIE: &str = cookies::UPSTREAM;

/// `/oauth2/upstream/{name}/start` and `/callback`, on the public listener.
pub fn routes() -> Router<Live> {
    Router::new()
        .route("/oauth2/upstream/{name}/start", get(start))
        .route("/oauth2/upstream/{name}/callback", get(callback))
}

/// On the admin listener: `DELETE /admin/users/{username}/roles` removes the roles an
/// administrator set for a federated user (`PATCH /admin/users/{username}` with `roles`, or
/// `PUT .../roles`), so that its next sign-in takes its roles from its provider again.
pub fn admin_routes(live: Live) -> Router<Live> {
    Router::new()
        .route("/admin/users/{username}/roles", delete(remove_override))
        .route_layer(axum::middleware::from_fn_with_state(
            live,
            crate::admin::require_admin,
        ))
}

async fn remove_override(
    State(state): State<AppState>,
    Path(username): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    check_subject(&username).map_err(|_| ApiError::InvalidRequest("invalid username"))?;
    let user = state
        .store
        .user(&username)
        .await
        .map_err(|e| state.store_error(e))?
        .ok_or(ApiError::NotFound)?;
    if user.upstream.is_none() {
        // A local user's roles are its own: there is nothing to fall back to.
        return Err(ApiError::Conflict);
    }
    let removed = state
        .store
        .clear_subject_roles(&username)
        .await
        .map_err(|e| state.store_error(e))?;
    tracing::info!(subject = ?tokengate_server::Outside(&username), removed, "role override of a federated user removed");
    Ok(axum::Json(
        serde_json::json!({ "override_removed": removed }),
    ))
}

/// A sign-in waiting at the upstream provider.
#[derive(Serialize, Deserialize)]
struct Pending {
    upstream: String,
    nonce: String,
    code_verifier: String,
    /// The original `/oauth2/authorize` request's parameters.
    request: Vec<(String, String)>,
}

/// Why a federated sign-in ends on an error page.
enum Failure {
    UnknownUpstream,
    State,
    Denied,
    UpstreamRefused,
    Upstream(UpstreamError),
    Username,
    Domain,
    Conflict,
    Disabled,
    Store,
}

impl Failure {
    fn reason(&self) -> &'static str {
        match self {
            Failure::UnknownUpstream => "unknown_upstream",
            Failure::State => "state",
            Failure::Denied => "denied",
            Failure::UpstreamRefused => "upstream_error",
            Failure::Upstream(e) => e.reason(),
            Failure::Username => "username",
            Failure::Domain => "domain",
            Failure::Conflict => "conflict",
            Failure::Disabled => "disabled",
            Failure::Store => "store",
        }
    }

    fn page(&self) -> Response {
        let (status, title, message) = match self {
            Failure::UnknownUpstream => (
                StatusCode::NOT_FOUND,
                "Unknown sign-in provider",
                "This sign-in service does not know that provider.",
            ),
            Failure::State => (
                StatusCode::BAD_REQUEST,
                "This sign-in expired",
                "This sign-in did not start in this browser, was already used, or took too long. Please start again from the application.",
            ),
            Failure::Denied => (
                StatusCode::FORBIDDEN,
                "Sign-in cancelled",
                "The sign-in was cancelled or refused at your organisation's sign-in service.",
            ),
            Failure::UpstreamRefused => (
                StatusCode::BAD_GATEWAY,
                "Sign-in failed",
                "Your organisation's sign-in service refused this sign-in.",
            ),
            Failure::Upstream(UpstreamError::Unreachable(_) | UpstreamError::Timeout(_)) => (
                StatusCode::BAD_GATEWAY,
                "Sign-in service unreachable",
                "Your organisation's sign-in service did not answer in time. Please try again in a moment.",
            ),
            Failure::Upstream(_) => (
                StatusCode::BAD_GATEWAY,
                "Sign-in failed",
                "The answer of your organisation's sign-in service could not be verified, so no one was signed in.",
            ),
            Failure::Username => (
                StatusCode::FORBIDDEN,
                "Sign-in refused",
                "Your organisation's sign-in service did not give a usable user name.",
            ),
            Failure::Domain => (
                StatusCode::FORBIDDEN,
                "Sign-in refused",
                "Accounts of this domain may not sign in here.",
            ),
            Failure::Conflict => (
                StatusCode::FORBIDDEN,
                "Sign-in refused",
                "An account of this name already exists here and does not belong to this provider.",
            ),
            Failure::Disabled => (
                StatusCode::FORBIDDEN,
                "Sign-in refused",
                "This account is disabled.",
            ),
            Failure::Store => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Try again",
                "Signing in is not possible right now. Please try again in a moment.",
            ),
        };
        pages::message(status, title, message)
    }
}

/// Counts, logs and answers a failure.
fn fail(state: &AppState, upstream: &str, failure: Failure) -> Response {
    let reason = failure.reason();
    match &failure {
        Failure::Upstream(e) => {
            tracing::warn!(upstream, reason, error = %e, "sign-in through an upstream failed")
        }
        _ => tracing::info!(upstream, reason, "sign-in through an upstream refused"),
    }
    state
        .metrics
        .upstream_failures
        .get_or_create(&UpstreamReasonLabels {
            upstream: upstream.to_owned(),
            reason,
        })
        .inc();
    let mut response = failure.page();
    // A callback whose state is not this browser's leaves the browser's own sign-in be.
    if !matches!(failure, Failure::State | Failure::UnknownUpstream) {
        clear_state_cookie(state, &mut response);
    }
    response
}

fn clear_state_cookie(state: &AppState, response: &mut Response) {
    let cookie = cookies::clear(STATE_COOKIE, SameSite::Lax, state.secure_cookies());
    if let Ok(cookie) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
}

fn callback_url(state: &AppState, name: &str) -> String {
    format!("{}/oauth2/upstream/{name}/callback", state.issuer_name)
}

/// `GET /oauth2/upstream/{name}/start`: off to the provider, with the authorize request kept.
async fn start(
    State(state): State<AppState>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let Some(upstream) = state.upstreams.get(&name).cloned() else {
        return fail(&state, "unknown", Failure::UnknownUpstream);
    };
    let params = match FormBody::from_query(query.as_deref()) {
        Ok(params) => params,
        Err(_) => {
            return pages::message(
                StatusCode::BAD_REQUEST,
                "This sign-in link does not work",
                "The sign-in link is malformed.",
            );
        }
    };
    let request = match AuthorizeRequest::parse(&params, &state) {
        Ok(request) => request,
        Err(refusal) => return refusal.into_response(&state.issuer_name),
    };
    let (flow_state, nonce, verifier) = (
        ReferenceToken::generate(),
        ReferenceToken::generate(),
        ReferenceToken::generate(),
    );
    let url = match upstream
        .authorization_url(
            &state.metrics,
            &callback_url(&state, &name),
            flow_state.expose(),
            nonce.expose(),
            &request::pkce_challenge(verifier.expose()),
        )
        .await
    {
        Ok(url) => url,
        Err(e) => return fail(&state, &name, Failure::Upstream(e)),
    };
    let pending = Pending {
        upstream: name.clone(),
        nonce: nonce.expose().to_owned(),
        code_verifier: verifier.expose().to_owned(),
        request: request
            .hidden()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
    };
    let record = match serde_json::to_string(&pending) {
        Ok(record) => record,
        Err(_) => return fail(&state, &name, Failure::Store),
    };
    match state
        .store
        .create_pending(&CodeId::of_code(flow_state.expose()), &record, PENDING_TTL)
        .await
    {
        Ok(true) => {}
        Ok(false) => return fail(&state, &name, Failure::Store),
        Err(e) => {
            let _ = state.store_error(e);
            return fail(&state, &name, Failure::Store);
        }
    }
    let mut response = found(&url);
    let cookie = cookies::set(
        STATE_COOKIE,
        flow_state.expose(),
        SameSite::Lax,
        state.secure_cookies(),
        Some(PENDING_TTL.as_secs()),
    );
    if let Ok(cookie) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// A `302` to `location`, never cached.
fn found(location: &str) -> Response {
    use axum::response::IntoResponse;
    let mut response = StatusCode::FOUND.into_response();
    if let Ok(location) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `GET /oauth2/upstream/{name}/callback`: back from the provider.
async fn callback(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let Some(upstream) = state.upstreams.get(&name).cloned() else {
        return fail(&state, "unknown", Failure::UnknownUpstream);
    };
    let Ok(params) = FormBody::from_query(query.as_deref()) else {
        return fail(&state, &name, Failure::State);
    };
    let sent = params.get("state").ok().flatten().unwrap_or("");
    let expected = cookies::get(&headers, STATE_COOKIE).unwrap_or("");
    if sent.is_empty() || !bool::from(sent.as_bytes().ct_eq(expected.as_bytes())) {
        return fail(&state, &name, Failure::State);
    }
    let pending = match state.store.take_pending(&CodeId::of_code(sent)).await {
        Ok(Some(record)) => serde_json::from_str::<Pending>(&record).ok(),
        Ok(None) => None,
        Err(e) => {
            let _ = state.store_error(e);
            return fail(&state, &name, Failure::Store);
        }
    };
    let Some(pending) = pending.filter(|p| p.upstream == name) else {
        return fail(&state, &name, Failure::State);
    };
    match params.get("error").ok().flatten() {
        Some("access_denied") => return fail(&state, &name, Failure::Denied),
        Some(_) => return fail(&state, &name, Failure::UpstreamRefused),
        None => {}
    }
    let Some(code) = params.get("code").ok().flatten() else {
        return fail(&state, &name, Failure::UpstreamRefused);
    };
    let claims = match upstream
        .redeem(
            &state.metrics,
            code,
            &callback_url(&state, &name),
            &pending.code_verifier,
            &pending.nonce,
        )
        .await
    {
        Ok(claims) => claims,
        Err(e) => return fail(&state, &name, Failure::Upstream(e)),
    };
    let form = serde_urlencoded::to_string(&pending.request).unwrap_or_default();
    let request = match FormBody::from_query(Some(&form))
        .map_err(|_| request::Refusal::Page("The sign-in link is malformed."))
        .and_then(|params| AuthorizeRequest::parse(&params, &state))
    {
        Ok(request) => request,
        Err(refusal) => return refusal.into_response(&state.issuer_name),
    };
    let (username, mapped) = match identity(&upstream.config, &claims) {
        Ok(found) => found,
        Err(failure) => return fail(&state, &name, failure),
    };
    let roles = match enroll(&state, &upstream, &username, mapped).await {
        Ok(roles) => roles,
        Err(failure) => return fail(&state, &name, failure),
    };
    state
        .metrics
        .upstream_signins
        .get_or_create(&UpstreamLabels {
            upstream: name.clone(),
        })
        .inc();
    tracing::info!(subject = ?tokengate_server::Outside(&username), upstream = %name, "signed in through an upstream provider");
    backchannel::remember_sign_in(&state, &upstream, &claims, &username).await;
    // The provider's factors stay with the session (`amr` in the ID token and value token).
    let provider_amr: Vec<&str> = claims
        .get("amr")
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(serde_json::Value::as_str)
        .collect();
    let method = crate::sessions::upstream_method(&name, &provider_amr);
    let mut response = request::finish_sign_in(&state, &request, &username, &roles, &method).await;
    clear_state_cookie(&state, &mut response);
    response
}

/// The username and the roles the provider's claims give, under the provider's rules.
fn identity(
    config: &UpstreamConfig,
    claims: &Map<String, Value>,
) -> Result<(String, Vec<String>), Failure> {
    let claim = |name: &str| claims.get(name).and_then(Value::as_str);
    let username = match config.username_claim.as_str() {
        "" => claim("preferred_username")
            .or_else(|| claim("email"))
            .or_else(|| claim("sub")),
        configured => claim(configured),
    }
    .ok_or(Failure::Username)?;
    check_subject(username).map_err(|_| Failure::Username)?;
    if !config.allowed_domains.is_empty() {
        let domain = username
            .rsplit_once('@')
            .map(|(_, d)| d)
            .ok_or(Failure::Domain)?;
        let allowed = config
            .allowed_domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(domain));
        // An address the provider itself has not verified proves no domain.
        let unverified = claim("email") == Some(username)
            && claims.get("email_verified") == Some(&Value::Bool(false));
        if !allowed || unverified {
            return Err(Failure::Domain);
        }
    }
    let mut roles = config.default_roles.clone();
    if !config.roles_claim.is_empty() {
        let values: Vec<&str> = match claims.get(&config.roles_claim) {
            Some(Value::String(one)) => vec![one.as_str()],
            Some(Value::Array(many)) => many.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        for value in values {
            for role in config.role_map.get(value).into_iter().flatten() {
                if !roles.contains(role) {
                    roles.push(role.clone());
                }
            }
        }
    }
    roles.truncate(MAX_ROLES);
    Ok((username.to_owned(), roles))
}

/// Creates or updates the user of a federated sign-in and answers the roles it signs in with:
/// the ones an administrator set for it, if any (an override), else `mapped`. A user of that
/// name that is local or belongs to another provider is never taken over.
async fn enroll(
    state: &AppState,
    upstream: &Upstream,
    username: &str,
    mapped: Vec<String>,
) -> Result<Vec<String>, Failure> {
    let store_failed = |e| {
        let _ = state.store_error(e);
        Failure::Store
    };
    let roles = state
        .store
        .subject_roles(username)
        .await
        .map_err(store_failed)?
        .unwrap_or(mapped);
    let now = now_unix();
    match state.store.user(username).await.map_err(store_failed)? {
        None => {
            let user = User {
                username: username.to_owned(),
                password_hash: None,
                roles: roles.clone(),
                disabled: false,
                upstream: Some(upstream.name().to_owned()),
                otp_secret: None,
                recovery_codes: Vec::new(),
                passkeys: Vec::new(),
                created_at: now,
                updated_at: now,
            };
            if !state.store.create_user(&user).await.map_err(store_failed)? {
                // Created meanwhile, by a sign-in racing this one or an administrator.
                return Err(Failure::Conflict);
            }
        }
        // Checked and changed on the record as it is now: a user disabled meanwhile stays so.
        Some(_) => {
            let changed = change_user(&state.store, username, now, |user| {
                if user.upstream.as_deref() != Some(upstream.name()) {
                    return Err(Failure::Conflict);
                }
                if user.disabled {
                    return Err(Failure::Disabled);
                }
                user.roles.clone_from(&roles);
                Ok(())
            })
            .await
            .map_err(store_failed)?;
            match changed {
                Changed::Done(..) => {}
                Changed::Refused(failure) => return Err(failure),
                // Deleted meanwhile.
                Changed::Missing => return Err(Failure::Conflict),
            }
        }
    }
    Ok(roles)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn config(extra: &str) -> UpstreamConfig {
        toml::from_str(&format!(
            "name = \"corp\"\nissuer = \"https://sso.example.com\"\nclient_id = \"tg\"\nclient_secret = \"s\"\n{extra}"
        ))
        .unwrap()
    }

    fn claims(json: serde_json::Value) -> Map<String, Value> {
        json.as_object().unwrap().clone()
    }

    #[test]
    fn usernames_fall_back_and_domains_are_checked() {
        let c = claims(serde_json::json!({"sub": "123", "email": "a@example.com"}));
        assert_eq!(identity(&config(""), &c).ok().unwrap().0, "a@example.com");
        let c = claims(serde_json::json!({"sub": "123"}));
        assert_eq!(identity(&config(""), &c).ok().unwrap().0, "123");
        let domains = config("allowed_domains = [\"example.com\"]");
        let inside = claims(serde_json::json!({"sub": "1", "email": "a@Example.com"}));
        assert!(identity(&domains, &inside).is_ok());
        let outside = claims(serde_json::json!({"sub": "1", "email": "a@example.com.evil"}));
        assert!(matches!(identity(&domains, &outside), Err(Failure::Domain)));
        let unverified = claims(
            serde_json::json!({"sub": "1", "email": "a@example.com", "email_verified": false}),
        );
        assert!(matches!(
            identity(&domains, &unverified),
            Err(Failure::Domain)
        ));
    }

    #[test]
    fn roles_are_mapped_from_a_string_or_a_list() {
        let c = config(
            "roles_claim = \"groups\"\ndefault_roles = [\"base\"]\nrole_map = { eng = [\"orders:read\"], ops = [\"orders:read\", \"orders:admin\"] }",
        );
        let list = claims(serde_json::json!({"sub": "a", "groups": ["eng", "ops", "other"]}));
        assert_eq!(
            identity(&c, &list).ok().unwrap().1,
            ["base", "orders:read", "orders:admin"]
        );
        let one = claims(serde_json::json!({"sub": "a", "groups": "eng"}));
        assert_eq!(identity(&c, &one).ok().unwrap().1, ["base", "orders:read"]);
    }
}
