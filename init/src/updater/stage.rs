//! Building the new deployment beside the running one.
//!
//! Like [`crate::install::build_deployment`], everything is assembled in
//! `deployments/.staging-<id>` and becomes `deployments/<id>` with one
//! rename after a syncfs, so a crash leaves either nothing or a complete
//! deployment. The difference: packages whose signed hash is unchanged are
//! copied from the running deployment ([`super::reuse`]) instead of being
//! downloaded; only the changed ones come from the download cache.

use std::fs;
use std::path::Path;

use anyhow::{anyhow, Context as _};
use pkgsign::fetch::DirFetcher;
use pkgsign::install::{InstallOptions, Manifest};
use pkgsign::{VerifiedPackage, VerifiedRepo};

use config::Timestamp;
use floor::durable::{sync_dir, write_atomic};

use super::download::Cache;
use super::reuse::{copy_installed_tree, ReuseError};
use super::space::SpaceNeeds;
use super::UpdateError;
use crate::console;
use crate::deploy::{
    DeployedPackage, DeploymentId, DeploymentRecord, Disk,
};
use crate::install::{sync_tree_fs, PACKAGES};

/// Which packages come from where.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Unchanged: copied from the running deployment (its record entry).
    pub reuse: Vec<(VerifiedPackage, DeployedPackage)>,
    /// Changed or new: downloaded.
    pub download: Vec<VerifiedPackage>,
}

impl Plan {
    /// Compares the signed packages with what the running deployment holds.
    pub fn new(packages: &[VerifiedPackage], running: &DeploymentRecord) -> Plan {
        let mut plan = Plan {
            reuse: Vec::new(),
            download: Vec::new(),
        };
        for p in packages {
            let sha = hex::encode(p.info().sha256().0);
            match running
                .packages
                .iter()
                .find(|d| d.name == p.name() && d.sha256 == sha)
            {
                Some(d) => plan.reuse.push((p.clone(), d.clone())),
                None => plan.download.push(p.clone()),
            }
        }
        plan
    }

    /// Space the plan takes at its peak, given what the cache already holds.
    pub fn needs(&self, cache: &Cache) -> SpaceNeeds {
        let all = self
            .download
            .iter()
            .chain(self.reuse.iter().map(|(p, _)| p));
        SpaceNeeds {
            download: self
                .download
                .iter()
                .map(|p| p.info().length - cache.have(p))
                .sum(),
            content: all.map(|p| p.info().unpacked_limit()).sum(),
        }
    }

    pub fn reused_names(&self) -> Vec<String> {
        self.reuse
            .iter()
            .map(|(p, _)| p.name().to_string())
            .collect()
    }

    pub fn downloaded_names(&self) -> Vec<String> {
        self.download.iter().map(|p| p.name().to_string()).collect()
    }
}

fn package_dir(name: &str) -> &str {
    PACKAGES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, d)| *d)
        .unwrap_or(name)
}

/// What a new deployment is built from.
pub struct Build<'a> {
    pub disk: &'a Disk,
    pub repo: &'a VerifiedRepo,
    pub packages: &'a [VerifiedPackage],
    pub id: &'a DeploymentId,
    pub plan: &'a Plan,
    /// The running deployment, source of the reused packages.
    pub running: &'a DeploymentRecord,
    /// Holds the downloaded packages, verified.
    pub cache: &'a Cache,
}

