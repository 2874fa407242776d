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
