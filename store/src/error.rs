use std::fmt;

/// What can go wrong talking to the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached or did not answer in time: the caller should answer 503,
    /// never treat the token as invalid.
    #[error("token store unreachable")]
    Unavailable(#[source] DriverError),
    /// A record or event in the store does not have the shape this version writes.
    #[error("malformed {what} in the token store")]
    Corrupt {
        /// What kind of record.
        what: &'static str,
    },
    /// The caller asked for something outside the store's bounds (a name too long): a bug in
    /// the caller, which checks its input first.
    #[error("refused by the token store: {what} out of bounds")]
    Invalid {
        /// What was out of bounds.
        what: &'static str,
    },
    /// The store's address or options are wrong (reported at start-up).
    #[error("invalid store configuration: {0}")]
    Config(String),
    /// A record changed under each of the caller's attempts to change it (many writers on one
    /// record at once); nothing was written.
    #[error("{what} kept changing while being written")]
    Contended {
        /// What kind of record.
        what: &'static str,
    },
}

impl StoreError {
    /// The store is unavailable, as the driver's error `e` says.
    pub(crate) fn unavailable(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        StoreError::Unavailable(DriverError(Box::new(e)))
    }
}

/// The error the store's driver reported. Its message and causes are there for logs; its type
/// stays the store's own, so no caller depends on the driver.
pub struct DriverError(Box<dyn std::error::Error + Send + Sync>);

impl fmt::Debug for DriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for DriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for DriverError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    use super::*;

    #[test]
    fn an_unavailable_store_shows_the_drivers_message_not_its_type() {
        let driver = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = StoreError::unavailable(driver);
        assert_eq!(e.to_string(), "token store unreachable");
        let source = e.source().expect("the driver's error");
        assert_eq!(source.to_string(), "refused");
        assert!(format!("{source:?}").contains("ConnectionRefused"));
        assert!(source.downcast_ref::<std::io::Error>().is_none());
    }
}
