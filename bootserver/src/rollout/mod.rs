//! Rollouts: a release of the node OS goes out in waves, is watched, and
//! can be paused, resumed or aborted (DESIGN.md §2, rollouts).
//!
//! A node's wave is fixed by a stable hash of its id ([`bucket`]), so the
//! same nodes always go first. Wave `k` (from 0) opens `k × interval` of
//! *active* time after the start: a pause or a halt stops the clock. Only
//! the newest rollout counts; a node learns from `GET /api/v1/node/release`
//! ([`Rollout::directive`]) whether it may take the release now, and its
//! check-in reply carries a `check_updates` hint when its wave opens (or
//! the rollout is aborted while it runs the release). Nodes report what
//! they did with the release ([`NodeProgress`]); failures in a wave past
//! the rollout's limit halt it ([`FailureLimit`]).
//!
//! This module is the pure part (waves, clocks, decisions); [`store`]
//! keeps rollouts in the registry.

pub mod store;

use std::fmt;
use std::str::FromStr;

use config::api::{ReleaseAllow, RolloutNote, RolloutState};
use config::node::NodeId;
use config::release::DeploymentId;
use config::Timestamp;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Shares of the fleet are counted in parts of ten thousand (0.01 %).
pub const SCALE: u32 = 10_000;

/// Where a node falls in `0..SCALE`: a stable hash of its id, the same on
/// every server and in every rollout.
pub fn bucket(node: NodeId) -> u32 {
    let digest = Sha256::digest(format!("plnode rollout wave {}", node.0));
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) % u64::from(SCALE)) as u32
}

/// A wave plan that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// A share is not a percentage like `10%` or `2.5%`.
    #[error("`{0}` is not a share of the nodes like `10%` or `2.5%`")]
    Share(String),
    /// Shares must grow from wave to wave.
    #[error("wave shares must grow from wave to wave ({0} does not)")]
    NotIncreasing(String),
    /// The last wave must take every node.
    #[error("the last wave must be 100% (every node), not {0}")]
    NotAll(String),
    /// No wave at all.
    #[error("a rollout needs at least one wave")]
    Empty,
    /// More waves than are useful.
    #[error("at most {max} waves")]
    TooMany {
        /// The limit.
        max: usize,
    },
}

/// The waves of a rollout: cumulative shares of the fleet in parts of
/// [`SCALE`], growing, the last one all of it. `1%,10%,50%,100%` is four
/// waves: the first 1 % of nodes, then the next 9 %, 40 %, 50 %.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WavePlan(Vec<u32>);

/// Most waves a plan may have.
pub const MAX_WAVES: usize = 100;

fn share_text(parts: u32) -> String {
    if parts.is_multiple_of(100) {
        format!("{}%", parts / 100)
    } else {
        let text = format!("{}.{:02}", parts / 100, parts % 100);
        format!("{}%", text.trim_end_matches('0'))
    }
}

impl WavePlan {
    /// Every node at once (`--now`).
    pub fn one_wave() -> WavePlan {
        WavePlan(vec![SCALE])
    }

    /// A plan from cumulative shares in parts of [`SCALE`].
    pub fn new(bounds: Vec<u32>) -> Result<WavePlan, PlanError> {
        if bounds.is_empty() {
            return Err(PlanError::Empty);
        }
        if bounds.len() > MAX_WAVES {
            return Err(PlanError::TooMany { max: MAX_WAVES });
        }
        for pair in bounds.windows(2) {
            if pair[1] <= pair[0] {
                return Err(PlanError::NotIncreasing(share_text(pair[1])));
            }
        }
        if bounds[0] == 0 {
            return Err(PlanError::NotIncreasing(share_text(0)));
        }
        let last = bounds[bounds.len() - 1];
        if last != SCALE {
            return Err(PlanError::NotAll(share_text(last)));
        }
        Ok(WavePlan(bounds))
    }

    /// How many waves.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never true for a valid plan.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The cumulative bounds.
    pub fn bounds(&self) -> &[u32] {
        &self.0
    }

    /// The wave (from 0) of a node.
    pub fn wave_of(&self, node: NodeId) -> usize {
        let b = bucket(node);
        self.0
            .iter()
            .position(|&end| b < end)
            .unwrap_or(self.0.len() - 1)
    }

    /// Wave `i`'s share of the fleet, `from..to` in parts of [`SCALE`].
    pub fn range(&self, i: usize) -> (u32, u32) {
        let from = if i == 0 { 0 } else { self.0[i - 1] };
        (from, self.0[i])
    }
}

