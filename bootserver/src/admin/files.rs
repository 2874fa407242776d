//! The files an admin hands the server (rspecs, init scripts, ssh key
//! lists) and the node config files it hands out.

use std::path::{Path, PathBuf};

use config::node::NodeConfig;
use config::rspec::Rspec;
use config::Location;

use super::AdminError;
use crate::model::SshPublicKey;

/// The two forms of a node config file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum NodeConfigFormat {
    /// `node.toml`, this project's form.
    #[default]
    NodeToml,
    /// PlanetLab's `plnode.txt` form.
    PlnodeTxt,
}

impl NodeConfigFormat {
    /// The file's text.
    pub fn render(self, config: &NodeConfig) -> String {
        match self {
            NodeConfigFormat::NodeToml => config.to_toml(),
            NodeConfigFormat::PlnodeTxt => config::plnode::to_plnode_txt(config),
        }
    }
}

/// Writes a node config file, mode 0600 (it holds the node's key), so that
/// a crash leaves the old file or the new one.
pub fn write_node_config(
    path: &Path,
    config: &NodeConfig,
    format: NodeConfigFormat,
) -> Result<(), AdminError> {
    floor::durable::write_atomic_mode(path, format.render(config).as_bytes(), 0o600).map_err(
        |source| AdminError::WriteConfig {
            path: path.to_path_buf(),
            source,
        },
    )
}

/// Reads a text file (an init script, for one).
pub fn read_text(path: &Path) -> Result<String, AdminError> {
    std::fs::read_to_string(path).map_err(|source| AdminError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads and checks an rspec TOML file (see `config/examples/rspec.toml`).
pub fn read_rspec(path: &Path) -> Result<Rspec, AdminError> {
    let text = read_text(path)?;
    let rspec: Rspec = toml::from_str(&text).map_err(|e| AdminError::RspecSyntax {
        location: location(path, &text, e.span().map(|s| s.start)),
        message: e.message().trim().to_string(),
    })?;
    rspec
        .validate()
        .map_err(|reason| AdminError::RspecInvalid {
            path: path.to_path_buf(),
            reason,
        })?;
    Ok(rspec)
}

/// The file, line and column of a byte offset in `text`.
fn location(path: &Path, text: &str, offset: Option<usize>) -> Location {
    let (line, column) = match offset {
        Some(offset) => {
            let before = text.get(..offset).unwrap_or(text);
            let line_start = before.rfind('\n').map_or(0, |i| i + 1);
            (
                Some(before.matches('\n').count() + 1),
                Some(before[line_start..].chars().count() + 1),
            )
        }
        None => (None, None),
    };
    Location {
        source: PathBuf::from(path),
        line,
        column,
    }
}

/// Reads ssh public keys, one per line; blank lines and `#` comments are
/// skipped, and at least one key must be there.
pub fn read_ssh_keys(path: &Path) -> Result<Vec<SshPublicKey>, AdminError> {
    let text = read_text(path)?;
    let keys = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(|(i, l)| {
            l.parse::<SshPublicKey>()
                .map_err(|source| AdminError::SshKey {
                    path: path.to_path_buf(),
                    line: i + 1,
                    source,
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if keys.is_empty() {
        return Err(AdminError::NoSshKeys {
            path: path.to_path_buf(),
        });
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rspec_errors_name_the_file_line_and_column_on_one_line() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("r.toml");
        std::fs::write(&path, "# resources\ncpu_share = \"x\"\n").unwrap();
        let e = read_rspec(&path).unwrap_err().to_string();
        assert!(e.starts_with(&format!("{}:2:13: ", path.display())), "{e}");
        assert!(e.contains("invalid type"), "{e}");
        assert!(!e.contains('\n'), "{e}");

        std::fs::write(&path, "cpu_share = 0\n").unwrap();
        let e = read_rspec(&path).unwrap_err().to_string();
        assert!(e.contains("cpu_share 0 is out of range"), "{e}");
    }

    #[test]
    fn key_files_need_keys_and_name_the_bad_line() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("keys");
        std::fs::write(&path, "# nobody\n\n").unwrap();
        assert!(matches!(
            read_ssh_keys(&path),
            Err(AdminError::NoSshKeys { .. })
        ));
        std::fs::write(
            &path,
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyBody a@b\nnot a key\n",
        )
        .unwrap();
        match read_ssh_keys(&path) {
            Err(AdminError::SshKey { line, .. }) => assert_eq!(line, 2),
            other => panic!("{other:?}"),
        }
    }
}
