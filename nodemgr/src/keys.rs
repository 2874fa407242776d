//! The slice users' ssh public keys, as they go into `authorized_keys`.

use serde::{Deserialize, Serialize};

/// Most keys a slice may list.
pub const MAX_KEYS: usize = 256;
/// Longest key line.
pub use config::sshkey::MAX_LINE;

/// Checked `authorized_keys` lines: each holds one public key
/// (`type base64 [comment]`), nothing that could add a second line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<String>", into = "Vec<String>")]
pub struct AuthorizedKeys(Vec<String>);

/// A key list that was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// More than [`MAX_KEYS`].
    #[error("{0} keys: at most {MAX_KEYS} are allowed")]
    TooMany(usize),
    /// A line is not an ssh public key.
    #[error("line {line}: {reason}")]
    Bad {
        /// Line number, from 1.
        line: usize,
        /// What is wrong.
        reason: config::sshkey::KeyLineError,
    },
}

impl AuthorizedKeys {
    /// Parses an `authorized_keys`-style text: one key per line; blank
    /// lines and `#` comments are dropped.
    pub fn parse(text: &str) -> Result<AuthorizedKeys, KeyError> {
        let lines: Vec<(usize, &str)> = text
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.trim()))
            .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
            .collect();
        if lines.len() > MAX_KEYS {
            return Err(KeyError::TooMany(lines.len()));
        }
        let mut keys = Vec::with_capacity(lines.len());
        for (line, text) in lines {
            config::sshkey::check_public_key(text)
                .map_err(|reason| KeyError::Bad { line, reason })?;
            keys.push(text.to_string());
        }
        Ok(AuthorizedKeys(keys))
    }

    /// The keys, one line each.
    pub fn lines(&self) -> &[String] {
        &self.0
    }

    /// The file content.
    pub fn to_file(&self) -> String {
        self.0.iter().map(|k| format!("{k}\n")).collect()
    }
}

impl TryFrom<Vec<String>> for AuthorizedKeys {
    type Error = KeyError;
    fn try_from(v: Vec<String>) -> Result<AuthorizedKeys, KeyError> {
        if v.iter().any(|k| k.contains('\n')) {
            return Err(KeyError::Bad {
                line: 0,
                reason: config::sshkey::KeyLineError::ControlCharacter,
            });
        }
        AuthorizedKeys::parse(&v.join("\n"))
    }
}

impl From<AuthorizedKeys> for Vec<String> {
    fn from(k: AuthorizedKeys) -> Vec<String> {
        k.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq8mCjRqUoFdjvQ2xAq3hQ6X7tq1z0Jg7oQyJ6l2S9u alice@example.org";

    #[test]
    fn keys_comments_and_blank_lines() {
        let k = AuthorizedKeys::parse(&format!("# staff\n\n{KEY}\n  {KEY}  \n")).unwrap();
        assert_eq!(k.lines().len(), 2);
        assert_eq!(k.to_file(), format!("{KEY}\n{KEY}\n"));
    }

    #[test]
    fn options_and_garbage_are_refused() {
        for bad in [
            "command=\"/bin/sh\" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA",
            "ssh-ed25519",
            "ssh-ed25519 not*base64!!!!!!!!!!!!",
            "hello world",
        ] {
            assert!(AuthorizedKeys::parse(bad).is_err(), "{bad}");
        }
        let many = format!("{KEY}\n").repeat(MAX_KEYS + 1);
        assert!(matches!(
            AuthorizedKeys::parse(&many),
            Err(KeyError::TooMany(_))
        ));
        assert!(AuthorizedKeys::try_from(vec![format!("{KEY}\n{KEY}")]).is_err());
    }
}
