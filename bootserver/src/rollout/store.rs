//! Rollouts in the registry: the `rollouts` table (one row per rollout,
//! the newest one counts) and `rollout_nodes` (what each node did with a
//! rollout's release). Functions take a connection or a transaction; the
//! caller decides the transaction, like [`crate::registry`].

use std::collections::HashMap;
use std::str::FromStr;

use config::api::RolloutState;
use config::node::NodeId;
use config::release::DeploymentId;
use config::Timestamp;
use rusqlite::types::Type;
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::{FailureLimit, NodeProgress, Rollout, RolloutStatus, WavePlan};
use crate::registry::{RegistryError, Result};

/// What staff give to start a rollout (the release already resolved).
#[derive(Debug, Clone)]
pub struct NewRollout {
    /// The release.
    pub deployment: DeploymentId,
    /// Its `base` version.
    pub os_version: String,
    /// The signed targets version it was published in.
    pub targets_version: u64,
    /// Its waves.
    pub waves: WavePlan,
    /// Active time between two waves.
    pub interval_secs: u64,
    /// Failures in a wave that halt it.
    pub max_failures: FailureLimit,
}

/// What staff do to a running rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Stop new nodes from taking the release; stop the wave clock.
    Pause,
    /// Go on after a pause or a halt.
    Resume,
    /// Give up: nodes that took the release go back.
    Abort,
}

impl Action {
    fn verb(self) -> &'static str {
        match self {
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Abort => "abort",
        }
    }
}

fn ts(secs: i64) -> Timestamp {
    Timestamp::from_unix(secs)
}

fn text_column<T, E>(
    row: &Row<'_>,
    idx: usize,
    parse: impl FnOnce(&str) -> std::result::Result<T, E>,
) -> rusqlite::Result<T>
where
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let text: String = row.get(idx)?;
    parse(&text).map_err(|e| rusqlite::Error::FromSqlConversionFailure(idx, Type::Text, e.into()))
}

fn bounds_text(plan: &WavePlan) -> String {
    let parts: Vec<String> = plan.bounds().iter().map(u32::to_string).collect();
    parts.join(",")
}

fn parse_bounds(
    text: &str,
) -> std::result::Result<WavePlan, Box<dyn std::error::Error + Send + Sync>> {
    let bounds = text
        .split(',')
        .map(|p| p.trim().parse::<u32>())
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(WavePlan::new(bounds)?)
}

const SELECT: &str = "SELECT id, deployment, os_version, targets_version, waves, interval_secs,
    max_failures, state, started_at, paused_secs, paused_at, note, ended_at FROM rollouts";

fn from_row(row: &Row<'_>) -> rusqlite::Result<Rollout> {
    Ok(Rollout {
        id: row.get::<_, i64>(0)? as u64,
        deployment: text_column(row, 1, DeploymentId::new)?,
        os_version: row.get(2)?,
        targets_version: row.get::<_, i64>(3)? as u64,
        waves: text_column(row, 4, parse_bounds)?,
        interval_secs: row.get::<_, i64>(5)? as u64,
        max_failures: text_column(row, 6, FailureLimit::from_str)?,
        state: text_column(row, 7, RolloutState::from_str)?,
        started_at: ts(row.get(8)?),
        paused_secs: row.get::<_, i64>(9)? as u64,
        paused_at: row.get::<_, Option<i64>>(10)?.map(ts),
        note: row.get(11)?,
        ended_at: row.get::<_, Option<i64>>(12)?.map(ts),
    })
}

/// The newest rollout, the one that counts (the check-in and release
/// requests read it: a cached statement on a tiny table).
pub fn latest(conn: &Connection) -> Result<Option<Rollout>> {
    let mut stmt = conn.prepare_cached(&format!("{SELECT} ORDER BY id DESC LIMIT 1"))?;
    Ok(stmt.query_row([], from_row).optional()?)
}

/// The newest rollout, or an error saying there is none.
pub fn current(conn: &Connection) -> Result<Rollout> {
    latest(conn)?.ok_or(RegistryError::NoRollout)
}

/// The newest `limit` rollouts, newest first.
pub fn list(conn: &Connection, limit: u32) -> Result<Vec<Rollout>> {
    let mut stmt = conn.prepare(&format!("{SELECT} ORDER BY id DESC LIMIT ?1"))?;
    let rows = stmt.query_map([limit], from_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Starts a rollout; the one before it, unless it was aborted, is
/// superseded (its nodes follow the new one from now on).
pub fn start(conn: &Connection, new: &NewRollout, now: Timestamp) -> Result<Rollout> {
    conn.execute(
        "UPDATE rollouts SET state = 'superseded', ended_at = ?1,
             paused_secs = paused_secs + CASE WHEN paused_at IS NULL THEN 0 ELSE ?1 - paused_at END,
             paused_at = NULL
         WHERE state IN ('active', 'paused', 'halted')",
        [now.unix()],
    )?;
    conn.execute(
        "INSERT INTO rollouts (deployment, os_version, targets_version, waves, interval_secs,
             max_failures, state, started_at, paused_secs)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'active', ?7, 0)",
        params![
            new.deployment.as_str(),
            new.os_version,
            new.targets_version as i64,
            bounds_text(&new.waves),
            new.interval_secs as i64,
            new.max_failures.to_string(),
            now.unix(),
        ],
    )?;
    current(conn)
}

