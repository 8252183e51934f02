//! The IdP's Prometheus metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrantLabels {
    pub grant: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub listener: &'static str,
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub listener: &'static str,
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    pub upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamReasonLabels {
    pub upstream: String,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamCallLabels {
    pub upstream: String,
    /// `discovery`, `keys` or `token`.
    pub call: &'static str,
}

fn latency_histogram() -> Histogram {
    // 100 µs to about 3 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

pub struct Metrics {
    registry: Registry,
    pub tokens_issued: Family<GrantLabels, Counter>,
    pub logins_failed: Family<GrantLabels, Counter>,
    pub revocations: Family<KindLabels, Counter>,
    pub store_errors: Counter,
    pub admin_auth_failures: Counter,
    pub login_lockouts: Counter,
    pub logins_throttled: Counter,
    pub value_tokens_resigned: Counter,
    pub value_token_renewal_failures: Family<ReasonLabels, Counter>,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pub upstream_signins: Family<UpstreamLabels, Counter>,
    pub upstream_failures: Family<UpstreamReasonLabels, Counter>,
    pub upstream_duration: Family<UpstreamCallLabels, Histogram, fn() -> Histogram>,
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
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tokengate_idp");
        let m = Metrics {
            tokens_issued: Family::default(),
            logins_failed: Family::default(),
            revocations: Family::default(),
            store_errors: Counter::default(),
            admin_auth_failures: Counter::default(),
            login_lockouts: Counter::default(),
            logins_throttled: Counter::default(),
            value_tokens_resigned: Counter::default(),
            value_token_renewal_failures: Family::default(),
            requests: Family::default(),
            request_duration: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            upstream_signins: Family::default(),
            upstream_failures: Family::default(),
            upstream_duration: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            registry: Registry::default(),
        };
        registry.register(
            "tokens_issued",
            "Reference tokens issued",
            m.tokens_issued.clone(),
        );
        registry.register(
            "logins_failed",
            "Failed logins (wrong or unknown credentials)",
            m.logins_failed.clone(),
        );
        registry.register("revocations", "Sessions revoked", m.revocations.clone());
        registry.register(
            "store_errors",
            "Token store operations that failed",
            m.store_errors.clone(),
        );
        registry.register(
            "admin_auth_failures",
            "Admin API calls refused for a missing or wrong admin token",
            m.admin_auth_failures.clone(),
        );
        registry.register(
            "login_lockouts",
            "Lockouts started (a username, client id or address reached its failure limit)",
            m.login_lockouts.clone(),
        );
        registry.register(
            "logins_throttled",
            "Login and client-authentication attempts refused with 429 during a lockout",
            m.logins_throttled.clone(),
        );
        registry.register(
            "value_tokens_resigned",
            "Value tokens of live sessions renewed (re-signed) before they expired",
            m.value_tokens_resigned.clone(),
        );
        registry.register(
            "value_token_renewal_failures",
            "Value tokens that could not be renewed: store (a renewal round failed), \
             unverifiable (not the IdP's own token), outlived (expired too long ago), sign",
            m.value_token_renewal_failures.clone(),
        );
        registry.register(
            "requests",
            "HTTP requests by listener, route and status",
            m.requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "HTTP request latency",
            m.request_duration.clone(),
        );
        registry.register(
            "upstream_signins",
            "Sign-ins completed through an upstream OpenID Connect provider",
            m.upstream_signins.clone(),
        );
        registry.register(
            "upstream_failures",
            "Sign-ins through an upstream provider that failed, by reason",
            m.upstream_failures.clone(),
        );
        registry.register(
            "upstream_duration_seconds",
            "Latency of calls to upstream providers (discovery, keys, token)",
            m.upstream_duration.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
