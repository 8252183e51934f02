//! The user directory: users kept in the token store, shared by every IdP replica. The
//! configuration's `[[users]]` are seed users, created when absent (never overwritten, so what
//! an administrator changed survives a restart). Password checks take the same time whether the
//! user is unknown, has no password, is disabled or gave the wrong password.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokengate_store::{AnyStore, Session, SessionAdmin, StoreError, User, UserDirectory, now_unix};
use tokio_util::sync::CancellationToken;

use crate::config::UserConfig;
use crate::password::{HashError, Hasher};

/// Shortest password the admin API accepts (bytes).
pub const MIN_PASSWORD_LEN: usize = 8;
/// Longest password the admin API accepts (bytes): argon2 hashes any length, but nobody types
/// more, and a bound keeps a request from buying much hashing.
pub const MAX_PASSWORD_LEN: usize = 1024;

/// Why a new password is refused, if it is.
pub fn check_password(password: &str) -> Result<(), &'static str> {
    if (MIN_PASSWORD_LEN..=MAX_PASSWORD_LEN).contains(&password.len()) {
        Ok(())
    } else {
        Err("password must be 8 to 1024 bytes long")
    }
}

/// The user directory: users in the store, checks of their passwords, and the seeding of
/// `[[users]]`.
#[derive(Debug)]
pub struct Users {
    store: AnyStore,
    hasher: Hasher,
    /// Whether the seed users are in the store (until then the IdP is not ready).
    seeded: AtomicBool,
}

impl Users {
    /// A directory over `store`; `hasher` checks passwords, with the decoy for unknown names.
    pub fn new(store: AnyStore, hasher: Hasher) -> Self {
        Users {
            store,
            hasher,
            seeded: AtomicBool::new(false),
        }
    }

    /// Creates every seed user the store does not have yet. A seed whose name had roles set by
    /// an administrator (before users lived in the store) keeps those roles.
    pub async fn seed(&self, seeds: &[UserConfig]) -> Result<(), StoreError> {
        let mut created = 0;
        for seed in seeds {
            match self.store.user(&seed.username).await {
                Ok(None) => {}
                Ok(Some(_)) => continue,
                // Never overwritten, and no reason to hold the others back.
                Err(StoreError::Corrupt { what }) => {
                    tracing::error!(username = %seed.username, what, "the stored user of a seed is malformed; left alone");
                    continue;
                }
                Err(e) => return Err(e),
            }
            let roles = self
                .store
                .subject_roles(&seed.username)
                .await?
                .unwrap_or_else(|| seed.roles.clone());
            let now = now_unix();
            let user = User {
                username: seed.username.clone(),
                password_hash: Some(seed.password_hash.clone()),
                roles,
                disabled: false,
                upstream: None,
                otp_secret: None,
                recovery_codes: Vec::new(),
                passkeys: Vec::new(),
                created_at: now,
                updated_at: now,
            };
            // `false`: another replica created it meanwhile, which is as good.
            created += usize::from(self.store.create_user(&user).await?);
        }
        self.seeded.store(true, Ordering::SeqCst);
        tracing::info!(seeds = seeds.len(), created, "seed users in the store");
        Ok(())
    }

    /// Until the seed users are in the store: tries again, with backoff, until it takes them
    /// or `shutdown` (for an IdP that started while the store was down).
    pub async fn keep_seeding(&self, seeds: &[UserConfig], shutdown: &CancellationToken) {
        let mut wait = Duration::from_millis(500);
        while !self.seeded() {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            if let Err(e) = self.seed(seeds).await {
                tracing::warn!(error = %e, "writing the seed users failed; will retry");
            }
            wait = (wait * 2).min(Duration::from_secs(10));
        }
    }

    /// Whether the seed users are in the store.
    pub fn seeded(&self) -> bool {
        self.seeded.load(Ordering::SeqCst)
    }

    /// The user, if `password` is theirs and they may sign in. Unknown, disabled and
    /// password-less users check the decoy hash instead, so every answer takes as long.
    pub async fn check_password(
        &self,
        username: &str,
        password: &str,
    ) -> Result<Option<User>, StoreError> {
        let user = self.store.user(username).await?.filter(|u| !u.disabled);
        let hash = user.as_ref().and_then(|u| u.password_hash.as_deref());
        let matches = self.hasher.verify(hash, password).await;
        Ok(user.filter(|_| matches))
    }

    /// Keeps a user's new session only if the user still exists and is not disabled; ends it
    /// otherwise and answers `false`. Asked once the session is in the store, so that a disable
    /// or delete racing the sign-in, whose revocation may have come too early to see the new
    /// session, still ends it (the user is changed before its sessions are revoked).
    pub async fn admit(&self, session: &Session) -> Result<bool, StoreError> {
        let allowed = self
            .store
            .user(&session.subject)
            .await?
            .is_some_and(|u| !u.disabled);
        if !allowed {
            self.store.revoke(&session.id).await?;
            tracing::info!(subject = %session.subject, session = %session.id, "user disabled or deleted during sign-in; session ended");
        }
        Ok(allowed)
    }