impl Build<'_> {
    /// Builds the deployment per the plan. When a reused tree turns out to
    /// differ from what was installed, `fetch_instead` is asked to put that
    /// package into the cache, and it is installed from there. Returns the
    /// record and the names of the packages that had to be fetched instead.
    pub fn run(
        &self,
        fetch_instead: &mut dyn FnMut(&VerifiedPackage) -> Result<(), UpdateError>,
    ) -> Result<(DeploymentRecord, Vec<String>), UpdateError> {
        let deployments = self.disk.deployments_dir();
        let staging = deployments.join(format!(".staging-{}", self.id));
        pkgsign::install::remove_tree(&staging)
            .with_context(|| format!("removing the unfinished {}", staging.display()))
            .map_err(UpdateError::Local)?;
        fs::create_dir_all(&staging)
            .with_context(|| format!("creating {}", staging.display()))
            .map_err(UpdateError::Local)?;
        let result = self
            .fill(&staging, fetch_instead)
            .and_then(|(record, fetched)| {
                sync_tree_fs(&staging).map_err(UpdateError::Local)?;
                fs::rename(&staging, self.disk.deployment_path(self.id))
                    .with_context(|| format!("committing deployment {}", self.id))
                    .map_err(UpdateError::Local)?;
                sync_dir(&deployments).map_err(|e| UpdateError::Local(e.into()))?;
                Ok((record, fetched))
            });
        if result.is_err() {
            let _ = pkgsign::install::remove_tree(&staging);
        }
        result
    }

    /// Tries to copy a reused package; `None` when it must be fetched instead.
    fn copy_reused(
        &self,
        p: &VerifiedPackage,
        old: &DeployedPackage,
        dest: &Path,
    ) -> Result<Option<Manifest>, UpdateError> {
        let running_dir = self.disk.deployment_path(&self.running.id);
        let manifest_path = running_dir.join(&old.manifest);
        let installed = fs::read(&manifest_path)
            .map_err(|e| e.to_string())
            .and_then(|b| Manifest::from_json(&b));
        let manifest = match installed {
            Ok(m) => m,
            Err(e) => {
                console::line(&format!(
                    "updater: package {}: cannot read its manifest {}: {e}; downloading it instead",
                    p.name(),
                    manifest_path.display()
                ));
                return Ok(None);
            }
        };
        match copy_installed_tree(&running_dir.join(&old.dir), dest, &manifest) {
            Ok(bytes) => {
                console::line(&format!(
                    "updater: package {} {}: unchanged, copied {} from the running deployment and checked",
                    p.name(),
                    p.info().version,
                    super::space::human(bytes)
                ));
                Ok(Some(manifest))
            }
            Err(ReuseError::Changed { path, problem }) => {
                console::line(&format!(
                    "updater: package {}: the running copy differs from what was installed ({path}: {problem}); downloading it instead",
                    p.name()
                ));
                pkgsign::install::remove_tree(dest)
                    .with_context(|| format!("removing {}", dest.display()))
                    .map_err(UpdateError::Local)?;
                Ok(None)
            }
            Err(e @ ReuseError::Io { .. }) => Err(UpdateError::Local(anyhow!(
                "copying package {}: {e}",
                p.name()
            ))),
        }
    }

    fn fill(
        &self,
        staging: &Path,
        fetch_instead: &mut dyn FnMut(&VerifiedPackage) -> Result<(), UpdateError>,
    ) -> Result<(DeploymentRecord, Vec<String>), UpdateError> {
        let mut deployed = Vec::new();
        let mut fetched_instead = Vec::new();
        for p in self.packages {
            let dir = package_dir(p.name());
            let dest = staging.join(dir);
            let reused = self.plan.reuse.iter().find(|(r, _)| r.name() == p.name());
            let mut manifest = None;
            if let Some((_, old)) = reused {
                manifest = self.copy_reused(p, old, &dest)?;
                if manifest.is_none() {
                    fetch_instead(p)?;
                    fetched_instead.push(p.name().to_string());
                }
            }
            let manifest = match manifest {
                Some(m) => m,
                None => {
                    let report = pkgsign::install::install(
                        &DirFetcher::new(self.cache.dir()),
                        std::slice::from_ref(p),
                        &dest,
                        &InstallOptions::default(),
                    )
                    .map_err(|e| UpdateError::PackageRefused(e.to_string()))?;
                    console::line(&format!(
                        "updater: package {} {}: installed ({} of content)",
                        p.name(),
                        p.info().version,
                        super::space::human(report.unpacked_bytes)
                    ));
                    report.manifest
                }
            };
            let manifest_file = format!("{dir}.manifest.json");
            write_atomic(&staging.join(&manifest_file), &manifest.to_json()).map_err(|e| UpdateError::Local(e.into()))?;
            deployed.push(DeployedPackage {
                name: p.name().to_string(),
                version: p.info().version.clone(),
                sha256: hex::encode(p.info().sha256().0),
                length: p.info().length,
                dir: dir.to_string(),
                manifest: manifest_file,
            });
        }
        let os_version = self
            .packages
            .iter()
            .find(|p| p.name() == "base")
            .map(|p| p.info().version.clone())
            .unwrap_or_default();
        let record = DeploymentRecord {
            id: self.id.clone(),
            os_version,
            created: Timestamp::now(),
            targets_version: self.repo.targets_version,
            packages: deployed,
        };
        let json = serde_json::to_vec_pretty(&record)
            .context("encoding deployment.json")
            .map_err(UpdateError::Local)?;
        write_atomic(&staging.join("deployment.json"), &json).map_err(|e| UpdateError::Local(e.into()))?;
        Ok((record, fetched_instead))
    }
}
