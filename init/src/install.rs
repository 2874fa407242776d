//! Building a deployment from verified packages: `kernel`, `base` and
//! `sliver-ref`, each extracted by pkgsign into its directory, recorded with
//! the signed metadata they came from, and committed with one rename.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{anyhow, Context as _};
use pkgsign::fetch::{DirFetcher, Fetcher};
use pkgsign::install::{InstallOptions, Progress};
use pkgsign::{VerifiedPackage, VerifiedRepo};
use sha2::{Digest, Sha256};

use config::Timestamp;
use floor::durable::{sync_dir, write_atomic};

use crate::deploy::{
    DeployedPackage, DeploymentId, DeploymentRecord, Disk,
};

/// The packages of a node OS and the directory each goes to.
pub const PACKAGES: &[(&str, &str)] = &[
    ("kernel", "kernel"),
    ("base", "root"),
    ("sliver-ref", "sliver-ref"),
];

/// The deployment id for a set of packages: base version + a hash of all
/// the package hashes, so a change in any package makes a new deployment.
pub fn deployment_id(packages: &[VerifiedPackage]) -> anyhow::Result<DeploymentId> {
    let base = packages
        .iter()
        .find(|p| p.name() == "base")
        .ok_or_else(|| anyhow!("the repository has no `base` package"))?;
    let mut h = Sha256::new();
    for p in packages {
        h.update(p.name().as_bytes());
        h.update(p.info().sha256().0);
    }
    let digest = hex::encode(h.finalize());
    DeploymentId::new(&format!("{}-{}", base.info().version, &digest[..8]))
}

/// The node OS packages from verified metadata, in install order.
pub fn node_packages(repo: &VerifiedRepo) -> anyhow::Result<Vec<VerifiedPackage>> {
    let names: Vec<&str> = PACKAGES.iter().map(|(n, _)| *n).collect();
    repo.packages(&names)
        .map_err(|missing| anyhow!("the signed repository has no `{missing}` package"))
}

/// Total compressed size of `packages`.
pub fn total_length(packages: &[VerifiedPackage]) -> u64 {
    packages.iter().map(|p| p.info().length).sum()
}

/// Downloads `packages` into `cache` (relative paths as in the repository),
/// checking length and hash of each, so that nothing is wiped for a package
/// that would fail anyway. Returns a fetcher reading from the cache.
pub fn prefetch(
    fetcher: &dyn Fetcher,
    packages: &[VerifiedPackage],
    cache: &Path,
    progress: &dyn Fn(u64, u64),
) -> anyhow::Result<DirFetcher> {
    let total = total_length(packages);
    let mut done_before = 0u64;
    for p in packages {
        let info = p.info();
        let dest = cache.join(&info.path);
        if let Some(dir) = dest.parent() {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let mut reader = fetcher
            .fetch(&info.path, info.length)
            .map_err(|e| anyhow!("package {}: {e}", p.name()))?;
        let mut out =
            fs::File::create(&dest).with_context(|| format!("creating {}", dest.display()))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        let mut got = 0u64;
        loop {
            let n = reader.read(&mut buf).map_err(|e| {
                anyhow!(
                    "package {}: {}",
                    p.name(),
                    pkgsign::fetch::FetchError::from_io(&fetcher.location(&info.path), e)
                )
            })?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n])
                .with_context(|| format!("writing {}", dest.display()))?;
            got += n as u64;
            progress(done_before + got, total);
        }
        let found: [u8; 32] = hasher.finalize().into();
        if got != info.length {
            let _ = fs::remove_file(&dest);
            anyhow::bail!(
                "package {}: {got} bytes, signed length is {}",
                p.name(),
                info.length
            );
        }
        if found != info.sha256().0 {
            let _ = fs::remove_file(&dest);
            anyhow::bail!("package {}: sha256 {} differs from the signed {} (hash mismatch: the file on the server is not the one that was signed)", p.name(), hex::encode(found), hex::encode(info.sha256().0));
        }
        done_before += got;
    }
    Ok(DirFetcher::new(cache.to_path_buf()))
}

