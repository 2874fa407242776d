//! The supervisor run as an ordinary process in its own PID and mount
//! namespaces (`unshare`), with real child processes: restart with backoff,
//! crash-loop detection, orderly shutdown with unmount, log rotation.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn can_unshare() -> bool {
    Command::new("unshare")
        .args(["-m", "-p", "-f", "--mount-proc", "true"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Writes ROOT/etc/plnode/supervisor.toml and returns ROOT.
fn root_with(services: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("etc/plnode")).unwrap();
    std::fs::create_dir_all(dir.path().join("plnode")).unwrap();
    std::fs::write(dir.path().join("etc/plnode/supervisor.toml"), services).unwrap();
    dir
}

/// Runs the supervisor for `secs` inside fresh PID and mount namespaces,
/// with a tmpfs on ROOT/plnode, then sends it SIGTERM and reports whether
/// ROOT/plnode was still mounted afterwards.
fn run_for(root: &Path, secs: u32) -> (Output, String) {
    let init = env!("CARGO_BIN_EXE_init");
    let plnode = root.join("plnode");
    let script = format!(
        "mount -t tmpfs scratch {p} && mkdir -p {p}/log && \
         {init} supervisor --root {r} > {r}/console.txt 2>&1 & pid=$!; sleep {secs}; \
         cp -r {p}/log {r}/kept-log 2>/dev/null; kill -TERM $pid; wait $pid; \
         if grep -q ' {p} ' /proc/self/mountinfo; then echo STILL-MOUNTED; else echo UNMOUNTED; fi",
        p = plnode.display(),
        r = root.display(),
    );
    let out = Command::new("unshare")
        .args(["-m", "-p", "-f", "--mount-proc", "sh", "-c", &script])
        .output()
        .unwrap();
    let console = std::fs::read_to_string(root.join("console.txt")).unwrap_or_default();
    (out, console)
}

fn kept_log(root: &Path, name: &str) -> PathBuf {
    root.join("kept-log/services").join(name)
}

#[test]
fn an_exiting_service_is_restarted_with_growing_delays() {
    if !can_unshare() {
        eprintln!("SKIP: unshare of PID/mount namespaces is not permitted here (needs root)");
        return;
    }
    let stamps = tempfile::tempdir().unwrap();
    let file = stamps.path().join("starts");
    let root = root_with(&format!(
        "[supervisor]\ncrash_restarts = 50\n\n[[service]]\nname = \"flaky\"\ncommand = [\"sh\", \"-c\", \"date +%s.%N >> {}; echo started; exit 3\"]\nready_after_secs = 0\n",
        file.display()
    ));
    let (out, console) = run_for(root.path(), 9);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let starts: Vec<f64> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect();
    // Backoff 1, 2, 4 s: about four starts in nine seconds, not hundreds.
    assert!(
        (3..=6).contains(&starts.len()),
        "{} starts: {console}",
        starts.len()
    );
    let gaps: Vec<f64> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.windows(2).all(|g| g[1] > g[0] * 1.5),
        "delays should grow: {gaps:?}"
    );
    assert!(
        console.contains("service flaky exited (exit code 3)"),
        "{console}"
    );
    assert!(console.contains("[flaky] started"), "{console}");
}

#[test]
fn a_crash_looping_service_is_marked_failed() {
    if !can_unshare() {
        eprintln!("SKIP: unshare of PID/mount namespaces is not permitted here (needs root)");
        return;
    }
    let root = root_with(
        "[supervisor]\ncrash_restarts = 2\ncrash_window_secs = 60\n\n[[service]]\nname = \"broken\"\ncommand = [\"/nonexistent/program\"]\n\n[[service]]\nname = \"steady\"\ncommand = [\"sleep\", \"100\"]\nready_after_secs = 1\n",
    );
    let (_, console) = run_for(root.path(), 6);
    assert!(
        console.contains("@step service/broken fail crash loop: 3 exits within 60 s"),
        "{console}"
    );
    assert!(console.contains("@step service/steady ok up"), "{console}");
    assert!(
        !console.contains("supervisor/healthy"),
        "a failed required service means not healthy: {console}"
    );
}

#[test]
fn shutdown_stops_every_service_and_unmounts() {
    if !can_unshare() {
        eprintln!("SKIP: unshare of PID/mount namespaces is not permitted here (needs root)");
        return;
    }
    let marks = tempfile::tempdir().unwrap();
    let root = root_with(&format!(
        "[[service]]\nname = \"a\"\ncommand = [\"sh\", \"-c\", \"trap 'echo a-stopped > {m}/a; exit 0' TERM; while :; do sleep 0.1; done\"]\nready_after_secs = 1\n\n\
         [[service]]\nname = \"b\"\ncommand = [\"sh\", \"-c\", \"trap 'echo b-stopped > {m}/b; exit 0' TERM; while :; do sleep 0.1; done\"]\nready_after_secs = 1\n",
        m = marks.path().display()
    ));
    let (out, console) = run_for(root.path(), 3);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(console.contains("@step supervisor/healthy ok"), "{console}");
    assert_eq!(
        std::fs::read_to_string(marks.path().join("a"))
            .unwrap()
            .trim(),
        "a-stopped"
    );
    assert_eq!(
        std::fs::read_to_string(marks.path().join("b"))
            .unwrap()
            .trim(),
        "b-stopped"
    );
    assert!(console.contains("supervisor ended: Reboot"), "{console}");
    assert!(stdout.contains("UNMOUNTED"), "{stdout} {console}");
    assert!(
        console.contains("@step supervisor/shutdown ok Reboot unmounted=["),
        "{console}"
    );
}

