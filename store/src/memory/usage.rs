//! Last-use reports: sessions' expiry moved by their last use, and who reported it.

use super::MemoryStore;
use crate::{MAX_REPORTERS, SessionId, StoreError, UsageReport, now_unix};

impl UsageReport for MemoryStore {
    async fn touch(&self, uses: &[(SessionId, u64)]) -> Result<usize, StoreError> {
        let now = now_unix();
        let mut state = self.state();
        let mut extended = 0;
        for (id, last_used) in uses {
            if let Some(session) = state.live(id, now)
                && *last_used > session.last_used_at
            {
                session.last_used_at = *last_used;
                extended += 1;
            }
        }
        Ok(extended)
    }

    async fn report_seen(&self, reporter: &str, at: u64) -> Result<(), StoreError> {
        let mut state = self.state();
        let seen = state.reporters.entry(reporter.to_owned()).or_insert(at);
        *seen = (*seen).max(at);
        if state.reporters.len() > MAX_REPORTERS
            && let Some(oldest) = state
                .reporters
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(name, _)| name.clone())
        {
            state.reporters.remove(&oldest);
        }
        Ok(())
    }
}
