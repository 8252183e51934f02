//! Cookies the gateway reads, writes and keeps from backends: its session cookie (a reference
//! token), its sign-in state cookie, and the IdP's own sign-in cookie. Requests without a
//! `Cookie` header pay one header lookup.

use http::HeaderMap;
use http::header::{self, HeaderValue};

/// The IdP's own cookies, its single-sign-on session, its forms' CSRF token and its admin
/// console's session: forwarded only on a route marked `idp = true` (browsers send one host's
/// cookies to all its ports).
pub const IDP_COOKIES: [&str; 3] = ["tokengate_idp", "tokengate_csrf", "tokengate_console"];

/// Longest cookie value looked at (a reference token is 43 characters).
const MAX_VALUE: usize = 4096;

/// What a request's cookies hold under one name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found<'a> {
    None,
    One(&'a str),
    /// Two or more (one planted for a parent domain or another path, say): ambiguous, so
    /// none of them is used.
    Many,
}

/// The value of cookie `name` across every `Cookie` header.
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
            let v = v.trim().trim_matches('"');
            if v.is_empty() {
                continue;
            }
            found = match found {
                Found::None => Found::One(v),
                _ => return Found::Many,
            };
        }
    }
    match found {
        Found::One(v) if v.len() > MAX_VALUE => Found::None,
        other => other,
    }
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

/// A `Set-Cookie` value: HttpOnly, `Path=/`, `SameSite=Lax` (sent on top-level navigations from
/// other sites, such as the IdP's redirect back, never on their subrequests), `Secure` under
/// TLS; `Max-Age` in seconds (0 removes it).
pub fn set(name: &str, value: &str, secure: bool, max_age: u64) -> Option<HeaderValue> {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Lax{secure}; Max-Age={max_age}"
    ))
    .ok()
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
        assert_eq!(find(&h, "missing"), Found::None);
        assert_eq!(
            find(&headers(&["tokengate_idp=x"]), "tokengate"),
            Found::None
        );
        assert_eq!(find(&headers(&["xtokengate=x"]), "tokengate"), Found::None);
        assert_eq!(find(&headers(&["tokengate="]), "tokengate"), Found::None);
        let twice = headers(&["tokengate=one", "x=y; tokengate=two"]);
        assert_eq!(find(&twice, "tokengate"), Found::Many);
        let twice = headers(&["tokengate=one; tokengate=one"]);
        assert_eq!(find(&twice, "tokengate"), Found::Many);
        assert_eq!(find(&HeaderMap::new(), "tokengate"), Found::None);
    }

    #[test]
    fn named_cookies_are_stripped_and_others_kept() {
        let mut h = headers(&[
            "a=1; tokengate=tok; tokengate_idp=sso; b=2",
            "tokengate=again",
            "c=3",
        ]);
        strip(&mut h, &["tokengate", IDP_COOKIES[0]]);
        let left: Vec<&str> = h
            .get_all(header::COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(left, ["a=1; b=2", "c=3"]);
        let mut h = headers(&["x=1"]);
        strip(&mut h, &["tokengate"]);
        assert_eq!(h[header::COOKIE], "x=1");
    }

    #[test]
    fn set_cookie_has_every_attribute() {
        assert_eq!(
            set("__Host-tokengate", "v", true, 60).unwrap(),
            "__Host-tokengate=v; Path=/; HttpOnly; SameSite=Lax; Secure; Max-Age=60"
        );
        assert_eq!(
            set("tokengate", "", false, 0).unwrap(),
            "tokengate=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0"
        );
    }
}
