//! An upstream OpenID Connect provider, as a relying party sees it: discovery, its signing keys
//! (fetched again for an unknown key id, at most once per `KEYS_REFRESH_EVERY`), the code
//! exchange (`client_secret_basic`, PKCE) and the id_token's verification. Every call is bounded
//! by the provider's `timeout`, in time and in size, and timed in the metrics.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::sync::Mutex;

use crate::config::UpstreamConfig;
use crate::metrics::{Metrics, UpstreamCallLabels};

/// Largest answer read from a provider (discovery, keys, token response).
const MAX_BODY_BYTES: usize = 256 * 1024;
/// An unknown key id fetches the keys again, at most once per this period.
const KEYS_REFRESH_EVERY: Duration = Duration::from_secs(5);
/// Clock difference tolerated on `exp` and `iat`.
const CLOCK_SKEW: u64 = 60;
/// The oldest logout token taken, by its `iat`, in seconds (its `jti` is remembered as long).
pub const LOGOUT_TOKEN_MAX_AGE: u64 = 120 + CLOCK_SKEW;
/// The `events` member that makes a JWT a back-channel logout token.
const BACKCHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// What a verified logout token names.
#[derive(Debug)]
pub struct LogoutToken {
    /// Its id, refused when seen again.
    pub jti: String,
    /// The provider's subject.
    pub sub: Option<String>,
    /// The provider's session.
    pub sid: Option<String>,
}
/// Signature algorithms accepted (asymmetric only: never `none`, never a shared secret).
const ALGORITHMS: [Algorithm; 6] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::ES256,
    Algorithm::EdDSA,
];

/// Why a sign-in through an upstream provider failed. `reason()` labels the metric.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Connecting or reading failed (DNS, refused, TLS, reset).
    #[error("upstream unreachable: {0}")]
    Unreachable(String),
    /// No answer within the upstream's `timeout`.
    #[error("upstream too slow (no answer within {0:?})")]
    Timeout(Duration),
    /// An answer other than `200`.
    #[error("upstream answered {0}")]
    Status(StatusCode),
    /// An answer that cannot be read (too large, not the JSON expected) or a request that
    /// cannot be built from it (a bad URL); says which.
    #[error("upstream answer unreadable: {0}")]
    Malformed(&'static str),
    /// No key of the provider's JWKS has the id_token's `kid`, even after a refetch.
    #[error("id_token signed with an unknown key (after fetching the keys again)")]
    UnknownKey,
    /// The id_token's signature is wrong for its key.
    #[error("id_token signature does not verify")]
    BadSignature,
    /// `aud` (or `azp`) is not our `client_id`.
    #[error("id_token is for another client (aud or azp)")]
    WrongAudience,
    /// `iss` (or discovery's `issuer`) is not the configured `issuer`.
    #[error("id_token from another issuer")]
    WrongIssuer,
    /// `exp` has passed, or `nbf` has not come yet.
    #[error("id_token expired or issued in the future")]
    Expired,
    /// The id_token's `nonce` is not the one this sign-in sent.
    #[error("id_token nonce does not match the sign-in's")]
    WrongNonce,
    /// Any other reason the id_token cannot be used (missing claim, bad header).
    #[error("id_token unusable: {0}")]
    BadToken(String),
}

impl UpstreamError {
    /// The `reason` label of `upstream_failures`: one short word per variant.
    pub fn reason(&self) -> &'static str {
        match self {
            UpstreamError::Unreachable(_) => "unreachable",
            UpstreamError::Timeout(_) => "timeout",
            UpstreamError::Status(_) => "status",
            UpstreamError::Malformed(_) => "malformed",
            UpstreamError::UnknownKey => "unknown_key",
            UpstreamError::BadSignature => "signature",
            UpstreamError::WrongAudience => "audience",
            UpstreamError::WrongIssuer => "issuer",
            UpstreamError::Expired => "expired",
            UpstreamError::WrongNonce => "nonce",
            UpstreamError::BadToken(_) => "token",
        }
    }
}

/// What discovery tells (OpenID Connect Discovery 1.0 §3).
#[derive(Clone, Debug, Deserialize)]
pub struct Discovery {
    /// Must equal the configured issuer, character for character (§4.3).
    pub issuer: String,
    /// Where the browser is sent to sign in.
    pub authorization_endpoint: String,
    /// Where the code is exchanged, server to server.
    pub token_endpoint: String,
    /// Where the provider's signing keys are read.
    pub jwks_uri: String,
}

struct Keys {
    set: JwkSet,
    fetched: Instant,
}

