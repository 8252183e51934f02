//! Users: the IdP's directory.

use std::time::Duration;

use redis::{Cmd, Value};

use super::RedisStore;
use super::schema::{decode_user, user_fields};
use crate::user::{cut_page, username_fits};
use crate::{
    Claimed, MAX_USERS_PAGE, Passkey, Replaced, StoreError, User, UserDirectory, UserPage,
};

impl UserDirectory for RedisStore {
    async fn create_user(&self, user: &User) -> Result<bool, StoreError> {
        if !username_fits(&user.username) {
            return Err(StoreError::Invalid { what: "username" });
        }
        self.put_user(user, false).await
    }

    async fn user(&self, username: &str) -> Result<Option<User>, StoreError> {
        if !username_fits(username) {
            return Ok(None);
        }
        let mut con = self.con.clone();
        let fields: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(self.shared.keys.subject(username, "user"))
            .query_async(&mut con)
            .await
            .map_err(StoreError::unavailable)?;
        if fields.is_empty() {
            return Ok(None);
        }
        decode_user(fields)
            .map(Some)
            .ok_or(StoreError::Corrupt { what: "user" })
    }

    async fn update_user(&self, user: &User) -> Result<bool, StoreError> {
        if !username_fits(&user.username) {
            return Ok(false);
        }
        self.put_user(user, true).await
    }

    async fn use_otp_step(
        &self,
        username: &str,
        step: u64,
        keep: Duration,
    ) -> Result<bool, StoreError> {
        if !username_fits(username) {
            return Ok(false);
        }
        let taken: i64 = self
            .shared
            .scripts
            .otp_step
            .key(self.shared.keys.subject(username, "otp"))
            .arg(step)
            .arg(keep.as_secs().max(1))
            .invoke_async(&mut self.con.clone())
            .await
            .map_err(StoreError::unavailable)?;
        Ok(taken == 1)
    }

    async fn replace_user(&self, current: &User, new: &User) -> Result<Replaced, StoreError> {
        if current.username != new.username {
            return Err(StoreError::Invalid { what: "username" });
        }
        if !username_fits(&new.username) {
            return Ok(Replaced::Missing);
        }
        let was = user_fields(current).map_err(|_| StoreError::Corrupt { what: "user" })?;
        let fields = user_fields(new).map_err(|_| StoreError::Corrupt { what: "user" })?;
        let mut con = self.con.clone();
        let answer: i64 = self
            .shared
            .scripts
            .replace_user
            .key(self.shared.keys.subject(&new.username, "user"))
            .arg(was.len())
            .arg(was)
            .arg(fields)
            .invoke_async(&mut con)
            .await
            .map_err(StoreError::unavailable)?;
        match answer {
            1 => {
                // As `put_user` does: sets right an index entry lost to a create and a delete
                // of the name racing.
                self.index_user(&new.username).await?;
                Ok(Replaced::Done)
            }
            2 => Ok(Replaced::Changed),
            _ => Ok(Replaced::Missing),
        }
    }

    async fn claim_passkey(&self, id: &str, username: &str) -> Result<Claimed, StoreError> {
        if !username_fits(username) {
            return Err(StoreError::Invalid { what: "username" });
        }
        let answer: i64 = self
            .shared
            .scripts
            .claim_passkey
            .key(self.shared.keys.passkey(id))
            .arg(username)
            .invoke_async(&mut self.con.clone())
            .await
            .map_err(StoreError::unavailable)?;
        Ok(match answer {
            1 => Claimed::Now,
            2 => Claimed::Already,
            _ => Claimed::ByAnother,
        })
    }

    async fn release_passkey(&self, id: &str, username: &str) -> Result<bool, StoreError> {
        let released: i64 = self
            .shared
            .scripts
            .release_passkey
            .key(self.shared.keys.passkey(id))
            .arg(username)
            .invoke_async(&mut self.con.clone())
            .await
            .map_err(StoreError::unavailable)?;
        Ok(released == 1)
    }

    async fn passkey_owner(&self, id: &str) -> Result<Option<String>, StoreError> {
        redis::cmd("GET")
            .arg(self.shared.keys.passkey(id))
            .query_async(&mut self.con.clone())
            .await
            .map_err(StoreError::unavailable)
    }

    async fn delete_user(&self, username: &str) -> Result<bool, StoreError> {
        if !username_fits(username) {
            return Ok(false);
        }
        let mut con = self.con.clone();
        // The passkeys' claims first: a retry after a failure later on still finds them in the
        // record.
        let passkeys: Option<String> = redis::cmd("HGET")
            .arg(self.shared.keys.subject(username, "user"))
            .arg("passkeys")
            .query_async(&mut con)
            .await
            .map_err(StoreError::unavailable)?;
        if let Some(passkeys) = passkeys {
            let passkeys: Vec<Passkey> = serde_json::from_str(&passkeys)
                .map_err(|_| StoreError::Corrupt { what: "user" })?;
            for passkey in &passkeys {
                self.release_passkey(&passkey.id, username).await?;
            }
        }
        // Record first, index after: a retry after a failure in between finds the name still
        // indexed and removes it.
        let deleted: i64 = redis::cmd("DEL")
            .arg(self.shared.keys.subject(username, "user"))
            .query_async(&mut con)
            .await
            .map_err(StoreError::unavailable)?;
        let _: Value = redis::cmd("ZREM")
            .arg(&self.shared.keys.users)
            .arg(username)
            .query_async(&mut con)
            .await
            .map_err(StoreError::unavailable)?;
        Ok(deleted == 1)
    }

