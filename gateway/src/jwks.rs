//! The IdP's signing keys: fetched from its JWKS with conditional requests (unchanged keys cost
//! a `304`), held as the verifier every cache load checks value tokens with.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use jsonwebtoken::jwk::JwkSet;
use tokengate_store::Verifier;

/// An unknown key id triggers at most one JWKS fetch per this period.
const UNKNOWN_KID_REFRESH_EVERY: Duration = Duration::from_secs(5);

/// Largest JWKS accepted.
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// Fetches the IdP's JWKS, sending the last `ETag` so that unchanged keys cost a `304`.
pub struct Jwks {
    client: Client<HttpConnector, Empty<Bytes>>,
    url: http::Uri,
    issuer: String,
    etag: Option<http::HeaderValue>,
}

/// Why the JWKS cannot be had; at start only `Url` is fatal, the rest is retried by the sync task.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// `idp.jwks_url` is not a URI.
    #[error("bad JWKS URL")]
    Url,
    /// No answer: connecting failed, or none within 5 seconds.
    #[error("JWKS request failed: {0}")]
    Request(String),
    /// Neither `200` nor `304`.
    #[error("JWKS answered {0}")]
    Status(StatusCode),
    /// Over the size cap, not a JWKS, or no key the gateway can use.
    #[error("JWKS unreadable")]
    Body,
}

impl Jwks {
    /// Nothing is fetched yet; `issuer` is the `iss` the verifier will demand.
    pub fn new(url: &str, issuer: &str) -> Result<Self, JwksError> {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        Ok(Jwks {
            client: Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector),
            url: url.parse().map_err(|_| JwksError::Url)?,
            issuer: issuer.to_owned(),
            etag: None,
        })
    }

    /// A new verifier if the keys changed, `None` if the IdP answered `304`.
    pub async fn refresh(&mut self) -> Result<Option<Verifier>, JwksError> {
        let mut req = Request::get(self.url.clone());
        if let Some(etag) = &self.etag {
            req = req.header(header::IF_NONE_MATCH, etag.clone());
        }
        let req = req.body(Empty::new()).map_err(|_| JwksError::Url)?;
        let response = tokio::time::timeout(Duration::from_secs(5), self.client.request(req))
            .await
            .map_err(|_| JwksError::Request("timed out".into()))?
            .map_err(|e| JwksError::Request(e.to_string()))?;
        match response.status() {
            StatusCode::NOT_MODIFIED => return Ok(None),
            StatusCode::OK => {}
            other => return Err(JwksError::Status(other)),
        }
        let etag = response.headers().get(header::ETAG).cloned();
        let body = http_body_util::Limited::new(response.into_body(), MAX_JWKS_BYTES)
            .collect()
            .await
            .map_err(|_| JwksError::Body)?
            .to_bytes();
        let set: JwkSet = serde_json::from_slice(&body).map_err(|_| JwksError::Body)?;
        let verifier = Verifier::new(&set, &self.issuer);
        if verifier.is_empty() {
            return Err(JwksError::Body);
        }
        self.etag = etag;
        Ok(Some(verifier))
    }
}

/// The verifier in use and the JWKS it came from.
pub struct Keys {
    verifier: RwLock<Option<Arc<Verifier>>>,
    source: tokio::sync::Mutex<KeySource>,
    /// How often the sync task fetches the keys again (`idp.jwks_refresh`), in milliseconds;
    /// a reload may change it.
    refresh_every: AtomicU64,
}

struct KeySource {
    jwks: Jwks,
    /// When an unknown key id last caused a fetch (the rate limit's clock).
    last_forced: Option<Instant>,
}

impl Keys {
    /// No keys until the first [`Keys::refresh`]; until then every uncached token is 503.
    pub fn new(jwks: Jwks) -> Self {
        Keys {
            verifier: RwLock::new(None),
            source: tokio::sync::Mutex::new(KeySource {
                jwks,
                last_forced: None,
            }),
            refresh_every: AtomicU64::new(60_000),
        }
    }

    /// These keys, fetched again every `period` by the sync task.
    pub fn refreshing_every(self, period: Duration) -> Self {
        self.set_refresh_every(period);
        self
    }

    /// How often the sync task fetches the keys again.
    pub fn refresh_every(&self) -> Duration {
        Duration::from_millis(self.refresh_every.load(Ordering::Relaxed))
    }

    fn set_refresh_every(&self, period: Duration) {
        let millis = u64::try_from(period.as_millis()).unwrap_or(u64::MAX);
        self.refresh_every.store(millis.max(1), Ordering::Relaxed);
    }

    /// Takes the keys from `jwks` from now on (`[idp]` changed by a reload) and fetches them at
    /// once. Until that fetch succeeds, the keys already held keep verifying.
    pub async fn replace_source(&self, jwks: Jwks, period: Duration) {
        self.set_refresh_every(period);
        *self.source.lock().await = KeySource {
            jwks,
            last_forced: None,
        };
        match self.refresh(false).await {
            Ok(_) => tracing::info!("signing keys fetched from the reloaded [idp] settings"),
            Err(e) => {
                tracing::warn!(error = %e, "fetching signing keys from the reloaded [idp] settings failed; the keys held keep verifying")
            }
        }
    }

    /// `None` until the keys were first loaded.
    pub fn verifier(&self) -> Option<Arc<Verifier>> {
        self.verifier
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Puts `verifier` in use for every token verified from now on.
    pub fn set_verifier(&self, verifier: Verifier) {
        let mut slot = self.verifier.write().unwrap_or_else(|p| p.into_inner());
        *slot = Some(Arc::new(verifier));
    }

    /// Fetches the JWKS (conditionally: unchanged keys cost a 304). With `unknown_kid`, at most
    /// once per [`UNKNOWN_KID_REFRESH_EVERY`], so forged key ids cannot flood the IdP.
    /// Returns whether the keys changed.
    pub async fn refresh(&self, unknown_kid: bool) -> Result<bool, JwksError> {
        let mut source = self.source.lock().await;
        if unknown_kid {
            if source
                .last_forced
                .is_some_and(|t| t.elapsed() < UNKNOWN_KID_REFRESH_EVERY)
            {
                return Ok(false);
            }
            source.last_forced = Some(Instant::now());
        }
        match source.jwks.refresh().await? {
            Some(verifier) => {
                tracing::info!(keys = verifier.len(), "signing keys loaded");
                self.set_verifier(verifier);
                Ok(true)
            }
            None => Ok(false),
        }
    }
}
