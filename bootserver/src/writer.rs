//! The server's single database writer, with group commit.
//!
//! Request handlers send what a node reported; one thread takes everything
//! that is waiting, applies each in its own savepoint inside one
//! transaction, commits once (one fsync for the whole group), and only then
//! answers each handler. A node therefore hears "ok" only for what is on
//! disk, and a crash loses at most requests that were never answered.
//! SQLite allows one writer at a time anyway; batching turns the per-commit
//! fsync from a per-request cost into a per-group one.

use std::path::Path;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use config::api::auth::Nonce;
use config::api::{
    BootState, CheckinRequest, FailureReport, HelloRequest, Hints, InstallReport, ProgressReport,
    UpdateEvent, UpdateReport,
};
use config::node::NodeId;
use config::Timestamp;
use rusqlite::{params, Connection, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use crate::db::{self, DbError, OpenMode};
use crate::model::{EventKind, NodeAuth};
use crate::registry::{self, to_json, RegistryError};
use crate::rollout::{self, NodeProgress};

/// Why an authentication failed, as counted per node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailureReason {
    UnknownNode,
    BadSignature,
    StaleTimestamp,
    ReplayedNonce,
    Malformed,
}

impl AuthFailureReason {
    /// The `error` code of the reply, also the counter's name.
    pub fn code(self) -> &'static str {
        match self {
            AuthFailureReason::UnknownNode => "unknown_node",
            AuthFailureReason::BadSignature => "bad_signature",
            AuthFailureReason::StaleTimestamp => "stale_timestamp",
            AuthFailureReason::ReplayedNonce => "replayed_nonce",
            AuthFailureReason::Malformed => "unauthenticated",
        }
    }
}

/// The request's identity, recorded with what it carried so the same
/// request is never applied twice (also across restarts).
#[derive(Debug, Clone, Copy)]
pub struct Stamp {
    pub node: NodeId,
    pub nonce: Nonce,
    pub ts: i64,
}

#[derive(Debug)]
pub enum WriteOp {
    Checkin {
        stamp: Stamp,
        request: Box<CheckinRequest>,
        peer: String,
    },
    Progress {
        stamp: Stamp,
        report: ProgressReport,
    },
    Failure {
        stamp: Stamp,
        report: FailureReport,
    },
    Installed {
        stamp: Stamp,
        report: InstallReport,
    },
    Update {
        stamp: Stamp,
        report: UpdateReport,
    },
    /// An authenticated request that changes nothing else (`GET slivers`).
    NonceOnly {
        stamp: Stamp,
    },
    AuthFailure {
        /// The id the request claimed; 0 for a request that named none.
        claimed: u64,
        known: bool,
        reason: AuthFailureReason,
        peer: String,
    },
    Hello {
        request: Box<HelloRequest>,
        peer: String,
    },
}

