//! Loading and validating the configuration: the file, the environment, then the checks
//! that types alone cannot make.

use std::path::Path;

use std::time::Duration;

use super::{BrowserConfig, ConfigError, GatewayConfig, RouteConfig};

/// `scheme://host[:port]` of an http(s) URL, lower-case.
pub fn origin(url: &str) -> Option<String> {
    let uri = url.parse::<http::Uri>().ok()?;
    let scheme = uri
        .scheme_str()
        .filter(|s| matches!(*s, "http" | "https"))?;
    Some(format!("{scheme}://{}", uri.authority()?).to_ascii_lowercase())
}

impl GatewayConfig {
    /// Reads, parses and validates a config file. `TOKENGATE_GATEWAY_ADMIN_TOKEN` and
    /// `TOKENGATE_BROWSER_CLIENT_SECRET` fill `admin.token` and `browser.client_secret` when
    /// these are absent.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_owned(),
            source,
        })?;
        let mut config = Self::parse(&text, path)?;
        if config.admin.token.is_none() {
            config.admin.token = std::env::var("TOKENGATE_GATEWAY_ADMIN_TOKEN").ok();
        }
        if let Some(browser) = &mut config.browser
            && browser.client_secret.is_none()
        {
            browser.client_secret = std::env::var("TOKENGATE_BROWSER_CLIENT_SECRET").ok();
        }
        config.validate(path)?;
        Ok(config)
    }

    /// Reads, parses and validates a config file as [`GatewayConfig::load`] does, for tools
    /// that use it without serving (`tokengate check`): secrets the file leaves to the
    /// environment are not needed, so a placeholder stands for them.
    pub fn load_offline(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_owned(),
            source,
        })?;
        let mut config = Self::parse(&text, path)?;
        if let Some(browser) = &mut config.browser
            && browser.client_secret.is_none()
        {
            browser.client_secret = Some("(not needed offline)".to_owned());
        }
        config.validate(path)?;
        Ok(config)
    }

    /// Parses TOML without validating it (see [`GatewayConfig::validate`]); `path` names the
    /// file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            file: path.to_owned(),
            message: e.to_string(),
        })
    }

    /// The checks types cannot make (addresses, URLs, limits, route rules); the first failure
    /// names its key and `path`.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: String, message: &str| ConfigError::Invalid {
            file: path.to_owned(),
            key,
            message: message.to_owned(),
        };
        if self.server.tls_cert.is_some() != self.server.tls_key.is_some() {
            return Err(invalid(
                "server.tls_cert".into(),
                "tls_cert and tls_key go together",
            ));
        }
        if self.server.listen == self.admin.listen {
            return Err(invalid(
                "admin.listen".into(),
                "must differ from server.listen",
            ));
        }
        self.store
            .validate()
            .map_err(|e| invalid(format!("store.{}", e.key), &e.message))?;
        if !self.idp.jwks_url.starts_with("http://") {
            return Err(invalid("idp.jwks_url".into(), "must be an http:// URL"));
        }
        if self.server.max_body_bytes == 0 {
            return Err(invalid(
                "server.max_body_bytes".into(),
                "must be at least 1",
            ));
        }
        if self.server.workers > MAX_WORKERS {
            return Err(invalid(
                "server.workers".into(),
                "must be at most 256 (one per core is the most that helps)",
            ));
        }
        if self.server.max_connections < self.server.workers {
            return Err(invalid(
                "server.max_connections".into(),
                "must be at least server.workers (each worker serves a share)",
            ));
        }
        if self.server.max_connections == 0 {
            return Err(invalid(
                "server.max_connections".into(),
                "must be at least 1",
            ));
        }
        if self.cache.max_entries == 0 {
            return Err(invalid("cache.max_entries".into(), "must be at least 1"));
        }
        if self.cache.max_staleness.is_zero() {
            return Err(invalid("cache.max_staleness".into(), "must be more than 0"));
        }
        if let Some(limit) = self.protection.invalid_token_limit() {
            limit.validate().map_err(|e| {
                let key = match e.key {
                    "burst" => "protection.invalid_token_burst",
                    _ => "protection.invalid_token_rate",
                };
                invalid(key.into(), e.message)
            })?;
        }
        if self.log.access_path.is_empty() {
            return Err(invalid(
                "log.access_path".into(),
                "must be - (standard output) or a file",
            ));
        }
        if self.sync.interval.is_zero() {
            return Err(invalid("sync.interval".into(), "must be more than 0"));
        }
        for (i, route) in self.routes.iter().enumerate() {
            if !route.path_prefix.starts_with('/') {
                return Err(invalid(
                    format!("routes[{i}].path_prefix"),
                    "must start with /",
                ));
            }
            let ok = |url: &String| {
                url.parse::<http::Uri>().ok().is_some_and(|u| {
                    u.scheme_str() == Some("http")
                        && u.authority().is_some()
                        && matches!(u.path(), "" | "/")
                })
            };
            if route.upstream.is_empty() || !route.upstream.iter().all(ok) {
                return Err(invalid(
                    format!("routes[{i}].upstream"),
                    "must be http://host:port without a path, or a non-empty list of them",
                ));
            }
            if route.browser && self.browser.is_none() {
                return Err(invalid(
                    format!("routes[{i}].browser"),
                    "needs a [browser] section",
                ));
            }
            if route.rate_limit_max_keys == 0 {
                return Err(invalid(
                    format!("routes[{i}].rate_limit_max_keys"),
                    "must be at least 1",
                ));
            }
            if let Some(limit) = &route.rate_limit {
                limit
                    .validate()
                    .map_err(|e| invalid(format!("routes[{i}].rate_limit.{}", e.key), e.message))?;
                if limit.per.needs_identity() && !route.auth {
                    return Err(invalid(
                        format!("routes[{i}].rate_limit.per"),
                        "subject, session and client need a protected route: use client_address or route on auth = false",
                    ));
                }
            }
            route.validate_upstreams(|k, m| invalid(format!("routes[{i}].{k}"), m))?;
            crate::policy::Policy::compile(&route.rules, &route.roles, route.auth).map_err(
                |(j, e)| match e.key {
                    "rules" => invalid(format!("routes[{i}].rules"), &e.message),
                    key => invalid(format!("routes[{i}].rules[{j}].{key}"), &e.message),
                },
            )?;
            if let Some(cors) = &route.cors {
                crate::cors::Cors::new(cors)
                    .map_err(|e| invalid(format!("routes[{i}].cors.{}", e.key), &e.message))?;
            }
            if route.browser && !route.auth {
                return Err(invalid(
                    format!("routes[{i}].browser"),
                    "a browser route is a protected route: remove auth = false",
                ));
            }
        }
        if let Some(browser) = &self.browser {
            browser.validate(self.server.tls_cert.is_some(), invalid)?;
        }
        Ok(())
    }
}

