//! Secrets (API secret, Sumsub secret, share tokens) in a type that never
//! prints its content: `Debug` and `Display` both give `***`.
//!
//! Not for: encryption at rest. This only keeps values out of logs and
//! error messages by construction.

use std::fmt;
use std::path::Path;

/// A secret string. Read it with [`Secret::expose`] at the one place that
/// needs the bytes (the HMAC key, the wire).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret's bytes. Call only where the value must be used.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Reads a secret from a file: the first line, without its line ending.
    pub fn from_file(path: &Path) -> Result<Secret, std::io::Error> {
        let text = std::fs::read_to_string(path)?;
        let line = text.lines().next().unwrap_or("").trim();
        Ok(Secret(line.to_string()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_its_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(format!("{s:?}"), "***");
        assert_eq!(format!("{:?}", Some(s.clone())), "Some(***)");
        assert_eq!(s.expose(), "hunter2");
    }
}
