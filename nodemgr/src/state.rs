//! One state file per sliver (`<state>/slivers/<slice>.json`), written
//! atomically: what the sliver is (rspec, users' keys, id range) and
//! whether it should be running. After a reboot, `restore` starts every
//! sliver whose file says so.

use std::path::{Path, PathBuf};

use config::rspec::Rspec;
use config::Timestamp;
use serde::{Deserialize, Serialize};

use crate::ids::IdRange;
use crate::keys::AuthorizedKeys;
use crate::name::SliceName;

/// Whether a sliver should run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Desired {
    /// Started at boot and kept running.
    Running,
    /// Left stopped.
    Stopped,
}

/// The persisted description of one sliver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SliverState {
    /// The slice.
    pub slice: SliceName,
    /// Resources in effect.
    pub rspec: Rspec,
    /// The slice users' ssh keys.
    pub keys: AuthorizedKeys,
    /// The sliver's host ids.
    pub ids: IdRange,
    /// When it was created.
    pub created: Timestamp,
    /// Whether it should be running.
    pub desired: Desired,
    /// Who made it, and so who may take it away.
    #[serde(default)]
    pub origin: Origin,
    /// The server's initscript for the slice, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initscript: Option<String>,
    /// The server's initscript has run (once after creation; kept apart
    /// from `configured` so that a `configure` that could not be run is
    /// tried again without running the initscript twice).
    #[serde(default)]
    pub initscript_ran: bool,
    /// The once-after-creation steps (initscript, `configure`) have run.
    #[serde(default)]
    pub configured: bool,
}

/// Who made a sliver.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// The boot server assigned the slice to the node: reconciliation
    /// creates, changes and removes it to match the server.
    Server,
    /// Made on the node (staff's command line, a broker's bind): the
    /// server's list leaves it alone; its lease still ends it.
    #[default]
    Local,
}

/// What went wrong with a state file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading or writing failed.
    #[error(transparent)]
    File(#[from] floor::durable::DurableError),
    /// The file does not hold a valid state.
    #[error("{}: not a valid sliver state: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl SliverState {
    /// The state file of `slice` in `dir`.
    pub fn path(dir: &Path, slice: &SliceName) -> PathBuf {
        dir.join(format!("{slice}.json"))
    }

    /// Reads the state of `slice`; `None` when there is none.
    pub fn load(dir: &Path, slice: &SliceName) -> Result<Option<SliverState>, StateError> {
        let path = SliverState::path(dir, slice);
        let Some(bytes) = floor::durable::read_if_exists(&path)? else {
            return Ok(None);
        };
        let state = parse_state(&bytes).map_err(|reason| StateError::Corrupt {
            path: path.clone(),
            reason,
        })?;
        if &state.slice != slice {
            return Err(StateError::Corrupt {
                path,
                reason: format!("describes slice {}", state.slice),
            });
        }
        Ok(Some(state))
    }

    /// Writes the state (replacing the old one atomically).
    pub fn save(&self, dir: &Path) -> Result<(), StateError> {
        let path = SliverState::path(dir, &self.slice);
        let json = serde_json::to_vec_pretty(self).map_err(|e| StateError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        floor::durable::write_atomic_mode(&path, &json, 0o600)?;
        Ok(())
    }

    /// Removes the state file.
    pub fn remove(dir: &Path, slice: &SliceName) -> Result<(), StateError> {
        floor::durable::remove_file(&SliverState::path(dir, slice))?;
        Ok(())
    }

    /// The slices that have a state file in `dir`, sorted.
    pub fn list(dir: &Path) -> Result<Vec<SliceName>, StateError> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(floor::durable::DurableError {
                    op: floor::durable::Op::Read,
                    path: dir.to_path_buf(),
                    source,
                }
                .into())
            }
        };
        let mut names: Vec<SliceName> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_suffix(".json")
                    .and_then(|n| SliceName::new(n).ok())
            })
            .collect();
        names.sort();
        Ok(names)
    }
}

/// Parses and checks a state file's bytes.
pub fn parse_state(bytes: &[u8]) -> Result<SliverState, String> {
    let state: SliverState = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    state.rspec.validate()?;
    Ok(state)
}
