//! Deployments on the installed disk (DESIGN.md §4).
//!
//! Each installed OS version is a directory `deployments/<id>/` holding the
//! packages and a record of the signed metadata they came from. Which one
//! runs is a symlink (`current`), switched by renaming a new symlink over
//! it, so after a crash at any instant it names either the old or the new
//! deployment, never a half-written one. `previous` keeps the one before for
//! rollback; `staged` is where the updater leaves a new deployment for the
//! CD to activate; `bootcount.json` marks a deployment on trial.
//!
//! [`build`] makes a deployment from verified packages (the CD's reinstall
//! and the updater both use it); [`reuse`] copies an unchanged package from
//! the running deployment, checked against its manifest.

pub mod build;
pub mod reuse;

pub use build::{
    check_deployment, deployment_id, human, node_packages, Build, BuildError, Built, Plan,
};

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _};
use floor::durable::{sync_dir, write_atomic};
use serde::{Deserialize, Serialize};

use config::Timestamp;

/// A deployment's name, `<base version>-<8 hex digits>`: the id of the
/// release it holds (`config::release`, computed alike by the boot server).
pub use config::release::{DeploymentId, DeploymentIdError};

/// One package of a deployment, as the signed metadata described it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployedPackage {
    pub name: String,
    pub version: String,
    pub sha256: String,
    pub length: u64,
    /// Directory inside the deployment (`kernel`, `root`, `sliver-ref`).
    pub dir: String,
    /// File holding the manifest of what was extracted.
    pub manifest: String,
}

/// `deployments/<id>/deployment.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentRecord {
    pub id: DeploymentId,
    /// The `base` package's version: the OS version reported to the server.
    pub os_version: String,
    pub created: Timestamp,
    pub targets_version: u64,
    pub packages: Vec<DeployedPackage>,
}

/// `bootcount.json`: a deployment on trial and the boots it has left.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootCount {
    pub deployment: DeploymentId,
    pub attempts_left: u32,
}

/// A request for a full check of the deployment at the next boot.
pub const FULL_CHECK_FILE: &str = "check-next-boot";

/// How many boots a new deployment gets to prove itself.
pub const TRIAL_BOOTS: u32 = 3;

/// A denied deployment and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Denied {
    pub deployment: DeploymentId,
    pub os_version: String,
    pub reason: String,
    pub at: Timestamp,
}

/// The installed disk, mounted at `root`.
#[derive(Debug, Clone)]
pub struct Disk {
    pub root: PathBuf,
}

impl Disk {
    pub fn new(root: &Path) -> Disk {
        Disk {
            root: root.to_path_buf(),
        }
    }

    pub fn deployments_dir(&self) -> PathBuf {
        self.root.join("deployments")
    }
    pub fn trust_dir(&self) -> PathBuf {
        self.root.join("trust")
    }
    /// What the running system writes (its /root and /var), kept apart
    /// from the deployments.
    pub fn state_dir(&self) -> PathBuf {
        self.root.join("state")
    }
    pub fn log_dir(&self) -> PathBuf {
        self.root.join("log")
    }
    pub fn node_config_path(&self) -> PathBuf {
        self.root.join("node.toml")
    }
    pub fn deployment_path(&self, id: &DeploymentId) -> PathBuf {
        self.deployments_dir().join(id.as_str())
    }

    /// Creates the top-level directories of a fresh disk.
    pub fn create_layout(&self) -> anyhow::Result<()> {
        for d in [self.deployments_dir(), self.trust_dir(), self.log_dir()] {
            fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        }
        Ok(sync_dir(&self.root)?)
    }

