//! Sessions: read by id, created, revoked, listed and given new roles; the roles an
//! administrator set for a subject.

use redis::Value;

use super::RedisStore;
use super::schema::{decode_session, session_fields};
use crate::{
    Event, Session, SessionAdmin, SessionId, SessionRead, StoreError, ValueToken, now_unix,
};

impl SessionRead for RedisStore {
    async fn lookup(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        let mut con = self.con.clone();
        let fields: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(self.shared.keys.session(id))
            .query_async(&mut con)
            .await
            .map_err(StoreError::unavailable)?;
        if fields.is_empty() {
            return Ok(None);
        }
        let session = decode_session(*id, fields).ok_or(StoreError::Corrupt { what: "session" })?;
        Ok(session.is_live(now_unix()).then_some(session))
    }
}

impl SessionAdmin for RedisStore {
    async fn create(&self, s: &Session) -> Result<(), StoreError> {
        let fields = session_fields(s).map_err(|_| StoreError::Corrupt { what: "roles" })?;
        let mut con = self.con.clone();
        // Indexes first: a session that exists is always reachable by a forced logout, and
        // always in the renewal schedule.
        self.schedule([(&s.id, &s.value_token)]).await?;
        self.shared
            .scripts
            .index_add
            .key(self.shared.keys.subject(&s.subject, "sessions"))
            .arg(s.id.as_str())
            .arg(s.max_expires_at)
            .arg(now_unix())
            .invoke_async::<Value>(&mut con)
            .await
            .map_err(StoreError::unavailable)?;
        self.shared
            .scripts
            .create
            .key(self.shared.keys.session(&s.id))
            .arg(s.expires_at())
            .arg(fields)
            .invoke_async::<Value>(&mut con)
            .await
            .map_err(StoreError::unavailable)?;
        Ok(())
    }

    async fn revoke(&self, id: &SessionId) -> Result<bool, StoreError> {
        let mut con = self.con.clone();
        let subject: Option<String> = self
            .shared
            .scripts
            .revoke
            .key(self.shared.keys.session(id))
            .invoke_async(&mut con)
            .await
            .map_err(StoreError::unavailable)?;
        let Some(subject) = subject else {
            return Ok(false);
        };
        self.publish(&Event::Revoked { session: *id }).await?;
        let keys = &self.shared.keys;
        let unindex = [
            Self::unindex(&keys.subject(&subject, "sessions"), [id.as_str()]),
            Self::unindex(&keys.renewal, [id.as_str()]),
        ];
        let _: Vec<Value> = self
            .con
            .query_each(&unindex)
            .await
            .map_err(StoreError::unavailable)?;
        Ok(true)
    }

    async fn revoke_subject(&self, subject: &str) -> Result<Vec<SessionId>, StoreError> {
        let index = self.shared.keys.subject(subject, "sessions");
        let mut con = self.con.clone();
        let ids: Vec<String> = redis::cmd("ZRANGE")
            .arg(&index)
            .arg(0)
            .arg(-1)
            .query_async(&mut con)
            .await
            .map_err(StoreError::unavailable)?;
        let ids: Vec<SessionId> = ids.iter().filter_map(|s| SessionId::parse(s)).collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // Delete, then announce, then unindex: after a failure part-way, a retry finds the
        // same ids in the index and announces them again (harmless), so none is forgotten.
        let deletes = self.on_each_session("DEL", &ids);
        let deleted: Vec<i64> = self
            .con
            .query_each(&deletes)
            .await
            .map_err(StoreError::unavailable)?;
        self.publish(&Event::SubjectRevoked {
            subject: subject.to_owned(),
            sessions: ids.clone(),
        })
        .await?;
        let unindex = [
            Self::unindex(&index, ids.iter().map(SessionId::as_str)),
            Self::unindex(&self.shared.keys.renewal, ids.iter().map(SessionId::as_str)),
        ];
        let _: Vec<Value> = self
            .con
            .query_each(&unindex)
            .await
            .map_err(StoreError::unavailable)?;
        Ok(ids
            .into_iter()
            .zip(deleted)
            .filter(|(_, n)| *n == 1)
            .map(|(id, _)| id)
            .collect())
    }

