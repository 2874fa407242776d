//! Reconciliation with the boot server: the slices the server assigns to
//! the node (`GET /api/v1/node/slivers`, signed as the node) become
//! slivers; slivers of slices it no longer assigns go.
//!
//! The last answer that verified is kept on disk
//! (`<state>/slivers-answer.json`), so a node cut off from its server keeps
//! its slivers running, from that answer, until their leases end. Each
//! sliver is handled on its own: one sliver's failure never blocks the
//! others, and is reported.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use config::api::{Sliver, SliversResponse};
use config::rspec::Rspec;
use config::Timestamp;
use serde::Serialize;

use crate::keys::AuthorizedKeys;
use crate::name::SliceName;
use crate::service::{line, Service};
use crate::state::{Desired, Origin};

/// The saved answer's file name in the state directory.
pub const ANSWER_FILE: &str = "slivers-answer.json";

/// One slice as the server wants it on this node, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// The slice.
    pub slice: SliceName,
    /// Its rspec (lease end included).
    pub rspec: Rspec,
    /// Its users' keys.
    pub keys: AuthorizedKeys,
    /// Its initscript.
    pub initscript: Option<String>,
}

/// A server entry that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("slice {name:?} from the server: {reason}")]
pub struct BadSliver {
    /// The name as sent.
    pub name: String,
    /// What is wrong.
    pub reason: String,
}

/// Checks one entry of the server's answer.
pub fn check(sliver: &Sliver) -> Result<Wanted, BadSliver> {
    let bad = |reason: String| BadSliver {
        name: sliver.name.clone(),
        reason,
    };
    let slice = SliceName::new(&sliver.name).map_err(|e| bad(e.to_string()))?;
    sliver.rspec.validate().map_err(bad)?;
    let keys = AuthorizedKeys::try_from(sliver.ssh_keys.clone()).map_err(|e| bad(e.to_string()))?;
    if let Some(script) = &sliver.initscript {
        if script.len() > 64 * 1024 {
            return Err(bad("initscript longer than 64 KiB".into()));
        }
    }
    Ok(Wanted {
        slice,
        rspec: sliver.rspec.clone(),
        keys,
        initscript: sliver.initscript.clone(),
    })
}

/// What one pass did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Slivers made.
    pub created: Vec<SliceName>,
    /// Slivers whose rspec, keys or initscript changed.
    pub changed: Vec<SliceName>,
    /// Slivers started again (they should run and did not).
    pub restarted: Vec<SliceName>,
    /// Slivers removed (no longer assigned, or lease ended).
    pub removed: Vec<SliceName>,
    /// Failures, one per slice (or server entry), with the reason.
    pub failed: Vec<(String, String)>,
}

impl Report {
    /// Nothing changed and nothing failed.
    pub fn is_quiet(&self) -> bool {
        self.created.is_empty()
            && self.changed.is_empty()
            && self.restarted.is_empty()
            && self.removed.is_empty()
            && self.failed.is_empty()
    }
}

