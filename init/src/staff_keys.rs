//! Staff ssh keys from the boot server, installed as root's
//! `authorized_keys` (on the CD in `debug`, and on the installed node).

use std::path::Path;

use anyhow::Context as _;

/// Whether `line` is one public key (`TYPE BASE64 [comment]`) and nothing
/// else: no options (a server must not be able to add `command=`), no
/// second line.
pub fn plausible_key(line: &str) -> bool {
    config::sshkey::check_public_key(line.trim()).is_ok()
}

/// The authorized_keys text for `keys` (implausible ones left out, with a warning).
pub fn render(keys: &[String]) -> String {
    let mut out = String::from("# staff keys from the boot server; rewritten at every check-in\n");
    for k in keys {
        if plausible_key(k) {
            out.push_str(k.trim());
            out.push('\n');
        } else {
            tracing::warn!(
                "ignoring a staff key that is not one ssh public key: {:.40}…",
                k
            );
        }
    }
    out
}

/// Writes `root/root/.ssh/authorized_keys` when it differs. Returns
/// whether it changed.
pub fn install(root: &Path, keys: &[String]) -> anyhow::Result<bool> {
    use std::os::unix::fs::PermissionsExt;
    let dir = root.join("root/.ssh");
    let path = dir.join("authorized_keys");
    let text = render(keys);
    if std::fs::read_to_string(&path).ok().as_deref() == Some(text.as_str()) {
        return Ok(false);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("securing {}", dir.display()))?;
    floor::durable::write_atomic_mode(&path, text.as_bytes(), 0o600)
        .with_context(|| format!("replacing {}", path.display()))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMJk0nSqhYk0a2TQUKh0nvPPr1uY7iR6Ck3BK2dq8r0n staff@central";

    #[test]
    fn only_plain_public_keys_are_accepted() {
        assert!(plausible_key(KEY));
        assert!(!plausible_key(&format!("command=\"/bin/sh\" {KEY}")));
        assert!(!plausible_key("ssh-ed25519 short"));
        assert!(!plausible_key(&format!("{KEY}\nssh-rsa AAAA")));
        assert!(!plausible_key(""));
    }

    #[test]
    fn keys_are_installed_privately_and_only_rewritten_on_change() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        assert!(install(root.path(), &[KEY.to_string(), "junk".to_string()]).unwrap());
        let path = root.path().join("root/.ssh/authorized_keys");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(KEY) && !text.contains("junk"));
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            std::fs::metadata(root.path().join("root/.ssh"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o700
        );
        assert!(!install(root.path(), &[KEY.to_string()]).unwrap());
        assert!(install(root.path(), &[]).unwrap());
        assert!(!std::fs::read_to_string(&path).unwrap().contains(KEY));
    }
}
