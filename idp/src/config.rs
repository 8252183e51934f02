//! The IdP's configuration: typed, with defaults, validated right after parsing.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
pub use tokengate_server::ConfigError;
pub use tokengate_store::StoreConfig;

mod validate;
pub use validate::{check_issuer, check_redirect_uri, check_roles, check_subject};

/// The whole IdP configuration file, as parsed; [`IdpConfig::load`] also validates it.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IdpConfig {
    /// `[server]`: the public listener (OAuth, OpenID Connect, sign-in pages); required.
    pub server: ServerConfig,
    /// `[admin]`: the admin listener (admin API, console); required.
    pub admin: AdminConfig,
    /// `[store]`: the Redis token store; default: one server at `redis://127.0.0.1:6379`.
    #[serde(default)]
    pub store: StoreConfig,
    /// `[tokens]`: the issuer URL, session lifetimes and signing keys.
    #[serde(default)]
    pub tokens: TokensConfig,
    /// `[login]`: the login throttle.
    #[serde(default)]
    pub login: LoginConfig,
    /// `[[users]]`: seed users, created in the store when absent, never overwritten.
    #[serde(default)]
    pub users: Vec<UserConfig>,
    /// `[[clients]]`: the registered OAuth clients (the console's own is added by the IdP).
    #[serde(default)]
    pub clients: Vec<ClientConfig>,
    /// Upstream OpenID Connect providers people may sign in through (federation).
    #[serde(default)]
    pub upstreams: Vec<UpstreamConfig>,
    /// `[mfa]`: who must sign in with a second factor.
    #[serde(default)]
    pub mfa: MfaConfig,
    /// `[webauthn]`: passkeys; off unless configured.
    #[serde(default)]
    pub webauthn: Option<WebauthnConfig>,
    /// `[log]`: the access log.
    #[serde(default)]
    pub log: tokengate_server::access::LogConfig,
    /// The folder relative paths (signing keys) are resolved against: the config file's.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// `[server]`: the public listener and its limits.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Where the public listener binds (`0` as port: the OS picks one).
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

/// `[admin]`: the admin listener, its token, and the console. `Debug` hides the token.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Where the admin listener binds; must differ from `server.listen`.
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

/// `[tokens]`: what sessions are and how long they last.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TokensConfig {
    /// The IdP's public URL, `iss` of every token. Default empty: `http://` and the public
    /// listener's bound address.
    #[serde(default = "defaults::issuer")]
    pub issuer: String,
    /// A session ends after this long without use. Default 30 minutes.
    #[serde(default = "defaults::idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// No session outlives this, used or not; at least `idle_timeout`. Default 12 hours.
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

/// `[mfa]`: a second factor required of some people (besides the clients with `require_mfa`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MfaConfig {
    /// People holding any of these roles sign in with a second factor, and are led through
    /// enrolment first when they have none. Default: nobody.
    #[serde(default)]
    pub required_for_roles: Vec<String>,
}

/// `[webauthn]`: passkeys (WebAuthn), as a second factor and for signing in without a password.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebauthnConfig {
    /// The relying party id: the IdP's host name or a registrable suffix of it
    /// (`login.example.com` or `example.com`); `localhost` for local tries.
    pub rp_id: String,
    /// The origins the IdP's pages are served from, exactly as browsers write them
    /// (`https://login.example.com`, a port when not the scheme's own); each host is `rp_id` or
    /// one of its subdomains.
    pub origins: Vec<String>,
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
    /// The window failures are counted over. Default 15 minutes.
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

/// `[[users]]`: one seed user. `Debug` hides the hash.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// 1 to 256 bytes, no control characters; unique.
    pub username: String,
    /// An argon2id PHC string (`tokengate hash-password` prints one).
    pub password_hash: String,
    /// Each 1 to 128 visible ASCII characters without commas; at most 64.
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
    /// The code flow of `/oauth2/authorize` (`authorization_code`).
    AuthorizationCode,
    /// A confidential client acting for itself, with its own roles (`client_credentials`).
    ClientCredentials,
    /// A username and password sent by the client (`password`); only when listed.
    Password,
}

impl Grant {
    /// The name as `grant_type` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Grant::AuthorizationCode => "authorization_code",
            Grant::ClientCredentials => "client_credentials",
            Grant::Password => "password",
        }
    }
}

/// `[[clients]]`: one registered OAuth client. `Debug` hides the secret hash.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// Unique, 1 to 256 bytes; not `tokengate-console` (the IdP's own).
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
    /// Where the IdP POSTs a logout token (OpenID Connect Back-Channel Logout 1.0) when a
    /// session issued to this client ends: an absolute http(s) URL without a fragment.
    #[serde(default)]
    pub backchannel_logout_uri: Option<String>,
    /// Whether the client needs `sid` in its logout tokens (it always gets it); registered for
    /// the client's sake, as the specification has it.
    #[serde(default)]
    pub backchannel_logout_session_required: bool,
    /// How long a logout token that cannot be delivered is retried, with backoff: 1 s to 7 days.
    #[serde(
        default = "defaults::backchannel_logout_retry_for",
        with = "humantime_serde"
    )]
    pub backchannel_logout_retry_for: Duration,
    /// Everyone signing in to this client does so with a second factor (enrolling first when
    /// they have none).
    #[serde(default)]
    pub require_mfa: bool,
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
            backchannel_logout_uri: None,
            backchannel_logout_session_required: false,
            backchannel_logout_retry_for: defaults::backchannel_logout_retry_for(),
            require_mfa: false,
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
            .field("backchannel_logout_uri", &self.backchannel_logout_uri)
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
    /// The client id registered at the provider.
    pub client_id: String,
    /// `TOKENGATE_UPSTREAM_<NAME>_SECRET` replaces it (name upper-cased, `-` as `_`).
    #[serde(default)]
    pub client_secret: String,
    /// Default `openid profile email`; must contain `openid`.
    #[serde(default = "defaults::upstream_scopes")]
    pub scopes: Vec<String>,
    /// The id_token claim that names the user. Empty: `preferred_username`, then `email`, then
    /// `sub`.
    #[serde(default)]
    pub username_claim: String,
    /// The id_token claim (a string or an array of strings) whose values `role_map` maps.
    #[serde(default)]
    pub roles_claim: String,
    /// A value of `roles_claim` to the roles it gives here; values not listed give none.
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

/// The client id of the admin console, which signs in through the IdP's own code flow.
pub const CONSOLE_CLIENT_ID: &str = "tokengate-console";

/// Longest redirect URI accepted.
pub const MAX_URI_LEN: usize = 2048;

/// The shortest `tokens.value_token_ttl`: renewal starts at half of it, and readers stop using a
/// token a few seconds before it expires (`EXPIRY_MARGIN`).
pub const MIN_VALUE_TOKEN_TTL: Duration = Duration::from_secs(30);

/// Longest username, client id or subject accepted anywhere.
pub const MAX_SUBJECT_LEN: usize = 256;
/// Longest role name.
pub const MAX_ROLE_LEN: usize = 128;
/// Most roles one subject may hold.
pub const MAX_ROLES: usize = 64;

mod defaults {
    use std::time::Duration;
    pub fn backchannel_logout_retry_for() -> Duration {
        Duration::from_secs(3600)
    }
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
