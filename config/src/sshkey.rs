//! One ssh public key line, as it may go into an `authorized_keys` file
//! that the boot server's lists fill (staff keys on the node and the CD,
//! slice users' keys in slivers): the key alone, never options.

/// Longest key line (an RSA 16384-bit key with a comment fits).
pub const MAX_LINE: usize = 16 * 1024;

/// Key types OpenSSH and dropbear accept.
pub const KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// Why a line is not one ssh public key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyLineError {
    /// Longer than [`MAX_LINE`].
    #[error("longer than {MAX_LINE} bytes")]
    TooLong,
    /// A control character (a line break would add a second line).
    #[error("holds a control character")]
    ControlCharacter,
    /// The first field is not a key type: options (`command=...`) are
    /// refused, so a server cannot make a key run something.
    #[error("{0:?} is not an ssh key type (key options are not accepted)")]
    NotAKeyType(String),
    /// Nothing after the type.
    #[error("no key after the type")]
    NoKey,
    /// The key is not base64 of a plausible length.
    #[error("the key is not base64")]
    NotBase64,
}

/// Checks that `line` is `TYPE BASE64 [comment]` and nothing else.
pub fn check_public_key(line: &str) -> Result<(), KeyLineError> {
    if line.len() > MAX_LINE {
        return Err(KeyLineError::TooLong);
    }
    if line.chars().any(|c| c.is_control() && c != '\t') {
        return Err(KeyLineError::ControlCharacter);
    }
    let mut fields = line.split_whitespace();
    let kind = fields.next().unwrap_or_default();
    if !KEY_TYPES.contains(&kind) {
        let shown: String = kind.chars().take(40).collect();
        return Err(KeyLineError::NotAKeyType(shown));
    }
    let blob = fields.next().ok_or(KeyLineError::NoKey)?;
    // The shortest real key (ed25519) is 68 characters of base64.
    if blob.len() < 32
        || !blob
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=')
    {
        return Err(KeyLineError::NotBase64);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq8mCjRqUoFdjvQ2xAq3hQ6X7tq1z0Jg7oQyJ6l2S9u alice@example.org";

    #[test]
    fn a_plain_key_with_or_without_a_comment_passes() {
        assert_eq!(check_public_key(KEY), Ok(()));
        let bare: String = KEY.split(' ').take(2).collect::<Vec<_>>().join(" ");
        assert_eq!(check_public_key(&bare), Ok(()));
    }

    #[test]
    fn options_short_keys_and_second_lines_are_refused() {
        for (bad, why) in [
            (format!("command=\"/bin/sh\" {KEY}"), "not an ssh key type"),
            (format!("no-pty {KEY}"), "not an ssh key type"),
            ("ssh-ed25519".into(), "no key"),
            ("ssh-ed25519 AAAA".into(), "not base64"),
            (
                "ssh-ed25519 not*base64!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!".into(),
                "not base64",
            ),
            (format!("{KEY}\n{KEY}"), "control character"),
            (format!("{KEY}\rx"), "control character"),
            (format!("{KEY} {}", "a".repeat(MAX_LINE)), "longer than"),
        ] {
            let e = check_public_key(&bad).unwrap_err();
            assert!(e.to_string().contains(why), "{bad:.60}: {e}");
        }
    }
}
