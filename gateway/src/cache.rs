//! The token cache: turns a reference token into a verified identity. A hit never leaves the
//! process; concurrent misses of one token share one store read (coalescing), whose value token
//! is verified against the IdP's keys; a generation counter keeps a load that raced an
//! invalidation out of the cache. An entry never outlives its value token: the IdP renews value
//! tokens in the store without an event, and the entry's end makes the gateway read the
//! renewed one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::HeaderValue;
use moka::sync::Cache;
use tokengate_store::{
    AnyStore, Claims, EXPIRY_MARGIN, ReferenceToken, Session, SessionId, SessionKind, SessionRead,
    StoreError, UsageLog, Verifier, now_unix,
};
use tokio::sync::OnceCell;

use crate::config::CacheConfig;
use crate::jwks::Keys;
use crate::metrics::Metrics;

/// A valid session as the hot path needs it: headers built once, at load. Its `Debug` never
/// shows the value token.
pub struct Identity {
    /// The session the reference token names; the key of this cache.
    pub session: SessionId,
    /// The value token's `roles` claim, checked against the route's `roles`.
    pub roles: Vec<String>,
    /// `Bearer {value token}`: the `Authorization` the upstream gets instead of the reference
    /// token.
    pub authorization: HeaderValue,
    /// `X-Auth-Subject`: the `sub` claim.
    pub subject: HeaderValue,
    /// `X-Auth-Roles`: the roles, comma-separated.
    pub roles_header: HeaderValue,
    /// `X-Auth-Session`: the session id.
    pub session_header: HeaderValue,
    /// The client the session was issued to, if one was named.
    pub client_id: Option<String>,
    /// The last second a use was queued for reporting: a hot token takes the report queue's
    /// lock once a second, not once a request.
    last_use: AtomicU64,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("session", &self.session)
            .field("roles", &self.roles)
            .field("authorization", &"<redacted>")
            .field("subject", &self.subject)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// How long a session whose value token expired is answered 503 from the cache before the store
/// is read again (for the IdP's renewal).
const EXPIRED_RETRY: Duration = Duration::from_secs(1);

#[derive(Clone, Debug)]
enum Cached {
    Valid(Arc<Identity>, Duration),
    /// Unknown, revoked or forged: remembered briefly so garbage cannot flood the store.
    Invalid(Duration),
    /// Live, but its value token expired (the IdP is down longer than a token lasts).
    Expired(Duration),
}

/// What one store read found.
enum Found {
    Valid(Arc<Identity>, Duration),
    Invalid,
    Expired,
}

/// The outcome of one store read, shared by every request that waited for it.
type Load = OnceCell<Result<Arc<Identity>, LookupError>>;

struct Ttl;

impl moka::Expiry<SessionId, Cached> for Ttl {
    fn expire_after_create(&self, _: &SessionId, value: &Cached, _: Instant) -> Option<Duration> {
        Some(match value {
            Cached::Valid(_, ttl) | Cached::Invalid(ttl) | Cached::Expired(ttl) => *ttl,
        })
    }
}

/// Why a request's token does not pass.
#[derive(Clone, Debug, thiserror::Error)]
pub enum LookupError {
    /// Malformed, unknown, revoked or failing verification: 401 `invalid_token`.
    #[error("no usable bearer token")]
    Invalid,
    /// The store could not be read for an uncached token: 503.
    #[error("token store unreachable")]
    Unavailable(#[source] Arc<StoreError>),
    /// The IdP's signing keys were never loaded, so no value token can be verified: 503.
    #[error("signing keys not loaded yet")]
    NoKeys,
    /// The session is live, but the IdP has not renewed its value token: "cannot validate
    /// now" (503), not "invalid" (401), so that the client keeps its token.
    #[error("the session's value token expired")]
    Expired,
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

/// A duration as whole milliseconds, saturating.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Reference token → verified identity, shared by the request path, the admin listener and
/// the sync task; an entry lives at most `cache.max_staleness`, and an event drops it at once.
pub struct TokenCache {
    cache: Cache<SessionId, Cached>,
    store: AnyStore,
    keys: Arc<Keys>,
    /// Loads under way: concurrent misses of one token wait for the same store read.
    inflight: Mutex<HashMap<SessionId, Arc<Load>>>,
    generation: Generation,
    /// Last uses waiting to be reported; the sync task flushes it every `sync.interval`.
    pub usage: UsageLog,
    /// `cache.max_staleness` and `cache.negative_ttl` in milliseconds; a reload may change them
    /// (entries cached before keep the TTL they were given).
    max_staleness: AtomicU64,
    negative_ttl: AtomicU64,
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
    /// Built once per gateway in `Gateway::bind`; a reload keeps it, entries and all.
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
            max_staleness: AtomicU64::new(millis(config.max_staleness)),
            negative_ttl: AtomicU64::new(millis(config.negative_ttl)),
            enabled: config.enabled,
            metrics,
        }
    }

