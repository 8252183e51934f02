//! The admin listener: liveness, readiness (keys loaded and store reached; with `[browser]`,
//! the IdP's endpoints discovered), metrics, the upstreams' state (`GET /admin/upstreams`),
//! and `POST /admin/reload` when `admin.token` is set. Never on the public port.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http::{Method, Request, Response, StatusCode, header};

use crate::cache::TokenCache;
use crate::metrics::Metrics;
use crate::proxy::Proxy;
use crate::reject::{Body, json, text};
use crate::reload::{ReloadError, Reloader};
use crate::upstream::epoch_ms;

/// What the admin listener answers from; one clone per connection, built in `Gateway::serve`.
#[derive(Clone)]
pub struct Admin {
    /// For the cache's entry count in `/metrics`.
    pub tokens: Arc<TokenCache>,
    /// Rendered at `GET /metrics`.
    pub metrics: Arc<Metrics>,
    /// Set by the sync task once keys are loaded and the store answered.
    pub ready: Arc<AtomicBool>,
    /// For readiness: with `[browser]`, not ready until the IdP's endpoints are discovered.
    pub proxy: Arc<Proxy>,
    /// Called by `POST /admin/reload`.
    pub reloader: Arc<Reloader>,
}

impl Admin {
    /// The response to one admin request; unknown paths get 404. Synchronous: nothing here waits.
    pub fn answer<B>(&self, req: &Request<B>) -> Response<Body> {
        match req.uri().path() {
            "/healthz" => json(StatusCode::OK, r#"{"status":"ok"}"#.into()),
            "/readyz"
                if self.ready.load(Ordering::Relaxed)
                    && self.proxy.live().browser().is_none_or(|b| b.ready()) =>
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
            "/admin/reload" => self.reload(req),
            "/admin/upstreams" => json(StatusCode::OK, self.upstreams().to_string()),
            _ => not_found(),
        }
    }

    /// `POST /admin/reload` with the admin token; without a configured token it does not exist.
    fn reload<B>(&self, req: &Request<B>) -> Response<Body> {
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
            .unwrap_or_default();
        match self.reloader.admin_token_matches(presented) {
            None => return not_found(),
            Some(false) => {
                let mut response = json(
                    StatusCode::UNAUTHORIZED,
                    r#"{"error":"invalid_token"}"#.into(),
                );
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    http::HeaderValue::from_static("Bearer realm=\"tokengate-admin\""),
                );
                return response;
            }
            Some(true) => {}
        }
        if req.method() != Method::POST {
            let mut response = json(
                StatusCode::METHOD_NOT_ALLOWED,
                r#"{"error":"method_not_allowed"}"#.into(),
            );
            response
                .headers_mut()
                .insert(header::ALLOW, http::HeaderValue::from_static("POST"));
            return response;
        }
        match self.reloader.reload() {
            Ok(done) => json(
                StatusCode::OK,
                serde_json::json!({
                    "reloaded": true,
                    "changed": done.changed,
                    "needs_restart": done.needs_restart,
                })
                .to_string(),
            ),
            Err(e @ ReloadError::NoFile) => json(
                StatusCode::CONFLICT,
                serde_json::json!({"error": "no_config_file", "error_description": e.to_string()})
                    .to_string(),
            ),
            Err(e) => json(
                StatusCode::BAD_REQUEST,
                serde_json::json!({"error": "invalid_config", "error_description": e.to_string()})
                    .to_string(),
            ),
        }
    }
}

impl Admin {
    /// Every route's upstreams as they stand: health, ejection, requests in flight.
    fn upstreams(&self) -> serde_json::Value {
        let live = self.proxy.live();
        let now = epoch_ms();
        let routes: Vec<serde_json::Value> = live
            .routes()
            .iter()
            .map(|route| {
                let cluster = &route.upstreams;
                let upstreams: Vec<serde_json::Value> = cluster
                    .upstreams()
                    .iter()
                    .map(|u| {
                        serde_json::json!({
                            "upstream": u.authority.as_str(),
                            "healthy": u.healthy(),
                            "ejected": u.ejected(now),
                            "ejected_for_ms": u.ejected_for_ms(now),
                            "in_flight": u.in_flight(),
                            "consecutive_failures": u.consecutive_failures(),
                            "takes_traffic": u.usable(now) || cluster.failing_open(),
                        })
                    })
                    .collect();
                serde_json::json!({
                    "route": &*route.prefix,
                    "host": route.host,
                    "balance": cluster.balance().as_str(),
                    "max_requests": cluster.max_requests(),
                    "health_check": cluster.health_check().is_some(),
                    "fail_open": cluster.failing_open(),
                    "upstreams": upstreams,
                })
            })
            .collect();
        serde_json::json!({ "routes": routes })
    }
}

fn not_found() -> Response<Body> {
    json(StatusCode::NOT_FOUND, r#"{"error":"not_found"}"#.into())
}