#[derive(Debug)]
pub enum WriteOutcome {
    Done,
    /// After a check-in: the hints its reply carries.
    CheckedIn(Hints),
    /// After `installed`: the node's record as it now is.
    Installed(Box<NodeAuth>),
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The nonce was already stored: a replay that got past the memory cache
    /// (it cannot, unless the cache was lost), refused all the same.
    #[error("nonce already used")]
    Replayed,
    #[error("the node was deleted")]
    NodeGone,
    #[error("storing failed")]
    Registry(#[source] RegistryError),
    #[error("storing failed: database")]
    Database(#[source] rusqlite::Error),
    /// The group commit this write was part of failed (one error shared by
    /// every write of the group).
    #[error("storing failed: committing")]
    Commit(#[source] std::sync::Arc<rusqlite::Error>),
    #[error("the database writer has stopped")]
    Closed,
}

struct Job {
    op: WriteOp,
    received_at: Timestamp,
    reply: oneshot::Sender<Result<WriteOutcome, WriteError>>,
}

/// Settings the writer applies.
#[derive(Debug, Clone, Copy)]
pub struct WriterSettings {
    pub event_log_limit: u32,
    pub clock_skew_secs: u32,
}

/// Most jobs in one transaction; bounds how long one commit holds the lock
/// the admin CLI also needs.
const MAX_GROUP: usize = 1024;
/// Unregistered machines remembered (oldest forgotten first).
const MAX_UNREGISTERED: u32 = 1000;
const NONCE_PRUNE_EVERY: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct Writer {
    tx: mpsc::Sender<Job>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Opens the database (migrating it) and starts the writer thread.
    pub fn start(db_path: &Path, settings: WriterSettings) -> Result<Writer, DbError> {
        let conn = db::open(db_path, OpenMode::Existing)?;
        let (tx, rx) = mpsc::channel(MAX_GROUP * 8);
        let thread = std::thread::Builder::new()
            .name("db-writer".into())
            .spawn(move || run(conn, rx, settings))
            .map_err(|e| DbError::Open {
                path: db_path.to_path_buf(),
                source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
            })?;
        Ok(Writer {
            tx,
            thread: Some(thread),
        })
    }

    /// Queues a write and waits until it is committed (or failed).
    pub async fn submit(&self, op: WriteOp) -> Result<WriteOutcome, WriteError> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            op,
            received_at: Timestamp::now(),
            reply,
        };
        self.tx.send(job).await.map_err(|_| WriteError::Closed)?;
        answer.await.map_err(|_| WriteError::Closed)?
    }

    /// Stops taking writes, lets the thread finish what is queued, waits.
    pub fn shutdown(mut self) {
        let Writer { tx, thread } = &mut self;
        drop(std::mem::replace(tx, mpsc::channel(1).0));
        if let Some(t) = thread.take() {
            let _ = t.join();
        }
    }
}

fn run(mut conn: Connection, mut rx: mpsc::Receiver<Job>, settings: WriterSettings) {
    let mut last_prune = Instant::now() - NONCE_PRUNE_EVERY;
    let mut group = Vec::with_capacity(MAX_GROUP);
    while let Some(first) = rx.blocking_recv() {
        group.push(first);
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let prune = last_prune.elapsed() >= NONCE_PRUNE_EVERY;
        let results = apply_group(&mut conn, &group, settings, prune);
        if prune {
            last_prune = Instant::now();
        }
        match results {
            Ok(results) => {
                for (job, result) in group.drain(..).zip(results) {
                    let _ = job.reply.send(result);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, jobs = group.len(), "database commit failed");
                let shared = std::sync::Arc::new(e);
                for job in group.drain(..) {
                    let _ = job.reply.send(Err(WriteError::Commit(shared.clone())));
                }
            }
        }
    }
}

type JobResult = Result<WriteOutcome, WriteError>;

fn apply_group(
    conn: &mut Connection,
    group: &[Job],
    settings: WriterSettings,
    prune: bool,
) -> Result<Vec<JobResult>, rusqlite::Error> {
    let mut tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut results = Vec::with_capacity(group.len());
    for job in group {
        let mut sp = tx.savepoint()?;
        let result = apply(&sp, &job.op, job.received_at, settings);
        match result {
            Ok(outcome) => {
                sp.commit()?;
                results.push(Ok(outcome));
            }
            Err(e) => {
                sp.rollback()?;
                drop(sp);
                results.push(Err(e));
            }
        }
    }
    if prune {
        let horizon = Timestamp::now().unix() - i64::from(settings.clock_skew_secs);
        let mut stmt = tx.prepare_cached("DELETE FROM nonces WHERE ts < ?1")?;
        stmt.execute([horizon])?;
    }
    tx.commit()?;
    Ok(results)
}

fn failed(e: RegistryError) -> WriteError {
    WriteError::Registry(e)
}

fn sql(e: rusqlite::Error) -> WriteError {
    WriteError::Database(e)
}

/// Stores the nonce; a conflict means the request was seen before.
fn record_nonce(conn: &Connection, stamp: &Stamp) -> Result<(), WriteError> {
    let mut stmt = conn
        .prepare_cached(
            "INSERT INTO nonces (node_id, nonce, ts) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
        )
        .map_err(sql)?;
    let n = stmt
        .execute(params![stamp.node.0 as i64, stamp.nonce.to_hex(), stamp.ts])
        .map_err(sql)?;
    if n == 0 {
        return Err(WriteError::Replayed);
    }
    Ok(())
}

fn node_exists(conn: &Connection, node: NodeId) -> Result<(), WriteError> {
    let mut stmt = conn
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM nodes WHERE id = ?1)")
        .map_err(sql)?;
    let exists: bool = stmt.query_row([node.0 as i64], |r| r.get(0)).map_err(sql)?;
    if exists {
        Ok(())
    } else {
        Err(WriteError::NodeGone)
    }
}

