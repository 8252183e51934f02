//! Last-use reports: sessions' expiry moved by their last use, and who reported it.

use redis::Value;

use super::RedisStore;
use crate::{MAX_REPORTERS, SessionId, StoreError, UsageReport};

impl UsageReport for RedisStore {
    async fn touch(&self, uses: &[(SessionId, u64)]) -> Result<usize, StoreError> {
        if uses.is_empty() {
            return Ok(0);
        }
        let extended: Vec<i64> = self
            .eval_each(&self.shared.scripts.touch, |sha| {
                uses.iter()
                    .map(|(id, last_used)| {
                        let mut cmd = redis::cmd("EVALSHA");
                        cmd.arg(sha)
                            .arg(1)
                            .arg(self.shared.keys.session(id))
                            .arg(*last_used);
                        cmd
                    })
                    .collect()
            })
            .await?;
        Ok(extended.iter().filter(|n| **n == 1).count())
    }

    async fn report_seen(&self, reporter: &str, at: u64) -> Result<(), StoreError> {
        let mut con = self.con.clone();
        let key = &self.shared.keys.reporters;
        let _: Value = redis::cmd("ZADD")
            .arg(key)
            .arg("GT")
            .arg(at)
            .arg(reporter)
            .query_async(&mut con)
            .await
            .map_err(StoreError::unavailable)?;
        // Keep the newest MAX_REPORTERS (ranks are by score, lowest first).
        let _: Value = redis::cmd("ZREMRANGEBYRANK")
            .arg(key)
            .arg(0)
            .arg(-(MAX_REPORTERS as i64) - 1)
            .query_async(&mut con)
            .await
            .map_err(StoreError::unavailable)?;
        Ok(())
    }
}
