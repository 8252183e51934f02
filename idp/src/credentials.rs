//! Users and clients from the configuration, and password checks that take the same time
//! whether or not the name exists.

use std::collections::HashMap;
use std::sync::Arc;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use tokio::sync::Semaphore;

use crate::config::{ClientConfig, UserConfig};

/// Argon2 hashing costs ~19 MiB and tens of milliseconds each: at most this many at once, so a
/// flood of logins cannot exhaust memory or starve the other requests.
const CONCURRENT_HASHES: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("password hashing failed")]
    Hash,
    #[error("random number generator failed")]
    Random,
}

/// An argon2id hash of `password` in PHC format, with a random salt and default costs.
pub fn hash_password(password: &str) -> Result<String, HashError> {
    let mut salt = [0u8; 16];
    SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| HashError::Random)?;
    let salt = SaltString::encode_b64(&salt).map_err(|_| HashError::Hash)?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|_| HashError::Hash)
}

/// Who may log in, and with which roles.
pub struct Credentials {
    users: HashMap<String, Principal>,
    clients: HashMap<String, Principal>,
    /// Checked when the name is unknown, so that both answers take as long.
    decoy_hash: String,
    hashing: Arc<Semaphore>,
}

struct Principal {
    hash: String,
    roles: Vec<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("users", &self.users.len())
            .field("clients", &self.clients.len())
            .finish_non_exhaustive()
    }
}

/// Which kind of principal a secret belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    User,
    Client,
}

impl Credentials {
    pub fn new(users: &[UserConfig], clients: &[ClientConfig]) -> Result<Self, HashError> {
        let principal = |hash: &str, roles: &[String]| Principal {
            hash: hash.to_owned(),
            roles: roles.to_vec(),
        };
        let mut random = [0u8; 32];
        SystemRandom::new()
            .fill(&mut random)
            .map_err(|_| HashError::Random)?;
        Ok(Credentials {
            users: users
                .iter()
                .map(|u| (u.username.clone(), principal(&u.password_hash, &u.roles)))
                .collect(),
            // Only confidential clients have a secret to check.
            clients: clients
                .iter()
                .filter_map(|c| {
                    let hash = c.client_secret_hash.as_deref()?;
                    Some((c.client_id.clone(), principal(hash, &c.roles)))
                })
                .collect(),
            decoy_hash: hash_password(&String::from_utf8_lossy(&random))?,
            hashing: Arc::new(Semaphore::new(CONCURRENT_HASHES)),
        })
    }

    /// The configured roles of a user, if the user exists.
    pub fn user_roles(&self, username: &str) -> Option<&[String]> {
        self.users.get(username).map(|p| p.roles.as_slice())
    }

    /// Checks a name and secret; `Some(configured roles)` when they match. An unknown name costs
    /// one hash check too, so timing does not tell which names exist.
    pub async fn check(&self, kind: Kind, name: &str, secret: &str) -> Option<Vec<String>> {
        let table = match kind {
            Kind::User => &self.users,
            Kind::Client => &self.clients,
        };
        let principal = table.get(name);
        let hash = principal.map_or(&self.decoy_hash, |p| &p.hash).clone();
        let secret = secret.to_owned();
        let permit = self.hashing.clone().acquire_owned().await.ok()?;
        let matches = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            PasswordHash::new(&hash)
                .map(|parsed| {
                    Argon2::default()
                        .verify_password(secret.as_bytes(), &parsed)
                        .is_ok()
                })
                .unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        match principal {
            Some(p) if matches => Some(p.roles.clone()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn right_secret_passes_wrong_secret_and_unknown_name_fail() {
        let users = [UserConfig {
            username: "alice".into(),
            password_hash: hash_password("wonderland").expect("hash"),
            roles: vec!["r".into()],
        }];
        let creds = Credentials::new(&users, &[]).expect("credentials");
        assert_eq!(
            creds.check(Kind::User, "alice", "wonderland").await,
            Some(vec!["r".to_owned()])
        );
        assert_eq!(creds.check(Kind::User, "alice", "wrong").await, None);
        assert_eq!(creds.check(Kind::User, "mallory", "wonderland").await, None);
        assert_eq!(creds.check(Kind::Client, "alice", "wonderland").await, None);
    }
}
