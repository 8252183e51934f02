//! The renewal of value tokens: the schedule of those due, their replacement, and the lease
//! that lets one IdP renew at a time.

use std::time::Duration;

use super::MemoryStore;
use crate::{Renewal, Session, SessionId, StoreError, TokenRenewal, now_unix};

impl TokenRenewal for MemoryStore {
    async fn value_tokens_due(
        &self,
        before: u64,
        skip: usize,
        limit: usize,
    ) -> Result<Vec<Session>, StoreError> {
        let now = now_unix();
        let mut state = self.state();
        let entries: Vec<(u64, SessionId)> = state
            .schedule
            .iter()
            .take_while(|(due, _)| *due <= before)
            .skip(skip)
            .cloned()
            .collect();
        let mut sessions = Vec::new();
        for (due, id) in entries {
            if sessions.len() == limit {
                break;
            }
            match state.live(&id, now).map(|s| s.clone()) {
                Some(s) if due < s.max_expires_at => sessions.push(s),
                // Ended, or its token already lasts as long as the session: nothing to renew.
                _ => state.unschedule(&id),
            }
        }
        Ok(sessions)
    }

    async fn replace_value_tokens(&self, renewals: &[Renewal]) -> Result<usize, StoreError> {
        let now = now_unix();
        let mut state = self.state();
        let mut replaced = 0;
        for r in renewals {
            let Some(session) = state.live(&r.session, now) else {
                continue;
            };
            if session.value_token != r.replaces {
                continue;
            }
            session.value_token = r.token.clone();
            state.schedule(&r.session, r.token.renewal_due());
            replaced += 1;
        }
        Ok(replaced)
    }

    async fn renewal_lease(&self, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        let now = std::time::Instant::now();
        let mut state = self.state();
        if let Some((other, until)) = &state.lease
            && other != holder
            && *until > now
        {
            return Ok(false);
        }
        state.lease = Some((holder.to_owned(), now + ttl));
        Ok(true)
    }

    async fn release_renewal_lease(&self, holder: &str) -> Result<bool, StoreError> {
        let mut state = self.state();
        let theirs = state
            .lease
            .as_ref()
            .is_some_and(|(h, until)| h == holder && *until > std::time::Instant::now());
        if theirs {
            state.lease = None;
        }
        Ok(theirs)
    }
}
