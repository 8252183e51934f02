//! Pending sign-ins (waiting for an upstream provider), each taken back once.

use std::time::Duration;

use super::{MAX_CODES, MemoryStore};
use crate::{CodeId, PendingSignIns, StoreError};

impl PendingSignIns for MemoryStore {
    async fn create_pending(
        &self,
        id: &CodeId,
        record: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let now = std::time::Instant::now();
        let mut state = self.state();
        if state.pending.len() >= MAX_CODES {
            state.pending.retain(|_, (_, expires)| *expires > now);
        }
        if state.pending.get(id).is_some_and(|(_, e)| *e > now) {
            return Ok(false);
        }
        state
            .pending
            .insert(id.clone(), (record.to_owned(), now + ttl));
        Ok(true)
    }

    async fn take_pending(&self, id: &CodeId) -> Result<Option<String>, StoreError> {
        let now = std::time::Instant::now();
        Ok(self
            .state()
            .pending
            .remove(id)
            .filter(|(_, expires)| *expires > now)
            .map(|(record, _)| record))
    }
}