/// Pauses, resumes or aborts the newest rollout.
pub fn act(conn: &Connection, action: Action, now: Timestamp, note: &str) -> Result<Rollout> {
    let r = current(conn)?;
    let allowed = match action {
        Action::Pause => r.state == RolloutState::Active,
        Action::Resume => matches!(r.state, RolloutState::Paused | RolloutState::Halted),
        Action::Abort => matches!(
            r.state,
            RolloutState::Active | RolloutState::Paused | RolloutState::Halted
        ),
    };
    if !allowed {
        return Err(RegistryError::RolloutState {
            id: r.id,
            state: r.state,
            action: action.verb(),
        });
    }
    let id = r.id as i64;
    match action {
        Action::Pause => conn.execute(
            "UPDATE rollouts SET state = 'paused', paused_at = ?2, note = ?3 WHERE id = ?1",
            params![id, now.unix(), note],
        )?,
        Action::Resume => conn.execute(
            "UPDATE rollouts SET state = 'active',
                 paused_secs = paused_secs + MAX(0, ?2 - COALESCE(paused_at, ?2)),
                 paused_at = NULL, note = ?3
             WHERE id = ?1",
            params![id, now.unix(), note],
        )?,
        Action::Abort => conn.execute(
            "UPDATE rollouts SET state = 'aborted', ended_at = ?2, note = ?3,
                 paused_secs = paused_secs + MAX(0, ?2 - COALESCE(paused_at, ?2)),
                 paused_at = NULL
             WHERE id = ?1",
            params![id, now.unix(), note],
        )?,
    };
    current(conn)
}

/// Records what a node did with the release of `rollout`, as of `at` (the
/// node's clock when it happened). A report that arrives late (a node
/// keeps what it could not send while the server was away) does not undo
/// a later one: the newer `at` wins, and at the same second the step
/// further along.
pub fn record_progress(
    conn: &Connection,
    rollout: u64,
    node: NodeId,
    progress: NodeProgress,
    reason: Option<&str>,
    at: Timestamp,
) -> Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO rollout_nodes (rollout_id, node_id, status, at, reason)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (rollout_id, node_id) DO UPDATE SET status = excluded.status,
             at = excluded.at, reason = excluded.reason
         WHERE excluded.at > rollout_nodes.at
            OR (excluded.at = rollout_nodes.at AND ?6 >= CASE rollout_nodes.status
                WHEN 'staged' THEN 1 WHEN 'activated' THEN 2 WHEN 'good' THEN 3
                WHEN 'failed' THEN 4 ELSE 5 END)",
    )?;
    stmt.execute(params![
        rollout as i64,
        node.0 as i64,
        progress.as_str(),
        at.unix(),
        reason,
        progress.rank()
    ])?;
    Ok(())
}

/// Every node's progress with a rollout's release.
pub fn progress(conn: &Connection, rollout: u64) -> Result<HashMap<NodeId, NodeProgress>> {
    let mut stmt =
        conn.prepare_cached("SELECT node_id, status FROM rollout_nodes WHERE rollout_id = ?1")?;
    let rows = stmt
        .query_map([rollout as i64], |row| {
            Ok((
                NodeId(row.get::<_, i64>(0)? as u64),
                text_column(row, 1, NodeProgress::from_str)?,
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

/// Every registered node with the deployment it last reported.
fn nodes_running(conn: &Connection) -> Result<Vec<(NodeId, Option<String>)>> {
    let mut stmt = conn.prepare_cached("SELECT id, deployment FROM nodes")?;
    let rows = stmt
        .query_map([], |row| {
            Ok((NodeId(row.get::<_, i64>(0)? as u64), row.get(1)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

/// How far `rollout` got, wave by wave.
pub fn status(conn: &Connection, rollout: Rollout, now: Timestamp) -> Result<RolloutStatus> {
    let progress = progress(conn, rollout.id)?;
    let nodes = nodes_running(conn)?
        .into_iter()
        .map(|(id, running)| (id, running, progress.get(&id).copied()));
    Ok(RolloutStatus::compute(rollout, nodes, now))
}

/// After `node` failed with the release of the active `rollout`: halts
/// it when the failures in the node's wave pass its limit. Returns why it
/// halted, if it did.
pub fn halt_if_over_limit(
    conn: &Connection,
    rollout: &Rollout,
    node: NodeId,
    now: Timestamp,
) -> Result<Option<String>> {
    if rollout.state != RolloutState::Active {
        return Ok(None);
    }
    let wave = rollout.waves.wave_of(node);
    let progress = progress(conn, rollout.id)?;
    let mut nodes = 0u64;
    let mut failed = 0u64;
    for (id, _) in nodes_running(conn)? {
        if rollout.waves.wave_of(id) == wave {
            nodes += 1;
            if progress.get(&id) == Some(&NodeProgress::Failed) {
                failed += 1;
            }
        }
    }
    if !rollout.max_failures.exceeded(failed, nodes) {
        return Ok(None);
    }
    let why = format!(
        "halted: {failed} of {nodes} node(s) in wave {} failed with {} (limit {})",
        wave + 1,
        rollout.deployment,
        rollout.max_failures
    );
    conn.execute(
        "UPDATE rollouts SET state = 'halted', paused_at = ?2, note = ?3
         WHERE id = ?1 AND state = 'active'",
        params![rollout.id as i64, now.unix(), why],
    )?;
    Ok(Some(why))
}
