//! Password-guessing defence: failed logins are counted per name (username or client id) and per
//! client address, in the token store, so every IdP replica sees the same counts. Once either
//! reaches its limit within the window, further attempts for it are refused with `429` until the
//! lockout ends, before any password is checked (so the right password does not open a held
//! lock).

use std::net::IpAddr;
use std::time::Duration;

use tokengate_store::{AnyStore, LoginThrottle, StoreError};

use crate::config::LoginConfig;

/// The login throttle: failure counts and lockouts live in the store, so replicas share them.
#[derive(Debug)]
pub struct Throttle {
    store: AnyStore,
    config: LoginConfig,
}

impl Throttle {
    /// A throttle with `[login]`'s limits.
    pub fn new(store: AnyStore, config: &LoginConfig) -> Self {
        Throttle {
            store,
            config: config.clone(),
        }
    }

    /// The keys an attempt counts against, with their limits (a limit of 0 is off).
    fn keys(&self, name: &str, address: Option<IpAddr>) -> Vec<(String, u32)> {
        let mut keys = vec![(name.to_owned(), self.config.max_failures)];
        if let Some(ip) = address {
            keys.push((format!("addr:{ip}"), self.config.max_failures_per_address));
        }
        keys.retain(|(_, limit)| *limit > 0);
        keys
    }

    /// `Ok(Err(wait))` while `name` or `address` is locked out.
    pub async fn check(
        &self,
        name: &str,
        address: Option<IpAddr>,
    ) -> Result<Result<(), Duration>, StoreError> {
        let mut wait: Option<Duration> = None;
        for (key, _) in self.keys(name, address) {
            if let Some(left) = self.store.login_locked(&key).await? {
                wait = Some(wait.map_or(left, |w| w.max(left)));
            }
        }
        Ok(wait.map_or(Ok(()), Err))
    }

    /// Counts a failure; returns whether it started a lockout.
    pub async fn failed(&self, name: &str, address: Option<IpAddr>) -> Result<bool, StoreError> {
        let mut locked = false;
        for (key, limit) in self.keys(name, address) {
            locked |= self
                .store
                .login_failed(&key, limit, self.config.window, self.config.lockout)
                .await?;
        }
        Ok(locked)
    }

    /// A correct password clears the name's failures (not the address's: one good account
    /// must not reset an address that guesses at others).
    pub async fn succeeded(&self, name: &str) -> Result<(), StoreError> {
        if self.config.max_failures > 0 {
            self.store.login_succeeded(name).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use tokengate_store::MemoryStore;

    use super::*;

    fn throttle(per_name: u32, per_address: u32) -> Throttle {
        Throttle::new(
            AnyStore::Memory(MemoryStore::new()),
            &LoginConfig {
                max_failures: per_name,
                max_failures_per_address: per_address,
                window: Duration::from_secs(60),
                lockout: Duration::from_secs(30),
            },
        )
    }

    #[tokio::test]
    async fn a_name_locks_after_its_limit_and_others_stay_open() {
        let t = throttle(3, 100);
        let ip = Some(IpAddr::from([10, 0, 0, 1]));
        assert!(!t.failed("alice", ip).await.unwrap());
        assert!(!t.failed("alice", ip).await.unwrap());
        assert!(t.check("alice", ip).await.unwrap().is_ok());
        assert!(t.failed("alice", ip).await.unwrap());
        let wait = t.check("alice", None).await.unwrap().expect_err("locked");
        assert!(wait > Duration::from_secs(29) && wait <= Duration::from_secs(30));
        assert!(t.check("bob", ip).await.unwrap().is_ok());
    }

    #[tokio::test]
    async fn an_address_locks_whatever_names_it_tries() {
        let t = throttle(100, 3);
        let ip = Some(IpAddr::from([10, 0, 0, 2]));
        for name in ["a", "b", "c"] {
            t.failed(name, ip).await.unwrap();
        }
        assert!(t.check("d", ip).await.unwrap().is_err());
        let other = Some(IpAddr::from([10, 0, 0, 3]));
        assert!(t.check("d", other).await.unwrap().is_ok());
    }

    #[tokio::test]
    async fn success_clears_the_name_and_zero_disables() {
        let t = throttle(2, 0);
        t.failed("alice", None).await.unwrap();
        t.succeeded("alice").await.unwrap();
        assert!(!t.failed("alice", None).await.unwrap());
        assert!(t.failed("alice", None).await.unwrap());
        let ip = Some(IpAddr::from([10, 0, 0, 4]));
        for i in 0..10 {
            t.failed(&format!("x{i}"), ip).await.unwrap();
        }
        assert!(t.check("new", ip).await.unwrap().is_ok());
    }
}
