//! Building a deployment from verified packages — the one builder, used by
//! the CD's reinstall and by the updater.
//!
//! Everything is assembled in `deployments/.staging-<id>` and becomes
//! `deployments/<id>` with one rename after a syncfs, so a crash leaves
//! either nothing or a complete deployment. Each package (`kernel`, `base`,
//! `sliver-ref`) goes to its directory, either extracted by pkgsign from a
//! source of verified bytes (a [`PackageCache`](pkgsign::cache::PackageCache)
//! or the repository itself), or — when its signed hash is that of a
//! package of the running deployment — copied from there and checked
//! against the manifest recorded when it was installed ([`super::reuse`]).
//! Every package's manifest and the signed target infos go into the
//! deployment's `deployment.json`.

use std::fs;
use std::path::{Path, PathBuf};

use floor::durable::{sync_dir, write_atomic, DurableError};
use pkgsign::fetch::Fetcher;
use pkgsign::install::{InstallError, InstallOptions, Manifest, Progress};
use pkgsign::{VerifiedPackage, VerifiedRepo};

use config::Timestamp;

use super::reuse::{copy_installed_tree, ReuseError};
use super::{DeployedPackage, DeploymentId, DeploymentRecord, Disk};
use crate::console;

/// The packages of a node OS and the directory each goes to.
pub const PACKAGES: &[(&str, &str)] = &[
    ("kernel", "kernel"),
    ("base", "root"),
    ("sliver-ref", "sliver-ref"),
];

fn package_dir(name: &str) -> &str {
    PACKAGES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, d)| *d)
        .unwrap_or(name)
}

/// Why a deployment could not be built. Nothing is left under
/// `deployments/` in any case.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The signed repository lacks a package every node OS has.
    #[error("the signed repository has no `{0}` package")]
    MissingPackage(String),
    /// A package could not be installed (not the signed bytes, an unsafe
    /// archive, or the disk).
    #[error("installing package {package}")]
    Install {
        /// The package.
        package: String,
        /// What went wrong.
        #[source]
        source: InstallError,
    },
    /// Copying an unchanged package from the running deployment failed
    /// for a reason other than a changed file (the disk).
    #[error("copying package {package} from the running deployment")]
    Copy {
        /// The package.
        package: String,
        /// What went wrong.
        #[source]
        source: ReuseError,
    },
    /// The deployment's own files.
    #[error(transparent)]
    Durable(#[from] DurableError),
    /// A directory of the deployment.
    #[error("{what} {}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// The system's reason.
        #[source]
        source: std::io::Error,
    },
    /// A deployment id could not be formed from the packages.
    #[error("deployment id")]
    Id(#[source] super::DeploymentIdError),
}

impl BuildError {
    /// Whether a package itself was refused (as opposed to a local problem).
    pub fn is_package_refused(&self) -> bool {
        match self {
            BuildError::Install { source, .. } => !matches!(source, InstallError::Io { .. }),
            _ => false,
        }
    }
}

fn io_error<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> BuildError + 'a {
    move |source| BuildError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// The deployment id for a set of packages: base version + a hash of all
/// the package hashes, so a change in any package makes a new deployment
/// (`config::release::deployment_id`, which the boot server uses too).
pub fn deployment_id(packages: &[VerifiedPackage]) -> Result<DeploymentId, BuildError> {
    let signed: Vec<config::release::SignedPackage<'_>> = packages
        .iter()
        .map(|p| config::release::SignedPackage {
            name: p.name(),
            version: &p.info().version,
            sha256: p.info().sha256().0,
        })
        .collect();
    config::release::deployment_id(&signed).map_err(|e| match e {
        config::release::ReleaseError::MissingPackage(name) => {
            BuildError::MissingPackage(name.to_string())
        }
        config::release::ReleaseError::Id(e) => BuildError::Id(e),
    })
}

/// The node OS packages from verified metadata, in install order.
pub fn node_packages(repo: &VerifiedRepo) -> Result<Vec<VerifiedPackage>, BuildError> {
    let names: Vec<&str> = PACKAGES.iter().map(|(n, _)| *n).collect();
    repo.packages(&names)
        .map_err(|missing| BuildError::MissingPackage(missing.to_string()))
}

/// Total compressed size of `packages`.
pub fn total_length(packages: &[VerifiedPackage]) -> u64 {
    packages.iter().map(|p| p.info().length).sum()
}

/// Which packages come from where.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Unchanged: copied from the running deployment (its record entry).
    pub reuse: Vec<(VerifiedPackage, DeployedPackage)>,
    /// Changed or new: installed from the source.
    pub install: Vec<VerifiedPackage>,
}

impl Plan {
    /// Everything from the source (a fresh install).
    pub fn fresh(packages: &[VerifiedPackage]) -> Plan {
        Plan {
            reuse: Vec::new(),
            install: packages.to_vec(),
        }
    }

