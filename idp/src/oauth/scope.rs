//! `scope` as least privilege. A requested scope lists roles (and OpenID Connect's own scopes,
//! which are not roles): the session gets the requested roles the subject holds, all of its
//! roles when none are asked for, and `invalid_scope` when it holds none of those asked for.
//! The answer names the scope granted whenever it differs from the request (RFC 6749 §3.3).

use std::collections::BTreeSet;

use crate::error::ApiError;

/// Scopes that ask for OpenID Connect behaviour, never a role.
pub const OIDC_SCOPES: [&str; 4] = ["openid", "profile", "email", "offline_access"];
/// Longest `scope` parameter accepted.
const MAX_SCOPE_LEN: usize = 4096;
/// Most scope tokens accepted in one request.
const MAX_SCOPE_TOKENS: usize = 128;

/// A parsed `scope` parameter; `None` when the request named none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope(Option<Vec<String>>);

/// What a request is granted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Granted {
    /// The roles the session gets: the requested ones the subject holds, or all it holds.
    pub roles: Vec<String>,
    /// The OpenID Connect scopes asked for and the roles granted, space-separated.
    pub scope: String,
    /// Whether `scope` differs from the request's (then the answer must say it).
    pub differs: bool,
}

impl Granted {
    /// Whether `token`, a role or an OpenID Connect scope, is among those granted.
    pub fn has(&self, token: &str) -> bool {
        self.scope.split(' ').any(|t| t == token)
    }
}

impl Scope {
    /// RFC 6749 §3.3: space-separated tokens of visible ASCII without `"` and `\`.
    pub fn parse(raw: Option<&str>) -> Result<Self, ApiError> {
        let Some(raw) = raw else {
            return Ok(Scope(None));
        };
        if raw.len() > MAX_SCOPE_LEN {
            return Err(ApiError::InvalidScope("scope is too long"));
        }
        let mut tokens: Vec<String> = Vec::new();
        for token in raw.split(' ').filter(|t| !t.is_empty()) {
            let valid = token
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\');
            if !valid {
                return Err(ApiError::InvalidScope("scope has a malformed token"));
            }
            if !tokens.iter().any(|t| t == token) {
                tokens.push(token.to_owned());
            }
        }
        if tokens.len() > MAX_SCOPE_TOKENS {
            return Err(ApiError::InvalidScope("scope has too many tokens"));
        }
        Ok(Scope((!tokens.is_empty()).then_some(tokens)))
    }

    /// The scope as it was asked for, if it was.
    pub fn requested(&self) -> Option<String> {
        self.0.as_ref().map(|t| t.join(" "))
    }

    /// Whether the request asked for `token`; `false` when it named no scope.
    pub fn has(&self, token: &str) -> bool {
        self.0
            .as_ref()
            .is_some_and(|t| t.iter().any(|s| s == token))
    }

    /// Narrows `held` roles to those asked for.
    pub fn grant(&self, held: &[String]) -> Result<Granted, ApiError> {
        let requested = self.0.as_deref().unwrap_or_default();
        let (oidc, asked_roles): (Vec<&String>, Vec<&String>) = requested
            .iter()
            .partition(|t| OIDC_SCOPES.contains(&t.as_str()));
        let roles: Vec<String> = if asked_roles.is_empty() {
            held.to_vec()
        } else {
            let granted: Vec<String> = held
                .iter()
                .filter(|r| asked_roles.contains(r))
                .cloned()
                .collect();
            if granted.is_empty() {
                return Err(ApiError::InvalidScope(
                    "none of the roles asked for is held",
                ));
            }
            granted
        };
        let scope: Vec<&str> = oidc
            .into_iter()
            .map(String::as_str)
            .chain(roles.iter().map(String::as_str))
            .collect();
        let differs = match &self.0 {
            None => !scope.is_empty(),
            Some(asked) => {
                let asked: BTreeSet<&str> = asked.iter().map(String::as_str).collect();
                asked != scope.iter().copied().collect()
            }
        };
        Ok(Granted {
            scope: scope.join(" "),
            roles,
            differs,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn held() -> Vec<String> {
        vec!["orders:read".into(), "orders:write".into()]
    }

    #[test]
    fn no_scope_grants_every_role_and_says_so() {
        let g = Scope::parse(None).unwrap().grant(&held()).unwrap();
        assert_eq!(g.roles, held());
        assert_eq!(g.scope, "orders:read orders:write");
        assert!(g.differs);
        let none = Scope::parse(Some("")).unwrap().grant(&[]).unwrap();
        assert!(!none.differs && none.scope.is_empty());
    }

    #[test]
    fn roles_narrow_to_those_held_and_asked() {
        let g = Scope::parse(Some("orders:write admin"))
            .unwrap()
            .grant(&held())
            .unwrap();
        assert_eq!(g.roles, ["orders:write"]);
        assert_eq!(g.scope, "orders:write");
        assert!(g.differs);
        let exact = Scope::parse(Some("orders:read"))
            .unwrap()
            .grant(&held())
            .unwrap();
        assert!(!exact.differs);
    }

    #[test]
    fn openid_scopes_are_not_roles() {
        let g = Scope::parse(Some("openid profile"))
            .unwrap()
            .grant(&held())
            .unwrap();
        assert_eq!(g.roles, held());
        assert_eq!(g.scope, "openid profile orders:read orders:write");
        assert!(g.has("openid"));
        let g = Scope::parse(Some("openid  orders:read openid"))
            .unwrap()
            .grant(&held())
            .unwrap();
        assert_eq!(g.scope, "openid orders:read");
        assert!(!g.differs);
    }

    #[test]
    fn asking_only_for_roles_not_held_is_invalid_scope() {
        let e = Scope::parse(Some("admin")).unwrap().grant(&held());
        assert!(matches!(e, Err(ApiError::InvalidScope(_))));
    }

    #[test]
    fn malformed_scopes_are_refused() {
        for bad in ["a\"b", "a\\b", "caf\u{e9}", "tab\there"] {
            assert!(Scope::parse(Some(bad)).is_err(), "{bad:?}");
        }
        assert!(Scope::parse(Some(&"a".repeat(5000))).is_err());
        let many = (0..200)
            .map(|i| format!("r{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        assert!(Scope::parse(Some(&many)).is_err());
    }
}
