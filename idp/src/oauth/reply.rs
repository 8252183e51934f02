//! The token endpoint's answers (RFC 6749 §5.1), shared by every grant and by the admin API.

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, header};
use tokengate_store::now_unix;

use crate::sessions::Issued;

/// The RFC 6749 §5.1 answer for a new session (also used by the admin API); `scope` when it
/// differs from the one asked for.
pub fn token_response(issued: &Issued, scope: Option<&str>) -> Response {
    token_reply(token_body(issued, scope))
}

/// The fields of a token answer, for a grant that adds some (the ID token).
pub fn token_body(issued: &Issued, scope: Option<&str>) -> serde_json::Value {
    let expires_in = issued.session.expires_at().saturating_sub(now_unix());
    let mut body = serde_json::json!({
        "access_token": issued.token.expose(),
        "token_type": "Bearer",
        "expires_in": expires_in,
    });
    if let Some(scope) = scope {
        body["scope"] = scope.into();
    }
    body
}

/// A token answer: never cached (RFC 6749 §5.1).
pub fn token_reply(body: serde_json::Value) -> Response {
    let mut response = Json(body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}
