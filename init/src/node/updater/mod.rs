//! The installed node's updater: signed updates from the boot server.
//!
//! Run by the supervisor as the service `updater` (`init update --daemon
//! --reboot`). Each check:
//!
//! 0. asks the boot server which release it may install now
//!    (`GET /api/v1/node/release`, conditional and signed: an unchanged
//!    answer is a `304`). The staff's rollout decides: whatever is
//!    published, exactly one release, or nothing new (the node's wave has
//!    not opened, the rollout is paused or halted); an aborted rollout
//!    sends a node running its release back to the previous deployment
//!    ([`Updater::revert`]). A node never installs a release the rollout
//!    does not allow, and while it holds (or already runs or has staged
//!    the allowed release) it does not touch the repository at all;
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
//! The repository is read from the mirrors the node config and the
//! directive name, then from the boot servers ([`sources`]); a source
//! that cannot be reached, refuses, or serves a swapped or stale file is
//! skipped for the next.
//!
//! Refusals are reported to the server once per distinct problem; a
//! deployment on the denylist is never staged again (reported once); each
//! change of the rollout's decision is reported once. While the server
//! cannot be reached the node keeps running what it has and retries with
//! growing, jittered intervals, spread by the node's id ([`schedule`]);
//! a `check_updates` hint (SIGUSR1 from the supervisor) cuts a wait short.

pub mod metadata;
pub mod schedule;
pub mod sources;
pub mod space;

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, Context as _};
use config::api::{
    paths, Empty, ReleaseAllow, ReleaseDirective, RolloutState, UpdateEvent, UpdateReport,
};
use config::node::{Mirror, NodeConfig, NodeId, ServerUrl};
use config::Timestamp;
use pkgsign::cache::Fetched;
use pkgsign::fetch::{DownloadPolicy, FetchError};
use pkgsign::verify::{Update, VerifyError};
use pkgsign::{VerifiedPackage, Verifier};
use serde::{Deserialize, Serialize};

use crate::boot_server::{CachedReply, Conditional, ServerClient, ServerError};
use crate::console::{self, StepStatus};
use crate::deploy::{self, BuildError, DeploymentId, Disk, Plan};
use crate::handover_note::{Handover, HANDOVER_FILE};
use floor::durable::write_atomic;
use metadata::{MetadataSource, Traffic};
use pkgsign::cache::{CacheError, PackageCache};
pub use schedule::{node_phase, Schedule, Wait};
use sources::{Source, Sources};
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
    /// The boot server's answer on what to install was refused (not
    /// signed for this request, or not the API's JSON): nothing is done.
    #[error("the boot server's release directive was refused")]
    Directive(#[source] Cause),
    /// The running release's rollout was aborted, but the deployment to go
    /// back to is gone.
    #[error("the rollout of {deployment}, which this node runs, was aborted, but no previous deployment is on disk to go back to")]
    CannotRevert { deployment: DeploymentId },
    /// The node's own files: a missing config, a damaged record, a write error.
    #[error(transparent)]
    Local(anyhow::Error),
}

/// A repository source whose metadata is older than what the boot server
/// publishes (a lagging or replaying mirror).
#[derive(Debug, thiserror::Error)]
#[error("serves timestamp version {found}, older than the {published} the boot server publishes")]
pub struct StaleSource {
    pub found: u64,
    pub published: u64,
}

impl UpdateError {
    pub fn is_unreachable(&self) -> bool {
        matches!(self, UpdateError::Unreachable(_))
    }

