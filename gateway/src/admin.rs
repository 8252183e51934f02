//! The admin listener: liveness, readiness (keys loaded and store reached; with `[browser]`,
//! the IdP's endpoints discovered) and metrics. Never on the public port.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http::{Request, Response, StatusCode};

use crate::browser::Browser;
use crate::cache::TokenCache;
use crate::metrics::Metrics;
use crate::reject::{Body, json, text};

#[derive(Clone)]
pub struct Admin {
    pub tokens: Arc<TokenCache>,
    pub metrics: Arc<Metrics>,
    /// Set by the sync task once keys are loaded and the store answered.
    pub ready: Arc<AtomicBool>,
    pub browser: Option<Arc<Browser>>,
}

impl Admin {
    pub fn answer<B>(&self, req: &Request<B>) -> Response<Body> {
        match req.uri().path() {
            "/healthz" => json(StatusCode::OK, r#"{"status":"ok"}"#.into()),
            "/readyz"
                if self.ready.load(Ordering::Relaxed)
                    && self.browser.as_ref().is_none_or(|b| b.ready()) =>
            {
                json(StatusCode::OK, r#"{"status":"ready"}"#.into())
            }
            "/readyz" => json(
                StatusCode::SERVICE_UNAVAILABLE,
                r#"{"status":"starting"}"#.into(),
            ),
            "/metrics" => text(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                self.metrics.render(self.tokens.entry_count()),
            ),
            _ => json(StatusCode::NOT_FOUND, r#"{"error":"not_found"}"#.into()),
        }
    }
}
