//! Authorization codes, redeemed once.

use std::time::Duration;

use super::{MAX_CODES, MemoryStore};
use crate::{AuthCode, CodeId, Codes, Redeemed, SessionId, StoreError};

impl Codes for MemoryStore {
    async fn create_code(
        &self,
        id: &CodeId,
        code: &AuthCode,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let now = std::time::Instant::now();
        let mut state = self.state();
        if state.codes.len() >= MAX_CODES {
            state.codes.retain(|_, (_, _, expires)| *expires > now);
        }
        if state.codes.get(id).is_some_and(|(_, _, e)| *e > now) {
            return Ok(false);
        }
        state
            .codes
            .insert(id.clone(), (code.clone(), None, now + ttl));
        Ok(true)
    }

    async fn redeem_code(&self, id: &CodeId, session: &SessionId) -> Result<Redeemed, StoreError> {
        let now = std::time::Instant::now();
        let mut state = self.state();
        Ok(match state.codes.get_mut(id) {
            Some((_, _, expires)) if *expires <= now => {
                state.codes.remove(id);
                Redeemed::Unknown
            }
            Some((_, Some(first), _)) => Redeemed::Replayed(Some(*first)),
            Some((code, used, _)) => {
                *used = Some(*session);
                Redeemed::Fresh(code.clone())
            }
            None => Redeemed::Unknown,
        })
    }
}
