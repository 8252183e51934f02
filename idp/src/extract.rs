//! Request extractors whose failures are OAuth-style errors, never axum's plain-text ones.

use std::convert::Infallible;
use std::net::IpAddr;

use axum::extract::{FromRequest, FromRequestParts, Request};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Longest query string read.
const MAX_QUERY_BYTES: usize = 8 * 1024;

/// An `application/x-www-form-urlencoded` body, each parameter at most once (RFC 6749 §3.2).
#[derive(Debug)]
pub struct FormBody(Vec<(String, String)>);

impl FormBody {
    /// The parameter `name`; `Ok(None)` if absent, an error if repeated.
    pub fn get(&self, name: &str) -> Result<Option<&str>, ApiError> {
        let mut found = self
            .0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str());
        let first = found.next();
        if found.next().is_some() {
            return Err(ApiError::InvalidRequest("a parameter is repeated"));
        }
        Ok(first.filter(|v| !v.is_empty()))
    }

    /// The parameters of a query string (`/oauth2/authorize`, `/oauth2/logout`).
    pub fn from_query(query: Option<&str>) -> Result<Self, ApiError> {
        let query = query.unwrap_or("");
        if query.len() > MAX_QUERY_BYTES {
            return Err(ApiError::InvalidRequest("query too long"));
        }
        serde_urlencoded::from_str(query)
            .map(FormBody)
            .map_err(|_| ApiError::InvalidRequest("malformed query"))
    }

    /// The parameter `name`, or `400 invalid_request` with `missing` when it is absent or empty.
    pub fn require(&self, name: &str, missing: &'static str) -> Result<&str, ApiError> {
        self.get(name)?.ok_or(ApiError::InvalidRequest(missing))
    }
}

async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::BodyTooLarge
        } else {
            ApiError::InvalidRequest("unreadable request body")
        }
    })
}

impl<S: Send + Sync> FromRequest<S> for FormBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let form = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(';').next().is_some_and(|m| {
                    m.trim()
                        .eq_ignore_ascii_case("application/x-www-form-urlencoded")
                })
            });
        if !form {
            return Err(ApiError::InvalidRequest(
                "content type must be application/x-www-form-urlencoded",
            ));
        }
        let bytes = body_bytes(req, state).await?;
        serde_urlencoded::from_bytes(&bytes)
            .map(FormBody)
            .map_err(|_| ApiError::InvalidRequest("malformed form body"))
    }
}

/// The address of the connection a request came on, as the listener recorded it (the IdP is
/// reached directly, so no forwarded header is trusted for it); `None` outside a listener.
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _: &S,
    ) -> Result<Self, Infallible> {
        Ok(parts
            .extensions
            .get::<ClientAddr>()
            .copied()
            .unwrap_or(ClientAddr(None)))
    }
}

/// A JSON body of type `T`.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = body_bytes(req, state).await?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|_| ApiError::InvalidRequest("malformed JSON body"))
    }
}

/// The single `Authorization` header's value; several are refused as ambiguous.
fn authorization(headers: &HeaderMap) -> Result<Option<&[u8]>, ApiError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(ApiError::InvalidRequest(
            "more than one Authorization header",
        ));
    }
    Ok(first.map(|v| v.as_bytes()))
}

/// The bearer credentials of a request, if it sent a well-formed `Bearer` header.
pub fn bearer(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    Ok(authorization(headers)?.and_then(tokengate_store::bearer_credentials))
}

/// Client credentials from HTTP Basic (RFC 6749 §2.3.1), if the request sent them.
pub fn basic(headers: &HeaderMap) -> Result<Option<(String, String)>, ApiError> {
    let Some(value) = authorization(headers)? else {
        return Ok(None);
    };
    if value.len() < 6 || !value[..6].eq_ignore_ascii_case(b"basic ") {
        return Ok(None);
    }
    let decoded = STANDARD
        .decode(value[6..].trim_ascii())
        .ok()
        .and_then(|d| String::from_utf8(d).ok())
        .ok_or(ApiError::InvalidClient)?;
    let (id, secret) = decoded.split_once(':').ok_or(ApiError::InvalidClient)?;
    let (id, secret) = (form_decode(id), form_decode(secret));
    Ok(Some((
        id.ok_or(ApiError::InvalidClient)?,
        secret.ok_or(ApiError::InvalidClient)?,
    )))
}

/// `application/x-www-form-urlencoded` decoding of one value, as RFC 6749 §2.3.1 asks of the
/// client id and secret inside HTTP Basic; `None` if the result is not UTF-8.
fn form_decode(value: &str) -> Option<String> {
    let hex = |b: u8| (b as char).to_digit(16);
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match bytes.get(i..i + 3) {
            Some([b'%', h, l]) => hex(*h).zip(hex(*l)).map(|(h, l)| (h * 16 + l) as u8),
            _ => None,
        };
        match (escaped, bytes[i]) {
            (Some(b), _) => {
                out.push(b);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, b) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::form_decode;

    #[test]
    fn basic_credentials_are_form_decoded() {
        assert_eq!(form_decode("a%3Ab+c%25").as_deref(), Some("a:b c%"));
        assert_eq!(form_decode("100%").as_deref(), Some("100%"));
        assert_eq!(form_decode("%zz%4").as_deref(), Some("%zz%4"));
        assert_eq!(form_decode("%C3%A9").as_deref(), Some("é"));
        assert_eq!(form_decode("%FF"), None);
    }
}
