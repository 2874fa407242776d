//! The `pkgsign` command: the staff's and the node's flows end to end, exit
//! codes, one-line errors, and an install killed midway.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::server::{Knob, Pki, TestServer};
use common::*;

fn pkgsign(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pkgsign"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap()
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = pkgsign(dir, args);
    assert!(
        out.status.success(),
        "pkgsign {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a command expected to fail; returns its one-line error.
fn fails(dir: &Path, args: &[&str]) -> String {
    let out = pkgsign(dir, args);
    assert_eq!(out.status.code(), Some(1), "pkgsign {args:?} should fail");
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<_> = stderr.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(lines.len(), 1, "one error line expected: {stderr}");
    lines[0].to_string()
}

/// Keys and a published repository made with the CLI.
fn staff_repo(dir: &Path) {
    for key in ["root", "targets", "snapshot", "timestamp"] {
        ok(dir, &["keygen", "--out", key]);
    }
    ok(
        dir,
        &[
            "repo",
            "init",
            "repo",
            "--root-key",
            "root.pub",
            "--targets-key",
            "targets.pub",
            "--snapshot-key",
            "snapshot.pub",
            "--timestamp-key",
            "timestamp.pub",
            "--key",
            "root",
        ],
    );
    fs::write(dir.join("pkg.tar.gz"), sample_package("cli")).unwrap();
    ok(
        dir,
        &[
            "repo",
            "add",
            "repo",
            "pkg.tar.gz",
            "--name",
            "base",
            "--version",
            "1.0",
            "--custom",
            "channel=stable",
        ],
    );
    let out = ok(
        dir,
        &[
            "repo",
            "publish",
            "repo",
            "--key",
            "targets",
            "--key",
            "snapshot",
            "--key",
            "timestamp",
        ],
    );
    assert!(
        out.contains("published targets v1, snapshot v1, timestamp v1: 1 package(s)"),
        "{out}"
    );
}

#[test]
fn keygen_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    ok(dir.path(), &["keygen", "--out", "k"]);
    let before = fs::read(dir.path().join("k")).unwrap();
    let err = fails(dir.path(), &["keygen", "--out", "k"]);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(fs::read(dir.path().join("k")).unwrap(), before);
}

#[test]
fn staff_publish_and_node_install() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    staff_repo(d);
    let out = ok(
        d,
        &[
            "verify",
            "repo",
            "--root",
            "repo/metadata/1.root.json",
            "--state",
            "state",
        ],
    );
    assert!(out.contains("base 1.0"), "{out}");
    ok(
        d,
        &[
            "install",
            "repo",
            "--root",
            "repo/metadata/1.root.json",
            "--state",
            "state",
            "--target",
            "rootfs",
            "--manifest",
            "m.json",
            "base",
        ],
    );
    assert_eq!(fs::read(d.join("rootfs/etc/motd")).unwrap(), b"cli");
    let out = ok(
        d,
        &["verify-tree", "rootfs", "--manifest", "m.json", "--full"],
    );
    assert!(out.contains("match the manifest"), "{out}");
    fs::write(d.join("rootfs/etc/motd"), b"CLI").unwrap();
    let err = fails(
        d,
        &["verify-tree", "rootfs", "--manifest", "m.json", "--full"],
    );
    assert!(err.contains("etc/motd: content differs"), "{err}");

    // Staff refresh the timestamp and rotate the root; the node follows.
    ok(
        d,
        &[
            "repo",
            "timestamp",
            "repo",
            "--key",
            "timestamp",
            "--expires",
            "2h",
        ],
    );
    ok(d, &["keygen", "--out", "root2"]);
    let out = ok(
        d,
        &[
            "repo",
            "rotate-root",
            "repo",
            "--root-key",
            "root2.pub",
            "--key",
            "root",
            "--key",
            "root2",
        ],
    );
    assert!(out.contains("root v2"), "{out}");
    let out = ok(
        d,
        &[
            "verify",
            "repo",
            "--root",
            "repo/metadata/1.root.json",
            "--state",
            "state",
        ],
    );
    assert!(out.contains("root v2, timestamp v2"), "{out}");
    let shown = ok(d, &["repo", "show", "repo"]);
    assert!(
        shown.contains("root v2") && shown.contains("base 1.0"),
        "{shown}"
    );
    let inspected = ok(d, &["inspect", "repo/metadata/timestamp.json"]);
    assert!(inspected.starts_with("timestamp v2"), "{inspected}");
}

#[test]
fn failures_are_one_line_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    staff_repo(d);
    ok(
        d,
        &[
            "install",
            "repo",
            "--root",
            "repo/metadata/1.root.json",
            "--state",
            "state",
            "--target",
            "rootfs",
            "base",
        ],
    );
    let before = snapshot_tree(d);
    let err = fails(
        d,
        &[
            "install",
            "repo",
            "--root",
            "repo/metadata/1.root.json",
            "--state",
            "state",
            "--target",
            "rootfs",
            "nope",
        ],
    );
    assert!(err.contains("no package \"nope\""), "{err}");
    let err = fails(d, &["repo", "publish", "repo", "--key", "targets"]);
    assert!(
        err.contains("snapshot: 0 of the given keys belong to the role; threshold is 1"),
        "{err}"
    );
    // A root from another repository is not the root of this one.
    let other = tempfile::tempdir().unwrap();
    staff_repo(other.path());
    let foreign_root = other.path().join("repo/metadata/1.root.json");
    let err = fails(
        d,
        &[
            "verify",
            "repo",
            "--root",
            foreign_root.to_str().unwrap(),
            "--state",
            "state2",
        ],
    );
    assert!(err.contains("valid signature"), "{err}");
    let err = fails(
        d,
        &[
            "verify",
            "https://127.0.0.1:9/repo",
            "--root",
            "repo/metadata/1.root.json",
            "--state",
            "s3",
        ],
    );
    assert!(err.contains("--ca is required"), "{err}");
    assert_eq!(snapshot_tree(d), before);
}

