//! Active health checks: for each route with `health_check`, a task that asks every upstream
//! for `path` each `interval`, off the request path. `unhealthy_after` failed checks in a row
//! take an upstream out of rotation, `healthy_after` passed ones bring it back (and end an
//! ejection). When every upstream of a route is unhealthy, all get traffic again (fail open),
//! and `tokengate_upstream_fail_open` says so.
//!
//! The tasks of a route table stop when a reload replaces it (see `reload`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{Request, Uri, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::cluster::Cluster;
use crate::routes::Routes;
use crate::upstream::Upstream;

/// The `User-Agent` of health checks, so that upstreams can tell them from traffic.
pub const USER_AGENT: &str = "tokengate-health-check";

/// The health checks of one route's upstreams.
pub struct HealthCheck {
    cluster: Arc<Cluster>,
    client: Client<HttpConnector, Empty<Bytes>>,
    path: PathAndQuery,
}

impl HealthCheck {
    /// `None` when the route has no `health_check` (or its path is not a path, which
    /// validation refuses).
    pub fn new(cluster: Arc<Cluster>) -> Option<Self> {
        let config = cluster.health_check()?;
        let path = config.path.parse().ok()?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.timeout));
        connector.set_nodelay(true);
        let client = Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(config.interval.saturating_mul(2))
            .pool_max_idle_per_host(1)
            .build(connector);
        Some(HealthCheck {
            cluster,
            client,
            path,
        })
    }

    /// Checks every upstream each `interval`, all at once, until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let Some(config) = self.cluster.health_check().cloned() else {
            return;
        };
        let mut tick = tokio::time::interval(config.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing_open = false;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let mut probes = JoinSet::new();
            for (index, upstream) in self.cluster.upstreams().iter().enumerate() {
                let probe = probe(
                    self.client.clone(),
                    upstream.clone(),
                    self.path.clone(),
                    config.timeout,
                );
                probes.spawn(async move { (index, probe.await) });
            }
            let results = tokio::select! {
                _ = shutdown.cancelled() => return,
                results = probes.join_all() => results,
            };
            for (index, ok) in results {
                let upstream = &self.cluster.upstreams()[index];
                match upstream.checked(ok, config.unhealthy_after, config.healthy_after) {
                    Some(true) => {
                        tracing::info!(upstream = %upstream.authority, "upstream passes its health checks again");
                    }
                    Some(false) => {
                        tracing::warn!(upstream = %upstream.authority, "upstream fails its health checks: no traffic");
                    }
                    None => {}
                }
            }
            let all_down = self.cluster.failing_open();
            if all_down != failing_open {
                if all_down {
                    tracing::error!("every upstream fails its health checks: all get traffic");
                } else {
                    tracing::info!("an upstream passes its health checks: fail-open ends");
                }
                failing_open = all_down;
            }
            self.cluster.fail_open.set(i64::from(all_down));
        }
    }
}

/// One check: any `2xx` within `timeout` passes.
async fn probe(
    client: Client<HttpConnector, Empty<Bytes>>,
    upstream: Arc<Upstream>,
    path: PathAndQuery,
    timeout: Duration,
) -> bool {
    let uri = Uri::builder()
        .scheme(upstream.scheme.clone())
        .authority(upstream.authority.clone())
        .path_and_query(path)
        .build();
    let Ok(req) = uri.and_then(|uri| {
        Request::get(uri)
            .header(header::USER_AGENT, USER_AGENT)
            .body(Empty::new())
    }) else {
        return false;
    };
    let exchange = async {
        let response = client.request(req).await.ok()?;
        let ok = response.status().is_success();
        response.into_body().collect().await.ok()?;
        Some(ok)
    };
    let passed = matches!(
        tokio::time::timeout(timeout, exchange).await,
        Ok(Some(true))
    );
    if !passed {
        tracing::debug!(upstream = %upstream.authority, "health check failed");
    }
    passed
}

/// Starts the health checks of every route of `routes` that asks for them; they stop with
/// `shutdown`.
pub fn spawn_all(routes: &Routes, shutdown: &CancellationToken) {
    for route in routes.iter() {
        if let Some(check) = HealthCheck::new(route.upstreams.clone()) {
            let span = tracing::info_span!("health", route = %route.prefix);
            tokio::spawn(check.run(shutdown.clone()).instrument(span));
        }
    }
}
