//! CORS on a route (`cors = { allowed_origins, ... }`): the gateway answers preflights itself
//! (no authentication, nothing sent upstream), and gives the answers to an allowed origin the
//! CORS headers, in place of any the upstream set. Every header value that does not echo the
//! request is built once, when the route is.

use std::time::Duration;

use bytes::Bytes;
use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use crate::config::{CorsConfig, origin};
use crate::reject::{Body, Reject};

/// Names in one of the lists at most.
pub const MAX_NAMES: usize = 64;
/// Longest `max_age`: browsers cap it lower anyway (Chromium at 2 hours).
pub const MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// Header names a preflight may ask for at most.
const MAX_REQUESTED: usize = 64;

/// Why a `cors` table cannot be used; `key` is below `routes[i].cors`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct CorsError {
    /// The key that is wrong.
    pub key: &'static str,
    /// What is wrong with it.
    pub message: String,
}

fn bad(key: &'static str, message: impl Into<String>) -> CorsError {
    CorsError {
        key,
        message: message.into(),
    }
}

/// A route's CORS policy, compiled.
#[derive(Debug)]
pub struct Cors {
    /// Lower-case `scheme://host[:port]`.
    origins: Box<[Box<str>]>,
    /// `allowed_origins = ["*"]` (never with credentials): any origin, echoed.
    any_origin: bool,
    methods: Box<[Method]>,
    /// Lower-case.
    headers: Box<[Box<str>]>,
    credentials: bool,
    allow_methods: HeaderValue,
    allow_headers: Option<HeaderValue>,
    expose_headers: Option<HeaderValue>,
    max_age: Option<HeaderValue>,
}

const TRUE: HeaderValue = HeaderValue::from_static("true");
const VARY_ORIGIN: HeaderValue = HeaderValue::from_static("Origin");
const VARY_PREFLIGHT: HeaderValue = HeaderValue::from_static(
    "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
);

fn header_names(key: &'static str, list: &[String]) -> Result<Box<[Box<str>]>, CorsError> {
    if list.len() > MAX_NAMES {
        return Err(bad(key, format!("must name at most {MAX_NAMES}")));
    }
    list.iter()
        .map(|name| match HeaderName::from_bytes(name.as_bytes()) {
            Ok(h) if name != "*" => Ok(h.as_str().into()),
            _ => Err(bad(
                key,
                format!("{name:?} is not a header name (list them: * is not taken)"),
            )),
        })
        .collect()
}

fn joined(names: &[&str]) -> Option<HeaderValue> {
    (!names.is_empty())
        .then(|| HeaderValue::from_str(&names.join(", ")).ok())
        .flatten()
}

impl Cors {
    /// Compiles and checks a route's `cors`.
    pub fn new(config: &CorsConfig) -> Result<Self, CorsError> {
        if config.allowed_origins.is_empty() {
            return Err(bad("allowed_origins", "must name at least one origin"));
        }
        if config.allowed_origins.len() > MAX_NAMES {
            return Err(bad(
                "allowed_origins",
                format!("must name at most {MAX_NAMES}"),
            ));
        }
        let any_origin = config.allowed_origins.iter().any(|o| o == "*");
        if any_origin && config.allow_credentials {
            return Err(bad(
                "allowed_origins",
                "* cannot go with allow_credentials = true: list the origins",
            ));
        }
        if any_origin && config.allowed_origins.len() > 1 {
            return Err(bad("allowed_origins", "* stands alone"));
        }
        let mut origins = Vec::new();
        for o in config.allowed_origins.iter().filter(|o| *o != "*") {
            let exact = o.trim_end_matches('/').to_ascii_lowercase();
            if origin(o).as_deref() != Some(exact.as_str()) {
                return Err(bad(
                    "allowed_origins",
                    format!("{o:?} is not an origin: scheme://host[:port], no path"),
                ));
            }
            origins.push(exact.into_boxed_str());
        }
        if config.allowed_methods.is_empty() || config.allowed_methods.len() > MAX_NAMES {
            return Err(bad(
                "allowed_methods",
                format!("must name 1 to {MAX_NAMES} methods"),
            ));
        }
        let methods = config
            .allowed_methods
            .iter()
            .map(|m| {
                let upper =
                    !m.is_empty() && m.len() <= 32 && m.bytes().all(|b| b.is_ascii_uppercase());
                Method::from_bytes(m.as_bytes())
                    .ok()
                    .filter(|_| upper)
                    .ok_or_else(|| {
                        bad(
                            "allowed_methods",
                            format!("{m:?} is not a method: upper-case letters, like GET"),
                        )
                    })
            })
            .collect::<Result<Box<[Method]>, _>>()?;
        let headers = header_names("allowed_headers", &config.allowed_headers)?;
        let expose = header_names("expose_headers", &config.expose_headers)?;
        let max_age = match config.max_age {
            Some(age) if age > MAX_AGE => return Err(bad("max_age", "must be at most 24h")),
            Some(age) => Some(HeaderValue::from(age.as_secs())),
            None => None,
        };
        let method_names: Vec<&str> = methods.iter().map(Method::as_str).collect();
        let header_list: Vec<&str> = headers.iter().map(|h| &**h).collect();
        let expose_list: Vec<&str> = expose.iter().map(|h| &**h).collect();
        Ok(Cors {
            allow_methods: joined(&method_names).ok_or_else(|| bad("allowed_methods", "empty"))?,
            allow_headers: joined(&header_list),
            expose_headers: joined(&expose_list),
            origins: origins.into(),
            any_origin,
            methods,
            headers,
            credentials: config.allow_credentials,
            max_age,
        })
    }

