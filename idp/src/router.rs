//! The two listeners' routers: which handlers answer which paths, and the layers every request
//! passes through (a span, a deadline, request metrics, a body limit).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, Extension, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http::header;
use tokengate_store::Health;
use tracing::Instrument;

use crate::access::{self, Arrived};
use crate::error::ApiError;
use crate::extract::ClientAddr;
use crate::federation;
use crate::metrics::{RequestLabels, RouteLabels};
use crate::reload::{ReloadError, Reloader};
use crate::state::{AppState, Live};
use crate::{admin, backchannel, console, oauth, passkeys, second_factor};

/// Largest request body accepted (forms and admin JSON are small).
const MAX_BODY_BYTES: usize = 16 * 1024;

/// The public listener: OAuth 2, OpenID Connect, sign-in pages, federation, forward-auth.
pub fn public(live: &Live) -> Router {
    let routes = oauth::routes()
        .merge(federation::routes())
        .merge(backchannel::routes())
        .merge(second_factor::routes())
        .merge(passkeys::routes());
    with_layers(live, "public", routes)
}

/// The admin listener: the admin API, reload, the console, readiness.
pub fn admin(live: &Live, reloader: Arc<Reloader>) -> Router {
    let reload = Router::new()
        .route("/admin/reload", post(reload))
        .route_layer(middleware::from_fn_with_state(
            live.clone(),
            admin::require_admin,
        ))
        .layer(Extension(reloader));
    with_layers(
        live,
        "admin",
        admin::routes(live.clone())
            .merge(reload)
            .merge(console::routes())
            .merge(federation::admin_routes(live.clone()))
            .route("/readyz", get(readyz)),
    )
}

/// What both listeners answer, and the layers around every route.
fn with_layers(live: &Live, listener: &'static str, routes: Router<Live>) -> Router {
    routes
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(
            (live.clone(), listener),
            observe,
        ))
        .with_state(live.clone())
}

/// Per request: a span, a deadline, and the request metrics (by route template, never by the
/// raw path, which may be anything a client sends).
async fn observe(
    State((live, listener)): State<(Live, &'static str)>,
    req: Request,
    next: Next,
) -> Response {
    let state = live.load();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let arrived = state.access.as_ref().map(|_| {
        let client = req.extensions().get::<ClientAddr>().and_then(|a| a.0);
        Arrived::new(&req, client)
    });
    let span = tracing::info_span!("request", listener, method = %req.method(), route = %route);
    let started = Instant::now();
    let response = match tokio::time::timeout(
        state.request_timeout(),
        next.run(req).instrument(span.clone()),
    )
    .await
    {
        Ok(response) => response,
        Err(_) => ApiError::Unavailable.into_response(),
    };
    if let (Some(log), Some(arrived)) = (&state.access, arrived) {
        access::record(log, arrived, &route, &response, started.elapsed());
    }
    let status = response.status().as_u16();
    span.in_scope(|| {
        tracing::debug!(
            status,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "request done"
        )
    });
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            listener,
            route: route.clone(),
            status,
        })
        .inc();
    state
        .metrics
        .request_duration
        .get_or_create(&RouteLabels { listener, route })
        .observe(started.elapsed().as_secs_f64());
    response
}

/// `POST /admin/reload`, behind the admin token.
async fn reload(
    Extension(reloader): Extension<Arc<Reloader>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let done = reloader.reload().await.map_err(|e| match e {
        ReloadError::NoFile => ApiError::NoConfigFile,
        e => ApiError::InvalidConfig(e.to_string()),
    })?;
    Ok(Json(serde_json::json!({
        "reloaded": true,
        "changed": done.changed,
        "needs_restart": done.needs_restart,
    })))
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn readyz(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    state.store.ping().await.map_err(|e| state.store_error(e))?;
    if !state.users.seeded() {
        return Err(ApiError::Unavailable);
    }
    Ok(Json(serde_json::json!({ "status": "ready" })))
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}
