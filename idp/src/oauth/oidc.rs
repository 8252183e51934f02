//! OpenID Connect on top of the code flow: the discovery document, ID tokens (signed with the
//! value tokens' keys), userinfo, and RP-initiated logout that ends the sessions it names.

use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use jsonwebtoken::{DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use tokengate_store::{
    ReferenceToken, Session, SessionAdmin, SessionId, SessionKind, SessionRead, now_unix,
};

use crate::error::ApiError;
use crate::extract::{FormBody, bearer};
use crate::keys::KeyError;
use crate::pages::{self, LogoutConfirm, redirect};
use crate::state::{AppState, Live};
use tokengate_server::cookies::{self, SameSite};

/// How long an ID token is good for (it proves a sign-in; the session is the reference token).
pub const ID_TOKEN_TTL: u64 = 300;

/// Discovery, `/oauth2/userinfo` and RP-initiated `/oauth2/logout`, on the public listener.
pub fn routes() -> Router<Live> {
    Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/oauth2/userinfo", get(userinfo).post(userinfo))
        .route("/oauth2/logout", get(logout_get).post(logout_post))
}

/// An ID token's claims (OpenID Connect Core §2).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IdTokenClaims {
    /// Our issuer URL.
    pub iss: String,
    /// The username (the session's subject).
    pub sub: String,
    /// The client the token was issued to.
    pub aud: String,
    /// Unix seconds: `iat` plus [`ID_TOKEN_TTL`].
    pub exp: u64,
    /// Unix seconds when it was signed.
    pub iat: u64,
    /// Unix seconds when the person authenticated; earlier than `iat` when an SSO session
    /// was reused.
    pub auth_time: u64,
    /// The `nonce` of the authorization request, when it sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// The session the sign-in made: logout with this token as a hint ends it.
    pub sid: String,
    /// The same as `sub`: usernames are the subjects.
    pub preferred_username: String,
    /// How the person proved who they are (RFC 8176), when known.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub amr: Vec<String>,
    /// The authentication context class the sign-in met (`crate::sessions::ACR_ONE_FACTOR` or
    /// `ACR_MFA`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acr: Option<String>,
}

/// An ID token for `session`, issued to `client_id`.
pub fn id_token(
    state: &AppState,
    session: &Session,
    client_id: &str,
    nonce: Option<String>,
    auth_time: u64,
) -> Result<String, KeyError> {
    let now = now_unix();
    let amr = crate::sessions::amr(&session.method);
    state.keys.current().sign_jwt(&IdTokenClaims {
        iss: state.issuer_name.clone(),
        sub: session.subject.clone(),
        aud: client_id.to_owned(),
        exp: now + ID_TOKEN_TTL,
        iat: now,
        auth_time,
        nonce,
        sid: session.id.to_string(),
        preferred_username: session.subject.clone(),
        acr: crate::sessions::acr(&amr).map(str::to_owned),
        amr,
    })
}

/// An ID token this IdP signed, expired or not (RP-initiated logout accepts expired hints).
fn verify_hint(state: &AppState, token: &str) -> Option<IdTokenClaims> {
    let kid = jsonwebtoken::decode_header(token).ok()?.kid?;
    let jwks = state.keys.public_jwks().ok()?;
    let jwk = jwks.find(&kid)?;
    let key = DecodingKey::from_jwk(jwk).ok()?;
    let alg = state.keys.find(&kid)?.alg().jwt();
    let mut validation = Validation::new(alg);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.set_issuer(&[&state.issuer_name]);
    validation.set_required_spec_claims(&["iss", "sub", "aud"]);
    jsonwebtoken::decode::<IdTokenClaims>(token, &key, &validation)
        .ok()
        .map(|d| d.claims)
}

/// OpenID Connect Discovery 1.0 §3, at `{issuer}/.well-known/openid-configuration`.
async fn discovery(State(state): State<AppState>) -> Response {
    let issuer = &state.issuer_name;
    let algs: Vec<&str> = state.keys.algorithms();
    let body = serde_json::json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/oauth2/authorize"),
        "token_endpoint": format!("{issuer}/oauth2/token"),
        "userinfo_endpoint": format!("{issuer}/oauth2/userinfo"),
        "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
        "end_session_endpoint": format!("{issuer}/oauth2/logout"),
        "revocation_endpoint": format!("{issuer}/oauth2/revoke"),
        "introspection_endpoint": format!("{issuer}/oauth2/introspect"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "client_credentials", "password"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": algs,
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": ["openid", "profile"],
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "sid", "preferred_username", "roles", "amr", "acr"],
        "acr_values_supported": [crate::sessions::ACR_ONE_FACTOR, crate::sessions::ACR_MFA],
        "authorization_response_iss_parameter_supported": true,
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
        "claims_parameter_supported": true,
        "backchannel_logout_supported": true,
        "backchannel_logout_session_supported": true,
    });
    (
        [(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=300"),
        )],
        Json(body),
    )
        .into_response()
}

/// OpenID Connect Core §5.3: who the bearer of a reference token is.
async fn userinfo(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let token = match bearer(&headers) {
        Ok(Some(token)) => token,
        Ok(None) if headers.contains_key(header::AUTHORIZATION) => {
            return Err(ApiError::InvalidToken);
        }
        Ok(None) => return Err(ApiError::MissingToken),
        Err(_) => return Err(ApiError::InvalidToken),
    };
    let session = state
        .issuer
        .resolve(token, SessionKind::Access)
        .await
        .map_err(|e| state.store_error(e))?
        .ok_or(ApiError::InvalidToken)?;
    let body = serde_json::json!({
        "sub": session.subject,
        "preferred_username": session.subject,
        "roles": session.roles,
    });
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response())
}

