//! Reading and changing the registry: sites, nodes, slices, logs.
//!
//! Functions take a connection (or a transaction, through `Deref`); the
//! caller decides the transaction, so one admin command is one commit.
//! Nothing here formats for people: the CLI and the status page do that.

use std::str::FromStr;

use config::api::{BootState, HardwareSummary, RunLevel, Sliver};
use config::node::{DnsName, MacAddr, NodeId, NodeKey};
use config::rspec::Rspec;
use config::units::Rate;
use config::Timestamp;
use rusqlite::types::Type;
use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::model::*;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("no {what} `{name}`")]
    NotFound { what: &'static str, name: String },
    #[error("{what} `{name}` already exists")]
    Exists { what: &'static str, name: String },
    #[error("`{name}` matches several nodes ({ids}); use the node id or the full host name")]
    Ambiguous { name: String, ids: String },
    #[error("site `{site}` still has {nodes} node(s); delete them first")]
    SiteHasNodes { site: String, nodes: u64 },
    #[error("node id {id} is out of range (1 to {})", i64::MAX)]
    IdOutOfRange { id: NodeId },
    #[error("a bandwidth cap of 0 would cut the node off; use `none` to remove the cap")]
    ZeroBandwidthCap,
    #[error("the lease end {end} is not in the future")]
    LeaseInThePast { end: Timestamp },
    /// The rspec breaks a rule `config::rspec::Rspec::validate` checks (it
    /// reports the reason as text).
    #[error("{reason}")]
    Rspec { reason: String },
    #[error("no rollout has been started (`bootserver rollout start VERSION`)")]
    NoRollout,
    #[error("rollout {id} is {state}: it cannot {action}")]
    RolloutState {
        id: u64,
        state: config::api::RolloutState,
        action: &'static str,
    },
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

fn ts(secs: i64) -> Timestamp {
    Timestamp::from_unix(secs)
}

/// What a stored value's parser may fail with: a typed error, or the text
/// some `config` parsers give.
type ParseFailure = Box<dyn std::error::Error + Send + Sync>;

/// A column that must parse into `T`; a bad stored value is an error that
/// names the column and keeps the parser's error, never a panic.
fn parsed<T, E: Into<ParseFailure>>(
    row: &Row<'_>,
    idx: usize,
    parse: impl FnOnce(&str) -> std::result::Result<T, E>,
) -> rusqlite::Result<T> {
    let text: String = row.get(idx)?;
    parse(&text).map_err(|e| rusqlite::Error::FromSqlConversionFailure(idx, Type::Text, e.into()))
}

fn parsed_opt<T, E: Into<ParseFailure>>(
    row: &Row<'_>,
    idx: usize,
    parse: impl FnOnce(&str) -> std::result::Result<T, E>,
) -> rusqlite::Result<Option<T>> {
    let text: Option<String> = row.get(idx)?;
    text.map(|t| {
        parse(&t).map_err(|e| rusqlite::Error::FromSqlConversionFailure(idx, Type::Text, e.into()))
    })
    .transpose()
}

fn json<T: serde::de::DeserializeOwned>(s: &str) -> std::result::Result<T, serde_json::Error> {
    serde_json::from_str(s)
}

pub(crate) fn to_json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    // Our own plain data types always serialise.
    serde_json::to_string(value).unwrap_or_else(|_| "null".into())
}

// ---------------------------------------------------------------- sites

pub fn add_site(
    conn: &Connection,
    name: &SiteName,
    description: &str,
    now: Timestamp,
) -> Result<Site> {
    let inserted = conn.execute(
        "INSERT INTO sites (name, description, created_at) VALUES (?1, ?2, ?3) ON CONFLICT (name) DO NOTHING",
        params![name.as_str(), description, now.unix()],
    )?;
    if inserted == 0 {
        return Err(RegistryError::Exists {
            what: "site",
            name: name.to_string(),
        });
    }
    find_site(conn, name.as_str())
}

fn site_from_row(row: &Row<'_>) -> rusqlite::Result<Site> {
    Ok(Site {
        id: row.get(0)?,
        name: parsed(row, 1, SiteName::from_str)?,
        description: row.get(2)?,
        created_at: ts(row.get(3)?),
        nodes: row.get::<_, i64>(4)? as u64,
    })
}

const SITE_SELECT: &str = "SELECT s.id, s.name, s.description, s.created_at,
    (SELECT count(*) FROM nodes n WHERE n.site_id = s.id) FROM sites s";

pub fn find_site(conn: &Connection, name: &str) -> Result<Site> {
    conn.query_row(
        &format!("{SITE_SELECT} WHERE s.name = ?1"),
        [name],
        site_from_row,
    )
    .optional()?
    .ok_or_else(|| RegistryError::NotFound {
        what: "site",
        name: name.to_string(),
    })
}

pub fn list_sites(conn: &Connection) -> Result<Vec<Site>> {
    let mut stmt = conn.prepare(&format!("{SITE_SELECT} ORDER BY s.name"))?;
    let rows = stmt.query_map([], site_from_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub fn delete_site(conn: &Connection, name: &str) -> Result<()> {
    let site = find_site(conn, name)?;
    if site.nodes > 0 {
        return Err(RegistryError::SiteHasNodes {
            site: name.to_string(),
            nodes: site.nodes,
        });
    }
    conn.execute("DELETE FROM sites WHERE id = ?1", [site.id])?;
    Ok(())
}

// ---------------------------------------------------------------- nodes

/// What an admin gives to register a node.
#[derive(Debug, Clone)]
pub struct NewNode {
    pub site: SiteName,
    pub hostname: DnsName,
    pub domain: Option<DnsName>,
    pub network: NodeNetwork,
    pub boot_state: BootState,
    /// A fixed id (importing PlanetLab nodes); `None` takes the next free one.
    pub id: Option<NodeId>,
}

pub fn fqdn(hostname: &DnsName, domain: Option<&DnsName>) -> String {
    match domain {
        Some(d) => format!("{hostname}.{d}"),
        None => hostname.to_string(),
    }
}

pub fn add_node(conn: &Connection, new: &NewNode, key: &NodeKey, now: Timestamp) -> Result<Node> {
    let site = find_site(conn, new.site.as_str())?;
    let fqdn = fqdn(&new.hostname, new.domain.as_ref());
    let taken: Option<i64> = conn
        .query_row("SELECT id FROM nodes WHERE fqdn = ?1", [&fqdn], |r| {
            r.get(0)
        })
        .optional()?;
    if let Some(id) = taken {
        return Err(RegistryError::Exists {
            what: "node",
            name: format!("{fqdn} (node {id})"),
        });
    }
    if let Some(id) = new.id {
        if id.0 == 0 || id.0 > i64::MAX as u64 {
            return Err(RegistryError::IdOutOfRange { id });
        }
        let exists: bool = conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM nodes WHERE id = ?1)",
            [id.0 as i64],
            |r| r.get(0),
        )?;
        if exists {
            return Err(RegistryError::Exists {
                what: "node id",
                name: id.to_string(),
            });
        }
    }
    conn.execute(
        "INSERT INTO nodes (id, site_id, hostname, domain, fqdn, key, key_changed_at, network,
                            created_at, boot_state, boot_state_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?7, ?9, ?7)",
        params![
            new.id.map(|i| i.0 as i64),
            site.id,
            new.hostname.as_str(),
            new.domain.as_ref().map(|d| d.as_str()),
            fqdn,
            key.expose(),
            now.unix(),
            to_json(&new.network),
            new.boot_state.as_str(),
        ],
    )?;
    let id = NodeId(conn.last_insert_rowid() as u64);
    get_node(conn, id)
}