fn apply(conn: &Connection, op: &WriteOp, now: Timestamp, settings: WriterSettings) -> JobResult {
    let keep = settings.event_log_limit;
    match op {
        WriteOp::Checkin {
            stamp,
            request,
            peer,
        } => {
            record_nonce(conn, stamp)?;
            let hints = record_checkin(conn, stamp.node, request, peer, now, keep)?;
            Ok(WriteOutcome::CheckedIn(hints))
        }
        WriteOp::Progress { stamp, report } => {
            node_exists(conn, stamp.node)?;
            record_nonce(conn, stamp)?;
            for event in &report.events {
                registry::add_event(
                    conn,
                    stamp.node,
                    EventKind::Progress,
                    now,
                    event.at,
                    &event.step,
                    event.percent,
                    &event.message,
                    None,
                )
                .map_err(failed)?;
            }
            registry::trim_events(conn, stamp.node, keep).map_err(failed)?;
            Ok(WriteOutcome::Done)
        }
        WriteOp::Failure { stamp, report } => {
            node_exists(conn, stamp.node)?;
            record_nonce(conn, stamp)?;
            registry::add_event(
                conn,
                stamp.node,
                EventKind::Failure,
                now,
                report.at,
                &report.step,
                None,
                &format!("{} (now in {})", report.error, report.now_in),
                Some(&report.log_tail),
            )
            .map_err(failed)?;
            registry::trim_events(conn, stamp.node, keep).map_err(failed)?;
            conn.execute(
                "UPDATE nodes SET last_error_step = ?2, last_error = ?3, last_error_at = ?4,
                     run_level = ?5, last_contact = ?6
                 WHERE id = ?1",
                params![
                    stamp.node.0 as i64,
                    report.step,
                    report.error,
                    report.at.unix(),
                    report.now_in.as_str(),
                    now.unix()
                ],
            )
            .map_err(sql)?;
            Ok(WriteOutcome::Done)
        }
        WriteOp::Installed { stamp, report } => {
            node_exists(conn, stamp.node)?;
            record_nonce(conn, stamp)?;
            let state: String = conn
                .query_row(
                    "SELECT boot_state FROM nodes WHERE id = ?1",
                    [stamp.node.0 as i64],
                    |r| r.get(0),
                )
                .map_err(sql)?;
            let was_reinstall = state == BootState::Reinstall.as_str();
            conn.execute(
                "UPDATE nodes SET os_version = ?2, deployment = ?3, installed_at = ?4,
                     last_contact = ?4, run_level = 'installing',
                     boot_state = CASE WHEN boot_state = 'reinstall' THEN 'boot' ELSE boot_state END,
                     boot_state_at = CASE WHEN boot_state = 'reinstall' THEN ?4 ELSE boot_state_at END
                 WHERE id = ?1",
                params![
                    stamp.node.0 as i64,
                    report.os_version,
                    report.deployment,
                    now.unix()
                ],
            )
            .map_err(sql)?;
            let transition = if was_reinstall {
                "boot state reinstall -> boot".to_string()
            } else {
                format!("boot state stays {state} (an admin changed it during the install)")
            };
            registry::add_event(
                conn,
                stamp.node,
                EventKind::Installed,
                now,
                now,
                "reinstall/commit",
                Some(100),
                &format!(
                    "installed {} as deployment {} ({} packages in {} s); {transition}",
                    report.os_version,
                    report.deployment,
                    report.packages.len(),
                    report.install_secs
                ),
                None,
            )
            .map_err(failed)?;
            registry::trim_events(conn, stamp.node, keep).map_err(failed)?;
            let auth = registry::node_auth(conn, stamp.node)
                .map_err(failed)?
                .ok_or(WriteError::NodeGone)?;
            Ok(WriteOutcome::Installed(Box::new(auth)))
        }
        WriteOp::Update { stamp, report } => {
            node_exists(conn, stamp.node)?;
            record_nonce(conn, stamp)?;
            let what = match report.event {
                UpdateEvent::Staged => "staged",
                UpdateEvent::Activated => "activated (on trial)",
                UpdateEvent::MarkedGood => "marked good",
                UpdateEvent::RolledBack => "rolled back",
                UpdateEvent::Failed => "failed",
                UpdateEvent::Held => "held",
                UpdateEvent::Reverted => "reverted",
            };
            let reason = report
                .reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default();
            registry::add_event(
                conn,
                stamp.node,
                EventKind::Update,
                now,
                report.at,
                "update",
                None,
                &format!(
                    "update {what}: {} (deployment {}){reason}",
                    report.os_version, report.deployment
                ),
                None,
            )
            .map_err(failed)?;
            registry::trim_events(conn, stamp.node, keep).map_err(failed)?;
            if report.event == UpdateEvent::MarkedGood {
                conn.execute(
                    "UPDATE nodes SET os_version = ?2, deployment = ?3 WHERE id = ?1",
                    params![stamp.node.0 as i64, report.os_version, report.deployment],
                )
                .map_err(sql)?;
            }
            record_rollout_progress(conn, stamp.node, report, now, keep)?;
            Ok(WriteOutcome::Done)
        }
        WriteOp::NonceOnly { stamp } => {
            record_nonce(conn, stamp)?;
            Ok(WriteOutcome::Done)
        }
        WriteOp::AuthFailure {
            claimed,
            known,
            reason,
            peer,
        } => {
            let counted_as = if *known { *claimed } else { 0 };
            let mut stmt = conn
                .prepare_cached(
                    "INSERT INTO auth_failures (node_id, reason, count, last_at, last_peer, last_claimed_id)
                     VALUES (?1, ?2, 1, ?3, ?4, ?5)
                     ON CONFLICT (node_id, reason) DO UPDATE SET count = count + 1,
                         last_at = excluded.last_at, last_peer = excluded.last_peer,
                         last_claimed_id = excluded.last_claimed_id",
                )
                .map_err(sql)?;
            stmt.execute(params![
                counted_as as i64,
                reason.code(),
                now.unix(),
                peer,
                (!known).then_some(*claimed as i64)
            ])
            .map_err(sql)?;
            Ok(WriteOutcome::Done)
        }
        WriteOp::Hello { request, peer } => {
            let mut macs: Vec<String> = request
                .hardware
                .nics
                .iter()
                .map(|n| n.mac.to_string())
                .collect();
            macs.sort();
            macs.dedup();
            conn.execute(
                "INSERT INTO unregistered (macs, first_seen, last_seen, count, peer, bootcd_version, hardware)
                 VALUES (?1, ?2, ?2, 1, ?3, ?4, ?5)
                 ON CONFLICT (macs) DO UPDATE SET last_seen = excluded.last_seen, count = count + 1,
                     peer = excluded.peer, bootcd_version = excluded.bootcd_version,
                     hardware = excluded.hardware",
                params![
                    macs.join(","),
                    now.unix(),
                    peer,
                    request.bootcd_version,
                    to_json(&request.hardware)
                ],
            )
            .map_err(sql)?;
            conn.execute(
                "DELETE FROM unregistered WHERE macs IN (
                     SELECT macs FROM unregistered ORDER BY last_seen DESC LIMIT -1 OFFSET ?1)",
                [MAX_UNREGISTERED],
            )
            .map_err(sql)?;
            Ok(WriteOutcome::Done)
        }
    }
}