/// What a logout request asks for.
struct LogoutRequest {
    hint: Option<IdTokenClaims>,
    redirect: Option<String>,
    state: Option<String>,
    /// The parameters, to carry through the confirmation form.
    hidden: Vec<(&'static str, String)>,
}

fn logout_request(state: &AppState, params: &FormBody) -> Result<LogoutRequest, &'static str> {
    let get = |name| params.get(name).map_err(|_| "A parameter is repeated.");
    let hint_text = get("id_token_hint")?;
    let hint = match hint_text {
        Some(text) => Some(
            verify_hint(state, text).ok_or("The ID token hint is not one this service issued.")?,
        ),
        None => None,
    };
    let client_id = match (get("client_id")?, &hint) {
        (Some(id), Some(h)) if id != h.aud => {
            return Err("client_id and the ID token hint disagree.");
        }
        (Some(id), _) => Some(id.to_owned()),
        (None, Some(h)) => Some(h.aud.clone()),
        (None, None) => None,
    };
    let redirect = match get("post_logout_redirect_uri")? {
        Some(uri) => {
            let client = client_id.as_deref().and_then(|id| state.clients.get(id));
            if !client.is_some_and(|c| c.has_post_logout_redirect_uri(uri)) {
                return Err(
                    "The address to return to after signing out is not registered for this application.",
                );
            }
            Some(uri.to_owned())
        }
        None => None,
    };
    let state_param = get("state")?.filter(|s| s.len() <= 1024).map(str::to_owned);
    let mut hidden = Vec::new();
    for name in [
        "id_token_hint",
        "client_id",
        "post_logout_redirect_uri",
        "state",
    ] {
        if let Some(v) = get(name)? {
            hidden.push((name, v.to_owned()));
        }
    }
    Ok(LogoutRequest {
        hint,
        redirect,
        state: state_param,
        hidden,
    })
}

/// RP-initiated logout 1.0. With a valid `id_token_hint` the request is the client's: the
/// session it names and this browser's IdP session end at once. Without one, the person is
/// asked first (a link alone must not sign anyone out).
async fn logout_get(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let Ok(params) = FormBody::from_query(query.as_deref()) else {
        return pages::message(
            StatusCode::BAD_REQUEST,
            "Sign out",
            "The sign-out link is malformed.",
        );
    };
    logout(state, headers, params, false).await
}

async fn logout_post(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: FormBody,
) -> Response {
    logout(state, headers, form, true).await
}

async fn logout(state: AppState, headers: HeaderMap, params: FormBody, posted: bool) -> Response {
    let request = match logout_request(&state, &params) {
        Ok(request) => request,
        Err(message) => return pages::message(StatusCode::BAD_REQUEST, "Sign out", message),
    };
    let confirmed =
        posted && pages::csrf_matches(&headers, params.get("csrf").ok().flatten().unwrap_or(""));
    if request.hint.is_none() && !confirmed {
        let csrf = pages::csrf_token(&headers);
        let targets: Vec<String> = request
            .redirect
            .iter()
            .filter_map(|r| pages::origin(r))
            .collect();
        let page = LogoutConfirm {
            hidden: request.hidden.clone(),
            csrf: &csrf,
        };
        let page = pages::page(StatusCode::OK, &page, &targets);
        return pages::with_csrf(page, &csrf, state.secure_cookies());
    }
    if let Err(e) = end_sessions(&state, &headers, request.hint.as_ref()).await {
        let _ = state.store_error(e);
        return pages::message(
            StatusCode::SERVICE_UNAVAILABLE,
            "Sign out",
            "Signing out is not possible right now. Please try again in a moment.",
        );
    }
    let mut response = match &request.redirect {
        Some(to) => {
            let mut params = Vec::new();
            if let Some(s) = request.state.as_deref() {
                params.push(("state", s));
            }
            redirect(to, &params)
        }
        None => pages::message(
            StatusCode::OK,
            "Signed out",
            "You are signed out of tokengate.",
        ),
    };
    let clear = cookies::clear(cookies::SSO, SameSite::Lax, state.secure_cookies());
    if let Ok(clear) = HeaderValue::from_str(&clear) {
        response.headers_mut().append(header::SET_COOKIE, clear);
    }
    response
}

/// Ends the session an ID token names and this browser's IdP session.
async fn end_sessions(
    state: &AppState,
    headers: &HeaderMap,
    hint: Option<&IdTokenClaims>,
) -> Result<(), tokengate_store::StoreError> {
    if let Some(hint) = hint
        && let Some(sid) = SessionId::parse(&hint.sid)
        && let Some(session) = state.store.lookup(&sid).await?
        && session.subject == hint.sub
    {
        if state.store.revoke(&session.id).await? {
            crate::outbox::queue(state, std::slice::from_ref(&session)).await;
        }
        tracing::info!(session = %session.id, subject = %session.subject, "session ended by logout");
    }
    if let Some(token) = cookies::get(headers, cookies::SSO)
        && let Ok(token) = ReferenceToken::parse(token)
    {
        let id = token.session_id();
        if state.store.revoke(&id).await? {
            tracing::info!(session = %id, "IdP browser session ended by logout");
        }
    }
    Ok(())
}
