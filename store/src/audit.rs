//! The audit trail of administrators' actions, and the gateways seen through their last-use
//! reports: both small, bounded records the admin console shows.

/// Audit entries kept unless the store is told otherwise; the oldest go first.
pub const DEFAULT_AUDIT_MAX_LEN: usize = 10_000;
/// Most entries one page of [`crate::AuditTrail::audit`] returns.
pub const MAX_AUDIT_PAGE: usize = 1000;
/// Most reporters remembered; past it, the one seen longest ago is forgotten.
pub const MAX_REPORTERS: usize = 1000;

/// One administrator's action. Times are Unix seconds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditEntry {
    /// Given by the store when the entry is appended (ignored on append); pages are cut here.
    pub id: String,
    /// Unix seconds.
    pub at: u64,
    /// Who: `admin-token`, or `console:<username>`.
    pub actor: String,
    /// What, e.g. `user.create`, `session.revoke`, `user.logout`, `user.roles`.
    pub action: String,
    /// On whom or what: a username or a session id.
    pub target: String,
    /// The client address the request came from; empty when unknown.
    pub address: String,
}

/// Entries newest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditPage {
    /// Newest first.
    pub entries: Vec<AuditEntry>,
    /// Where the next (older) page starts (pass it as `before`); `None` on the last page.
    pub next: Option<String>,
}

/// A process that reported last use (a gateway, or an IdP answering `/auth/verify`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reporter {
    /// The reporter (a gateway replica) by its name.
    pub name: String,
    /// When its newest report was written (Unix seconds).
    pub last_seen: u64,
}