/// One upstream provider.
pub struct Upstream {
    /// As configured; a reload builds a new `Upstream`.
    pub config: UpstreamConfig,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    discovery: Mutex<Option<Arc<Discovery>>>,
    keys: Mutex<Option<Keys>>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The configured upstream providers, by name.
#[derive(Debug, Default)]
pub struct Upstreams(HashMap<String, Arc<Upstream>>, Vec<String>);

impl Upstreams {
    /// Every configured provider; `tls_ca_file` is resolved against `base_dir`. Fails on a CA
    /// file that cannot be read, or an `https` provider without one on a system without roots.
    pub fn new(configs: &[UpstreamConfig], base_dir: &std::path::Path) -> Result<Self, String> {
        let mut by_name = HashMap::new();
        for c in configs {
            let upstream = Upstream::new(c.clone(), base_dir)
                .map_err(|e| format!("upstream {}: {e}", c.name))?;
            by_name.insert(c.name.clone(), Arc::new(upstream));
        }
        Ok(Upstreams(
            by_name,
            configs.iter().map(|c| c.name.clone()).collect(),
        ))
    }

    /// The provider named `name` in the callback path, if configured.
    pub fn get(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.0.get(name)
    }

    /// The names, in configuration order (the sign-in page's buttons).
    pub fn names(&self) -> &[String] {
        &self.1
    }
}

/// HTTPS (rustls, aws-lc-rs) trusting `tls_ca_file` alone when set, else the system's roots;
/// plain HTTP for an `http://` issuer (tests, a provider on the same host).
fn connector(
    config: &UpstreamConfig,
    base_dir: &std::path::Path,
) -> Result<HttpsConnector<HttpConnector>, String> {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(config.timeout));
    http.enforce_http(false);
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let builder = match &config.tls_ca_file {
        Some(file) => {
            let path = base_dir.join(file);
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?
            {
                let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
            let tls = rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth();
            builder.with_tls_config(tls)
        }
        None if config.issuer.starts_with("https://") => builder
            .with_native_roots()
            .map_err(|e| format!("no system root certificates ({e}); set tls_ca_file"))?,
        None => builder.with_tls_config(
            rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
        ),
    };
    Ok(builder.https_or_http().enable_http1().wrap_connector(http))
}

impl Upstream {
    /// A provider with its HTTP client; nothing is fetched until the first sign-in.
    pub fn new(config: UpstreamConfig, base_dir: &std::path::Path) -> Result<Self, String> {
        let connector = connector(&config, base_dir)?;
        Ok(Upstream {
            client: Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector),
            config,
            discovery: Mutex::new(None),
            keys: Mutex::new(None),
        })
    }

