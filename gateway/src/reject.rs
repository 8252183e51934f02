//! Every way the gateway declines a request, and the one place that turns it into an answer:
//! status, `WWW-Authenticate` challenge (shared with the IdP) and a short JSON body. Clients
//! never see internal details; the phase that rejects logs them.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use tokengate_server::challenge::{BEARER, BEARER_INSUFFICIENT_SCOPE, BEARER_INVALID_TOKEN};

use crate::cache::LookupError;
use crate::ratelimit::Denied;

/// The fields of draft-ietf-httpapi-ratelimit-headers.
pub const RATELIMIT_POLICY: http::HeaderName = http::HeaderName::from_static("ratelimit-policy");
/// Requests left and seconds until full, on a 429 and (with `rate_limit_headers`) on every
/// answer of the route.
pub const RATELIMIT: http::HeaderName = http::HeaderName::from_static("ratelimit");

/// What the gateway answers with: the upstream's body, or one of its own.
pub type Body = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// A request declined by the gateway itself; [`Reject::into_response`] is the one place
/// each becomes a status, a challenge and a JSON `error`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    /// No route's prefix and host match: 404.
    #[error("no route")]
    NoRoute,
    /// A protected route and no `Authorization` header.
    #[error("no bearer token")]
    MissingToken,
    /// Malformed, unknown, revoked or expired, or more than one `Authorization` header.
    #[error("invalid bearer token")]
    InvalidToken,
    /// The token is not cached and the store cannot be asked, or its session's value token
    /// expired without the IdP renewing it: the token may be fine.
    #[error("token store unreachable")]
    Unavailable,
    /// A cookie-authenticated unsafe request from an origin not in `browser.allowed_origins`.
    #[error("cross-site request with a session cookie")]
    CrossSite,
    /// A CORS preflight from an origin, or for a method or headers, the route's `cors` does
    /// not allow: 403 without CORS headers, so the browser stops there.
    #[error("CORS preflight not allowed")]
    CorsRefused,
    /// A sign-in callback that cannot be completed: state missing, altered, expired or
    /// replayed, or a code the IdP refused.
    #[error("sign-in cannot be completed")]
    BadSignIn,
    /// A valid token without any of the route's `roles` (`None`), or a request that the rule
    /// of this index in the route's `rules` refuses: 403.
    #[error("refused by the route's roles or rules")]
    InsufficientScope(Option<u16>),
    /// Over `server.max_body_bytes`: 413.
    #[error("request body over max_body_bytes")]
    BodyTooLarge,
    /// The client's body could not be read whole (held for a retry): 400.
    #[error("request body incomplete")]
    BodyIncomplete,
    /// The request URI cannot be rewritten for the upstream: 400.
    #[error("request target cannot be forwarded")]
    BadTarget,
    /// The upstream refused, was not reached within the route's `connect_timeout`, or failed
    /// mid-exchange (and no retry helped): 502.
    #[error("upstream refused or failed")]
    UpstreamFailed,
    /// No response head within the route's `timeout` (and no retry helped): 504.
    #[error("upstream did not answer in time")]
    UpstreamTimeout,
    /// Every upstream that may take the request has `max_requests` in flight: 503 with
    /// `Retry-After: 1`.
    #[error("every upstream at max_requests")]
    UpstreamOverloaded,
    /// Over the route's `rate_limit`.
    #[error("rate limit reached")]
    RateLimited(Denied),
}

/// How a failed token lookup is answered.
impl From<LookupError> for Reject {
    fn from(e: LookupError) -> Self {
        match e {
            LookupError::Invalid => Reject::InvalidToken,
            // Counted in the metrics, not logged per request: it lasts as long as the IdP is down.
            LookupError::Expired => Reject::Unavailable,
            e @ (LookupError::Unavailable(_) | LookupError::NoKeys) => {
                tracing::warn!(error = %e, "cannot validate a token now");
                Reject::Unavailable
            }
        }
    }
}

