//! Per-route rate limits: a GCRA (generic cell rate algorithm, the token bucket written as one
//! "theoretical arrival time" per key), local to this gateway.
//!
//! A key is a subject, a session, a client address or the whole route; its state is one `u64`
//! (nanoseconds). Keys live in a fixed number of shards, each a small map behind its own lock,
//! and a shard never holds more than its share of `max_keys`: a key whose bucket has refilled
//! is dropped first (forgetting it changes nothing), then, if all are busy, the half nearest to
//! full (which lets those clients a little more than their rate, never less).

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use http::HeaderValue;
use prometheus_client::metrics::counter::Counter;

use crate::cache::Identity;

pub use crate::config::{Per, RateLimitConfig, default_max_keys};

/// Why a `rate_limit` is refused; `key` is below `routes[i].rate_limit`.
#[derive(Debug, PartialEq, Eq)]
pub struct Invalid {
    /// The refused key, e.g. `rate` or `burst`.
    pub key: &'static str,
    /// What it must be instead.
    pub message: &'static str,
}

const NANOS: u64 = 1_000_000_000;
const MAX_COUNT: u64 = 1_000_000_000;

/// `"100/s"` → (100, one second in nanoseconds).
fn parse_rate(rate: &str) -> Option<(u64, u64)> {
    let (count, unit) = rate.trim().split_once('/')?;
    let count: u64 = count.trim().parse().ok()?;
    let seconds = match unit.trim() {
        "s" | "sec" | "second" => 1,
        "m" | "min" | "minute" => 60,
        "h" | "hour" => 3600,
        "d" | "day" => 86_400,
        _ => return None,
    };
    (1..=MAX_COUNT)
        .contains(&count)
        .then_some((count, seconds * NANOS))
}

/// A limit with its numbers worked out, ready for the request path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Quota {
    /// Nanoseconds between two requests at the steady rate.
    interval: u64,
    /// Nanoseconds of credit a full bucket holds: `burst × interval`.
    capacity: u64,
    burst: u64,
}

impl RateLimitConfig {
    fn quota(&self) -> Result<Quota, Invalid> {
        let (count, period) = parse_rate(&self.rate).ok_or(Invalid {
            key: "rate",
            message: "must be N/s, N/m, N/h or N/d with N from 1 to 1000000000",
        })?;
        let burst = self.burst.unwrap_or(count);
        let interval = period / count;
        let capacity = interval.checked_mul(burst).filter(|_| burst >= 1);
        let capacity = capacity.ok_or(Invalid {
            key: "burst",
            message: "must be at least 1, and burst / rate at most a few centuries",
        })?;
        Ok(Quota {
            interval,
            capacity,
            burst,
        })
    }

    /// Called by [`GatewayConfig::validate`](crate::config::GatewayConfig::validate), which puts
    /// the route (or `protection`) in front of the key.
    pub fn validate(&self) -> Result<(), Invalid> {
        self.quota()?;
        if self.max_keys == 0 {
            return Err(Invalid {
                key: "max_keys (rate_limit_max_keys)",
                message: "must be at least 1",
            });
        }
        Ok(())
    }
}

/// A request turned away: what the `429` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Denied {
    /// Whole seconds until one more request is allowed (at least 1).
    pub retry_after: u64,
    /// What the limit counts by; names the policy in the headers.
    pub per: Per,
    /// Requests a full bucket allows: the burst.
    pub quota: u64,
    /// Seconds for an empty bucket to fill again (at least 1).
    pub window: u64,
}

impl Denied {
    /// `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers).
    pub fn headers(&self) -> [HeaderValue; 2] {
        [
            policy_header(self.per, self.quota, self.window),
            state_header(self.per, 0, self.retry_after),
        ]
    }
}

/// `"subject";q=200;w=2`: the policy is named by what it counts.
fn policy_header(per: Per, quota: u64, window: u64) -> HeaderValue {
    let value = format!("\"{}\";q={quota};w={window}", per.as_str());
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("\"route\";q=1"))
}

/// `"subject";r=3;t=1`: requests left now, and seconds until the bucket is full again.
fn state_header(per: Per, remaining: u64, reset: u64) -> HeaderValue {
    let value = format!("\"{}\";r={remaining};t={reset}", per.as_str());
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("\"route\";r=0"))
}

/// A request let through: the `RateLimit` header its response carries.
#[derive(Debug)]
pub struct Allowed {
    /// Requests still allowed at once.
    pub remaining: u64,
    /// Seconds until the bucket is full again.
    pub reset: u64,
}

const SHARDS: usize = 16;

/// A key's hash is already uniform: the map uses it as it is.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Shard = HashMap<u64, u64, BuildHasherDefault<PassThrough>>;

