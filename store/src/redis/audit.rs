//! The audit trail of administrators' actions.

use redis::Value;

use super::RedisStore;
use crate::user::cut_page;
use crate::{AuditEntry, AuditPage, AuditTrail, MAX_AUDIT_PAGE, StoreError};

impl AuditTrail for RedisStore {
    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let mut con = self.con.clone();
        let _: Value = redis::cmd("XADD")
            .arg(&self.shared.keys.audit)
            .arg("MAXLEN")
            .arg(self.shared.options.audit_max_len.max(1))
            .arg("*")
            .arg("at")
            .arg(entry.at)
            .arg("actor")
            .arg(&entry.actor)
            .arg("action")
            .arg(&entry.action)
            .arg("target")
            .arg(&entry.target)
            .arg("addr")
            .arg(&entry.address)
            .query_async(&mut con)
            .await
            .map_err(StoreError::unavailable)?;
        Ok(())
    }

    async fn audit(&self, before: Option<&str>, limit: usize) -> Result<AuditPage, StoreError> {
        let end = match before {
            Some(id) if is_stream_id(id) => format!("({id}"),
            Some(_) => {
                return Err(StoreError::Invalid {
                    what: "audit cursor",
                });
            }
            None => "+".to_owned(),
        };
        let limit = limit.clamp(1, MAX_AUDIT_PAGE);
        let mut con = self.con.clone();
        let raw: Vec<(String, Vec<(String, String)>)> = redis::cmd("XREVRANGE")
            .arg(&self.shared.keys.audit)
            .arg(end)
            .arg("-")
            .arg("COUNT")
            .arg(limit + 1)
            .query_async(&mut con)
            .await
            .map_err(StoreError::unavailable)?;
        let mut entries = raw
            .into_iter()
            .map(|(id, fields)| {
                let mut entry = AuditEntry {
                    id,
                    ..AuditEntry::default()
                };
                for (k, v) in fields {
                    match k.as_str() {
                        "at" => entry.at = v.parse().unwrap_or(0),
                        "actor" => entry.actor = v,
                        "action" => entry.action = v,
                        "target" => entry.target = v,
                        "addr" => entry.address = v,
                        _ => {}
                    }
                }
                entry
            })
            .collect();
        let next = cut_page(&mut entries, limit, |e| e.id.as_str());
        Ok(AuditPage { entries, next })
    }
}

/// Whether `id` has the shape of a stream entry id (`<ms>-<seq>`).
fn is_stream_id(id: &str) -> bool {
    id.split_once('-').is_some_and(|(ms, seq)| {
        [ms, seq]
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 20 && p.bytes().all(|b| b.is_ascii_digit()))
    })
}