    /// What went wrong with one source, without the verdict for the whole
    /// check (a mirror that is down is not "the boot server").
    fn cause_line(&self) -> String {
        match self {
            UpdateError::Unreachable(c)
            | UpdateError::Metadata(c)
            | UpdateError::PackageRefused(c) => floor::report::error_line(c.as_ref()),
            other => floor::report::error_line(other),
        }
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
    /// The rollout says: nothing new now (the node's wave has not opened,
    /// or the rollout is paused, halted or aborted).
    Held { reason: String },
    /// The signed repository names a release other than the one the
    /// rollout allows: nothing is installed.
    Waiting {
        allowed: DeploymentId,
        published: DeploymentId,
    },
    /// The rollout of `from` was aborted: the previous deployment `to` is
    /// staged for the CD to activate, or (`to` none) the staged `from` was
    /// dropped. `newly`: this check did it.
    Reverted {
        from: DeploymentId,
        to: Option<DeploymentId>,
        newly: bool,
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
            Outcome::Held { reason } => write!(f, "held: {reason}"),
            Outcome::Waiting { allowed, published } => write!(
                f,
                "the repository names {published}, but the rollout allows {allowed}: waiting"
            ),
            Outcome::Reverted { from, to: Some(to), .. } => write!(
                f,
                "the rollout of {from} was aborted: {to}, the previous deployment, is staged to go back to"
            ),
            Outcome::Reverted { from, to: None, .. } => {
                write!(f, "the rollout of {from} was aborted: dropped it from staging")
            }
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
    /// Why the node holds, as last reported; cleared when it stops holding.
    #[serde(default)]
    held: Option<String>,
    /// Reports the server could not be told yet, oldest first.
    #[serde(default)]
    outbox: Vec<UpdateReport>,
}

/// Reports kept for a server that cannot be reached (the oldest matter most).
const MAX_OUTBOX: usize = 32;

/// Saving updater.json failed: the report is lost, the check goes on.
fn queued_ok(saved: Result<(), UpdateError>) {
    if let Err(e) = saved {
        console::line(&format!(
            "updater: keeping a report for later: {}",
            floor::report::error_line(&e)
        ));
    }
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
    node_id: NodeId,
    /// The node config's mirrors (the directive may add more).
    mirrors: Vec<Mirror>,
    sources: Sources,
    /// The last release directive, asked for again conditionally.
    release: Option<CachedReply>,
    /// The release this check is about (os version, id), for reports.
    target: Option<(String, DeploymentId)>,
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
        let sources = Sources::new(ca, config.proxy.clone(), floor, options.download.clone());
        Ok(Updater {
            cache: PackageCache::new(options.partition.join(CACHE_DIR)),
            options,
            disk,
            server,
            urls,
            url_index: 0,
            node_id: config.node_id,
            mirrors: config.mirrors.clone(),
            sources,
            release: None,
            target: None,
            traffic: Arc::new(Traffic::default()),
            staging: false,
        })
    }

    pub fn disk(&self) -> &Disk {
        &self.disk
    }

    /// The node this updater updates.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The updater's authenticated client of the boot server, for a caller
    /// that speaks for the same node on the same connection (a simulator
    /// playing the supervisor's check-ins).
    pub fn server(&mut self) -> &mut ServerClient {
        &mut self.server
    }

    /// Asks the boot server which release the node may install now;
    /// `None` from a server that does not know rollouts (whatever is
    /// published, as before).
    fn directive(&mut self) -> Result<Option<ReleaseDirective>, UpdateError> {
        self.traffic.request();
        let answer = self
            .server
            .get_if_changed(paths::RELEASE, self.release.as_ref());
        let body = match answer {
            Ok(Conditional::Unchanged) => {
                self.traffic.not_modified_hit();
                match &self.release {
                    Some(cached) => cached.body.clone(),
                    None => {
                        return Err(UpdateError::Directive(
                            "304 Not Modified to a request that named no entity tag".into(),
                        ))
                    }
                }
            }
            Ok(Conditional::Changed(reply)) => {
                self.traffic.received(reply.body.len());
                let body = reply.body.clone();
                self.release = Some(reply);
                body
            }
            Err(ServerError::Refused { status: 404, .. }) => {
                self.release = None;
                return Ok(None);
            }
            Err(e @ (ServerError::Unreachable(_) | ServerError::Stale { .. })) => {
                return Err(UpdateError::Unreachable(e.into()))
            }
            Err(e) => return Err(UpdateError::Directive(e.into())),
        };
        serde_json::from_slice(&body).map(Some).map_err(|e| {
            self.release = None;
            UpdateError::Directive(e.into())
        })
    }

    /// Checks once for an update and stages it (see the module docs).
    pub fn check(&mut self) -> CheckReport {
        let started = Instant::now();
        self.traffic.reset();
        self.staging = false;
        self.target = None;
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
            if let Ok(
                Outcome::Staged { deployment, .. }
                | Outcome::AlreadyStaged { deployment }
                | Outcome::Reverted {
                    to: Some(deployment),
                    ..
                },
            ) = &report.result
            {
                request_reboot(deployment);
            }
        }
        report
    }

