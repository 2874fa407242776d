//! `pending.json`: the staff's unsigned working list between `repo add` and
//! `repo publish`. Never served, never trusted by a verifier.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::RepoError;
use crate::metadata::TargetInfo;

/// The changes the next publish applies (`pending.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pending {
    /// Packages to add or replace, by name.
    #[serde(default)]
    pub add: BTreeMap<String, TargetInfo>,
    /// Packages to drop from the published set.
    #[serde(default)]
    pub remove: BTreeSet<String>,
}

impl Pending {
    /// Whether a publish would change no package.
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }

    /// Reads `pending.json`; a missing file is an empty list, one that does
    /// not parse is [`RepoError::Corrupt`].
    pub fn load(path: &Path) -> Result<Pending, RepoError> {
        let bytes = floor::durable::read_if_exists(path).map_err(|e| RepoError::Io {
            path: path.into(),
            source: e.into(),
        })?;
        let Some(bytes) = bytes else {
            return Ok(Pending::default());
        };
        let value = crate::canonical::parse(&bytes).map_err(|e| RepoError::Corrupt {
            path: path.into(),
            reason: e.to_string(),
        })?;
        serde_json::from_value(value).map_err(|e| RepoError::Corrupt {
            path: path.into(),
            reason: e.to_string(),
        })
    }

    /// Writes `pending.json` atomically (the old list or the new, never a mix).
    pub fn save(&self, path: &Path) -> Result<(), RepoError> {
        let mut bytes = serde_json::to_vec_pretty(self).map_err(|e| RepoError::Corrupt {
            path: path.into(),
            reason: e.to_string(),
        })?;
        bytes.push(b'\n');
        floor::durable::write_atomic(path, &bytes).map_err(|e| RepoError::Io {
            path: path.into(),
            source: e.into(),
        })
    }

    /// The package set after applying this list to `published`.
    pub fn apply(&self, published: &BTreeMap<String, TargetInfo>) -> BTreeMap<String, TargetInfo> {
        let mut out = published.clone();
        for name in &self.remove {
            out.remove(name);
        }
        for (name, info) in &self.add {
            out.insert(name.clone(), info.clone());
        }
        out
    }
}
