/// What can go wrong talking to the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached or did not answer in time: the caller should answer 503,
    /// never treat the token as invalid.
    #[error("token store unreachable")]
    Unavailable(#[source] ::redis::RedisError),
    /// A record or event in the store does not have the shape this version writes.
    #[error("malformed {what} in the token store")]
    Corrupt { what: &'static str },
    /// The store's address or options are wrong (reported at start-up).
    #[error("invalid store configuration: {0}")]
    Config(String),
}

impl From<::redis::RedisError> for StoreError {
    fn from(e: ::redis::RedisError) -> Self {
        StoreError::Unavailable(e)
    }
}
