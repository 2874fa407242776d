//! The status page as a person sees it: headless Chromium (Debian's
//! `chromium`) loads it from the real server, the test checks the rows in
//! the DOM, sorting by a column, the per-node log, and saves a screenshot.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::Workdir;
use config::api::{paths, FailureReport, ProgressEvent, ProgressReport, RunLevel};
use config::Timestamp;

fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser"].iter().find_map(|name| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join(name))
                .find(|p| p.is_file())
        })
    })
}

/// Runs headless Chromium with a fresh profile; returns stdout.
fn browse(browser: &Path, profile: &Path, args: &[&str]) -> String {
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            // The test's CA is not in the browser's store; this page test
            // is about the page, TLS trust has its own tests.
            "--ignore-certificate-errors",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .expect("running chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `id="node-N"` row ids in document order.
fn row_ids(dom: &str) -> Vec<String> {
    dom.match_indices("<tr id=\"node-")
        .map(|(i, m)| {
            let rest = &dom[i + m.len()..];
            rest[..rest.find('"').unwrap()].to_string()
        })
        .collect()
}

/// The text of the `<td class="CLASS…">` cell in row `node-ID`.
fn cell<'a>(dom: &'a str, id: &str, class: &str) -> &'a str {
    let row_start = dom.find(&format!("<tr id=\"node-{id}\"")).unwrap();
    let row = &dom[row_start..];
    let row = &row[..row.find("</tr>").unwrap()];
    let cell_start = row
        .find(&format!("<td class=\"{class}"))
        .unwrap_or_else(|| panic!("no {class} in {row}"));
    let cell = &row[cell_start..];
    let open_end = cell.find('>').unwrap() + 1;
    &cell[open_end..cell.find("</td>").unwrap()]
}

#[test]
fn the_status_page_lists_nodes_sorts_and_shows_a_nodes_log() {
    let Some(browser) = chromium() else {
        println!(
            "SKIP: chromium is not installed (apt-get install -y --no-install-recommends chromium)"
        );
        return;
    };
    let wd = Workdir::new();
    let (_, a) = wd.add_node("alpha.example.org");
    let (_, b) = wd.add_node("bravo.example.org");
    wd.add_node("charlie.example.org");
    wd.ok(&["node", "state", "charlie", "disabled"]);
    let server = wd.start();

    let mut alpha = wd.client(&server, &a);
    assert_eq!(alpha.checkin(RunLevel::Boot).status, 200);
    let mut bravo = wd.client(&server, &b);
    assert_eq!(bravo.checkin(RunLevel::Installing).status, 200);
    let progress = ProgressReport {
        events: vec![ProgressEvent {
            step: "reinstall/install".into(),
            percent: Some(40),
            message: "unpacking base".into(),
            at: Timestamp::now(),
        }],
    };
    assert_eq!(bravo.post_json(paths::PROGRESS, &progress).status, 200);
    let failure = FailureReport {
        step: "reinstall/install".into(),
        error: "sha256 mismatch in base <script>".into(),
        log_tail: vec!["downloading base".into(), "hash check failed".into()],
        now_in: RunLevel::Debug,
        at: Timestamp::now(),
    };
    assert_eq!(bravo.post_json(paths::FAILURE, &failure).status, 200);

    let profile = tempfile::tempdir().unwrap();
    let base = format!("https://localhost:{}", server.addr.port());

    let dom = browse(
        &browser,
        profile.path(),
        &["--dump-dom", &format!("{base}/status")],
    );
    assert_eq!(
        row_ids(&dom),
        ["1", "2", "3"],
        "sorted by host name by default"
    );
    assert!(cell(&dom, "1", "hostname").contains("alpha.example.org"));
    assert!(cell(&dom, "1", "boot-state").contains("reinstall"));
    assert!(cell(&dom, "1", "run-level").contains("boot"));
    assert!(cell(&dom, "1", "os-version").contains("plnode-1.0"));
    assert!(cell(&dom, "1", "last-contact").contains("ago"));
    assert!(cell(&dom, "2", "run-level").contains("debug"));
    let error = cell(&dom, "2", "last-error");
    assert!(
        error.contains("reinstall/install") && error.contains("sha256 mismatch"),
        "{error}"
    );
    // Node text is escaped, never markup.
    assert!(error.contains("&lt;script&gt;"), "{error}");
    assert!(cell(&dom, "3", "boot-state").contains("disabled"));
    assert!(cell(&dom, "3", "last-contact").contains("never"));
    assert!(!dom.contains(a.key.expose()), "a node key on the page");

    let dom = browse(
        &browser,
        profile.path(),
        &[
            "--dump-dom",
            &format!("{base}/status?sort=hostname&order=desc"),
        ],
    );
    assert_eq!(row_ids(&dom), ["3", "2", "1"]);
    let dom = browse(
        &browser,
        profile.path(),
        &[
            "--dump-dom",
            &format!("{base}/status?sort=boot_state&order=asc"),
        ],
    );
    assert_eq!(
        row_ids(&dom),
        ["3", "1", "2"],
        "disabled < reinstall, ties by id"
    );

    let dom = browse(
        &browser,
        profile.path(),
        &["--dump-dom", &format!("{base}/status/node/2")],
    );
    assert!(
        dom.contains("hash check failed"),
        "the failure's log tail is on the node page"
    );
    let failure_row = dom.find("event event-failure").unwrap();
    let progress_row = dom.find("event event-progress").unwrap();
    assert!(failure_row < progress_row, "newest first");

    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bootserver-status-page");
    std::fs::create_dir_all(&out_dir).unwrap();
    for (name, url) in [
        ("status-page.png", format!("{base}/status")),
        ("status-node-2.png", format!("{base}/status/node/2")),
    ] {
        let png = out_dir.join(name);
        let _ = std::fs::remove_file(&png);
        browse(
            &browser,
            profile.path(),
            &[
                "--window-size=1400,800",
                &format!("--screenshot={}", png.display()),
                &url,
            ],
        );
        let bytes = std::fs::read(&png).expect("screenshot written");
        assert!(bytes.starts_with(b"\x89PNG"), "{} is a PNG", png.display());
        println!("screenshot: {}", png.display());
    }
}

