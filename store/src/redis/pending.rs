//! Pending sign-ins (waiting for an upstream provider), each taken back once.

use std::time::Duration;

use super::RedisStore;
use crate::{CodeId, Notes, PendingSignIns, StoreError};

impl PendingSignIns for RedisStore {
    async fn create_pending(
        &self,
        id: &CodeId,
        record: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut con = self.con.clone();
        let created: Option<String> = redis::cmd("SET")
            .arg(self.shared.keys.pending(id))
            .arg(record)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64)
            .query_async(&mut con)
            .await
            .map_err(StoreError::unavailable)?;
        Ok(created.is_some())
    }

    async fn take_pending(&self, id: &CodeId) -> Result<Option<String>, StoreError> {
        let mut con = self.con.clone();
        redis::cmd("GETDEL")
            .arg(self.shared.keys.pending(id))
            .query_async(&mut con)
            .await
            .map_err(StoreError::unavailable)
    }
}

impl Notes for RedisStore {
    async fn put_note(&self, id: &CodeId, value: &str, ttl: Duration) -> Result<(), StoreError> {
        let mut con = self.con.clone();
        redis::cmd("SET")
            .arg(self.shared.keys.note(id))
            .arg(value)
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64)
            .query_async::<()>(&mut con)
            .await
            .map_err(StoreError::unavailable)
    }

    async fn put_note_once(
        &self,
        id: &CodeId,
        value: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let mut con = self.con.clone();
        let created: Option<String> = redis::cmd("SET")
            .arg(self.shared.keys.note(id))
            .arg(value)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64)
            .query_async(&mut con)
            .await
            .map_err(StoreError::unavailable)?;
        Ok(created.is_some())
    }

    async fn note(&self, id: &CodeId) -> Result<Option<String>, StoreError> {
        let mut con = self.con.clone();
        redis::cmd("GET")
            .arg(self.shared.keys.note(id))
            .query_async(&mut con)
            .await
            .map_err(StoreError::unavailable)
    }
}
