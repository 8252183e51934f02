//! Pages for people: compile-time checked, auto-escaping templates (askama) on one layout, no
//! inline script (the passkey pages load one file, allowed by its hash and origin), a CSRF
//! token in every form, the stylesheet served by the IdP itself, and headers that
//! keep the pages to themselves (`Content-Security-Policy`, no framing, no sniffing, no caching).

use askama::Template;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use subtle::ConstantTimeEq;
use tokengate_server::cookies::{self, SameSite};
use tokengate_store::ReferenceToken;

/// The sign-in page of `/oauth2/authorize`.
#[derive(Template)]
#[template(path = "signin.html")]
pub struct SignIn<'a> {
    /// Shown as the application asking for the sign-in.
    pub client_id: &'a str,
    /// Why the last attempt failed, shown above the form; `None` on the first visit.
    pub error: Option<&'a str>,
    /// Upstream providers: name and the link that signs in through it.
    pub upstreams: Vec<(String, String)>,
    /// The authorization request's parameters, carried through the form.
    pub hidden: Vec<(&'static str, String)>,
    /// The CSRF token the form posts back (double-submit with its cookie).
    pub csrf: &'a str,
    /// Pre-filled after a failed attempt; empty at first.
    pub username: &'a str,
    /// The link that signs in with a passkey instead, when passkeys are on.
    pub passkey_link: Option<String>,
}

/// A page that only tells something (an error, a finished logout), with no form.
#[derive(Template)]
#[template(path = "message.html")]
pub struct Message<'a> {
    /// The page's heading and `<title>`.
    pub title: &'a str,
    /// The text under it, escaped.
    pub message: &'a str,
}

/// The "sign out?" page of `/oauth2/logout` when the request carries no `id_token_hint`.
#[derive(Template)]
#[template(path = "logout.html")]
pub struct LogoutConfirm<'a> {
    /// The logout request's parameters, carried through the form.
    pub hidden: Vec<(&'static str, String)>,
    /// The CSRF token the form posts back.
    pub csrf: &'a str,
}

const STYLE: &str = include_str!("../assets/style.css");
/// The one script of the IdP's pages: the passkey ceremonies (`navigator.credentials`).
const PASSKEYS_JS: &str = include_str!("../assets/passkeys.js");

/// `sha256-...` of the passkey script: its `<script integrity>`, and what the CSP of the pages
/// that load it allows (nothing else runs).
pub fn passkeys_script_hash() -> &'static str {
    static HASH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        use base64::Engine;
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, PASSKEYS_JS.as_bytes());
        format!(
            "sha256-{}",
            base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
        )
    });
    &HASH
}

/// The passkey script.
pub async fn passkeys_script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        PASSKEYS_JS,
    )
        .into_response()
}

/// The stylesheet of every page.
pub async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        STYLE,
    )
        .into_response()
}

/// The scheme, host and port of an absolute URL, for a CSP source list.
pub fn origin(url: &str) -> Option<String> {
    let uri: http::Uri = url.parse().ok()?;
    Some(format!("{}://{}", uri.scheme_str()?, uri.authority()?))
}

/// A rendered page. `form_targets` are the origins its forms may end up at (a sign-in form's
/// answer redirects to the client, and browsers hold redirects after a form post to
/// `form-action` too).
pub fn page(status: StatusCode, page: &impl Template, form_targets: &[String]) -> Response {
    render(status, page, form_targets, false)
}

/// [`page`] for a page that loads the passkey script: its CSP allows that script (by its hash,
/// and by the IdP's origin for browsers that check no hash of an external script)
/// and nothing else.
pub fn page_with_passkeys(
    status: StatusCode,
    page: &impl Template,
    form_targets: &[String],
) -> Response {
    render(status, page, form_targets, true)
}