/// Makes the node's slivers match `answer` at `now`: creates, changes and
/// removes server slivers, ends leases (local slivers' too).
pub fn reconcile(service: &Service, answer: &SliversResponse, now: Timestamp) -> Report {
    let mut report = Report::default();
    if let Some(cap) = answer.bwcap {
        service.set_bandwidth(cap);
    }
    let mut wanted: BTreeMap<SliceName, Wanted> = BTreeMap::new();
    for sliver in &answer.slivers {
        match check(sliver) {
            Ok(w) if w.rspec.lease_end.is_some_and(|end| end <= now) => {
                tracing::debug!(slice = %w.slice, "lease ended: not made");
            }
            Ok(w) => {
                wanted.insert(w.slice.clone(), w);
            }
            Err(e) => report.failed.push((e.name.clone(), e.to_string())),
        }
    }
    let (ended, failed) = service.end_leases(now);
    report.removed.extend(ended);
    report
        .failed
        .extend(failed.into_iter().map(|(s, why)| (s.to_string(), why)));

    let states = match service.sliver_states() {
        Ok(s) => s,
        Err(e) => {
            report.failed.push(("*".into(), line(&e)));
            return report;
        }
    };
    // Slivers the server made and no longer wants.
    for state in &states {
        if state.origin == Origin::Server && !wanted.contains_key(&state.slice) {
            match service.delete(&crate::rcap::Principal::Node, &state.slice) {
                Ok(()) => report.removed.push(state.slice.clone()),
                Err(e) => report.failed.push((state.slice.to_string(), line(&e))),
            }
        }
    }
    for (slice, w) in wanted {
        let current = states.iter().find(|s| s.slice == slice);
        let result = match current {
            None => service
                .create_for_server(&slice, &w.rspec, &w.keys, w.initscript.clone())
                .map(|()| report.created.push(slice.clone())),
            Some(state) => (|| {
                let mut changed = false;
                if state.origin != Origin::Server {
                    service.adopt(&slice)?;
                }
                if state.rspec != w.rspec {
                    service.change_rspec(&slice, &w.rspec)?;
                    changed = true;
                }
                if state.keys != w.keys {
                    service.set_keys(&crate::rcap::Principal::Node, &slice, &w.keys)?;
                    changed = true;
                }
                if state.initscript != w.initscript {
                    service.set_initscript(&slice, w.initscript.clone())?;
                    changed = true;
                }
                if changed {
                    report.changed.push(slice.clone());
                }
                // A sliver that should run and does not (its PID 1 died):
                // start it again. One stopped by staff stays stopped.
                if state.desired == Desired::Running && !running(service, &slice) {
                    service
                        .manager()
                        .restore()
                        .map_err(crate::service::ServiceError::from)?;
                    service.after_start_in_background(slice.clone());
                    report.restarted.push(slice.clone());
                } else if !state.configured && running(service, &slice) {
                    // Its initscript or `configure` could not be run at
                    // its start: try again.
                    service.after_start_in_background(slice.clone());
                }
                Ok::<(), crate::service::ServiceError>(())
            })(),
        };
        if let Err(e) = result {
            report.failed.push((slice.to_string(), line(&e)));
        }
    }
    report
}

fn running(service: &Service, slice: &SliceName) -> bool {
    service
        .manager()
        .list()
        .ok()
        .and_then(|l| l.into_iter().find(|s| &s.slice == slice))
        .and_then(|s| s.pid)
        .is_some()
}

/// The saved answer of the server.
#[derive(Debug, Clone)]
pub struct SavedAnswer {
    path: PathBuf,
}

/// The saved answer could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    /// The file.
    #[error(transparent)]
    File(#[from] floor::durable::DurableError),
    /// Not a valid answer.
    #[error("{}: not a saved slivers answer: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl SavedAnswer {
    /// The saved answer in `state_dir`.
    pub fn new(state_dir: &Path) -> SavedAnswer {
        SavedAnswer {
            path: state_dir.join(ANSWER_FILE),
        }
    }

    /// The last answer that verified, if one was saved.
    pub fn load(&self) -> Result<Option<SliversResponse>, AnswerError> {
        let Some(bytes) = floor::durable::read_if_exists(&self.path)? else {
            return Ok(None);
        };
        parse_answer(&bytes)
            .map(Some)
            .map_err(|reason| AnswerError::Corrupt {
                path: self.path.clone(),
                reason,
            })
    }

    /// Keeps `answer` (replacing the old one atomically).
    pub fn save(&self, answer: &SliversResponse) -> Result<(), AnswerError> {
        let json = serde_json::to_vec_pretty(answer).map_err(|e| AnswerError::Corrupt {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| floor::durable::DurableError {
                op: floor::durable::Op::Write,
                path: dir.to_path_buf(),
                source,
            })?;
        }
        floor::durable::write_atomic_mode(&self.path, &json, 0o600)?;
        Ok(())
    }
}

/// Parses a saved (or received) answer's bytes.
pub fn parse_answer(bytes: &[u8]) -> Result<SliversResponse, String> {
    serde_json::from_slice(bytes).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_entries_are_checked_one_by_one() {
        let good = Sliver {
            name: "pl_good".into(),
            ssh_keys: vec!["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq8mCjRqUoFdjvQ2xAq3hQ6X7tq1z0Jg7oQyJ6l2S9u a@b".into()],
            rspec: Rspec::default(),
            initscript: Some("echo hi\n".into()),
        };
        assert_eq!(check(&good).unwrap().slice.as_str(), "pl_good");
        let mut bad = good.clone();
        bad.name = "../etc".into();
        assert!(check(&bad).is_err());
        let mut bad = good.clone();
        bad.ssh_keys = vec!["command=\"x\" ssh-ed25519 AAAA".into()];
        assert!(check(&bad).unwrap_err().to_string().contains("pl_good"));
        let mut bad = good;
        bad.rspec.cpu_share = 0;
        assert!(check(&bad).is_err());
    }
}