    /// Compares the signed packages with what the running deployment holds.
    pub fn against(packages: &[VerifiedPackage], running: &DeploymentRecord) -> Plan {
        let mut plan = Plan::default();
        for p in packages {
            let sha = hex::encode(p.info().sha256().0);
            match running
                .packages
                .iter()
                .find(|d| d.name == p.name() && d.sha256 == sha)
            {
                Some(d) => plan.reuse.push((p.clone(), d.clone())),
                None => plan.install.push(p.clone()),
            }
        }
        plan
    }

    /// The names of the packages to copy.
    pub fn reused_names(&self) -> Vec<String> {
        self.reuse
            .iter()
            .map(|(p, _)| p.name().to_string())
            .collect()
    }

    /// The names of the packages to install from the source.
    pub fn installed_names(&self) -> Vec<String> {
        self.install.iter().map(|p| p.name().to_string()).collect()
    }
}

/// A package the plan meant to copy must come from the source after all
/// (its running copy changed): the caller makes it available there.
pub type FetchInstead<'a, E> = dyn FnMut(&VerifiedPackage) -> Result<(), E> + 'a;

/// What a new deployment is built from.
pub struct Build<'a> {
    /// The node's partition.
    pub disk: &'a Disk,
    /// The verified metadata the packages came from.
    pub repo: &'a VerifiedRepo,
    /// Every package of the deployment, in install order.
    pub packages: &'a [VerifiedPackage],
    /// Which to copy, which to install.
    pub plan: &'a Plan,
    /// Verified bytes of the packages to install.
    pub source: &'a dyn Fetcher,
    /// The running deployment, source of the reused packages.
    pub running: Option<&'a DeploymentRecord>,
    /// Called with (bytes of packages done, total) as the install goes.
    pub progress: Option<&'a (dyn Fn(u64, u64) + Sync)>,
}

impl std::fmt::Debug for Build<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Build")
            .field("disk", &self.disk)
            .field("repo", &self.repo)
            .field("packages", &self.packages)
            .field("plan", &self.plan)
            .field("running", &self.running)
            .field("progress", &self.progress.is_some())
            .finish_non_exhaustive()
    }
}

/// A built deployment.
#[derive(Debug, Clone)]
pub struct Built {
    /// Its record (also in `deployment.json`).
    pub record: DeploymentRecord,
    /// Packages the plan meant to copy that were installed from the source
    /// instead.
    pub fetched_instead: Vec<String>,
}