#[test]
fn service_logs_rotate_at_the_set_size() {
    if !can_unshare() {
        eprintln!("SKIP: unshare of PID/mount namespaces is not permitted here (needs root)");
        return;
    }
    let root = root_with(
        "[supervisor]\nlog_max_bytes = 4096\nlog_keep = 2\n\n[[service]]\nname = \"chatty\"\ncommand = [\"sh\", \"-c\", \"i=0; while [ $i -lt 400 ]; do echo line-$i-xxxxxxxxxxxxxxxxxxxxxxxx; i=$((i+1)); done; sleep 100\"]\n",
    );
    let (_, console) = run_for(root.path(), 3);
    let size = |n: &str| {
        std::fs::metadata(kept_log(root.path(), n))
            .map(|m| m.len())
            .ok()
    };
    assert!(
        size("chatty.log.1").is_some_and(|s| s <= 4096 && s > 3000),
        "{:?} {console}",
        size("chatty.log.1")
    );
    assert!(size("chatty.log.2").is_some(), "two rotated files are kept");
    assert!(size("chatty.log.3").is_none(), "no more than two");
    let current = std::fs::read_to_string(kept_log(root.path(), "chatty.log")).unwrap();
    assert!(
        current.contains("line-399-"),
        "the newest lines are in the current file"
    );
}

/// The hint path end to end: a real boot server (in-process) answers the
/// supervisor's check-in with `check_updates` (staff ran `node
/// update-now`); the supervisor sends SIGUSR1 to the service whose
/// `wake_on` names it, and to no other.
#[test]
fn a_check_now_hint_wakes_the_services_that_asked_for_it() {
    use bootserver::admin::{Admin, ConfigUrls, InitOptions, NewNode, NodeConfigFormat, NodeRef};
    if !can_unshare() {
        eprintln!("SKIP: unshare of PID/mount namespaces is not permitted here (needs root)");
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server_dir = tempfile::tempdir().unwrap();
    let workdir = server_dir.path().join("server");
    let admin = Admin::init(
        &workdir,
        &InitOptions {
            hosts: vec!["localhost".parse().unwrap()],
            ips: vec![[127, 0, 0, 1].into()],
            listen: ([127, 0, 0, 1], port).into(),
            urls: vec![format!("https://127.0.0.1:{port}").parse().unwrap()],
            site_certificate: None,
        },
    )
    .unwrap();
    admin.add_site(&"testsite".parse().unwrap(), "").unwrap();
    let spec = NewNode::new("testsite".parse().unwrap(), "node1.example.org", None).unwrap();
    let (node, config) = admin.add_node(&spec, &ConfigUrls::FromServer).unwrap();
    let node_toml = server_dir.path().join("node.toml");
    bootserver::admin::files::write_node_config(&node_toml, &config, NodeConfigFormat::NodeToml)
        .unwrap();
    admin
        .set_boot_state(&NodeRef::Id(node.id), config::api::BootState::Boot)
        .unwrap();
    admin.update_now(&NodeRef::Id(node.id)).unwrap();
    let serving = Admin::open(&workdir).unwrap();
    std::thread::spawn(move || {
        let _ = serving.serve(
            Some(([127, 0, 0, 1], port).into()),
            |_| {},
            std::future::pending(),
        );
    });
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    let marks = tempfile::tempdir().unwrap();
    let root = root_with(&format!(
        "[supervisor]\ncheckin_interval_secs = 60\n\n\
         [[service]]\nname = \"waker\"\ncommand = [\"sh\", \"-c\", \"trap 'echo woken >> {m}/waker' USR1; while :; do sleep 0.1; done\"]\nready_after_secs = 0\nwake_on = [\"check_updates\"]\n\n\
         [[service]]\nname = \"bystander\"\ncommand = [\"sh\", \"-c\", \"echo started >> {m}/bystander; while :; do sleep 0.1; done\"]\nready_after_secs = 0\n",
        m = marks.path().display()
    ));
    let init = env!("CARGO_BIN_EXE_init");
    let p = root.path().join("plnode");
    let script = format!(
        "mount -t tmpfs scratch {p} && mkdir -p {p}/log {p}/trust && cp {toml} {p}/node.toml && cp {ca} {p}/trust/ca.pem && \
         {init} supervisor --root {r} --checkin > {r}/console.txt 2>&1 & pid=$!; sleep 6; kill -TERM $pid; wait $pid",
        p = p.display(),
        r = root.path().display(),
        toml = node_toml.display(),
        ca = workdir.join("ca/ca.pem").display(),
    );
    let out = Command::new("unshare")
        .args(["-m", "-p", "-f", "--mount-proc", "sh", "-c", &script])
        .output()
        .unwrap();
    let console = std::fs::read_to_string(root.path().join("console.txt")).unwrap_or_default();
    assert!(
        out.status.success(),
        "{} {console}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(console.contains("@step supervisor/checkin ok"), "{console}");
    assert!(
        console.contains("the boot server hints check_updates: waking waker"),
        "{console}"
    );
    let woken = std::fs::read_to_string(marks.path().join("waker")).unwrap_or_default();
    assert_eq!(woken.trim(), "woken", "woken once: {console}");
    let started = std::fs::read_to_string(marks.path().join("bystander")).unwrap_or_default();
    assert_eq!(
        started.lines().count(),
        1,
        "the bystander was not signalled (SIGUSR1 would have ended it): {console}"
    );
}
