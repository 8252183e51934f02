//! The IdP's configuration: typed, with defaults, validated right after parsing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
pub use tokengate_server::ConfigError;
pub use tokengate_store::StoreConfig;

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IdpConfig {
    pub server: ServerConfig,
    pub admin: AdminConfig,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub tokens: TokensConfig,
    #[serde(default)]
    pub login: LoginConfig,
    #[serde(default)]
    pub users: Vec<UserConfig>,
    #[serde(default)]
    pub clients: Vec<ClientConfig>,
    /// Upstream OpenID Connect providers people may sign in through (federation).
    #[serde(default)]
    pub upstreams: Vec<UpstreamConfig>,
    /// `[log]`: the access log.
    #[serde(default)]
    pub log: tokengate_server::access::LogConfig,
    /// The folder relative paths (signing keys) are resolved against: the config file's.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Connections served at once; more wait in the kernel's backlog.
    #[serde(default = "defaults::max_connections")]
    pub max_connections: usize,
    /// Time a client has to send the request head.
    #[serde(default = "defaults::header_timeout", with = "humantime_serde")]
    pub header_timeout: Duration,
    /// Time one request may take from head to response.
    #[serde(default = "defaults::request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Time in-flight requests get to finish on shutdown.
    #[serde(default = "defaults::drain_timeout", with = "humantime_serde")]
    pub drain_timeout: Duration,
}

#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// The bearer token of the admin API. `TOKENGATE_ADMIN_TOKEN` replaces it.
    #[serde(default)]
    pub token: String,
    /// The role a user needs to sign in to the console (`/console/`).
    #[serde(default = "defaults::console_role")]
    pub console_role: String,
    /// A console session ends after this long without a page being loaded.
    #[serde(default = "defaults::console_idle_timeout", with = "humantime_serde")]
    pub console_idle_timeout: Duration,
    /// The URL browsers reach the admin listener at; the console's redirect URI is
    /// `{public_url}/console/callback`. Default: `http://` and the admin listener's address.
    #[serde(default)]
    pub public_url: Option<String>,
}

impl AdminConfig {
    /// The admin listener at `listen` with `token`, everything else by default.
    pub fn new(listen: SocketAddr, token: &str) -> Self {
        AdminConfig {
            listen,
            token: token.to_owned(),
            console_role: defaults::console_role(),
            console_idle_timeout: defaults::console_idle_timeout(),
            public_url: None,
        }
    }
}

impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig")
            .field("listen", &self.listen)
            .field("token", &"<redacted>")
            .field("console_role", &self.console_role)
            .field("console_idle_timeout", &self.console_idle_timeout)
            .field("public_url", &self.public_url)
            .finish()
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TokensConfig {
    #[serde(default = "defaults::issuer")]
    pub issuer: String,
    #[serde(default = "defaults::idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    #[serde(default = "defaults::max_lifetime", with = "humantime_serde")]
    pub max_lifetime: Duration,
    /// How long a value token lasts (at most until its session ends); the IdP renews the value
    /// tokens of live sessions when less than half of it is left.
    #[serde(default = "defaults::value_token_ttl", with = "humantime_serde")]
    pub value_token_ttl: Duration,
    /// PEM files (Ed25519 or P-256). The first signs; all are published in the JWKS.
    #[serde(default)]
    pub signing_keys: Vec<PathBuf>,
}

impl Default for TokensConfig {
    fn default() -> Self {
        TokensConfig {
            issuer: defaults::issuer(),
            idle_timeout: defaults::idle_timeout(),
            max_lifetime: defaults::max_lifetime(),
            value_token_ttl: defaults::value_token_ttl(),
            signing_keys: Vec::new(),
        }
    }
}

/// Password-guessing defence of `/oauth2/token` and client authentication.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LoginConfig {
    /// Failures for one username (or client id) within `window` that start a lockout; 0 = off.
    #[serde(default = "defaults::max_failures")]
    pub max_failures: u32,
    /// Failures from one client address within `window` that start a lockout; 0 = off.
    #[serde(default = "defaults::max_failures_per_address")]
    pub max_failures_per_address: u32,
    #[serde(default = "defaults::login_window", with = "humantime_serde")]
    pub window: Duration,
    /// How long a lockout holds; attempts get `429` with `Retry-After` meanwhile.
    #[serde(default = "defaults::lockout", with = "humantime_serde")]
    pub lockout: Duration,
}

impl Default for LoginConfig {
    fn default() -> Self {
        LoginConfig {
            max_failures: defaults::max_failures(),
            max_failures_per_address: defaults::max_failures_per_address(),
            window: defaults::login_window(),
            lockout: defaults::lockout(),
        }
    }
}

