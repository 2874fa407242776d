//! The installed node's updater: signed updates from the boot server.
//!
//! Run by the supervisor as the service `updater` (`init update --daemon
//! --reboot`). Each check:
//!
//! 1. verifies the repository's signed metadata against the trusted state
//!    in `/plnode/trust` (pkgsign's verifier: never a lower version, never
//!    expired metadata, never fewer signatures than the threshold); the
//!    timestamp is asked for conditionally, so a check that finds nothing
//!    new costs two small requests ([`metadata`]);
//! 2. compares the deployment the signed packages make
//!    ([`crate::deploy::deployment_id`]) with the running one, the staged
//!    one and the denylist, and waits while the running one is on trial;
//! 3. checks that the new deployment fits ([`space`]), downloads only the
//!    packages whose hashes changed into `/plnode/cache`, resumable across
//!    runs (pkgsign's [`PackageCache`]), builds the deployment beside the
//!    running one with the one deployment builder ([`crate::deploy::Build`]:
//!    unchanged packages are copied from the running deployment and
//!    checked) and points `staged` at it;
//! 4. persists the verified metadata, tells the server
//!    (`UpdateEvent::Staged`), and with `--reboot` asks PID 1 for an
//!    orderly reboot, after which the CD verifies and activates it.
//!
//! Refusals are reported to the server once per distinct problem; a
//! deployment on the denylist is never staged again (reported once). While
//! the server cannot be reached the node keeps running what it has and
//! retries with growing, jittered intervals ([`schedule`]).

pub mod metadata;
pub mod schedule;
pub mod space;

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, Context as _};
use config::api::{paths, Empty, UpdateEvent, UpdateReport};
use config::node::{NodeConfig, ServerUrl};
use config::Timestamp;
use pkgsign::fetch::{DownloadPolicy, FetchError, HttpFetcher};
use pkgsign::verify::VerifyError;
use pkgsign::{VerifiedPackage, Verifier};
use serde::{Deserialize, Serialize};

use crate::boot_server::ServerClient;
use crate::console::{self, StepStatus};
use crate::deploy::{self, BuildError, DeploymentId, Disk, Plan};
use crate::handover_note::{Handover, HANDOVER_FILE};
use floor::durable::write_atomic;
use metadata::{MetadataSource, Traffic};
use pkgsign::cache::{CacheError, PackageCache};
pub use schedule::{Schedule, Wait};
use space::{human, SpaceNeeds};

/// Where the updater finds the node and how it behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// The node's partition (DESIGN.md §4): node.toml, trust/, deployments/.
    pub partition: PathBuf,
    /// The CD's hand-over note (server URLs when the node config names
    /// none, and the clock floor for certificate checks).
    pub handover: PathBuf,
    /// After staging, ask PID 1 for an orderly reboot.
    pub reboot: bool,
    pub download: DownloadPolicy,
}

impl Options {
    /// The paths of the installed system.
    pub fn installed() -> Options {
        Options {
            partition: PathBuf::from("/plnode"),
            handover: PathBuf::from(HANDOVER_FILE),
            reboot: false,
            download: DownloadPolicy::default(),
        }
    }
}