    /// After the rollout of `bad` was aborted: drops it from staging, or,
    /// when the node runs it, stages the previous deployment (still on
    /// disk) for the CD to activate. `None` when the node has nothing of it.
    fn revert(
        &mut self,
        bad: &DeploymentId,
        current: &DeploymentId,
    ) -> Result<Option<Outcome>, UpdateError> {
        let staged = self.disk.link("staged").map_err(local)?;
        if current != bad {
            if staged.as_ref() == Some(bad) {
                self.target = Some((bad.os_version().to_string(), bad.clone()));
                self.disk.clear_link("staged").map_err(local)?;
                return Ok(Some(Outcome::Reverted {
                    from: bad.clone(),
                    to: None,
                    newly: true,
                }));
            }
            return Ok(None);
        }
        self.target = Some((bad.os_version().to_string(), bad.clone()));
        let previous = self
            .disk
            .link("previous")
            .map_err(local)?
            .filter(|p| p != bad)
            .ok_or_else(|| UpdateError::CannotRevert {
                deployment: bad.clone(),
            })?;
        if staged.as_ref() == Some(&previous) {
            return Ok(Some(Outcome::Reverted {
                from: bad.clone(),
                to: Some(previous),
                newly: false,
            }));
        }
        let record = self.disk.record(&previous).map_err(local)?;
        deploy::check_deployment(&self.disk, &record, false)
            .with_context(|| {
                format!("the previous deployment {previous} does not match its manifests")
            })
            .map_err(local)?;
        self.disk.set_link("staged", &previous).map_err(local)?;
        Ok(Some(Outcome::Reverted {
            from: bad.clone(),
            to: Some(previous),
            newly: true,
        }))
    }

