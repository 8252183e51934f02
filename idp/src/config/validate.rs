//! Loading and validating the configuration: the file, the environment, then the checks
//! that types alone cannot make.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{
    CONSOLE_CLIENT_ID, ClientType, ConfigError, Grant, IdpConfig, MAX_ROLE_LEN, MAX_ROLES,
    MAX_SUBJECT_LEN, MAX_URI_LEN, MIN_VALUE_TOKEN_TTL,
};

/// Why an issuer cannot be used, if it cannot: OpenID Connect needs the IdP's public URL,
/// `http(s)://host[:port][/path]` without query, fragment or trailing slash (it is compared
/// character for character with `iss`).
pub fn check_issuer(issuer: &str) -> Result<(), &'static str> {
    let uri: http::Uri = issuer
        .parse()
        .map_err(|_| "must be the IdP's public URL, e.g. https://sso.example.com")?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
        return Err("must be the IdP's public URL, e.g. https://sso.example.com");
    }
    if uri.query().is_some() || issuer.contains('#') || issuer.ends_with('/') {
        return Err("must not end in a slash or carry a query or fragment");
    }
    Ok(())
}

/// Why a redirect URI cannot be registered, if it cannot: an absolute `http(s)` URL without a
/// fragment (RFC 6749 §3.1.2), of bounded length.
pub fn check_redirect_uri(uri: &str) -> Result<(), &'static str> {
    if uri.len() > MAX_URI_LEN {
        return Err("must be at most 2048 bytes");
    }
    let parsed: http::Uri = uri
        .parse()
        .map_err(|_| "must be an absolute http or https URL")?;
    let scheme_ok = matches!(parsed.scheme_str(), Some("http" | "https"));
    if !scheme_ok || parsed.authority().is_none() {
        return Err("must be an absolute http or https URL");
    }
    if uri.contains('#') {
        return Err("must not contain a fragment");
    }
    Ok(())
}

/// Why a subject name is refused, if it is.
pub fn check_subject(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > MAX_SUBJECT_LEN {
        return Err("must be 1 to 256 bytes long");
    }
    if name.chars().any(char::is_control) {
        return Err("must not contain control characters");
    }
    Ok(())
}

/// Why a role list is refused, if it is. Roles travel comma-separated in `X-Auth-Roles` and
/// space-separated in `scope`, so neither may appear in a role.
pub fn check_roles(roles: &[String]) -> Result<(), String> {
    if roles.len() > MAX_ROLES {
        return Err(format!("at most {MAX_ROLES} roles"));
    }
    for role in roles {
        let ok = !role.is_empty()
            && role.len() <= MAX_ROLE_LEN
            && role.bytes().all(|b| b.is_ascii_graphic() && b != b',');
        if !ok {
            return Err(format!(
                "role {role:?} must be 1 to {MAX_ROLE_LEN} visible ASCII characters without commas"
            ));
        }
    }
    Ok(())
}

/// Most origins `[webauthn] origins` names.
const MAX_WEBAUTHN_ORIGINS: usize = 16;