/// An error from below, kept whole (its causes are printed with it).
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// Why a check did not complete.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    /// The boot server could not be reached (or failed): retried later with
    /// a growing interval; a partial download is kept.
    #[error("the boot server cannot be reached")]
    Unreachable(#[source] Cause),
    /// The signed metadata failed verification (or the server has none).
    #[error("the signed metadata was refused")]
    Metadata(#[source] Cause),
    /// A package did not match its signed length or hash, or did not
    /// extract safely.
    #[error("a package was refused")]
    PackageRefused(#[source] Cause),
    /// The new deployment does not fit on the partition.
    #[error("not enough space on {partition} to stage {deployment}: {} needed ({} to download, {} of content, margin and {} reserve), {} free", human(.needs.required()), human(.needs.download), human(.needs.content), human(space::RESERVE_BYTES), human(*.free))]
    NoSpace {
        partition: String,
        deployment: DeploymentId,
        needs: SpaceNeeds,
        free: u64,
    },
    /// The node's own files: a missing config, a damaged record, a write error.
    #[error(transparent)]
    Local(anyhow::Error),
}

impl UpdateError {
    pub fn is_unreachable(&self) -> bool {
        matches!(self, UpdateError::Unreachable(_))
    }
}

/// What a check decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The signed packages are the running deployment.
    UpToDate { deployment: DeploymentId },
    /// A new deployment was built and `staged` points at it.
    Staged {
        deployment: DeploymentId,
        os_version: String,
        /// Packages fetched from the server.
        downloaded: Vec<String>,
        /// Packages copied from the running deployment.
        reused: Vec<String>,
    },
    /// The new deployment is staged already, waiting for a reboot.
    AlreadyStaged { deployment: DeploymentId },
    /// The new deployment failed its trial before: never staged again.
    Denied {
        deployment: DeploymentId,
        reason: String,
        /// Whether this check told the server (only the first time).
        reported_now: bool,
    },
    /// The running deployment is on trial: updates wait until it is
    /// marked good (or rolled back).
    OnTrial {
        current: DeploymentId,
        target: DeploymentId,
    },
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::UpToDate { deployment } => write!(f, "up to date: running {deployment}"),
            Outcome::Staged {
                deployment,
                os_version,
                downloaded,
                reused,
            } => write!(
                f,
                "staged {deployment} (os {os_version}; downloaded [{}], reused [{}])",
                downloaded.join(" "),
                reused.join(" ")
            ),
            Outcome::AlreadyStaged { deployment } => {
                write!(f, "{deployment} is staged already, waiting for a reboot")
            }
            Outcome::Denied {
                deployment, reason, ..
            } => write!(
                f,
                "{deployment} is on the denylist ({reason}); not staging it again"
            ),
            Outcome::OnTrial { current, target } => write!(
                f,
                "{target} is available, but the running {current} is still on trial: waiting until it is marked good"
            ),
        }
    }
}

/// One check: what it decided and what it cost.
#[derive(Debug)]
pub struct CheckReport {
    pub result: Result<Outcome, UpdateError>,
    /// HTTP requests sent to the repository (not counting pkgsign's
    /// internal retries of a broken transfer).
    pub requests: u64,
    /// Response body bytes received from the repository.
    pub bytes: u64,
    /// Conditional requests answered 304 Not Modified.
    pub not_modified: u64,
    pub elapsed: Duration,
}

/// What the updater has told the server, so it says each thing once
/// (`/plnode/updater.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Reported {
    /// Denylisted deployments already reported.
    #[serde(default)]
    denied: Vec<DeploymentId>,
    /// The last failure reported; cleared by a successful check.
    #[serde(default)]
    last_failure: Option<String>,
}

const REPORTED_FILE: &str = "updater.json";
const CACHE_DIR: &str = "cache";

/// The updater of one node.
#[derive(Debug)]
pub struct Updater {
    options: Options,
    disk: Disk,
    cache: PackageCache,
    server: ServerClient,
    urls: Vec<ServerUrl>,
    /// Index into `urls` of the server the repository is fetched from;
    /// moves on when it cannot be reached.
    url_index: usize,
    traffic: Arc<Traffic>,
    /// Whether the current check got as far as staging (for its marker).
    staging: bool,
}

fn local(e: anyhow::Error) -> UpdateError {
    UpdateError::Local(e)
}

/// Sorts a verifier refusal into "try again later" and "refused".
fn classify(e: VerifyError) -> UpdateError {
    match &e {
        VerifyError::Fetch { source, .. } => match source {
            FetchError::Network { .. } | FetchError::Io { .. } | FetchError::TooSlow { .. } => {
                UpdateError::Unreachable(e.into())
            }
            FetchError::Status { status, .. } if *status >= 500 => {
                UpdateError::Unreachable(e.into())
            }
            _ => UpdateError::Metadata(e.into()),
        },
        VerifyError::State { .. } => UpdateError::Local(e.into()),
        _ => UpdateError::Metadata(e.into()),
    }
}

impl From<CacheError> for UpdateError {
    fn from(e: CacheError) -> UpdateError {
        match e {
            CacheError::Network { .. } => UpdateError::Unreachable(e.into()),
            CacheError::Mismatch(_) | CacheError::TooLong { .. } => {
                UpdateError::PackageRefused(e.into())
            }
            CacheError::Local { .. } => UpdateError::Local(e.into()),
        }
    }
}

