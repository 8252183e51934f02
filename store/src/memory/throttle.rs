//! The login throttle: failures counted per key, and lockouts.

use std::time::Duration;

use super::{MAX_LOGIN_KEYS, MemoryStore};
use crate::{LoginThrottle, StoreError};

impl LoginThrottle for MemoryStore {
    async fn login_failed(
        &self,
        key: &str,
        limit: u32,
        window: Duration,
        lockout: Duration,
    ) -> Result<bool, StoreError> {
        let now = std::time::Instant::now();
        let mut state = self.state();
        if state.logins.len() >= MAX_LOGIN_KEYS {
            state
                .logins
                .retain(|_, (_, ends, locked)| *ends > now || locked.is_some_and(|l| l > now));
        }
        let entry = state
            .logins
            .entry(key.to_owned())
            .or_insert((0, now + window, None));
        if entry.1 <= now {
            *entry = (0, now + window, entry.2);
        }
        entry.0 += 1;
        if entry.0 >= limit {
            *entry = (0, now + window, Some(now + lockout));
            return Ok(true);
        }
        Ok(false)
    }

    async fn login_locked(&self, key: &str) -> Result<Option<Duration>, StoreError> {
        let now = std::time::Instant::now();
        Ok(self
            .state()
            .logins
            .get(key)
            .and_then(|(_, _, locked)| *locked)
            .filter(|until| *until > now)
            .map(|until| until - now))
    }

    async fn login_succeeded(&self, key: &str) -> Result<(), StoreError> {
        if let Some(entry) = self.state().logins.get_mut(key) {
            entry.0 = 0;
        }
        Ok(())
    }
}