fn render(
    status: StatusCode,
    page: &impl Template,
    form_targets: &[String],
    passkeys: bool,
) -> Response {
    let body = match page.render() {
        Ok(body) => body,
        Err(e) => {
            tracing::error!(error = %e, "a page failed to render");
            return (StatusCode::INTERNAL_SERVER_ERROR, "page failed to render").into_response();
        }
    };
    let mut form_action = String::from("'self'");
    for target in form_targets {
        form_action.push(' ');
        form_action.push_str(target);
    }
    let mut csp = format!(
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action {form_action}; \
         frame-ancestors 'none'; base-uri 'none'"
    );
    if passkeys {
        // By hash where browsers check external scripts' hashes, by origin where they do not
        // (the IdP serves no other script, and answers nothing else as JavaScript).
        csp.push_str(&format!("; script-src '{}' 'self'", passkeys_script_hash()));
    }
    let mut response = (status, body).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    if let Ok(csp) = HeaderValue::from_str(&csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The CSRF token a page's form posts back: the browser's cookie when it holds a well-formed
/// one, else a new one (double submit: the cookie goes out with the page, [`with_csrf`]).
pub fn csrf_token(headers: &HeaderMap) -> String {
    cookies::get(headers, cookies::CSRF)
        .filter(|c| ReferenceToken::parse(c).is_ok())
        .map(str::to_owned)
        .unwrap_or_else(|| ReferenceToken::generate().expose().to_owned())
}

/// Whether a form's `sent` CSRF token is the browser's CSRF cookie (compared in constant time).
pub fn csrf_matches(headers: &HeaderMap, sent: &str) -> bool {
    let expected = cookies::get(headers, cookies::CSRF).unwrap_or("");
    !expected.is_empty() && bool::from(sent.as_bytes().ct_eq(expected.as_bytes()))
}

/// `page` with the CSRF cookie its form needs (`secure` over HTTPS).
pub fn with_csrf(mut page: Response, csrf: &str, secure: bool) -> Response {
    let cookie = cookies::set(cookies::CSRF, csrf, SameSite::Strict, secure, None);
    if let Ok(cookie) = HeaderValue::from_str(&cookie) {
        page.headers_mut().append(header::SET_COOKIE, cookie);
    }
    page
}

/// `429` for a name or address locked out after failed sign-ins, with `Retry-After`.
pub fn locked_out(wait: std::time::Duration) -> Response {
    let mut response = message(
        StatusCode::TOO_MANY_REQUESTS,
        "Too many attempts",
        "Too many failed sign-ins for this name or from this address. Wait a few minutes and try again.",
    );
    response.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from(wait.as_secs().max(1)),
    );
    response
}

/// A page that only says something.
pub fn message(status: StatusCode, title: &str, message: &str) -> Response {
    page(status, &Message { title, message }, &[])
}

/// `to` with `params` added to its query.
pub fn redirect(to: &str, params: &[(&str, &str)]) -> Response {
    let query = serde_urlencoded::to_string(params).unwrap_or_default();
    let sep = if to.contains('?') { '&' } else { '?' };
    let location = format!("{to}{sep}{query}");
    let mut response = StatusCode::FOUND.into_response();
    let h = response.headers_mut();
    match HeaderValue::from_str(&location) {
        Ok(location) => {
            h.insert(header::LOCATION, location);
        }
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn redirects_add_to_an_existing_query() {
        let r = redirect("http://app/cb?x=1", &[("code", "c d"), ("state", "s&t")]);
        assert_eq!(
            r.headers()[header::LOCATION],
            "http://app/cb?x=1&code=c+d&state=s%26t"
        );
    }

    #[test]
    fn what_a_page_shows_is_escaped() {
        let html = SignIn {
            client_id: "<script>alert(1)</script>",
            error: Some("\"quoted\" & <b>"),
            upstreams: vec![(
                "<i>corp</i>".to_owned(),
                "/oauth2/upstream/x/start?a=1&b=\"".to_owned(),
            )],
            hidden: vec![("state", "\"><script>x</script>".to_owned())],
            csrf: "c",
            username: "o'brien",
            passkey_link: None,
        }
        .render()
        .unwrap();
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&#60;script&#62;") || html.contains("&lt;script&gt;"));
        assert!(!html.contains("\"><"));
        assert!(!html.contains("o'brien"));
    }

    #[test]
    fn pages_carry_their_security_headers() {
        let r = page(
            StatusCode::OK,
            &Message {
                title: "t",
                message: "m",
            },
            &["http://127.0.0.1:3000".to_owned()],
        );
        let csp = r.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap();
        assert!(csp.contains("default-src 'none'"));
        assert!(csp.contains("frame-ancestors 'none'"));
        assert!(csp.contains("form-action 'self' http://127.0.0.1:3000"));
        assert!(!csp.contains("script-src"));
        assert_eq!(r.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-store");
        assert_eq!(
            origin("https://app.example:8443/cb?x=1").as_deref(),
            Some("https://app.example:8443")
        );
    }
}
