//! The SQLite registry: opening it the same way everywhere, and its schema.
//!
//! The server and the admin CLI open the same file at the same time. WAL
//! lets readers run beside the one writer; a busy timeout makes a CLI
//! command wait for the server's current transaction instead of failing.
//! Every write is one transaction, and `synchronous = FULL` makes a commit
//! durable before a node hears "ok", so a kill -9 (or power loss) at any
//! instant leaves either the old or the new state.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("database {} has schema version {found}, newer than this bootserver knows ({known}); use a newer bootserver", path.display())]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("database {}: migrating to schema version {version}: {source}", path.display())]
    Migrate {
        path: PathBuf,
        version: i64,
        #[source]
        source: rusqlite::Error,
    },
}

/// How long a connection waits for another's write lock before giving up.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether opening may create the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    Create,
    Existing,
}

/// Opens the registry, sets the connection up and brings the schema up to
/// date (each migration in its own transaction).
pub fn open(path: &Path, mode: OpenMode) -> Result<Connection, DbError> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if mode == OpenMode::Create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let open_err = |source| DbError::Open {
        path: path.to_path_buf(),
        source,
    };
    let mut conn = Connection::open_with_flags(path, flags).map_err(open_err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
    // journal_mode answers with a row; the others are plain settings.
    let _: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(open_err)?;
    conn.execute_batch(
        "PRAGMA synchronous = FULL;
         PRAGMA foreign_keys = ON;",
    )
    .map_err(open_err)?;
    conn.set_prepared_statement_cache_capacity(64);
    migrate(&mut conn, path)?;
    Ok(conn)
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), DbError> {
    let known = MIGRATIONS.len() as i64;
    let current: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|source| DbError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    if current > known {
        return Err(DbError::TooNew {
            path: path.to_path_buf(),
            found: current,
            known,
        });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let version = index as i64 + 1;
        let fail = |source| DbError::Migrate {
            path: path.to_path_buf(),
            version,
            source,
        };
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(fail)?;
        // Another process may have migrated while we waited for the lock.
        let now: i64 = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(fail)?;
        if now >= version {
            continue;
        }
        tx.execute_batch(sql).map_err(fail)?;
        tx.pragma_update(None, "user_version", version)
            .map_err(fail)?;
        tx.commit().map_err(fail)?;
    }
    Ok(())
}

