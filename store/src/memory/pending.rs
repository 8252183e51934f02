//! Pending sign-ins (waiting for an upstream provider), each taken back once.

use std::time::Duration;

use super::{MAX_CODES, MemoryStore};
use crate::{CodeId, Notes, PendingSignIns, StoreError};

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

impl MemoryStore {
    /// Room for one more note: past the bound, the expired ones are swept out first.
    fn sweep_notes(notes: &mut std::collections::HashMap<CodeId, (String, std::time::Instant)>) {
        if notes.len() >= MAX_CODES {
            let now = std::time::Instant::now();
            notes.retain(|_, (_, expires)| *expires > now);
        }
    }
}

impl Notes for MemoryStore {
    async fn put_note(&self, id: &CodeId, value: &str, ttl: Duration) -> Result<(), StoreError> {
        let mut state = self.state();
        Self::sweep_notes(&mut state.notes);
        let expires = std::time::Instant::now() + ttl;
        state.notes.insert(id.clone(), (value.to_owned(), expires));
        Ok(())
    }

    async fn put_note_once(
        &self,
        id: &CodeId,
        value: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let now = std::time::Instant::now();
        let mut state = self.state();
        Self::sweep_notes(&mut state.notes);
        if state.notes.get(id).is_some_and(|(_, e)| *e > now) {
            return Ok(false);
        }
        state
            .notes
            .insert(id.clone(), (value.to_owned(), now + ttl));
        Ok(true)
    }

    async fn note(&self, id: &CodeId) -> Result<Option<String>, StoreError> {
        let now = std::time::Instant::now();
        Ok(self
            .state()
            .notes
            .get(id)
            .filter(|(_, expires)| *expires > now)
            .map(|(value, _)| value.clone()))
    }
}