impl Reject {
    /// The name an access log line gives as `reason`.
    pub fn name(self) -> &'static str {
        match self {
            Reject::NoRoute => "no_route",
            Reject::MissingToken => "missing_token",
            Reject::InvalidToken => "invalid_token",
            Reject::Unavailable => "store_unavailable",
            Reject::CrossSite => "cross_site",
            Reject::CorsRefused => "cors_refused",
            Reject::BadSignIn => "bad_sign_in",
            Reject::InsufficientScope(_) => "insufficient_scope",
            Reject::BodyTooLarge => "body_too_large",
            Reject::BodyIncomplete => "body_incomplete",
            Reject::BadTarget => "bad_target",
            Reject::UpstreamFailed => "upstream_unreachable",
            Reject::UpstreamTimeout => "upstream_timeout",
            Reject::UpstreamOverloaded => "upstream_overloaded",
            Reject::RateLimited(_) => "rate_limited",
        }
    }

    /// Status, challenge and the `error` of the JSON body.
    fn parts(self) -> (StatusCode, Option<&'static str>, &'static str) {
        match self {
            Reject::NoRoute => (StatusCode::NOT_FOUND, None, "not_found"),
            Reject::MissingToken => (StatusCode::UNAUTHORIZED, Some(BEARER), "unauthorized"),
            Reject::InvalidToken => (
                StatusCode::UNAUTHORIZED,
                Some(BEARER_INVALID_TOKEN),
                "invalid_token",
            ),
            Reject::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                None,
                "temporarily_unavailable",
            ),
            Reject::InsufficientScope(_) => (
                StatusCode::FORBIDDEN,
                Some(BEARER_INSUFFICIENT_SCOPE),
                "insufficient_scope",
            ),
            Reject::CrossSite => (StatusCode::FORBIDDEN, None, "cross_site_request"),
            Reject::CorsRefused => (StatusCode::FORBIDDEN, None, "cors_refused"),
            Reject::BadSignIn => (StatusCode::BAD_REQUEST, None, "sign_in_failed"),
            Reject::BodyTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, None, "body_too_large"),
            Reject::BodyIncomplete => (StatusCode::BAD_REQUEST, None, "invalid_request"),
            Reject::BadTarget => (StatusCode::BAD_REQUEST, None, "invalid_request"),
            Reject::UpstreamFailed => (StatusCode::BAD_GATEWAY, None, "bad_gateway"),
            Reject::UpstreamTimeout => (StatusCode::GATEWAY_TIMEOUT, None, "gateway_timeout"),
            Reject::UpstreamOverloaded => {
                (StatusCode::SERVICE_UNAVAILABLE, None, "upstream_overloaded")
            }
            Reject::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, None, "rate_limited"),
        }
    }

    /// The status [`Reject::into_response`] would answer with (for logs and tests).
    pub fn status(self) -> StatusCode {
        self.parts().0
    }

    /// `{"error": "..."}`, with `WWW-Authenticate` on 401 and 403, the rate-limit headers
    /// on 429 and `Retry-After` on an overloaded upstream's 503.
    pub fn into_response(self) -> Response<Body> {
        let (status, challenge, error) = self.parts();
        // A rule's refusal names the rule (never the roles held), in the body and the challenge.
        if let Reject::InsufficientScope(Some(rule)) = self {
            let description = format!("refused by rule {rule} of the route");
            let mut response = json(
                status,
                format!("{{\"error\":\"{error}\",\"error_description\":\"{description}\"}}"),
            );
            let challenge =
                format!("{BEARER_INSUFFICIENT_SCOPE}, error_description=\"{description}\"");
            if let Ok(value) = HeaderValue::try_from(challenge) {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, value);
            }
            return response;
        }
        let mut response = json(status, format!("{{\"error\":\"{error}\"}}"));
        if let Some(c) = challenge {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(c));
        }
        if self == Reject::UpstreamOverloaded {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let Reject::RateLimited(denied) = self {
            let h = response.headers_mut();
            h.insert(header::RETRY_AFTER, HeaderValue::from(denied.retry_after));
            let [policy, state] = denied.headers();
            h.insert(RATELIMIT_POLICY, policy);
            h.insert(RATELIMIT, state);
        }
        response
    }
}

/// A response with a body of our own.
pub fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut response = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A JSON response; `body` must already be JSON.
pub fn json(status: StatusCode, body: String) -> Response<Body> {
    text(status, "application/json", body)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    async fn body(response: Response<Body>) -> String {
        let bytes = response
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[tokio::test]
    async fn a_rules_refusal_names_the_rule_in_body_and_challenge() {
        let response = Reject::InsufficientScope(Some(3)).into_response();
        assert_eq!(response.status(), 403);
        assert_eq!(
            response.headers()[header::WWW_AUTHENTICATE],
            r#"Bearer realm="tokengate", error="insufficient_scope", error_description="refused by rule 3 of the route""#
        );
        let body: serde_json::Value = serde_json::from_str(&body(response).await).unwrap();
        assert_eq!(body["error"], "insufficient_scope");
        assert_eq!(body["error_description"], "refused by rule 3 of the route");
    }

    #[tokio::test]
    async fn every_reject_answers_its_status_challenge_and_body() {
        let cases = [
            (Reject::NoRoute, 404, None, "not_found"),
            (Reject::MissingToken, 401, Some(BEARER), "unauthorized"),
            (
                Reject::InvalidToken,
                401,
                Some(BEARER_INVALID_TOKEN),
                "invalid_token",
            ),
            (Reject::Unavailable, 503, None, "temporarily_unavailable"),
            (
                Reject::InsufficientScope(None),
                403,
                Some(BEARER_INSUFFICIENT_SCOPE),
                "insufficient_scope",
            ),
            (Reject::CrossSite, 403, None, "cross_site_request"),
            (Reject::CorsRefused, 403, None, "cors_refused"),
            (Reject::BadSignIn, 400, None, "sign_in_failed"),
            (Reject::BodyTooLarge, 413, None, "body_too_large"),
            (Reject::BodyIncomplete, 400, None, "invalid_request"),
            (Reject::BadTarget, 400, None, "invalid_request"),
            (Reject::UpstreamFailed, 502, None, "bad_gateway"),
            (Reject::UpstreamTimeout, 504, None, "gateway_timeout"),
            (Reject::UpstreamOverloaded, 503, None, "upstream_overloaded"),
        ];
        for (reject, status, challenge, error) in cases {
            assert_eq!(reject.status().as_u16(), status);
            let response = reject.into_response();
            assert_eq!(response.status().as_u16(), status, "{reject:?}");
            assert_eq!(
                response
                    .headers()
                    .get(header::WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok()),
                challenge,
                "{reject:?}"
            );
            assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
            let retry_after = response.headers().get(header::RETRY_AFTER);
            assert_eq!(
                retry_after.is_some(),
                reject == Reject::UpstreamOverloaded,
                "{reject:?}"
            );
            let body: serde_json::Value =
                serde_json::from_str(&body(response).await).unwrap_or_default();
            assert_eq!(body["error"], error, "{reject:?}");
        }
    }
}
