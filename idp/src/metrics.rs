//! The IdP's Prometheus metrics, and the recent samples of a few of them that the console
//! turns into rates.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokengate_server::reload::ReloadMetrics;

/// Labels of the per-grant counters (`tokens_issued`, `logins_failed`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrantLabels {
    /// `password`, `client_credentials`, `authorization_code`, or `admin` (issued by the admin API).
    pub grant: &'static str,
}

/// Labels of `revocations`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// What was revoked: `session`, `subject`, `token` or `code_replay` (a code redeemed twice).
    pub kind: &'static str,
}

/// Labels of `backchannel_logout_deliveries`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    /// The client the logout token is for (a configured one: the label set is bounded).
    pub client: String,
    /// `delivered`, `failed` (retried later), `expired` (given up after the client's
    /// `backchannel_logout_retry_for`), `dropped` (the queue was full, or the client no longer
    /// takes logout tokens).
    pub result: &'static str,
}

/// Labels of `value_token_renewal_failures`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// `store`, `unverifiable`, `outlived` or `sign`.
    pub reason: &'static str,
}

/// Labels of `requests`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `public` or `admin`.
    pub listener: &'static str,
    /// The matched route template (`/oauth2/token`), never the raw path.
    pub route: String,
    /// The HTTP status code answered.
    pub status: u16,
}

/// Labels of `request_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// `public` or `admin`.
    pub listener: &'static str,
    /// The matched route template, as in [`RequestLabels`].
    pub route: String,
}

/// Labels of `upstream_signins`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    /// The upstream's configured `name`.
    pub upstream: String,
}

/// Labels of `upstream_failures`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamReasonLabels {
    /// The upstream's configured `name`.
    pub upstream: String,
    /// Why the sign-in failed, as `federation` names it (an upstream error or a refused step).
    pub reason: &'static str,
}

/// Labels of `upstream_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamCallLabels {
    /// The upstream's configured `name`.
    pub upstream: String,
    /// `discovery`, `keys` or `token`.
    pub call: &'static str,
}