/// The schema, one entry per version; never edit an entry once released,
/// add a new one.
const MIGRATIONS: &[&str] = &[
    // 1: sites, nodes (admin wishes and node reports kept apart), per-node
    // event log, request nonces, authentication failures, unregistered
    // nodes, slices.
    r#"
    CREATE TABLE sites (
        id          INTEGER PRIMARY KEY,
        name        TEXT NOT NULL UNIQUE,
        description TEXT NOT NULL DEFAULT '',
        created_at  INTEGER NOT NULL
    );

    CREATE TABLE nodes (
        id               INTEGER PRIMARY KEY,
        site_id          INTEGER NOT NULL REFERENCES sites(id),
        hostname         TEXT NOT NULL,
        domain           TEXT,
        fqdn             TEXT NOT NULL UNIQUE,
        key              TEXT NOT NULL,
        key_changed_at   INTEGER NOT NULL,
        network          TEXT NOT NULL,
        created_at       INTEGER NOT NULL,
        -- what the admins want
        boot_state       TEXT NOT NULL
            CHECK (boot_state IN ('boot', 'reinstall', 'debug', 'disabled')),
        boot_state_at    INTEGER NOT NULL,
        bwcap_bps        INTEGER CHECK (bwcap_bps IS NULL OR bwcap_bps > 0),
        reboot_requested_at INTEGER,
        -- what the node last said
        run_level        TEXT
            CHECK (run_level IS NULL OR run_level IN ('bootcd', 'installing', 'boot', 'debug', 'disabled')),
        bootcd_version   TEXT,
        os_version       TEXT,
        deployment       TEXT,
        hardware         TEXT,
        health           TEXT,
        uptime_secs      INTEGER,
        last_contact     INTEGER,
        last_boot        INTEGER,
        clock_offset_secs INTEGER,
        last_peer        TEXT,
        last_error_step  TEXT,
        last_error       TEXT,
        last_error_at    INTEGER,
        installed_at     INTEGER
    );
    CREATE INDEX nodes_site ON nodes(site_id);

    CREATE TABLE node_events (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        node_id     INTEGER NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
        received_at INTEGER NOT NULL,
        at          INTEGER NOT NULL,
        kind        TEXT NOT NULL
            CHECK (kind IN ('progress', 'failure', 'installed', 'update', 'run_level', 'admin')),
        step        TEXT NOT NULL DEFAULT '',
        percent     INTEGER CHECK (percent IS NULL OR percent BETWEEN 0 AND 100),
        message     TEXT NOT NULL,
        log_tail    TEXT
    );
    CREATE INDEX node_events_by_node ON node_events(node_id, id);

    CREATE TABLE nonces (
        node_id INTEGER NOT NULL,
        nonce   TEXT NOT NULL,
        ts      INTEGER NOT NULL,
        PRIMARY KEY (node_id, nonce)
    ) WITHOUT ROWID;
    CREATE INDEX nonces_by_ts ON nonces(ts);

    -- Known nodes are counted per node and reason; every unknown node id
    -- shares node_id 0, so a flood of made-up ids cannot grow the table.
    CREATE TABLE auth_failures (
        node_id   INTEGER NOT NULL,
        reason    TEXT NOT NULL,
        count     INTEGER NOT NULL,
        last_at   INTEGER NOT NULL,
        last_peer TEXT NOT NULL,
        last_claimed_id INTEGER,
        PRIMARY KEY (node_id, reason)
    ) WITHOUT ROWID;

    CREATE TABLE unregistered (
        macs           TEXT PRIMARY KEY,
        first_seen     INTEGER NOT NULL,
        last_seen      INTEGER NOT NULL,
        count          INTEGER NOT NULL,
        peer           TEXT NOT NULL,
        bootcd_version TEXT,
        hardware       TEXT NOT NULL
    );
    CREATE INDEX unregistered_by_last_seen ON unregistered(last_seen);

    CREATE TABLE slices (
        id          INTEGER PRIMARY KEY,
        name        TEXT NOT NULL UNIQUE,
        description TEXT NOT NULL DEFAULT '',
        rspec       TEXT NOT NULL,
        initscript  TEXT,
        expires     INTEGER NOT NULL,
        created_at  INTEGER NOT NULL
    );
    CREATE TABLE slice_keys (
        slice_id INTEGER NOT NULL REFERENCES slices(id) ON DELETE CASCADE,
        key      TEXT NOT NULL,
        PRIMARY KEY (slice_id, key)
    );
    CREATE TABLE slice_nodes (
        slice_id INTEGER NOT NULL REFERENCES slices(id) ON DELETE CASCADE,
        node_id  INTEGER NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
        PRIMARY KEY (slice_id, node_id)
    );
    CREATE INDEX slice_nodes_by_node ON slice_nodes(node_id);

    CREATE TABLE repo_publishes (
        id           INTEGER PRIMARY KEY,
        published_at INTEGER NOT NULL,
        snapshot_dir TEXT NOT NULL,
        root_version INTEGER NOT NULL,
        targets_version INTEGER NOT NULL,
        snapshot_version INTEGER NOT NULL,
        timestamp_version INTEGER NOT NULL,
        packages     INTEGER NOT NULL,
        bytes        INTEGER NOT NULL
    );
    "#,
    // 2: rollouts (the newest counts), what each node did with a rollout's
    // release, and the check-in hints owed to a node.
    r#"
    ALTER TABLE nodes ADD COLUMN update_now_at INTEGER;
    ALTER TABLE nodes ADD COLUMN hint_key TEXT;

    CREATE TABLE rollouts (
        id              INTEGER PRIMARY KEY,
        deployment      TEXT NOT NULL,
        os_version      TEXT NOT NULL,
        targets_version INTEGER NOT NULL,
        -- cumulative shares in parts of 10000, e.g. 100,1000,5000,10000
        waves           TEXT NOT NULL,
        interval_secs   INTEGER NOT NULL CHECK (interval_secs >= 0),
        -- `5%` or a count
        max_failures    TEXT NOT NULL,
        state           TEXT NOT NULL
            CHECK (state IN ('active', 'paused', 'halted', 'aborted', 'superseded')),
        started_at      INTEGER NOT NULL,
        paused_secs     INTEGER NOT NULL DEFAULT 0,
        paused_at       INTEGER,
        note            TEXT,
        ended_at        INTEGER
    );

    CREATE TABLE rollout_nodes (
        rollout_id INTEGER NOT NULL REFERENCES rollouts(id) ON DELETE CASCADE,
        node_id    INTEGER NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
        status     TEXT NOT NULL
            CHECK (status IN ('staged', 'activated', 'good', 'failed', 'reverted')),
        at         INTEGER NOT NULL,
        reason     TEXT,
        PRIMARY KEY (rollout_id, node_id)
    ) WITHOUT ROWID;
    CREATE INDEX rollout_nodes_by_node ON rollout_nodes(node_id);
    "#,
];

/// Read connections for request handlers, reused across requests so their
/// prepared statements stay cached. Readers never block the writer (WAL).
#[derive(Debug)]
pub struct ReadPool {
    path: PathBuf,
    idle: std::sync::Mutex<Vec<Connection>>,
}

/// Idle read connections kept; more are opened under load and closed after.
const MAX_IDLE_READERS: usize = 16;

impl ReadPool {
    pub fn new(path: &Path) -> ReadPool {
        ReadPool {
            path: path.to_path_buf(),
            idle: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Runs `f` on a pooled connection.
    pub fn with<R>(&self, f: impl FnOnce(&Connection) -> R) -> Result<R, DbError> {
        let pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match pooled {
            Some(c) => c,
            None => open(&self.path, OpenMode::Existing)?,
        };
        let result = f(&conn);
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_database_gets_the_whole_schema_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        assert!(open(&path, OpenMode::Existing).is_err());
        let conn = open(&path, OpenMode::Create).unwrap();
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, MIGRATIONS.len() as i64);
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        drop(conn);
        open(&path, OpenMode::Existing).unwrap();
    }

    #[test]
    fn a_database_from_a_newer_server_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        let conn = open(&path, OpenMode::Create).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        let e = open(&path, OpenMode::Existing).unwrap_err();
        assert!(e.to_string().contains("newer than this bootserver"), "{e}");
    }
}
