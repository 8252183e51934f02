//! Users: the IdP's directory.

use std::ops::Bound;
use std::time::{Duration, Instant};

use super::MemoryStore;
use crate::user::{cut_page, username_fits};
use crate::{Claimed, MAX_USERS_PAGE, Replaced, StoreError, User, UserDirectory, UserPage};

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

    async fn replace_user(&self, current: &User, new: &User) -> Result<Replaced, StoreError> {
        if current.username != new.username {
            return Err(StoreError::Invalid { what: "username" });
        }
        Ok(match self.state().users.get_mut(&new.username) {
            Some(stored) if stored == current => {
                *stored = new.clone();
                Replaced::Done
            }
            Some(_) => Replaced::Changed,
            None => Replaced::Missing,
        })
    }

    async fn delete_user(&self, username: &str) -> Result<bool, StoreError> {
        let mut state = self.state();
        state.otp_steps.remove(username);
        let Some(user) = state.users.remove(username) else {
            return Ok(false);
        };
        for passkey in &user.passkeys {
            if state.passkey_owners.get(&passkey.id).map(String::as_str) == Some(username) {
                state.passkey_owners.remove(&passkey.id);
            }
        }
        Ok(true)
    }

    async fn claim_passkey(&self, id: &str, username: &str) -> Result<Claimed, StoreError> {
        let mut state = self.state();
        Ok(match state.passkey_owners.get(id) {
            None => {
                state
                    .passkey_owners
                    .insert(id.to_owned(), username.to_owned());
                Claimed::Now
            }
            Some(owner) if owner == username => Claimed::Already,
            Some(_) => Claimed::ByAnother,
        })
    }

    async fn release_passkey(&self, id: &str, username: &str) -> Result<bool, StoreError> {
        let mut state = self.state();
        if state.passkey_owners.get(id).map(String::as_str) != Some(username) {
            return Ok(false);
        }
        state.passkey_owners.remove(id);
        Ok(true)
    }

    async fn passkey_owner(&self, id: &str) -> Result<Option<String>, StoreError> {
        Ok(self.state().passkey_owners.get(id).cloned())
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