const NODE_SELECT: &str =
    "SELECT n.id, s.name, n.hostname, n.domain, n.fqdn, n.key, n.key_changed_at,
    n.network, n.created_at, n.boot_state, n.boot_state_at, n.bwcap_bps, n.reboot_requested_at,
    n.run_level, n.bootcd_version, n.os_version, n.deployment, n.hardware, n.health, n.uptime_secs,
    n.last_contact, n.last_boot, n.clock_offset_secs, n.last_peer, n.last_error_step, n.last_error,
    n.last_error_at, n.installed_at
    FROM nodes n JOIN sites s ON s.id = n.site_id";

fn node_from_row(row: &Row<'_>) -> rusqlite::Result<Node> {
    let last_error = match (
        row.get::<_, Option<String>>(24)?,
        row.get::<_, Option<String>>(25)?,
        row.get::<_, Option<i64>>(26)?,
    ) {
        (Some(step), Some(message), Some(at)) => Some(LastError {
            step,
            message,
            at: ts(at),
        }),
        _ => None,
    };
    Ok(Node {
        id: NodeId(row.get::<_, i64>(0)? as u64),
        site: parsed(row, 1, SiteName::from_str)?,
        hostname: parsed(row, 2, DnsName::from_str)?,
        domain: parsed_opt(row, 3, DnsName::from_str)?,
        fqdn: row.get(4)?,
        key: parsed(row, 5, |s| NodeKey::new(s))?,
        key_changed_at: ts(row.get(6)?),
        network: parsed(row, 7, json::<NodeNetwork>)?,
        created_at: ts(row.get(8)?),
        boot_state: parsed(row, 9, parse_boot_state)?,
        boot_state_at: ts(row.get(10)?),
        bwcap: row
            .get::<_, Option<i64>>(11)?
            .map(|b| Rate::from_bits_per_sec(b as u64)),
        reboot_requested_at: row.get::<_, Option<i64>>(12)?.map(ts),
        report: NodeReport {
            run_level: parsed_opt(row, 13, parse_run_level)?,
            bootcd_version: row.get(14)?,
            os_version: row.get(15)?,
            deployment: row.get(16)?,
            hardware: parsed_opt(row, 17, json)?,
            health: parsed_opt(row, 18, json)?,
            uptime_secs: row.get::<_, Option<i64>>(19)?.map(|u| u as u64),
            last_contact: row.get::<_, Option<i64>>(20)?.map(ts),
            last_boot: row.get::<_, Option<i64>>(21)?.map(ts),
            clock_offset_secs: row.get(22)?,
            last_peer: row.get(23)?,
            last_error,
            installed_at: row.get::<_, Option<i64>>(27)?.map(ts),
        },
    })
}