/// 1,000 nodes in every state: what staff look at first comes first — the
/// counts per boot state and run level, the nodes with problems (failed,
/// not seen for an hour, clock far off, failing authentication, failed
/// with the rollout's release) worst first, and the rollout by wave.
#[test]
fn at_a_thousand_nodes_problems_and_the_rollout_come_first() {
    use bootserver::model::{generate_node_key, NodeNetwork, SiteName};
    use bootserver::registry::{self, NewNode};
    use config::api::{BootState, UpdateEvent, UpdateReport, WireNetwork};
    use std::time::Instant;

    let Some(browser) = chromium() else {
        println!(
            "SKIP: chromium is not installed (apt-get install -y --no-install-recommends chromium)"
        );
        return;
    };
    let wd = Workdir::new();
    let repo = common::repo::SignedRepo::new(&wd.tmp.path().join("staff-repo"));
    repo.add("kernel", "6.1", b"kernel");
    repo.add("base", "2026.2", b"base");
    repo.add("sliver-ref", "1", b"sliver");
    repo.publish();
    wd.ok(&[
        "repo",
        "publish",
        repo.dir.to_str().unwrap(),
        "--root",
        repo.root_json().to_str().unwrap(),
    ]);

    // 1,000 nodes in one transaction, their reports written as check-ins
    // would leave them: most booted and healthy, some installing, in
    // debug or disabled.
    let now = Timestamp::now().unix();
    let workdir = bootserver::workdir::WorkDir::open(&wd.dir).unwrap();
    let mut conn = workdir.open_db().unwrap();
    let tx = conn.transaction().unwrap();
    let site: SiteName = "demo".parse().unwrap();
    for i in 1..=1000u64 {
        let new = NewNode {
            site: site.clone(),
            hostname: format!("node{i:04}").parse().unwrap(),
            domain: Some("example.org".parse().unwrap()),
            network: NodeNetwork {
                interface: None,
                mac: None,
                addressing: WireNetwork::Dhcp,
            },
            boot_state: match i % 50 {
                0 => BootState::Reinstall,
                1 => BootState::Debug,
                2 => BootState::Disabled,
                _ => BootState::Boot,
            },
            id: None,
        };
        let key = generate_node_key().unwrap();
        registry::add_node(&tx, &new, &key, Timestamp::from_unix(now)).unwrap();
    }
    tx.execute_batch(&format!(
        "UPDATE nodes SET run_level = CASE boot_state WHEN 'boot' THEN 'boot'
             WHEN 'reinstall' THEN 'installing' WHEN 'debug' THEN 'debug' ELSE 'disabled' END,
           os_version = '2026.1', deployment = '2026.1-00000000', last_contact = {now} - (id % 240),
           last_boot = {now} - 86400, clock_offset_secs = 0, uptime_secs = 86400;
         UPDATE nodes SET last_contact = {now} - 7200 WHERE id = 400;
         UPDATE nodes SET clock_offset_secs = -600 WHERE id = 500;
         UPDATE nodes SET run_level = NULL, last_contact = NULL, last_boot = NULL WHERE id = 603;"
    ))
    .unwrap();
    tx.commit().unwrap();
    drop(conn);
    let release = bootserver::publish::published_release(&workdir)
        .unwrap()
        .deployment
        .to_string();
    wd.ok(&[
        "rollout",
        "start",
        "2026.2",
        "--waves",
        "10%,50%,100%",
        "--interval",
        "1h",
        "--max-failures",
        "20%",
    ]);

    let server = wd.start();
    let node_config = |id: u64| {
        let out = wd.tmp.path().join(format!("n{id}.toml"));
        wd.ok(&[
            "node",
            "config",
            &id.to_string(),
            "-o",
            out.to_str().unwrap(),
        ]);
        config::NodeConfig::load(&out).unwrap()
    };
    // Node 300 fails an update step; node 700 gets requests with a wrong key.
    let mut n300 = wd.client(&server, &node_config(300));
    let failure = FailureReport {
        step: "update/stage".into(),
        error: "no space left on device".into(),
        log_tail: vec!["staging 2026.2".into()],
        now_in: RunLevel::Boot,
        at: Timestamp::now(),
    };
    assert_eq!(n300.post_json(paths::FAILURE, &failure).status, 200);
    let n700 = node_config(700);
    let mut impostor = common::NodeClient::with_identity(
        server.addr,
        &wd.ca(),
        "localhost",
        n700.node_id,
        config::node::NodeKey::new("x".repeat(64)).unwrap(),
    );
    assert_eq!(impostor.checkin(RunLevel::Boot).status, 401);
    // The first wave's nodes report on the release.
    let plan: bootserver::rollout::WavePlan = "10%,50%,100%".parse().unwrap();
    let first_wave: Vec<u64> = (3..1000u64)
        .filter(|i| i % 50 >= 3 && plan.wave_of(config::node::NodeId(*i)) == 0)
        .take(12)
        .collect();
    for (k, id) in first_wave.iter().enumerate() {
        let mut c = wd.client(&server, &node_config(*id));
        let event = match k {
            0 => UpdateEvent::RolledBack,
            1..=3 => UpdateEvent::Staged,
            _ => UpdateEvent::MarkedGood,
        };
        let r = UpdateReport {
            event,
            os_version: "2026.2".into(),
            deployment: release.clone(),
            reason: None,
            at: Timestamp::now(),
        };
        assert_eq!(c.post_json(paths::UPDATE, &r).status, 200);
    }

    // What the server takes to render it, then what a browser makes of it.
    let mut fetcher = wd.client(&server, &node_config(1));
    let started = Instant::now();
    let page = fetcher.get("/status", &[]);
    let server_ms = started.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(page.status, 200);
    let profile = tempfile::tempdir().unwrap();
    let base = format!("https://localhost:{}", server.addr.port());
    // Chromium's own start dominates a headless run: the page's cost is
    // the difference to an empty page (best of three each).
    let timed = |url: &str| {
        (0..3)
            .map(|_| {
                let started = Instant::now();
                let dom = browse(&browser, profile.path(), &["--dump-dom", url]);
                (started.elapsed().as_secs_f64() * 1000.0, dom)
            })
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .unwrap()
    };
    let (blank_ms, _) = timed("about:blank");
    let (page_ms, dom) = timed(&format!("{base}/status"));
    println!(
        "status page at 1000 nodes: {} KB, served in {server_ms:.0} ms; headless Chromium: {page_ms:.0} ms for the page, {blank_ms:.0} ms for an empty one, so {:.0} ms to fetch, parse and lay it out",
        page.body.len() / 1000,
        page_ms - blank_ms
    );

    assert_eq!(row_ids(&dom).len(), 1000);
    // Summary first: boot × boot is 939 (nodes 1..1000 minus every 50th
    // three, minus node 603 that never checked in).
    let summary = dom.find("id=\"summary\"").unwrap();
    let problems = dom.find("id=\"problems\"").unwrap();
    let nodes_table = dom.find("id=\"nodes\"").unwrap();
    let rollout = dom.find("id=\"rollout\"").unwrap();
    assert!(summary < nodes_table && problems < nodes_table && rollout < nodes_table);
    let boot_row = &dom[dom.find("data-state=\"boot\"").unwrap()..];
    let boot_row = &boot_row[..boot_row.find("</tr>").unwrap()];
    assert!(boot_row.contains(">939<"), "{boot_row}");
    assert!(
        boot_row.contains(">1<"),
        "one node never checked in: {boot_row}"
    );

    // Problems, worst first.
    let worst: Vec<(String, String)> = dom
        .match_indices("<tr id=\"problem-")
        .map(|(i, m)| {
            let rest = &dom[i + m.len()..];
            let id = rest[..rest.find('"').unwrap()].to_string();
            let w = &rest[rest.find("data-worst=\"").unwrap() + 12..];
            (id, w[..w.find('"').unwrap()].to_string())
        })
        .collect();
    let kinds: Vec<&str> = worst.iter().map(|(_, w)| w.as_str()).collect();
    let first_of = |k: &str| kinds.iter().position(|w| *w == k);
    assert_eq!(worst[0].0, "300", "the failed node first: {worst:?}");
    for pair in [
        "failed",
        "update-failed",
        "not-seen",
        "clock-off",
        "auth-failures",
    ]
    .windows(2)
    {
        assert!(
            first_of(pair[0]).unwrap() < first_of(pair[1]).unwrap(),
            "{pair:?} in {worst:?}"
        );
    }
    assert!(worst.iter().any(|(id, w)| id == "400" && w == "not-seen"));
    assert!(worst.iter().any(|(id, w)| id == "500" && w == "clock-off"));
    assert!(worst
        .iter()
        .any(|(id, w)| id == "700" && w == "auth-failures"));
    assert!(
        worst
            .iter()
            .any(|(id, w)| *id == first_wave[0].to_string() && w == "update-failed"),
        "{worst:?}"
    );
    // Nodes in debug without being asked are failed; those asked are not.
    assert!(
        !worst.iter().any(|(id, _)| id == "51"),
        "node 51 was put in debug"
    );

    // The rollout, wave by wave.
    let wave1 = &dom[dom.find("data-wave=\"1\"").unwrap()..];
    let wave1 = &wave1[..wave1.find("</tr>").unwrap()];
    assert!(wave1.contains("class=\"num healthy\">8<"), "{wave1}");
    assert!(wave1.contains("class=\"num took\">11<"), "{wave1}");
    assert!(wave1.contains("class=\"num failed\">1<"), "{wave1}");
    assert!(dom.contains("rollout-active"), "state shown");

    let json: serde_json::Value =
        serde_json::from_slice(&fetcher.get("/status.json", &[]).body).unwrap();
    assert_eq!(json["summary"]["total"], 1000);
    assert_eq!(json["problems"][0]["id"], 300);
    assert_eq!(json["rollout"]["waves"][0]["healthy"], 8);

    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bootserver-status-page");
    std::fs::create_dir_all(&out_dir).unwrap();
    let png = out_dir.join("status-page-1000-nodes.png");
    let _ = std::fs::remove_file(&png);
    browse(
        &browser,
        profile.path(),
        &[
            "--window-size=1400,1600",
            &format!("--screenshot={}", png.display()),
            &format!("{base}/status"),
        ],
    );
    let bytes = std::fs::read(&png).expect("screenshot written");
    assert!(bytes.starts_with(b"\x89PNG"), "{} is a PNG", png.display());
    println!("screenshot: {}", png.display());
}