impl From<BuildError> for UpdateError {
    fn from(e: BuildError) -> UpdateError {
        if e.is_package_refused() {
            UpdateError::PackageRefused(e.into())
        } else {
            UpdateError::Local(e.into())
        }
    }
}

impl Updater {
    /// Reads the node config, the boot server CA and the hand-over note.
    pub fn open(options: Options) -> anyhow::Result<Updater> {
        let disk = Disk::new(&options.partition);
        let cfg_path = disk.node_config_path();
        let config = NodeConfig::load(&cfg_path)
            .with_context(|| format!("reading the node config {}", cfg_path.display()))?;
        let ca_path = disk.trust_dir().join("ca.pem");
        let ca = std::fs::read(&ca_path)
            .with_context(|| format!("reading the boot server CA {}", ca_path.display()))?;
        let handover: Option<Handover> = std::fs::read(&options.handover)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let urls = Handover::server_urls(&config, handover.as_ref());
        let floor = Handover::clock_floor(handover.as_ref());
        let server = ServerClient::new(
            &ca,
            urls.clone(),
            config.proxy.clone(),
            floor,
            Some((config.node_id, config.key.clone())),
        )?;
        Ok(Updater {
            cache: PackageCache::new(options.partition.join(CACHE_DIR)),
            options,
            disk,
            server,
            urls,
            url_index: 0,
            traffic: Arc::new(Traffic::default()),
            staging: false,
        })
    }

    pub fn disk(&self) -> &Disk {
        &self.disk
    }

    fn repository(&self) -> Result<HttpFetcher, UpdateError> {
        let url = &self.urls[self.url_index % self.urls.len()];
        let base = crate::boot_server::repo_base(url);
        HttpFetcher::new(
            &base,
            self.server.http().clone(),
            self.options.download.clone(),
        )
        .with_context(|| format!("repository URL {base}"))
        .map_err(local)
    }

    /// Checks once for an update and stages it (see the module docs).
    pub fn check(&mut self) -> CheckReport {
        let started = Instant::now();
        self.traffic.reset();
        self.staging = false;
        let result = self.check_and_stage();
        if result.as_ref().is_err_and(UpdateError::is_unreachable) {
            self.url_index = self.url_index.wrapping_add(1);
        }
        let report = CheckReport {
            result,
            requests: self.traffic.requests(),
            bytes: self.traffic.bytes(),
            not_modified: self.traffic.not_modified(),
            elapsed: started.elapsed(),
        };
        self.log_and_report(&report);
        if self.options.reboot {
            if let Ok(Outcome::Staged { deployment, .. } | Outcome::AlreadyStaged { deployment }) =
                &report.result
            {
                request_reboot(deployment);
            }
        }
        report
    }

    fn check_and_stage(&mut self) -> Result<Outcome, UpdateError> {
        let current = self.disk.link("current").map_err(local)?.ok_or_else(|| {
            local(anyhow!(
                "{} has no current deployment: nothing to update",
                self.disk.root.display()
            ))
        })?;
        let trust = self.disk.trust_dir();
        let root_path = trust.join("root.json");
        let root = std::fs::read(&root_path)
            .with_context(|| format!("reading the trusted root {}", root_path.display()))
            .map_err(local)?;
        let mut verifier = Verifier::open(&trust, &root).map_err(|e| local(e.into()))?;
        let http = self.repository()?;
        let source = MetadataSource::new(&http, &trust, self.traffic.clone());
        let update = verifier
            .check(&source, SystemTime::now())
            .map_err(classify)?;
        let repo = update.repo().clone();
        let unchanged = verifier.trusted_repo().as_ref() == Some(&repo);
        let packages = deploy::node_packages(&repo).map_err(|e| UpdateError::Metadata(e.into()))?;
        let target =
            deploy::deployment_id(&packages).map_err(|e| UpdateError::Metadata(e.into()))?;
        let persist = move || -> Result<(), UpdateError> {
            if unchanged {
                return Ok(());
            }
            verifier
                .commit(update)
                .context("persisting the verified metadata")
                .map_err(local)
        };

        if target == current {
            persist()?;
            // Deployments older than `previous` (left by the last activation) go.
            for removed in self.disk.prune().map_err(local)? {
                console::line(&format!("updater: removed the old deployment {removed}"));
            }
            self.cache.retain(&[]);
            return Ok(Outcome::UpToDate {
                deployment: current,
            });
        }
        if self.disk.link("staged").map_err(local)?.as_ref() == Some(&target) {
            persist()?;
            return Ok(Outcome::AlreadyStaged { deployment: target });
        }
        let denylist = self.disk.denylist().map_err(local)?;
        if let Some(denied) = denylist.iter().find(|d| d.deployment == target) {
            persist()?;
            let reported_now = self.report_denied_once(denied)?;
            return Ok(Outcome::Denied {
                deployment: target,
                reason: denied.reason.clone(),
                reported_now,
            });
        }
        if let Some(count) = self.disk.bootcount().map_err(local)? {
            if count.deployment == current {
                return Ok(Outcome::OnTrial { current, target });
            }
        }
        let outcome = self.stage(&http, &repo, &packages, &target, &current)?;
        persist()?;
        Ok(outcome)
    }

