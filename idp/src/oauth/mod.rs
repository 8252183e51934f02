//! OAuth 2 and OpenID Connect on the public listener.
//!
//! * `token`: the public listener's token endpoints: `/oauth2/token` (every grant), revocation,
//!   introspection, JWKS and forward-auth.
//! * `reply`: the token endpoint's answers, shared by every grant and the admin API.
//! * `authorize`: the authorization code flow with PKCE: sign-in page, single sign-on, codes.
//! * `oidc`: OpenID Connect: discovery, ID tokens, userinfo, RP-initiated logout.
//! * `scope`: a requested scope narrows a session's roles.
//! * `clients`: registered clients: grants, redirect URIs, public or confidential.

pub mod authorize;
pub mod clients;
pub mod oidc;
pub mod reply;
pub mod scope;
pub mod token;