#[test]
fn detached_signatures() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(d, &["keygen", "--out", "release"]);
    ok(d, &["keygen", "--out", "other"]);
    fs::write(d.join("image.iso"), vec![42u8; 3 << 20]).unwrap();
    ok(d, &["sign-file", "image.iso", "--key", "release"]);
    let out = ok(d, &["verify-file", "image.iso", "--key", "release.pub"]);
    assert!(out.contains("signature OK"));
    let err = fails(d, &["verify-file", "image.iso", "--key", "other.pub"]);
    assert!(err.contains("not trusted"), "{err}");
    let mut bytes = fs::read(d.join("image.iso")).unwrap();
    bytes[1000] ^= 1;
    fs::write(d.join("image.iso"), bytes).unwrap();
    let err = fails(d, &["verify-file", "image.iso", "--key", "release.pub"]);
    assert!(err.contains("sha256"), "{err}");
}

/// A package of many files, large enough that the install is mid-extraction
/// when the server stalls.
fn many_files_package() -> Vec<u8> {
    let mut data: Vec<(String, Vec<u8>)> = Vec::new();
    let mut x: u32 = 7;
    for i in 0..300 {
        let mut content = Vec::with_capacity(16 * 1024);
        for _ in 0..16 * 1024 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            content.push((x >> 16) as u8);
        }
        data.push((format!("files/f{i:03}"), content));
    }
    let mut items = vec![Item::Dir("files", 0o755)];
    items.extend(data.iter().map(|(n, c)| Item::File(n, c, 0o644)));
    targz(&items)
}

fn staging_dirs(parent: &Path) -> Vec<PathBuf> {
    fs::read_dir(parent)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .contains(".staging-")
        })
        .collect()
}

#[test]
fn install_killed_midway_leaves_the_old_tree() {
    let fx = Fixture::new();
    fx.add("base", "1", &sample_package("old"), false);
    fx.publish();
    let node = fx.path("node");
    fs::create_dir_all(&node).unwrap();
    let pki = Pki::new("CA");
    fs::write(node.join("ca.pem"), &pki.ca_pem).unwrap();
    fs::write(node.join("root.json"), fx.initial_root()).unwrap();
    let server = TestServer::start(fx.repo_dir(), pki.leaf());
    let url = server.base_url();
    let args = |pkg: &str| -> Vec<String> {
        [
            "install",
            &url,
            "--root",
            "root.json",
            "--state",
            "state",
            "--ca",
            "ca.pem",
            "--target",
            "target",
            "--manifest",
            "old.json",
            pkg,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let out = Command::new(env!("CARGO_BIN_EXE_pkgsign"))
        .current_dir(&node)
        .args(args("base"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let old_target = snapshot_tree(&node.join("target"));

    fx.add("base", "2", &many_files_package(), false);
    fx.publish();
    let package_path = {
        let text = fs::read_to_string(fx.metadata("2.targets.json")).unwrap();
        let start = text.find("targets/").unwrap();
        text[start..].split('"').next().unwrap().to_string()
    };
    // Half the package arrives, then the server goes silent.
    server.set_knob(&package_path, Knob::StallAfter(2_500_000));
    let mut child = Command::new(env!("CARGO_BIN_EXE_pkgsign"))
        .current_dir(&node)
        .args(args("base"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until extraction has written files into the staging directory.
    let mut midway = false;
    for _ in 0..3000 {
        if let Some(staging) = staging_dirs(&node).first() {
            let files = staging.join("files");
            if files.is_dir() && fs::read_dir(&files).map(|d| d.count()).unwrap_or(0) > 50 {
                midway = true;
                break;
            }
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(midway, "the install never reached the middle of extraction");
    // SAFETY: plain kill(2) of our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGKILL) }, 0);
    child.wait().unwrap();
    assert_eq!(
        snapshot_tree(&node.join("target")),
        old_target,
        "the old tree must be intact"
    );
    assert_eq!(
        staging_dirs(&node).len(),
        1,
        "the killed install left its staging directory"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_pkgsign"))
        .current_dir(&node)
        .args(["verify-tree", "target", "--manifest", "old.json", "--full"])
        .output()
        .unwrap();
    assert!(out.status.success());

    // The next install completes and clears the leftovers.
    server.clear_knobs();
    let out = Command::new(env!("CARGO_BIN_EXE_pkgsign"))
        .current_dir(&node)
        .args(args("base"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        fs::read_dir(node.join("target/files")).unwrap().count(),
        300
    );
    assert!(staging_dirs(&node).is_empty());
}
