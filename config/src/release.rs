//! What a node OS release is called, the same way on both sides: the node
//! names its deployments by it (DESIGN.md §4) and the boot server names the
//! release a rollout allows by it, both computed from the signed targets.
//!
//! A release's id is `<base version>-<8 hex digits>`, the digits being the
//! start of SHA-256 over each node package's name and signed SHA-256 in
//! [`NODE_PACKAGES`] order: any changed package makes a new id, and
//! re-signing the same packages (a new targets version to push out an
//! expiry) keeps it.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The packages of a node OS, in install order.
pub const NODE_PACKAGES: [&str; 3] = ["kernel", "base", "sliver-ref"];

/// A release's (and a deployment directory's) name: `<base version>-<8 hex digits>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DeploymentId(String);

/// A name that cannot be a deployment's directory.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a deployment id (letters, digits, `._-+`, not starting with `.`, at most 100)"
)]
pub struct DeploymentIdError(pub String);

impl DeploymentId {
    /// Checks that `s` can name a directory of its own.
    pub fn new(s: &str) -> Result<DeploymentId, DeploymentIdError> {
        let ok = !s.is_empty()
            && s.len() <= 100
            && !s.starts_with('.')
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-+".contains(c));
        if !ok {
            return Err(DeploymentIdError(s.to_string()));
        }
        Ok(DeploymentId(s.to_string()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The `base` version the id starts with.
    pub fn os_version(&self) -> &str {
        self.0.rsplit_once('-').map_or(&self.0, |(v, _)| v)
    }
}

impl TryFrom<String> for DeploymentId {
    type Error = String;
    fn try_from(s: String) -> Result<DeploymentId, String> {
        DeploymentId::new(&s).map_err(|e| e.to_string())
    }
}

impl From<DeploymentId> for String {
    fn from(d: DeploymentId) -> String {
        d.0
    }
}

impl std::str::FromStr for DeploymentId {
    type Err = DeploymentIdError;
    fn from_str(s: &str) -> Result<DeploymentId, DeploymentIdError> {
        DeploymentId::new(s)
    }
}

impl std::fmt::Display for DeploymentId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One node package as the signed targets describe it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignedPackage<'a> {
    /// The package name (`kernel`, `base`, `sliver-ref`).
    pub name: &'a str,
    /// Its signed version.
    pub version: &'a str,
    /// Its signed SHA-256.
    pub sha256: [u8; 32],
}

/// Why a set of signed packages is not a node OS release.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReleaseError {
    /// A node package is missing from the set.
    #[error("the signed repository has no `{0}` package")]
    MissingPackage(&'static str),
    /// The id formed from the `base` version cannot name a directory.
    #[error(transparent)]
    Id(#[from] DeploymentIdError),
}

/// The release id of the node packages in `packages` (other packages are
/// not part of a node OS and are ignored).
pub fn deployment_id(packages: &[SignedPackage<'_>]) -> Result<DeploymentId, ReleaseError> {
    let mut h = Sha256::new();
    let mut base_version = None;
    for name in NODE_PACKAGES {
        let p = packages
            .iter()
            .find(|p| p.name == name)
            .ok_or(ReleaseError::MissingPackage(name))?;
        if name == "base" {
            base_version = Some(p.version);
        }
        h.update(p.name.as_bytes());
        h.update(p.sha256);
    }
    let digest = hex::encode(h.finalize());
    let version = base_version.ok_or(ReleaseError::MissingPackage("base"))?;
    Ok(DeploymentId::new(&format!("{version}-{}", &digest[..8]))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkg(name: &'static str, version: &'static str, b: u8) -> SignedPackage<'static> {
        SignedPackage {
            name,
            version,
            sha256: [b; 32],
        }
    }

    #[test]
    fn ids_are_plain_names() {
        assert!(DeploymentId::new("1.2.0-deadbeef").is_ok());
        for bad in ["", "..", ".hidden", "a/b", "x y"] {
            assert!(DeploymentId::new(bad).is_err(), "{bad}");
        }
        assert_eq!(
            DeploymentId::new("2026.11.3-0a1b2c3d")
                .unwrap()
                .os_version(),
            "2026.11.3"
        );
    }

    #[test]
    fn the_id_follows_every_package_and_ignores_order_and_others() {
        let set = [
            pkg("base", "2", 1),
            pkg("kernel", "6.1", 2),
            pkg("sliver-ref", "1", 3),
        ];
        let id = deployment_id(&set).unwrap();
        assert!(id.as_str().starts_with("2-"), "{id}");
        let mut reordered = set;
        reordered.reverse();
        let mut with_other = reordered.to_vec();
        with_other.push(pkg("tools", "9", 4));
        assert_eq!(deployment_id(&with_other).unwrap(), id);
        let changed = [
            pkg("base", "2", 1),
            pkg("kernel", "6.1", 9),
            pkg("sliver-ref", "1", 3),
        ];
        assert_ne!(deployment_id(&changed).unwrap(), id);
        assert_eq!(
            deployment_id(&set[..2]),
            Err(ReleaseError::MissingPackage("sliver-ref"))
        );
    }
}
