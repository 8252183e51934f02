//! Cookies, for both services: one rule set for reading them, one way to write them, and the
//! name of every cookie the IdP sets, so that the gateway keeps each of them from backends by
//! the same list the IdP writes by.
//!
//! Reading rules: a `Cookie` header is split on `;`, each pair trimmed; a name matches exactly;
//! a value has surrounding quotes removed. Two cookies of one name, in one header or across
//! several, are ambiguous (one may have been planted for a parent domain or another path), so
//! neither is used; an empty or over-long value counts as none.

use http::HeaderMap;
use http::header::{self, HeaderValue};

/// The IdP's single-sign-on session (a browser session's reference token). Never the gateway's
/// cookie name: browsers send one host's cookies to all its ports.
pub const SSO: &str = "tokengate_idp";
/// The double-submit CSRF token of the IdP's forms.
pub const CSRF: &str = "tokengate_csrf";
/// The admin console's session.
pub const CONSOLE: &str = "tokengate_console";
/// The admin console's sign-in under way (state and PKCE verifier).
pub const CONSOLE_LOGIN: &str = "tokengate_console_login";
/// A sign-in through an upstream provider under way (ties its `state` to the browser).
pub const UPSTREAM: &str = "tokengate_upstream";

/// Every cookie the IdP sets. A gateway forwards them only on a route marked `idp = true`.
pub const IDP_COOKIES: [&str; 5] = [SSO, CSRF, CONSOLE, CONSOLE_LOGIN, UPSTREAM];

/// Longest cookie value used (a reference token is 43 characters, a sealed sign-in a few hundred).
pub const MAX_VALUE: usize = 4096;

/// What a request's cookies hold under one name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found<'a> {
    /// No cookie of that name (or only an empty or over-long one).
    None,
    /// Exactly one, with this value.
    One(&'a str),
    /// Two or more: ambiguous, so none of them is used.
    Many,
}

impl<'a> Found<'a> {
    /// The value, when there is exactly one.
    pub fn one(self) -> Option<&'a str> {
        match self {
            Found::One(v) => Some(v),
            _ => None,
        }
    }
}

/// The cookie `name` across every `Cookie` header. Requests without one pay a header lookup.
pub fn find<'a>(headers: &'a HeaderMap, name: &str) -> Found<'a> {
    let mut found = Found::None;
    for value in headers.get_all(header::COOKIE) {
        let Ok(value) = value.to_str() else { continue };
        // Most requests carry other cookies only: skip the split unless the name is there.
        if !value.contains(name) {
            continue;
        }
        for pair in value.split(';') {
            let Some((k, v)) = pair.trim().split_once('=') else {
                continue;
            };
            if k.trim_end() != name {
                continue;
            }
            found = match found {
                Found::None => Found::One(v.trim().trim_matches('"')),
                _ => return Found::Many,
            };
        }
    }
    match found {
        Found::One(v) if v.is_empty() || v.len() > MAX_VALUE => Found::None,
        other => other,
    }
}

/// The value of cookie `name` if the request sent exactly one of that name.
pub fn get<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    find(headers, name).one()
}

/// Removes every cookie named in `names` from the `Cookie` headers; a header left empty goes.
pub fn strip<S: AsRef<str>>(headers: &mut HeaderMap, names: &[S]) {
    let hit = |v: &HeaderValue| {
        v.to_str()
            .is_ok_and(|s| names.iter().any(|n| s.contains(n.as_ref())))
    };
    if !headers.get_all(header::COOKIE).iter().any(hit) {
        return;
    }
    let kept: Vec<HeaderValue> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| {
            let Ok(s) = v.to_str() else {
                return Some(v.clone());
            };
            let rest: Vec<&str> = s
                .split(';')
                .map(str::trim)
                .filter(|pair| {
                    let name = pair.split_once('=').map_or(*pair, |(k, _)| k).trim_end();
                    !pair.is_empty() && !names.iter().any(|n| n.as_ref() == name)
                })
                .collect();
            (!rest.is_empty()).then(|| HeaderValue::from_str(&rest.join("; ")).ok())?
        })
        .collect();
    headers.remove(header::COOKIE);
    for v in kept {
        headers.append(header::COOKIE, v);
    }
}

/// A cookie's `SameSite` attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SameSite {
    /// Sent on top-level navigations from other sites (an IdP's redirect back), never on their
    /// subrequests.
    Lax,
    /// Sent only on requests from the same site.
    Strict,
}

