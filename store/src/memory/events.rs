//! The event stream: its head, and the reader that waits for new events.

use std::time::Duration;

use super::MemoryStore;
use crate::{Event, EventBatch, EventCursor, EventStream, StoreError};

impl EventStream for MemoryStore {
    async fn events_head(&self) -> Result<EventCursor, StoreError> {
        let seq = self.state().seq;
        Ok(EventCursor {
            epoch: String::new(),
            id: seq.to_string(),
            seq,
        })
    }

    async fn read_events(
        &self,
        after: &EventCursor,
        wait: Duration,
    ) -> Result<EventBatch, StoreError> {
        let mut newest = self.inner.newest.subscribe();
        if *newest.borrow_and_update() <= after.seq {
            // Timing out just means no event arrived; the answer below is then empty.
            let _ = tokio::time::timeout(wait, newest.changed()).await;
        }
        let state = self.state();
        let oldest_kept = state.events.front().map(|(seq, _)| *seq);
        let gap = after.seq > state.seq || oldest_kept.is_some_and(|oldest| oldest > after.seq + 1);
        let events: Vec<Event> = state
            .events
            .iter()
            .filter(|(seq, _)| *seq > after.seq)
            .map(|(_, e)| e.clone())
            .collect();
        let seq = if gap || !events.is_empty() {
            state.seq
        } else {
            after.seq
        };
        Ok(EventBatch {
            events,
            cursor: EventCursor {
                epoch: String::new(),
                id: seq.to_string(),
                seq,
            },
            gap,
        })
    }
}