impl FromStr for WavePlan {
    type Err = PlanError;
    fn from_str(s: &str) -> Result<WavePlan, PlanError> {
        let mut bounds = Vec::new();
        for part in s.split(',').map(str::trim) {
            bounds.push(parse_share(part)?);
        }
        WavePlan::new(bounds)
    }
}

impl fmt::Display for WavePlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|p| share_text(*p)).collect();
        f.write_str(&parts.join(","))
    }
}

/// `12.5%` → 1250 parts of [`SCALE`] (at most two decimals).
fn parse_share(text: &str) -> Result<u32, PlanError> {
    let bad = || PlanError::Share(text.to_string());
    let number = text.strip_suffix('%').ok_or_else(bad)?.trim();
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty()
        || frac.len() > 2
        || !(whole.chars().chain(frac.chars())).all(|c| c.is_ascii_digit())
    {
        return Err(bad());
    }
    let whole: u32 = whole.parse().map_err(|_| bad())?;
    let frac: u32 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<2}").parse().map_err(|_| bad())?
    };
    let parts = whole
        .checked_mul(100)
        .and_then(|w| w.checked_add(frac))
        .ok_or_else(bad)?;
    if parts > SCALE {
        return Err(bad());
    }
    Ok(parts)
}

/// How many failures in one wave halt a rollout: more than a share of the
/// wave's nodes (`5%`), or more than a count (`3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureLimit {
    /// More than this share (parts of [`SCALE`]) of the wave's nodes.
    Share(u32),
    /// More than this many nodes.
    Count(u64),
}

impl FailureLimit {
    /// Whether `failed` of a wave of `nodes` passes the limit.
    pub fn exceeded(&self, failed: u64, nodes: u64) -> bool {
        match *self {
            FailureLimit::Share(parts) => {
                u128::from(failed) * u128::from(SCALE) > u128::from(parts) * u128::from(nodes)
            }
            FailureLimit::Count(n) => failed > n,
        }
    }
}

impl Default for FailureLimit {
    fn default() -> FailureLimit {
        FailureLimit::Share(500)
    }
}

impl FromStr for FailureLimit {
    type Err = PlanError;
    fn from_str(s: &str) -> Result<FailureLimit, PlanError> {
        let s = s.trim();
        if s.ends_with('%') {
            return parse_share(s).map(FailureLimit::Share);
        }
        s.parse()
            .map(FailureLimit::Count)
            .map_err(|_| PlanError::Share(s.to_string()))
    }
}

impl fmt::Display for FailureLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureLimit::Share(p) => f.write_str(&share_text(*p)),
            FailureLimit::Count(n) => write!(f, "{n}"),
        }
    }
}

/// What a node did with a rollout's release, from its reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeProgress {
    /// Staged, waiting for its reboot.
    Staged,
    /// Booted on trial.
    Activated,
    /// Came up healthy: marked good.
    Good,
    /// Failed: its trial, staging, or rolled back.
    Failed,
    /// Went back to its previous deployment after an abort.
    Reverted,
}

impl NodeProgress {
    /// Every value.
    pub const ALL: [NodeProgress; 5] = [
        NodeProgress::Staged,
        NodeProgress::Activated,
        NodeProgress::Good,
        NodeProgress::Failed,
        NodeProgress::Reverted,
    ];

    /// The stored word.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeProgress::Staged => "staged",
            NodeProgress::Activated => "activated",
            NodeProgress::Good => "good",
            NodeProgress::Failed => "failed",
            NodeProgress::Reverted => "reverted",
        }
    }

    /// How far along a step is (for reports of the same second).
    pub fn rank(self) -> i64 {
        match self {
            NodeProgress::Staged => 1,
            NodeProgress::Activated => 2,
            NodeProgress::Good => 3,
            NodeProgress::Failed => 4,
            NodeProgress::Reverted => 5,
        }
    }

    /// The node runs (or is about to run) the release.
    pub fn took(self) -> bool {
        matches!(
            self,
            NodeProgress::Staged | NodeProgress::Activated | NodeProgress::Good
        )
    }
}

impl FromStr for NodeProgress {
    type Err = crate::model::UnknownWord;
    fn from_str(s: &str) -> Result<NodeProgress, Self::Err> {
        NodeProgress::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| crate::model::UnknownWord {
                what: "rollout progress",
                value: s.to_string(),
            })
    }
}