impl<'a> Build<'a> {
    /// A build of every package from `source`, copying nothing (a fresh
    /// install); the plan is [`Plan::fresh`].
    pub fn fresh(
        disk: &'a Disk,
        repo: &'a VerifiedRepo,
        packages: &'a [VerifiedPackage],
        plan: &'a Plan,
        source: &'a dyn Fetcher,
    ) -> Build<'a> {
        Build {
            disk,
            repo,
            packages,
            plan,
            source,
            running: None,
            progress: None,
        }
    }

    /// Builds a deployment whose plan copies nothing (a fresh install).
    pub fn run_fresh(&self) -> Result<Built, BuildError> {
        self.run::<BuildError>(&mut |p| Err(BuildError::MissingPackage(p.name().to_string())))
    }

    /// Builds and commits the deployment; `fetch_instead` is asked to put a
    /// package into the source when its running copy turns out to differ
    /// from what was installed.
    pub fn run<E: From<BuildError>>(
        &self,
        fetch_instead: &mut FetchInstead<'_, E>,
    ) -> Result<Built, E> {
        let id = deployment_id(self.packages)?;
        let deployments = self.disk.deployments_dir();
        fs::create_dir_all(&deployments)
            .map_err(io_error("creating", &deployments))
            .map_err(E::from)?;
        let staging = deployments.join(format!(".staging-{id}"));
        pkgsign::install::remove_tree(&staging)
            .map_err(io_error("removing the unfinished", &staging))?;
        fs::create_dir(&staging).map_err(io_error("creating", &staging))?;
        let result = self.fill(&id, &staging, fetch_instead).and_then(|built| {
            sync_filesystem(&staging)?;
            floor::durable::rename(&staging, &self.disk.deployment_path(&id))
                .map_err(BuildError::from)?;
            sync_dir(&deployments).map_err(BuildError::from)?;
            Ok(built)
        });
        if result.is_err() {
            let _ = pkgsign::install::remove_tree(&staging);
        }
        result
    }

    fn fill<E: From<BuildError>>(
        &self,
        id: &DeploymentId,
        staging: &Path,
        fetch_instead: &mut FetchInstead<'_, E>,
    ) -> Result<Built, E> {
        let total = total_length(self.packages);
        let mut done = 0u64;
        let mut deployed = Vec::new();
        let mut fetched_instead = Vec::new();
        for p in self.packages {
            let dir = package_dir(p.name());
            let dest = staging.join(dir);
            let mut manifest = None;
            let reused = self.plan.reuse.iter().find(|(r, _)| r.name() == p.name());
            if let (Some((_, old)), Some(running)) = (reused, self.running) {
                manifest = self.copy_reused(p, running, old, &dest)?;
                if manifest.is_none() {
                    fetch_instead(p)?;
                    fetched_instead.push(p.name().to_string());
                }
            }
            let manifest = match manifest {
                Some(m) => m,
                None => self.install(p, &dest, done, total)?,
            };
            done += p.info().length;
            let manifest_file = format!("{dir}.manifest.json");
            write_atomic(&staging.join(&manifest_file), &manifest.to_json())
                .map_err(BuildError::from)?;
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
            id: id.clone(),
            os_version,
            created: Timestamp::now(),
            targets_version: self.repo.targets_version,
            packages: deployed,
        };
        let json = serde_json::to_vec_pretty(&record).map_err(|e| BuildError::Io {
            what: "encoding",
            path: staging.join("deployment.json"),
            source: e.into(),
        })?;
        write_atomic(&staging.join("deployment.json"), &json).map_err(BuildError::from)?;
        Ok(Built {
            record,
            fetched_instead,
        })
    }

    fn install(
        &self,
        p: &VerifiedPackage,
        dest: &Path,
        done_before: u64,
        total: u64,
    ) -> Result<Manifest, BuildError> {
        let report_progress = |pr: Progress| {
            if let Some(progress) = self.progress {
                progress(done_before + pr.done, total);
            }
        };
        let options = InstallOptions {
            into_subdirs: false,
            progress: Some(&report_progress),
        };
        let report =
            pkgsign::install::install(self.source, std::slice::from_ref(p), dest, &options)
                .map_err(|source| BuildError::Install {
                    package: p.name().to_string(),
                    source,
                })?;
        console::line(&format!(
            "deploy: package {} {}: installed ({} of content)",
            p.name(),
            p.info().version,
            human(report.unpacked_bytes)
        ));
        Ok(report.manifest)
    }

    /// Tries to copy a reused package; `None` when it must be installed
    /// from the source instead.
    fn copy_reused(
        &self,
        p: &VerifiedPackage,
        running: &DeploymentRecord,
        old: &DeployedPackage,
        dest: &Path,
    ) -> Result<Option<Manifest>, BuildError> {
        let running_dir = self.disk.deployment_path(&running.id);
        let manifest_path = running_dir.join(&old.manifest);
        let installed = fs::read(&manifest_path)
            .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
            .and_then(|b| Manifest::from_json(&b).map_err(Into::into));
        let manifest = match installed {
            Ok(m) => m,
            Err(e) => {
                console::line(&format!(
                    "deploy: package {}: cannot read its manifest {}: {}; installing it from the repository instead",
                    p.name(),
                    manifest_path.display(),
                    floor::report::error_line(e.as_ref())
                ));
                return Ok(None);
            }
        };
        match copy_installed_tree(&running_dir.join(&old.dir), dest, &manifest) {
            Ok(bytes) => {
                console::line(&format!(
                    "deploy: package {} {}: unchanged, copied {} from the running deployment and checked",
                    p.name(),
                    p.info().version,
                    human(bytes)
                ));
                Ok(Some(manifest))
            }
            Err(ReuseError::Changed { path, problem }) => {
                console::line(&format!(
                    "deploy: package {}: the running copy differs from what was installed ({path}: {problem}); installing it from the repository instead",
                    p.name()
                ));
                pkgsign::install::remove_tree(dest).map_err(io_error("removing", dest))?;
                Ok(None)
            }
            Err(source) => Err(BuildError::Copy {
                package: p.name().to_string(),
                source,
            }),
        }
    }
}

/// Flushes the whole file system holding `path` (one syncfs instead of an
/// fsync per file).
pub fn sync_filesystem(path: &Path) -> Result<(), BuildError> {
    let f = fs::File::open(path).map_err(io_error("opening", path))?;
    nix::unistd::syncfs(&f)
        .map_err(std::io::Error::from)
        .map_err(io_error("syncing the file system of", path))
}

/// Why a deployment does not match what was installed.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// A manifest could not be read.
    #[error("reading {}", path.display())]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A package's tree differs from its manifest.
    #[error("package {package} ({dir})")]
    Tree {
        /// The package.
        package: String,
        /// Its directory in the deployment.
        dir: String,
        /// What differs.
        #[source]
        source: pkgsign::install::TreeError,
    },
}

/// Checks a deployment's files against the manifests recorded when it was
/// installed (`full` re-hashes every file).
pub fn check_deployment(
    disk: &Disk,
    record: &DeploymentRecord,
    full: bool,
) -> Result<(), CheckError> {
    let base = disk.deployment_path(&record.id);
    for p in &record.packages {
        let manifest_path: PathBuf = base.join(&p.manifest);
        let manifest = fs::read(&manifest_path)
            .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
            .and_then(|bytes| {
                Manifest::from_json(&bytes)
                    .map_err(Box::<dyn std::error::Error + Send + Sync>::from)
            })
            .map_err(|source| CheckError::Manifest {
                path: manifest_path.clone(),
                source,
            })?;
        pkgsign::install::verify_tree(&base.join(&p.dir), &manifest, full).map_err(|source| {
            CheckError::Tree {
                package: p.name.clone(),
                dir: p.dir.clone(),
                source,
            }
        })?;
    }
    Ok(())
}

/// Bytes for people: `512 B`, `6.1 MiB`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}
