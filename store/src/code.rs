//! Authorization codes (RFC 6749 §4.1): what a code stands for until it is redeemed, once.

use serde::{Deserialize, Serialize};

use crate::SessionId;

/// What an authorization code was issued for, kept under the code's hash ([`crate::CodeId`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthCode {
    /// The client the code was issued to.
    pub client_id: String,
    /// The redirect URI it was issued for (matched exactly on redemption).
    pub redirect_uri: String,
    /// The PKCE `S256` challenge, if the client sent one.
    pub code_challenge: Option<String>,
    /// The authorization request's `nonce`, for the ID token.
    pub nonce: Option<String>,
    /// The scope granted, when it narrows the roles.
    pub scope: Option<String>,
    /// Who signed in.
    pub subject: String,
    /// The roles the session will carry.
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
