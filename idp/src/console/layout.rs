//! What every console page shares: the layout's navigation, the message page, the IdP's page
//! headers, redirects, cookies, and the page that says the store cannot be reached.

use askama::Template;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use tokengate_store::StoreError;

use crate::pages;
use crate::state::AppState;

/// What the layout shows of the person signed in.
pub struct Nav {
    pub admin: String,
    pub csrf: String,
}

#[derive(Template)]
#[template(path = "console/message.html")]
struct MessagePage<'a> {
    nav: Option<Nav>,
    title: &'a str,
    message: &'a str,
    link: Option<(&'a str, &'a str)>,
}

/// A page of the console: the security headers of every IdP page (no script, no framing, no
/// sniffing, no caching); forms post to the console only.
pub(super) fn page(status: StatusCode, template: &impl Template) -> Response {
    pages::page(status, template, &[])
}

pub(super) fn message(
    status: StatusCode,
    nav: Option<Nav>,
    title: &str,
    text: &str,
    link: Option<(&str, &str)>,
) -> Response {
    page(
        status,
        &MessagePage {
            nav,
            title,
            message: text,
            link,
        },
    )
}

/// A store's answer, or the page that says the store cannot be reached (the failure counted
/// and logged).
pub(super) fn stored<T>(state: &AppState, answer: Result<T, StoreError>) -> Result<T, Response> {
    answer.map_err(|e| {
        let _ = state.store_error(e);
        unavailable()
    })
}

pub(super) fn unavailable() -> Response {
    message(
        StatusCode::SERVICE_UNAVAILABLE,
        None,
        "Try again",
        "The token store cannot be reached right now. Please try again in a moment.",
        None,
    )
}

pub(super) fn add_cookie(response: &mut Response, cookie: &str) {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

pub(super) fn see_other(to: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(location) = HeaderValue::from_str(to) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