    /// Verified metadata from the first source that gives it: each is
    /// checked in full; one that fails, or whose timestamp is older than
    /// what the boot server publishes, is skipped for the next.
    fn verified_metadata(
        &self,
        verifier: &Verifier,
        list: &[Source],
        published: Option<u64>,
    ) -> Result<(Update, usize), UpdateError> {
        let trust = self.disk.trust_dir();
        let mut last = None;
        for (i, src) in list.iter().enumerate() {
            let source = MetadataSource::new(&src.http, &trust, self.traffic.clone());
            let result = verifier
                .check(&source, SystemTime::now())
                .map_err(classify)
                .and_then(|update| match published {
                    Some(v) if update.repo().timestamp_version < v => {
                        Err(UpdateError::Metadata(Box::new(StaleSource {
                            found: update.repo().timestamp_version,
                            published: v,
                        })))
                    }
                    _ => Ok(update),
                });
            match result {
                Ok(update) => return Ok((update, i)),
                Err(e @ UpdateError::Local(_)) => return Err(e),
                Err(e) => {
                    if let Some(next) = list.get(i + 1) {
                        console::line(&format!(
                            "updater: {}: {}; trying {}",
                            src.label,
                            e.cause_line(),
                            next.label
                        ));
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| local(anyhow!("no repository source to check"))))
    }

    fn check_and_stage(&mut self) -> Result<Outcome, UpdateError> {
        let current = self.disk.link("current").map_err(local)?.ok_or_else(|| {
            local(anyhow!(
                "{} has no current deployment: nothing to update",
                self.disk.root.display()
            ))
        })?;
        let directive = self.directive()?;
        self.flush_outbox();
        if let Some(bad) = directive.as_ref().and_then(|d| d.revert.clone()) {
            if let Some(outcome) = self.revert(&bad, &current)? {
                return Ok(outcome);
            }
        }
        let allow = directive
            .as_ref()
            .map_or(ReleaseAllow::Latest, |d| d.allow.clone());
        // A staged deployment the rollout does not allow (staged before the
        // rollout, or for another release) is not left for the CD.
        let rollout_release = match &allow {
            ReleaseAllow::Release { deployment } => Some(deployment.clone()),
            ReleaseAllow::Hold => directive
                .as_ref()
                .and_then(|d| d.rollout.as_ref())
                .map(|r| r.deployment.clone()),
            ReleaseAllow::Latest => None,
        };
        if let Some(allowed) = &rollout_release {
            if let Some(staged) = self.disk.link("staged").map_err(local)? {
                if staged != *allowed {
                    console::line(&format!(
                        "updater: {staged} is staged, but the rollout allows {allowed}: dropping it"
                    ));
                    self.disk.clear_link("staged").map_err(local)?;
                }
            }
        }
        match &allow {
            ReleaseAllow::Hold => {
                if let Some(id) = &rollout_release {
                    self.target = Some((id.os_version().to_string(), id.clone()));
                }
                return Ok(Outcome::Held {
                    reason: hold_reason(directive.as_ref()),
                });
            }
            ReleaseAllow::Release { deployment } => {
                self.target = Some((deployment.os_version().to_string(), deployment.clone()));
                if *deployment == current {
                    self.tidy_up()?;
                    return Ok(Outcome::UpToDate {
                        deployment: current,
                    });
                }
                if self.disk.link("staged").map_err(local)?.as_ref() == Some(deployment) {
                    return Ok(Outcome::AlreadyStaged {
                        deployment: deployment.clone(),
                    });
                }
            }
            ReleaseAllow::Latest => {}
        }

        let trust = self.disk.trust_dir();
        let root_path = trust.join("root.json");
        let root = std::fs::read(&root_path)
            .with_context(|| format!("reading the trusted root {}", root_path.display()))
            .map_err(local)?;
        let mut verifier = Verifier::open(&trust, &root).map_err(|e| local(e.into()))?;
        let no_mirrors: &[Mirror] = &[];
        let mirrors = sources::merged(
            &self.mirrors,
            directive.as_ref().map_or(no_mirrors, |d| &d.mirrors),
        );
        let list = self
            .sources
            .list(&mirrors, &self.urls, self.url_index, self.server.http())
            .map_err(|e| local(e.into()))?;
        let published = directive.as_ref().and_then(|d| d.timestamp_version);
        let (update, from) = self.verified_metadata(&verifier, &list, published)?;
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
        if let ReleaseAllow::Release { deployment } = &allow {
            if *deployment != target {
                persist()?;
                return Ok(Outcome::Waiting {
                    allowed: deployment.clone(),
                    published: target,
                });
            }
        }
        self.target = Some((os_version_of(&packages), target.clone()));

        if target == current {
            persist()?;
            self.tidy_up()?;
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
        let outcome = self.stage(&list, from, &repo, &packages, &target, &current)?;
        persist()?;
        Ok(outcome)
    }

    /// Deployments older than `previous` (left by the last activation) and
    /// stale downloads go.
    fn tidy_up(&mut self) -> Result<(), UpdateError> {
        for removed in self.disk.prune().map_err(local)? {
            console::line(&format!("updater: removed the old deployment {removed}"));
        }
        self.cache.retain(&[]);
        Ok(())
    }

    /// Builds `target` beside `current` and points `staged` at it, taking
    /// packages from `list` (starting with `first`, the source the metadata
    /// came from).
    fn stage(
        &mut self,
        list: &[Source],
        first: usize,
        repo: &pkgsign::VerifiedRepo,
        packages: &[VerifiedPackage],
        target: &DeploymentId,
        current: &DeploymentId,
    ) -> Result<Outcome, UpdateError> {
        let os_version = os_version_of(packages);
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
            let fetched = fetch_package(&self.cache, self.traffic.as_ref(), list, first, p)?;
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
            fetch_package(cache, traffic.as_ref(), list, first, p)?;
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
        crate::node::events::update(&report);
        match self.server.post::<_, Empty>(paths::UPDATE, &report) {
            Ok(Empty {}) => true,
            Err(e) => {
                // Kept and sent with the next check that reaches the server:
                // a transition is told late rather than never.
                let mut reported = self.reported();
                let queued = reported.outbox.len() < MAX_OUTBOX;
                if queued {
                    reported.outbox.push(report);
                    queued_ok(self.save_reported(&reported));
                }
                console::line(&format!(
                    "updater: could not report {event:?} to the server: {e}{}",
                    if queued {
                        "; it is sent with the next check that reaches the server"
                    } else {
                        ""
                    }
                ));
                queued
            }
        }
    }

    /// Sends the reports an earlier check could not deliver, oldest first;
    /// keeps those that fail again.
    fn flush_outbox(&mut self) {
        let mut reported = self.reported();
        if reported.outbox.is_empty() {
            return;
        }
        let pending = std::mem::take(&mut reported.outbox);
        let mut sent = 0;
        for report in pending {
            if reported.outbox.is_empty()
                && self.server.post::<_, Empty>(paths::UPDATE, &report).is_ok()
            {
                sent += 1;
            } else {
                reported.outbox.push(report);
            }
        }
        if sent > 0 {
            console::line(&format!(
                "updater: sent {sent} report(s) held back while the server could not be reached"
            ));
        }
        queued_ok(self.save_reported(&reported));
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
                let mut held_now = None;
                match outcome {
                    Outcome::Staged {
                        deployment,
                        os_version,
                        downloaded,
                        reused,
                    } => {
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
                    Outcome::Reverted {
                        from,
                        to,
                        newly: true,
                    } => {
                        let what = match to {
                            Some(to) => format!("going back to the previous deployment {to}"),
                            None => "dropped it from staging".to_string(),
                        };
                        self.send(
                            UpdateEvent::Reverted,
                            from.os_version(),
                            from.as_str(),
                            format!("the rollout of {from} was aborted: {what}"),
                        );
                    }
                    Outcome::Held { reason } => held_now = Some(reason.clone()),
                    Outcome::Waiting { .. } => held_now = Some(outcome.to_string()),
                    _ => {}
                }
                let mut reported = self.reported();
                let mut changed = reported.last_failure.take().is_some();
                if reported.held != held_now {
                    let mut sent = true;
                    if let Some(reason) = &held_now {
                        let (os, deployment) = self.target_names();
                        sent = self.send(UpdateEvent::Held, &os, &deployment, reason.clone());
                    }
                    if sent {
                        reported.held = held_now;
                        changed = true;
                    }
                }
                if changed {
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
                            (deployment.os_version().to_string(), deployment.to_string())
                        }
                        _ => self.target_names(),
                    };
                    if self.send(UpdateEvent::Failed, &os, &deployment, text.clone()) {
                        reported.last_failure = Some(text);
                        let _ = self.save_reported(&reported);
                    }
                }
            }
        }
    }

