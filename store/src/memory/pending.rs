//! Pending sign-ins (waiting for an upstream provider), each taken back once; and notes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::{MAX_CODES, MemoryStore};
use crate::{CodeId, Notes, PendingSignIns, StoreError};

/// Short records by id, and when each expires.
type Expiring = HashMap<CodeId, (String, Instant)>;

/// Keeps `value` under `id` for `ttl` (unless `only_new` and a live one is there): whether it
/// was written. Past the bound, the expired records are swept out first.
fn put(map: &mut Expiring, id: &CodeId, value: &str, ttl: Duration, only_new: bool) -> bool {
    let now = Instant::now();
    if map.len() >= MAX_CODES {
        map.retain(|_, (_, expires)| *expires > now);
    }
    if only_new && map.get(id).is_some_and(|(_, e)| *e > now) {
        return false;
    }
    map.insert(id.clone(), (value.to_owned(), now + ttl));
    true
}

impl PendingSignIns for MemoryStore {
    async fn create_pending(
        &self,
        id: &CodeId,
        record: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        Ok(put(&mut self.state().pending, id, record, ttl, true))
    }

    async fn take_pending(&self, id: &CodeId) -> Result<Option<String>, StoreError> {
        let now = Instant::now();
        Ok(self
            .state()
            .pending
            .remove(id)
            .filter(|(_, expires)| *expires > now)
            .map(|(record, _)| record))
    }
}

impl Notes for MemoryStore {
    async fn put_note(&self, id: &CodeId, value: &str, ttl: Duration) -> Result<(), StoreError> {
        put(&mut self.state().notes, id, value, ttl, false);
        Ok(())
    }

    async fn put_note_once(
        &self,
        id: &CodeId,
        value: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        Ok(put(&mut self.state().notes, id, value, ttl, true))
    }

    async fn note(&self, id: &CodeId) -> Result<Option<String>, StoreError> {
        let now = Instant::now();
        Ok(self
            .state()
            .notes
            .get(id)
            .filter(|(_, expires)| *expires > now)
            .map(|(value, _)| value.clone()))
    }
}