pub fn get_node(conn: &Connection, id: NodeId) -> Result<Node> {
    conn.query_row(
        &format!("{NODE_SELECT} WHERE n.id = ?1"),
        [id.0 as i64],
        node_from_row,
    )
    .optional()?
    .ok_or_else(|| RegistryError::NotFound {
        what: "node",
        name: id.to_string(),
    })
}

/// How an admin names a node: its id, its full host name, or a host name
/// that is unique.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeRef {
    /// The node id.
    Id(NodeId),
    /// A full host name, or a short one only one node has.
    Name(String),
}

impl FromStr for NodeRef {
    type Err = std::convert::Infallible;
    /// Digits are an id; anything else is a host name.
    fn from_str(s: &str) -> std::result::Result<NodeRef, Self::Err> {
        Ok(match s.parse::<u64>() {
            Ok(id) => NodeRef::Id(NodeId(id)),
            Err(_) => NodeRef::Name(s.to_string()),
        })
    }
}

impl From<NodeId> for NodeRef {
    fn from(id: NodeId) -> NodeRef {
        NodeRef::Id(id)
    }
}

impl std::fmt::Display for NodeRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeRef::Id(id) => write!(f, "{id}"),
            NodeRef::Name(name) => f.write_str(name),
        }
    }
}

/// Finds the node an admin named: by id, full host name, or a host name
/// that is unique.
pub fn resolve_node(conn: &Connection, node: &NodeRef) -> Result<Node> {
    match node {
        NodeRef::Id(id) => get_node(conn, *id),
        NodeRef::Name(name) => find_node_by_name(conn, name),
    }
}

