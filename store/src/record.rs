use std::fmt;

use crate::token::SessionId;

/// A signed value token (JWT). It never leaves the trusted zone, so its `Debug` is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct ValueToken(pub String);

impl ValueToken {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ValueToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ValueToken(<redacted>)")
    }
}

/// A session as the store holds it. Times are Unix seconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub id: SessionId,
    pub subject: String,
    pub roles: Vec<String>,
    pub value_token: ValueToken,
    pub created_at: u64,
    pub last_used_at: u64,
    /// Seconds of inactivity after which the session ends.
    pub idle_timeout: u64,
    /// `created_at + max_lifetime`: no use extends the session past this.
    pub max_expires_at: u64,
}

impl Session {
    /// When the session ends unless it is used again: `min(last_used + idle, created + max)`.
    pub fn expires_at(&self) -> u64 {
        self.last_used_at
            .saturating_add(self.idle_timeout)
            .min(self.max_expires_at)
    }

    /// Whether the session is still live at `now`.
    pub fn is_live(&self, now: u64) -> bool {
        self.expires_at() > now
    }
}
