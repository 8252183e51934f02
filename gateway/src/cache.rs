//! The token cache: turns a reference token into a verified identity. A hit never leaves the
//! process; concurrent misses of one token share one store read (coalescing), whose value token
//! is verified against the IdP's keys; a generation counter keeps a load that raced an
//! invalidation out of the cache.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::HeaderValue;
use moka::sync::Cache;
use tokengate_store::{
    AnyStore, ReferenceToken, SessionId, SessionKind, StoreError, TokenStore, UsageLog, Verifier,
    now_unix,
};
use tokio::sync::OnceCell;

use crate::config::CacheConfig;
use crate::jwks::Keys;
use crate::metrics::Metrics;

/// A valid session as the hot path needs it: headers built once, at load.
#[derive(Debug)]
pub struct Identity {
    pub session: SessionId,
    pub roles: Vec<String>,
    pub authorization: HeaderValue,
    pub subject: HeaderValue,
    pub roles_header: HeaderValue,
    pub session_header: HeaderValue,
    /// The last second a use was queued for reporting: a hot token takes the report queue's
    /// lock once a second, not once a request.
    last_use: AtomicU64,
}

#[derive(Clone, Debug)]
enum Cached {
    Valid(Arc<Identity>, Duration),
    /// Unknown, revoked or forged: remembered briefly so garbage cannot flood the store.
    Invalid(Duration),
}

/// The outcome of one store read, shared by every request that waited for it.
type Load = OnceCell<Result<Arc<Identity>, LookupError>>;

struct Ttl;

impl moka::Expiry<SessionId, Cached> for Ttl {
    fn expire_after_create(&self, _: &SessionId, value: &Cached, _: Instant) -> Option<Duration> {
        Some(match value {
            Cached::Valid(_, ttl) | Cached::Invalid(ttl) => *ttl,
        })
    }
}

/// Why a request's token does not pass.
#[derive(Clone, Debug, thiserror::Error)]
pub enum LookupError {
    #[error("no usable bearer token")]
    Invalid,
    #[error("token store unreachable")]
    Unavailable(#[source] Arc<StoreError>),
    #[error("signing keys not loaded yet")]
    NoKeys,
}

/// Counts invalidations, so that a load can tell whether one happened while it read the store:
/// what it read may then be stale already, and is not cached.
#[derive(Debug, Default)]
pub struct Generation(AtomicU64);

impl Generation {
    /// Taken before a load reads the store.
    pub fn current(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }

    /// Every invalidation moves the generation on.
    pub fn advance(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }

    /// Whether no invalidation happened since `taken`.
    pub fn unchanged_since(&self, taken: u64) -> bool {
        self.current() == taken
    }
}

pub struct TokenCache {
    cache: Cache<SessionId, Cached>,
    store: AnyStore,
    keys: Arc<Keys>,
    /// Loads under way: concurrent misses of one token wait for the same store read.
    inflight: Mutex<HashMap<SessionId, Arc<Load>>>,
    generation: Generation,
    pub usage: UsageLog,
    max_staleness: Duration,
    negative_ttl: Duration,
    /// `cache.enabled = false`: every request reads the store and verifies (for comparison).
    enabled: bool,
    metrics: Arc<Metrics>,
}

/// The name this gateway's last-use reports go under (the admin console lists active
/// gateways by it): the host, the process, and which gateway of the process.
fn reporter_name() -> String {
    static INSTANCES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = INSTANCES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "gateway".to_owned());
    let pid = std::process::id();
    match n {
        0 => format!("gateway {host} pid {pid}"),
        n => format!("gateway {host} pid {pid} #{}", n + 1),
    }
}

impl TokenCache {
    pub fn new(
        store: AnyStore,
        config: &CacheConfig,
        keys: Arc<Keys>,
        metrics: Arc<Metrics>,
    ) -> Self {
        TokenCache {
            cache: Cache::builder()
                .max_capacity(config.max_entries)
                .expire_after(Ttl)
                .build(),
            store,
            keys,
            inflight: Mutex::new(HashMap::new()),
            generation: Generation::default(),
            usage: UsageLog::reporting_as(reporter_name()),
            max_staleness: config.max_staleness,
            negative_ttl: config.negative_ttl,
            enabled: config.enabled,
            metrics,
        }
    }

    pub fn store(&self) -> &AnyStore {
        &self.store
    }

    /// Drops these sessions (revoked, or changed: the next request reloads them).
    pub fn invalidate(&self, ids: &[SessionId]) {
        self.generation.advance();
        for id in ids {
            self.cache.invalidate(id);
        }
    }