fn find_node_by_name(conn: &Connection, ident: &str) -> Result<Node> {
    let needle = ident.trim_end_matches('.').to_ascii_lowercase();
    let mut stmt = conn.prepare_cached(&format!(
        "{NODE_SELECT} WHERE n.fqdn = ?1 OR n.hostname = ?1 ORDER BY n.fqdn = ?1 DESC, n.id"
    ))?;
    let nodes: Vec<Node> = stmt
        .query_map([&needle], node_from_row)?
        .collect::<rusqlite::Result<_>>()?;
    match nodes.as_slice() {
        [] => Err(RegistryError::NotFound {
            what: "node",
            name: ident.to_string(),
        }),
        [first, ..] if first.fqdn == needle => Ok(first.clone()),
        [only] => Ok(only.clone()),
        many => Err(RegistryError::Ambiguous {
            name: ident.to_string(),
            ids: many
                .iter()
                .map(|n| format!("{} = {}", n.id, n.fqdn))
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// Columns the node list can be sorted by (the status page's `?sort=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeSort {
    Id,
    Site,
    Hostname,
    BootState,
    RunLevel,
    OsVersion,
    LastContact,
    LastBoot,
    LastError,
}

impl NodeSort {
    pub const ALL: [NodeSort; 9] = [
        NodeSort::Id,
        NodeSort::Site,
        NodeSort::Hostname,
        NodeSort::BootState,
        NodeSort::RunLevel,
        NodeSort::OsVersion,
        NodeSort::LastContact,
        NodeSort::LastBoot,
        NodeSort::LastError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NodeSort::Id => "id",
            NodeSort::Site => "site",
            NodeSort::Hostname => "hostname",
            NodeSort::BootState => "boot_state",
            NodeSort::RunLevel => "run_level",
            NodeSort::OsVersion => "os_version",
            NodeSort::LastContact => "last_contact",
            NodeSort::LastBoot => "last_boot",
            NodeSort::LastError => "last_error",
        }
    }

    /// The SQL expression; fixed text, never built from the request.
    fn column(self) -> &'static str {
        match self {
            NodeSort::Id => "n.id",
            NodeSort::Site => "s.name",
            NodeSort::Hostname => "n.fqdn",
            NodeSort::BootState => "n.boot_state",
            NodeSort::RunLevel => "n.run_level",
            NodeSort::OsVersion => "n.os_version",
            NodeSort::LastContact => "n.last_contact",
            NodeSort::LastBoot => "n.last_boot",
            NodeSort::LastError => "n.last_error_at",
        }
    }
}

/// A sort column or order that does not exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SortError {
    #[error("cannot sort by `{column}` (one of: {})", NodeSort::names())]
    Column { column: String },
    #[error("sort order `{order}` is neither `asc` nor `desc`")]
    Order { order: String },
}

impl NodeSort {
    fn names() -> String {
        let names: Vec<_> = NodeSort::ALL.iter().map(|c| c.as_str()).collect();
        names.join(", ")
    }
}

impl FromStr for NodeSort {
    type Err = SortError;
    fn from_str(s: &str) -> std::result::Result<NodeSort, SortError> {
        NodeSort::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| SortError::Column {
                column: s.to_string(),
            })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortOrder {
    Asc,
    Desc,
}

impl SortOrder {
    pub fn as_str(self) -> &'static str {
        match self {
            SortOrder::Asc => "asc",
            SortOrder::Desc => "desc",
        }
    }
    pub fn flipped(self) -> SortOrder {
        match self {
            SortOrder::Asc => SortOrder::Desc,
            SortOrder::Desc => SortOrder::Asc,
        }
    }
}

impl FromStr for SortOrder {
    type Err = SortError;
    fn from_str(s: &str) -> std::result::Result<SortOrder, SortError> {
        match s {
            "asc" => Ok(SortOrder::Asc),
            "desc" => Ok(SortOrder::Desc),
            other => Err(SortError::Order {
                order: other.to_string(),
            }),
        }
    }
}

pub fn list_nodes(
    conn: &Connection,
    site: Option<&str>,
    sort: NodeSort,
    order: SortOrder,
) -> Result<Vec<Node>> {
    // Nodes that never reported sort last either way.
    let sql = format!(
        "{NODE_SELECT} WHERE (?1 IS NULL OR s.name = ?1) ORDER BY {} {} NULLS LAST, n.id",
        sort.column(),
        order.as_str()
    );
    let mut stmt = conn.prepare(&sql)?;
    let nodes = stmt
        .query_map([site], node_from_row)?
        .collect::<rusqlite::Result<_>>()?;
    Ok(nodes)
}

/// Adds one entry to a node's log, then drops the oldest beyond `keep`.
#[allow(clippy::too_many_arguments)]
pub fn add_event(
    conn: &Connection,
    node: NodeId,
    kind: EventKind,
    received_at: Timestamp,
    at: Timestamp,
    step: &str,
    percent: Option<u8>,
    message: &str,
    log_tail: Option<&[String]>,
) -> Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO node_events (node_id, received_at, at, kind, step, percent, message, log_tail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    stmt.execute(params![
        node.0 as i64,
        received_at.unix(),
        at.unix(),
        kind.as_str(),
        step,
        percent,
        message,
        log_tail.map(to_json),
    ])?;
    Ok(())
}

/// Keeps only the newest `keep` events of a node.
pub fn trim_events(conn: &Connection, node: NodeId, keep: u32) -> Result<()> {
    let mut stmt = conn.prepare_cached(
        "DELETE FROM node_events WHERE node_id = ?1 AND id <= (
             SELECT id FROM node_events WHERE node_id = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
    )?;
    stmt.execute(params![node.0 as i64, keep])?;
    Ok(())
}