/// One route's limit.
pub struct RateLimiter {
    config: RateLimitConfig,
    per: Per,
    quota: Quota,
    /// `RateLimit-Policy`, the same on every response.
    pub policy: HeaderValue,
    window: u64,
    shards: Box<[Mutex<Shard>; SHARDS]>,
    shard_cap: usize,
    /// Keyed hashing (SipHash with a random key): nobody can aim many keys at one shard.
    hasher: RandomState,
    epoch: Instant,
    /// Requests this route turned away.
    pub limited: Counter,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("per", &self.per)
            .field("quota", &self.quota)
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// `None` if the config is invalid (validation names why).
    pub fn new(config: &RateLimitConfig, limited: Counter) -> Option<Self> {
        let quota = config.quota().ok()?;
        let window = quota.capacity.div_ceil(NANOS).max(1);
        Some(RateLimiter {
            config: config.clone(),
            per: config.per,
            policy: policy_header(config.per, quota.burst, window),
            window,
            quota,
            shards: Box::new(std::array::from_fn(|_| Mutex::new(Shard::default()))),
            shard_cap: config.max_keys.div_ceil(SHARDS).max(1),
            hasher: RandomState::new(),
            epoch: Instant::now(),
            limited,
        })
    }

    /// What this limiter counts by: the `per` it was built with.
    pub fn per(&self) -> Per {
        self.per
    }

    /// The `rate_limit` this limiter was made from.
    pub fn config(&self) -> &RateLimitConfig {
        &self.config
    }

    /// Whether the limit counts before authentication: by address or for the whole route, it
    /// turns a flood away without a cache or store lookup.
    pub fn before_authentication(&self) -> bool {
        !self.per.needs_identity()
    }

    /// Counts one request of the key the request gives, now.
    pub fn check(&self, identity: Option<&Identity>, peer: IpAddr) -> Result<Allowed, Denied> {
        self.check_key(self.key(identity, peer), self.now())
    }

    /// Whether one more request of this key would pass now, without counting one.
    pub fn peek(&self, identity: Option<&Identity>, peer: IpAddr) -> Result<(), Denied> {
        let (key, now) = (self.key(identity, peer), self.now());
        let tat = self.shard(key).get(&key).copied();
        match tat {
            Some(tat) => self.owed(tat, now).map(|_| ()),
            None => Ok(()),
        }
    }

    /// A key's shard, locked.
    fn shard(&self, key: u64) -> std::sync::MutexGuard<'_, Shard> {
        self.shards[(key >> 60) as usize % SHARDS]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// GCRA: the credit one more request of a key whose theoretical arrival time is `tat` would
    /// owe now, or why it may not come (counted as limited).
    fn owed(&self, tat: u64, now: u64) -> Result<u64, Denied> {
        let owed = tat.max(now).saturating_add(self.quota.interval) - now;
        if owed <= self.quota.capacity {
            return Ok(owed);
        }
        self.limited.inc();
        Err(Denied {
            retry_after: (owed - self.quota.capacity).div_ceil(NANOS).max(1),
            per: self.per,
            quota: self.quota.burst,
            window: self.window,
        })
    }

    fn key(&self, identity: Option<&Identity>, peer: IpAddr) -> u64 {
        match (self.per, identity) {
            (Per::Subject, Some(i)) => self.hasher.hash_one(i.subject.as_bytes()),
            (Per::Session, Some(i)) => self.hasher.hash_one(i.session.as_str()),
            (Per::Client, Some(i)) => self.hasher.hash_one(i.client_id.as_deref()),
            (Per::ClientAddress, _) => self.hasher.hash_one(peer),
            // A route without identity never has a subject or session limit (validation).
            (Per::Route | Per::Subject | Per::Session | Per::Client, _) => 0,
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn check_key(&self, key: u64, now: u64) -> Result<Allowed, Denied> {
        let Quota {
            interval, capacity, ..
        } = self.quota;
        let mut map = self.shard(key);
        let tat = map.get(&key).copied().unwrap_or(now);
        let owed = self.owed(tat, now)?;
        if map.len() >= self.shard_cap && !map.contains_key(&key) {
            make_room(&mut map, now, self.shard_cap);
        }
        map.insert(key, now + owed);
        Ok(Allowed {
            remaining: (capacity - owed) / interval,
            reset: owed.div_ceil(NANOS),
        })
    }

    /// The `RateLimit` header of a response let through.
    pub fn state(&self, allowed: &Allowed) -> HeaderValue {
        state_header(self.per, allowed.remaining, allowed.reset)
    }

    /// Keys remembered now.
    pub fn keys(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|m| m.len()).unwrap_or(0))
            .sum()
    }
}