/// A rollout as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rollout {
    /// Its number (rollouts are numbered in the order they started).
    pub id: u64,
    /// The release it rolls out.
    pub deployment: DeploymentId,
    /// The release's `base` version.
    pub os_version: String,
    /// The signed targets version published when it started.
    pub targets_version: u64,
    /// Its waves.
    #[serde(serialize_with = "as_text")]
    pub waves: WavePlan,
    /// Active time between two waves.
    pub interval_secs: u64,
    /// Failures in a wave that halt it.
    #[serde(serialize_with = "as_text")]
    pub max_failures: FailureLimit,
    /// Where it stands.
    pub state: RolloutState,
    /// When it started.
    pub started_at: Timestamp,
    /// Time spent paused or halted before the current pause.
    pub paused_secs: u64,
    /// When the current pause or halt began.
    pub paused_at: Option<Timestamp>,
    /// Why it halted, or the last thing staff did.
    pub note: Option<String>,
    /// When it was aborted or superseded.
    pub ended_at: Option<Timestamp>,
}

fn as_text<T: fmt::Display, S: serde::Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

impl Rollout {
    /// Seconds the rollout has been active by `now` (its wave clock).
    pub fn active_secs(&self, now: Timestamp) -> u64 {
        let end = match (self.state, self.paused_at, self.ended_at) {
            (RolloutState::Paused | RolloutState::Halted, Some(p), _) => p,
            (RolloutState::Aborted | RolloutState::Superseded, _, Some(e)) => e,
            _ => now,
        };
        let span = end.unix().saturating_sub(self.started_at.unix()).max(0) as u64;
        span.saturating_sub(self.paused_secs)
    }

    /// How many waves are open by `now` (at least the first).
    pub fn open_waves(&self, now: Timestamp) -> usize {
        let len = self.waves.len();
        if self.interval_secs == 0 {
            return len;
        }
        let opened = 1 + self.active_secs(now) / self.interval_secs;
        (opened.min(len as u64)) as usize
    }

    /// When wave `wave` (from 0) opens, if it has not yet and the rollout
    /// is active (a paused clock gives no time).
    pub fn opens_at(&self, wave: usize, now: Timestamp) -> Option<Timestamp> {
        if self.state != RolloutState::Active || wave < self.open_waves(now) {
            return None;
        }
        let at = self
            .started_at
            .unix()
            .saturating_add(self.paused_secs as i64)
            .saturating_add((wave as u64).saturating_mul(self.interval_secs) as i64);
        Some(Timestamp::from_unix(at))
    }

    /// Whether every wave is open and nothing stopped it.
    pub fn complete(&self, now: Timestamp) -> bool {
        self.state == RolloutState::Active && self.open_waves(now) == self.waves.len()
    }

    /// What `node` may install now, and what it must not run.
    pub fn directive(
        &self,
        node: NodeId,
        now: Timestamp,
    ) -> (ReleaseAllow, Option<DeploymentId>, RolloutNote) {
        let wave = self.waves.wave_of(node);
        let open = wave < self.open_waves(now);
        let allow = match self.state {
            RolloutState::Active if open => ReleaseAllow::Release {
                deployment: self.deployment.clone(),
            },
            _ => ReleaseAllow::Hold,
        };
        let revert = (self.state == RolloutState::Aborted).then(|| self.deployment.clone());
        let note = RolloutNote {
            id: self.id,
            deployment: self.deployment.clone(),
            wave: wave as u32 + 1,
            waves: self.waves.len() as u32,
            state: self.state,
            opens_at: self.opens_at(wave, now),
        };
        (allow, revert, note)
    }

    /// The hint a node should get at a check-in while it runs `running`,
    /// named so that each is given once: `R<id>:take` when its wave is open
    /// and it runs something else, `R<id>:revert` when the rollout was
    /// aborted and it runs the release.
    pub fn hint_key(&self, node: NodeId, running: Option<&str>, now: Timestamp) -> Option<String> {
        let runs_it = running == Some(self.deployment.as_str());
        match self.state {
            RolloutState::Active if !runs_it && self.waves.wave_of(node) < self.open_waves(now) => {
                Some(format!("R{}:take", self.id))
            }
            RolloutState::Aborted if runs_it => Some(format!("R{}:revert", self.id)),
            _ => None,
        }
    }
}

/// Counts of one wave (or all of them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WaveCounts {
    /// Registered nodes in the wave.
    pub nodes: u64,
    /// Nodes that took the release (staged, on trial, or healthy).
    pub took: u64,
    /// Of those, nodes healthy on it (marked good).
    pub healthy: u64,
    /// Nodes that failed with it (staging, trial, rolled back).
    pub failed: u64,
    /// Nodes sent back to their previous release by an abort.
    pub reverted: u64,
    /// Nodes that said nothing about the release yet.
    pub not_reported: u64,
}

