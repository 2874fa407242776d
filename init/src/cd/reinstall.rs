//! The `reinstall` state: wipe the disk and install the node OS.
//!
//! Everything that can fail without the disk is done first: hardware
//! preflight, fetching and verifying the signed metadata, and — when the
//! packages fit in memory — downloading and hash-checking them. Only then is
//! the disk partitioned and formatted, and the deployment built and
//! committed. A tampered package or a bad repository therefore leaves the
//! disk as it was.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use pkgsign::fetch::{DownloadPolicy, Fetcher, HttpFetcher};
use pkgsign::Verifier;

use crate::blockdev::{self, FsKind, Mounted};
use crate::cd::disk;
use crate::cd::report::Reporter;
use crate::cd::{step, Failure};
use crate::deploy::{self, DeploymentRecord, Disk, Plan};
use pkgsign::cache::{PackageCache, Watch};

/// Where the installed disk is mounted while the CD works on it.
pub const DISK_MOUNT: &str = "/run/plnode/disk";
/// The verifier's state while no disk is mounted (carried across a wipe).
const RAM_TRUST: &str = "/run/plnode/trust";
/// Packages downloaded before the disk is touched.
const RAM_CACHE: &str = "/run/plnode/cache";
/// The CD's trusted root metadata.
pub const CD_ROOT_METADATA: &str = "/etc/plnode/root.json";

/// What the reinstall needs from the boot manager.
pub struct Inputs<'a> {
    pub repo_base: String,
    pub client: reqwest::blocking::Client,
    pub node_config_text: &'a str,
    pub preferred_disk: Option<&'a str>,
    pub reporter: &'a Reporter,
}

/// Leaves out the node config's text: it holds the node's key.
impl std::fmt::Debug for Inputs<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inputs")
            .field("repo_base", &self.repo_base)
            .field("client", &self.client)
            .field("node_config_text", &"<redacted>")
            .field("preferred_disk", &self.preferred_disk)
            .field("reporter", &self.reporter)
            .finish()
    }
}

/// The result: the mounted disk and the deployment now `current`.
#[derive(Debug)]
pub struct Installed {
    pub mounted: Mounted,
    pub disk: Disk,
    pub record: DeploymentRecord,
}

fn free_ram() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .unwrap_or(0)
}

/// Copies the verifier state of a previous installation (if the machine has
/// one) into RAM, so that a reinstall still refuses metadata older than what
/// this node has already seen.
fn carry_over_trust() -> Option<String> {
    let old = disk::find_root_partition(Path::new("/sys/block"))?;
    let mounted = Mounted::new(&old.dev, Path::new("/run/plnode/old"), FsKind::Ext, true).ok()?;
    let from = mounted.dir.join("trust");
    let to = Path::new(RAM_TRUST);
    std::fs::create_dir_all(to).ok()?;
    let mut copied = 0;
    for e in std::fs::read_dir(&from).ok()?.flatten() {
        if e.file_type().map(|t| t.is_file()).unwrap_or(false)
            && std::fs::copy(e.path(), to.join(e.file_name())).is_ok()
        {
            copied += 1;
        }
    }
    (copied > 0).then(|| {
        format!(
            "kept the trusted metadata state of the previous installation on {}",
            old.dev.display()
        )
    })
}

fn copy_dir_files(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for e in std::fs::read_dir(from)
        .with_context(|| format!("reading {}", from.display()))?
        .flatten()
    {
        if e.file_type()?.is_file() {
            std::fs::copy(e.path(), to.join(e.file_name()))
                .with_context(|| format!("copying {}", e.path().display()))?;
        }
    }
    Ok(())
}

