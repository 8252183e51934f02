//! The `WWW-Authenticate` challenges both services answer with (RFC 6750 §3), written once.

/// No bearer token where one is needed.
pub const BEARER: &str = r#"Bearer realm="tokengate""#;
/// A bearer token that is malformed, unknown, revoked or expired.
pub const BEARER_INVALID_TOKEN: &str = r#"Bearer realm="tokengate", error="invalid_token""#;
/// A valid token that lacks every role the resource asks for.
pub const BEARER_INSUFFICIENT_SCOPE: &str =
    r#"Bearer realm="tokengate", error="insufficient_scope""#;