fn latency_histogram() -> Histogram {
    // 100 µs to about 3 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

/// Every IdP metric, registered under `tokengate_idp_` (reloads and the access log under
/// `tokengate_`); one per process, shared through `Lasting`.
pub struct Metrics {
    registry: Registry,
    /// `tokens_issued_total`: reference tokens issued, by grant.
    pub tokens_issued: Family<GrantLabels, Counter>,
    /// `logins_failed_total`: wrong or unknown credentials, by grant.
    pub logins_failed: Family<GrantLabels, Counter>,
    /// `revocations_total`: sessions revoked, by kind.
    pub revocations: Family<KindLabels, Counter>,
    /// `store_errors_total`: token store operations that failed.
    pub store_errors: Counter,
    /// `admin_auth_failures_total`: admin API calls with a missing or wrong admin token.
    pub admin_auth_failures: Counter,
    /// `login_lockouts_total`: lockouts started by the login throttle.
    pub login_lockouts: Counter,
    /// `logins_throttled_total`: attempts answered `429` during a lockout.
    pub logins_throttled: Counter,
    /// `value_tokens_resigned_total`: value tokens renewed before they expired.
    pub value_tokens_resigned: Counter,
    /// `value_token_renewal_failures_total`: value tokens not renewed, by reason.
    pub value_token_renewal_failures: Family<ReasonLabels, Counter>,
    /// `requests_total`: HTTP requests by listener, route and status.
    pub requests: Family<RequestLabels, Counter>,
    /// `request_duration_seconds`: request latency by listener and route, 100 µs to about 3 s.
    pub request_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    /// `upstream_signins_total`: sign-ins completed through an upstream provider.
    pub upstream_signins: Family<UpstreamLabels, Counter>,
    /// `upstream_failures_total`: failed upstream sign-ins, by upstream and reason.
    pub upstream_failures: Family<UpstreamReasonLabels, Counter>,
    /// `upstream_duration_seconds`: latency of calls to an upstream, by upstream and call.
    pub upstream_duration: Family<UpstreamCallLabels, Histogram, fn() -> Histogram>,
    /// Configuration reloads (`tokengate_config_*`, named as the gateway's).
    pub reloads: ReloadMetrics,
    /// Access log lines dropped because the writer fell behind.
    pub access_log_dropped: Counter,
    /// Back-channel logout tokens sent to clients, by client and result.
    pub backchannel_logout_deliveries: Family<DeliveryLabels, Counter>,
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
    /// Creates and registers every metric, all at zero.
    pub fn new() -> Self {
        let mut root = Registry::with_prefix("tokengate");
        let reloads = ReloadMetrics::register(&mut root);
        let access_log_dropped = Counter::default();
        root.register(
            "access_log_dropped",
            "Access log lines dropped because the writer fell behind (the queue was full)",
            access_log_dropped.clone(),
        );
        let registry = root.sub_registry_with_prefix("idp");
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
            reloads,
            access_log_dropped,
            backchannel_logout_deliveries: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "backchannel_logout_deliveries",
            "Back-channel logout tokens sent to clients, by client and result",
            m.backchannel_logout_deliveries.clone(),
        );
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
        Metrics {
            registry: root,
            ..m
        }
    }

    /// A configuration reload: counted by result; one that took effect is timestamped.
    pub fn config_loaded(&self, ok: bool) {
        self.reloads.record(ok);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Grant labels of `tokens_issued` and `logins_failed`.
const GRANTS: [&str; 4] = [
    "password",
    "client_credentials",
    "authorization_code",
    "admin",
];
/// Kind labels of `revocations`.
const REVOCATION_KINDS: [&str; 4] = ["session", "subject", "token", "code_replay"];

/// Running totals the console shows, in this process since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Tokens issued, every grant together.
    pub sign_ins: u64,
    /// Failed logins, every grant together.
    pub failed_sign_ins: u64,
    /// Lockouts started by the login throttle.
    pub lockouts: u64,
    /// Sessions revoked, every kind together.
    pub revocations: u64,
}

impl Totals {
    fn since(&self, earlier: &Totals) -> Totals {
        Totals {
            sign_ins: self.sign_ins.saturating_sub(earlier.sign_ins),
            failed_sign_ins: self.failed_sign_ins.saturating_sub(earlier.failed_sign_ins),
            lockouts: self.lockouts.saturating_sub(earlier.lockouts),
            revocations: self.revocations.saturating_sub(earlier.revocations),
        }
    }
}

impl Metrics {
    /// The totals as the counters hold them now (labels never used count 0, and are not
    /// created by being read).
    pub fn totals(&self) -> Totals {
        let sum = |family: &Family<GrantLabels, Counter>| -> u64 {
            GRANTS
                .iter()
                .filter_map(|grant| family.get(&GrantLabels { grant }).map(|c| c.get()))
                .sum()
        };
        Totals {
            sign_ins: sum(&self.tokens_issued),
            failed_sign_ins: sum(&self.logins_failed),
            lockouts: self.login_lockouts.get(),
            revocations: REVOCATION_KINDS
                .iter()
                .filter_map(|kind| self.revocations.get(&KindLabels { kind }).map(|c| c.get()))
                .sum(),
        }
    }
}

/// Samples of [`Totals`] over the last minute or so, to tell activity per minute.
#[derive(Debug, Default)]
pub struct Activity {
    samples: Mutex<VecDeque<(Instant, Totals)>>,
}

/// Samples closer together than this are not kept.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// The window rates are measured over.
const WINDOW: Duration = Duration::from_secs(60);

impl Activity {
    /// Keeps `now` as a sample (at most one per `SAMPLE_EVERY`, none older than the window).
    pub fn sample(&self, totals: Totals) {
        let now = Instant::now();
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        if samples
            .back()
            .is_some_and(|(at, _)| now.duration_since(*at) < SAMPLE_EVERY)
        {
            return;
        }
        samples.push_back((now, totals));
        while samples.len() > 1
            && samples
                .get(1)
                .is_some_and(|(at, _)| now.duration_since(*at) >= WINDOW)
        {
            samples.pop_front();
        }
    }

    /// What happened per minute over the sampled window (up to a minute), and how long that
    /// window is; `None` before a first window of at least `SAMPLE_EVERY`.
    pub fn per_minute(&self, now: Totals) -> Option<(Totals, Duration)> {
        let samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let (at, first) = samples.front()?;
        let elapsed = at.elapsed();
        if elapsed < SAMPLE_EVERY {
            return None;
        }
        let delta = now.since(first);
        let scale = |n: u64| (n as f64 * 60.0 / elapsed.as_secs_f64()).round() as u64;
        Some((
            Totals {
                sign_ins: scale(delta.sign_ins),
                failed_sign_ins: scale(delta.failed_sign_ins),
                lockouts: scale(delta.lockouts),
                revocations: scale(delta.revocations),
            },
            elapsed,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_add_up_every_grant_and_kind_without_creating_labels() {
        let m = Metrics::new();
        assert_eq!(m.totals(), Totals::default());
        assert!(!m.render().contains("grant=\"password\""));
        m.tokens_issued
            .get_or_create(&GrantLabels { grant: "password" })
            .inc();
        m.tokens_issued
            .get_or_create(&GrantLabels { grant: "admin" })
            .inc_by(2);
        m.logins_failed
            .get_or_create(&GrantLabels {
                grant: "authorization_code",
            })
            .inc();
        m.revocations
            .get_or_create(&KindLabels { kind: "subject" })
            .inc_by(3);
        m.login_lockouts.inc();
        let t = m.totals();
        assert_eq!(
            (t.sign_ins, t.failed_sign_ins, t.revocations, t.lockouts),
            (3, 1, 3, 1)
        );
    }

    #[test]
    fn activity_needs_a_window_before_it_tells_a_rate() {
        let a = Activity::default();
        a.sample(Totals::default());
        assert_eq!(a.per_minute(Totals::default()), None);
    }
}
