//! The background task: applies revocation and role events, reports last use in batches, and
//! refreshes the signing keys with conditional requests.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use jsonwebtoken::jwk::JwkSet;
use tokengate_store::{EventCursor, TokenStore, Verifier};
use tokio_util::sync::CancellationToken;

use crate::auth::TokenCache;
use crate::metrics::Metrics;

/// Largest JWKS accepted.
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// Fetches the IdP's JWKS, sending the last `ETag` so that unchanged keys cost a `304`.
pub struct Jwks {
    client: Client<HttpConnector, Empty<Bytes>>,
    url: http::Uri,
    issuer: String,
    etag: Option<http::HeaderValue>,
}

#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("bad JWKS URL")]
    Url,
    #[error("JWKS request failed: {0}")]
    Request(String),
    #[error("JWKS answered {0}")]
    Status(StatusCode),
    #[error("JWKS unreadable")]
    Body,
}

impl Jwks {
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

pub struct SyncTask {
    pub tokens: Arc<TokenCache>,
    pub jwks_refresh: Duration,
    pub interval: Duration,
    pub metrics: Arc<Metrics>,
    /// Set once keys are loaded and the store answered.
    pub ready: Arc<AtomicBool>,
}

impl SyncTask {
    pub async fn run(self, shutdown: CancellationToken) {
        let mut cursor: Option<EventCursor> = None;
        let mut keys_loaded = false;
        let mut next_keys = Instant::now();
        let mut next_report = Instant::now() + self.interval;
        let mut backoff = Duration::from_millis(100);
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            if Instant::now() >= next_keys {
                if let Err(e) = self.tokens.refresh_keys(false).await {
                    tracing::warn!(error = %e, "fetching signing keys failed");
                }
                keys_loaded = self.tokens.verifier().is_some();
                next_keys = Instant::now()
                    + if keys_loaded {
                        self.jwks_refresh
                    } else {
                        Duration::from_millis(500)
                    };
            }
            if Instant::now() >= next_report {
                self.report().await;
                next_report = Instant::now() + self.interval;
            }
            let step = match &cursor {
                None => self.tokens.store().events_head().await.map(|head| {
                    // Nothing cached can predate the head; start there.
                    cursor = Some(head);
                }),
                Some(c) => {
                    let wait = self
                        .interval
                        .min(next_report.saturating_duration_since(Instant::now()))
                        .max(Duration::from_millis(1));
                    let read = tokio::select! {
                        _ = shutdown.cancelled() => break,
                        read = self.tokens.store().read_events(c, wait) => read,
                    };
                    read.map(|batch| {
                        if batch.gap {
                            tracing::warn!("events may have been missed: dropping the whole cache");
                            self.tokens.invalidate_all();
                            self.metrics.cache_drops.inc();
                        }
                        for event in &batch.events {
                            self.tokens.invalidate(event.sessions());
                        }
                        self.metrics.events_applied.add(batch.events.len() as u64);
                        if !batch.events.is_empty()
                            && let Some(published) = batch.cursor.published_at_ms()
                        {
                            let now = std::time::SystemTime::now()
                                .duration_since(std::time::UNIX_EPOCH)
                                .map_or(0, |d| d.as_millis() as u64);
                            self.metrics.event_lag_ms.set(now.saturating_sub(published));
                        }
                        cursor = Some(batch.cursor);
                    })
                }
            };
            match step {
                Ok(()) => {
                    backoff = Duration::from_millis(100);
                    self.ready.store(keys_loaded, Ordering::Relaxed);
                }
                Err(e) => {
                    self.metrics.store_errors.inc();
                    tracing::warn!(error = %e, "reading store events failed; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
        self.report().await;
    }

    async fn report(&self) {
        match self.tokens.usage.flush(self.tokens.store()).await {
            Ok(0) => {}
            Ok(n) => {
                self.metrics.last_use_reported.add(n as u64);
                self.metrics.last_use_batches.inc();
            }
            Err(e) => {
                self.metrics.store_errors.inc();
                tracing::warn!(error = %e, pending = self.tokens.usage.len(), "reporting last use failed; will retry");
            }
        }
    }
}
