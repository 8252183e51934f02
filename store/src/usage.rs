//! Last-use reports waiting to be written, coalesced per session, flushed in one round trip.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::{SessionId, StoreError, UsageReport};

/// Many uses of one session between two flushes become one report (the latest time).
#[derive(Debug, Default)]
pub struct UsageLog {
    pending: Mutex<HashMap<SessionId, u64>>,
    /// The name this process reports under, so the admin console can tell which gateways are
    /// active.
    reporter: Option<String>,
}

impl UsageLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// A log whose flushes also note `reporter` as seen ([`UsageReport::report_seen`]).
    pub fn reporting_as(reporter: impl Into<String>) -> Self {
        UsageLog {
            reporter: Some(reporter.into()),
            ..Self::default()
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, u64>> {
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Notes that `id` was used at `at` (Unix seconds).
    pub fn record(&self, id: &SessionId, at: u64) {
        let mut pending = self.pending();
        match pending.get_mut(id) {
            Some(t) => *t = (*t).max(at),
            None => {
                pending.insert(*id, at);
            }
        }
    }

    /// Sessions waiting to be reported.
    pub fn len(&self) -> usize {
        self.pending().len()
    }

    /// Whether nothing waits to be reported.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes every pending report in one batch. On failure the reports stay pending for the
    /// next flush. Returns the batch size.
    pub async fn flush<S: UsageReport>(&self, store: &S) -> Result<usize, StoreError> {
        let batch: Vec<(SessionId, u64)> =
            std::mem::take(&mut *self.pending()).into_iter().collect();
        if batch.is_empty() {
            return Ok(0);
        }
        match store.touch(&batch).await {
            Ok(_) => {
                if let Some(reporter) = &self.reporter {
                    // Best effort: the reports themselves are written; being listed is not
                    // worth writing them again.
                    let _ = store.report_seen(reporter, crate::now_unix()).await;
                }
                Ok(batch.len())
            }
            Err(e) => {
                for (id, at) in &batch {
                    self.record(id, *at);
                }
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::suite::session;
    use crate::{Health, MemoryStore, SessionAdmin, SessionRead, now_unix};

    #[tokio::test]
    async fn uses_are_coalesced_and_kept_until_written() {
        let store = MemoryStore::new();
        let s = session("alice");
        store.create(&s).await.expect("create");
        let log = UsageLog::new();
        let now = now_unix();
        log.record(&s.id, now + 1);
        log.record(&s.id, now + 3);
        log.record(&s.id, now + 2);
        assert_eq!(log.len(), 1);
        assert_eq!(log.flush(&store).await.expect("flush"), 1);
        assert!(log.is_empty());
        let got = store.lookup(&s.id).await.expect("lookup").expect("live");
        assert_eq!(got.last_used_at, now + 3);
        assert!(store.reporters(0).await.expect("reporters").is_empty());
    }

    #[tokio::test]
    async fn a_named_log_is_seen_when_it_reports() {
        let store = MemoryStore::new();
        let s = session("alice");
        store.create(&s).await.expect("create");
        let log = UsageLog::reporting_as("gw-1");
        assert_eq!(log.flush(&store).await.expect("empty flush"), 0);
        assert!(store.reporters(0).await.expect("reporters").is_empty());
        log.record(&s.id, now_unix());
        log.flush(&store).await.expect("flush");
        let seen = store.reporters(0).await.expect("reporters");
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].name, "gw-1");
    }
}