pub fn run(inputs: &Inputs<'_>) -> Result<Installed, Failure> {
    let reporter = inputs.reporter;
    let hw = crate::hardware::summary();
    let target = step("reinstall/preflight", || {
        anyhow::ensure!(
            hw.ram_bytes >= disk::MIN_RAM_BYTES,
            "this machine has {} MiB of memory; at least {} MiB are needed",
            hw.ram_bytes >> 20,
            disk::MIN_RAM_BYTES >> 20
        );
        let devices = blockdev::list(Path::new("/sys/block"));
        let chosen = disk::choose(
            &devices,
            inputs.preferred_disk,
            disk::MIN_DISK_BYTES,
            &blockdev::mounted_parts,
        )?;
        if let Some(note) = carry_over_trust() {
            tracing::info!("{note}");
        }
        let detail = format!(
            "disk={} size={}MiB ram={}MiB cpus={}",
            chosen.name,
            chosen.size_bytes >> 20,
            hw.ram_bytes >> 20,
            hw.cpus
        );
        reporter.progress("reinstall/preflight", Some(5), detail.clone());
        Ok((chosen, detail))
    })?;

    let policy = DownloadPolicy::default();
    let http = HttpFetcher::new(&inputs.repo_base, inputs.client.clone(), policy).map_err(|e| {
        Failure {
            step: "reinstall/metadata",
            error: anyhow::Error::new(e).context("the repository URL"),
        }
    })?;
    let (repo, packages) = step("reinstall/metadata", || {
        let root = std::fs::read(CD_ROOT_METADATA)
            .with_context(|| format!("reading the CD's {CD_ROOT_METADATA}"))?;
        std::fs::create_dir_all(RAM_TRUST)?;
        let mut verifier =
            Verifier::open(Path::new(RAM_TRUST), &root).context("opening the verifier")?;
        let repo = verifier
            .update(&http, std::time::SystemTime::now())
            .context("verifying the repository's signed metadata")?;
        let packages = deploy::node_packages(&repo)?;
        let detail = format!(
            "targets={} {}",
            repo.targets_version,
            packages
                .iter()
                .map(|p| format!("{}={}", p.name(), p.info().version))
                .collect::<Vec<_>>()
                .join(" ")
        );
        reporter.progress("reinstall/metadata", Some(10), detail.clone());
        Ok(((repo, packages), detail))
    })?;

    // Fetch into RAM first when the packages fit, so a bad package never
    // costs the disk.
    let total = deploy::build::total_length(&packages);
    let cached: Option<Box<dyn Fetcher>> = if total < free_ram() / 2 {
        let fetched = step("reinstall/download", || {
            let cache = PackageCache::new(RAM_CACHE);
            let progress = DownloadProgress {
                reporter,
                total,
                done: std::sync::atomic::AtomicU64::new(0),
            };
            for p in &packages {
                cache.ensure(&http, p, &progress)?;
            }
            Ok((
                cache.fetcher(),
                format!("bytes={total} verified before touching the disk"),
            ))
        })?;
        Some(Box::new(fetched))
    } else {
        tracing::info!(
            "packages ({total} bytes) do not fit in memory: streaming them onto the disk"
        );
        None
    };
    let source: &dyn Fetcher = match &cached {
        Some(c) => c.as_ref(),
        None => &http,
    };

    let part = step("reinstall/partition", || {
        disk::write_partition_table(&target.dev)?;
        let part = disk::partition_path(&target.name, 1);
        disk::reread_partitions(&target.dev, &part)?;
        let detail = format!("{} GPT {}", part.display(), disk::PARTITION_NAME);
        Ok((part, detail))
    })?;
    step("reinstall/mkfs", || {
        disk::make_filesystem(&part)?;
        Ok((
            (),
            format!("ext4 label={}", crate::cd::config_discovery::ROOT_LABEL),
        ))
    })?;

    let (mounted, node_disk, record) = step("reinstall/install", || {
        let mounted = Mounted::new(&part, Path::new(DISK_MOUNT), FsKind::Ext, false)?;
        let node_disk = Disk::new(&mounted.dir);
        node_disk.create_layout()?;
        let _ = crate::console::attach_log_file(&node_disk.log_dir().join("install.log"));
        copy_dir_files(Path::new(RAM_TRUST), &node_disk.trust_dir())?;
        floor::durable::write_atomic(
            &node_disk.node_config_path(),
            inputs.node_config_text.as_bytes(),
        )?;
        let progress = |done: u64, total: u64| {
            reporter.progress(
                "reinstall/install",
                Some((50 + done * 45 / total.max(1)) as u8),
                format!("{done}/{total} bytes"),
            );
        };
        let build = deploy::Build {
            disk: &node_disk,
            repo: &repo,
            packages: &packages,
            plan: &Plan::fresh(&packages),
            source,
            running: None,
            progress: Some(&progress),
        };
        let record = build.run_fresh()?.record;
        let detail = format!("deployment={} os={}", record.id, record.os_version);
        Ok(((mounted, node_disk, record), detail))
    })?;

    step("reinstall/commit", || {
        node_disk.activate(&record.id, false)?;
        node_disk.clear_bootcount()?;
        deploy::build::sync_filesystem(&node_disk.root)?;
        let _ = std::fs::remove_dir_all(RAM_CACHE);
        reporter.progress(
            "reinstall/commit",
            Some(100),
            format!("current={}", record.id),
        );
        Ok(((), format!("current={}", record.id)))
    })?;
    Ok(Installed {
        mounted,
        disk: node_disk,
        record,
    })
}

/// The mount point used for the installed disk.
pub fn disk_mount() -> PathBuf {
    PathBuf::from(DISK_MOUNT)
}

/// Reports download progress to the server as packages arrive in RAM.
struct DownloadProgress<'a> {
    reporter: &'a Reporter,
    total: u64,
    done: std::sync::atomic::AtomicU64,
}

impl Watch for DownloadProgress<'_> {
    fn received(&self, bytes: u64) {
        use std::sync::atomic::Ordering;
        let done = self.done.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.reporter.progress(
            "reinstall/download",
            Some((10 + done * 40 / self.total.max(1)) as u8),
            format!("{done}/{} bytes", self.total),
        );
    }
}
