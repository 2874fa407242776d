//! Rollouts: a published release goes out to the nodes in waves, watched,
//! and can be paused, resumed or aborted; and a node can be asked to check
//! for an update at once.

use config::release::DeploymentId;
use config::units::Period;
use config::Timestamp;

use super::{Admin, AdminError};
use crate::model::Node;
use crate::publish;
use crate::registry::{self, NodeRef};
use crate::rollout::store::{self, Action, NewRollout};
use crate::rollout::{FailureLimit, Rollout, RolloutStatus, WavePlan};

/// What staff give to start a rollout.
#[derive(Debug, Clone)]
pub struct RolloutSpec {
    /// The release: the `base` version of the published repository
    /// (`2026.11.3`), or its full release id (`2026.11.3-0a1b2c3d`).
    pub release: String,
    /// Its waves (`WavePlan::one_wave()` for all nodes at once).
    pub waves: WavePlan,
    /// Active time between two waves.
    pub interval: Period,
    /// Failures in a wave that halt the rollout.
    pub max_failures: FailureLimit,
}

impl Admin {
    /// Starts rolling out the published release `spec.release`. A rollout
    /// can only name what is published: nodes verify what they install
    /// against the signed metadata, which names one release at a time.
    pub fn start_rollout(&self, spec: &RolloutSpec) -> Result<Rollout, AdminError> {
        let published =
            publish::published_release(&self.workdir).map_err(|source| AdminError::Release {
                source: Box::new(source),
            })?;
        let named = spec.release.trim();
        let matches = named == published.os_version
            || DeploymentId::new(named).is_ok_and(|id| id == published.deployment);
        if !matches {
            return Err(AdminError::NotPublished {
                asked: named.to_string(),
                published: published.deployment.to_string(),
            });
        }
        let new = NewRollout {
            deployment: published.deployment,
            os_version: published.os_version,
            targets_version: published.targets_version,
            waves: spec.waves.clone(),
            interval_secs: spec.interval.secs(),
            max_failures: spec.max_failures,
        };
        let now = Timestamp::now();
        self.write(|c| Ok(store::start(c, &new, now)?))
    }

    /// The newest rollout and how far it got, wave by wave.
    pub fn rollout_status(&self) -> Result<RolloutStatus, AdminError> {
        let now = Timestamp::now();
        self.read(|c| {
            let r = store::current(c)?;
            Ok(store::status(c, r, now)?)
        })
    }

    /// The newest `limit` rollouts, newest first.
    pub fn rollouts(&self, limit: u32) -> Result<Vec<Rollout>, AdminError> {
        self.read(|c| Ok(store::list(c, limit)?))
    }

    /// Stops new nodes from taking the release; the wave clock stops.
    pub fn pause_rollout(&self) -> Result<Rollout, AdminError> {
        self.act(Action::Pause, "paused by staff")
    }

    /// Goes on after a pause or an automatic halt.
    pub fn resume_rollout(&self) -> Result<Rollout, AdminError> {
        self.act(Action::Resume, "resumed by staff")
    }

    /// Gives the rollout up: no node takes the release, and nodes that did
    /// go back to their previous deployment (still on their disk).
    pub fn abort_rollout(&self) -> Result<Rollout, AdminError> {
        self.act(Action::Abort, "aborted by staff")
    }

    fn act(&self, action: Action, note: &str) -> Result<Rollout, AdminError> {
        let now = Timestamp::now();
        self.write(|c| Ok(store::act(c, action, now, note)?))
    }

    /// Asks the node to check for an update at its next check-in (what it
    /// may install is still the rollout's decision).
    pub fn update_now(&self, node: &NodeRef) -> Result<Node, AdminError> {
        let now = Timestamp::now();
        let keep = self.event_log_limit();
        self.write(|c| {
            let found = registry::resolve_node(c, node)?;
            registry::request_update_now(c, &found, now, keep)?;
            Ok(registry::get_node(c, found.id)?)
        })
    }
}