/// What a node's update report means for the newest rollout: its
/// progress with the release (when the report is about that release), and
/// a halt when failures in its wave pass the rollout's limit.
fn record_rollout_progress(
    conn: &Connection,
    node: NodeId,
    report: &UpdateReport,
    now: Timestamp,
    keep: u32,
) -> Result<(), WriteError> {
    let progress = match report.event {
        UpdateEvent::Staged => NodeProgress::Staged,
        UpdateEvent::Activated => NodeProgress::Activated,
        UpdateEvent::MarkedGood => NodeProgress::Good,
        UpdateEvent::RolledBack | UpdateEvent::Failed => NodeProgress::Failed,
        UpdateEvent::Reverted => NodeProgress::Reverted,
        UpdateEvent::Held => return Ok(()),
    };
    let Some(current) = rollout::store::latest(conn).map_err(failed)? else {
        return Ok(());
    };
    if current.deployment.as_str() != report.deployment
        || current.state == config::api::RolloutState::Superseded
    {
        return Ok(());
    }
    rollout::store::record_progress(
        conn,
        current.id,
        node,
        progress,
        report.reason.as_deref(),
        report.at,
    )
    .map_err(failed)?;
    if progress == NodeProgress::Failed {
        if let Some(why) =
            rollout::store::halt_if_over_limit(conn, &current, node, now).map_err(failed)?
        {
            tracing::warn!(rollout = current.id, "{why}");
            registry::add_event(
                conn,
                node,
                EventKind::Update,
                now,
                now,
                "rollout",
                None,
                &format!("rollout {} {why}", current.id),
                None,
            )
            .map_err(failed)?;
            registry::trim_events(conn, node, keep).map_err(failed)?;
        }
    }
    Ok(())
}