impl BrowserConfig {
    fn validate(
        &self,
        tls: bool,
        invalid: impl Fn(String, &str) -> ConfigError,
    ) -> Result<(), ConfigError> {
        let key = |k: &str| format!("browser.{k}");
        if !self.issuer.starts_with("http://") || self.issuer.parse::<http::Uri>().is_err() {
            return Err(invalid(key("issuer"), "must be an http:// URL"));
        }
        if self.client_id.is_empty() {
            return Err(invalid(key("client_id"), "must not be empty"));
        }
        if self.client_secret.as_deref().is_none_or(str::is_empty) {
            return Err(invalid(
                key("client_secret"),
                "is required (or set TOKENGATE_BROWSER_CLIENT_SECRET)",
            ));
        }
        let public = self.public_url().parse::<http::Uri>().ok();
        let public_ok = public.as_ref().is_some_and(|u| {
            matches!(u.scheme_str(), Some("http" | "https"))
                && u.authority().is_some()
                && matches!(u.path(), "" | "/")
                && u.query().is_none()
        });
        if !public_ok {
            return Err(invalid(
                key("public_url"),
                "must be http(s)://host[:port] without a path",
            ));
        }
        let name = self.cookie_name(tls);
        let token_char = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if name.is_empty() || !name.bytes().all(token_char) {
            return Err(invalid(
                key("cookie_name"),
                "must be a cookie name (letters, digits, - _ .)",
            ));
        }
        if tokengate_server::cookies::IDP_COOKIES.contains(&name.as_str()) {
            return Err(invalid(
                key("cookie_name"),
                "is the name of one of the IdP's own cookies",
            ));
        }
        if (name.starts_with("__Host-") || name.starts_with("__Secure-")) && !self.secure(tls) {
            return Err(invalid(
                key("cookie_name"),
                "the __Host- and __Secure- prefixes need a Secure cookie: set server.tls_cert or an https:// public_url",
            ));
        }
        for (i, o) in self.allowed_origins.iter().enumerate() {
            if origin(o).as_deref() != Some(o.trim_end_matches('/').to_ascii_lowercase().as_str()) {
                return Err(invalid(
                    format!("browser.allowed_origins[{i}]"),
                    "must be an origin: scheme://host[:port]",
                ));
            }
        }
        if self.login_timeout.is_zero() {
            return Err(invalid(key("login_timeout"), "must be more than 0"));
        }
        Ok(())
    }
}

/// Longest ejection, however often an upstream is ejected.
pub const MAX_EJECTION: Duration = Duration::from_secs(300);
/// Retries of one request at most.
pub const MAX_RETRIES: u32 = 5;
/// `server.workers` at most.
pub const MAX_WORKERS: usize = 256;

impl RouteConfig {
    /// Timeouts, limits, ejection, retries and health checks; `invalid` gets the key below the
    /// route.
    fn validate_upstreams(
        &self,
        invalid: impl Fn(&str, &str) -> ConfigError,
    ) -> Result<(), ConfigError> {
        let positive = [
            ("timeout", self.timeout),
            ("connect_timeout", self.connect_timeout),
            ("eject_for", Some(self.eject_for)),
        ];
        for (key, value) in positive {
            if value.is_some_and(|d| d.is_zero()) {
                return Err(invalid(key, "must be more than 0"));
            }
        }
        if self.eject_for > MAX_EJECTION {
            return Err(invalid("eject_for", "must be at most 5m"));
        }
        if self.max_requests == Some(0) {
            return Err(invalid(
                "max_requests",
                "must be at least 1 (leave it out for no limit)",
            ));
        }
        if self.eject_after == 0 {
            return Err(invalid("eject_after", "must be at least 1"));
        }
        if self.retries > MAX_RETRIES {
            return Err(invalid("retries", "must be at most 5"));
        }
        if let Some(check) = &self.health_check {
            if !check.path.starts_with('/')
                || check.path.parse::<http::uri::PathAndQuery>().is_err()
            {
                return Err(invalid(
                    "health_check.path",
                    "must be a path starting with /",
                ));
            }
            if check.interval.is_zero() {
                return Err(invalid("health_check.interval", "must be more than 0"));
            }
            if check.timeout.is_zero() || check.timeout > check.interval {
                return Err(invalid(
                    "health_check.timeout",
                    "must be more than 0 and at most health_check.interval",
                ));
            }
            if check.unhealthy_after == 0 {
                return Err(invalid(
                    "health_check.unhealthy_after",
                    "must be at least 1",
                ));
            }
            if check.healthy_after == 0 {
                return Err(invalid("health_check.healthy_after", "must be at least 1"));
            }
        }
        Ok(())
    }
}