pub fn node_events(conn: &Connection, node: NodeId, limit: u32) -> Result<Vec<NodeEvent>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, received_at, at, kind, step, percent, message, log_tail FROM node_events
         WHERE node_id = ?1 ORDER BY id DESC LIMIT ?2",
    )?;
    let events = stmt
        .query_map(params![node.0 as i64, limit], |row| {
            Ok(NodeEvent {
                id: row.get(0)?,
                received_at: ts(row.get(1)?),
                at: ts(row.get(2)?),
                kind: parsed(row, 3, EventKind::from_str)?,
                step: row.get(4)?,
                percent: row.get(5)?,
                message: row.get(6)?,
                log_tail: parsed_opt(row, 7, json::<Vec<String>>)?.unwrap_or_default(),
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(events)
}

/// Records an admin action in the node's log.
fn admin_event(
    conn: &Connection,
    node: NodeId,
    now: Timestamp,
    message: &str,
    keep: u32,
) -> Result<()> {
    add_event(
        conn,
        node,
        EventKind::Admin,
        now,
        now,
        "",
        None,
        message,
        None,
    )?;
    trim_events(conn, node, keep)
}

pub fn set_boot_state(
    conn: &Connection,
    node: &Node,
    state: BootState,
    now: Timestamp,
    keep: u32,
) -> Result<()> {
    conn.execute(
        "UPDATE nodes SET boot_state = ?2, boot_state_at = ?3 WHERE id = ?1",
        params![node.id.0 as i64, state.as_str(), now.unix()],
    )?;
    admin_event(
        conn,
        node.id,
        now,
        &format!("boot state {} -> {state} (admin)", node.boot_state),
        keep,
    )
}

pub fn set_bwcap(
    conn: &Connection,
    node: &Node,
    cap: Option<Rate>,
    now: Timestamp,
    keep: u32,
) -> Result<()> {
    if cap.is_some_and(|c| c.bits_per_sec() == 0) {
        return Err(RegistryError::ZeroBandwidthCap);
    }
    conn.execute(
        "UPDATE nodes SET bwcap_bps = ?2 WHERE id = ?1",
        params![node.id.0 as i64, cap.map(|c| c.bits_per_sec() as i64)],
    )?;
    let shown = cap.map_or_else(|| "none".to_string(), |c| c.to_string());
    admin_event(
        conn,
        node.id,
        now,
        &format!("bandwidth cap set to {shown} (admin)"),
        keep,
    )
}

pub fn set_key(
    conn: &Connection,
    node: &Node,
    key: &NodeKey,
    now: Timestamp,
    keep: u32,
) -> Result<()> {
    conn.execute(
        "UPDATE nodes SET key = ?2, key_changed_at = ?3 WHERE id = ?1",
        params![node.id.0 as i64, key.expose(), now.unix()],
    )?;
    // Nonces were bound to the old key; they can go.
    conn.execute("DELETE FROM nonces WHERE node_id = ?1", [node.id.0 as i64])?;
    admin_event(conn, node.id, now, "node key replaced (admin rekey)", keep)
}

pub fn request_reboot(conn: &Connection, node: &Node, now: Timestamp, keep: u32) -> Result<()> {
    conn.execute(
        "UPDATE nodes SET reboot_requested_at = ?2 WHERE id = ?1",
        params![node.id.0 as i64, now.unix()],
    )?;
    admin_event(conn, node.id, now, "reboot requested (admin)", keep)
}

pub fn delete_node(conn: &Connection, node: &Node) -> Result<()> {
    conn.execute("DELETE FROM nonces WHERE node_id = ?1", [node.id.0 as i64])?;
    conn.execute(
        "DELETE FROM auth_failures WHERE node_id = ?1",
        [node.id.0 as i64],
    )?;
    conn.execute("DELETE FROM nodes WHERE id = ?1", [node.id.0 as i64])?;
    Ok(())
}

/// The node's key and what its check-in reply needs (the hot path: one
/// primary-key lookup with a cached statement).
pub fn node_auth(conn: &Connection, id: NodeId) -> Result<Option<NodeAuth>> {
    if id.0 > i64::MAX as u64 {
        return Ok(None);
    }
    let mut stmt = conn.prepare_cached(
        "SELECT key, fqdn, network, boot_state, bwcap_bps, reboot_requested_at
         FROM nodes WHERE id = ?1",
    )?;
    let auth = stmt
        .query_row([id.0 as i64], |row| {
            Ok(NodeAuth {
                id,
                key: parsed(row, 0, |s| NodeKey::new(s))?,
                fqdn: row.get(1)?,
                network: parsed(row, 2, json::<NodeNetwork>)?.addressing,
                boot_state: parsed(row, 3, parse_boot_state)?,
                bwcap: row
                    .get::<_, Option<i64>>(4)?
                    .map(|b| Rate::from_bits_per_sec(b as u64)),
                reboot_requested: row.get::<_, Option<i64>>(5)?.is_some(),
            })
        })
        .optional()?;
    Ok(auth)
}

pub fn auth_failures(conn: &Connection, node: u64) -> Result<Vec<AuthFailureCount>> {
    let mut stmt = conn.prepare_cached(
        "SELECT reason, count, last_at, last_peer, last_claimed_id FROM auth_failures
         WHERE node_id = ?1 ORDER BY reason",
    )?;
    let rows = stmt
        .query_map([node as i64], |row| {
            Ok(AuthFailureCount {
                reason: row.get(0)?,
                count: row.get::<_, i64>(1)? as u64,
                last_at: ts(row.get(2)?),
                last_peer: row.get(3)?,
                last_claimed_id: row.get::<_, Option<i64>>(4)?.map(|i| i as u64),
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

/// Failed authentications per node id (0 = unknown nodes): how many, and
/// the latest.
pub fn auth_failure_summary(
    conn: &Connection,
) -> Result<std::collections::HashMap<u64, crate::overview::AuthFailures>> {
    let mut stmt = conn.prepare_cached(
        "SELECT node_id, sum(count), max(last_at) FROM auth_failures GROUP BY node_id",
    )?;
    let rows = stmt
        .query_map([], |row| {
            Ok((
                row.get::<_, i64>(0)? as u64,
                crate::overview::AuthFailures {
                    count: row.get::<_, i64>(1)? as u64,
                    last_at: ts(row.get(2)?),
                },
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

/// Total failed authentications per node id (0 = unknown nodes).
pub fn auth_failure_totals(conn: &Connection) -> Result<std::collections::HashMap<u64, u64>> {
    let mut stmt =
        conn.prepare_cached("SELECT node_id, sum(count) FROM auth_failures GROUP BY node_id")?;
    let rows = stmt
        .query_map([], |row| {
            Ok((row.get::<_, i64>(0)? as u64, row.get::<_, i64>(1)? as u64))
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

pub fn unregistered_nodes(conn: &Connection) -> Result<Vec<UnregisteredNode>> {
    let mut stmt = conn.prepare(
        "SELECT macs, first_seen, last_seen, count, peer, bootcd_version, hardware
         FROM unregistered ORDER BY last_seen DESC",
    )?;
    let rows = stmt
        .query_map([], |row| {
            Ok(UnregisteredNode {
                macs: parsed(row, 0, |s: &str| {
                    s.split(',')
                        .filter(|m| !m.is_empty())
                        .map(MacAddr::from_str)
                        .collect::<std::result::Result<Vec<_>, _>>()
                })?,
                first_seen: ts(row.get(1)?),
                last_seen: ts(row.get(2)?),
                count: row.get::<_, i64>(3)? as u64,
                peer: row.get(4)?,
                bootcd_version: row.get(5)?,
                hardware: parsed(row, 6, json::<HardwareSummary>)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

pub fn forget_unregistered(conn: &Connection) -> Result<usize> {
    Ok(conn.execute("DELETE FROM unregistered", [])?)
}

// ---------------------------------------------------------------- slices

fn slice_id(conn: &Connection, name: &SliceName) -> Result<i64> {
    conn.query_row(
        "SELECT id FROM slices WHERE name = ?1",
        [name.as_str()],
        |r| r.get(0),
    )
    .optional()?
    .ok_or_else(|| RegistryError::NotFound {
        what: "slice",
        name: name.to_string(),
    })
}

pub fn create_slice(
    conn: &Connection,
    name: &SliceName,
    description: &str,
    rspec: &Rspec,
    initscript: Option<&str>,
    expires: Timestamp,
    now: Timestamp,
) -> Result<Slice> {
    rspec
        .validate()
        .map_err(|reason| RegistryError::Rspec { reason })?;
    if expires <= now {
        return Err(RegistryError::LeaseInThePast { end: expires });
    }
    let inserted = conn.execute(
        "INSERT INTO slices (name, description, rspec, initscript, expires, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (name) DO NOTHING",
        params![
            name.as_str(),
            description,
            to_json(&Rspec {
                lease_end: None,
                ..rspec.clone()
            }),
            initscript,
            expires.unix(),
            now.unix()
        ],
    )?;
    if inserted == 0 {
        return Err(RegistryError::Exists {
            what: "slice",
            name: name.to_string(),
        });
    }
    get_slice(conn, name)
}

pub fn delete_slice(conn: &Connection, name: &SliceName) -> Result<()> {
    let id = slice_id(conn, name)?;
    conn.execute("DELETE FROM slices WHERE id = ?1", [id])?;
    Ok(())
}

pub fn slice_add_node(conn: &Connection, name: &SliceName, node: &Node) -> Result<bool> {
    let id = slice_id(conn, name)?;
    let n = conn.execute(
        "INSERT INTO slice_nodes (slice_id, node_id) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
        params![id, node.id.0 as i64],
    )?;
    Ok(n > 0)
}

pub fn slice_remove_node(conn: &Connection, name: &SliceName, node: &Node) -> Result<bool> {
    let id = slice_id(conn, name)?;
    let n = conn.execute(
        "DELETE FROM slice_nodes WHERE slice_id = ?1 AND node_id = ?2",
        params![id, node.id.0 as i64],
    )?;
    Ok(n > 0)
}

pub fn slice_add_key(conn: &Connection, name: &SliceName, key: &SshPublicKey) -> Result<bool> {
    let id = slice_id(conn, name)?;
    let n = conn.execute(
        "INSERT INTO slice_keys (slice_id, key) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
        params![id, key.as_str()],
    )?;
    Ok(n > 0)
}

pub fn slice_remove_key(conn: &Connection, name: &SliceName, key: &SshPublicKey) -> Result<bool> {
    let id = slice_id(conn, name)?;
    let n = conn.execute(
        "DELETE FROM slice_keys WHERE slice_id = ?1 AND key = ?2",
        params![id, key.as_str()],
    )?;
    Ok(n > 0)
}

pub fn slice_set_rspec(conn: &Connection, name: &SliceName, rspec: &Rspec) -> Result<()> {
    rspec
        .validate()
        .map_err(|reason| RegistryError::Rspec { reason })?;
    let id = slice_id(conn, name)?;
    let mut stored = rspec.clone();
    // The lease lives in `expires` (renew changes it); a lease_end in the
    // file is taken as a renewal.
    if let Some(end) = stored.lease_end.take() {
        conn.execute(
            "UPDATE slices SET expires = ?2 WHERE id = ?1",
            params![id, end.unix()],
        )?;
    }
    conn.execute(
        "UPDATE slices SET rspec = ?2 WHERE id = ?1",
        params![id, to_json(&stored)],
    )?;
    Ok(())
}

pub fn slice_set_initscript(
    conn: &Connection,
    name: &SliceName,
    script: Option<&str>,
) -> Result<()> {
    let id = slice_id(conn, name)?;
    conn.execute(
        "UPDATE slices SET initscript = ?2 WHERE id = ?1",
        params![id, script],
    )?;
    Ok(())
}

pub fn slice_renew(
    conn: &Connection,
    name: &SliceName,
    until: Timestamp,
    now: Timestamp,
) -> Result<()> {
    if until <= now {
        return Err(RegistryError::LeaseInThePast { end: until });
    }
    let id = slice_id(conn, name)?;
    conn.execute(
        "UPDATE slices SET expires = ?2 WHERE id = ?1",
        params![id, until.unix()],
    )?;
    Ok(())
}

fn slice_from_row(conn: &Connection, row: &Row<'_>) -> rusqlite::Result<Slice> {
    let id: i64 = row.get(0)?;
    let mut keys =
        conn.prepare_cached("SELECT key FROM slice_keys WHERE slice_id = ?1 ORDER BY key")?;
    let ssh_keys = keys
        .query_map([id], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut nodes = conn.prepare_cached(
        "SELECT n.fqdn FROM slice_nodes sn JOIN nodes n ON n.id = sn.node_id
         WHERE sn.slice_id = ?1 ORDER BY n.fqdn",
    )?;
    let node_names = nodes
        .query_map([id], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let expires = ts(row.get(5)?);
    let mut rspec: Rspec = parsed(row, 3, json::<Rspec>)?;
    rspec.lease_end = Some(expires);
    Ok(Slice {
        id,
        name: parsed(row, 1, SliceName::from_str)?,
        description: row.get(2)?,
        rspec,
        initscript: row.get(4)?,
        expires,
        created_at: ts(row.get(6)?),
        ssh_keys,
        nodes: node_names,
    })
}

const SLICE_SELECT: &str =
    "SELECT id, name, description, rspec, initscript, expires, created_at FROM slices";

pub fn get_slice(conn: &Connection, name: &SliceName) -> Result<Slice> {
    conn.query_row(
        &format!("{SLICE_SELECT} WHERE name = ?1"),
        [name.as_str()],
        |row| slice_from_row(conn, row),
    )
    .optional()?
    .ok_or_else(|| RegistryError::NotFound {
        what: "slice",
        name: name.to_string(),
    })
}

pub fn list_slices(conn: &Connection) -> Result<Vec<Slice>> {
    let mut stmt = conn.prepare(&format!("{SLICE_SELECT} ORDER BY name"))?;
    let slices = stmt
        .query_map([], |row| slice_from_row(conn, row))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(slices)
}

/// `GetSlivers`: the slices assigned to a node whose lease has not ended.
pub fn slivers_for_node(conn: &Connection, node: NodeId, now: Timestamp) -> Result<Vec<Sliver>> {
    let mut stmt = conn.prepare_cached(&format!(
        "{SLICE_SELECT} WHERE expires > ?2 AND id IN (SELECT slice_id FROM slice_nodes WHERE node_id = ?1)
         ORDER BY name"
    ))?;
    let slices: Vec<Slice> = stmt
        .query_map(params![node.0 as i64, now.unix()], |row| {
            slice_from_row(conn, row)
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(slices
        .into_iter()
        .map(|s| Sliver {
            name: s.name.to_string(),
            ssh_keys: s.ssh_keys,
            rspec: s.rspec,
            initscript: s.initscript,
        })
        .collect())
}

// ---------------------------------------------------------------- repository

pub fn record_publish(conn: &Connection, p: &RepoPublish) -> Result<()> {
    conn.execute(
        "INSERT INTO repo_publishes (published_at, snapshot_dir, root_version, targets_version,
             snapshot_version, timestamp_version, packages, bytes)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            p.published_at.unix(),
            p.snapshot_dir,
            p.root_version as i64,
            p.targets_version as i64,
            p.snapshot_version as i64,
            p.timestamp_version as i64,
            p.packages as i64,
            p.bytes as i64
        ],
    )?;
    Ok(())
}

pub fn publishes(conn: &Connection, limit: u32) -> Result<Vec<RepoPublish>> {
    let mut stmt = conn.prepare(
        "SELECT published_at, snapshot_dir, root_version, targets_version, snapshot_version,
                timestamp_version, packages, bytes
         FROM repo_publishes ORDER BY id DESC LIMIT ?1",
    )?;
    let rows = stmt
        .query_map([limit], |row| {
            Ok(RepoPublish {
                published_at: ts(row.get(0)?),
                snapshot_dir: row.get(1)?,
                root_version: row.get::<_, i64>(2)? as u64,
                targets_version: row.get::<_, i64>(3)? as u64,
                snapshot_version: row.get::<_, i64>(4)? as u64,
                timestamp_version: row.get::<_, i64>(5)? as u64,
                packages: row.get::<_, i64>(6)? as u64,
                bytes: row.get::<_, i64>(7)? as u64,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

/// What a check-in compares and consumes: the node's stored run level (a
/// change is logged), a pending "update now" request and the last rollout
/// hint it was given. `None` if there is no such node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CheckinState {
    pub run_level: Option<RunLevel>,
    pub update_now: bool,
    pub hint_key: Option<String>,
}

pub(crate) fn checkin_state(conn: &Connection, node: NodeId) -> Result<Option<CheckinState>> {
    let mut stmt = conn.prepare_cached(
        "SELECT run_level, update_now_at IS NOT NULL, hint_key FROM nodes WHERE id = ?1",
    )?;
    let state = stmt
        .query_row([node.0 as i64], |r| {
            let level: Option<String> = r.get(0)?;
            Ok(CheckinState {
                run_level: level.and_then(|s| parse_run_level(&s).ok()),
                update_now: r.get(1)?,
                hint_key: r.get(2)?,
            })
        })
        .optional()?;
    Ok(state)
}

/// Asks the node to check for an update at its next check-in.
pub fn request_update_now(conn: &Connection, node: &Node, now: Timestamp, keep: u32) -> Result<()> {
    conn.execute(
        "UPDATE nodes SET update_now_at = ?2 WHERE id = ?1",
        params![node.id.0 as i64, now.unix()],
    )?;
    admin_event(conn, node.id, now, "update check requested (admin)", keep)
}