    /// Drops everything (events may have been missed).
    pub fn invalidate_all(&self) {
        self.generation.advance();
        self.cache.invalidate_all();
    }

    pub fn entry_count(&self) -> u64 {
        self.cache.entry_count()
    }

    /// The identity behind `Authorization` header value `authorization`.
    pub async fn authenticate(&self, authorization: &[u8]) -> Result<Arc<Identity>, LookupError> {
        let token = tokengate_store::bearer_credentials(authorization)
            .and_then(|t| ReferenceToken::parse(t).ok())
            .ok_or(LookupError::Invalid)?;
        let id = token.session_id();
        let cached = if self.enabled {
            self.cache.get(&id)
        } else {
            None
        };
        let identity = match cached {
            Some(Cached::Valid(identity, _)) => {
                self.metrics.cache_hits.inc();
                identity
            }
            Some(Cached::Invalid(_)) => {
                self.metrics.cache_negative_hits.inc();
                return Err(LookupError::Invalid);
            }
            None => {
                self.metrics.cache_misses.inc();
                if self.enabled {
                    self.load_once(id).await?
                } else {
                    // No cache, no sharing either: each request does its own read and check.
                    self.load(id).await?
                }
            }
        };
        let now = now_unix();
        if identity.last_use.swap(now, Ordering::Relaxed) != now {
            self.usage.record(&identity.session, now);
        }
        Ok(identity)
    }

    /// One store read for any number of concurrent misses of the same session.
    async fn load_once(&self, id: SessionId) -> Result<Arc<Identity>, LookupError> {
        let cell = self
            .inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id.clone())
            .or_default()
            .clone();
        let result = cell.get_or_init(|| self.load(id.clone())).await.clone();
        let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        if inflight.get(&id).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
            inflight.remove(&id);
        }
        result
    }

    async fn load(&self, id: SessionId) -> Result<Arc<Identity>, LookupError> {
        let verifier = self.keys.verifier().ok_or(LookupError::NoKeys)?;
        let generation = self.generation.current();
        let found = self.store.lookup(&id).await.map_err(|e| {
            self.metrics.store_errors.inc();
            LookupError::Unavailable(Arc::new(e))
        })?;
        // Only an access session's token is a bearer token (never a browser session's cookie).
        let found = found.filter(|session| session.kind == SessionKind::Access);
        let mut verifier = verifier;
        if let Some(session) = &found
            && let Ok(kid) = Verifier::key_id(session.value_token.expose())
            && !verifier.knows(&kid)
        {
            // Perhaps the IdP rotated its keys since we last looked.
            if let Err(e) = self.keys.refresh(true).await {
                tracing::warn!(error = %e, "fetching signing keys for an unknown key id failed");
            }
            verifier = self.keys.verifier().ok_or(LookupError::NoKeys)?;
        }
        let result = found.and_then(|session| {
            let claims = match verifier.verify(session.value_token.expose()) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(session = %session.id, error = %e, "value token from the store failed verification");
                    return None;
                }
            };
            if claims.sid != session.id.as_str() || claims.sub != session.subject {
                tracing::warn!(session = %session.id, "value token does not belong to its session");
                return None;
            }
            let left = session.expires_at().saturating_sub(now_unix());
            let ttl = self.max_staleness.min(Duration::from_secs(left));
            let header = |s: &str| HeaderValue::from_bytes(s.as_bytes()).ok();
            let identity = Identity {
                authorization: header(&format!("Bearer {}", session.value_token.expose()))?,
                subject: header(&claims.sub)?,
                roles_header: header(&claims.roles.join(","))?,
                session_header: header(session.id.as_str())?,
                roles: claims.roles,
                session: session.id,
                last_use: AtomicU64::new(0),
            };
            Some((Arc::new(identity), ttl))
        });
        let unchanged = self.enabled && self.generation.unchanged_since(generation);
        match result {
            Some((identity, ttl)) => {
                if unchanged {
                    self.cache.insert(id, Cached::Valid(identity.clone(), ttl));
                }
                Ok(identity)
            }
            None => {
                if unchanged {
                    self.cache.insert(id, Cached::Invalid(self.negative_ttl));
                }
                Err(LookupError::Invalid)
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_generation_taken_before_an_invalidation_is_stale_after_it() {
        let g = Generation::default();
        let before = g.current();
        assert!(g.unchanged_since(before));
        g.advance();
        assert!(!g.unchanged_since(before));
        let after = g.current();
        assert!(g.unchanged_since(after));
    }
}