#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub username: String,
    /// An argon2id PHC string (`tokengate hash-password` prints one).
    pub password_hash: String,
    #[serde(default)]
    pub roles: Vec<String>,
}

impl std::fmt::Debug for UserConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserConfig")
            .field("username", &self.username)
            .field("password_hash", &"<redacted>")
            .field("roles", &self.roles)
            .finish()
    }
}

/// Whether a client can keep a secret (RFC 6749 §2.1).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ClientType {
    /// A browser or native app: it holds no secret and proves nothing but its redirect URI
    /// (and PKCE, which it must use).
    Public,
    /// A server-side app with a secret (`client_secret_hash`).
    #[default]
    Confidential,
}

/// A grant type a client may use at `/oauth2/token`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Grant {
    AuthorizationCode,
    ClientCredentials,
    Password,
}

impl Grant {
    pub fn as_str(self) -> &'static str {
        match self {
            Grant::AuthorizationCode => "authorization_code",
            Grant::ClientCredentials => "client_credentials",
            Grant::Password => "password",
        }
    }
}

#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    pub client_id: String,
    /// `public` or `confidential` (the default).
    #[serde(default, rename = "type")]
    pub client_type: ClientType,
    /// An argon2id PHC string of the client secret; confidential clients only.
    #[serde(default)]
    pub client_secret_hash: Option<String>,
    /// Where `/oauth2/authorize` may send people back: compared exactly, character for character.
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// Where `/oauth2/logout` may send people after signing out (exact match too).
    #[serde(default)]
    pub post_logout_redirect_uris: Vec<String>,
    /// Grants this client may use. Empty: `authorization_code` for a public client,
    /// `client_credentials` for a confidential one. `password` is never on by default.
    #[serde(default)]
    pub grants: Vec<Grant>,
    /// The roles of the client itself, for `client_credentials`.
    #[serde(default)]
    pub roles: Vec<String>,
}

impl ClientConfig {
    /// A public client (no secret) that may use `grants`.
    pub fn public(client_id: &str, grants: &[Grant], redirect_uris: &[&str]) -> Self {
        ClientConfig {
            client_id: client_id.to_owned(),
            client_type: ClientType::Public,
            client_secret_hash: None,
            redirect_uris: redirect_uris.iter().map(|u| (*u).to_owned()).collect(),
            post_logout_redirect_uris: Vec::new(),
            grants: grants.to_vec(),
            roles: Vec::new(),
        }
    }

    /// A confidential client whose secret hashes to `secret_hash` (argon2id).
    pub fn confidential(client_id: &str, secret_hash: String, grants: &[Grant]) -> Self {
        ClientConfig {
            client_type: ClientType::Confidential,
            client_secret_hash: Some(secret_hash),
            ..Self::public(client_id, grants, &[])
        }
    }

    /// The grants this client may use, with the type's default when none are listed.
    pub fn grants(&self) -> Vec<Grant> {
        match (self.grants.is_empty(), self.client_type) {
            (false, _) => self.grants.clone(),
            (true, ClientType::Public) => vec![Grant::AuthorizationCode],
            (true, ClientType::Confidential) => vec![Grant::ClientCredentials],
        }
    }
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("client_id", &self.client_id)
            .field("client_type", &self.client_type)
            .field("client_secret_hash", &"<redacted>")
            .field("redirect_uris", &self.redirect_uris)
            .field("grants", &self.grants)
            .field("roles", &self.roles)
            .finish_non_exhaustive()
    }
}

/// An upstream OpenID Connect provider (federation): people sign in there, and get an ordinary
/// tokengate session here. Its callback is `{issuer}/oauth2/upstream/{name}/callback`.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Shown on the sign-in button, in the callback path and in metrics; `[a-z0-9_-]`.
    pub name: String,
    /// The provider's issuer URL; its `/.well-known/openid-configuration` is read.
    pub issuer: String,
    pub client_id: String,
    /// `TOKENGATE_UPSTREAM_<NAME>_SECRET` replaces it (name upper-cased, `-` as `_`).
    #[serde(default)]
    pub client_secret: String,
    #[serde(default = "defaults::upstream_scopes")]
    pub scopes: Vec<String>,
    /// The id_token claim that names the user. Empty: `preferred_username`, then `email`, then
    /// `sub`.
    #[serde(default)]
    pub username_claim: String,
    /// The id_token claim (a string or an array of strings) whose values `role_map` maps.
    #[serde(default)]
    pub roles_claim: String,
    #[serde(default)]
    pub role_map: std::collections::BTreeMap<String, Vec<String>>,
    /// Roles every user of this provider gets.
    #[serde(default)]
    pub default_roles: Vec<String>,
    /// When not empty, usernames must be e-mail addresses in one of these domains.
    #[serde(default)]
    pub allowed_domains: Vec<String>,
    /// The longest any one call to the provider (discovery, keys, code exchange) may take.
    #[serde(default = "defaults::upstream_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// PEM certificates an `https` provider is verified against instead of the system's roots
    /// (a provider behind a private CA); relative to the config file.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// Accept OpenID Connect Back-Channel Logout from this provider at
    /// `{issuer}/oauth2/upstream/{name}/backchannel-logout`: a logout there ends the sessions
    /// made from that sign-in here.
    #[serde(default)]
    pub backchannel_logout: bool,
}