/// Frees a full shard: keys whose bucket is full again go first; if none, the half with the
/// most credit left.
fn make_room(map: &mut Shard, now: u64, cap: usize) {
    map.retain(|_, tat| *tat > now);
    if map.len() < cap {
        return;
    }
    let mut tats: Vec<u64> = map.values().copied().collect();
    let middle = tats.len() / 2;
    let (_, threshold, _) = tats.select_nth_unstable(middle);
    let threshold = *threshold;
    map.retain(|_, tat| *tat > threshold);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn limiter(rate: &str, burst: Option<u64>, max_keys: usize) -> RateLimiter {
        let config = RateLimitConfig {
            rate: rate.into(),
            burst,
            per: Per::Route,
            max_keys,
        };
        RateLimiter::new(&config, Counter::default()).unwrap()
    }

    #[test]
    fn rates_parse_and_bad_ones_are_named() {
        assert_eq!(parse_rate("100/s"), Some((100, NANOS)));
        assert_eq!(parse_rate(" 5 / min "), Some((5, 60 * NANOS)));
        assert_eq!(parse_rate("1/d"), Some((1, 86_400 * NANOS)));
        for bad in ["", "100", "0/s", "-1/s", "1/w", "x/s", "2000000000/s"] {
            assert_eq!(parse_rate(bad), None, "{bad}");
        }
        let config = |rate: &str, burst| RateLimitConfig {
            rate: rate.into(),
            burst,
            per: Per::Subject,
            max_keys: 10,
        };
        assert_eq!(config("1/x", None).validate().unwrap_err().key, "rate");
        assert_eq!(config("1/s", Some(0)).validate().unwrap_err().key, "burst");
        assert_eq!(
            config("1/d", Some(u64::MAX)).validate().unwrap_err().key,
            "burst"
        );
        assert!(config("100/s", Some(200)).validate().is_ok());
    }

    #[test]
    fn a_burst_then_the_steady_rate() {
        let l = limiter("10/s", Some(3), 100);
        let step = NANOS / 10;
        let now = 5 * NANOS;
        let left: Vec<u64> = (0..3)
            .map(|_| l.check_key(1, now).unwrap().remaining)
            .collect();
        assert_eq!(left, [2, 1, 0]);
        let denied = l.check_key(1, now).unwrap_err();
        assert_eq!(denied.retry_after, 1);
        assert_eq!((denied.quota, denied.window), (3, 1));
        // One interval later, exactly one more.
        assert!(l.check_key(1, now + step).is_ok());
        assert!(l.check_key(1, now + step).is_err());
        // Other keys have buckets of their own.
        assert!(l.check_key(2, now).is_ok());
        // After a quiet spell the bucket is full again, never fuller.
        let later = now + 10 * NANOS;
        assert_eq!(l.check_key(1, later).unwrap().remaining, 2);
        assert_eq!(l.limited.get(), 2);
    }

    #[test]
    fn peeking_counts_nothing() {
        let config = RateLimitConfig {
            rate: "1/h".into(),
            burst: Some(2),
            per: Per::ClientAddress,
            max_keys: 100,
        };
        let l = RateLimiter::new(&config, Counter::default()).unwrap();
        let peer = IpAddr::from([10, 0, 0, 1]);
        for _ in 0..5 {
            assert!(l.peek(None, peer).is_ok());
        }
        assert!(l.check(None, peer).is_ok());
        assert!(l.check(None, peer).is_ok());
        let denied = l.peek(None, peer).unwrap_err();
        assert!(denied.retry_after > 0);
        assert!(l.peek(None, IpAddr::from([10, 0, 0, 2])).is_ok());
    }

    #[test]
    fn retry_after_counts_whole_seconds_to_the_next_request() {
        let l = limiter("1/m", Some(2), 100);
        assert!(l.check_key(7, 0).is_ok());
        assert!(l.check_key(7, 0).is_ok());
        let denied = l.check_key(7, 0).unwrap_err();
        assert_eq!(denied.retry_after, 60);
        assert_eq!(denied.window, 120);
        let [policy, state] = denied.headers();
        assert_eq!(policy, "\"route\";q=2;w=120");
        assert_eq!(state, "\"route\";r=0;t=60");
        let later = l.check_key(7, 30 * NANOS).unwrap_err();
        assert_eq!(later.retry_after, 30);
    }

    #[test]
    fn memory_stays_bounded_under_many_keys() {
        let l = limiter("1/h", Some(1), 1_000);
        for key in 0..100_000u64 {
            let _ = l.check_key(key.wrapping_mul(0x9E37_79B9_7F4A_7C15), key);
        }
        assert!(l.keys() <= 1_000, "{} keys", l.keys());
        // A key that just spent its burst is still limited: the newest are kept.
        let key = 123_456_789u64.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        assert!(l.check_key(key, 100_000).is_ok());
        assert!(l.check_key(key, 100_001).is_err());
    }

    #[test]
    fn a_million_keys_through_a_default_limit_stay_within_max_keys() {
        let l = limiter("10/s", Some(10), default_max_keys());
        for key in 0..1_000_000u64 {
            let _ = l.check_key(key.wrapping_mul(0x9E37_79B9_7F4A_7C15), key);
        }
        // 100,000 keys of 16 bytes each (plus the maps' spare room): a few MiB at most.
        assert!(l.keys() <= default_max_keys(), "{} keys", l.keys());
    }

    #[test]
    fn refilled_keys_are_forgotten_first() {
        let l = limiter("10/s", Some(1), 16);
        for key in 0..16u64 {
            assert!(l.check_key(key << 60, 0).is_ok());
        }
        // A full shard, but its key refilled long ago: dropping it loses nothing.
        assert!(l.check_key((3 << 60) | 1, 10 * NANOS).is_ok());
        assert!(l.keys() <= 16);
    }
}