    /// The request's one `Origin`, when it is allowed.
    pub fn allowed_origin(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        let mut values = headers.get_all(ORIGIN).iter();
        let (Some(origin), None) = (values.next(), values.next()) else {
            return None;
        };
        let allowed = self.any_origin
            || self
                .origins
                .iter()
                .any(|o| o.as_bytes().eq_ignore_ascii_case(origin.as_bytes()));
        allowed.then(|| origin.clone())
    }

    /// Whether an origin may send credentialed requests here: for the CSRF check of a
    /// cookie-authenticated request on a `browser` route, which must not refuse what CORS
    /// allows.
    pub fn trusts_credentialed(&self, headers: &HeaderMap) -> bool {
        self.credentials && self.allowed_origin(headers).is_some()
    }

    /// Answers a preflight: `204` with what is allowed, or a refusal without CORS headers.
    pub fn preflight(&self, headers: &HeaderMap) -> Result<Response<Body>, Reject> {
        let origin = self.allowed_origin(headers).ok_or(Reject::CorsRefused)?;
        let mut asked = headers.get_all(ACCESS_CONTROL_REQUEST_METHOD).iter();
        let method = match (asked.next(), asked.next()) {
            (Some(m), None) => Method::from_bytes(m.as_bytes()).map_err(|_| Reject::CorsRefused)?,
            _ => return Err(Reject::CorsRefused),
        };
        // The CORS-safelisted methods need no listing (Fetch, "CORS-preflight fetch").
        let simple = matches!(method, Method::GET | Method::HEAD | Method::POST);
        if !simple && !self.methods.contains(&method) {
            return Err(Reject::CorsRefused);
        }
        let mut requested = 0;
        for value in headers.get_all(ACCESS_CONTROL_REQUEST_HEADERS) {
            let value = value.to_str().map_err(|_| Reject::CorsRefused)?;
            for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                requested += 1;
                let listed = self.headers.iter().any(|h| h.eq_ignore_ascii_case(name));
                if requested > MAX_REQUESTED || !listed {
                    return Err(Reject::CorsRefused);
                }
            }
        }
        let mut response = Response::new(Full::new(Bytes::new()).map_err(|n| match n {}).boxed());
        *response.status_mut() = StatusCode::NO_CONTENT;
        let h = response.headers_mut();
        h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        if self.credentials {
            h.insert(ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE);
        }
        h.insert(ACCESS_CONTROL_ALLOW_METHODS, self.allow_methods.clone());
        if let Some(allow) = &self.allow_headers {
            h.insert(ACCESS_CONTROL_ALLOW_HEADERS, allow.clone());
        }
        if let Some(age) = &self.max_age {
            h.insert(ACCESS_CONTROL_MAX_AGE, age.clone());
        }
        h.append(VARY, VARY_PREFLIGHT);
        Ok(response)
    }

    /// An answer (the upstream's or the gateway's own) to a request that was not a preflight:
    /// the upstream's CORS headers go; an allowed `origin` gets ours; `Vary: Origin` always, as
    /// the answer depends on it.
    pub fn respond(&self, headers: &mut HeaderMap, origin: Option<HeaderValue>) {
        for name in [
            ACCESS_CONTROL_ALLOW_ORIGIN,
            ACCESS_CONTROL_ALLOW_CREDENTIALS,
            ACCESS_CONTROL_EXPOSE_HEADERS,
            ACCESS_CONTROL_ALLOW_METHODS,
            ACCESS_CONTROL_ALLOW_HEADERS,
            ACCESS_CONTROL_MAX_AGE,
        ] {
            headers.remove(name);
        }
        headers.append(VARY, VARY_ORIGIN);
        let Some(origin) = origin else {
            return;
        };
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        if self.credentials {
            headers.insert(ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE);
        }
        if let Some(expose) = &self.expose_headers {
            headers.insert(ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
        }
    }
}

/// A CORS preflight: `OPTIONS` with `Origin` and `Access-Control-Request-Method`.
pub fn is_preflight<B>(req: &Request<B>) -> bool {
    req.method() == Method::OPTIONS
        && req.headers().contains_key(ORIGIN)
        && req.headers().contains_key(ACCESS_CONTROL_REQUEST_METHOD)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
