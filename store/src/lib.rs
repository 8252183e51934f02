//! The token store contract shared by the IdP (which writes it) and the gateways (which read it).
//!
//! * `traits`: what the store does, one trait per concern, so each consumer names only what it
//!   uses. The gateway: [`SessionRead`], [`EventStream`], [`UsageReport`]. The IdP, besides:
//!   [`SessionAdmin`], [`TokenRenewal`], [`UserDirectory`], [`Codes`], [`PendingSignIns`],
//!   [`Deliveries`], [`LoginThrottle`], [`AuditTrail`], [`Health`]. [`TokenStore`] is all of them at once.
//! * `any`: [`AnyStore`], the implementation chosen from the configuration, dispatching each trait.
//! * `token`: reference tokens and the session ids derived from their hash (the store never sees
//!   a reference token in clear).
//! * `record`: what a session holds and when it expires; a value token's renewal.
//! * `user`: users kept in the store (the IdP's directory), listed in pages by name.
//! * `code`: authorization codes, kept under their hash and redeemed once.
//! * `claims`: the value token's claims and their verification (the store alone cannot mint).
//! * `event`: revocations and role changes, delivered at least once, with gap detection.
//! * `redis`: the Redis implementation: its key schema and scripts (`redis/schema.rs`, the only
//!   place that knows them), connections per topology, the event stream, and one file per trait
//!   (`redis/sessions.rs`, `redis/users.rs`, ...).
//! * `memory`: the in-memory implementation, the embedded default of `tokengate dev`; one state
//!   behind one lock (`memory/mod.rs`) and one file per trait, named as in `redis/`.
//! * `usage`: last-use reports, coalesced and written in batches.
//! * `audit`: the bounded audit trail of administrators' actions, and who reported last use.
//! * `config`: the `[store]` section both services share, and `StoreConfigError`, which names the
//!   key (a service adds its file and section).
//! * `error`: what callers see go wrong; no driver type in it (the driver's error stays opaque
//!   inside `DriverError`, for logs).
//!
//! Both implementations pass one contract suite (`testing::suite`, one file per concern), run
//! against memory, one Redis server, a Sentinel group and a Redis Cluster by `contract`.

#![warn(missing_docs)]

mod any;
mod audit;
mod claims;
mod code;
mod config;
mod error;
mod event;
mod memory;
mod record;
mod redis;
mod token;
mod traits;
mod usage;
mod user;

#[cfg(any(test, feature = "testing"))]
#[allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]
pub mod testing;

use std::time::{SystemTime, UNIX_EPOCH};

pub use any::AnyStore;
pub use audit::{
    AuditEntry, AuditPage, DEFAULT_AUDIT_MAX_LEN, MAX_AUDIT_PAGE, MAX_REPORTERS, Reporter,
};
pub use claims::{Claims, EXPIRY_MARGIN, Verifier, VerifyError};
pub use code::{AuthCode, Redeemed};
pub use config::{StoreConfig, StoreConfigError, StoreMode};
pub use error::{DriverError, StoreError};
pub use event::{Event, EventBatch, EventCursor};
pub use memory::MemoryStore;
pub use record::{Renewal, Session, SessionKind, ValueToken};
pub use redis::{RedisOptions, RedisStore};
pub use token::{CodeId, ReferenceToken, SessionId, TokenFormatError, bearer_credentials};
pub use traits::{
    AuditTrail, Codes, Deliveries, EventStream, Health, LoginThrottle, Notes, PendingSignIns,
    SessionAdmin, SessionRead, TokenRenewal, TokenStore, UsageReport, UserDirectory,
};
pub use usage::UsageLog;
pub use user::{
    Changed, Claimed, MAX_CHANGE_ATTEMPTS, MAX_PASSKEYS, MAX_USERNAME_LEN, MAX_USERS_PAGE, Passkey,
    Replaced, User, UserPage, change_user,
};

/// The most deliveries ([`Deliveries`]) the store queues at once.
pub const MAX_DELIVERIES: usize = 100_000;

/// Seconds since the Unix epoch, the unit of every time in the store.
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod contract;
