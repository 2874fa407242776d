//! Checks that a scenario runs on an installed node over a staff ssh
//! login, one function per service, so that one shared boot can check
//! several services.

use std::io::Write as _;
use std::process::{Command, Stdio};

use anyhow::{bail, ensure, Context as _};

use crate::ssh::Ssh;

/// The sensor server on an installed node with running slivers `slices`:
///
/// - `/` lists the sensors and `/node` says the node is in `boot`;
/// - each sliver reads `http://127.0.0.1:33080/slivers` from inside
///   (`nodemgr enter SLICE -- wget ...`) and sees every slice, running;
/// - `/metrics` has a running series per slice and passes
///   `promtool check metrics` on the host (Debian's `prometheus`).
///
/// Returns what it saw, for the scenario's log.
pub fn sensors(ssh: &Ssh, slices: &[&str]) -> anyhow::Result<String> {
    let base = "http://127.0.0.1:33080";
    let index = ssh.run_ok(&format!("wget -qO- {base}/"))?;
    for sensor in [
        "load",
        "meminfo",
        "slivers",
        "bandwidth",
        "events",
        "connections",
        "metrics",
    ] {
        ensure!(
            index.lines().any(|l| l.starts_with(&format!("{sensor},"))),
            "the sensors' index lacks {sensor}:\n{index}"
        );
    }
    let node = ssh.run_ok(&format!("wget -qO- {base}/node/node_id/boot_state"))?;
    let row = node.lines().nth(1).unwrap_or_default();
    ensure!(
        row.ends_with(",boot") && !row.starts_with(','),
        "/node says {node:?}, not a node id in boot"
    );
    let mut seen = String::new();
    for slice in slices {
        let table = ssh
            .run_ok(&format!(
                "nodemgr enter {slice} -- wget -qO- {base}/slivers/name/state"
            ))
            .with_context(|| format!("sliver {slice} reading /slivers"))?;
        for other in slices {
            ensure!(
                table.lines().any(|l| l == format!("{other},running")),
                "sliver {slice} does not see {other} running in /slivers:\n{table}"
            );
        }
        seen = table;
    }
    // bwcap shapes every sliver: each has a row of traffic and budget.
    let bandwidth = ssh.run_ok(&format!(
        "wget -qO- {base}/bandwidth/name/day_bytes/budget_left_bytes"
    ))?;
    for slice in slices {
        ensure!(
            bandwidth
                .lines()
                .any(|l| l.starts_with(&format!("{slice},"))),
            "/bandwidth has no row for {slice}:\n{bandwidth}"
        );
    }
    let metrics = ssh.run_ok(&format!("wget -qO- {base}/metrics"))?;
    for slice in slices {
        ensure!(
            metrics.contains(&format!("plnode_sliver_running{{slice=\"{slice}\"}} 1")),
            "/metrics has no running series for {slice}"
        );
        ensure!(
            metrics.contains(&format!(
                "plnode_sliver_budget_left_bytes{{slice=\"{slice}\"}} "
            )),
            "/metrics has no budget series for {slice}"
        );
    }
    promtool(&metrics)?;
    Ok(format!("{index}\n{node}\n{seen}\n{bandwidth}"))
}

/// `promtool check metrics` on `text`.
pub fn promtool(text: &str) -> anyhow::Result<()> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running promtool (apt-get install prometheus)")?;
    child
        .stdin
        .take()
        .context("promtool's input")?
        .write_all(text.as_bytes())
        .context("feeding promtool")?;
    let out = child.wait_with_output().context("waiting for promtool")?;
    if !out.status.success() {
        bail!(
            "promtool check metrics failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
