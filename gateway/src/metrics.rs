//! The gateway's Prometheus metrics, through `prometheus-client` like the IdP's. Counters are
//! atomics; every label set the hot path touches is created at start-up and its handle kept,
//! so counting a request is an atomic add, never a label lookup.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokengate_server::reload::ReloadMetrics;

/// Upper bounds (seconds) of the latency histogram's buckets.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Status codes the gateway answers, each with its own counter; the rest count as `other`.
pub const STATUSES: [u16; 14] = [
    200, 204, 304, 400, 401, 403, 404, 413, 431, 500, 502, 503, 504, 429,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    route: String,
    per: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
    host: String,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    route: String,
    host: String,
    upstream: String,
}

/// What went wrong with one attempt, as counted in `tokengate_upstream_failures_total{kind}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// No connection (refused, unreachable, or not within `connect_timeout`): nothing was sent.
    Connect,
    /// No response head within the route's `timeout`.
    Timeout,
    /// The exchange broke after the request (or part of it) went out.
    Reset,
    /// A `5xx` answer.
    Status,
}

impl Failure {
    /// The `kind` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Connect => "connect",
            Failure::Timeout => "timeout",
            Failure::Reset => "reset",
            Failure::Status => "status_5xx",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    route: String,
    host: String,
    upstream: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterLabels {
    route: String,
    host: String,
}

/// The counters and gauge of one upstream of one route, created with the route.
#[derive(Clone, Debug, Default)]
pub struct UpstreamMetrics {
    /// `upstream_requests_total`: attempts sent to it (retries included).
    pub requests: Counter,
    /// `upstream_failures_total{kind}`, one per [`Failure`].
    failures: [Counter; 4],
    /// `upstream_retries_total`: its failures that were retried on another upstream.
    pub retries: Counter,
    /// `upstream_ejections_total`.
    pub ejections: Counter,
    /// `upstream_healthy`: 1 while active health checks (if any) pass.
    pub healthy: Gauge,
}

const FAILURES: [Failure; 4] = [
    Failure::Connect,
    Failure::Timeout,
    Failure::Reset,
    Failure::Status,
];

impl UpstreamMetrics {
    /// The counter of one kind of failure.
    pub fn failure(&self, kind: Failure) -> &Counter {
        &self.failures[kind as usize]
    }
}

fn status_label(i: usize) -> &'static str {
    const LABELS: [&str; STATUSES.len()] = [
        "200", "204", "304", "400", "401", "403", "404", "413", "431", "500", "502", "503", "504",
        "429",
    ];
    LABELS[i]
}

/// Requests by status: handles to one counter per common status and one for the rest.
#[derive(Clone, Debug, Default)]
pub struct StatusCounters {
    known: [Counter; STATUSES.len()],
    other: Counter,
}

