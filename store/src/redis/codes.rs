//! Authorization codes, redeemed once.

use std::time::Duration;

use super::RedisStore;
use crate::{AuthCode, CodeId, Codes, Redeemed, SessionId, StoreError};

impl Codes for RedisStore {
    async fn create_code(
        &self,
        id: &CodeId,
        code: &AuthCode,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let record = serde_json::to_string(code).map_err(|_| StoreError::Corrupt {
            what: "authorization code",
        })?;
        let mut con = self.con.clone();
        let created: i64 = self
            .shared
            .scripts
            .create_code
            .key(self.shared.keys.code(id))
            .arg(ttl.as_millis().max(1) as u64)
            .arg(record)
            .invoke_async(&mut con)
            .await
            .map_err(StoreError::unavailable)?;
        Ok(created == 1)
    }

    async fn redeem_code(&self, id: &CodeId, session: &SessionId) -> Result<Redeemed, StoreError> {
        let mut con = self.con.clone();
        let (outcome, value): (i64, Option<String>) = self
            .shared
            .scripts
            .redeem_code
            .key(self.shared.keys.code(id))
            .arg(session.as_str())
            .invoke_async(&mut con)
            .await
            .map_err(StoreError::unavailable)?;
        let corrupt = StoreError::Corrupt {
            what: "authorization code",
        };
        Ok(match (outcome, value) {
            (1, Some(record)) => {
                Redeemed::Fresh(serde_json::from_str(&record).map_err(|_| corrupt)?)
            }
            (2, first) => Redeemed::Replayed(first.as_deref().and_then(SessionId::parse)),
            (0, _) => Redeemed::Unknown,
            _ => return Err(corrupt),
        })
    }
}