impl UpstreamConfig {
    /// The environment variable that replaces `client_secret`.
    pub fn secret_variable(&self) -> String {
        format!(
            "TOKENGATE_UPSTREAM_{}_SECRET",
            self.name.to_ascii_uppercase().replace('-', "_")
        )
    }
}

impl std::fmt::Debug for UpstreamConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamConfig")
            .field("name", &self.name)
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("scopes", &self.scopes)
            .field("username_claim", &self.username_claim)
            .field("roles_claim", &self.roles_claim)
            .field("role_map", &self.role_map)
            .field("default_roles", &self.default_roles)
            .field("allowed_domains", &self.allowed_domains)
            .field("timeout", &self.timeout)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("backchannel_logout", &self.backchannel_logout)
            .finish()
    }
}

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

/// The client id of the admin console, which signs in through the IdP's own code flow.
pub const CONSOLE_CLIENT_ID: &str = "tokengate-console";

/// Longest redirect URI accepted.
pub const MAX_URI_LEN: usize = 2048;

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

mod defaults {
    use std::time::Duration;
    pub fn console_role() -> String {
        "tokengate:admin".to_owned()
    }
    pub fn console_idle_timeout() -> Duration {
        Duration::from_secs(15 * 60)
    }
    pub fn max_failures() -> u32 {
        5
    }
    pub fn max_failures_per_address() -> u32 {
        50
    }
    pub fn login_window() -> Duration {
        Duration::from_secs(15 * 60)
    }
    pub fn lockout() -> Duration {
        Duration::from_secs(5 * 60)
    }
    pub fn max_connections() -> usize {
        1024
    }
    pub fn header_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn request_timeout() -> Duration {
        Duration::from_secs(30)
    }
    pub fn drain_timeout() -> Duration {
        Duration::from_secs(10)
    }
    /// Empty: `http://` and the public listener's address, found when it is bound.
    pub fn issuer() -> String {
        String::new()
    }
    pub fn idle_timeout() -> Duration {
        Duration::from_secs(30 * 60)
    }
    pub fn max_lifetime() -> Duration {
        Duration::from_secs(12 * 3600)
    }
    pub fn value_token_ttl() -> Duration {
        Duration::from_secs(5 * 60)
    }
    pub fn upstream_scopes() -> Vec<String> {
        ["openid", "profile", "email"].map(String::from).to_vec()
    }
    pub fn upstream_timeout() -> Duration {
        Duration::from_secs(10)
    }
}

/// The shortest `tokens.value_token_ttl`: renewal starts at half of it, and readers stop using a
/// token a few seconds before it expires (`EXPIRY_MARGIN`).
pub const MIN_VALUE_TOKEN_TTL: Duration = Duration::from_secs(30);