    /// Builds `target` beside `current` and points `staged` at it.
    fn stage(
        &mut self,
        http: &HttpFetcher,
        repo: &pkgsign::VerifiedRepo,
        packages: &[VerifiedPackage],
        target: &DeploymentId,
        current: &DeploymentId,
    ) -> Result<Outcome, UpdateError> {
        let os_version = packages
            .iter()
            .find(|p| p.name() == "base")
            .map(|p| p.info().version.clone())
            .unwrap_or_default();
        self.staging = true;
        console::step(
            "update/stage",
            StepStatus::Start,
            &format!("deployment={target} os={os_version} running={current}"),
        );
        if let Some(old) = self.disk.link("staged").map_err(local)? {
            console::line(&format!(
                "updater: {old} was staged but {target} is newer: replacing it"
            ));
            self.disk.clear_link("staged").map_err(local)?;
        }
        for removed in self.disk.prune().map_err(local)? {
            console::line(&format!("updater: removed the old deployment {removed}"));
        }

        // The deployment may be on disk already (staff went back to `previous`).
        if let Ok(record) = self.disk.record(target) {
            if crate::deploy::check_deployment(&self.disk, &record, true).is_ok() {
                self.disk.set_link("staged", target).map_err(local)?;
                return Ok(Outcome::Staged {
                    deployment: target.clone(),
                    os_version,
                    downloaded: Vec::new(),
                    reused: packages.iter().map(|p| p.name().to_string()).collect(),
                });
            }
            console::line(&format!(
                "updater: the existing {target} does not match its manifests: building it again"
            ));
            pkgsign::install::remove_tree(&self.disk.deployment_path(target))
                .with_context(|| format!("removing the damaged {target}"))
                .map_err(local)?;
        }

        let running = self.disk.record(current).map_err(local)?;
        let plan = Plan::against(packages, &running);
        self.ensure_space(space::needs(&plan, &self.cache), target, current)?;
        for name in self.cache.retain(&plan.install) {
            console::line(&format!("updater: removed the stale download {name}"));
        }
        for p in &plan.install {
            let fetched = self.cache.ensure(http, p, self.traffic.as_ref())?;
            console::line(&format!(
                "updater: package {} {}: {} downloaded and verified{}",
                p.name(),
                p.info().version,
                human(fetched.downloaded),
                if fetched.kept > 0 {
                    format!(" ({} kept from an earlier try)", human(fetched.kept))
                } else {
                    String::new()
                }
            ));
        }
        let from_cache = self.cache.fetcher();
        let build = deploy::Build {
            disk: &self.disk,
            repo,
            packages,
            plan: &plan,
            source: &from_cache,
            running: Some(&running),
            progress: None,
        };
        let (disk, cache, traffic) = (&self.disk, &self.cache, &self.traffic);
        let mut fetch_instead = |p: &VerifiedPackage| -> Result<(), UpdateError> {
            let needs = SpaceNeeds {
                download: p.info().length - cache.have(p),
                content: 0,
            };
            let free = space::free_bytes(&disk.root)
                .with_context(|| format!("measuring the free space on {}", disk.root.display()))
                .map_err(local)?;
            if free < needs.required() {
                return Err(UpdateError::NoSpace {
                    partition: disk.root.display().to_string(),
                    deployment: target.clone(),
                    needs,
                    free,
                });
            }
            cache.ensure(http, p, traffic.as_ref())?;
            Ok(())
        };
        let built = build.run(&mut fetch_instead)?;
        if &built.record.id != target {
            return Err(local(anyhow!(
                "built {} where {target} was expected",
                built.record.id
            )));
        }
        self.disk.set_link("staged", target).map_err(local)?;
        self.cache.retain(&[]);
        let fetched_instead = built.fetched_instead;
        let mut downloaded = plan.installed_names();
        downloaded.extend(fetched_instead.iter().cloned());
        let reused = plan
            .reused_names()
            .into_iter()
            .filter(|n| !fetched_instead.contains(n))
            .collect();
        Ok(Outcome::Staged {
            deployment: target.clone(),
            os_version,
            downloaded,
            reused,
        })
    }