/// Why `[webauthn]` cannot be used, if it cannot: the key at fault and the reason.
fn check_webauthn(w: &super::WebauthnConfig) -> Result<(), (&'static str, String)> {
    let id = w.rp_id.as_str();
    let host_like = !id.is_empty()
        && id.len() <= 253
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.'))
        && !id.starts_with('.')
        && !id.ends_with('.');
    if !host_like {
        return Err((
            "webauthn.rp_id",
            "must be a lowercase host name without scheme, port or path, e.g. login.example.com or localhost".to_owned(),
        ));
    }
    if w.origins.is_empty() || w.origins.len() > MAX_WEBAUTHN_ORIGINS {
        return Err((
            "webauthn.origins",
            format!("must name 1 to {MAX_WEBAUTHN_ORIGINS} origins, e.g. [\"https://{id}\"]"),
        ));
    }
    for origin in &w.origins {
        let bad = |why: &str| ("webauthn.origins", format!("{origin:?} {why}"));
        let uri: http::Uri = origin
            .parse()
            .map_err(|_| bad("must be an origin such as https://login.example.com"))?;
        let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
            return Err(bad("must be an origin such as https://login.example.com"));
        };
        if origin.len() != scheme.len() + 3 + authority.as_str().len() {
            return Err(bad("must have no path, query or trailing slash"));
        }
        let host = authority.host();
        if host != id && !host.ends_with(&format!(".{id}")) {
            return Err(bad(&format!(
                "must be on the host webauthn.rp_id ({id}) or one of its subdomains"
            )));
        }
        let local = host == "localhost" || host.ends_with(".localhost");
        if scheme != "https" && !(scheme == "http" && local) {
            return Err(bad("must be https (browsers allow http only on localhost)"));
        }
    }
    Ok(())
}

/// Checks users or clients: valid unique names, argon2id hashes, valid roles. `keys` names the
/// table, the name field and the hash field, for the error.
fn check_principals<'a>(
    items: impl Iterator<Item = (&'a str, &'a str, &'a [String])>,
    [table, name_key, hash_key]: [&str; 3],
    invalid: &dyn Fn(&str, &str) -> ConfigError,
) -> Result<(), ConfigError> {
    let mut seen = std::collections::HashSet::new();
    for (i, (name, hash, roles)) in items.enumerate() {
        check_subject(name).map_err(|m| invalid(&format!("{table}[{i}].{name_key}"), m))?;
        if !seen.insert(name) {
            return Err(invalid(
                &format!("{table}[{i}].{name_key}"),
                "appears twice",
            ));
        }
        if !hash.starts_with("$argon2id$") {
            return Err(invalid(
                &format!("{table}[{i}].{hash_key}"),
                "must be an argon2id hash (tokengate hash-password prints one)",
            ));
        }
        check_roles(roles).map_err(|m| invalid(&format!("{table}[{i}].roles"), &m))?;
    }
    Ok(())
}

