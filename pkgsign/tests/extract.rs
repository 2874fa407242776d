//! Hostile archives through the whole install pipeline: every escape is
//! refused, nothing is written outside the target, and the old tree stays.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::SystemTime;

use common::*;
use pkgsign::fetch::DirFetcher;
use pkgsign::install::{self, InstallError, InstallOptions};
use pkgsign::verify::Verifier;
use sha2::{Digest, Sha256};

struct Case {
    fx: Fixture,
}

impl Case {
    /// A repository whose package `base` v1 is installed on the node.
    fn new() -> Case {
        let fx = Fixture::new();
        fx.add("base", "1", &sample_package("old"), false);
        fx.publish();
        let case = Case { fx };
        case.install("base").unwrap();
        case
    }

    fn install(&self, name: &str) -> Result<install::InstallReport, InstallError> {
        let fetcher = DirFetcher::new(self.fx.repo_dir());
        let mut verifier =
            Verifier::open(&self.fx.path("node/state"), &self.fx.initial_root()).unwrap();
        let repo = verifier.update(&fetcher, SystemTime::now()).unwrap();
        let packages = repo.packages(&[name]).unwrap();
        install::install(
            &fetcher,
            &packages,
            &self.fx.path("node/target"),
            &InstallOptions::default(),
        )
    }

    /// Publishes `archive` as package `name` and installs it, expecting a refusal
    /// whose message contains `expected`; checks nothing changed.
    fn refused(&self, name: &str, archive: &[u8], base_image: bool, expected: &str) {
        self.fx.add(name, "1", archive, base_image);
        self.fx.publish();
        let before = snapshot_tree(&self.fx.path("node"));
        let err = self
            .install(name)
            .expect_err("hostile archive was accepted");
        let text = err.to_string();
        assert!(text.contains(expected), "expected {expected:?} in: {text}");
        let after = snapshot_tree(&self.fx.path("node"));
        // The verifier state may record the new metadata version (update
        // committed above); the target tree and its neighbours must not change.
        let strip = |m: std::collections::BTreeMap<String, String>| {
            m.into_iter()
                .filter(|(k, _)| !k.starts_with("state"))
                .collect::<std::collections::BTreeMap<_, _>>()
        };
        assert_eq!(
            strip(after),
            strip(before),
            "target changed after a refused install"
        );
        assert!(
            !self.fx.path("evil").exists(),
            "something was written outside the target"
        );
        assert_eq!(
            fs::read(self.fx.path("node/target/etc/motd")).unwrap(),
            b"old"
        );
    }
}

#[test]
fn dot_dot_paths_are_refused() {
    let case = Case::new();
    case.refused(
        "p1",
        &targz(&[Item::File("../evil", b"x", 0o644)]),
        true,
        "path contains `..`",
    );
    case.refused(
        "p2",
        &targz(&[Item::File("a/../../evil", b"x", 0o644)]),
        true,
        "path contains `..`",
    );
}

#[test]
fn absolute_paths_are_refused() {
    let case = Case::new();
    let target = case.fx.path("evil");
    case.refused(
        "p",
        &targz(&[Item::File(target.to_str().unwrap(), b"x", 0o644)]),
        true,
        "absolute path",
    );
}

#[test]
fn symlinks_leading_outside_are_refused() {
    let case = Case::new();
    case.refused(
        "p1",
        &targz(&[Item::Symlink("link", "../evil")]),
        false,
        "leads outside the tree",
    );
    case.refused(
        "p2",
        &targz(&[Item::Dir("a", 0o755), Item::Symlink("a/l", "../../evil")]),
        true,
        "outside",
    );
    case.refused(
        "p3",
        &targz(&[Item::Symlink("l", "a/../../evil")]),
        true,
        "`..` after a name",
    );
    case.refused(
        "p4",
        &targz(&[Item::Symlink("l", "/etc/passwd")]),
        false,
        "absolute symlink",
    );
}

