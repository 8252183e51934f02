//! Users: the IdP's directory.

use std::ops::Bound;
use std::time::{Duration, Instant};

use super::MemoryStore;
use crate::user::{cut_page, username_fits};
use crate::{MAX_USERS_PAGE, StoreError, User, UserDirectory, UserPage};

impl UserDirectory for MemoryStore {
    async fn create_user(&self, user: &User) -> Result<bool, StoreError> {
        if !username_fits(&user.username) {
            return Err(StoreError::Invalid { what: "username" });
        }
        let mut state = self.state();
        if state.users.contains_key(&user.username) {
            return Ok(false);
        }
        state.users.insert(user.username.clone(), user.clone());
        Ok(true)
    }

    async fn user(&self, username: &str) -> Result<Option<User>, StoreError> {
        Ok(self.state().users.get(username).cloned())
    }

    async fn update_user(&self, user: &User) -> Result<bool, StoreError> {
        Ok(match self.state().users.get_mut(&user.username) {
            Some(stored) => {
                *stored = user.clone();
                true
            }
            None => false,
        })
    }

    async fn delete_user(&self, username: &str) -> Result<bool, StoreError> {
        let mut state = self.state();
        state.otp_steps.remove(username);
        Ok(state.users.remove(username).is_some())
    }

    async fn use_otp_step(
        &self,
        username: &str,
        step: u64,
        keep: Duration,
    ) -> Result<bool, StoreError> {
        let now = Instant::now();
        let mut state = self.state();
        // Only users that exist have steps: the map is as bounded as the directory.
        if !state.users.contains_key(username) {
            return Ok(false);
        }
        let last = state
            .otp_steps
            .get(username)
            .filter(|(_, until)| *until > now)
            .map(|(last, _)| *last);
        if last.is_some_and(|last| step <= last) {
            return Ok(false);
        }
        state
            .otp_steps
            .insert(username.to_owned(), (step, now + keep));
        Ok(true)
    }

    async fn list_users(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<UserPage, StoreError> {
        let limit = limit.clamp(1, MAX_USERS_PAGE);
        let start = match after {
            Some(after) if after >= prefix => Bound::Excluded(after.to_owned()),
            _ => Bound::Included(prefix.to_owned()),
        };
        let state = self.state();
        let mut users: Vec<User> = state
            .users
            .range((start, Bound::Unbounded))
            .take_while(|(name, _)| name.starts_with(prefix))
            .take(limit + 1)
            .map(|(_, user)| user.clone())
            .collect();
        let next = cut_page(&mut users, limit, |u| &u.username);
        Ok(UserPage { users, next })
    }
}
