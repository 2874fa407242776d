//! Slice names: PlanetLab's `site_slice` form.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest slice name (PlanetLab's limit, and short enough for a user
/// name, a cgroup and a path component).
pub const MAX_LEN: usize = 32;

/// A slice name: `[a-z0-9_]`, 1 to 32 characters, starting with a letter
/// (`princeton_codeen`). It is also the name of the slice's user inside
/// the sliver and of its cgroup, so nothing else gets through.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SliceName(String);

/// Why a slice name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The empty string.
    #[error("slice name is empty")]
    Empty,
    /// Over [`MAX_LEN`] characters.
    #[error("slice name {0:?} is longer than {MAX_LEN} characters")]
    TooLong(String),
    /// Does not start with a lowercase letter.
    #[error("slice name {0:?} must start with a lowercase letter (site_slice)")]
    BadStart(String),
    /// Holds a character outside `[a-z0-9_]` (`/`, `.`, upper case, ...).
    #[error("slice name {name:?} holds {bad:?}: only a-z, 0-9 and _ are allowed (site_slice)")]
    BadChar {
        /// The name as given.
        name: String,
        /// The first character refused.
        bad: char,
    },
}

impl SliceName {
    /// Checks `name`.
    pub fn new(name: &str) -> Result<SliceName, NameError> {
        let Some(first) = name.chars().next() else {
            return Err(NameError::Empty);
        };
        if name.len() > MAX_LEN {
            return Err(NameError::TooLong(name.into()));
        }
        if let Some(bad) = name
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_'))
        {
            return Err(NameError::BadChar {
                name: name.into(),
                bad,
            });
        }
        if !first.is_ascii_lowercase() {
            return Err(NameError::BadStart(name.into()));
        }
        Ok(SliceName(name.to_string()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for SliceName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<SliceName, NameError> {
        SliceName::new(s)
    }
}

impl TryFrom<String> for SliceName {
    type Error = NameError;
    fn try_from(s: String) -> Result<SliceName, NameError> {
        SliceName::new(&s)
    }
}

impl From<SliceName> for String {
    fn from(n: SliceName) -> String {
        n.0
    }
}

impl fmt::Display for SliceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planetlab_names_pass() {
        for ok in [
            "princeton_codeen",
            "a",
            "pl_sirius",
            "x1_2",
            &"a".repeat(32),
        ] {
            assert_eq!(SliceName::new(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn paths_and_odd_names_are_refused() {
        for bad in [
            "",
            "../etc",
            "a/b",
            "..",
            ".",
            "A_b",
            "1abc",
            "_abc",
            "a-b",
            "a b",
            "a\0",
            "ä",
            &"a".repeat(33),
        ] {
            assert!(SliceName::new(bad).is_err(), "{bad:?} accepted");
        }
        assert!(SliceName::new("a/b")
            .unwrap_err()
            .to_string()
            .contains("'/'"));
    }
}
