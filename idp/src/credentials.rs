//! Clients from the configuration, and secret checks that take the same time whether or not
//! the client exists.

use std::collections::HashMap;

use crate::config::ClientConfig;
use crate::password::Hasher;

/// Which clients may log in, and with which roles.
pub struct Credentials {
    clients: HashMap<String, Principal>,
    hasher: Hasher,
}

struct Principal {
    hash: String,
    roles: Vec<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("clients", &self.clients.len())
            .finish_non_exhaustive()
    }
}

/// Which kind of principal a secret belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A user of the directory in the store (username and password).
    User,
    /// A confidential client of `[[clients]]` (client id and secret).
    Client,
}

impl Credentials {
    /// Keeps the secret hashes of the confidential clients; users' hashes are read from the store.
    pub fn new(clients: &[ClientConfig], hasher: Hasher) -> Self {
        let principal = |hash: &str, roles: &[String]| Principal {
            hash: hash.to_owned(),
            roles: roles.to_vec(),
        };
        Credentials {
            // Only confidential clients have a secret to check.
            clients: clients
                .iter()
                .filter_map(|c| {
                    let hash = c.client_secret_hash.as_deref()?;
                    Some((c.client_id.clone(), principal(hash, &c.roles)))
                })
                .collect(),
            hasher,
        }
    }

    /// Checks a client id and secret; `Some(configured roles)` when they match. An unknown id
    /// costs one hash check too, so timing does not tell which ids exist.
    pub async fn check(&self, client_id: &str, secret: &str) -> Option<Vec<String>> {
        let principal = self.clients.get(client_id);
        let matches = self
            .hasher
            .verify(principal.map(|p| p.hash.as_str()), secret)
            .await;
        principal.filter(|_| matches).map(|p| p.roles.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::password::hash_password;

    #[tokio::test]
    async fn right_secret_passes_wrong_secret_and_unknown_id_fail() {
        let clients = [
            ClientConfig {
                roles: vec!["r".into()],
                ..ClientConfig::confidential(
                    "reports",
                    hash_password("s3cret").expect("hash"),
                    &[crate::config::Grant::ClientCredentials],
                )
            },
            ClientConfig::public(
                "web",
                &[crate::config::Grant::AuthorizationCode],
                &["http://a/cb"],
            ),
        ];
        let creds = Credentials::new(&clients, Hasher::new().expect("hasher"));
        assert_eq!(
            creds.check("reports", "s3cret").await,
            Some(vec!["r".to_owned()])
        );
        assert_eq!(creds.check("reports", "wrong").await, None);
        assert_eq!(creds.check("mallory", "s3cret").await, None);
        // A public client has no secret: nothing it presents passes.
        assert_eq!(creds.check("web", "").await, None);
    }
}
