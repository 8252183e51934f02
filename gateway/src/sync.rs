//! The background task: applies revocation and role events to the cache, reports last use in
//! batches, and refreshes the signing keys.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokengate_store::{EventBatch, EventCursor, EventStream};
use tokio_util::sync::CancellationToken;

use crate::cache::TokenCache;
use crate::jwks::Keys;
use crate::metrics::Metrics;

/// The background task (see the module doc); built and spawned by `Gateway::serve`.
pub struct SyncTask {
    /// Where events are applied and uses are drained from.
    pub tokens: Arc<TokenCache>,
    /// Refreshed every `idp.jwks_refresh` (which a reload may change), and loaded before the
    /// gateway is ready.
    pub keys: Arc<Keys>,
    /// `sync.interval`: the pace of last-use reports and the longest event read.
    pub interval: Duration,
    /// Counts events, drops, reports and store errors.
    pub metrics: Arc<Metrics>,
    /// Set once keys are loaded and the store answered.
    pub ready: Arc<AtomicBool>,
}

impl SyncTask {
    /// Runs until `shutdown`, then writes the last-use report still pending. Store failures are
    /// logged and counted, and retried on the next round.
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
                if let Err(e) = self.keys.refresh(false).await {
                    tracing::warn!(error = %e, "fetching signing keys failed");
                }
                keys_loaded = self.keys.verifier().is_some();
                next_keys = Instant::now()
                    + if keys_loaded {
                        self.keys.refresh_every()
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
                    read.map(|batch| cursor = Some(self.apply(batch)))
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

    /// Applies one batch of events to the cache (idempotent: applying one twice is harmless);
    /// answers where to read next.
    fn apply(&self, batch: EventBatch) -> EventCursor {
        if batch.gap {
            tracing::warn!("events may have been missed: dropping the whole cache");
            self.tokens.invalidate_all();
            self.metrics.cache_drops.inc();
        }
        for event in &batch.events {
            self.tokens.invalidate(event.sessions());
        }
        self.metrics
            .events_applied
            .inc_by(batch.events.len() as u64);
        if !batch.events.is_empty()
            && let Some(published) = batch.cursor.published_at_ms()
        {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let lag_ms = now.saturating_sub(published);
            self.metrics.event_lag.set(lag_ms as f64 / 1000.0);
        }
        batch.cursor
    }

    async fn report(&self) {
        match self.tokens.usage.flush(self.tokens.store()).await {
            Ok(0) => {}
            Ok(n) => {
                self.metrics.last_use_reported.inc_by(n as u64);
                self.metrics.last_use_batches.inc();
            }
            Err(e) => {
                self.metrics.store_errors.inc();
                tracing::warn!(error = %e, pending = self.tokens.usage.len(), "reporting last use failed; will retry");
            }
        }
    }
}