    /// The configured `name`.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// One bounded call: the answer's body if the status is 200.
    async fn call(
        &self,
        metrics: &Metrics,
        what: &'static str,
        request: Request<Full<Bytes>>,
    ) -> Result<Bytes, UpstreamError> {
        let started = Instant::now();
        let limit = self.config.timeout;
        let result = tokio::time::timeout(limit, async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| UpstreamError::Unreachable(e.to_string()))?;
            let status = response.status();
            let body = http_body_util::Limited::new(response.into_body(), MAX_BODY_BYTES)
                .collect()
                .await
                .map_err(|_| UpstreamError::Malformed("body unreadable or too large"))?
                .to_bytes();
            if status != StatusCode::OK {
                return Err(UpstreamError::Status(status));
            }
            Ok(body)
        })
        .await
        .unwrap_or(Err(UpstreamError::Timeout(limit)));
        metrics
            .upstream_duration
            .get_or_create(&UpstreamCallLabels {
                upstream: self.config.name.clone(),
                call: what,
            })
            .observe(started.elapsed().as_secs_f64());
        result
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        metrics: &Metrics,
        what: &'static str,
        url: &str,
    ) -> Result<T, UpstreamError> {
        let request = Request::get(url)
            .header(header::ACCEPT, "application/json")
            .body(Full::default())
            .map_err(|_| UpstreamError::Malformed("bad URL"))?;
        let body = self.call(metrics, what, request).await?;
        serde_json::from_slice(&body).map_err(|_| UpstreamError::Malformed("not the JSON expected"))
    }

    /// The provider's endpoints, read once (again after a failure).
    pub async fn discovery(&self, metrics: &Metrics) -> Result<Arc<Discovery>, UpstreamError> {
        let mut cached = self.discovery.lock().await;
        if let Some(found) = cached.as_ref() {
            return Ok(found.clone());
        }
        let url = format!("{}/.well-known/openid-configuration", self.config.issuer);
        let found: Discovery = self.get_json(metrics, "discovery", &url).await?;
        // OpenID Connect Discovery §4.3: the document is the issuer's own.
        if found.issuer != self.config.issuer {
            return Err(UpstreamError::WrongIssuer);
        }
        let found = Arc::new(found);
        *cached = Some(found.clone());
        Ok(found)
    }

    /// Where to send the browser: the provider's authorization endpoint with this sign-in's
    /// `state`, `nonce` and PKCE challenge.
    pub async fn authorization_url(
        &self,
        metrics: &Metrics,
        redirect_uri: &str,
        state: &str,
        nonce: &str,
        code_challenge: &str,
    ) -> Result<String, UpstreamError> {
        let discovery = self.discovery(metrics).await?;
        let scope = self.config.scopes.join(" ");
        let query = serde_urlencoded::to_string([
            ("response_type", "code"),
            ("client_id", self.config.client_id.as_str()),
            ("redirect_uri", redirect_uri),
            ("scope", scope.as_str()),
            ("state", state),
            ("nonce", nonce),
            ("code_challenge", code_challenge),
            ("code_challenge_method", "S256"),
        ])
        .map_err(|_| UpstreamError::Malformed("authorization request"))?;
        let endpoint = &discovery.authorization_endpoint;
        let sep = if endpoint.contains('?') { '&' } else { '?' };
        Ok(format!("{endpoint}{sep}{query}"))
    }

    /// Exchanges a code for an id_token and answers its verified claims. The provider's access
    /// and refresh tokens are dropped here: nothing of the upstream session is kept.
    pub async fn redeem(
        &self,
        metrics: &Metrics,
        code: &str,
        redirect_uri: &str,
        code_verifier: &str,
        nonce: &str,
    ) -> Result<Map<String, Value>, UpstreamError> {
        let discovery = self.discovery(metrics).await?;
        let form = serde_urlencoded::to_string([
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", code_verifier),
        ])
        .map_err(|_| UpstreamError::Malformed("token request"))?;
        // RFC 6749 §2.3.1: both halves form-encoded before they are joined.
        let encode = |s: &str| {
            serde_urlencoded::to_string([("", s)])
                .map(|e| e[1..].to_owned())
                .unwrap_or_default()
        };
        let basic = STANDARD.encode(format!(
            "{}:{}",
            encode(&self.config.client_id),
            encode(&self.config.client_secret)
        ));
        let request = Request::post(discovery.token_endpoint.as_str())
            .header(header::AUTHORIZATION, format!("Basic {basic}"))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json")
            .body(Full::new(Bytes::from(form)))
            .map_err(|_| UpstreamError::Malformed("bad token endpoint"))?;
        let body = self.call(metrics, "token", request).await?;
        #[derive(Deserialize)]
        struct TokenResponse {
            id_token: Option<String>,
        }
        let response: TokenResponse = serde_json::from_slice(&body)
            .map_err(|_| UpstreamError::Malformed("token response"))?;
        let id_token = response.id_token.ok_or(UpstreamError::Malformed(
            "no id_token in the token response",
        ))?;
        self.verify(metrics, &id_token, &discovery, nonce).await
    }

    /// OpenID Connect Core §3.1.3.7: signature by a key of the provider, `iss`, `aud`, `azp`,
    /// `exp`, `iat` and `nonce`.
    async fn verify(
        &self,
        metrics: &Metrics,
        id_token: &str,
        discovery: &Discovery,
        nonce: &str,
    ) -> Result<Map<String, Value>, UpstreamError> {
        let (_, claims) = self
            .signed_claims(
                metrics,
                id_token,
                discovery,
                &["exp", "iat", "iss", "aud", "sub"],
            )
            .await?;
        // §3.1.3.7 items 4 and 5: several audiences need an `azp`, and an `azp` must be us.
        let several = claims
            .get("aud")
            .and_then(Value::as_array)
            .is_some_and(|a| a.len() > 1);
        match claims.get("azp") {
            Some(azp) if azp.as_str() != Some(self.config.client_id.as_str()) => {
                return Err(UpstreamError::WrongAudience);
            }
            None if several => return Err(UpstreamError::WrongAudience),
            _ => {}
        }
        if claims.get("nonce").and_then(Value::as_str) != Some(nonce) {
            return Err(UpstreamError::WrongNonce);
        }
        Ok(claims)
    }

    /// OpenID Connect Back-Channel Logout 1.0 §2.6: a logout token signed by a key of the
    /// provider, for this client (`aud`), from its issuer, issued within the last
    /// [`LOGOUT_TOKEN_MAX_AGE`] seconds, typed `logout+jwt` when typed at all, with the
    /// back-channel logout event, a `jti`, a `sub` or a `sid`, and no `nonce`.
    pub async fn verify_logout(
        &self,
        metrics: &Metrics,
        token: &str,
    ) -> Result<LogoutToken, UpstreamError> {
        let discovery = self.discovery(metrics).await?;
        let (header, claims) = self
            .signed_claims(metrics, token, &discovery, &["iat", "iss", "aud"])
            .await?;
        // §2.4: explicit typing keeps an id_token from passing as a logout token.
        if header
            .typ
            .as_deref()
            .is_some_and(|t| !t.eq_ignore_ascii_case("logout+jwt"))
        {
            return Err(UpstreamError::BadToken("typ is not logout+jwt".into()));
        }
        let iat = claims.get("iat").and_then(Value::as_u64).unwrap_or(0);
        if iat + LOGOUT_TOKEN_MAX_AGE < tokengate_store::now_unix() {
            return Err(UpstreamError::Expired);
        }
        let event = claims
            .get("events")
            .and_then(Value::as_object)
            .is_some_and(|e| {
                e.get(BACKCHANNEL_LOGOUT_EVENT)
                    .is_some_and(Value::is_object)
            });
        if !event {
            return Err(UpstreamError::BadToken(
                "no back-channel logout event".into(),
            ));
        }
        if claims.contains_key("nonce") {
            return Err(UpstreamError::BadToken(
                "a logout token has no nonce".into(),
            ));
        }
        let text = |name: &str| {
            claims
                .get(name)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty() && s.len() <= 1024)
                .map(str::to_owned)
        };
        let jti = text("jti").ok_or(UpstreamError::BadToken("no jti".into()))?;
        let (sub, sid) = (text("sub"), text("sid"));
        if sub.is_none() && sid.is_none() {
            return Err(UpstreamError::BadToken("neither sub nor sid".into()));
        }
        Ok(LogoutToken { jti, sub, sid })
    }

    /// A token's header and claims, once its signature by a key of the provider, its `iss`,
    /// its `aud` (this client), its `exp` (when there is one) and `iat` (not in the future)
    /// check out, and every claim of `required` is present.
    async fn signed_claims(
        &self,
        metrics: &Metrics,
        token: &str,
        discovery: &Discovery,
        required: &[&str],
    ) -> Result<(jsonwebtoken::Header, Map<String, Value>), UpstreamError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| UpstreamError::BadToken(e.to_string()))?;
        if !ALGORITHMS.contains(&header.alg) {
            return Err(UpstreamError::BadToken(format!(
                "algorithm {:?} not accepted",
                header.alg
            )));
        }
        let key = self
            .key(metrics, discovery, header.kid.as_deref())
            .await?
            .ok_or(UpstreamError::UnknownKey)?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.client_id]);
        validation.leeway = CLOCK_SKEW;
        validation.set_required_spec_claims(required);
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => UpstreamError::BadSignature,
                ErrorKind::InvalidAudience => UpstreamError::WrongAudience,
                ErrorKind::InvalidIssuer => UpstreamError::WrongIssuer,
                ErrorKind::ExpiredSignature | ErrorKind::ImmatureSignature => {
                    UpstreamError::Expired
                }
                _ => UpstreamError::BadToken(e.to_string()),
            })?
            .claims;
        let now = tokengate_store::now_unix();
        let iat = claims
            .get("iat")
            .and_then(Value::as_u64)
            .unwrap_or(u64::MAX);
        if iat > now + CLOCK_SKEW {
            return Err(UpstreamError::Expired);
        }
        Ok((header, claims))
    }

    /// The provider's key of id `kid` (or its only key when the token names none), fetching
    /// the key set when none is held, or when the key is unknown and the set is not fresh.
    async fn key(
        &self,
        metrics: &Metrics,
        discovery: &Discovery,
        kid: Option<&str>,
    ) -> Result<Option<DecodingKey>, UpstreamError> {
        let mut keys = self.keys.lock().await;
        let find = |set: &JwkSet| {
            let jwk = match kid {
                Some(kid) => set.find(kid),
                None if set.keys.len() == 1 => set.keys.first(),
                None => None,
            };
            jwk.and_then(|jwk| DecodingKey::from_jwk(jwk).ok())
        };
        if let Some(held) = keys.as_ref() {
            if let Some(key) = find(&held.set) {
                return Ok(Some(key));
            }
            if held.fetched.elapsed() < KEYS_REFRESH_EVERY {
                return Ok(None);
            }
        }
        let set: JwkSet = self.get_json(metrics, "keys", &discovery.jwks_uri).await?;
        let key = find(&set);
        *keys = Some(Keys {
            set,
            fetched: Instant::now(),
        });
        Ok(key)
    }
}
