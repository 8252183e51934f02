//! Registered clients: what each may do (its grants), where it may send people back (its
//! redirect URIs, compared exactly), and whether it can prove who it is (a confidential client's
//! secret is checked in `credentials`).

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{ClientConfig, ClientType, Grant};

/// One registered client, as handlers check it (no secret here: see `credentials`).
#[derive(Debug)]
pub struct Client {
    /// The `client_id` it presents.
    pub id: String,
    /// Public clients must use PKCE and have no secret.
    pub client_type: ClientType,
    /// Where `/oauth2/authorize` may send people back, exact strings.
    pub redirect_uris: Vec<String>,
    /// Where `/oauth2/logout` may send people after signing out, exact strings.
    pub post_logout_redirect_uris: Vec<String>,
    /// The grants it may use, with the type's default filled in when none are configured.
    pub grants: Vec<Grant>,
    /// The roles of the client itself, for `client_credentials`.
    pub roles: Vec<String>,
    /// Where it hears of its sessions' end (back-channel logout), if it registered one.
    pub backchannel_logout_uri: Option<String>,
    /// How long a logout token it did not take is retried.
    pub backchannel_logout_retry_for: std::time::Duration,
    /// Whoever signs in to it needs a second factor.
    pub require_mfa: bool,
}

impl Client {
    /// Whether `grant` is among its grants (defaults included).
    pub fn may_use(&self, grant: Grant) -> bool {
        self.grants.contains(&grant)
    }

    /// Whether it is a public client (no secret, PKCE required).
    pub fn is_public(&self) -> bool {
        self.client_type == ClientType::Public
    }

    /// Whether `uri` is one of the registered redirect URIs, character for character.
    pub fn has_redirect_uri(&self, uri: &str) -> bool {
        self.redirect_uris.iter().any(|r| r == uri)
    }

    /// Whether `uri` is one of the registered post-logout redirect URIs, character for character.
    pub fn has_post_logout_redirect_uri(&self, uri: &str) -> bool {
        self.post_logout_redirect_uris.iter().any(|r| r == uri)
    }
}

/// Every registered client by id.
#[derive(Debug, Default)]
pub struct Clients(HashMap<String, Arc<Client>>);

impl Clients {
    /// Every client of `configs`, with default grants filled in; the caller adds the console's.
    pub fn new(configs: &[ClientConfig]) -> Self {
        Clients(
            configs
                .iter()
                .map(|c| {
                    let client = Client {
                        id: c.client_id.clone(),
                        client_type: c.client_type,
                        redirect_uris: c.redirect_uris.clone(),
                        post_logout_redirect_uris: c.post_logout_redirect_uris.clone(),
                        grants: c.grants(),
                        roles: c.roles.clone(),
                        backchannel_logout_uri: c.backchannel_logout_uri.clone(),
                        backchannel_logout_retry_for: c.backchannel_logout_retry_for,
                        require_mfa: c.require_mfa,
                    };
                    (c.client_id.clone(), Arc::new(client))
                })
                .collect(),
        )
    }

    /// The client with `client_id` `id`, if registered.
    pub fn get(&self, id: &str) -> Option<&Arc<Client>> {
        self.0.get(id)
    }

    /// Every client, ordered by id.
    pub fn all(&self) -> Vec<&Arc<Client>> {
        let mut all: Vec<_> = self.0.values().collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }
}
