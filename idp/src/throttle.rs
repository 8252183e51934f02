//! Password-guessing defence: failed logins are counted per name (username or client id) and per
//! client address; once either reaches its limit within the window, further attempts for it are
//! refused with `429` until the lockout ends, before any password is checked (so the right
//! password does not open a held lock). Counters live in this process, bounded in number.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::config::LoginConfig;

/// Most names and addresses tracked at once; the least recently seen go first.
const MAX_TRACKED: u64 = 100_000;

#[derive(Clone, Copy, Debug)]
struct Attempts {
    window_start: Instant,
    failures: u32,
    locked_until: Option<Instant>,
}

/// What a lock is held on.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
enum Key {
    Name(String),
    Address(IpAddr),
}

#[derive(Debug)]
pub struct Throttle {
    entries: moka::sync::Cache<Key, Arc<Mutex<Attempts>>>,
    config: LoginConfig,
}

impl Throttle {
    pub fn new(config: &LoginConfig) -> Self {
        let keep = config
            .window
            .max(config.lockout)
            .max(Duration::from_secs(1));
        Throttle {
            entries: moka::sync::Cache::builder()
                .max_capacity(MAX_TRACKED)
                .time_to_idle(keep)
                .build(),
            config: config.clone(),
        }
    }

    fn keys(name: &str, address: Option<IpAddr>) -> impl Iterator<Item = Key> {
        std::iter::once(Key::Name(name.to_owned())).chain(address.map(Key::Address))
    }

    fn limit(&self, key: &Key) -> u32 {
        match key {
            Key::Name(_) => self.config.max_failures,
            Key::Address(_) => self.config.max_failures_per_address,
        }
    }

    /// `Err(wait)` while `name` or `address` is locked out.
    pub fn check(&self, name: &str, address: Option<IpAddr>) -> Result<(), Duration> {
        let now = Instant::now();
        let wait = Self::keys(name, address)
            .filter_map(|key| self.entries.get(&key))
            .filter_map(|e| {
                let a = *e.lock().unwrap_or_else(PoisonError::into_inner);
                a.locked_until.filter(|until| *until > now)
            })
            .max()
            .map(|until| until - now);
        wait.map_or(Ok(()), Err)
    }

    /// Counts a failure; returns whether this failure started a lockout.
    pub fn failed(&self, name: &str, address: Option<IpAddr>) -> bool {
        let now = Instant::now();
        let mut locked = false;
        for key in Self::keys(name, address) {
            let limit = self.limit(&key);
            if limit == 0 {
                continue;
            }
            let entry = self.entries.get_with(key, || {
                Arc::new(Mutex::new(Attempts {
                    window_start: now,
                    failures: 0,
                    locked_until: None,
                }))
            });
            let mut a = entry.lock().unwrap_or_else(PoisonError::into_inner);
            if now.duration_since(a.window_start) > self.config.window {
                a.window_start = now;
                a.failures = 0;
            }
            a.failures += 1;
            if a.failures >= limit {
                a.locked_until = Some(now + self.config.lockout);
                a.window_start = now;
                a.failures = 0;
                locked = true;
            }
        }
        locked
    }

    /// A correct password clears the name's failures (not the address's: one good account
    /// must not reset an address that guesses at others).
    pub fn succeeded(&self, name: &str) {
        self.entries.invalidate(&Key::Name(name.to_owned()));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn throttle(per_name: u32, per_address: u32) -> Throttle {
        Throttle::new(&LoginConfig {
            max_failures: per_name,
            max_failures_per_address: per_address,
            window: Duration::from_secs(60),
            lockout: Duration::from_secs(30),
        })
    }

    #[test]
    fn a_name_locks_after_its_limit_and_others_stay_open() {
        let t = throttle(3, 100);
        let ip = Some(IpAddr::from([10, 0, 0, 1]));
        assert!(!t.failed("alice", ip));
        assert!(!t.failed("alice", ip));
        assert!(t.check("alice", ip).is_ok());
        assert!(t.failed("alice", ip));
        let wait = t.check("alice", None).unwrap_err();
        assert!(wait > Duration::from_secs(29) && wait <= Duration::from_secs(30));
        assert!(t.check("bob", ip).is_ok());
    }

    #[test]
    fn an_address_locks_whatever_names_it_tries() {
        let t = throttle(100, 3);
        let ip = Some(IpAddr::from([10, 0, 0, 2]));
        for name in ["a", "b", "c"] {
            t.failed(name, ip);
        }
        assert!(t.check("d", ip).is_err());
        assert!(t.check("d", Some(IpAddr::from([10, 0, 0, 3]))).is_ok());
    }

    #[test]
    fn success_clears_the_name_and_zero_disables() {
        let t = throttle(2, 0);
        t.failed("alice", None);
        t.succeeded("alice");
        assert!(!t.failed("alice", None));
        assert!(t.failed("alice", None));
        let ip = Some(IpAddr::from([10, 0, 0, 4]));
        for _ in 0..10 {
            t.failed(&format!("x{}", t.entries.entry_count()), ip);
        }
        assert!(t.check("new", ip).is_ok());
    }
}