/// Longest username, client id or subject accepted anywhere.
pub const MAX_SUBJECT_LEN: usize = 256;
/// Longest role name.
pub const MAX_ROLE_LEN: usize = 128;
/// Most roles one subject may hold.
pub const MAX_ROLES: usize = 64;

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
        self.validate_clients(&invalid)?;
        self.validate_upstreams(&invalid)?;
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_commented_upstream_example_is_valid() {
        let example = include_str!("../../config/idp.toml");
        let block: String = example
            .lines()
            .skip_while(|l| *l != "# [[upstreams]]")
            .map_while(|l| l.strip_prefix("# ").or((l == "#").then_some("")))
            // The example's CA file is not shipped.
            .filter(|l| !l.starts_with("tls_ca_file"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(block.contains("role_map"), "{block}");
        let path = Path::new("config/idp.toml");
        let config = IdpConfig::parse(&format!("{BASE}{block}"), path).unwrap();
        config.validate(path).unwrap();
        assert_eq!(config.upstreams[0].roles_claim, "groups");
    }

    #[test]
    fn upstream_secrets_never_show_in_debug() {
        let text = format!(
            "{BASE}[[upstreams]]\nname = \"corp\"\nissuer = \"https://sso.example.com\"\nclient_id = \"tg\"\nclient_secret = \"hush-hush\"\n"
        );
        let config = IdpConfig::parse(&text, Path::new("idp.toml")).unwrap();
        let debug = format!("{config:?}");
        assert!(
            debug.contains("corp") && !debug.contains("hush-hush"),
            "{debug}"
        );
    }

    const BASE: &str = r#"
[server]
listen = "127.0.0.1:7000"
[admin]
listen = "127.0.0.1:7001"
token = "long-enough-token"
"#;

    fn error_of(extra: &str) -> String {
        let path = Path::new("conf/idp.toml");
        let text = format!("{BASE}{extra}");
        match IdpConfig::parse(&text, path).and_then(|c| c.validate(path).map(|_| c)) {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn errors_name_the_file_and_the_key() {
        assert_eq!(error_of(""), "");
        let user = r#"[[users]]
username = "alice"
password_hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA"
"#;
        let twice = error_of(&format!("{user}{user}"));
        assert!(
            twice.contains("conf/idp.toml") && twice.contains("users[1].username"),
            "{twice}"
        );
        let plain = error_of("[[clients]]\nclient_id = \"c\"\nclient_secret_hash = \"secret\"\n");
        assert!(plain.contains("clients[0].client_secret_hash"), "{plain}");
        let roles = error_of(&format!("{user}roles = [\"a,b\"]\n"));
        assert!(roles.contains("users[0].roles"), "{roles}");
        let lifetime = error_of("[tokens]\nidle_timeout = \"2h\"\nmax_lifetime = \"1h\"\n");
        assert!(lifetime.contains("tokens.max_lifetime"), "{lifetime}");
        for ttl in ["29s", "13h"] {
            let short = error_of(&format!("[tokens]\nvalue_token_ttl = \"{ttl}\"\n"));
            assert!(short.contains("tokens.value_token_ttl"), "{ttl}: {short}");
        }
        assert_eq!(error_of("[tokens]\nvalue_token_ttl = \"30s\"\n"), "");
        let mode = error_of("[store]\nmode = \"cluster\"\n");
        assert!(mode.contains("store.nodes"), "{mode}");
        let public_secret = error_of(
            "[[clients]]\nclient_id = \"web\"\ntype = \"public\"\nclient_secret_hash = \"$argon2id$x\"\nredirect_uris = [\"http://a/cb\"]\n",
        );
        assert!(
            public_secret.contains("clients[0].client_secret_hash"),
            "{public_secret}"
        );
        let no_redirect = error_of("[[clients]]\nclient_id = \"web\"\ntype = \"public\"\n");
        assert!(
            no_redirect.contains("clients[0].redirect_uris"),
            "{no_redirect}"
        );
        let fragment = error_of(
            "[[clients]]\nclient_id = \"web\"\ntype = \"public\"\nredirect_uris = [\"http://a/cb#x\"]\n",
        );
        assert!(
            fragment.contains("clients[0].redirect_uris[0]"),
            "{fragment}"
        );
        let relative = error_of(
            "[[clients]]\nclient_id = \"web\"\ntype = \"public\"\nredirect_uris = [\"/cb\"]\n",
        );
        assert!(relative.contains("absolute"), "{relative}");
        let public_cc = error_of(
            "[[clients]]\nclient_id = \"web\"\ntype = \"public\"\ngrants = [\"client_credentials\"]\n",
        );
        assert!(public_cc.contains("clients[0].grants"), "{public_cc}");
        let upstream = "[[upstreams]]\nname = \"corp\"\nissuer = \"https://sso.example.com\"\nclient_id = \"tokengate\"\n";
        let no_secret = error_of(upstream);
        assert!(
            no_secret.contains("upstreams[0].client_secret")
                && no_secret.contains("TOKENGATE_UPSTREAM_CORP_SECRET"),
            "{no_secret}"
        );
        assert_eq!(error_of(&format!("{upstream}client_secret = \"s\"\n")), "");
        let no_openid = error_of(&format!(
            "{upstream}client_secret = \"s\"\nscopes = [\"email\"]\n"
        ));
        assert!(no_openid.contains("upstreams[0].scopes"), "{no_openid}");
        let bad_name = error_of(&upstream.replace("corp", "Corp Inc"));
        assert!(bad_name.contains("upstreams[0].name"), "{bad_name}");
        let bad_role = error_of(&format!(
            "{upstream}client_secret = \"s\"\nrole_map = {{ eng = [\"a,b\"] }}\n"
        ));
        assert!(bad_role.contains("upstreams[0].role_map.eng"), "{bad_role}");
        let unknown = error_of("[server2]\n");
        assert!(
            unknown.contains("conf/idp.toml") && unknown.contains("server2"),
            "{unknown}"
        );
    }
}