    /// The release this check was about, as (os version, id) for a report.
    fn target_names(&self) -> (String, String) {
        match &self.target {
            Some((os, id)) => (os.clone(), id.to_string()),
            None => ("-".to_string(), "-".to_string()),
        }
    }

    /// Checks forever (or until `observe` says stop), waiting per
    /// `schedule` between checks; a message on `wake` (the boot server's
    /// `check_updates` hint) ends a wait early.
    pub fn run(
        &mut self,
        schedule: &Schedule,
        wake: &Receiver<()>,
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
            let wait = schedule.wait(failures, node_phase(self.node_id));
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
            match wake.recv_timeout(wait.wait) {
                Ok(()) => {
                    while wake.try_recv().is_ok() {}
                    console::line("updater: woken: the boot server asked for a check now");
                }
                Err(RecvTimeoutError::Timeout) => {}
                // Nobody can wake us any more: plain waits from here on.
                Err(RecvTimeoutError::Disconnected) => std::thread::sleep(wait.wait),
            }
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

/// Why the node holds, from the directive's rollout note.
fn hold_reason(directive: Option<&ReleaseDirective>) -> String {
    let Some(r) = directive.and_then(|d| d.rollout.as_ref()) else {
        return "the boot server holds updates".into();
    };
    let which = format!("rollout {} of {}", r.id, r.deployment);
    match (r.state, r.opens_at) {
        (RolloutState::Active, Some(at)) => {
            format!("{which}: wave {} of {} opens at {at}", r.wave, r.waves)
        }
        (RolloutState::Active, None) => {
            format!("{which}: wave {} of {} is not open", r.wave, r.waves)
        }
        (state, _) => format!(
            "{which} is {state} (this node is in wave {} of {})",
            r.wave, r.waves
        ),
    }
}

/// The `base` version of a package set.
fn os_version_of(packages: &[VerifiedPackage]) -> String {
    packages
        .iter()
        .find(|p| p.name() == "base")
        .map(|p| p.info().version.clone())
        .unwrap_or_default()
}

/// Makes sure `package` is complete in the cache, from the first source
/// in `list` (starting at `first`) that has it as signed.
fn fetch_package(
    cache: &PackageCache,
    traffic: &Traffic,
    list: &[Source],
    first: usize,
    package: &VerifiedPackage,
) -> Result<Fetched, UpdateError> {
    let order = std::iter::once(first).chain((0..list.len()).filter(|i| *i != first));
    let mut last = None;
    for i in order {
        let Some(src) = list.get(i) else { continue };
        match cache.ensure(&src.http, package, traffic) {
            Ok(fetched) => return Ok(fetched),
            Err(e) => {
                let e = UpdateError::from(e);
                if matches!(e, UpdateError::Local(_)) {
                    return Err(e);
                }
                console::line(&format!(
                    "updater: package {} from {}: {}; trying the next source",
                    package.name(),
                    src.label,
                    e.cause_line()
                ));
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or_else(|| local(anyhow!("no repository source for {}", package.name()))))
}

/// Blocks SIGUSR1 in this thread (and the threads it starts from now on)
/// and turns each one into a message: the supervisor's way to pass on the
/// boot server's `check_updates` hint. Call before starting other threads.
pub fn wake_on_sigusr1() -> anyhow::Result<Receiver<()>> {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGUSR1);
    set.thread_block().context("blocking SIGUSR1")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("wake".into())
        .spawn(move || loop {
            match set.wait() {
                Ok(_) => {
                    if tx.send(()).is_err() {
                        return;
                    }
                }
                Err(_) => return,
            }
        })
        .context("starting the wake-up thread")?;
    Ok(rx)
}

/// Runs the updater: one check (the result is the check's), or with a
/// `schedule`, checks forever (woken early by SIGUSR1).
pub fn run_service(options: Options, schedule: Option<Schedule>) -> anyhow::Result<()> {
    let wake = match schedule {
        Some(_) => Some(wake_on_sigusr1()?),
        None => None,
    };
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
    let wake = wake.unwrap_or_else(|| std::sync::mpsc::channel().1);
    updater.run(&schedule, &wake, &mut |_, _| ControlFlow::Continue(()));
    Ok(())
}