/// Installs `packages` as deployment `id` on `disk` (or reuses it when it
/// is already complete). Nothing is visible under `deployments/<id>` until
/// everything is extracted and synced.
pub fn build_deployment(
    disk: &Disk,
    repo: &VerifiedRepo,
    packages: &[VerifiedPackage],
    fetcher: &dyn Fetcher,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> anyhow::Result<DeploymentRecord> {
    let id = deployment_id(packages)?;
    if let Ok(existing) = disk.record(&id) {
        return Ok(existing);
    }
    let deployments = disk.deployments_dir();
    fs::create_dir_all(&deployments)
        .with_context(|| format!("creating {}", deployments.display()))?;
    let staging = deployments.join(format!(".staging-{id}"));
    if staging.exists() {
        fs::remove_dir_all(&staging)
            .with_context(|| format!("removing the unfinished {}", staging.display()))?;
    }
    fs::create_dir(&staging).with_context(|| format!("creating {}", staging.display()))?;
    let total = total_length(packages);
    let done = Mutex::new(0u64);
    let mut deployed = Vec::new();
    for p in packages {
        let dir = PACKAGES
            .iter()
            .find(|(n, _)| *n == p.name())
            .map(|(_, d)| *d)
            .unwrap_or(p.name());
        let before = *done.lock().unwrap_or_else(|e| e.into_inner());
        let report_progress = |pr: Progress| progress(before + pr.done, total);
        let options = InstallOptions {
            into_subdirs: false,
            progress: Some(&report_progress),
        };
        let report = pkgsign::install::install(
            fetcher,
            std::slice::from_ref(p),
            &staging.join(dir),
            &options,
        )
        .map_err(|e| anyhow!("{e}"))?;
        *done.lock().unwrap_or_else(|e| e.into_inner()) += p.info().length;
        let manifest = format!("{dir}.manifest.json");
        write_atomic(&staging.join(&manifest), &report.manifest.to_json())?;
        deployed.push(DeployedPackage {
            name: p.name().to_string(),
            version: p.info().version.clone(),
            sha256: hex::encode(p.info().sha256().0),
            length: p.info().length,
            dir: dir.to_string(),
            manifest,
        });
    }
    let os_version = packages
        .iter()
        .find(|p| p.name() == "base")
        .map(|p| p.info().version.clone())
        .unwrap_or_default();
    let record = DeploymentRecord {
        id: id.clone(),
        os_version,
        created: Timestamp::now(),
        targets_version: repo.targets_version,
        packages: deployed,
    };
    write_atomic(
        &staging.join("deployment.json"),
        &serde_json::to_vec_pretty(&record)?,
    )?;
    sync_tree_fs(&staging)?;
    fs::rename(&staging, disk.deployment_path(&id))
        .with_context(|| format!("committing deployment {id}"))?;
    sync_dir(&deployments)?;
    Ok(record)
}

/// Flushes the whole file system holding `path` (one syncfs instead of an
/// fsync per file).
pub fn sync_tree_fs(path: &Path) -> anyhow::Result<()> {
    let f = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    nix::unistd::syncfs(&f)
        .with_context(|| format!("syncing the file system of {}", path.display()))
}

/// How a deployment's files compare with what was installed.
pub fn check_deployment(disk: &Disk, record: &DeploymentRecord, full: bool) -> anyhow::Result<()> {
    let base = disk.deployment_path(&record.id);
    for p in &record.packages {
        let manifest_path: PathBuf = base.join(&p.manifest);
        let bytes = fs::read(&manifest_path)
            .with_context(|| format!("reading {}", manifest_path.display()))?;
        let manifest = pkgsign::install::Manifest::from_json(&bytes)
            .map_err(|e| anyhow!("{}: {e}", manifest_path.display()))?;
        pkgsign::install::verify_tree(&base.join(&p.dir), &manifest, full)
            .map_err(|e| anyhow!("package {} ({}): {e}", p.name, p.dir))?;
    }
    Ok(())
}