impl StatusCounters {
    fn of(mut counter: impl FnMut(&'static str) -> Counter) -> Self {
        StatusCounters {
            known: std::array::from_fn(|i| counter(status_label(i))),
            other: counter("other"),
        }
    }

    /// Counts one answer; statuses outside the common list go under `other`.
    pub fn count(&self, status: u16) {
        match STATUSES.iter().position(|s| *s == status) {
            Some(i) => self.known[i].inc(),
            None => self.other.inc(),
        };
    }
}

/// The gateway's metrics, registered under `tokengate_`; shared by the request path, the
/// cache, the sync task and the admin listener.
pub struct Metrics {
    registry: Registry,
    /// `requests_total{status}`.
    pub requests: StatusCounters,
    route_requests: Family<RouteLabels, Counter>,
    rate_limited: Family<LimitLabels, Counter>,
    upstream_requests: Family<UpstreamLabels, Counter>,
    upstream_failures: Family<FailureLabels, Counter>,
    upstream_retries: Family<UpstreamLabels, Counter>,
    upstream_ejections: Family<UpstreamLabels, Counter>,
    upstream_healthy: Family<UpstreamLabels, Gauge>,
    upstream_fail_open: Family<ClusterLabels, Gauge>,
    /// `request_duration_seconds`: request head in to response head out.
    pub request_duration: Histogram,
    /// `cache_hits_total`: tokens answered from the local cache.
    pub cache_hits: Counter,
    /// `cache_misses_total`: tokens read from the store.
    pub cache_misses: Counter,
    /// `cache_negative_hits_total`: unknown tokens answered from the cache (`cache.negative_ttl`).
    pub cache_negative_hits: Counter,
    /// `value_tokens_expired_total`: 503s because the IdP had not renewed a value token.
    pub value_tokens_expired: Counter,
    cache_entries: Gauge,
    /// `store_errors_total`: failed store reads, event reads and last-use reports.
    pub store_errors: Counter,
    /// `upstream_errors_total`: upstream requests that failed (502) or timed out (504).
    pub upstream_errors: Counter,
    /// `events_applied_total`: revocation and change events applied to the cache.
    pub events_applied: Counter,
    /// `cache_drops_total`: whole-cache drops, when events may have been missed.
    pub cache_drops: Counter,
    /// Access log lines dropped because the writer could not keep up.
    pub access_log_dropped: Counter,
    /// `last_use_reported_total`: sessions whose last use was written to the store.
    pub last_use_reported: Counter,
    /// `last_use_batches_total`: last-use reports written (at most one per `sync.interval`).
    pub last_use_batches: Counter,
    /// Seconds between the newest applied event's publication and its application.
    pub event_lag: Gauge<f64, AtomicU64>,
    /// Configuration reloads (`tokengate_config_*`, named as the IdP's).
    pub reloads: ReloadMetrics,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric; the per-route counters come later, with their routes.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tokengate");
        let requests = Family::<StatusLabels, Counter>::default();
        let reloads = ReloadMetrics::register(&mut registry);
        let m = Metrics {
            requests: StatusCounters::of(|status| {
                requests.get_or_create_owned(&StatusLabels { status })
            }),
            route_requests: Family::default(),
            rate_limited: Family::default(),
            upstream_requests: Family::default(),
            upstream_failures: Family::default(),
            upstream_retries: Family::default(),
            upstream_ejections: Family::default(),
            upstream_healthy: Family::default(),
            upstream_fail_open: Family::default(),
            request_duration: Histogram::new(LATENCY_BUCKETS),
            cache_hits: Counter::default(),
            cache_misses: Counter::default(),
            cache_negative_hits: Counter::default(),
            value_tokens_expired: Counter::default(),
            cache_entries: Gauge::default(),
            store_errors: Counter::default(),
            upstream_errors: Counter::default(),
            events_applied: Counter::default(),
            cache_drops: Counter::default(),
            access_log_dropped: Counter::default(),
            last_use_reported: Counter::default(),
            last_use_batches: Counter::default(),
            event_lag: Gauge::default(),
            reloads,
            registry: Registry::default(),
        };
        registry.register("requests", "Requests answered, by status", requests);
        registry.register(
            "route_requests",
            "Requests answered, by route and status",
            m.route_requests.clone(),
        );
        registry.register(
            "rate_limited",
            "Requests answered 429 by a route's rate limit, by route and what it counts by",
            m.rate_limited.clone(),
        );
        registry.register(
            "upstream_requests",
            "Requests sent to an upstream (retries included), by route and upstream",
            m.upstream_requests.clone(),
        );
        registry.register(
            "upstream_failures",
            "Failed upstream requests, by route, upstream and kind (connect, timeout, reset, \
             status_5xx)",
            m.upstream_failures.clone(),
        );
        registry.register(
            "upstream_retries",
            "Requests retried on another upstream after this one failed, by route and upstream",
            m.upstream_retries.clone(),
        );
        registry.register(
            "upstream_ejections",
            "Times an upstream was ejected after failures in a row, by route and upstream",
            m.upstream_ejections.clone(),
        );
        registry.register(
            "upstream_healthy",
            "1 while an upstream passes its route's health checks (always 1 without them)",
            m.upstream_healthy.clone(),
        );
        registry.register(
            "upstream_fail_open",
            "1 while every upstream of a route fails its health checks, so all get traffic",
            m.upstream_fail_open.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from request head to response head",
            m.request_duration.clone(),
        );
        let counters = [
            (
                "cache_hits",
                "Tokens found in the local cache",
                &m.cache_hits,
            ),
            (
                "cache_misses",
                "Tokens read from the store",
                &m.cache_misses,
            ),
            (
                "cache_negative_hits",
                "Unknown tokens answered from the local cache",
                &m.cache_negative_hits,
            ),
            (
                "value_tokens_expired",
                "Requests answered 503 because the session's value token in the store has \
                 expired (the IdP has not renewed it)",
                &m.value_tokens_expired,
            ),
            (
                "store_errors",
                "Token store operations that failed",
                &m.store_errors,
            ),
            (
                "upstream_errors",
                "Upstream requests that failed or timed out",
                &m.upstream_errors,
            ),
            (
                "events_applied",
                "Revocation and change events applied",
                &m.events_applied,
            ),
            (
                "cache_drops",
                "Whole-cache drops after events may have been missed",
                &m.cache_drops,
            ),
            (
                "access_log_dropped",
                "Access log lines dropped because the writer could not keep up",
                &m.access_log_dropped,
            ),
            (
                "last_use_reported",
                "Session last-use times reported to the store",
                &m.last_use_reported,
            ),
            (
                "last_use_batches",
                "Last-use report batches written",
                &m.last_use_batches,
            ),
        ];
        for (name, help, counter) in counters {
            registry.register(name, help, counter.clone());
        }
        registry.register(
            "event_lag_seconds",
            "Delay between the newest applied event's publication and its application",
            m.event_lag.clone(),
        );
        registry.register(
            "cache_entries",
            "Entries in the local token cache",
            m.cache_entries.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The counters of one route, created now so that counting never looks a label set up.
    pub fn route_counters(&self, prefix: &str, host: Option<&str>) -> StatusCounters {
        StatusCounters::of(|status| {
            self.route_requests.get_or_create_owned(&RouteLabels {
                route: prefix.to_owned(),
                host: host.unwrap_or("*").to_owned(),
                status,
            })
        })
    }

    /// The counter of one route's rate-limited requests, created with the route.
    pub fn rate_limited(&self, prefix: &str, per: &'static str) -> Counter {
        self.rate_limited.get_or_create_owned(&LimitLabels {
            route: prefix.to_owned(),
            per,
        })
    }

    /// The metrics of one upstream of a route, created with the route; its `healthy` gauge
    /// starts at 1.
    pub fn upstream(&self, prefix: &str, host: Option<&str>, upstream: &str) -> UpstreamMetrics {
        let labels = UpstreamLabels {
            route: prefix.to_owned(),
            host: host.unwrap_or("*").to_owned(),
            upstream: upstream.to_owned(),
        };
        let m = UpstreamMetrics {
            requests: self.upstream_requests.get_or_create_owned(&labels),
            failures: FAILURES.map(|kind| {
                self.upstream_failures.get_or_create_owned(&FailureLabels {
                    route: labels.route.clone(),
                    host: labels.host.clone(),
                    upstream: labels.upstream.clone(),
                    kind: kind.as_str(),
                })
            }),
            retries: self.upstream_retries.get_or_create_owned(&labels),
            ejections: self.upstream_ejections.get_or_create_owned(&labels),
            healthy: self.upstream_healthy.get_or_create_owned(&labels),
        };
        m.healthy.set(1);
        m
    }

    /// The fail-open gauge of a route's upstream list.
    pub fn fail_open(&self, prefix: &str, host: Option<&str>) -> Gauge {
        self.upstream_fail_open.get_or_create_owned(&ClusterLabels {
            route: prefix.to_owned(),
            host: host.unwrap_or("*").to_owned(),
        })
    }

    /// A configuration (re)load: counted by result; one that took effect is timestamped.
    pub fn config_loaded(&self, ok: bool) {
        self.reloads.record(ok);
    }

    /// Records one request's time, in seconds, into `request_duration_seconds`.
    pub fn observe_duration(&self, elapsed: Duration) {
        self.request_duration.observe(elapsed.as_secs_f64());
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn render(&self, cache_entries: u64) -> String {
        self.cache_entries
            .set(i64::try_from(cache_entries).unwrap_or(i64::MAX));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_their_labels_agree() {
        for (i, status) in STATUSES.iter().enumerate() {
            assert_eq!(status_label(i), status.to_string());
        }
    }

    #[test]
    fn upstream_metrics_render_by_route_upstream_and_kind() {
        let m = Metrics::new();
        let u = m.upstream("/api/", None, "127.0.0.1:9001");
        u.requests.inc();
        for kind in FAILURES {
            assert_eq!(FAILURES[kind as usize], kind);
        }
        u.failure(Failure::Timeout).inc();
        u.ejections.inc();
        m.fail_open("/api/", Some("shop.example")).set(1);
        let text = m.render(0);
        let labels = r#"route="/api/",host="*",upstream="127.0.0.1:9001""#;
        for line in [
            format!("tokengate_upstream_requests_total{{{labels}}} 1"),
            format!("tokengate_upstream_failures_total{{{labels},kind=\"timeout\"}} 1"),
            format!("tokengate_upstream_failures_total{{{labels},kind=\"connect\"}} 0"),
            format!("tokengate_upstream_ejections_total{{{labels}}} 1"),
            format!("tokengate_upstream_retries_total{{{labels}}} 0"),
            format!("tokengate_upstream_healthy{{{labels}}} 1"),
            r#"tokengate_upstream_fail_open{route="/api/",host="shop.example"} 1"#.to_owned(),
        ] {
            assert!(text.contains(&line), "{line} missing in\n{text}");
        }
    }

    #[test]
    fn counts_render_by_status_and_route() {
        let m = Metrics::new();
        let route = m.route_counters("/api/", None);
        m.requests.count(200);
        m.requests.count(200);
        m.requests.count(418);
        route.count(403);
        m.observe_duration(Duration::from_millis(2));
        m.event_lag.set(0.25);
        let text = m.render(7);
        for line in [
            "tokengate_requests_total{status=\"200\"} 2",
            "tokengate_requests_total{status=\"other\"} 1",
            "tokengate_route_requests_total{route=\"/api/\",host=\"*\",status=\"403\"} 1",
            "tokengate_request_duration_seconds_count 1",
            "tokengate_event_lag_seconds 0.25",
            "tokengate_cache_entries 7",
            "tokengate_cache_hits_total 0",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
    }
}
