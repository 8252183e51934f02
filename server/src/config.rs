//! How both services report a configuration file they cannot use.

use std::fmt;
use std::path::PathBuf;

/// What is wrong with a configuration file (of the IdP or a gateway), naming the file and key.
#[derive(Debug)]
pub enum ConfigError {
    /// The file cannot be read.
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not TOML of the expected shape (the parser's message names line and key).
    Parse {
        /// The file.
        file: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A value is out of bounds or inconsistent with another.
    Invalid {
        /// The file.
        file: PathBuf,
        /// The key, as `section.key` (`routes[2].upstream`).
        key: String,
        /// What is wrong with it.
        message: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { file, source } => {
                write!(f, "cannot read {}: {source}", file.display())
            }
            ConfigError::Parse { file, message } => write!(f, "{}: {message}", file.display()),
            ConfigError::Invalid { file, key, message } => {
                write!(f, "{}: `{key}`: {message}", file.display())
            }
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Read { source, .. } => Some(source),
            ConfigError::Parse { .. } | ConfigError::Invalid { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_file_and_the_key() {
        let file = PathBuf::from("conf/idp.toml");
        let read = ConfigError::Read {
            file: file.clone(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "not found"),
        };
        assert_eq!(read.to_string(), "cannot read conf/idp.toml: not found");
        assert!(std::error::Error::source(&read).is_some());
        let parse = ConfigError::Parse {
            file: file.clone(),
            message: "expected `=`".into(),
        };
        assert_eq!(parse.to_string(), "conf/idp.toml: expected `=`");
        let invalid = ConfigError::Invalid {
            file,
            key: "store.nodes".into(),
            message: "must not be empty".into(),
        };
        assert_eq!(
            invalid.to_string(),
            "conf/idp.toml: `store.nodes`: must not be empty"
        );
    }
}
