//! Deliveries owed to others, by when they are due.

use std::time::Duration;

use super::MemoryStore;
use crate::{Deliveries, MAX_DELIVERIES, StoreError};

impl Deliveries for MemoryStore {
    async fn queue_delivery(
        &self,
        id: &str,
        payload: &str,
        due_ms: u64,
    ) -> Result<bool, StoreError> {
        let mut guard = self.state();
        let state = &mut *guard;
        let old = state.deliveries.get(id).map(|(_, due)| *due);
        match old {
            Some(due) => {
                state.due.remove(&(due, id.to_owned()));
            }
            None if state.deliveries.len() >= MAX_DELIVERIES => return Ok(false),
            None => {}
        }
        state.due.insert((due_ms, id.to_owned()));
        state
            .deliveries
            .insert(id.to_owned(), (payload.to_owned(), due_ms));
        Ok(true)
    }

    async fn deliveries_due(
        &self,
        now_ms: u64,
        hold: Duration,
        limit: usize,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let mut guard = self.state();
        let state = &mut *guard;
        let taken: Vec<(u64, String)> = state
            .due
            .iter()
            .take_while(|(due, _)| *due <= now_ms)
            .take(limit)
            .cloned()
            .collect();
        let until = now_ms.saturating_add(u64::try_from(hold.as_millis()).unwrap_or(u64::MAX));
        let mut due = Vec::with_capacity(taken.len());
        for entry in taken {
            state.due.remove(&entry);
            let (_, id) = entry;
            if let Some((payload, at)) = state.deliveries.get_mut(&id) {
                *at = until;
                due.push((id.clone(), payload.clone()));
                state.due.insert((until, id));
            }
        }
        Ok(due)
    }

    async fn finish_delivery(&self, id: &str) -> Result<bool, StoreError> {
        let mut guard = self.state();
        let state = &mut *guard;
        match state.deliveries.remove(id) {
            Some((_, due)) => {
                state.due.remove(&(due, id.to_owned()));
                Ok(true)
            }
            None => Ok(false),
        }
    }
}
