//! Issuing sessions: a reference token for the client, a signed value token for the store.

use std::sync::Arc;

use tokengate_store::{
    AnyStore, Claims, ReferenceToken, Session, StoreError, TokenStore, ValueToken, Verifier,
    now_unix,
};

use crate::keys::{KeyError, KeySet};

#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// A session just created, with the token to hand to its owner.
#[derive(Debug)]
pub struct Issued {
    pub token: ReferenceToken,
    pub session: Session,
}

/// Creates sessions and (re)signs their value tokens.
#[derive(Debug)]
pub struct Issuer {
    store: AnyStore,
    keys: Arc<KeySet>,
    verifier: Verifier,
    issuer: String,
    idle_timeout: u64,
    max_lifetime: u64,
}

impl Issuer {
    pub fn new(
        store: AnyStore,
        keys: Arc<KeySet>,
        issuer: &str,
        idle_timeout: u64,
        max_lifetime: u64,
    ) -> Result<Self, KeyError> {
        let verifier = Verifier::new(&keys.public_jwks()?, issuer);
        Ok(Issuer {
            store,
            keys,
            verifier,
            issuer: issuer.to_owned(),
            idle_timeout,
            max_lifetime,
        })
    }

    fn sign(&self, session: &Session) -> Result<ValueToken, KeyError> {
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: session.subject.clone(),
            sid: session.id.to_string(),
            roles: session.roles.clone(),
            iat: session.created_at,
            exp: session.max_expires_at,
        };
        Ok(ValueToken(self.keys.current().sign_jwt(&claims)?))
    }

    /// A new session for `subject` with `roles`, stored before the token is returned.
    pub async fn issue(&self, subject: &str, roles: Vec<String>) -> Result<Issued, IssueError> {
        let token = ReferenceToken::generate();
        let now = now_unix();
        let mut session = Session {
            id: token.session_id(),
            subject: subject.to_owned(),
            roles,
            value_token: ValueToken(String::new()),
            created_at: now,
            last_used_at: now,
            idle_timeout: self.idle_timeout,
            max_expires_at: now + self.max_lifetime,
        };
        session.value_token = self.sign(&session)?;
        self.store.create(&session).await?;
        Ok(Issued { token, session })
    }

    /// The roles a subject logs in with: an administrator's choice over the configured ones.
    pub async fn roles_of(
        &self,
        subject: &str,
        configured: &[String],
    ) -> Result<Vec<String>, StoreError> {
        Ok(self
            .store
            .subject_roles(subject)
            .await?
            .unwrap_or_else(|| configured.to_vec()))
    }

    /// Gives a subject new roles: future logins and every live session (re-signed).
    /// Returns how many live sessions changed.
    pub async fn set_roles(&self, subject: &str, roles: &[String]) -> Result<usize, IssueError> {
        self.store.set_subject_roles(subject, roles).await?;
        let mut updates = Vec::new();
        for mut session in self.store.sessions(subject).await? {
            session.roles = roles.to_vec();
            let token = self.sign(&session)?;
            updates.push((session.id, session.roles, token));
        }
        Ok(self.store.update_sessions(&updates).await?)
    }

    /// The live session a reference token opens, with its value token verified: a record
    /// written into the store by anyone but the IdP does not pass.
    pub async fn resolve(&self, token: &str) -> Result<Option<Session>, StoreError> {
        let Ok(token) = ReferenceToken::parse(token) else {
            return Ok(None);
        };
        let Some(session) = self.store.lookup(&token.session_id()).await? else {
            return Ok(None);
        };
        match self.verifier.verify(session.value_token.expose()) {
            Ok(claims) if claims.sid == session.id.as_str() && claims.sub == session.subject => {
                Ok(Some(session))
            }
            Ok(_) => {
                tracing::warn!(session = %session.id, "value token does not match its session");
                Ok(None)
            }
            Err(e) => {
                tracing::warn!(session = %session.id, error = %e, "value token failed verification");
                Ok(None)
            }
        }
    }
}
