//! Names from outside: slices and network interfaces, checked once.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A name that is not a valid slice or interface name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {name:?}: {problem}")]
pub struct NameError {
    /// "slice name" or "interface name".
    pub what: &'static str,
    /// The name as given.
    pub name: String,
    /// What is wrong with it.
    pub problem: &'static str,
}

/// A slice's name, PlanetLab style (`princeton_codeen`): 1 to 32 lowercase
/// letters, digits and `_`, starting with a letter.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SliceName(String);

impl SliceName {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for SliceName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<SliceName, NameError> {
        let error = |problem| NameError {
            what: "slice name",
            name: s.to_string(),
            problem,
        };
        if s.is_empty() || s.len() > 32 {
            return Err(error("must be 1 to 32 characters"));
        }
        if !s.starts_with(|c: char| c.is_ascii_lowercase()) {
            return Err(error("must start with a lowercase letter"));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(error("may hold only a-z, 0-9 and _"));
        }
        Ok(SliceName(s.to_string()))
    }
}

/// A network interface's name: 1 to 15 bytes, no `/`, `:` or white space.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InterfaceName(String);

impl InterfaceName {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for InterfaceName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<InterfaceName, NameError> {
        let error = |problem| NameError {
            what: "interface name",
            name: s.to_string(),
            problem,
        };
        if s.is_empty() || s.len() > 15 {
            return Err(error("must be 1 to 15 bytes"));
        }
        if s == "." || s == ".." {
            return Err(error("is not an interface"));
        }
        if s.bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0 || !b.is_ascii())
        {
            return Err(error("may not hold /, :, white space or non-ASCII"));
        }
        Ok(InterfaceName(s.to_string()))
    }
}

macro_rules! text_type {
    ($ty:ident) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<$ty, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
text_type!(SliceName);
text_type!(InterfaceName);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_names_follow_planetlab() {
        assert!("princeton_codeen".parse::<SliceName>().is_ok());
        for bad in ["", "1abc", "Abc", "a/b", "a..b", "a-b", &"a".repeat(33)] {
            assert!(bad.parse::<SliceName>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn interface_names_fit_ifnamsiz() {
        assert!("eth0".parse::<InterfaceName>().is_ok());
        for bad in ["", "a/b", "eth0:1", "a b", "..", "sixteen_bytes_xx"] {
            assert!(bad.parse::<InterfaceName>().is_err(), "{bad:?}");
        }
    }
}
