use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::token::SessionId;

/// A signed value token (JWT). It never leaves the trusted zone, so its `Debug` is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct ValueToken(pub String);

impl ValueToken {
    /// The compact JWT.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The `exp` claim, read without verifying anything: the store schedules renewals by it,
    /// and nothing else may trust it (a reader verifies the token before believing it).
    pub fn expires_at(&self) -> Option<u64> {
        #[derive(serde::Deserialize)]
        struct Exp {
            exp: u64,
        }
        let payload = self.0.split('.').nth(1)?;
        let json = URL_SAFE_NO_PAD.decode(payload).ok()?;
        serde_json::from_slice::<Exp>(&json).ok().map(|c| c.exp)
    }

    /// Where the token stands in the renewal schedule: its `exp`, or 0 (due at once, so that
    /// the IdP looks at it and counts a failure) when that cannot be read.
    pub(crate) fn renewal_due(&self) -> u64 {
        self.expires_at().unwrap_or(0)
    }
}

/// A session's value token replaced by a fresh one (renewed before it expires), if the session
/// still holds the token `replaces`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Renewal {
    /// The session renewed.
    pub session: SessionId,
    /// The token the session held when it was read; a session holding another one (changed
    /// roles, or renewed meanwhile by another IdP replica) is left alone.
    pub replaces: ValueToken,
    /// Its new value token.
    pub token: ValueToken,
}

impl fmt::Debug for ValueToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ValueToken(<redacted>)")
    }
}

/// What a session is for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SessionKind {
    /// An API session: its reference token is a bearer token (the default, and what every record
    /// written before kinds existed is).
    #[default]
    Access,
    /// The IdP's own single-sign-on browser session. Its cookie must never work as a bearer
    /// token: the gateway and the IdP's `/auth/verify` and introspection refuse it.
    Browser,
}

impl SessionKind {
    /// The name the store writes.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionKind::Access => "access",
            SessionKind::Browser => "browser",
        }
    }

    /// The kind a stored name stands for; `None` for a name this version does not know (such a
    /// record is not used at all, rather than taken for an access session).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "access" => Some(SessionKind::Access),
            "browser" => Some(SessionKind::Browser),
            _ => None,
        }
    }
}

/// A session as the store holds it. Times are Unix seconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// The session id: a hash of the reference token, never the token.
    pub id: SessionId,
    /// Who the session is for.
    pub subject: String,
    /// Its roles.
    pub roles: Vec<String>,
    /// The signed value token gateways forward.
    pub value_token: ValueToken,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds; moved by gateways' last-use reports.
    pub last_used_at: u64,
    /// Seconds of inactivity after which the session ends.
    pub idle_timeout: u64,
    /// `created_at + max_lifetime`: no use extends the session past this.
    pub max_expires_at: u64,
    /// The client the session was issued to, if one was named.
    pub client_id: Option<String>,
    /// How it was obtained: `password`, `client_credentials`, `authorization_code`, `admin`,
    /// `upstream:NAME`; empty in records written before methods were recorded.
    pub method: String,
    /// An access session (a bearer token) or a browser's single-sign-on session.
    pub kind: SessionKind,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_expiry_of_a_value_token_is_read_from_its_payload() {
        let payload = URL_SAFE_NO_PAD.encode(r#"{"sub":"alice","exp":1700000300}"#);
        let token = ValueToken(format!("eyJhbGciOiJFZERTQSJ9.{payload}.c2ln"));
        assert_eq!(token.expires_at(), Some(1_700_000_300));
        for junk in ["", "a.b.c", "header.alice.signature", "x.e30.y"] {
            assert_eq!(ValueToken(junk.to_owned()).expires_at(), None, "{junk}");
        }
    }
}