impl SameSite {
    fn as_str(self) -> &'static str {
        match self {
            SameSite::Lax => "Lax",
            SameSite::Strict => "Strict",
        }
    }
}

/// A `Set-Cookie` value for `Path=/`: HttpOnly, the given `SameSite`, `Secure` when served over
/// HTTPS, and `Max-Age` in seconds when the cookie should outlive the browser session (0 removes it).
pub fn set(
    name: &str,
    value: &str,
    same_site: SameSite,
    secure: bool,
    max_age: Option<u64>,
) -> String {
    set_at(name, value, "/", same_site, secure, max_age)
}

/// Like [`set`], for the paths under `path` only.
pub fn set_at(
    name: &str,
    value: &str,
    path: &str,
    same_site: SameSite,
    secure: bool,
    max_age: Option<u64>,
) -> String {
    let mut cookie = format!(
        "{name}={value}; Path={path}; HttpOnly; SameSite={}",
        same_site.as_str()
    );
    if secure {
        cookie.push_str("; Secure");
    }
    if let Some(age) = max_age {
        cookie.push_str(&format!("; Max-Age={age}"));
    }
    cookie
}

/// A `Set-Cookie` value that removes cookie `name`.
pub fn clear(name: &str, same_site: SameSite, secure: bool) -> String {
    set(name, "", same_site, secure, Some(0))
}

/// Like [`clear`], for a cookie set for `path`.
pub fn clear_at(name: &str, path: &str, same_site: SameSite, secure: bool) -> String {
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
    fn one_cookie_is_found_two_are_ambiguous() {
        let h = headers(&["a=1; tokengate=tok; b=2"]);
        assert_eq!(find(&h, "tokengate"), Found::One("tok"));
        assert_eq!(get(&h, "tokengate"), Some("tok"));
        assert_eq!(find(&h, "missing"), Found::None);
        assert_eq!(
            find(&headers(&["tokengate_idp=x"]), "tokengate"),
            Found::None
        );
        assert_eq!(find(&headers(&["xtokengate=x"]), "tokengate"), Found::None);
        assert_eq!(find(&headers(&["tokengate="]), "tokengate"), Found::None);
        assert_eq!(
            find(&headers(&["tokengate=\"q\""]), "tokengate"),
            Found::One("q")
        );
        let twice = headers(&["tokengate=one", "x=y; tokengate=two"]);
        assert_eq!(find(&twice, "tokengate"), Found::Many);
        assert_eq!(get(&twice, "tokengate"), None);
        let twice = headers(&["tokengate=one; tokengate=one"]);
        assert_eq!(find(&twice, "tokengate"), Found::Many);
        // An empty one beside a full one is still two.
        let twice = headers(&["tokengate=; tokengate=one"]);
        assert_eq!(find(&twice, "tokengate"), Found::Many);
        let long = format!("tokengate={}", "a".repeat(MAX_VALUE + 1));
        assert_eq!(find(&headers(&[&long]), "tokengate"), Found::None);
        assert_eq!(find(&HeaderMap::new(), "tokengate"), Found::None);
    }

    #[test]
    fn named_cookies_are_stripped_and_others_kept() {
        let mut h = headers(&[
            "a=1; tokengate=tok; tokengate_idp=sso; b=2",
            "tokengate=again",
            "c=3",
        ]);
        strip(&mut h, &["tokengate", SSO]);
        let left: Vec<&str> = h
            .get_all(header::COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(left, ["a=1; b=2", "c=3"]);
        let mut h = headers(&["x=1"]);
        strip(&mut h, &["tokengate"]);
        assert_eq!(h[header::COOKIE], "x=1");
        let every: String = IDP_COOKIES.iter().map(|n| format!("{n}=v; ")).collect();
        let mut h = headers(&[&format!("{every}keep=1")]);
        strip(&mut h, &IDP_COOKIES);
        assert_eq!(h[header::COOKIE], "keep=1");
    }

    #[test]
    fn set_cookie_has_every_attribute() {
        assert_eq!(
            set("__Host-tokengate", "v", SameSite::Lax, true, Some(60)),
            "__Host-tokengate=v; Path=/; HttpOnly; SameSite=Lax; Secure; Max-Age=60"
        );
        assert_eq!(
            clear("tokengate", SameSite::Lax, false),
            "tokengate=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0"
        );
        assert_eq!(
            set_at(CONSOLE, "v", "/console/", SameSite::Strict, false, None),
            "tokengate_console=v; Path=/console/; HttpOnly; SameSite=Strict"
        );
    }
}