/// The hints a check-in reply carries: `check_updates` once after staff
/// asked (`node update-now`), and once per rollout event that concerns
/// the node (its wave opened while it runs something else; the rollout
/// was aborted while it runs the release).
fn checkin_hints(
    conn: &Connection,
    node: NodeId,
    state: &registry::CheckinState,
    running: Option<&str>,
    now: Timestamp,
) -> Result<Hints, WriteError> {
    let mut hints = Hints::default();
    if state.update_now {
        hints.check_updates = true;
        let mut stmt = conn
            .prepare_cached("UPDATE nodes SET update_now_at = NULL WHERE id = ?1")
            .map_err(sql)?;
        stmt.execute([node.0 as i64]).map_err(sql)?;
    }
    let Some(current) = rollout::store::latest(conn).map_err(failed)? else {
        return Ok(hints);
    };
    if let Some(key) = current.hint_key(node, running, now) {
        if state.hint_key.as_deref() != Some(key.as_str()) {
            hints.check_updates = true;
            let mut stmt = conn
                .prepare_cached("UPDATE nodes SET hint_key = ?2 WHERE id = ?1")
                .map_err(sql)?;
            stmt.execute(params![node.0 as i64, key]).map_err(sql)?;
        }
    }
    Ok(hints)
}

fn record_checkin(
    conn: &Connection,
    node: NodeId,
    request: &CheckinRequest,
    peer: &str,
    now: Timestamp,
    keep: u32,
) -> Result<Hints, WriteError> {
    // One lookup tells whether the node still exists, what it reported
    // last (the savepoint undoes the nonce if it is gone) and what hints
    // it is owed.
    let state = registry::checkin_state(conn, node)
        .map_err(failed)?
        .ok_or(WriteError::NodeGone)?;
    let previous = state.run_level;
    let uptime = request.uptime_secs.min(i64::MAX as u64 / 2) as i64;
    let mut stmt = conn
        .prepare_cached(
            "UPDATE nodes SET run_level = ?2, bootcd_version = ?3, os_version = ?4, deployment = ?5,
                 hardware = COALESCE(?6, hardware), health = ?7, uptime_secs = ?8,
                 last_contact = ?9, last_boot = ?9 - ?8, clock_offset_secs = ?10, last_peer = ?11,
                 reboot_requested_at = CASE
                     WHEN reboot_requested_at IS NOT NULL AND ?8 < ?9 - reboot_requested_at THEN NULL
                     ELSE reboot_requested_at END
             WHERE id = ?1",
        )
        .map_err(sql)?;
    stmt.execute(params![
        node.0 as i64,
        request.run_level.as_str(),
        request.bootcd_version,
        request.os_version,
        request.deployment,
        request.hardware.as_ref().map(to_json),
        request.health.as_ref().map(to_json),
        uptime,
        now.unix(),
        request.node_time.unix().saturating_sub(now.unix()),
        peer,
    ])
    .map_err(sql)?;
    if previous != Some(request.run_level) {
        let message = match previous {
            Some(p) => format!("run level {p} -> {}", request.run_level),
            None => format!("first check-in, run level {}", request.run_level),
        };
        registry::add_event(
            conn,
            node,
            EventKind::RunLevel,
            now,
            request.node_time,
            "checkin",
            None,
            &message,
            None,
        )
        .map_err(failed)?;
        registry::trim_events(conn, node, keep).map_err(failed)?;
    }
    checkin_hints(conn, node, &state, request.deployment.as_deref(), now)
}

/// Nonces still inside the freshness window, to refill the replay cache
/// after a restart.
pub fn load_recent_nonces(
    conn: &Connection,
    since: i64,
) -> Result<Vec<(NodeId, Nonce, i64)>, rusqlite::Error> {
    let mut stmt = conn.prepare("SELECT node_id, nonce, ts FROM nonces WHERE ts >= ?1")?;
    let rows = stmt.query_map([since], |row| {
        let hex_nonce: String = row.get(1)?;
        let mut bytes = [0u8; 16];
        hex::decode_to_slice(&hex_nonce, &mut bytes).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Text, Box::new(e))
        })?;
        Ok((
            NodeId(row.get::<_, i64>(0)? as u64),
            Nonce::from_random_bytes(bytes),
            row.get::<_, i64>(2)?,
        ))
    })?;
    rows.collect()
}
