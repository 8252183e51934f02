//! The audit trail: who did what to whom, when, from where, for every administrator's action
//! through the admin API or the console. Kept in the token store (bounded), so every IdP
//! replica writes one trail.

use std::net::IpAddr;

use tokengate_store::{AuditEntry, AuditPage, AuditTrail, now_unix};

use crate::state::AppState;

/// Who acts, and from which address.
#[derive(Clone, Debug)]
pub struct Actor {
    /// `admin-token`, `console:<username>`, or `user:<username>` (on their own account).
    pub who: String,
    /// The connection's peer address; `None` outside a listener (tests).
    pub address: Option<IpAddr>,
}

impl Actor {
    /// A caller of the admin API, known by the admin token alone.
    pub fn admin_token(address: Option<IpAddr>) -> Self {
        Actor {
            who: "admin-token".to_owned(),
            address,
        }
    }

    /// A person acting on their own account (`user:<username>`), e.g. enrolling a second factor.
    pub fn user(username: &str, address: Option<IpAddr>) -> Self {
        Actor {
            who: format!("user:{username}"),
            address,
        }
    }

    /// A person signed in to the console.
    pub fn console(username: &str, address: Option<IpAddr>) -> Self {
        Actor {
            who: format!("console:{username}"),
            address,
        }
    }
}

/// Records an action that was done. A trail that cannot be written does not undo the action:
/// the log keeps the entry instead.
pub async fn record(state: &AppState, actor: &Actor, action: &str, target: &str) {
    let entry = AuditEntry {
        id: String::new(),
        at: now_unix(),
        actor: actor.who.clone(),
        action: action.to_owned(),
        target: target.to_owned(),
        address: actor.address.map(|a| a.to_string()).unwrap_or_default(),
    };
    if let Err(e) = state.store.append_audit(&entry).await {
        state.metrics.store_errors.inc();
        tracing::error!(error = %e, actor = %entry.actor, action, target, address = %entry.address, "writing the audit trail failed; the action was done");
    } else {
        tracing::info!(actor = %entry.actor, action, target, address = %entry.address, "audit");
    }
}

/// An audit page as `GET /admin/audit` shows it.
pub fn page_json(page: &AuditPage) -> serde_json::Value {
    let entries: Vec<_> = page
        .entries
        .iter()
        .map(|e| {
            serde_json::json!({
                "id": e.id,
                "time": e.at,
                "actor": e.actor,
                "action": e.action,
                "target": e.target,
                "address": (!e.address.is_empty()).then_some(&e.address),
            })
        })
        .collect();
    serde_json::json!({ "entries": entries, "next": page.next })
}