    /// Whether `secret` matches the argon2id `hash`, within the bound on concurrent hashing.
    pub async fn verify(&self, hash: &str, secret: &str) -> bool {
        self.hasher.verify(Some(hash), secret).await
    }

    /// The hash of a new password, within the bound on concurrent hashing.
    pub async fn hash(&self, password: &str) -> Result<String, HashError> {
        self.hasher.hash(password).await
    }
}

#[cfg(test)]
mod tests {
    use tokengate_store::{MemoryStore, SessionRead};

    use super::*;
    use crate::password::hash_password;

    fn seed(name: &str, password: &str, roles: &[&str]) -> UserConfig {
        UserConfig {
            username: name.to_owned(),
            password_hash: hash_password(password).expect("hash"),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        }
    }

    /// A directory on an in-memory store, with seed user alice / wonderland, role `r`.
    async fn directory_with_alice() -> (AnyStore, Users) {
        let store = AnyStore::Memory(MemoryStore::new());
        let users = Users::new(store.clone(), Hasher::new().expect("hasher"));
        users
            .seed(&[seed("alice", "wonderland", &["r"])])
            .await
            .expect("seed");
        (store, users)
    }

    #[tokio::test]
    async fn seeds_are_created_once_and_never_overwritten() {
        let store = AnyStore::Memory(MemoryStore::new());
        let users = Users::new(store.clone(), Hasher::new().expect("hasher"));
        assert!(!users.seeded());
        // Roles an administrator set before users lived in the store are kept.
        store
            .set_subject_roles("bob", &["admin".to_owned()])
            .await
            .expect("set");
        let seeds = [
            seed("alice", "wonderland", &["r"]),
            seed("bob", "builder1", &["r"]),
        ];
        users.seed(&seeds).await.expect("seed");
        assert!(users.seeded());
        let bob = store.user("bob").await.expect("get").expect("seeded");
        assert_eq!(bob.roles, ["admin"]);

        let mut alice = store.user("alice").await.expect("get").expect("seeded");
        alice.roles = vec!["changed".to_owned()];
        alice.disabled = true;
        store.update_user(&alice).await.expect("update");
        users.seed(&seeds).await.expect("seed again");
        assert_eq!(store.user("alice").await.expect("get"), Some(alice));
    }

    #[tokio::test]
    async fn only_an_enabled_user_with_the_right_password_passes() {
        let (store, users) = directory_with_alice().await;
        let passes = |name: &'static str, password: &'static str| {
            let users = &users;
            async move { users.check_password(name, password).await.expect("check") }
        };
        let roles = passes("alice", "wonderland").await.map(|u| u.roles);
        assert_eq!(roles, Some(vec!["r".to_owned()]));
        assert_eq!(passes("alice", "wrong").await, None);
        assert_eq!(passes("mallory", "wonderland").await, None);

        let mut alice = store.user("alice").await.expect("get").expect("user");
        alice.disabled = true;
        store.update_user(&alice).await.expect("update");
        assert_eq!(passes("alice", "wonderland").await, None, "disabled");

        alice.disabled = false;
        alice.password_hash = None;
        store.update_user(&alice).await.expect("update");
        assert_eq!(passes("alice", "wonderland").await, None, "no password");
    }

    #[tokio::test]
    async fn a_session_made_while_its_user_was_disabled_or_deleted_is_ended() {
        let (store, users) = directory_with_alice().await;
        let session = tokengate_store::testing::suite::session("alice");
        store.create(&session).await.expect("create");
        assert!(users.admit(&session).await.expect("admit"));
        assert!(store.lookup(&session.id).await.expect("lookup").is_some());

        let mut alice = store.user("alice").await.expect("get").expect("user");
        alice.disabled = true;
        store.update_user(&alice).await.expect("update");
        assert!(!users.admit(&session).await.expect("admit"));
        assert_eq!(store.lookup(&session.id).await.expect("lookup"), None);

        store.delete_user("alice").await.expect("delete");
        let later = tokengate_store::testing::suite::session("alice");
        store.create(&later).await.expect("create");
        assert!(!users.admit(&later).await.expect("admit"));
        assert_eq!(store.lookup(&later.id).await.expect("lookup"), None);
    }

    #[test]
    fn passwords_are_bounded() {
        assert!(check_password("1234567").is_err());
        assert!(check_password("12345678").is_ok());
        assert!(check_password(&"x".repeat(1024)).is_ok());
        assert!(check_password(&"x".repeat(1025)).is_err());
    }
}
