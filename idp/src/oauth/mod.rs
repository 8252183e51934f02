//! OAuth 2 and OpenID Connect on the public listener.
//!
//! * `token`: `/oauth2/token`, one function per grant.
//! * `revoke`, `introspect`: revocation (RFC 7009) and introspection (RFC 7662).
//! * `jwks`: the published signing keys.
//! * `forward_auth`: `/auth/verify`, for proxies that ask about each request.
//! * `reply`: the token endpoint's answers, shared by every grant and the admin API.
//! * `authorize`: the authorization code flow with PKCE: the sign-in page and form, single
//!   sign-on, redeeming codes.
//! * `request`: the authorization request, checked, and how a sign-in ends (session, code).
//! * `oidc`: OpenID Connect: discovery, ID tokens, userinfo, RP-initiated logout.
//! * `scope`: a requested scope narrows a session's roles.

use axum::Router;
use axum::routing::{any, get, post};

use crate::state::Live;

pub mod authorize;
pub mod forward_auth;
pub mod introspect;
pub mod jwks;
pub mod oidc;
pub mod reply;
pub mod request;
pub mod revoke;
pub mod scope;
pub mod token;

/// The public listener's OAuth 2 and OpenID Connect routes.
pub fn routes() -> Router<Live> {
    Router::new()
        .route("/oauth2/token", post(token::token))
        .route("/oauth2/revoke", post(revoke::revoke))
        .route("/oauth2/introspect", post(introspect::introspect))
        .route("/.well-known/jwks.json", get(jwks::jwks))
        .route("/auth/verify", any(forward_auth::verify))
        .merge(authorize::routes())
        .merge(oidc::routes())
}