impl WaveCounts {
    /// Counts one node.
    pub fn add(&mut self, progress: Option<NodeProgress>) {
        self.nodes += 1;
        match progress {
            Some(NodeProgress::Good) => {
                self.took += 1;
                self.healthy += 1;
            }
            Some(p) if p.took() => self.took += 1,
            Some(NodeProgress::Failed) => self.failed += 1,
            Some(NodeProgress::Reverted) => self.reverted += 1,
            _ => self.not_reported += 1,
        }
    }
}

/// One wave of a rollout's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WaveStatus {
    /// The wave, counted from 1.
    pub wave: u32,
    /// Its share of the fleet, `from..to` in percent (text).
    pub share: String,
    /// Whether it is open.
    pub open: bool,
    /// When it opens, if it has not and the rollout is active.
    pub opens_at: Option<Timestamp>,
    /// Its nodes.
    #[serde(flatten)]
    pub counts: WaveCounts,
}

/// A rollout and how far it got, wave by wave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RolloutStatus {
    /// The rollout.
    pub rollout: Rollout,
    /// When this was computed.
    pub now: Timestamp,
    /// Waves open.
    pub open_waves: u32,
    /// Every wave is open and the rollout is active.
    pub complete: bool,
    /// Wave by wave.
    pub waves: Vec<WaveStatus>,
    /// All waves together.
    pub total: WaveCounts,
}