    /// Reads a pointer (`current`, `previous`, `staged`); `None` if absent.
    pub fn link(&self, name: &str) -> anyhow::Result<Option<DeploymentId>> {
        let path = self.root.join(name);
        match fs::read_link(&path) {
            Ok(target) => {
                let last = target
                    .file_name()
                    .ok_or_else(|| anyhow!("{} points at {}", path.display(), target.display()))?;
                Ok(Some(DeploymentId::new(&last.to_string_lossy())?))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Points `name` at deployment `id`, atomically.
    pub fn set_link(&self, name: &str, id: &DeploymentId) -> anyhow::Result<()> {
        let tmp = self.root.join(format!(".{name}.new"));
        let _ = fs::remove_file(&tmp);
        std::os::unix::fs::symlink(Path::new("deployments").join(id.as_str()), &tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        fs::rename(&tmp, self.root.join(name))
            .with_context(|| format!("switching {name} to {id}"))?;
        Ok(sync_dir(&self.root)?)
    }

    /// Removes pointer `name` (no error if absent).
    pub fn clear_link(&self, name: &str) -> anyhow::Result<()> {
        match fs::remove_file(self.root.join(name)) {
            Ok(()) => Ok(sync_dir(&self.root)?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing {name}")),
        }
    }

    pub fn record(&self, id: &DeploymentId) -> anyhow::Result<DeploymentRecord> {
        let path = self.deployment_path(id).join("deployment.json");
        let bytes = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let record: DeploymentRecord = serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is damaged", path.display()))?;
        if &record.id != id {
            bail!("{} describes {} instead", path.display(), record.id);
        }
        Ok(record)
    }

    fn read_json<T: for<'de> Deserialize<'de>>(&self, name: &str) -> anyhow::Result<Option<T>> {
        let path = self.root.join(name);
        match fs::read(&path) {
            Ok(bytes) => {
                Ok(Some(serde_json::from_slice(&bytes).with_context(|| {
                    format!("{} is damaged", path.display())
                })?))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Asks the CD to re-hash every file of the deployment at the next boot
    /// (staff, after suspecting the disk; tests).
    pub fn request_full_check(&self) -> anyhow::Result<()> {
        Ok(write_atomic(&self.root.join(FULL_CHECK_FILE), b"full\n")?)
    }

    /// Whether a full check was asked for; the request is used up.
    pub fn take_full_check_request(&self) -> anyhow::Result<bool> {
        Ok(floor::durable::remove_file(
            &self.root.join(FULL_CHECK_FILE),
        )?)
    }

    pub fn bootcount(&self) -> anyhow::Result<Option<BootCount>> {
        self.read_json("bootcount.json")
    }

    pub fn set_bootcount(&self, count: &BootCount) -> anyhow::Result<()> {
        Ok(write_atomic(
            &self.root.join("bootcount.json"),
            &serde_json::to_vec_pretty(count)?,
        )?)
    }

    pub fn clear_bootcount(&self) -> anyhow::Result<()> {
        match fs::remove_file(self.root.join("bootcount.json")) {
            Ok(()) => Ok(sync_dir(&self.root)?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).context("removing bootcount.json"),
        }
    }

    pub fn denylist(&self) -> anyhow::Result<Vec<Denied>> {
        Ok(self.read_json("denylist.json")?.unwrap_or_default())
    }

    pub fn deny(&self, entry: Denied) -> anyhow::Result<()> {
        let mut list = self.denylist()?;
        list.retain(|d| d.deployment != entry.deployment);
        list.push(entry);
        Ok(write_atomic(
            &self.root.join("denylist.json"),
            &serde_json::to_vec_pretty(&list)?,
        )?)
    }

    /// Deletes deployments that no pointer names (and leftover staging dirs).
    pub fn prune(&self) -> anyhow::Result<Vec<String>> {
        let keep: Vec<DeploymentId> = ["current", "previous", "staged"]
            .iter()
            .filter_map(|n| self.link(n).ok().flatten())
            .collect();
        let trial = self.bootcount()?.map(|b| b.deployment);
        let mut removed = Vec::new();
        let Ok(entries) = fs::read_dir(self.deployments_dir()) else {
            return Ok(removed);
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let kept = keep.iter().chain(trial.iter()).any(|k| k.as_str() == name);
            if !kept {
                fs::remove_dir_all(e.path())
                    .with_context(|| format!("removing {}", e.path().display()))?;
                removed.push(name);
            }
        }
        if !removed.is_empty() {
            sync_dir(&self.deployments_dir())?;
        }
        Ok(removed)
    }

    /// Makes `id` the running deployment, keeping the one before as
    /// `previous`; with `trial`, it must prove itself within TRIAL_BOOTS boots.
    pub fn activate(&self, id: &DeploymentId, trial: bool) -> anyhow::Result<()> {
        let old = self.link("current")?;
        if trial {
            // The count is written before the switch: a crash in between
            // leaves a count for a deployment that is not current, which
            // `boot_decision` ignores.
            self.set_bootcount(&BootCount {
                deployment: id.clone(),
                attempts_left: TRIAL_BOOTS,
            })?;
        }
        if let Some(old) = old.filter(|o| o != id) {
            self.set_link("previous", &old)?;
        }
        self.set_link("current", id)
    }
}

/// What the CD should boot, given the pointers and the trial count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootChoice {
    /// Nothing installed.
    Nothing,
    /// Boot `current`; `attempts_left` is set while it is on trial.
    Current {
        id: DeploymentId,
        trial: Option<u32>,
    },
    /// The trial of `failed` is over: deny it and go back to `previous`.
    RollBack {
        failed: DeploymentId,
        to: DeploymentId,
    },
}

/// Decides what to boot (pure, for tests and for the CD).
pub fn boot_decision(
    current: Option<DeploymentId>,
    previous: Option<DeploymentId>,
    count: Option<BootCount>,
) -> BootChoice {
    let Some(current) = current else {
        return BootChoice::Nothing;
    };
    match count {
        Some(c) if c.deployment == current => {
            if c.attempts_left == 0 {
                match previous {
                    Some(to) if to != current => BootChoice::RollBack {
                        failed: current,
                        to,
                    },
                    // Nothing to go back to: keep trying the only OS there is.
                    _ => BootChoice::Current {
                        id: current,
                        trial: None,
                    },
                }
            } else {
                BootChoice::Current {
                    id: current,
                    trial: Some(c.attempts_left),
                }
            }
        }
        _ => BootChoice::Current {
            id: current,
            trial: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> DeploymentId {
        DeploymentId::new(s).unwrap()
    }

    #[test]
    fn activation_keeps_the_previous_and_prunes_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::new(dir.path());
        disk.create_layout().unwrap();
        for d in ["v1-aaaaaaaa", "v2-bbbbbbbb", "v3-cccccccc"] {
            fs::create_dir_all(disk.deployments_dir().join(d)).unwrap();
        }
        fs::create_dir_all(disk.deployments_dir().join(".staging-v4")).unwrap();
        disk.activate(&id("v1-aaaaaaaa"), false).unwrap();
        assert_eq!(disk.link("previous").unwrap(), None);
        disk.activate(&id("v2-bbbbbbbb"), false).unwrap();
        disk.activate(&id("v3-cccccccc"), true).unwrap();
        assert_eq!(disk.link("current").unwrap(), Some(id("v3-cccccccc")));
        assert_eq!(disk.link("previous").unwrap(), Some(id("v2-bbbbbbbb")));
        assert_eq!(
            disk.bootcount().unwrap().unwrap().attempts_left,
            TRIAL_BOOTS
        );
        let mut removed = disk.prune().unwrap();
        removed.sort();
        assert_eq!(removed, [".staging-v4", "v1-aaaaaaaa"]);
        assert!(disk.deployment_path(&id("v2-bbbbbbbb")).exists());
    }

    #[test]
    fn a_trial_that_runs_out_rolls_back() {
        let (a, b) = (id("a-1"), id("b-2"));
        assert_eq!(boot_decision(None, None, None), BootChoice::Nothing);
        assert_eq!(
            boot_decision(Some(b.clone()), Some(a.clone()), None),
            BootChoice::Current {
                id: b.clone(),
                trial: None
            }
        );
        let on_trial = BootCount {
            deployment: b.clone(),
            attempts_left: 2,
        };
        assert_eq!(
            boot_decision(Some(b.clone()), Some(a.clone()), Some(on_trial)),
            BootChoice::Current {
                id: b.clone(),
                trial: Some(2)
            }
        );
        let spent = BootCount {
            deployment: b.clone(),
            attempts_left: 0,
        };
        assert_eq!(
            boot_decision(Some(b.clone()), Some(a.clone()), Some(spent.clone())),
            BootChoice::RollBack {
                failed: b.clone(),
                to: a.clone()
            }
        );
        assert_eq!(
            boot_decision(Some(b.clone()), None, Some(spent)),
            BootChoice::Current {
                id: b.clone(),
                trial: None
            }
        );
        // A count left for a deployment that is not current is stale.
        let stale = BootCount {
            deployment: a.clone(),
            attempts_left: 0,
        };
        assert_eq!(
            boot_decision(Some(b.clone()), Some(a), Some(stale)),
            BootChoice::Current { id: b, trial: None }
        );
    }

    #[test]
    fn denylist_and_atomic_files_survive_rewrites() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::new(dir.path());
        disk.create_layout().unwrap();
        let entry = Denied {
            deployment: id("b-2"),
            os_version: "2".into(),
            reason: "services unhealthy".into(),
            at: Timestamp::from_unix(1),
        };
        disk.deny(entry.clone()).unwrap();
        disk.deny(entry.clone()).unwrap();
        assert_eq!(disk.denylist().unwrap(), vec![entry]);
        fs::write(dir.path().join("bootcount.json"), "{garbage").unwrap();
        assert!(disk
            .bootcount()
            .unwrap_err()
            .to_string()
            .contains("damaged"));
    }
}