    /// Refuses to start when the new deployment would not fit. `previous`
    /// is only a rollback target while `current` is on trial (and nothing
    /// is staged then); once the new deployment is activated it would be
    /// pruned anyway, so it goes first when space is short.
    fn ensure_space(
        &self,
        needs: SpaceNeeds,
        target: &DeploymentId,
        current: &DeploymentId,
    ) -> Result<(), UpdateError> {
        let partition = &self.disk.root;
        let measure = || {
            space::free_bytes(partition)
                .with_context(|| format!("measuring the free space on {}", partition.display()))
                .map_err(local)
        };
        let mut free = measure()?;
        if free < needs.required() {
            if let Some(previous) = self.disk.link("previous").map_err(local)? {
                if &previous != current {
                    console::line(&format!(
                        "updater: {} needed, {} free: removing the previous deployment {previous} (the running {current} becomes the rollback target)",
                        human(needs.required()),
                        human(free)
                    ));
                    self.disk.clear_link("previous").map_err(local)?;
                    self.disk.prune().map_err(local)?;
                    free = measure()?;
                }
            }
        }
        if free < needs.required() {
            return Err(UpdateError::NoSpace {
                partition: partition.display().to_string(),
                deployment: target.clone(),
                needs,
                free,
            });
        }
        Ok(())
    }

