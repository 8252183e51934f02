//! The audit trail of administrators' actions.

use super::MemoryStore;
use crate::user::cut_page;
use crate::{AuditEntry, AuditPage, AuditTrail, MAX_AUDIT_PAGE, StoreError};

impl AuditTrail for MemoryStore {
    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let mut state = self.state();
        state.audit_seq += 1;
        let seq = state.audit_seq;
        state.audit.push_back((
            seq,
            AuditEntry {
                id: seq.to_string(),
                ..entry.clone()
            },
        ));
        while state.audit.len() > self.inner.audit_max_len {
            state.audit.pop_front();
        }
        Ok(())
    }

    async fn audit(&self, before: Option<&str>, limit: usize) -> Result<AuditPage, StoreError> {
        let before = match before {
            Some(b) => b.parse::<u64>().map_err(|_| StoreError::Invalid {
                what: "audit cursor",
            })?,
            None => u64::MAX,
        };
        let limit = limit.clamp(1, MAX_AUDIT_PAGE);
        let state = self.state();
        let mut entries: Vec<AuditEntry> = state
            .audit
            .iter()
            .rev()
            .filter(|(seq, _)| *seq < before)
            .take(limit + 1)
            .map(|(_, e)| e.clone())
            .collect();
        let next = cut_page(&mut entries, limit, |e| e.id.as_str());
        Ok(AuditPage { entries, next })
    }
}
