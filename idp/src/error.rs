//! Every error a client can see, and the one place that turns it into a response: RFC 6749
//! §5.2 bodies for OAuth endpoints, RFC 6750 `WWW-Authenticate` for bearer tokens.

use std::borrow::Cow;

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

use crate::access::Outcome;

/// An error a client sees; [`IntoResponse`] gives each its status, `error` code and challenge.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// `400 invalid_request`: a parameter is missing or malformed; says which.
    #[error("invalid request: {0}")]
    InvalidRequest(&'static str),
    /// `400 invalid_grant`: wrong credentials, or a code that is unknown, used or not this client's.
    #[error("invalid grant")]
    InvalidGrant,
    /// `401 invalid_client` with a `Basic` challenge: client authentication failed.
    #[error("invalid client")]
    InvalidClient,
    /// `400 unsupported_grant_type`: a `grant_type` the IdP does not offer.
    #[error("unsupported grant type")]
    UnsupportedGrantType,
    /// The client may not use this grant type (its `grants`).
    #[error("unauthorized client: {0}")]
    UnauthorizedClient(&'static str),
    /// A `scope` that is malformed or grants nothing the subject holds.
    #[error("invalid scope: {0}")]
    InvalidScope(&'static str),
    /// `413`: a form body over the size limit.
    #[error("request body too large")]
    BodyTooLarge,
    /// No bearer token where one is needed.
    #[error("missing bearer token")]
    MissingToken,
    /// A bearer token that is malformed, unknown, revoked or expired.
    #[error("invalid bearer token")]
    InvalidToken,
    /// `403` with an `insufficient_scope` challenge: the session holds none of the roles asked for.
    #[error("insufficient scope")]
    InsufficientScope,
    /// The admin API's token is missing or wrong.
    #[error("admin token missing or wrong")]
    AdminUnauthorized,
    /// `404`: no such route, or no such user, session or upstream.
    #[error("not found")]
    NotFound,
    /// What the request would create exists already.
    #[error("conflict")]
    Conflict,
    /// Too many failed logins for this name or address; try again after the given time.
    #[error("too many failed attempts")]
    Locked(std::time::Duration),
    /// The token store is unreachable: try again, nothing is wrong with the request.
    #[error("temporarily unavailable")]
    Unavailable,
    /// `500 server_error`: the cause is logged, never shown.
    #[error("internal error")]
    Internal,
    /// `POST /admin/reload` on an IdP that was not started from a file.
    #[error("no configuration file")]
    NoConfigFile,
    /// `POST /admin/reload` found the file unusable and changed nothing: what is wrong.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
}

use tokengate_server::challenge::{BEARER, BEARER_INSUFFICIENT_SCOPE, BEARER_INVALID_TOKEN};

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let retry_after = match &self {
            ApiError::Locked(wait) => Some(wait.as_secs().max(1)),
            ApiError::Unavailable => Some(1),
            _ => None,
        };
        let (status, code, description, challenge) = match self {
            ApiError::InvalidRequest(d) => (
                StatusCode::BAD_REQUEST,
                "invalid_request",
                Some(Cow::from(d)),
                None,
            ),
            ApiError::InvalidGrant => (StatusCode::BAD_REQUEST, "invalid_grant", None, None),
            ApiError::InvalidClient => (
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                None,
                Some(r#"Basic realm="tokengate""#),
            ),
            ApiError::UnsupportedGrantType => (
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                None,
                None,
            ),
            ApiError::UnauthorizedClient(d) => (
                StatusCode::BAD_REQUEST,
                "unauthorized_client",
                Some(Cow::from(d)),
                None,
            ),
            ApiError::InvalidScope(d) => (
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                Some(Cow::from(d)),
                None,
            ),
            ApiError::BodyTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request",
                Some(Cow::from("request body too large")),
                None,
            ),
            ApiError::MissingToken => {
                (StatusCode::UNAUTHORIZED, "unauthorized", None, Some(BEARER))
            }
            ApiError::InvalidToken => (
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                None,
                Some(BEARER_INVALID_TOKEN),
            ),
            ApiError::InsufficientScope => (
                StatusCode::FORBIDDEN,
                "insufficient_scope",
                None,
                Some(BEARER_INSUFFICIENT_SCOPE),
            ),
            ApiError::AdminUnauthorized => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                Some(Cow::from("admin token missing or wrong")),
                Some(r#"Bearer realm="tokengate-admin""#),
            ),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not_found", None, None),
            ApiError::Conflict => (StatusCode::CONFLICT, "conflict", None, None),
            ApiError::Locked(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_attempts",
                Some(Cow::from("too many failed attempts; try again later")),
                None,
            ),
            ApiError::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                Some(Cow::from("token store unreachable, try again")),
                None,
            ),
            ApiError::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                None,
                None,
            ),
            ApiError::NoConfigFile => (
                StatusCode::CONFLICT,
                "no_config_file",
                Some(Cow::from(
                    "this IdP was not started from a configuration file",
                )),
                None,
            ),
            ApiError::InvalidConfig(d) => (
                StatusCode::BAD_REQUEST,
                "invalid_config",
                Some(Cow::from(d)),
                None,
            ),
        };
        let json = match description {
            Some(d) => Json(serde_json::json!({ "error": code, "error_description": d })),
            None => Json(serde_json::json!({ "error": code })),
        };
        let mut response = (status, json).into_response();
        response.extensions_mut().insert(Outcome(code));
        let headers = response.headers_mut();
        if let Some(challenge) = challenge {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        if let Some(secs) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}
