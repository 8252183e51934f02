//! The gateway's metrics: plain atomic counters on the hot path, rendered as Prometheus text.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Upper bounds (seconds) of the latency histogram's buckets.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A Prometheus histogram on atomics: one increment per observation, no lock.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [Counter; LATENCY_BUCKETS.len()],
    count: Counter,
    sum_micros: Counter,
}

impl Histogram {
    pub fn observe(&self, elapsed: std::time::Duration) {
        let secs = elapsed.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].inc();
        }
        self.count.inc();
        self.sum_micros.add(elapsed.as_micros() as u64);
    }

    fn render(&self, name: &str, out: &mut String) {
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&self.buckets) {
            cumulative += bucket.get();
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.get();
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_micros.get() as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// Status codes the gateway answers, each with its own counter.
pub const STATUSES: [u16; 12] = [200, 204, 304, 400, 401, 403, 404, 431, 500, 502, 503, 504];

/// Requests by status: one counter per common status, one for the rest.
#[derive(Debug, Default)]
pub struct StatusCounters {
    known: [Counter; STATUSES.len()],
    other: Counter,
}

impl StatusCounters {
    pub fn count(&self, status: u16) {
        match STATUSES.iter().position(|s| *s == status) {
            Some(i) => self.known[i].inc(),
            None => self.other.inc(),
        }
    }

    /// One line per status, `labels` (already formatted, ending in a comma or empty) first.
    pub fn render(&self, name: &str, labels: &str, out: &mut String) {
        for (status, counter) in STATUSES.iter().zip(&self.known) {
            let _ = writeln!(
                out,
                "{name}{{{labels}status=\"{status}\"}} {}",
                counter.get()
            );
        }
        let _ = writeln!(
            out,
            "{name}{{{labels}status=\"other\"}} {}",
            self.other.get()
        );
    }
}

#[derive(Debug, Default)]
pub struct Metrics {
    pub requests: StatusCounters,
    pub request_duration: Histogram,
    pub cache_hits: Counter,
    pub cache_misses: Counter,
    pub cache_negative_hits: Counter,
    pub store_errors: Counter,
    pub upstream_errors: Counter,
    pub events_applied: Counter,
    pub cache_drops: Counter,
    pub last_use_reported: Counter,
    pub last_use_batches: Counter,
    /// Milliseconds between the newest applied event's publication and its application.
    pub event_lag_ms: Gauge,
}

impl Metrics {
    pub fn render(&self, cache_entries: u64) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# TYPE tokengate_requests_total counter");
        self.requests
            .render("tokengate_requests_total", "", &mut out);
        let counters = [
            ("tokengate_cache_hits_total", &self.cache_hits),
            ("tokengate_cache_misses_total", &self.cache_misses),
            (
                "tokengate_cache_negative_hits_total",
                &self.cache_negative_hits,
            ),
            ("tokengate_store_errors_total", &self.store_errors),
            ("tokengate_upstream_errors_total", &self.upstream_errors),
            ("tokengate_events_applied_total", &self.events_applied),
            ("tokengate_cache_drops_total", &self.cache_drops),
            ("tokengate_last_use_reported_total", &self.last_use_reported),
            ("tokengate_last_use_batches_total", &self.last_use_batches),
        ];
        for (name, counter) in counters {
            let _ = writeln!(out, "# TYPE {name} counter\n{name} {}", counter.get());
        }
        self.request_duration
            .render("tokengate_request_duration_seconds", &mut out);
        let _ = writeln!(
            out,
            "# TYPE tokengate_event_lag_seconds gauge\ntokengate_event_lag_seconds {}",
            self.event_lag_ms.get() as f64 / 1000.0
        );
        let _ = writeln!(
            out,
            "# TYPE tokengate_cache_entries gauge\ntokengate_cache_entries {cache_entries}"
        );
        out
    }
}