#[test]
fn writing_through_a_symlink_is_refused() {
    let case = Case::new();
    let outside = case.fx.path("outside-dir");
    fs::create_dir_all(&outside).unwrap();
    let absolute = outside.to_str().unwrap().to_string();
    // Base images may hold absolute symlinks, but nothing is written through one.
    case.refused(
        "p1",
        &targz(&[
            Item::Symlink("d", &absolute),
            Item::File("d/owned", b"x", 0o644),
        ]),
        true,
        "would write through symlink d",
    );
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
    fs::remove_dir(&outside).unwrap();
    // Not even through a link that stays inside.
    case.refused(
        "p2",
        &targz(&[
            Item::Dir("real", 0o755),
            Item::Symlink("d", "real"),
            Item::File("d/f", b"x", 0o644),
        ]),
        false,
        "would write through symlink d",
    );
    // A later entry replacing a file by a symlink does not redirect writes either.
    case.refused(
        "p3",
        &targz(&[
            Item::File("f", b"x", 0o644),
            Item::Symlink("f", "real"),
            Item::File("f/x", b"x", 0o644),
        ]),
        false,
        "would write through symlink f",
    );
}

#[test]
fn hard_links_outside_are_refused() {
    let case = Case::new();
    case.refused(
        "p1",
        &targz(&[Item::HardLink("h", "../evil")]),
        false,
        "path contains `..`",
    );
    case.refused(
        "p2",
        &targz(&[Item::HardLink("h", "/etc/passwd")]),
        true,
        "absolute path",
    );
    case.refused(
        "p3",
        &targz(&[Item::Symlink("s", "x"), Item::HardLink("h", "s")]),
        false,
        "hard link target is not a regular file",
    );
    case.refused(
        "p4",
        &targz(&[Item::HardLink("h", "missing")]),
        false,
        "not in the archive before it",
    );
    case.refused(
        "p5",
        &targz(&[Item::File("h", b"x", 0o644), Item::HardLink("h", "h")]),
        false,
        "hard link to itself",
    );
}

#[test]
fn device_nodes_fifos_and_setuid_need_a_base_image() {
    let case = Case::new();
    case.refused(
        "p1",
        &targz(&[Item::CharDevice("null", 1, 3)]),
        false,
        "device node or FIFO",
    );
    case.refused(
        "p2",
        &targz(&[Item::Fifo("fifo")]),
        false,
        "device node or FIFO",
    );
    case.refused(
        "p3",
        &targz(&[Item::File("su", b"x", 0o4755)]),
        false,
        "setuid/setgid",
    );
    case.refused(
        "p4",
        &targz(&[Item::Dir("d", 0o2775)]),
        false,
        "setuid/setgid",
    );
}

#[test]
fn directory_cannot_be_replaced_by_a_file() {
    let case = Case::new();
    case.refused(
        "p",
        &targz(&[Item::Dir("d", 0o755), Item::File("d", b"x", 0o644)]),
        false,
        "would replace a directory",
    );
}

#[test]
fn later_entries_replace_earlier_ones() {
    let case = Case::new();
    case.fx.add(
        "p",
        "1",
        &targz(&[
            Item::File("f", b"first", 0o644),
            Item::File("f", b"second", 0o600),
            Item::Symlink("s", "f"),
            Item::File("s", b"no longer a link", 0o644),
            Item::File("x", b"a file first", 0o644),
            Item::Dir("x", 0o750),
            Item::Dir("x", 0o755),
            Item::File("x/inside", b"in", 0o644),
            Item::File("h", b"linked", 0o644),
            Item::HardLink("g", "h"),
            Item::Symlink("g", "h"),
        ]),
        false,
    );
    case.fx.publish();
    let report = case.install("p").unwrap();
    let target = case.fx.path("node/target");
    assert_eq!(fs::read(target.join("f")).unwrap(), b"second");
    assert_eq!(
        fs::metadata(target.join("f")).unwrap().permissions().mode() & 0o7777,
        0o600
    );
    assert!(fs::symlink_metadata(target.join("s"))
        .unwrap()
        .file_type()
        .is_file());
    assert_eq!(fs::read(target.join("s")).unwrap(), b"no longer a link");
    assert!(fs::metadata(target.join("x")).unwrap().is_dir());
    assert_eq!(fs::read(target.join("x/inside")).unwrap(), b"in");
    assert_eq!(fs::read_link(target.join("g")).unwrap(), Path::new("h"));
    install::verify_tree(&target, &report.manifest, true).unwrap();
}