    /// Takes `max_staleness` and `negative_ttl` from `config` for the entries cached from now
    /// on (a reload).
    pub fn set_ttls(&self, config: &CacheConfig) {
        let store = |slot: &AtomicU64, d: Duration| slot.store(millis(d), Ordering::Relaxed);
        store(&self.max_staleness, config.max_staleness);
        store(&self.negative_ttl, config.negative_ttl);
    }

    /// The store behind the cache, for the sync task's event reads and the browser's session
    /// lookups.
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

    /// Approximate (moka counts lazily): for the `tokengate_cache_entries` gauge.
    pub fn entry_count(&self) -> u64 {
        self.cache.entry_count()
    }

    /// The identity behind `Authorization` header value `authorization`.
    pub async fn authenticate(&self, authorization: &[u8]) -> Result<Arc<Identity>, LookupError> {
        let token =
            tokengate_store::bearer_credentials(authorization).ok_or(LookupError::Invalid)?;
        self.authenticate_token(token).await
    }

    /// The identity behind a reference token given as text (a browser session's cookie).
    pub async fn authenticate_token(&self, token: &str) -> Result<Arc<Identity>, LookupError> {
        ReferenceToken::check(token).map_err(|_| LookupError::Invalid)?;
        let id = SessionId::of_token_text(token);
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
            Some(Cached::Expired(_)) => {
                self.metrics.value_tokens_expired.inc();
                return Err(LookupError::Expired);
            }
            None => {
                self.metrics.cache_misses.inc();
                // Boxed: a store read's future is large, and a hit (every request but the
                // first of a token) would otherwise carry its room and copy it along.
                if self.enabled {
                    Box::pin(self.load_once(id)).await?
                } else {
                    // No cache, no sharing either: each request does its own read and check.
                    Box::pin(self.load(id)).await?
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
            .entry(id)
            .or_default()
            .clone();
        let result = cell.get_or_init(|| self.load(id)).await.clone();
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
        let found = match found {
            Some(session) => self.check(session, &verifier),
            None => Found::Invalid,
        };
        let unchanged = self.enabled && self.generation.unchanged_since(generation);
        let (cached, result) = match found {
            Found::Valid(identity, ttl) => (Cached::Valid(identity.clone(), ttl), Ok(identity)),
            Found::Invalid => (
                Cached::Invalid(Duration::from_millis(
                    self.negative_ttl.load(Ordering::Relaxed),
                )),
                Err(LookupError::Invalid),
            ),
            Found::Expired => {
                self.metrics.value_tokens_expired.inc();
                (Cached::Expired(EXPIRED_RETRY), Err(LookupError::Expired))
            }
        };
        if unchanged {
            self.cache.insert(id, cached);
        }
        result
    }

    /// A session read from the store, checked: its value token must be the IdP's, for this
    /// session, and not about to expire. An expired one the IdP will still renew means "cannot
    /// validate now" (503), any other "invalid" (401).
    fn check(&self, session: Session, verifier: &Verifier) -> Found {
        let claims = match verifier.verify_allowing_expired(session.value_token.expose()) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(session = %session.id, error = %e, "value token from the store failed verification");
                return Found::Invalid;
            }
        };
        if claims.sid != session.id.as_str() || claims.sub != session.subject {
            tracing::warn!(session = %session.id, "value token does not belong to its session");
            return Found::Invalid;
        }
        let now = now_unix();
        // Seconds the value token may still be forwarded for.
        let usable = claims.exp.saturating_sub(now + EXPIRY_MARGIN);
        if usable == 0 {
            if claims.renewable(session.idle_timeout, now) {
                tracing::debug!(session = %session.id, "value token expired; the IdP has not renewed it");
                return Found::Expired;
            }
            tracing::warn!(session = %session.id, "value token expired too long ago to be renewed");
            return Found::Invalid;
        }
        let ttl = Duration::from_millis(self.max_staleness.load(Ordering::Relaxed))
            .min(Duration::from_secs(
                session.expires_at().saturating_sub(now),
            ))
            .min(Duration::from_secs(usable));
        match Identity::new(session, claims) {
            Some(identity) => Found::Valid(Arc::new(identity), ttl),
            None => Found::Invalid,
        }
    }
}

impl Identity {
    /// The identity of a session whose value token was verified to `claims`; `None` if a value
    /// cannot travel in a header.
    fn new(session: Session, claims: Claims) -> Option<Self> {
        let header = |s: &str| HeaderValue::from_bytes(s.as_bytes()).ok();
        Some(Identity {
            authorization: header(&format!("Bearer {}", session.value_token.expose()))?,
            subject: header(&claims.sub)?,
            roles_header: header(&claims.roles.join(","))?,
            session_header: header(session.id.as_str())?,
            roles: claims.roles,
            client_id: session.client_id,
            session: session.id,
            last_use: AtomicU64::new(0),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use tokengate_idp::keys::KeySet;
    use tokengate_store::{MemoryStore, Renewal, SessionAdmin, TokenRenewal, ValueToken};

    use super::*;
    use crate::jwks::Jwks;

    /// A cache on an in-memory store that trusts `keys`, and a session in that store whose value
    /// token (signed by `signer`) expires at `exp`; returns the `Authorization` value to send.
    async fn cache_with_session(keys: &KeySet, signer: &KeySet, exp: u64) -> (TokenCache, String) {
        let store = MemoryStore::new();
        let jwks = Keys::new(Jwks::new("http://127.0.0.1:9/jwks", "tokengate").unwrap());
        jwks.set_verifier(Verifier::new(&keys.public_jwks().unwrap(), "tokengate"));
        let config = CacheConfig::default(); // max_staleness 60 s
        let metrics = Arc::new(Metrics::default());
        let cache = TokenCache::new(
            AnyStore::Memory(store.clone()),
            &config,
            Arc::new(jwks),
            metrics,
        );
        let token = ReferenceToken::generate();
        let mut session = tokengate_store::testing::suite::session("alice"); // idle timeout 600 s
        session.id = token.session_id();
        session.value_token = sign(signer, &session, exp);
        store.create(&session).await.unwrap();
        (cache, format!("Bearer {}", token.expose()))
    }

    fn sign(keys: &KeySet, session: &Session, exp: u64) -> ValueToken {
        let claims = Claims {
            iss: "tokengate".to_owned(),
            sub: session.subject.clone(),
            sid: session.id.to_string(),
            roles: session.roles.clone(),
            iat: now_unix(),
            exp,
            amr: Vec::new(),
        };
        ValueToken(keys.current().sign_jwt(&claims).unwrap())
    }

    #[tokio::test]
    async fn an_entry_ends_before_its_value_token_so_a_renewed_one_is_read() {
        let keys = KeySet::ephemeral().unwrap();
        // The token may be forwarded for one more second: so long is it cached, not 60 s.
        let (cache, auth) = cache_with_session(&keys, &keys, now_unix() + EXPIRY_MARGIN + 1).await;
        let first = cache.authenticate(auth.as_bytes()).await.unwrap();
        let session = cache.store().lookup(&first.session).await.unwrap().unwrap();
        let renewed = sign(&keys, &session, now_unix() + 300);
        let renewal = Renewal {
            session: session.id,
            replaces: session.value_token.clone(),
            token: renewed.clone(),
        };
        assert_eq!(
            cache
                .store()
                .replace_value_tokens(&[renewal])
                .await
                .unwrap(),
            1
        );
        let expected = format!("Bearer {}", renewed.expose());
        let shown = format!("{first:?}");
        assert!(
            !shown.contains(session.value_token.expose()) && shown.contains("<redacted>"),
            "an identity's Debug shows its value token: {shown}"
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let identity = cache.authenticate(auth.as_bytes()).await.unwrap();
            if identity.authorization == expected.as_str() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the renewed value token was never read"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test]
    async fn an_expired_value_token_means_cannot_validate_now_and_a_forged_or_outlived_one_invalid()
    {
        let keys = KeySet::ephemeral().unwrap();
        let (cache, auth) = cache_with_session(&keys, &keys, now_unix() - 10).await;
        for _ in 0..2 {
            // Read from the store, then answered from the cache.
            let e = cache.authenticate(auth.as_bytes()).await.unwrap_err();
            assert!(matches!(e, LookupError::Expired), "{e:?}");
        }
        // About to expire counts as expired: the backend would get it too late.
        let (cache, auth) = cache_with_session(&keys, &keys, now_unix() + EXPIRY_MARGIN).await;
        let e = cache.authenticate(auth.as_bytes()).await.unwrap_err();
        assert!(matches!(e, LookupError::Expired), "{e:?}");
        // Expired longer ago than the session can idle (600 s): it will never be renewed.
        let (cache, auth) = cache_with_session(&keys, &keys, now_unix() - 601).await;
        let e = cache.authenticate(auth.as_bytes()).await.unwrap_err();
        assert!(matches!(e, LookupError::Invalid), "{e:?}");
        let other = KeySet::ephemeral().unwrap();
        let (cache, auth) = cache_with_session(&keys, &other, now_unix() - 10).await;
        let e = cache.authenticate(auth.as_bytes()).await.unwrap_err();
        assert!(matches!(e, LookupError::Invalid), "{e:?}");
    }

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
