//! The status page (PlanetLab Phase 0 specification, §3.8: researchers watch it to see nodes reboot):
//! plain server-rendered HTML, no JavaScript, sortable by any column with
//! `?sort=COLUMN&order=asc|desc`, a per-node page with its log, and JSON
//! twins for scripts. Node keys never appear.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use config::node::NodeId;
use config::Timestamp;
use maud::{html, Markup, PreEscaped, DOCTYPE};
use serde::{Deserialize, Serialize};

use super::reply::{json_response, Failure};
use super::App;
use crate::model::{AuthFailureCount, EventKind, Node, NodeEvent, RepoPublish, UnregisteredNode};
use crate::overview::{self, NodeProblems, Problem, StateCounts};
use crate::registry::{self, NodeSort, SortError, SortOrder};
use crate::rollout::{self, RolloutStatus};
use config::api::{BootState, RunLevel};

#[derive(Debug, Deserialize)]
pub struct StatusQuery {
    sort: Option<String>,
    order: Option<String>,
    site: Option<String>,
}

struct Sorting {
    sort: NodeSort,
    order: SortOrder,
    site: Option<String>,
}

impl StatusQuery {
    fn sorting(&self) -> Result<Sorting, Failure> {
        let sort = match &self.sort {
            Some(s) => s
                .parse()
                .map_err(|e: SortError| Failure::bad_request(e.to_string()))?,
            None => NodeSort::Hostname,
        };
        let order = match &self.order {
            Some(o) => o
                .parse()
                .map_err(|e: SortError| Failure::bad_request(e.to_string()))?,
            // Times read best newest first; names alphabetically.
            None if matches!(
                sort,
                NodeSort::LastContact | NodeSort::LastBoot | NodeSort::LastError
            ) =>
            {
                SortOrder::Desc
            }
            None => SortOrder::Asc,
        };
        Ok(Sorting {
            sort,
            order,
            site: self.site.clone().filter(|s| !s.is_empty()),
        })
    }
}

/// One row of `/status.json`.
#[derive(Serialize)]
struct NodeStatus<'a> {
    #[serde(flatten)]
    node: &'a Node,
    auth_failures: u64,
}

#[derive(Serialize)]
struct Overview<'a> {
    server_time: Timestamp,
    started_at: Timestamp,
    /// Nodes per boot state and run level.
    summary: &'a StateCounts,
    /// Nodes with problems, worst first.
    problems: &'a [NodeProblems],
    /// The newest rollout, wave by wave.
    rollout: Option<&'a RolloutStatus>,
    nodes: Vec<NodeStatus<'a>>,
    unknown_node_auth_failures: u64,
    unregistered: &'a [UnregisteredNode],
    repository: Option<&'a RepoPublish>,
}

struct OverviewData {
    nodes: Vec<Node>,
    failures: HashMap<u64, u64>,
    unregistered: Vec<UnregisteredNode>,
    publish: Option<RepoPublish>,
    summary: StateCounts,
    problems: Vec<NodeProblems>,
    rollout: Option<RolloutStatus>,
}

async fn overview_data(app: &Arc<App>, sorting: &Sorting) -> Result<OverviewData, Failure> {
    let app = app.clone();
    let (sort, order, site) = (sorting.sort, sorting.order, sorting.site.clone());
    tokio::task::spawn_blocking(move || {
        app.reads
            .with(|c| -> Result<OverviewData, registry::RegistryError> {
                // One read transaction: every part is from the same moment.
                c.execute_batch("BEGIN DEFERRED")?;
                let result = (|| {
                    let now = Timestamp::now();
                    let nodes = registry::list_nodes(c, site.as_deref(), sort, order)?;
                    let auth = registry::auth_failure_summary(c)?;
                    let (rollout, progress) = match rollout::store::latest(c)? {
                        Some(r) => {
                            let progress = rollout::store::progress(c, r.id)?;
                            (Some(rollout::store::status(c, r, now)?), progress)
                        }
                        None => (None, HashMap::new()),
                    };
                    let release = rollout.as_ref().map(|r| r.rollout.deployment.to_string());
                    let problems = overview::problems(
                        &nodes,
                        &auth,
                        release.as_deref().map(|r| (r, &progress)),
                        now,
                    );
                    Ok(OverviewData {
                        summary: StateCounts::of(&nodes),
                        problems,
                        rollout,
                        failures: auth.iter().map(|(k, v)| (*k, v.count)).collect(),
                        nodes,
                        unregistered: registry::unregistered_nodes(c)?,
                        publish: registry::publishes(c, 1)?.into_iter().next(),
                    })
                })();
                c.execute_batch("COMMIT")?;
                result
            })
    })
    .await
    .map_err(|e| Failure::internal_error(&e))?
    .map_err(|e| Failure::internal_error(&e))?
    .map_err(|e| Failure::internal_error(&e))
}

