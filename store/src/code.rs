//! Authorization codes (RFC 6749 §4.1): what a code stands for until it is redeemed, once.

use serde::{Deserialize, Serialize};

use crate::SessionId;

/// What an authorization code was issued for, kept under the code's hash ([`crate::CodeId`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthCode {
    pub client_id: String,
    pub redirect_uri: String,
    /// The PKCE `S256` challenge, if the client sent one.
    pub code_challenge: Option<String>,
    pub nonce: Option<String>,
    pub scope: Option<String>,
    pub subject: String,
    pub roles: Vec<String>,
    /// When the user authenticated (Unix seconds).
    pub auth_time: u64,
    /// How the user authenticated (the session `method` the code's session will have).
    pub method: String,
}

/// The outcome of redeeming a code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Redeemed {
    /// The first use: the code is now spent, and remembers the session the caller makes.
    Fresh(AuthCode),
    /// A later use of a spent code, with the session its first use made (to be revoked, RFC 6749
    /// §4.1.2); `None` if the record names none this version can read.
    Replayed(Option<SessionId>),
    /// Never issued, or expired.
    Unknown,
}