impl RolloutStatus {
    /// Counts nodes (id, the deployment each last reported, its progress)
    /// into the rollout's waves.
    pub fn compute(
        rollout: Rollout,
        nodes: impl IntoIterator<Item = (NodeId, Option<String>, Option<NodeProgress>)>,
        now: Timestamp,
    ) -> RolloutStatus {
        let n = rollout.waves.len();
        let mut counts = vec![WaveCounts::default(); n];
        let mut total = WaveCounts::default();
        for (id, running, progress) in nodes {
            // A node that runs the release without having said so (installed
            // with it) is healthy on it.
            let progress = progress.or_else(|| {
                (running.as_deref() == Some(rollout.deployment.as_str()))
                    .then_some(NodeProgress::Good)
            });
            counts[rollout.waves.wave_of(id)].add(progress);
            total.add(progress);
        }
        let open = rollout.open_waves(now);
        let waves = counts
            .into_iter()
            .enumerate()
            .map(|(i, counts)| {
                let (from, to) = rollout.waves.range(i);
                WaveStatus {
                    wave: i as u32 + 1,
                    share: format!("{}–{}", share_text(from), share_text(to)),
                    open: i < open,
                    opens_at: rollout.opens_at(i, now),
                    counts,
                }
            })
            .collect();
        RolloutStatus {
            complete: rollout.complete(now),
            open_waves: open as u32,
            rollout,
            now,
            waves,
            total,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollout(waves: &str, interval: u64) -> Rollout {
        Rollout {
            id: 1,
            deployment: DeploymentId::new("2-0a1b2c3d").unwrap(),
            os_version: "2".into(),
            targets_version: 2,
            waves: waves.parse().unwrap(),
            interval_secs: interval,
            max_failures: FailureLimit::default(),
            state: RolloutState::Active,
            started_at: Timestamp::from_unix(1_000_000),
            paused_secs: 0,
            paused_at: None,
            note: None,
            ended_at: None,
        }
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_unix(1_000_000 + secs)
    }

    #[test]
    fn plans_parse_and_say_what_is_wrong() {
        let plan: WavePlan = "1%,10%,50%,100%".parse().unwrap();
        assert_eq!(plan.bounds(), [100, 1000, 5000, 10000]);
        assert_eq!(plan.to_string(), "1%,10%,50%,100%");
        assert_eq!(
            "0.5%, 100%".parse::<WavePlan>().unwrap().to_string(),
            "0.5%,100%"
        );
        for (bad, says) in [
            ("10%,5%,100%", "must grow"),
            ("10%,50%", "must be 100%"),
            ("ten,100%", "not a share"),
            ("1.234%,100%", "not a share"),
            ("0%,100%", "must grow"),
            ("150%", "not a share"),
        ] {
            let e = bad.parse::<WavePlan>().unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn failure_limits_are_shares_or_counts() {
        let five: FailureLimit = "5%".parse().unwrap();
        assert!(!five.exceeded(0, 10));
        assert!(five.exceeded(1, 10), "1 of 10 is more than 5%");
        assert!(!five.exceeded(5, 100));
        assert!(five.exceeded(6, 100));
        let three: FailureLimit = "3".parse().unwrap();
        assert!(!three.exceeded(3, 1000));
        assert!(three.exceeded(4, 1000));
        assert_eq!(five.to_string(), "5%");
        assert!("five".parse::<FailureLimit>().is_err());
    }

    #[test]
    fn waves_open_on_the_active_clock() {
        let mut r = rollout("1%,10%,50%,100%", 600);
        assert_eq!(r.open_waves(at(0)), 1);
        assert_eq!(r.open_waves(at(599)), 1);
        assert_eq!(r.open_waves(at(600)), 2);
        assert_eq!(r.open_waves(at(10_000)), 4);
        assert_eq!(r.opens_at(2, at(700)), Some(at(1200)));
        // Paused at 700 s for 1000 s: the clock stands still, then goes on.
        r.state = RolloutState::Paused;
        r.paused_at = Some(at(700));
        assert_eq!(r.open_waves(at(5000)), 2);
        assert_eq!(r.opens_at(2, at(5000)), None);
        r.state = RolloutState::Active;
        r.paused_at = None;
        r.paused_secs = 1000;
        assert_eq!(r.open_waves(at(2199)), 2);
        assert_eq!(r.open_waves(at(2200)), 3);
        assert_eq!(r.opens_at(3, at(2200)), Some(at(2800)));
        let now = rollout("100%", 0);
        assert!(now.complete(at(0)));
    }

    #[test]
    fn directives_follow_the_wave_and_the_state() {
        let mut r = rollout("50%,100%", 600);
        let first = (1..200u64)
            .map(NodeId)
            .find(|n| r.waves.wave_of(*n) == 0)
            .unwrap();
        let second = (1..200u64)
            .map(NodeId)
            .find(|n| r.waves.wave_of(*n) == 1)
            .unwrap();
        let release = ReleaseAllow::Release {
            deployment: r.deployment.clone(),
        };
        assert_eq!(r.directive(first, at(10)).0, release);
        let (allow, revert, note) = r.directive(second, at(10));
        assert_eq!(allow, ReleaseAllow::Hold);
        assert_eq!(revert, None);
        assert_eq!((note.wave, note.waves), (2, 2));
        assert_eq!(note.opens_at, Some(at(600)));
        assert_eq!(r.directive(second, at(600)).0, release);
        assert_eq!(r.hint_key(second, Some("1-ffffffff"), at(10)), None);
        assert_eq!(
            r.hint_key(second, Some("1-ffffffff"), at(600)).as_deref(),
            Some("R1:take")
        );
        assert_eq!(r.hint_key(second, Some("2-0a1b2c3d"), at(600)), None);

        r.state = RolloutState::Halted;
        r.paused_at = Some(at(100));
        assert_eq!(r.directive(first, at(700)).0, ReleaseAllow::Hold);
        assert_eq!(r.directive(second, at(700)).0, ReleaseAllow::Hold);

        r.state = RolloutState::Aborted;
        r.ended_at = Some(at(800));
        let (allow, revert, _) = r.directive(first, at(900));
        assert_eq!(allow, ReleaseAllow::Hold);
        assert_eq!(revert, Some(r.deployment.clone()));
        assert_eq!(
            r.hint_key(first, Some("2-0a1b2c3d"), at(900)).as_deref(),
            Some("R1:revert")
        );
        assert_eq!(r.hint_key(first, Some("1-ffffffff"), at(900)), None);
    }

    #[test]
    fn status_counts_each_node_once_in_its_wave() {
        let r = rollout("50%,100%", 600);
        let nodes: Vec<(NodeId, Option<String>, Option<NodeProgress>)> = (1..=100u64)
            .map(|i| {
                let p = match i % 5 {
                    0 => Some(NodeProgress::Good),
                    1 => Some(NodeProgress::Staged),
                    2 => Some(NodeProgress::Failed),
                    3 => None,
                    _ => Some(NodeProgress::Reverted),
                };
                let running = (i == 3).then(|| "2-0a1b2c3d".to_string());
                (NodeId(i), running, p)
            })
            .collect();
        let s = RolloutStatus::compute(r, nodes, at(10));
        assert_eq!(s.total.nodes, 100);
        assert_eq!(s.total.healthy, 21, "20 marked good + one running it");
        assert_eq!(s.total.took, 41);
        assert_eq!(s.total.failed, 20);
        assert_eq!(s.total.reverted, 20);
        assert_eq!(s.total.not_reported, 19);
        assert_eq!(s.waves.iter().map(|w| w.counts.nodes).sum::<u64>(), 100);
        assert_eq!(s.waves[0].share, "0%–50%");
        assert!(s.waves[0].open && !s.waves[1].open);
        assert_eq!(s.open_waves, 1);
    }
}
