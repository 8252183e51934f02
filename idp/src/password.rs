//! Password and secret hashing (argon2id), shared by the user directory and client
//! authentication: one bound on concurrent hashes, and one decoy hash checked whenever there is
//! no real one (unknown name, no password, disabled user), so every check takes as long.

use std::sync::Arc;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use tokio::sync::Semaphore;

/// Argon2 hashing costs ~19 MiB and tens of milliseconds each: at most this many at once, so a
/// flood of logins cannot exhaust memory or starve the other requests.
const CONCURRENT_HASHES: usize = 4;

/// Why a hash could not be made (never why a check failed: that is just `false`).
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// argon2 refused the input or its parameters.
    #[error("password hashing failed")]
    Hash,
    /// The system's random number generator gave no salt.
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

/// Hashes and checks secrets off the async threads, a bounded number at once.
#[derive(Clone)]
pub struct Hasher {
    permits: Arc<Semaphore>,
    /// Checked when there is no real hash, so that both answers take as long.
    decoy: Arc<str>,
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hasher").finish_non_exhaustive()
    }
}

impl Hasher {
    /// Makes the decoy hash from random bytes (one argon2id hash: tens of milliseconds).
    pub fn new() -> Result<Self, HashError> {
        let mut random = [0u8; 32];
        SystemRandom::new()
            .fill(&mut random)
            .map_err(|_| HashError::Random)?;
        Ok(Hasher {
            permits: Arc::new(Semaphore::new(CONCURRENT_HASHES)),
            decoy: hash_password(&String::from_utf8_lossy(&random))?.into(),
        })
    }

    /// Whether `secret` matches `hash`. Without a hash (or with one that does not parse) the
    /// decoy is checked instead and the answer is `false`, in the same time.
    pub async fn verify(&self, hash: Option<&str>, secret: &str) -> bool {
        let real = hash.filter(|h| PasswordHash::new(h).is_ok());
        let hash = real.map_or_else(|| self.decoy.to_string(), str::to_owned);
        let secret = secret.to_owned();
        let matches = self
            .blocking(move || {
                PasswordHash::new(&hash).is_ok_and(|parsed| {
                    Argon2::default()
                        .verify_password(secret.as_bytes(), &parsed)
                        .is_ok()
                })
            })
            .await
            .unwrap_or(false);
        real.is_some() && matches
    }

    /// [`hash_password`], within the same bound.
    pub async fn hash(&self, password: &str) -> Result<String, HashError> {
        let password = password.to_owned();
        self.blocking(move || hash_password(&password))
            .await
            .unwrap_or(Err(HashError::Hash))
    }

    /// Runs `work` on the blocking pool once a permit is free; `None` if it could not run.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let permit = self.permits.clone().acquire_owned().await.ok()?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await
        .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_the_right_secret_against_a_real_hash_passes() {
        let hasher = Hasher::new().expect("hasher");
        let hash = hasher.hash("wonderland").await.expect("hash");
        assert!(hash.starts_with("$argon2id$"));
        assert!(hasher.verify(Some(&hash), "wonderland").await);
        assert!(!hasher.verify(Some(&hash), "wrong").await);
        assert!(!hasher.verify(None, "wonderland").await);
        assert!(!hasher.verify(Some("not a hash"), "wonderland").await);
    }
}
