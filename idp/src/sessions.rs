//! Issuing sessions: a reference token for the client, a signed value token for the store.

use std::sync::Arc;

use tokengate_store::{
    AnyStore, Claims, ReferenceToken, Session, SessionKind, StoreError, TokenStore, ValueToken,
    Verifier, now_unix,
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

/// What a new session is: whose, with which roles, how it was obtained, for which client.
#[derive(Clone, Debug)]
pub struct NewSession {
    pub subject: String,
    pub roles: Vec<String>,
    /// `password`, `client_credentials`, `authorization_code`, `admin`, `upstream:NAME`.
    pub method: String,
    pub client_id: Option<String>,
    pub kind: SessionKind,
    /// Seconds of inactivity that end the session, when not the configured `tokens.idle_timeout`.
    pub idle_timeout: Option<u64>,
}

impl NewSession {
    /// An API session: its reference token is a bearer token.
    pub fn access(subject: &str, roles: Vec<String>, method: &str) -> Self {
        NewSession {
            subject: subject.to_owned(),
            roles,
            method: method.to_owned(),
            client_id: None,
            kind: SessionKind::Access,
            idle_timeout: None,
        }
    }

    /// The IdP's single-sign-on browser session, whose cookie is never a bearer token.
    pub fn browser(subject: &str, roles: Vec<String>, method: &str) -> Self {
        NewSession {
            kind: SessionKind::Browser,
            ..Self::access(subject, roles, method)
        }
    }

    /// Ended after `seconds` without use, instead of the configured idle timeout.
    pub fn idle_after(self, seconds: u64) -> Self {
        NewSession {
            idle_timeout: Some(seconds),
            ..self
        }
    }

    /// Issued to `client_id`.
    pub fn for_client(self, client_id: &str) -> Self {
        NewSession {
            client_id: Some(client_id.to_owned()),
            ..self
        }
    }
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

    /// A new session, stored before the token is returned.
    pub async fn issue(&self, new: NewSession) -> Result<Issued, IssueError> {
        self.issue_as(ReferenceToken::generate(), new).await
    }

    /// A new session behind a token made beforehand (a code redemption names the session it
    /// makes before making it, so that a replay can end it).
    pub async fn issue_as(
        &self,
        token: ReferenceToken,
        new: NewSession,
    ) -> Result<Issued, IssueError> {
        let now = now_unix();
        let mut session = Session {
            id: token.session_id(),
            subject: new.subject,
            roles: new.roles,
            value_token: ValueToken(String::new()),
            created_at: now,
            last_used_at: now,
            idle_timeout: new.idle_timeout.unwrap_or(self.idle_timeout),
            max_expires_at: now + self.max_lifetime,
            client_id: new.client_id,
            method: new.method,
            kind: new.kind,
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

    /// The live session of `kind` a reference token opens, with its value token verified: a
    /// record written into the store by anyone but the IdP does not pass, nor does a session of
    /// another kind (a browser session's cookie is no bearer token).
    pub async fn resolve(
        &self,
        token: &str,
        kind: SessionKind,
    ) -> Result<Option<Session>, StoreError> {
        let Ok(token) = ReferenceToken::parse(token) else {
            return Ok(None);
        };
        let Some(session) = self.store.lookup(&token.session_id()).await? else {
            return Ok(None);
        };
        if session.kind != kind {
            return Ok(None);
        }
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

#[cfg(test)]
mod tests {
    use tokengate_store::MemoryStore;

    use super::*;

    fn issuer() -> Issuer {
        let store = AnyStore::Memory(MemoryStore::new());
        let keys = Arc::new(KeySet::ephemeral().expect("keys"));
        Issuer::new(store, keys, "tokengate", 600, 3600).expect("issuer")
    }

    #[tokio::test]
    async fn a_session_is_resolved_only_as_its_own_kind() {
        let issuer = issuer();
        let roles = vec!["r".to_owned()];
        let access = issuer
            .issue(NewSession::access("alice", roles.clone(), "password").for_client("cli"))
            .await
            .expect("issue");
        assert_eq!(access.session.client_id.as_deref(), Some("cli"));
        assert_eq!(access.session.method, "password");
        let browser = issuer
            .issue(NewSession::browser("alice", roles, "password"))
            .await
            .expect("issue");
        let resolve = |token: &Issued, kind| {
            let text = token.token.expose().to_owned();
            let issuer = &issuer;
            async move { issuer.resolve(&text, kind).await.expect("resolve") }
        };
        assert!(resolve(&access, SessionKind::Access).await.is_some());
        assert!(resolve(&access, SessionKind::Browser).await.is_none());
        assert!(
            resolve(&browser, SessionKind::Access).await.is_none(),
            "a browser session's cookie is no bearer token"
        );
        let found = resolve(&browser, SessionKind::Browser).await.expect("live");
        assert_eq!(found.kind, SessionKind::Browser);
    }
}
