//! Signing in through upstream OpenID Connect providers.
//!
//! * `provider`: an upstream provider as a relying party sees it: discovery, keys, the code
//!   exchange and the id_token's verification.
//! * `sign_in`: the start and callback routes, and the mapping of an upstream identity to a
//!   user in the store.

pub mod provider;
pub mod sign_in;
