//! Users kept in the store, shared by every IdP replica: who may sign in, with which roles.

use std::fmt;

use crate::{StoreError, UserDirectory};

/// Longest username the store keeps (bytes).
pub const MAX_USERNAME_LEN: usize = 256;
/// Most users one page of [`crate::UserDirectory::list_users`] returns.
pub const MAX_USERS_PAGE: usize = 1000;

/// Most passkeys one user keeps.
pub const MAX_PASSKEYS: usize = 10;

/// A passkey (WebAuthn credential) of a user, as the IdP verified it at registration.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Passkey {
    /// The credential id, base64url (public: browsers send it with every assertion).
    pub id: String,
    /// Its COSE_Key, base64url.
    pub public_key: String,
    /// The last signature counter seen (0 when the authenticator keeps none).
    pub sign_count: u32,
    /// Whether it may be synced between devices (the BE flag): a software key (`swk`) rather
    /// than a hardware-bound one (`hwk`).
    pub backup_eligible: bool,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds of its last sign-in; 0 before the first.
    pub last_used_at: u64,
}

/// A user. Times are Unix seconds.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    /// The unique name users sign in with.
    pub username: String,
    /// An argon2id hash in PHC format; `None` for a user who signs in only through an upstream
    /// provider.
    pub password_hash: Option<String>,
    /// The roles new sessions get.
    pub roles: Vec<String>,
    /// A disabled user cannot sign in and has no live session.
    pub disabled: bool,
    /// The federation provider that created the user, if one did.
    pub upstream: Option<String>,
    /// The secret of the user's one-time passwords (TOTP), base64url, once they enrolled a second
    /// factor; a secret, so `Debug` redacts it.
    pub otp_secret: Option<String>,
    /// argon2id hashes of the user's unused recovery codes (each signs in once in place of a
    /// one-time password); empty without a second factor.
    pub recovery_codes: Vec<String>,
    /// The user's passkeys (WebAuthn credentials), in the order they were added.
    pub passkeys: Vec<Passkey>,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds.
    pub updated_at: u64,
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("username", &self.username)
            .field(
                "password_hash",
                &self.password_hash.as_ref().map(|_| "<redacted>"),
            )
            .field("roles", &self.roles)
            .field("disabled", &self.disabled)
            .field("upstream", &self.upstream)
            .field(
                "otp_secret",
                &self.otp_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("recovery_codes", &self.recovery_codes.len())
            .field("passkeys", &self.passkeys.len())
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .finish()
    }
}

/// What [`UserDirectory::replace_user`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replaced {
    /// The record was as read, and is replaced.
    Done,
    /// The record changed since it was read: nothing written.
    Changed,
    /// There is no such user.
    Missing,
}

/// What [`UserDirectory::claim_passkey`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claimed {
    /// The credential id was free, and is now the user's.
    Now,
    /// The credential id was the user's already.
    Already,
    /// The credential id is another user's: nothing changed.
    ByAnother,
}

/// What [`change_user`] came to.
#[derive(Debug)]
pub enum Changed<T, E> {
    /// The change is written (or changed nothing): the user as stored, and what the change
    /// answered.
    Done(User, T),
    /// The change refused the user as stored: nothing written.
    Refused(E),
    /// There is no such user.
    Missing,
}

/// How often [`change_user`] reads and tries again when the record changed under it.
pub const MAX_CHANGE_ATTEMPTS: usize = 16;

/// Changes a user's record by `change`, without losing a change made meanwhile by another
/// request or replica: reads the record, applies `change` to a copy, and writes it only if the
/// record is still as read ([`UserDirectory::replace_user`]); otherwise it reads again and
/// applies `change` again, up to [`MAX_CHANGE_ATTEMPTS`] times ([`StoreError::Contended`] after).
/// `change` may thus run more than once: it decides from the record it is given, and refuses
/// it with `Err` (nothing written). `updated_at` is set to `now` when something changed.
pub async fn change_user<S, T, E>(
    store: &S,
    username: &str,
    now: u64,
    mut change: impl FnMut(&mut User) -> Result<T, E> + Send,
) -> Result<Changed<T, E>, StoreError>
where
    S: UserDirectory + ?Sized,
{
    for _ in 0..MAX_CHANGE_ATTEMPTS {
        let Some(current) = store.user(username).await? else {
            return Ok(Changed::Missing);
        };
        let mut new = current.clone();
        let answer = match change(&mut new) {
            Ok(answer) => answer,
            Err(refused) => return Ok(Changed::Refused(refused)),
        };
        if new == current {
            return Ok(Changed::Done(current, answer));
        }
        new.updated_at = now.max(current.updated_at);
        match store.replace_user(&current, &new).await? {
            Replaced::Done => return Ok(Changed::Done(new, answer)),
            Replaced::Changed => continue,
            Replaced::Missing => return Ok(Changed::Missing),
        }
    }
    Err(StoreError::Contended { what: "user" })
}

/// One page of users, ordered by username.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserPage {
    /// The users of this page, in name order.
    pub users: Vec<User>,
    /// Where the next page starts (pass it as `after`); `None` on the last page.
    pub next: Option<String>,
}

/// Whether a username fits the store's bounds (the IdP checks its own rules before).
pub(crate) fn username_fits(username: &str) -> bool {
    !username.is_empty() && username.len() <= MAX_USERNAME_LEN
}

/// Cuts `items`, fetched one more than `limit`, to `limit`, and answers the cursor of the next
/// page: the last name kept, if there was more.
pub(crate) fn cut_page<T>(
    items: &mut Vec<T>,
    limit: usize,
    name: impl Fn(&T) -> &str,
) -> Option<String> {
    if items.len() <= limit {
        return None;
    }
    items.truncate(limit);
    items.last().map(|last| name(last).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_the_hash() {
        let user = User {
            username: "alice".into(),
            password_hash: Some("$argon2id$v=19$secret-hash".into()),
            roles: vec![],
            disabled: false,
            upstream: None,
            otp_secret: Some("otp-secret".into()),
            recovery_codes: vec!["$argon2id$recovery-hash".into()],
            passkeys: Vec::new(),
            created_at: 1,
            updated_at: 1,
        };
        let debug = format!("{user:?}");
        assert!(debug.contains("alice") && debug.contains("<redacted>"));
        assert!(!debug.contains("secret-hash"), "{debug}");
        assert!(!debug.contains("otp-secret"), "{debug}");
        assert!(!debug.contains("recovery-hash"), "{debug}");
    }
}