/// Deterministic bytes that do not compress.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

#[test]
fn many_small_files_and_large_ones_arrive_intact() {
    let case = Case::new();
    let small: Vec<(String, Vec<u8>)> = (0..700)
        .map(|i| {
            (
                format!("d{}/f{i}", i % 7),
                noise(i, 100 + (i as usize * 37) % 3000),
            )
        })
        .collect();
    let large = noise(7, 3 << 20);
    let mut items = vec![Item::File("large", &large, 0o644)];
    for (name, data) in &small {
        items.push(Item::File(name, data, 0o644));
    }
    items.push(Item::HardLink("large-again", "large"));
    items.push(Item::HardLink("last-small-again", "d6/f699"));
    items.push(Item::File("after", b"the end", 0o444));
    let archive = targz(&items);
    case.fx.add("p", "1", &archive, false);
    case.fx.publish();
    let fetcher = DirFetcher::new(case.fx.repo_dir());
    let mut verifier =
        Verifier::open(&case.fx.path("node/state"), &case.fx.initial_root()).unwrap();
    let repo = verifier.update(&fetcher, SystemTime::now()).unwrap();
    let packages = repo.packages(&["p"]).unwrap();
    let seen = std::sync::Mutex::new(Vec::new());
    let progress = |p: install::Progress| seen.lock().unwrap().push(p);
    let options = InstallOptions {
        into_subdirs: false,
        progress: Some(&progress),
    };
    let target = case.fx.path("node/target");
    let report = install::install(&fetcher, &packages, &target, &options).unwrap();
    for (name, data) in &small {
        assert_eq!(&fs::read(target.join(name)).unwrap(), data, "{name}");
    }
    assert_eq!(fs::read(target.join("large")).unwrap(), large);
    assert_eq!(
        fs::metadata(target.join("large-again")).unwrap().ino(),
        fs::metadata(target.join("large")).unwrap().ino()
    );
    assert_eq!(
        fs::read(target.join("last-small-again")).unwrap(),
        small[699].1
    );
    assert_eq!(
        fs::metadata(target.join("after"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o444
    );
    assert_eq!(report.entries, 704);
    install::verify_tree(&target, &report.manifest, true).unwrap();
    // Progress counts every byte of the package, the last ones included.
    let seen = seen.into_inner().unwrap();
    let total = archive.len() as u64;
    assert_eq!(seen.last().map(|p| (p.done, p.total)), Some((total, total)));
}

/// Publishes `bytes` as package `name` exactly as they are (signed length
/// and hash included), though `repo add` would refuse them.
fn publish_as_is(case: &Case, name: &str, bytes: &[u8]) {
    case.fx
        .add(name, "1", &targz(&[Item::File("x", b"x", 0o644)]), false);
    let pending_path = case.fx.repo_dir().join("pending.json");
    let mut pending: serde_json::Value =
        serde_json::from_slice(&fs::read(&pending_path).unwrap()).unwrap();
    let info = &mut pending["add"][name];
    let stored = case.fx.repo_dir().join(info["path"].as_str().unwrap());
    fs::write(&stored, bytes).unwrap();
    info["length"] = bytes.len().into();
    info["hashes"]["sha256"] = hex::encode(Sha256::digest(bytes)).into();
    info["unpacked_length"] = (1u64 << 20).into();
    fs::write(&pending_path, serde_json::to_vec(&pending).unwrap()).unwrap();
    case.fx.publish();
}

#[test]
fn a_signed_archive_that_is_not_valid_gzip_is_refused() {
    let case = Case::new();
    let mut archive = targz(&[Item::File("big", &noise(3, 600_000), 0o644)]);
    archive.truncate(archive.len() / 2);
    publish_as_is(&case, "p1", &archive);
    let before = snapshot_tree(&case.fx.path("node/target"));
    let err = case.install("p1").unwrap_err();
    assert!(err.to_string().contains("archive is unreadable"), "{err}");
    assert_eq!(snapshot_tree(&case.fx.path("node/target")), before);

    // Damage after the end of the tar archive (a wrong gzip checksum, junk
    // after the gzip member) is hashed with the rest but never unpacked:
    // what the archive holds is installed.
    let mut archive = targz(&[Item::File("f", b"content", 0o644)]);
    let end = archive.len();
    archive[end - 8..end - 4].copy_from_slice(&[0, 0, 0, 0]);
    archive.extend_from_slice(&[0u8; 512]);
    publish_as_is(&case, "p2", &archive);
    case.install("p2").unwrap();
    assert_eq!(fs::read(case.fx.path("node/target/f")).unwrap(), b"content");
}

/// Publishes `archive` with `unpacked_length` overridden in the signed targets.
fn publish_with_unpacked(case: &Case, name: &str, archive: &[u8], unpacked: Option<u64>) {
    case.fx.add(name, "1", archive, false);
    let pending_path = case.fx.repo_dir().join("pending.json");
    let mut pending: serde_json::Value =
        serde_json::from_slice(&fs::read(&pending_path).unwrap()).unwrap();
    match unpacked {
        Some(n) => pending["add"][name]["unpacked_length"] = n.into(),
        None => {
            pending["add"][name]
                .as_object_mut()
                .unwrap()
                .remove("unpacked_length");
        }
    }
    fs::write(&pending_path, serde_json::to_vec(&pending).unwrap()).unwrap();
}

#[test]
fn content_beyond_the_signed_unpacked_length_is_refused() {
    let case = Case::new();
    let archive = targz(&[
        Item::File("a", &[1u8; 1000], 0o644),
        Item::File("b", &[2u8; 1000], 0o644),
    ]);
    publish_with_unpacked(&case, "p", &archive, Some(1500));
    case.fx.publish();
    let before = snapshot_tree(&case.fx.path("node/target"));
    let err = case.install("p").unwrap_err();
    assert!(
        err.to_string().contains("exceeds the limit of 1500 bytes"),
        "{err}"
    );
    assert_eq!(snapshot_tree(&case.fx.path("node/target")), before);
}

#[test]
fn decompression_bomb_hits_the_ratio_cap() {
    let case = Case::new();
    // 64 MiB of zeros compress to ~64 KiB: far beyond 64× the package length.
    let zeros = vec![0u8; 64 << 20];
    let archive = targz(&[Item::File("bomb", &zeros, 0o644)]);
    assert!(archive.len() * 64 < zeros.len());
    publish_with_unpacked(&case, "p", &archive, None);
    case.fx.publish();
    let before = snapshot_tree(&case.fx.path("node/target"));
    let err = case.install("p").unwrap_err();
    assert!(err.to_string().contains("exceeds the limit"), "{err}");
    assert_eq!(snapshot_tree(&case.fx.path("node/target")), before);
}

#[test]
fn base_images_keep_modes_links_and_owners() {
    let case = Case::new();
    let mut tar = tar::Builder::new(Vec::new());
    let mut owned = raw_header(b"home/user/file", tar::EntryType::Regular, 0o640, 2, b"");
    owned.set_uid(1234);
    owned.set_gid(4321);
    owned.set_cksum();
    for (header, data) in [
        (
            raw_header(b"home", tar::EntryType::Directory, 0o755, 0, b""),
            &b""[..],
        ),
        (
            raw_header(b"home/user", tar::EntryType::Directory, 0o700, 0, b""),
            &b""[..],
        ),
        (owned, &b"hi"[..]),
        (
            raw_header(b"bin/su", tar::EntryType::Regular, 0o4755, 2, b""),
            &b"su"[..],
        ),
        (
            raw_header(b"lib64", tar::EntryType::Symlink, 0o777, 0, b"/usr/lib"),
            &b""[..],
        ),
        (
            raw_header(b"bin/also-su", tar::EntryType::Link, 0o4755, 0, b"bin/su"),
            &b""[..],
        ),
        (
            raw_header(b"run/fifo", tar::EntryType::Fifo, 0o600, 0, b""),
            &b""[..],
        ),
    ] {
        tar.append(&header, data).unwrap();
    }
    case.fx
        .add("image", "1", &gzip(&tar.into_inner().unwrap()), true);
    case.fx.publish();
    let report = case.install("image").unwrap();
    let target = case.fx.path("node/target");
    let mode = |p: &str| {
        fs::symlink_metadata(target.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("bin/su"), 0o4755);
    assert_eq!(mode("home/user"), 0o700);
    assert_eq!(mode("home/user/file"), 0o640);
    assert_eq!(
        fs::read_link(target.join("lib64")).unwrap(),
        Path::new("/usr/lib")
    );
    assert_eq!(
        fs::metadata(target.join("bin/also-su")).unwrap().ino(),
        fs::metadata(target.join("bin/su")).unwrap().ino()
    );
    assert!(fs::symlink_metadata(target.join("run/fifo"))
        .unwrap()
        .file_type()
        .is_fifo_like());
    if is_root() {
        let meta = fs::metadata(target.join("home/user/file")).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (1234, 4321));
    } else {
        eprintln!("SKIP ownership check: not running as root");
    }
    // The manifest describes the tree, and a change to it is found.
    install::verify_tree(&target, &report.manifest, true).unwrap();
    fs::write(target.join("bin/su"), b"SU").unwrap();
    assert!(
        install::verify_tree(&target, &report.manifest, false).is_ok(),
        "same size and mode: cheap check passes"
    );
    let err = install::verify_tree(&target, &report.manifest, true).unwrap_err();
    assert!(err.to_string().contains("content differs"), "{err}");
    fs::set_permissions(target.join("bin/su"), fs::Permissions::from_mode(0o755)).unwrap();
    assert!(install::verify_tree(&target, &report.manifest, false)
        .unwrap_err()
        .to_string()
        .contains("mode"));
}

#[test]
fn device_nodes_are_created_for_base_images_as_root() {
    if !is_root() {
        eprintln!("SKIP device_nodes_are_created_for_base_images_as_root: mknod needs root");
        return;
    }
    let case = Case::new();
    case.fx.add(
        "dev",
        "1",
        &targz(&[Item::Dir("dev", 0o755), Item::CharDevice("dev/null", 1, 3)]),
        true,
    );
    case.fx.publish();
    let report = case.install("dev").unwrap();
    let meta = fs::symlink_metadata(case.fx.path("node/target/dev/null")).unwrap();
    use std::os::unix::fs::FileTypeExt;
    assert!(meta.file_type().is_char_device());
    assert_eq!(meta.rdev(), libc::makedev(1, 3));
    install::verify_tree(&case.fx.path("node/target"), &report.manifest, true).unwrap();
}

#[test]
fn several_packages_into_subdirectories_replace_the_old_tree_atomically() {
    let case = Case::new();
    case.fx.add(
        "kernel",
        "1",
        &targz(&[Item::File("vmlinuz", b"kernel", 0o644)]),
        false,
    );
    case.fx.add("root", "1", &sample_package("new"), false);
    case.fx.publish();
    let fetcher = DirFetcher::new(case.fx.repo_dir());
    let mut verifier =
        Verifier::open(&case.fx.path("node/state"), &case.fx.initial_root()).unwrap();
    let repo = verifier.update(&fetcher, SystemTime::now()).unwrap();
    let packages = repo.packages(&["kernel", "root"]).unwrap();
    let seen = std::sync::Mutex::new(Vec::new());
    let progress = |p: install::Progress| seen.lock().unwrap().push(p);
    let options = InstallOptions {
        into_subdirs: true,
        progress: Some(&progress),
    };
    let dest = case.fx.path("node/target");
    let report = install::install(&fetcher, &packages, &dest, &options).unwrap();
    assert_eq!(fs::read(dest.join("kernel/vmlinuz")).unwrap(), b"kernel");
    assert_eq!(fs::read(dest.join("root/etc/motd")).unwrap(), b"new");
    assert!(!dest.join("etc").exists(), "the old tree is gone");
    let seen = seen.into_inner().unwrap();
    let total: u64 = packages.iter().map(|p| p.info().length).sum();
    assert_eq!(seen.last().map(|p| (p.done, p.total)), Some((total, total)));
    install::verify_tree(&dest, &report.manifest, true).unwrap();
    let leftovers: Vec<_> = fs::read_dir(case.fx.path("node"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("staging"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

trait FifoLike {
    fn is_fifo_like(&self) -> bool;
}
impl FifoLike for fs::FileType {
    fn is_fifo_like(&self) -> bool {
        use std::os::unix::fs::FileTypeExt;
        self.is_fifo()
    }
}
