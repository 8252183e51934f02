//! The IdP's browser cookies: its single-sign-on session (`tokengate_idp`, a reference token of a
//! browser session in the store) and the CSRF token of its forms (`tokengate_csrf`).

use http::HeaderMap;
use http::header;

/// The IdP's sign-in (SSO) cookie. Never the gateway's cookie name: browsers share cookies
/// across the ports of one host.
pub const SSO: &str = "tokengate_idp";
/// The double-submit CSRF cookie of the IdP's forms.
pub const CSRF: &str = "tokengate_csrf";
/// Longest cookie value looked at.
const MAX_VALUE: usize = 512;

/// The value of cookie `name`, if the request sent exactly one of that name. Two cookies of one
/// name (one planted for a parent domain or path, say) are ambiguous and count as none.
pub fn get<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let mut found = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'));
    let first = found.next()?;
    if found.next().is_some() || first.is_empty() || first.len() > MAX_VALUE {
        return None;
    }
    Some(first)
}

/// A `Set-Cookie` value: HttpOnly, `Path=/`, the given `SameSite`, `Secure` when the IdP is
/// reached over HTTPS, and `Max-Age` when the cookie should outlive the browser session.
pub fn set(name: &str, value: &str, same_site: &str, secure: bool, max_age: Option<u64>) -> String {
    set_at(name, value, "/", same_site, secure, max_age)
}

/// Like [`set`], for the paths under `path` only.
pub fn set_at(
    name: &str,
    value: &str,
    path: &str,
    same_site: &str,
    secure: bool,
    max_age: Option<u64>,
) -> String {
    let mut cookie = format!("{name}={value}; Path={path}; HttpOnly; SameSite={same_site}");
    if secure {
        cookie.push_str("; Secure");
    }
    if let Some(age) = max_age {
        cookie.push_str(&format!("; Max-Age={age}"));
    }
    cookie
}

/// A `Set-Cookie` value that removes cookie `name`.
pub fn clear(name: &str, same_site: &str, secure: bool) -> String {
    set(name, "", same_site, secure, Some(0))
}

/// Like [`clear`], for a cookie set for `path`.
pub fn clear_at(name: &str, path: &str, same_site: &str, secure: bool) -> String {
    set_at(name, "", path, same_site, secure, Some(0))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn headers(cookies: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for c in cookies {
            h.append(header::COOKIE, c.parse().unwrap());
        }
        h
    }

    #[test]
    fn one_cookie_of_a_name_is_read_two_are_refused() {
        let h = headers(&["a=1; tokengate_idp=tok; b=2"]);
        assert_eq!(get(&h, SSO), Some("tok"));
        assert_eq!(get(&h, "missing"), None);
        let twice = headers(&["tokengate_idp=one", "x=y; tokengate_idp=two"]);
        assert_eq!(get(&twice, SSO), None);
        let long = format!("tokengate_idp={}", "a".repeat(600));
        assert_eq!(get(&headers(&[&long]), SSO), None);
    }

    #[test]
    fn cookies_are_http_only_and_secure_under_tls() {
        let c = set(SSO, "v", "Lax", true, Some(60));
        assert_eq!(
            c,
            "tokengate_idp=v; Path=/; HttpOnly; SameSite=Lax; Secure; Max-Age=60"
        );
        assert!(!set(CSRF, "v", "Strict", false, None).contains("Secure"));
        assert!(clear(SSO, "Lax", false).contains("Max-Age=0"));
    }
}
