//! Deliveries owed to others: a queue scored by when each is due, and the payloads by id.

use std::time::Duration;

use redis::Value;

use super::RedisStore;
use crate::{Deliveries, MAX_DELIVERIES, StoreError};

impl Deliveries for RedisStore {
    async fn queue_delivery(
        &self,
        id: &str,
        payload: &str,
        due_ms: u64,
    ) -> Result<bool, StoreError> {
        let keys = &self.shared.keys;
        let queued: i64 = self
            .shared
            .scripts
            .queue_delivery
            .key(&keys.deliveries)
            .key(&keys.delivery_items)
            .arg(id)
            .arg(payload)
            .arg(due_ms)
            .arg(MAX_DELIVERIES)
            .invoke_async(&mut self.con.clone())
            .await
            .map_err(StoreError::unavailable)?;
        Ok(queued == 1)
    }

    async fn deliveries_due(
        &self,
        now_ms: u64,
        hold: Duration,
        limit: usize,
    ) -> Result<Vec<(String, String)>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let keys = &self.shared.keys;
        let flat: Vec<String> = self
            .shared
            .scripts
            .deliveries_due
            .key(&keys.deliveries)
            .key(&keys.delivery_items)
            .arg(now_ms)
            .arg(u64::try_from(hold.as_millis()).unwrap_or(u64::MAX))
            .arg(limit)
            .invoke_async(&mut self.con.clone())
            .await
            .map_err(StoreError::unavailable)?;
        let mut flat = flat.into_iter();
        let mut due = Vec::new();
        while let (Some(id), Some(payload)) = (flat.next(), flat.next()) {
            due.push((id, payload));
        }
        Ok(due)
    }

    async fn finish_delivery(&self, id: &str) -> Result<bool, StoreError> {
        let keys = &self.shared.keys;
        // The payload first: an id left in the queue without one leaves it when next due.
        let mut con = self.con.clone();
        let removed: i64 = redis::cmd("HDEL")
            .arg(&keys.delivery_items)
            .arg(id)
            .query_async(&mut con)
            .await
            .map_err(StoreError::unavailable)?;
        let _: Value = redis::cmd("ZREM")
            .arg(&keys.deliveries)
            .arg(id)
            .query_async(&mut con)
            .await
            .map_err(StoreError::unavailable)?;
        Ok(removed == 1)
    }
}