pub async fn overview_json(State(app): State<Arc<App>>, Query(q): Query<StatusQuery>) -> Response {
    let result = async {
        let sorting = q.sorting()?;
        let data = overview_data(&app, &sorting).await?;
        let body = Overview {
            server_time: Timestamp::now(),
            started_at: app.started_at,
            summary: &data.summary,
            problems: &data.problems,
            rollout: data.rollout.as_ref(),
            nodes: data
                .nodes
                .iter()
                .map(|n| NodeStatus {
                    node: n,
                    auth_failures: data.failures.get(&n.id.0).copied().unwrap_or(0),
                })
                .collect(),
            unknown_node_auth_failures: data.failures.get(&0).copied().unwrap_or(0),
            unregistered: &data.unregistered,
            repository: data.publish.as_ref(),
        };
        Ok::<_, Failure>(json_response(StatusCode::OK, &body, None))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

pub async fn overview_page(State(app): State<Arc<App>>, Query(q): Query<StatusQuery>) -> Response {
    let result = async {
        let sorting = q.sorting()?;
        let data = overview_data(&app, &sorting).await?;
        Ok::<_, Failure>(page(
            "Boot server status",
            overview_body(&app, &data, &sorting),
        ))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `/status/node/ID` and `/status/node/ID.json`.
pub async fn node(State(app): State<Arc<App>>, Path(ident): Path<String>) -> Response {
    let result = async {
        let (id_text, as_json) = match ident.strip_suffix(".json") {
            Some(id) => (id, true),
            None => (ident.as_str(), false),
        };
        let id: u64 = id_text
            .parse()
            .map_err(|_| Failure::not_found(format!("`{id_text}` is not a node id")))?;
        let app2 = app.clone();
        let (node, events, failures) = tokio::task::spawn_blocking(move || {
            app2.reads.with(|c| -> Result<_, registry::RegistryError> {
                let node = registry::get_node(c, NodeId(id))?;
                let events = registry::node_events(c, node.id, u32::MAX)?;
                let failures = registry::auth_failures(c, node.id.0)?;
                Ok((node, events, failures))
            })
        })
        .await
        .map_err(|e| Failure::internal_error(&e))?
        .map_err(|e| Failure::internal_error(&e))?
        .map_err(|e| match e {
            registry::RegistryError::NotFound { .. } => Failure::not_found(e.to_string()),
            other => Failure::internal_error(&other),
        })?;
        if as_json {
            #[derive(Serialize)]
            struct NodeDetail<'a> {
                server_time: Timestamp,
                node: &'a Node,
                auth_failures: &'a [AuthFailureCount],
                events: &'a [NodeEvent],
            }
            let body = NodeDetail {
                server_time: Timestamp::now(),
                node: &node,
                auth_failures: &failures,
                events: &events,
            };
            return Ok(json_response(StatusCode::OK, &body, None));
        }
        let title = format!("{} (node {})", node.fqdn, node.id);
        Ok::<_, Failure>(page(&title, node_body(&node, &events, &failures)))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

const STYLE: &str = "
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #1b1b1b; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #c8c8c8; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #eef1f5; }
th a { color: inherit; }
tr:nth-child(even) td { background: #f8f9fb; }
.state-boot { color: #146c2e; } .state-reinstall { color: #8a4b00; }
.state-debug { color: #8a0057; } .state-disabled { color: #666; }
.event-failure td { background: #fdecea !important; }
.cards { display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start; }
.cards > section { min-width: 20em; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.last-contact, td.last-boot { white-space: nowrap; }
/* A thousand rows: fixed layout sizes the columns once instead of measuring every cell. */
#nodes { table-layout: fixed; width: 100%; }
#nodes td { overflow: hidden; text-overflow: ellipsis; }
td.zero { color: #b0b0b0; }
.badge { display: inline-block; padding: 0 0.4em; margin: 0 0.2em 0.1em 0; border-radius: 0.3em; font-size: 0.85em; color: #fff; }
.badge-failed { background: #b3261e; } .badge-update-failed { background: #c2410c; }
.badge-not-seen { background: #6b4fa0; } .badge-clock-off { background: #8a6d00; }
.badge-auth-failures { background: #3f5f8a; }
.rollout-active { color: #146c2e; } .rollout-paused, .rollout-halted { color: #b3261e; font-weight: 600; }
.rollout-aborted, .rollout-superseded { color: #666; }
.bar { display: flex; width: 18em; height: 0.9em; background: #e4e6ea; border-radius: 0.2em; overflow: hidden; }
.bar span { display: block; height: 100%; }
.bar .healthy { background: #2e7d32; } .bar .took { background: #64b5f6; }
.bar .failed { background: #c62828; } .bar .reverted { background: #9e9e9e; }
.legend span { display: inline-block; width: 0.8em; height: 0.8em; margin: 0 0.25em 0 0.8em; vertical-align: middle; }
.muted { color: #6b6b6b; }
pre { background: #f4f4f4; padding: 0.5em; max-width: 100em; overflow-x: auto; }
dl { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em; }
dt { font-weight: 600; }
";

fn page(title: &str, body: Markup) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                h1 { (title) }
                (body)
            }
        }
    };
    let mut response = Html(markup.into_string()).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    response
}

/// "3m 12s ago" style, with the exact time as a tooltip.
fn age(at: Option<Timestamp>, now: Timestamp) -> Markup {
    match at {
        None => html! { span.muted { "never" } },
        Some(t) => {
            html! { time datetime=(t.to_string()) title=(t.to_string()) { (ago(now.unix() - t.unix())) } }
        }
    }
}

fn ago(secs: i64) -> String {
    if secs < 0 {
        return format!("in {}", duration(-secs));
    }
    format!("{} ago", duration(secs))
}

fn duration(secs: i64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d {}h", s / 86_400, (s % 86_400) / 3600),
    }
}

fn opt(value: Option<&str>) -> Markup {
    match value {
        Some(v) => html! { (v) },
        None => html! { span.muted { "—" } },
    }
}

fn sort_link(label: &str, column: NodeSort, sorting: &Sorting) -> Markup {
    let active = sorting.sort == column;
    let order = if active {
        sorting.order.flipped()
    } else if matches!(
        column,
        NodeSort::LastContact | NodeSort::LastBoot | NodeSort::LastError
    ) {
        SortOrder::Desc
    } else {
        SortOrder::Asc
    };
    let site = sorting
        .site
        .as_deref()
        .map(|s| format!("&site={}", url_escape(s)))
        .unwrap_or_default();
    let href = format!("?sort={}&order={}{site}", column.as_str(), order.as_str());
    let arrow = match (active, sorting.order) {
        (false, _) => "",
        (true, SortOrder::Asc) => " ▲",
        (true, SortOrder::Desc) => " ▼",
    };
    html! { a href=(href) data-sort=(column.as_str()) { (label) (arrow) } }
}

fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn overview_body(app: &App, data: &OverviewData, sorting: &Sorting) -> Markup {
    let now = Timestamp::now();
    let columns = [
        ("ID", NodeSort::Id),
        ("Site", NodeSort::Site),
        ("Host name", NodeSort::Hostname),
        ("Boot state (admin)", NodeSort::BootState),
        ("Run level (node)", NodeSort::RunLevel),
        ("OS version", NodeSort::OsVersion),
        ("Last contact", NodeSort::LastContact),
        ("Last boot", NodeSort::LastBoot),
        ("Last error", NodeSort::LastError),
    ];
    html! {
        p {
            "Server time " (now.to_string()) ", up since " (app.started_at.to_string()) ". "
            (data.nodes.len()) " node(s)"
            @if let Some(site) = &sorting.site { " at site " strong { (site) } " (" a href="/status" { "all sites" } ")" }
            ". " a href="/status.json" { "JSON" }
        }
        div.cards {
            (summary_section(&data.summary))
            (rollout_section(data.rollout.as_ref(), now))
        }
        (problems_section(&data.problems, now))
        @if let Some(p) = &data.publish {
            p id="repository" {
                "Repository: targets v" (p.targets_version) ", snapshot v" (p.snapshot_version)
                ", timestamp v" (p.timestamp_version) ", " (p.packages) " package(s), published "
                (age(Some(p.published_at), now)) "."
            }
        }
        table id="nodes" {
            colgroup {
                col style="width: 4em"; col style="width: 7em"; col style="width: 16em"; col style="width: 8em";
                col style="width: 7em"; col style="width: 8em"; col style="width: 7em"; col style="width: 7em";
                col; col style="width: 6em";
            }
            thead { tr {
                @for (label, column) in columns { th { (sort_link(label, column, sorting)) } }
                th { "Auth failures" }
            } }
            tbody {
                @for n in &data.nodes {
                    tr id=(format!("node-{}", n.id)) data-node-id=(n.id.0) {
                        td.id { a href=(format!("/status/node/{}", n.id)) { (n.id) } }
                        td.site { a href=(format!("/status?site={}", url_escape(n.site.as_str()))) { (n.site) } }
                        td.hostname { a href=(format!("/status/node/{}", n.id)) { (n.fqdn) } }
                        td class=(format!("boot-state state-{}", n.boot_state)) { (n.boot_state) }
                        td.run-level { (opt(n.report.run_level.map(|r| r.as_str()))) }
                        td.os-version { (opt(n.report.os_version.as_deref())) }
                        td.last-contact { (age(n.report.last_contact, now)) }
                        td.last-boot { (age(n.report.last_boot, now)) }
                        td.last-error {
                            @match &n.report.last_error {
                                Some(e) => { strong { (e.step) } ": " (e.message) " " span.muted { "(" (age(Some(e.at), now)) ")" } }
                                None => span.muted { "—" },
                            }
                        }
                        td.auth-failures { (data.failures.get(&n.id.0).copied().unwrap_or(0)) }
                    }
                }
            }
        }
        @if !data.unregistered.is_empty() {
            h2 { "Unregistered machines" }
            p.muted { "These said hello without a node config; register them with " code { "bootserver node add" } "." }
            table id="unregistered" {
                thead { tr { th { "MAC addresses" } th { "Address" } th { "CPU" } th { "RAM" } th { "Boot CD" } th { "Last seen" } th { "Hellos" } } }
                tbody {
                    @for u in &data.unregistered {
                        tr {
                            td { (u.macs.iter().map(|m| m.to_string()).collect::<Vec<_>>().join(", ")) }
                            td { (u.peer) }
                            td { (u.hardware.cpus) " × " (u.hardware.cpu_model) }
                            td { (mib(u.hardware.ram_bytes)) }
                            td { (opt(u.bootcd_version.as_deref())) }
                            td { (age(Some(u.last_seen), now)) }
                            td { (u.count) }
                        }
                    }
                }
            }
        }
        @let unknown = data.failures.get(&0).copied().unwrap_or(0);
        @if unknown > 0 {
            p.muted { (unknown) " request(s) from unknown or unnamed nodes were refused." }
        }
    }
}

/// Nodes per boot state (rows) and run level (columns).
fn summary_section(counts: &StateCounts) -> Markup {
    let levels: Vec<&str> = [
        Some(RunLevel::Boot),
        Some(RunLevel::Bootcd),
        Some(RunLevel::Installing),
        Some(RunLevel::Debug),
        Some(RunLevel::Disabled),
        None,
    ]
    .into_iter()
    .map(overview::run_level_word)
    .collect();
    let cell = |n: u64| {
        html! { td class=(if n == 0 { "num zero" } else { "num" }) { (n) } }
    };
    html! {
        section id="summary" {
            h2 { "Nodes by state" }
            table {
                thead { tr {
                    th { "Boot state (admin) ╲ run level (node)" }
                    @for l in &levels { th.num { (l) } }
                    th.num { "All" }
                } }
                tbody {
                    @for state in BootState::ALL {
                        tr data-state=(state.as_str()) {
                            th class=(format!("state-{state}")) { (state) }
                            @for l in &levels { (cell(counts.get(state, l))) }
                            (cell(counts.boot_state.get(state.as_str()).copied().unwrap_or(0)))
                        }
                    }
                    tr {
                        th { "All" }
                        @for l in &levels { (cell(counts.run_level.get(*l).copied().unwrap_or(0))) }
                        (cell(counts.total))
                    }
                }
            }
        }
    }
}

fn problem_text(p: &Problem, now: Timestamp) -> Markup {
    match p {
        Problem::Failed { step, message, at } => html! {
            strong { (step) } ": " (message)
            @if let Some(at) = at { " " span.muted { "(" (age(Some(*at), now)) ")" } }
        },
        Problem::UpdateFailed { release } => {
            html! { "failed with the rollout's release " code { (release) } }
        }
        Problem::NotSeen { since } => html! { "last check-in " (age(Some(*since), now)) },
        Problem::ClockOff { secs } => html! {
            "clock " (duration(secs.abs())) @if *secs > 0 { " ahead" } @else { " behind" }
        },
        Problem::AuthFailures { count, last_at } => html! {
            (count) " failed authentication(s), the last " (age(Some(*last_at), now))
        },
    }
}

/// Nodes with problems, worst first.
fn problems_section(problems: &[NodeProblems], now: Timestamp) -> Markup {
    html! {
        section id="problems" {
            h2 { "Nodes with problems (" (problems.len()) ")" }
            @if problems.is_empty() {
                p.muted { "None: every node that checked in is healthy, seen within the hour, with a good clock." }
            } @else {
                table {
                    thead { tr { th { "Node" } th { "Site" } th { "Problems" } th { "Details" } } }
                    tbody {
                        @for n in problems {
                            tr id=(format!("problem-{}", n.id)) data-node-id=(n.id.0) data-worst=(n.problems[0].word()) {
                                td { a href=(format!("/status/node/{}", n.id)) { (n.fqdn) } }
                                td { (n.site) }
                                td { @for p in &n.problems { span class=(format!("badge badge-{}", p.word())) { (p.word()) } } }
                                td { @for (i, p) in n.problems.iter().enumerate() { @if i > 0 { br; } (problem_text(p, now)) } }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn bar(c: &rollout::WaveCounts) -> Markup {
    let share = |n: u64| {
        if c.nodes == 0 {
            0.0
        } else {
            n as f64 * 100.0 / c.nodes as f64
        }
    };
    html! {
        div.bar title=(format!("{} healthy, {} on the way, {} failed, {} reverted, {} not reported", c.healthy, c.took - c.healthy, c.failed, c.reverted, c.not_reported)) {
            span.healthy style=(format!("width: {:.2}%", share(c.healthy))) {}
            span.took style=(format!("width: {:.2}%", share(c.took - c.healthy))) {}
            span.failed style=(format!("width: {:.2}%", share(c.failed))) {}
            span.reverted style=(format!("width: {:.2}%", share(c.reverted))) {}
        }
    }
}

/// The newest rollout, wave by wave.
fn rollout_section(status: Option<&RolloutStatus>, now: Timestamp) -> Markup {
    html! {
        section id="rollout" {
            h2 { "Rollout" }
            @match status {
                None => p.muted { "No rollout yet: nodes take whatever is published (" code { "bootserver rollout start VERSION" } ")." },
                Some(s) => {
                    @let r = &s.rollout;
                    p {
                        "Rollout " (r.id) " of " code { (r.deployment) } ": "
                        span class=(format!("rollout-state rollout-{}", r.state)) { (r.state) }
                        @if s.complete { " (every wave open)" }
                        ", started " (age(Some(r.started_at), now)) "; "
                        (s.open_waves) " of " (r.waves.len()) " wave(s) open, "
                        (duration(r.interval_secs as i64)) " apart; halts past " (r.max_failures.to_string()) " failures in a wave."
                        @if let Some(note) = &r.note { br; span.muted { (note) } }
                    }
                    table id="rollout-waves" {
                        thead { tr {
                            th { "Wave" } th { "Share" } th { "Open" } th.num { "Nodes" } th.num { "Took" }
                            th.num { "Healthy" } th.num { "Failed" } th.num { "Reverted" } th.num { "Not reported" } th { "Progress" }
                        } }
                        tbody {
                            @for w in &s.waves {
                                tr data-wave=(w.wave) {
                                    td { (w.wave) } td { (w.share) }
                                    td { @if w.open { "yes" } @else if let Some(at) = w.opens_at { "in " (duration(at.unix() - now.unix())) } @else { "no" } }
                                    td.num { (w.counts.nodes) } td.num.took { (w.counts.took) } td.num.healthy { (w.counts.healthy) }
                                    td.num.failed { (w.counts.failed) } td.num.reverted { (w.counts.reverted) } td.num.not-reported { (w.counts.not_reported) }
                                    td { (bar(&w.counts)) }
                                }
                            }
                        }
                    }
                    p.legend.muted {
                        span style="background:#2e7d32" {} "healthy" span style="background:#64b5f6" {} "on the way"
                        span style="background:#c62828" {} "failed" span style="background:#9e9e9e" {} "reverted"
                    }
                }
            }
        }
    }
}

fn mib(bytes: u64) -> String {
    if bytes >= 10 << 30 {
        format!("{} GiB", bytes >> 30)
    } else {
        format!("{} MiB", bytes >> 20)
    }
}

fn node_body(node: &Node, events: &[NodeEvent], failures: &[AuthFailureCount]) -> Markup {
    let now = Timestamp::now();
    let r = &node.report;
    html! {
        p { a href="/status" { "← all nodes" } " · " a href=(format!("/status/node/{}.json", node.id)) { "JSON" } }
        dl id="node" {
            dt { "Site" } dd { (node.site) }
            dt { "Boot state (admin)" } dd.boot-state { span class=(format!("state-{}", node.boot_state)) { (node.boot_state) } " since " (age(Some(node.boot_state_at), now)) }
            dt { "Run level (node)" } dd.run-level { (opt(r.run_level.map(|l| l.as_str()))) }
            dt { "Boot CD" } dd { (opt(r.bootcd_version.as_deref())) }
            dt { "OS version" } dd { (opt(r.os_version.as_deref())) }
            dt { "Deployment" } dd { (opt(r.deployment.as_deref())) }
            dt { "Last contact" } dd { (age(r.last_contact, now)) @if let Some(p) = &r.last_peer { " from " (p) } }
            dt { "Last boot" } dd { (age(r.last_boot, now)) }
            dt { "Clock offset" } dd { @match r.clock_offset_secs { Some(o) => { (o) " s" }, None => span.muted { "—" } } }
            dt { "Installed" } dd { (age(r.installed_at, now)) }
            dt { "Network" } dd { (node.network.summary()) }
            dt { "Bandwidth cap" } dd { @match node.bwcap { Some(c) => { (c.to_string()) }, None => span.muted { "none" } } }
            @if let Some(at) = node.reboot_requested_at { dt { "Reboot" } dd { "requested " (age(Some(at), now)) } }
            @if let Some(h) = &r.hardware {
                dt { "CPU" } dd { (h.cpus) " × " (h.cpu_model) }
                dt { "RAM" } dd { (mib(h.ram_bytes)) }
                dt { "Disks" } dd { @for d in &h.disks { (d.name) " " (mib(d.size_bytes)) @if d.removable { " (removable)" } br; } }
                dt { "NICs" } dd { @for n in &h.nics { (n.name) " " (n.mac.to_string()) @if n.link { " link up" } @else { " no link" } br; } }
            }
            @if let Some(h) = &r.health {
                dt { "Services" } dd { (h.services_up) "/" (h.services_total) " up"
                    @if !h.failed_services.is_empty() { "; failed: " (h.failed_services.join(", ")) } }
                dt { "Load" } dd { (format!("{:.2}", h.load1)) }
            }
        }
        @if !failures.is_empty() {
            h2 { "Failed authentications" }
            table id="auth-failures" {
                thead { tr { th { "Reason" } th { "Count" } th { "Last" } th { "From" } } }
                tbody { @for f in failures { tr { td { (f.reason) } td { (f.count) } td { (age(Some(f.last_at), now)) } td { (f.last_peer) } } } }
            }
        }
        h2 { "Log (newest first)" }
        @if events.is_empty() {
            p.muted { "Nothing reported yet." }
        } @else {
            table id="events" {
                thead { tr { th { "Received" } th { "Node time" } th { "Kind" } th { "Step" } th { "%" } th { "Message" } } }
                tbody {
                    @for e in events {
                        tr class=(format!("event event-{}", e.kind.as_str())) {
                            td { (age(Some(e.received_at), now)) }
                            td { (e.at.to_string()) }
                            td { (e.kind.as_str()) }
                            td { (e.step) }
                            td { @if let Some(p) = e.percent { (p) } }
                            td {
                                (e.message)
                                @if e.kind == EventKind::Failure && !e.log_tail.is_empty() {
                                    details { summary { "log tail (" (e.log_tail.len()) " lines)" } pre { (e.log_tail.join("\n")) } }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_naturally() {
        assert_eq!(ago(5), "5s ago");
        assert_eq!(ago(192), "3m 12s ago");
        assert_eq!(ago(7300), "2h 1m ago");
        assert_eq!(ago(90_000), "1d 1h ago");
        assert_eq!(ago(-30), "in 30s");
    }

    #[test]
    fn query_values_are_escaped_in_links() {
        assert_eq!(url_escape("a b&c"), "a%20b%26c");
    }
}
