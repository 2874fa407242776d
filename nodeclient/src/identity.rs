//! What an installed node knows about itself for talking to its boot
//! server: its config (`/plnode/node.toml`: id, key, server URLs, proxy),
//! the boot server's CA (`/plnode/trust/ca.pem`, from the CD) and the CD's
//! hand-over note (its server URLs and clock floor).

use std::path::{Path, PathBuf};

use config::NodeConfig;

use crate::client::{ClientError, ServerClient};
use config::handover::Handover;

/// A node's identity and trust roots, read from its partition.
#[derive(Debug, Clone)]
pub struct NodeIdentity {
    /// The node config.
    pub config: NodeConfig,
    /// The boot server CA (PEM).
    pub ca_pem: Vec<u8>,
    /// The CD's hand-over note, when there is one.
    pub handover: Option<Handover>,
}

/// The identity could not be read.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The node config.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// A file could not be read.
    #[error("reading {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The system's reason.
        #[source]
        source: std::io::Error,
    },
    /// The hand-over note is not valid JSON of its type.
    #[error("{}: not a hand-over note", path.display())]
    Handover {
        /// The file.
        path: PathBuf,
        /// The parser's reason.
        #[source]
        source: serde_json::Error,
    },
}

impl NodeIdentity {
    /// Reads `<partition>/node.toml`, `<partition>/trust/ca.pem` and, when
    /// it exists, the hand-over note at `handover`.
    pub fn load(partition: &Path, handover: &Path) -> Result<NodeIdentity, IdentityError> {
        let config = NodeConfig::load(&partition.join("node.toml"))?;
        let ca_path = partition.join("trust/ca.pem");
        let ca_pem = std::fs::read(&ca_path).map_err(|source| IdentityError::Read {
            path: ca_path,
            source,
        })?;
        let handover =
            match std::fs::read(handover) {
                Ok(bytes) => Some(serde_json::from_slice(&bytes).map_err(|source| {
                    IdentityError::Handover {
                        path: handover.to_path_buf(),
                        source,
                    }
                })?),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(source) => {
                    return Err(IdentityError::Read {
                        path: handover.to_path_buf(),
                        source,
                    })
                }
            };
        Ok(NodeIdentity {
            config,
            ca_pem,
            handover,
        })
    }

    /// A client signing as this node.
    pub fn client(&self) -> Result<ServerClient, ClientError> {
        ServerClient::new(
            &self.ca_pem,
            Handover::server_urls(&self.config, self.handover.as_ref()),
            self.config.proxy.clone(),
            Handover::clock_floor(self.handover.as_ref()),
            Some((self.config.node_id, self.config.key.clone())),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_broken_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let e = NodeIdentity::load(dir.path(), &dir.path().join("handover.json")).unwrap_err();
        assert!(e.to_string().contains("node.toml"), "{e}");
        let e = ServerClient::new(b"", vec![], None, std::time::UNIX_EPOCH, None).unwrap_err();
        assert!(matches!(e, ClientError::NoServer), "{e}");
    }
}
