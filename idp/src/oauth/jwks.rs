//! `/.well-known/jwks.json`: the public keys of the value tokens and ID tokens.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};

use crate::state::AppState;

/// The public keys, answered `304` when the caller already has them.
pub(super) async fn jwks(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let etag = state.keys.etag();
    let fresh = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == "*" || t.as_bytes() == etag.as_bytes());
    let cache = (
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    if fresh {
        return (
            StatusCode::NOT_MODIFIED,
            [(header::ETAG, etag.clone()), cache],
        )
            .into_response();
    }
    (
        [
            (header::ETAG, etag.clone()),
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            cache,
        ],
        state.keys.jwks().clone(),
    )
        .into_response()
}
