//! The login throttle: failures counted per key, and lockouts.

use std::time::Duration;

use redis::Value;

use super::RedisStore;
use crate::{LoginThrottle, StoreError};

impl LoginThrottle for RedisStore {
    async fn login_failed(
        &self,
        key: &str,
        limit: u32,
        window: Duration,
        lockout: Duration,
    ) -> Result<bool, StoreError> {
        let mut con = self.con.clone();
        let locked: i64 = self
            .shared
            .scripts
            .login_failed
            .key(self.shared.keys.login(key, "n"))
            .key(self.shared.keys.login(key, "lock"))
            .arg(limit)
            .arg(window.as_millis().max(1) as u64)
            .arg(lockout.as_millis().max(1) as u64)
            .invoke_async(&mut con)
            .await
            .map_err(StoreError::unavailable)?;
        Ok(locked == 1)
    }

    async fn login_locked(&self, key: &str) -> Result<Option<Duration>, StoreError> {
        let mut con = self.con.clone();
        let ms: i64 = redis::cmd("PTTL")
            .arg(self.shared.keys.login(key, "lock"))
            .query_async(&mut con)
            .await
            .map_err(StoreError::unavailable)?;
        Ok((ms > 0).then(|| Duration::from_millis(ms as u64)))
    }

    async fn login_succeeded(&self, key: &str) -> Result<(), StoreError> {
        let mut con = self.con.clone();
        let _: Value = redis::cmd("DEL")
            .arg(self.shared.keys.login(key, "n"))
            .query_async(&mut con)
            .await
            .map_err(StoreError::unavailable)?;
        Ok(())
    }
}
