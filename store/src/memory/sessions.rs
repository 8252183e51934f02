//! Sessions: read by id, created, revoked, listed and given new roles; the roles an
//! administrator set for a subject.

use super::{MemoryStore, SWEEP_EVERY};
use crate::{
    Event, Session, SessionAdmin, SessionId, SessionRead, StoreError, ValueToken, now_unix,
};

impl SessionRead for MemoryStore {
    async fn lookup(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        Ok(self.state().live(id, now_unix()).map(|s| s.clone()))
    }
}

impl SessionAdmin for MemoryStore {
    async fn create(&self, session: &Session) -> Result<(), StoreError> {
        let mut state = self.state();
        state.creations += 1;
        if state.creations.is_multiple_of(SWEEP_EVERY) {
            state.sweep(now_unix());
        }
        state
            .by_subject
            .entry(session.subject.clone())
            .or_default()
            .insert(session.id);
        state.schedule(&session.id, session.value_token.renewal_due());
        state.sessions.insert(session.id, session.clone());
        Ok(())
    }

    async fn revoke(&self, id: &SessionId) -> Result<bool, StoreError> {
        let mut state = self.state();
        let existed = state.live(id, now_unix()).is_some();
        if existed {
            state.remove(id);
            self.publish(&mut state, Event::Revoked { session: *id });
        }
        Ok(existed)
    }

    async fn revoke_subject(&self, subject: &str) -> Result<Vec<SessionId>, StoreError> {
        let now = now_unix();
        let mut state = self.state();
        let ids: Vec<SessionId> = state
            .by_subject
            .get(subject)
            .map(|ids| ids.iter().cloned().collect())
            .unwrap_or_default();
        let mut live = Vec::with_capacity(ids.len());
        for id in &ids {
            if state.live(id, now).is_some() {
                live.push(*id);
            }
            state.remove(id);
        }
        if !ids.is_empty() {
            let event = Event::SubjectRevoked {
                subject: subject.to_owned(),
                sessions: ids,
            };
            self.publish(&mut state, event);
        }
        Ok(live)
    }

    async fn sessions(&self, subject: &str) -> Result<Vec<Session>, StoreError> {
        let now = now_unix();
        let mut state = self.state();
        let ids: Vec<SessionId> = state
            .by_subject
            .get(subject)
            .map(|ids| ids.iter().cloned().collect())
            .unwrap_or_default();
        Ok(ids
            .iter()
            .filter_map(|id| state.live(id, now).map(|s| s.clone()))
            .collect())
    }

    async fn update_sessions(
        &self,
        updates: &[(SessionId, Vec<String>, ValueToken)],
    ) -> Result<usize, StoreError> {
        let now = now_unix();
        let mut state = self.state();
        let mut updated = Vec::with_capacity(updates.len());
        for (id, roles, token) in updates {
            if let Some(session) = state.live(id, now) {
                session.roles = roles.clone();
                session.value_token = token.clone();
                state.schedule(id, token.renewal_due());
                updated.push(*id);
            }
        }
        let count = updated.len();
        if count > 0 {
            self.publish(&mut state, Event::RolesChanged { sessions: updated });
        }
        Ok(count)
    }

    async fn subject_roles(&self, subject: &str) -> Result<Option<Vec<String>>, StoreError> {
        Ok(self.state().roles.get(subject).cloned())
    }

    async fn set_subject_roles(&self, subject: &str, roles: &[String]) -> Result<(), StoreError> {
        self.state()
            .roles
            .insert(subject.to_owned(), roles.to_vec());
        Ok(())
    }

    async fn clear_subject_roles(&self, subject: &str) -> Result<bool, StoreError> {
        Ok(self.state().roles.remove(subject).is_some())
    }
}