    async fn list_users(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<UserPage, StoreError> {
        let limit = limit.clamp(1, MAX_USERS_PAGE);
        let (min, max) = lex_range(prefix, after);
        let mut con = self.con.clone();
        // One more than asked: whether it is there says whether there is a next page.
        let mut names: Vec<String> = redis::cmd("ZRANGEBYLEX")
            .arg(&self.shared.keys.users)
            .arg(min)
            .arg(max)
            .arg("LIMIT")
            .arg(0)
            .arg(limit + 1)
            .query_async(&mut con)
            .await
            .map_err(StoreError::unavailable)?;
        let next = cut_page(&mut names, limit, String::as_str);
        if names.is_empty() {
            return Ok(UserPage {
                users: Vec::new(),
                next,
            });
        }
        let reads: Vec<Cmd> = names
            .iter()
            .map(|name| {
                let mut cmd = redis::cmd("HGETALL");
                cmd.arg(self.shared.keys.subject(name, "user"));
                cmd
            })
            .collect();
        let records: Vec<Vec<(String, String)>> = self
            .con
            .query_each(&reads)
            .await
            .map_err(StoreError::unavailable)?;
        let mut users = Vec::with_capacity(records.len());
        // A name without a record is one whose create or delete is under way (or was cut
        // short): not a user (yet).
        for fields in records.into_iter().filter(|f| !f.is_empty()) {
            users.push(decode_user(fields).ok_or(StoreError::Corrupt { what: "user" })?);
        }
        Ok(UserPage { users, next })
    }
}

impl RedisStore {
    /// Writes a user's record whole: a new one (`replace` false) or over an existing one. A new
    /// name is indexed before its record is written, so a record is never missing from the
    /// index (a retry after a failure in between is harmless); a replaced one is indexed again
    /// after, which sets right an index entry lost to a create and a delete of the name racing.
    async fn put_user(&self, user: &User, replace: bool) -> Result<bool, StoreError> {
        let fields = user_fields(user).map_err(|_| StoreError::Corrupt { what: "roles" })?;
        if !replace {
            self.index_user(&user.username).await?;
        }
        let mut con = self.con.clone();
        let written: i64 = self
            .shared
            .scripts
            .put_user
            .key(self.shared.keys.subject(&user.username, "user"))
            .arg(if replace { "1" } else { "0" })
            .arg(fields)
            .invoke_async(&mut con)
            .await
            .map_err(StoreError::unavailable)?;
        if replace && written == 1 {
            self.index_user(&user.username).await?;
        }
        Ok(written == 1)
    }

    async fn index_user(&self, username: &str) -> Result<(), StoreError> {
        let mut con = self.con.clone();
        let _: Value = redis::cmd("ZADD")
            .arg(&self.shared.keys.users)
            .arg(0)
            .arg(username)
            .query_async(&mut con)
            .await
            .map_err(StoreError::unavailable)?;
        Ok(())
    }
}

/// The `ZRANGEBYLEX` bounds of the names that start with `prefix` and sort after `after`.
/// Names are UTF-8, which never holds the byte 0xFF: every name with the prefix sorts before
/// the prefix followed by it.
fn lex_range(prefix: &str, after: Option<&str>) -> (Vec<u8>, Vec<u8>) {
    let bound = |mark: u8, text: &[u8], tail: &[u8]| [&[mark], text, tail].concat();
    let min = match after {
        Some(after) if after >= prefix => bound(b'(', after.as_bytes(), b""),
        _ if prefix.is_empty() => b"-".to_vec(),
        _ => bound(b'[', prefix.as_bytes(), b""),
    };
    let max = if prefix.is_empty() {
        b"+".to_vec()
    } else {
        bound(b'(', prefix.as_bytes(), &[0xFF])
    };
    (min, max)
}

#[cfg(test)]
mod tests {
    use super::lex_range;

    #[test]
    fn lex_ranges_cover_the_prefix_after_the_cursor() {
        assert_eq!(lex_range("", None), (b"-".to_vec(), b"+".to_vec()));
        assert_eq!(
            lex_range("al", None),
            (b"[al".to_vec(), b"(al\xff".to_vec())
        );
        assert_eq!(
            lex_range("al", Some("alice")),
            (b"(alice".to_vec(), b"(al\xff".to_vec())
        );
        // A cursor before the prefix does not widen the range.
        assert_eq!(lex_range("bo", Some("alice")).0, b"[bo".to_vec());
        assert_eq!(lex_range("", Some("bob")).0, b"(bob".to_vec());
    }
}
