//! The renewal of value tokens: the schedule of those due, their replacement, and the lease
//! that lets one IdP renew at a time.

use std::time::Duration;

use redis::Value;

use super::RedisStore;
use super::schema::decode_session;
use crate::{Renewal, Session, SessionId, StoreError, TokenRenewal, now_unix};

impl TokenRenewal for RedisStore {
    async fn value_tokens_due(
        &self,
        before: u64,
        skip: usize,
        limit: usize,
    ) -> Result<Vec<Session>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let schedule = &self.shared.keys.renewal;
        let mut con = self.con.clone();
        loop {
            let entries: Vec<(String, f64)> = redis::cmd("ZRANGEBYSCORE")
                .arg(schedule)
                .arg("-inf")
                .arg(before)
                .arg("WITHSCORES")
                .arg("LIMIT")
                .arg(skip)
                .arg(limit)
                .query_async(&mut con)
                .await
                .map_err(StoreError::unavailable)?;
            if entries.is_empty() {
                return Ok(Vec::new());
            }
            let ids: Vec<Option<SessionId>> =
                entries.iter().map(|(id, _)| SessionId::parse(id)).collect();
            let reads = self.on_each_session("HGETALL", ids.iter().flatten());
            let mut records = self
                .con
                .query_each::<Vec<(String, String)>>(&reads)
                .await
                .map_err(StoreError::unavailable)?
                .into_iter();
            let now = now_unix();
            let mut due = Vec::new();
            let mut done = Vec::new();
            for ((member, score), id) in entries.iter().zip(ids) {
                let session = id.and_then(|id| decode_session(id, records.next()?));
                match session {
                    Some(s) if s.is_live(now) && (*score as u64) < s.max_expires_at => due.push(s),
                    // Ended (or unreadable), or its token lasts as long as the session.
                    _ => done.push(member.as_str()),
                }
            }
            if !done.is_empty() {
                let _: Value = Self::unindex(schedule, done.iter().copied())
                    .query_async(&mut con)
                    .await
                    .map_err(StoreError::unavailable)?;
            }
            // Every entry read had nothing to renew: the next ones moved up; read again.
            if !due.is_empty() || entries.len() < limit {
                return Ok(due);
            }
        }
    }

    async fn replace_value_tokens(&self, renewals: &[Renewal]) -> Result<usize, StoreError> {
        if renewals.is_empty() {
            return Ok(0);
        }
        let done: Vec<i64> = self
            .eval_each(&self.shared.scripts.replace, |sha| {
                renewals
                    .iter()
                    .map(|r| {
                        let mut cmd = redis::cmd("EVALSHA");
                        cmd.arg(sha)
                            .arg(1)
                            .arg(self.shared.keys.session(&r.session))
                            .arg(r.replaces.expose())
                            .arg(r.token.expose());
                        cmd
                    })
                    .collect()
            })
            .await?;
        let replaced: Vec<&Renewal> = renewals
            .iter()
            .zip(&done)
            .filter(|(_, n)| **n == 1)
            .map(|(r, _)| r)
            .collect();
        // After the tokens: a failure in between leaves an earlier entry, renewed once more.
        self.schedule(replaced.iter().map(|r| (&r.session, &r.token)))
            .await?;
        Ok(replaced.len())
    }

    async fn renewal_lease(&self, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        let taken: i64 = self
            .shared
            .scripts
            .lease
            .key(&self.shared.keys.renewal_lease)
            .arg(holder)
            .arg(ttl.as_millis().max(1) as u64)
            .invoke_async(&mut self.con.clone())
            .await
            .map_err(StoreError::unavailable)?;
        Ok(taken == 1)
    }

    async fn release_renewal_lease(&self, holder: &str) -> Result<bool, StoreError> {
        let released: i64 = self
            .shared
            .scripts
            .release_lease
            .key(&self.shared.keys.renewal_lease)
            .arg(holder)
            .invoke_async(&mut self.con.clone())
            .await
            .map_err(StoreError::unavailable)?;
        Ok(released == 1)
    }
}
