//! What the command line prints: tables for people, `--json` for scripts.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Result;
use bootserver::admin::{Admin, NodeDetails};
use bootserver::model::{
    AuthFailureCount, Node, NodeEvent, RepoPublish, Site, Slice, UnregisteredNode,
};
use bootserver::rollout::{Rollout, RolloutStatus};
use comfy_table::{presets, Table};
use config::node::ServerUrl;
use config::Timestamp;

/// `value` as pretty JSON on standard output.
pub fn json<T: serde::Serialize + ?Sized>(value: &T) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING);
    t.set_header(header.iter().map(|h| h.to_uppercase()));
    t
}

/// A time and how long ago it was, or `-`.
fn when(t: Option<Timestamp>, now: Timestamp) -> String {
    match t {
        None => "-".into(),
        Some(t) => {
            let secs = now.unix() - t.unix();
            let ago = match secs {
                s if s < 0 => "in the future".to_string(),
                s if s < 120 => format!("{s}s ago"),
                s if s < 7200 => format!("{}m ago", s / 60),
                s if s < 172_800 => format!("{}h ago", s / 3600),
                s => format!("{}d ago", s / 86_400),
            };
            format!("{t} ({ago})")
        }
    }
}

fn dash(s: Option<&str>) -> String {
    s.unwrap_or("-").to_string()
}

/// What `init` made.
pub fn initialised(admin: &Admin, as_json: bool) -> Result<()> {
    let wd = admin.workdir();
    if as_json {
        #[derive(serde::Serialize)]
        struct Made<'a> {
            dir: &'a Path,
            ca: PathBuf,
            cert: PathBuf,
            database: PathBuf,
            urls: &'a [ServerUrl],
        }
        return json(&Made {
            dir: wd.root(),
            ca: wd.ca_path(),
            cert: wd.cert_path(),
            database: wd.db_path(),
            urls: &wd.config.server.urls,
        });
    }
    println!("created {}", wd.root().display());
    println!("  CA for boot CDs:  {}", wd.ca_path().display());
    println!("  server cert:      {}", wd.cert_path().display());
    println!("  database:         {}", wd.db_path().display());
    let urls: Vec<String> = wd
        .config
        .server
        .urls
        .iter()
        .map(|u| u.to_string())
        .collect();
    if urls.is_empty() {
        println!("  node URLs:        none (node configs use the boot CD's, or `node add --url`)");
    } else {
        println!("  node URLs:        {}", urls.join(" "));
    }
    println!("next: bootserver serve {}", wd.root().display());
    Ok(())
}

pub fn sites(sites: &[Site]) {
    let mut t = table(&["name", "nodes", "created", "description"]);
    for s in sites {
        t.add_row(vec![
            s.name.to_string(),
            s.nodes.to_string(),
            s.created_at.to_string(),
            s.description.clone(),
        ]);
    }
    println!("{t}");
}