    async fn sessions(&self, subject: &str) -> Result<Vec<Session>, StoreError> {
        let index = self.shared.keys.subject(subject, "sessions");
        let mut con = self.con.clone();
        let ids: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(&index)
            .arg(format!("({}", now_unix()))
            .arg("+inf")
            .query_async(&mut con)
            .await
            .map_err(StoreError::unavailable)?;
        let ids: Vec<SessionId> = ids.iter().filter_map(|s| SessionId::parse(s)).collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let reads = self.on_each_session("HGETALL", &ids);
        let records: Vec<Vec<(String, String)>> = self
            .con
            .query_each(&reads)
            .await
            .map_err(StoreError::unavailable)?;
        let now = now_unix();
        let mut sessions = Vec::with_capacity(ids.len());
        let mut ended = Vec::new();
        for (id, fields) in ids.into_iter().zip(records) {
            if fields.is_empty() {
                ended.push(id);
                continue;
            }
            match decode_session(id, fields) {
                Some(s) if s.is_live(now) => sessions.push(s),
                Some(_) => ended.push(id),
                None => return Err(StoreError::Corrupt { what: "session" }),
            }
        }
        if !ended.is_empty() {
            // Idle-expired sessions leave their index entry behind; tidy up on the way.
            let _: Value = redis::cmd("ZREM")
                .arg(&index)
                .arg(ended.iter().map(SessionId::as_str).collect::<Vec<_>>())
                .query_async(&mut con)
                .await
                .map_err(StoreError::unavailable)?;
        }
        Ok(sessions)
    }

    async fn update_sessions(
        &self,
        updates: &[(SessionId, Vec<String>, ValueToken)],
    ) -> Result<usize, StoreError> {
        if updates.is_empty() {
            return Ok(0);
        }
        let encoded = updates
            .iter()
            .map(|(_, roles, _)| serde_json::to_string(roles))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| StoreError::Corrupt { what: "roles" })?;
        let done: Vec<i64> = self
            .eval_each(&self.shared.scripts.update, |sha| {
                updates
                    .iter()
                    .zip(&encoded)
                    .map(|((id, _, token), roles)| {
                        let mut cmd = redis::cmd("EVALSHA");
                        cmd.arg(sha)
                            .arg(1)
                            .arg(self.shared.keys.session(id))
                            .arg(roles)
                            .arg(token.expose());
                        cmd
                    })
                    .collect()
            })
            .await?;
        let updated: Vec<&(SessionId, Vec<String>, ValueToken)> = updates
            .iter()
            .zip(&done)
            .filter(|(_, n)| **n == 1)
            .map(|(update, _)| update)
            .collect();
        let count = updated.len();
        if count > 0 {
            let sessions = updated.iter().map(|(id, _, _)| *id).collect();
            self.publish(&Event::RolesChanged { sessions }).await?;
            self.schedule(updated.iter().map(|(id, _, token)| (id, token)))
                .await?;
        }
        Ok(count)
    }

    async fn subject_roles(&self, subject: &str) -> Result<Option<Vec<String>>, StoreError> {
        let mut con = self.con.clone();
        let raw: Option<String> = redis::cmd("GET")
            .arg(self.shared.keys.subject(subject, "roles"))
            .query_async(&mut con)
            .await
            .map_err(StoreError::unavailable)?;
        raw.map(|r| serde_json::from_str(&r).map_err(|_| StoreError::Corrupt { what: "roles" }))
            .transpose()
    }

    async fn set_subject_roles(&self, subject: &str, roles: &[String]) -> Result<(), StoreError> {
        let raw =
            serde_json::to_string(roles).map_err(|_| StoreError::Corrupt { what: "roles" })?;
        let mut con = self.con.clone();
        let _: Value = redis::cmd("SET")
            .arg(self.shared.keys.subject(subject, "roles"))
            .arg(raw)
            .query_async(&mut con)
            .await
            .map_err(StoreError::unavailable)?;
        Ok(())
    }

    async fn clear_subject_roles(&self, subject: &str) -> Result<bool, StoreError> {
        let mut con = self.con.clone();
        let removed: i64 = redis::cmd("DEL")
            .arg(self.shared.keys.subject(subject, "roles"))
            .query_async(&mut con)
            .await
            .map_err(StoreError::unavailable)?;
        Ok(removed == 1)
    }
}