    fn reported(&self) -> Reported {
        let path = self.disk.root.join(REPORTED_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!("{} is damaged ({e}); starting afresh", path.display());
                Reported::default()
            }),
            Err(_) => Reported::default(),
        }
    }

    fn save_reported(&self, reported: &Reported) -> Result<(), UpdateError> {
        let bytes = serde_json::to_vec_pretty(reported)
            .context("encoding updater.json")
            .map_err(local)?;
        write_atomic(&self.disk.root.join(REPORTED_FILE), &bytes).map_err(|e| local(e.into()))
    }

    /// Tells the server about a denylisted deployment the first time only.
    fn report_denied_once(&mut self, denied: &crate::deploy::Denied) -> Result<bool, UpdateError> {
        let mut reported = self.reported();
        if reported.denied.contains(&denied.deployment) {
            return Ok(false);
        }
        let sent = self.send(
            UpdateEvent::Failed,
            &denied.os_version,
            denied.deployment.as_str(),
            format!(
                "the signed repository names {}, which is on the node's denylist ({}); it will not be staged again",
                denied.deployment, denied.reason
            ),
        );
        if sent {
            reported.denied.push(denied.deployment.clone());
            self.save_reported(&reported)?;
        }
        Ok(sent)
    }

    fn send(
        &mut self,
        event: UpdateEvent,
        os_version: &str,
        deployment: &str,
        reason: String,
    ) -> bool {
        let report = UpdateReport {
            event,
            os_version: os_version.to_string(),
            deployment: deployment.to_string(),
            reason: Some(reason),
            at: Timestamp::now(),
        };
        match self.server.post::<_, Empty>(paths::UPDATE, &report) {
            Ok(Empty {}) => true,
            Err(e) => {
                console::line(&format!(
                    "updater: could not report {event:?} to the server: {e}"
                ));
                false
            }
        }
    }

    /// One line per decision; reports to the server what it should know.
    fn log_and_report(&mut self, report: &CheckReport) {
        let cost = format!(
            "{} request(s), {} received, {} ms",
            report.requests,
            human(report.bytes),
            report.elapsed.as_millis()
        );
        let step = if self.staging {
            "update/stage"
        } else {
            "update/check"
        };
        match &report.result {
            Ok(outcome) => {
                console::step(step, StepStatus::Ok, &format!("{outcome} [{cost}]"));
                if let Outcome::Staged {
                    deployment,
                    os_version,
                    downloaded,
                    reused,
                } = outcome
                {
                    self.send(
                        UpdateEvent::Staged,
                        os_version,
                        deployment.as_str(),
                        format!(
                            "downloaded [{}] ({}), reused [{}]; activated by the CD at the next boot",
                            downloaded.join(" "),
                            human(report.bytes),
                            reused.join(" ")
                        ),
                    );
                }
                let mut reported = self.reported();
                if reported.last_failure.take().is_some() {
                    let _ = self.save_reported(&reported);
                }
            }
            Err(e) if e.is_unreachable() => {
                console::step(
                    step,
                    StepStatus::Fail,
                    &format!(
                        "{}; keeping the running deployment [{cost}]",
                        floor::report::error_line(e)
                    ),
                );
            }
            Err(e) => {
                let text = floor::report::error_line(e);
                console::step(step, StepStatus::Fail, &format!("{text} [{cost}]"));
                let mut reported = self.reported();
                if reported.last_failure.as_deref() != Some(text.as_str()) {
                    let (os, deployment) = match e {
                        UpdateError::NoSpace { deployment, .. } => {
                            ("-".to_string(), deployment.to_string())
                        }
                        _ => ("-".to_string(), "-".to_string()),
                    };
                    if self.send(UpdateEvent::Failed, &os, &deployment, text.clone()) {
                        reported.last_failure = Some(text);
                        let _ = self.save_reported(&reported);
                    }
                }
            }
        }
    }

    /// Checks forever (or until `observe` says stop), waiting per
    /// `schedule` between checks.
    pub fn run(
        &mut self,
        schedule: &Schedule,
        observe: &mut dyn FnMut(&CheckReport, &Wait) -> ControlFlow<()>,
    ) {
        for removed in self.disk.prune().unwrap_or_default() {
            console::line(&format!("updater: removed the old deployment {removed}"));
        }
        let mut failures = 0u32;
        loop {
            let report = self.check();
            failures = match &report.result {
                Err(e) if e.is_unreachable() => failures.saturating_add(1),
                _ => 0,
            };
            let wait = schedule.wait(failures);
            console::line(&format!(
                "updater: next check in {} s{}",
                wait.wait.as_secs(),
                if failures > 0 {
                    format!(
                        " (server unreachable {failures} time(s) in a row; base {} s)",
                        wait.base.as_secs()
                    )
                } else {
                    String::new()
                }
            ));
            if observe(&report, &wait).is_break() {
                return;
            }
            std::thread::sleep(wait.wait);
        }
    }
}

/// Asks PID 1 (the supervisor) for an orderly reboot; the CD then checks
/// the staged deployment and activates it on trial.
pub fn request_reboot(deployment: &DeploymentId) {
    console::step(
        "update/reboot",
        StepStatus::Start,
        &format!("asking PID 1 to reboot so the CD activates {deployment}"),
    );
    if let Err(e) = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(1),
        nix::sys::signal::Signal::SIGTERM,
    ) {
        console::step(
            "update/reboot",
            StepStatus::Fail,
            &format!("signalling PID 1: {e}"),
        );
    }
}

/// Runs the updater: one check (the result is the check's), or with a
/// `schedule`, checks forever.
pub fn run_service(options: Options, schedule: Option<Schedule>) -> anyhow::Result<()> {
    let mut updater = Updater::open(options)?;
    let Some(schedule) = schedule else {
        // The decision is on the console already; the exit status tells a script.
        return updater
            .check()
            .result
            .map(|_| ())
            .map_err(anyhow::Error::from);
    };
    console::line(&format!(
        "updater: checking {} every {} s (±50%), retrying from {} s up to {} s while it cannot be reached",
        updater.urls.iter().map(|u| u.to_string()).collect::<Vec<_>>().join(", "),
        schedule.interval.as_secs(),
        schedule.retry_min.as_secs(),
        schedule.retry_max.as_secs()
    ));
    updater.run(&schedule, &mut |_, _| ControlFlow::Continue(()));
    Ok(())
}
