//! Pending sign-ins (waiting for an upstream provider), each taken back once; and notes.

use std::time::Duration;

use super::RedisStore;
use crate::{CodeId, Notes, PendingSignIns, StoreError};

impl RedisStore {
    /// `SET key value PX ttl`, with `NX` when `only_new`: whether it was written.
    async fn set_expiring(
        &self,
        key: String,
        value: &str,
        ttl: Duration,
        only_new: bool,
    ) -> Result<bool, StoreError> {
        let mut con = self.con.clone();
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value);
        if only_new {
            cmd.arg("NX");
        }
        let written: Option<String> = cmd
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64)
            .query_async(&mut con)
            .await
            .map_err(StoreError::unavailable)?;
        Ok(written.is_some())
    }
}

impl PendingSignIns for RedisStore {
    async fn create_pending(
        &self,
        id: &CodeId,
        record: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.set_expiring(self.shared.keys.pending(id), record, ttl, true)
            .await
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
        self.set_expiring(self.shared.keys.note(id), value, ttl, false)
            .await
            .map(|_| ())
    }

    async fn put_note_once(
        &self,
        id: &CodeId,
        value: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.set_expiring(self.shared.keys.note(id), value, ttl, true)
            .await
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