pub fn nodes(nodes: &[Node], now: Timestamp) {
    let mut t = table(&[
        "id",
        "site",
        "hostname",
        "boot state",
        "run level",
        "os version",
        "last contact",
        "last error",
    ]);
    for n in nodes {
        t.add_row(vec![
            n.id.to_string(),
            n.site.to_string(),
            n.fqdn.clone(),
            n.boot_state.to_string(),
            dash(n.report.run_level.map(|r| r.as_str())),
            dash(n.report.os_version.as_deref()),
            when(n.report.last_contact, now),
            n.report
                .last_error
                .as_ref()
                .map(|e| format!("{}: {}", e.step, e.message))
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    println!("{t}");
}

/// `node show`: the node's fields, then its failed authentications.
pub fn node_details(details: &NodeDetails, as_json: bool, now: Timestamp) -> Result<()> {
    let NodeDetails {
        node: n,
        auth_failures,
    } = details;
    if as_json {
        #[derive(serde::Serialize)]
        struct Shown<'a> {
            #[serde(flatten)]
            node: &'a Node,
            auth_failures: &'a [AuthFailureCount],
        }
        return json(&Shown {
            node: n,
            auth_failures,
        });
    }
    let r = &n.report;
    let mut t = table(&["field", "value"]);
    let mut row = |k: &str, v: String| {
        t.add_row(vec![k.to_string(), v]);
    };
    row("id", n.id.to_string());
    row("hostname", n.fqdn.clone());
    row("site", n.site.to_string());
    row("network", n.network.summary());
    row(
        "boot state (admin)",
        format!("{} since {}", n.boot_state, n.boot_state_at),
    );
    row(
        "bandwidth cap",
        n.bwcap.map_or_else(|| "none".into(), |c| c.to_string()),
    );
    row("key changed", n.key_changed_at.to_string());
    row("reboot requested", when(n.reboot_requested_at, now));
    row("run level (node)", dash(r.run_level.map(|l| l.as_str())));
    row("boot cd", dash(r.bootcd_version.as_deref()));
    row("os version", dash(r.os_version.as_deref()));
    row("deployment", dash(r.deployment.as_deref()));
    row("last contact", when(r.last_contact, now));
    row("last peer", dash(r.last_peer.as_deref()));
    row("last boot", when(r.last_boot, now));
    row(
        "clock offset",
        r.clock_offset_secs
            .map_or_else(|| "-".into(), |o| format!("{o} s")),
    );
    row("installed", when(r.installed_at, now));
    row(
        "last error",
        r.last_error.as_ref().map_or_else(
            || "-".into(),
            |e| format!("{}: {} ({})", e.step, e.message, e.at),
        ),
    );
    if let Some(h) = &r.hardware {
        row("cpu", format!("{} x {}", h.cpus, h.cpu_model));
        row("ram", format!("{} MiB", h.ram_bytes >> 20));
        for nic in &h.nics {
            row(
                "nic",
                format!(
                    "{} {}{}",
                    nic.name,
                    nic.mac,
                    if nic.link { " link" } else { "" }
                ),
            );
        }
        for d in &h.disks {
            row("disk", format!("{} {} MiB", d.name, d.size_bytes >> 20));
        }
    }
    for f in auth_failures {
        row(
            "auth failures",
            format!(
                "{} x {} (last {} from {})",
                f.count, f.reason, f.last_at, f.last_peer
            ),
        );
    }
    println!("{t}");
    Ok(())
}

/// `node log`: newest first, failures with their log tails.
pub fn node_log(node: &Node, events: &[NodeEvent], as_json: bool) -> Result<()> {
    if as_json {
        return json(events);
    }
    println!("log of node {} ({}), newest first:", node.id, node.fqdn);
    if events.is_empty() {
        println!("  (nothing reported yet)");
    }
    for e in events {
        let percent = e.percent.map(|p| format!(" {p}%")).unwrap_or_default();
        let step = if e.step.is_empty() {
            String::new()
        } else {
            format!(" {}", e.step)
        };
        println!(
            "{}  {}{step}{percent}: {}",
            e.received_at,
            e.kind.as_str(),
            e.message
        );
        for line in &e.log_tail {
            println!("    | {line}");
        }
    }
    Ok(())
}

pub fn unregistered(list: &[UnregisteredNode], now: Timestamp) {
    let mut t = table(&[
        "macs",
        "address",
        "cpu",
        "ram mib",
        "disks",
        "boot cd",
        "first seen",
        "last seen",
        "hellos",
    ]);
    for u in list {
        t.add_row(vec![
            u.macs
                .iter()
                .map(|m| m.to_string())
                .collect::<Vec<_>>()
                .join(","),
            u.peer.clone(),
            format!("{} x {}", u.hardware.cpus, u.hardware.cpu_model),
            (u.hardware.ram_bytes >> 20).to_string(),
            u.hardware
                .disks
                .iter()
                .map(|d| format!("{}:{}G", d.name, d.size_bytes >> 30))
                .collect::<Vec<_>>()
                .join(","),
            dash(u.bootcd_version.as_deref()),
            u.first_seen.to_string(),
            when(Some(u.last_seen), now),
            u.count.to_string(),
        ]);
    }
    println!("{t}");
}

pub fn slices(slices: &[Slice]) {
    let mut t = table(&[
        "name",
        "nodes",
        "keys",
        "cpu share",
        "net max",
        "lease end",
        "description",
    ]);
    for s in slices {
        t.add_row(vec![
            s.name.to_string(),
            s.nodes.len().to_string(),
            s.ssh_keys.len().to_string(),
            s.rspec.cpu_share.to_string(),
            s.rspec.net_max_rate.to_string(),
            s.expires.to_string(),
            s.description.clone(),
        ]);
    }
    println!("{t}");
}

pub fn slice(s: &Slice) {
    println!("slice {} (lease until {})", s.name, s.expires);
    if !s.description.is_empty() {
        println!("  {}", s.description);
    }
    println!(
        "rspec:\n{}",
        toml::to_string(&s.rspec).unwrap_or_default().trim_end()
    );
    println!(
        "nodes: {}",
        if s.nodes.is_empty() {
            "-".into()
        } else {
            s.nodes.join(", ")
        }
    );
    println!("ssh keys:");
    for k in &s.ssh_keys {
        println!("  {k}");
    }
    if let Some(script) = &s.initscript {
        println!("initscript:\n{script}");
    }
}

pub fn published(repo: &Path, p: &RepoPublish) {
    println!(
        "published {}: targets v{}, snapshot v{}, timestamp v{}, root v{}; {} package(s), {} bytes",
        repo.display(),
        p.targets_version,
        p.snapshot_version,
        p.timestamp_version,
        p.root_version,
        p.packages,
        p.bytes
    );
}

pub fn publishes(history: &[RepoPublish]) {
    if history.is_empty() {
        println!("nothing published yet (bootserver repo publish DIR)");
        return;
    }
    let mut t = table(&[
        "published",
        "snapshot dir",
        "root",
        "targets",
        "snapshot",
        "timestamp",
        "packages",
        "bytes",
    ]);
    for p in history {
        t.add_row(vec![
            p.published_at.to_string(),
            p.snapshot_dir.clone(),
            p.root_version.to_string(),
            p.targets_version.to_string(),
            p.snapshot_version.to_string(),
            p.timestamp_version.to_string(),
            p.packages.to_string(),
            p.bytes.to_string(),
        ]);
    }
    println!("{t}");
}

fn rollout_line(r: &Rollout) -> String {
    let waves = if r.waves.len() == 1 {
        "one wave".to_string()
    } else {
        format!("waves {} every {} s", r.waves, r.interval_secs)
    };
    format!(
        "rollout {} of {} ({waves}, halts past {} failures in a wave): {}",
        r.id, r.deployment, r.max_failures, r.state
    )
}

/// A rollout just started or changed.
pub fn rollout_changed(r: &Rollout) {
    println!("{}", rollout_line(r));
    if let Some(note) = &r.note {
        println!("  {note}");
    }
}

/// `rollout status`: the rollout, then one row per wave.
pub fn rollout_status(s: &RolloutStatus) {
    let r = &s.rollout;
    println!("{}", rollout_line(r));
    println!(
        "  started {}; {} of {} wave(s) open{}",
        when(Some(r.started_at), s.now),
        s.open_waves,
        r.waves.len(),
        if s.complete { " (complete)" } else { "" }
    );
    if let Some(note) = &r.note {
        println!("  {note}");
    }
    let mut t = table(&[
        "wave",
        "share",
        "open",
        "nodes",
        "took",
        "healthy",
        "failed",
        "reverted",
        "not reported",
    ]);
    for w in &s.waves {
        let open = match (w.open, w.opens_at) {
            (true, _) => "yes".to_string(),
            (false, Some(at)) => format!("at {at}"),
            (false, None) => "no".to_string(),
        };
        let c = &w.counts;
        t.add_row(vec![
            w.wave.to_string(),
            w.share.clone(),
            open,
            c.nodes.to_string(),
            c.took.to_string(),
            c.healthy.to_string(),
            c.failed.to_string(),
            c.reverted.to_string(),
            c.not_reported.to_string(),
        ]);
    }
    let c = &s.total;
    t.add_row(vec![
        "all".to_string(),
        String::new(),
        String::new(),
        c.nodes.to_string(),
        c.took.to_string(),
        c.healthy.to_string(),
        c.failed.to_string(),
        c.reverted.to_string(),
        c.not_reported.to_string(),
    ]);
    println!("{t}");
}

/// `rollout list`.
pub fn rollouts(list: &[Rollout]) {
    let mut t = table(&["id", "release", "waves", "state", "started", "note"]);
    let now = Timestamp::now();
    for r in list {
        t.add_row(vec![
            r.id.to_string(),
            r.deployment.to_string(),
            r.waves.to_string(),
            r.state.to_string(),
            when(Some(r.started_at), now),
            r.note.clone().unwrap_or_default(),
        ]);
    }
    println!("{t}");
}