impl IdpConfig {
    /// Reads, parses and validates a config file; `TOKENGATE_ADMIN_TOKEN` replaces `admin.token`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_owned(),
            source,
        })?;
        let mut config = Self::parse(&text, path)?;
        if let Ok(token) = std::env::var("TOKENGATE_ADMIN_TOKEN") {
            config.admin.token = token;
        }
        for upstream in &mut config.upstreams {
            if let Ok(secret) = std::env::var(upstream.secret_variable()) {
                upstream.client_secret = secret;
            }
        }
        config.validate(path)?;
        Ok(config)
    }

    /// Parses TOML without validating it (see [`IdpConfig::validate`]).
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let mut config: IdpConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            file: path.to_owned(),
            message: e.to_string(),
        })?;
        config.base_dir = path
            .parent()
            .map(Path::to_owned)
            .unwrap_or_else(|| PathBuf::from("."));
        Ok(config)
    }

    /// Checks what types alone cannot: non-empty secrets, sane durations, unique names.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: &str| ConfigError::Invalid {
            file: path.to_owned(),
            key: key.to_owned(),
            message: message.to_owned(),
        };
        if self.admin.token.len() < 8 {
            return Err(invalid(
                "admin.token",
                "must be at least 8 characters (or set TOKENGATE_ADMIN_TOKEN)",
            ));
        }
        if self.server.listen == self.admin.listen {
            return Err(invalid(
                "admin.listen",
                "must differ from server.listen: the admin API never shares the public port",
            ));
        }
        if self.server.max_connections == 0 {
            return Err(invalid("server.max_connections", "must be at least 1"));
        }
        self.store
            .validate()
            .map_err(|e| invalid(&format!("store.{}", e.key), &e.message))?;
        let t = &self.tokens;
        if !t.issuer.is_empty() {
            check_issuer(&t.issuer).map_err(|m| invalid("tokens.issuer", m))?;
        }
        if t.idle_timeout.as_secs() == 0 {
            return Err(invalid("tokens.idle_timeout", "must be at least 1s"));
        }
        if t.max_lifetime < t.idle_timeout {
            return Err(invalid(
                "tokens.max_lifetime",
                "must be at least tokens.idle_timeout",
            ));
        }
        if t.value_token_ttl < MIN_VALUE_TOKEN_TTL {
            return Err(invalid("tokens.value_token_ttl", "must be at least 30s"));
        }
        if t.value_token_ttl > t.max_lifetime {
            return Err(invalid(
                "tokens.value_token_ttl",
                "must be at most tokens.max_lifetime",
            ));
        }
        let a = &self.admin;
        check_roles(std::slice::from_ref(&a.console_role))
            .map_err(|m| invalid("admin.console_role", &m))?;
        if a.console_role.is_empty() {
            return Err(invalid("admin.console_role", "must not be empty"));
        }
        if a.console_idle_timeout.as_secs() == 0 {
            return Err(invalid("admin.console_idle_timeout", "must be at least 1s"));
        }
        if let Some(url) = &a.public_url {
            check_issuer(url).map_err(|_| {
                invalid(
                    "admin.public_url",
                    "must be the admin listener's URL, e.g. https://admin.example.com, without a trailing slash",
                )
            })?;
        }
        if self.login.window.is_zero() {
            return Err(invalid("login.window", "must be longer than 0s"));
        }
        if self.login.lockout.is_zero() {
            return Err(invalid("login.lockout", "must be longer than 0s"));
        }
        let users = self.users.iter().map(|u| {
            (
                u.username.as_str(),
                u.password_hash.as_str(),
                u.roles.as_slice(),
            )
        });
        check_principals(users, ["users", "username", "password_hash"], &invalid)?;
        check_roles(&self.mfa.required_for_roles)
            .map_err(|m| invalid("mfa.required_for_roles", &m))?;
        self.validate_clients(&invalid)?;
        self.validate_upstreams(&invalid)?;
        if let Some(webauthn) = &self.webauthn {
            check_webauthn(webauthn).map_err(|(key, m)| invalid(key, &m))?;
        }
        Ok(())
    }

    /// Upstreams: unique names fit for a URL path, a usable issuer URL, a client and its
    /// secret, `openid` in the scopes, valid roles.
    fn validate_upstreams(
        &self,
        invalid: &dyn Fn(&str, &str) -> ConfigError,
    ) -> Result<(), ConfigError> {
        let mut seen = std::collections::HashSet::new();
        for (i, u) in self.upstreams.iter().enumerate() {
            let key = |field: &str| format!("upstreams[{i}].{field}");
            let name_ok = (1..=32).contains(&u.name.len())
                && u.name.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                });
            if !name_ok {
                return Err(invalid(
                    &key("name"),
                    "must be 1 to 32 characters of a-z, 0-9, - and _",
                ));
            }
            if !seen.insert(u.name.as_str()) {
                return Err(invalid(&key("name"), "appears twice"));
            }
            check_issuer(&u.issuer).map_err(|m| invalid(&key("issuer"), m))?;
            check_subject(&u.client_id).map_err(|m| invalid(&key("client_id"), m))?;
            if u.client_secret.is_empty() {
                let message = format!("is required (or set {})", u.secret_variable());
                return Err(invalid(&key("client_secret"), &message));
            }
            if !u.scopes.iter().any(|s| s == "openid") {
                return Err(invalid(&key("scopes"), "must contain \"openid\""));
            }
            if u.scopes.iter().any(|s| s.is_empty() || s.contains(' ')) {
                return Err(invalid(&key("scopes"), "must be words without spaces"));
            }
            check_roles(&u.default_roles).map_err(|m| invalid(&key("default_roles"), &m))?;
            for (value, roles) in &u.role_map {
                check_roles(roles).map_err(|m| invalid(&key(&format!("role_map.{value}")), &m))?;
            }
            if u.timeout.is_zero() || u.timeout > Duration::from_secs(60) {
                return Err(invalid(&key("timeout"), "must be between 1ms and 60s"));
            }
            if u.allowed_domains
                .iter()
                .any(|d| d.is_empty() || d.contains('@'))
            {
                return Err(invalid(
                    &key("allowed_domains"),
                    "must be domain names such as example.com",
                ));
            }
        }
        Ok(())
    }

    /// Clients: unique valid ids; a secret exactly when confidential; grants the type can use;
    /// registered URIs that can be compared exactly.
    fn validate_clients(
        &self,
        invalid: &dyn Fn(&str, &str) -> ConfigError,
    ) -> Result<(), ConfigError> {
        let mut seen = std::collections::HashSet::new();
        for (i, c) in self.clients.iter().enumerate() {
            let key = |field: &str| format!("clients[{i}].{field}");
            check_subject(&c.client_id).map_err(|m| invalid(&key("client_id"), m))?;
            if c.client_id == CONSOLE_CLIENT_ID {
                return Err(invalid(
                    &key("client_id"),
                    "is the admin console's own client, registered by the IdP itself",
                ));
            }
            if !seen.insert(c.client_id.as_str()) {
                return Err(invalid(&key("client_id"), "appears twice"));
            }
            match (c.client_type, &c.client_secret_hash) {
                (ClientType::Confidential, None) => {
                    return Err(invalid(
                        &key("client_secret_hash"),
                        "a confidential client needs one (tokengate hash-password prints one), or set type = \"public\"",
                    ));
                }
                (ClientType::Confidential, Some(hash)) if !hash.starts_with("$argon2id$") => {
                    return Err(invalid(
                        &key("client_secret_hash"),
                        "must be an argon2id hash (tokengate hash-password prints one)",
                    ));
                }
                (ClientType::Public, Some(_)) => {
                    return Err(invalid(
                        &key("client_secret_hash"),
                        "a public client has no secret (it could not keep one)",
                    ));
                }
                _ => {}
            }
            let grants = c.grants();
            if c.client_type == ClientType::Public && grants.contains(&Grant::ClientCredentials) {
                return Err(invalid(
                    &key("grants"),
                    "client_credentials needs a confidential client",
                ));
            }
            if grants.contains(&Grant::AuthorizationCode) && c.redirect_uris.is_empty() {
                return Err(invalid(
                    &key("redirect_uris"),
                    "authorization_code needs at least one redirect URI",
                ));
            }
            for (field, uris) in [
                ("redirect_uris", &c.redirect_uris),
                ("post_logout_redirect_uris", &c.post_logout_redirect_uris),
            ] {
                for (j, uri) in uris.iter().enumerate() {
                    check_redirect_uri(uri)
                        .map_err(|m| invalid(&key(&format!("{field}[{j}]")), m))?;
                }
            }
            check_roles(&c.roles).map_err(|m| invalid(&key("roles"), &m))?;
            if let Some(uri) = &c.backchannel_logout_uri {
                check_redirect_uri(uri).map_err(|m| invalid(&key("backchannel_logout_uri"), m))?;
            }
            let retry_for = c.backchannel_logout_retry_for;
            if !(Duration::from_secs(1)..=Duration::from_secs(7 * 24 * 3600)).contains(&retry_for) {
                return Err(invalid(
                    &key("backchannel_logout_retry_for"),
                    "must be between 1s and 7 days",
                ));
            }
        }
        Ok(())
    }

    /// The signing key files, resolved against the config file's folder.
    pub fn signing_key_paths(&self) -> Vec<PathBuf> {
        self.tokens
            .signing_keys
            .iter()
            .map(|p| self.base_dir.join(p))
            .collect()
    }
}
