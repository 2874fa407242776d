//! The checked-in adversarial fixtures of `tests/data/` (made by
//! `cargo run -p pkgsign --example make-attack-fixtures`): each is refused
//! for its own reason, with the node's state and install directory
//! unchanged, while the clean ones are accepted. Every fixture on disk must
//! be listed here, and every one listed must be on disk.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use common::snapshot_tree;
use pkgsign::canonical::ParseError;
use pkgsign::fetch::{DirFetcher, FetchError};
use pkgsign::install::{
    self, extract_tar, ExtractError, ExtractPolicy, InstallError, InstallOptions, Manifest,
};
use pkgsign::metadata::{Envelope, MetadataError, Role, RoleType, Root, Targets, Timestamp};
use pkgsign::verified::Mismatch;
use pkgsign::verify::{Verifier, VerifyError};

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// What a repository scenario must do.
enum Outcome {
    /// The metadata is accepted and package `base` installs.
    Accepted,
    /// The update is refused.
    Refused(fn(&VerifyError) -> bool),
    /// The metadata is accepted; installing package `base` is refused.
    InstallRefused(fn(&InstallError) -> bool),
}

const SCENARIOS: &[(&str, Outcome)] = &[
    ("clean", Outcome::Accepted),
    (
        "rollback-timestamp",
        Outcome::Refused(|e| {
            matches!(e, VerifyError::Rollback { what, trusted: 2, offered: 1 }
                if what == "metadata/timestamp.json")
        }),
    ),
    (
        "rollback-snapshot",
        Outcome::Refused(|e| {
            matches!(e, VerifyError::Rollback { what, trusted: 2, offered: 1 }
                if what == "snapshot version in timestamp")
        }),
    ),
    (
        "rollback-targets",
        Outcome::Refused(|e| {
            matches!(e, VerifyError::Rollback { what, trusted: 2, offered: 1 }
                if what == "targets version in snapshot")
        }),
    ),
    (
        "freeze-expired-timestamp",
        Outcome::Refused(|e| {
            matches!(
                e,
                VerifyError::Expired {
                    role: RoleType::Timestamp,
                    ..
                }
            )
        }),
    ),
    (
        "freeze-expired-root",
        Outcome::Refused(|e| {
            matches!(
                e,
                VerifyError::Expired {
                    role: RoleType::Root,
                    ..
                }
            )
        }),
    ),
    (
        "mix-and-match-snapshot",
        Outcome::Refused(
            |e| matches!(e, VerifyError::WrongHash { what, .. } if what == "metadata/2.snapshot.json"),
        ),
    ),
    (
        "mix-and-match-targets",
        Outcome::Refused(
            |e| matches!(e, VerifyError::WrongHash { what, .. } if what == "metadata/2.targets.json"),
        ),
    ),
    (
        "arbitrary-package-swapped-target",
        Outcome::InstallRefused(|e| {
            matches!(
                e,
                InstallError::Mismatch {
                    source: Mismatch::WrongHash { .. },
                    ..
                }
            )
        }),
    ),
    (
        "arbitrary-package-bit-flip",
        Outcome::InstallRefused(|e| {
            matches!(
                e,
                InstallError::Mismatch {
                    source: Mismatch::WrongHash { .. },
                    ..
                }
            )
        }),
    ),
    (
        "endless-data-timestamp",
        Outcome::Refused(|e| {
            matches!(
                e,
                VerifyError::Fetch {
                    source: FetchError::TooLong { limit: 16384, .. },
                    ..
                }
            )
        }),
    ),
    (
        "endless-data-targets",
        Outcome::Refused(|e| {
            matches!(e, VerifyError::Fetch { what, source: FetchError::TooLong { .. } }
                if what == "metadata/1.targets.json")
        }),
    ),
    (
        "endless-data-package",
        Outcome::InstallRefused(|e| {
            matches!(
                e,
                InstallError::Fetch {
                    source: FetchError::TooLong { .. },
                    ..
                }
            )
        }),
    ),
    (
        "unpacked-length-understated",
        Outcome::InstallRefused(|e| {
            matches!(
                e,
                InstallError::Extract {
                    source: ExtractError::TooLarge { limit: 1500 },
                    ..
                }
            )
        }),
    ),
    (
        "threshold-one-of-two-signatures",
        Outcome::Refused(|e| {
            matches!(
                e,
                VerifyError::Metadata {
                    source: MetadataError::Threshold {
                        role: RoleType::Targets,
                        valid: 1,
                        threshold: 2
                    },
                    ..
                }
            )
        }),
    ),
    (
        "threshold-duplicate-signatures",
        Outcome::Refused(|e| {
            matches!(
                e,
                VerifyError::Metadata {
                    source: MetadataError::Threshold {
                        role: RoleType::Targets,
                        valid: 1,
                        threshold: 2
                    },
                    ..
                }
            )
        }),
    ),
    (
        "root-rotation-unsigned-by-old",
        Outcome::Refused(|e| {
            matches!(e, VerifyError::Metadata {
                what,
                source: MetadataError::Invalid { role: RoleType::Root, reason },
            } if what == "metadata/2.root.json"
                && reason.contains("signed by 1 of the previous root's keys; 2 required"))
        }),
    ),
    (
        "root-rotation-version-skip",
        Outcome::Refused(|e| {
            matches!(
                e,
                VerifyError::WrongVersion {
                    expected: 2,
                    found: 3,
                    ..
                }
            )
        }),
    ),
];

/// Reads a document as one role (without signatures).
type DocumentCheck = fn(&[u8]) -> Result<(), MetadataError>;
/// Whether a refusal is the one expected.
type MetadataReason = fn(&MetadataError) -> bool;

fn decode_as<T: Role>(bytes: &[u8]) -> Result<(), MetadataError> {
    Envelope::parse(bytes)?.decode::<T>().map(drop)
}

/// Single documents: the role they are read as, and why they are refused.
const DOCUMENTS: &[(&str, DocumentCheck, MetadataReason)] = &[
    (
        "duplicate-json-keys.json",
        decode_as::<Timestamp>,
        |e| matches!(e, MetadataError::Parse(ParseError { reason, .. }) if reason.contains("duplicate key")),
    ),
    (
        "float-in-metadata.json",
        decode_as::<Timestamp>,
        |e| matches!(e, MetadataError::Parse(ParseError { reason, .. }) if reason.contains("floating-point")),
    ),
    (
        "nesting-too-deep.json",
        decode_as::<Timestamp>,
        |e| matches!(e, MetadataError::Parse(ParseError { reason, .. }) if reason.contains("nested too deeply")),
    ),
    (
        "envelope-extra-field.json",
        decode_as::<Timestamp>,
        |e| matches!(e, MetadataError::Shape(reason) if reason.contains("\"comment\"")),
    ),
    (
        "targets-path-escapes-repository.json",
        decode_as::<Targets>,
        |e| {
            matches!(e, MetadataError::Invalid { role: RoleType::Targets, reason }
                if reason.contains("bad path"))
        },
    ),
    (
        "targets-unknown-hash-algorithm.json",
        decode_as::<Targets>,
        |e| {
            matches!(e, MetadataError::Decode { role: RoleType::Targets, reason }
                if reason.contains("md5"))
        },
    ),
    ("root-threshold-zero.json", decode_as::<Root>, |e| {
        matches!(e, MetadataError::Invalid { role: RoleType::Root, reason }
            if reason.contains("threshold 0"))
    }),
];

/// Why an archive is refused.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    /// `ExtractError::Unsafe` whose reason contains this.
    Unsafe(&'static str),
    /// `ExtractError::TooLarge`.
    TooLarge,
}

impl Refusal {
    fn matches(self, e: &ExtractError) -> bool {
        match self {
            Refusal::Unsafe(why) => {
                matches!(e, ExtractError::Unsafe { reason, .. } if reason.contains(why))
            }
            Refusal::TooLarge => matches!(e, ExtractError::TooLarge { .. }),
        }
    }
}

/// Archives: why an ordinary package is refused, and why a base image is
/// (`None`: base images may hold it).
const ARCHIVES: &[(&str, Refusal, Option<Refusal>)] = &[
    (
        "tar-dotdot.tar.gz",
        Refusal::Unsafe("path contains `..`"),
        Some(Refusal::Unsafe("path contains `..`")),
    ),
    (
        "tar-absolute-path.tar.gz",
        Refusal::Unsafe("absolute path"),
        Some(Refusal::Unsafe("absolute path")),
    ),
    (
        "tar-symlink-escape.tar.gz",
        Refusal::Unsafe("leads outside the tree"),
        Some(Refusal::Unsafe("leads outside the tree")),
    ),
    (
        "tar-symlink-absolute.tar.gz",
        Refusal::Unsafe("absolute symlink"),
        None,
    ),
    (
        "tar-symlink-dotdot-after-name.tar.gz",
        Refusal::Unsafe("`..` after a name"),
        Some(Refusal::Unsafe("`..` after a name")),
    ),
    (
        "tar-write-through-symlink-inside.tar.gz",
        Refusal::Unsafe("would write through symlink d"),
        Some(Refusal::Unsafe("would write through symlink d")),
    ),
    (
        "tar-file-replaced-by-symlink.tar.gz",
        Refusal::Unsafe("would write through symlink f"),
        Some(Refusal::Unsafe("would write through symlink f")),
    ),
    (
        "tar-hardlink-to-missing-file.tar.gz",
        Refusal::Unsafe("not in the archive before it"),
        Some(Refusal::Unsafe("not in the archive before it")),
    ),
    (
        "tar-setgid-directory.tar.gz",
        Refusal::Unsafe("setuid/setgid"),
        None,
    ),
    (
        "tar-write-through-symlink.tar.gz",
        Refusal::Unsafe("absolute symlink"),
        Some(Refusal::Unsafe("would write through symlink d")),
    ),
    (
        "tar-hardlink-escape.tar.gz",
        Refusal::Unsafe("hard link target: path contains `..`"),
        Some(Refusal::Unsafe("hard link target: path contains `..`")),
    ),
    (
        "tar-hardlink-absolute.tar.gz",
        Refusal::Unsafe("hard link target: absolute path"),
        Some(Refusal::Unsafe("hard link target: absolute path")),
    ),
    (
        "tar-hardlink-to-symlink.tar.gz",
        Refusal::Unsafe("hard link target is not a regular file"),
        Some(Refusal::Unsafe("hard link target is not a regular file")),
    ),
    (
        "tar-device-node.tar.gz",
        Refusal::Unsafe("device node or FIFO"),
        None,
    ),
    (
        "tar-fifo.tar.gz",
        Refusal::Unsafe("device node or FIFO"),
        None,
    ),
    ("tar-setuid.tar.gz", Refusal::Unsafe("setuid/setgid"), None),
    (
        "tar-directory-replaced-by-file.tar.gz",
        Refusal::Unsafe("would replace a directory"),
        Some(Refusal::Unsafe("would replace a directory")),
    ),
    (
        "gzip-bomb.tar.gz",
        Refusal::TooLarge,
        Some(Refusal::TooLarge),
    ),
];

/// The node's side of a scenario: a copy of its trusted state, an install
/// directory holding an earlier tree, and the repository served read-only
/// from the fixture.
struct Node {
    dir: tempfile::TempDir,
    repo: PathBuf,
    initial_root: Vec<u8>,
}

impl Node {
    fn new(fixture: &Path) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let trusted = fixture.join("trusted");
        fs::create_dir_all(dir.path().join("state")).unwrap();
        if trusted.is_dir() {
            for entry in fs::read_dir(&trusted).unwrap() {
                let entry = entry.unwrap();
                fs::copy(
                    entry.path(),
                    dir.path().join("state").join(entry.file_name()),
                )
                .unwrap();
            }
        }
        fs::create_dir_all(dir.path().join("dest/etc")).unwrap();
        fs::write(dir.path().join("dest/etc/motd"), b"before").unwrap();
        Node {
            repo: fixture.join("repo"),
            initial_root: fs::read(fixture.join("initial-root.json")).unwrap(),
            dir,
        }
    }

    fn verifier(&self) -> Verifier {
        Verifier::open(&self.dir.path().join("state"), &self.initial_root).unwrap()
    }

    fn dest(&self) -> PathBuf {
        self.dir.path().join("dest")
    }
}

#[test]
fn every_scenario_is_refused_for_its_reason_and_changes_nothing() {
    for (name, outcome) in SCENARIOS {
        let fixture = data().join(name);
        let node = Node::new(&fixture);
        let served_before = snapshot_tree(&fixture);
        let node_before = snapshot_tree(node.dir.path());
        let fetcher = DirFetcher::new(&node.repo);
        let mut verifier = node.verifier();
        let checked = verifier.check(&fetcher, SystemTime::now());
        match (outcome, checked) {
            (Outcome::Refused(reason), Err(e)) => {
                assert!(reason(&e), "{name}: refused for another reason: {e:?}");
            }
            (Outcome::Refused(_), Ok(_)) => panic!("{name}: accepted"),
            (Outcome::InstallRefused(reason), Ok(update)) => {
                let packages = update.repo().packages(&["base"]).unwrap();
                let e = install::install(&fetcher, &packages, &node.dest(), &Default::default())
                    .expect_err(name);
                assert!(reason(&e), "{name}: refused for another reason: {e:?}");
            }
            (Outcome::Accepted, Ok(update)) => {
                let packages = update.repo().packages(&["base"]).unwrap();
                let report = install::install(
                    &fetcher,
                    &packages,
                    &node.dest(),
                    &InstallOptions::default(),
                )
                .unwrap();
                install::verify_tree(&node.dest(), &report.manifest, true).unwrap();
                verifier.commit(update).unwrap();
                assert_eq!(node.verifier().trusted_repo().unwrap().targets_version, 1);
                continue;
            }
            (_, Err(e)) => panic!("{name}: metadata refused: {e:?}"),
        }
        assert_eq!(
            snapshot_tree(node.dir.path()),
            node_before,
            "{name}: a refusal changed the node's state or install directory"
        );
        assert_eq!(
            snapshot_tree(&fixture),
            served_before,
            "{name}: fixture changed"
        );
    }
}

#[test]
fn every_hostile_document_is_refused_for_its_reason() {
    for (name, check, reason) in DOCUMENTS {
        let bytes = fs::read(data().join(name)).unwrap();
        let e = check(&bytes).expect_err(name);
        assert!(reason(&e), "{name}: refused for another reason: {e:?}");
    }
    // The documents they were made from are fine.
    let clean = data().join("clean/repo/metadata");
    decode_as::<Timestamp>(&fs::read(clean.join("timestamp.json")).unwrap()).unwrap();
    decode_as::<Targets>(&fs::read(clean.join("1.targets.json")).unwrap()).unwrap();
    decode_as::<Root>(&fs::read(clean.join("1.root.json")).unwrap()).unwrap();
}

/// Extracts `file` with the limit the installer sets for a package whose
/// targets entry gives no unpacked length (64 times its length).
fn extract(file: &Path, base_image: bool) -> (tempfile::TempDir, Result<Manifest, ExtractError>) {
    let bytes = fs::read(file).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("outer/root");
    fs::create_dir_all(&dest).unwrap();
    let policy = ExtractPolicy {
        base_image,
        preserve_ownership: false,
        max_unpacked: bytes.len() as u64 * 64,
    };
    let mut manifest = Manifest::default();
    let result = extract_tar(
        flate2::read::MultiGzDecoder::new(&bytes[..]),
        &dest,
        "",
        &policy,
        &mut manifest,
    )
    .map(|_| manifest);
    (tmp, result)
}

#[test]
fn every_hostile_archive_is_refused_for_its_reason_and_writes_nothing_outside() {
    for (name, ordinary, base) in ARCHIVES {
        for (base_image, refusal) in [(false, Some(*ordinary)), (true, *base)] {
            let (tmp, result) = extract(&data().join(name), base_image);
            let outside: Vec<_> = fs::read_dir(tmp.path().join("outer"))
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(outside, ["root"], "{name}: wrote outside the destination");
            match (refusal, result) {
                (Some(refusal), Err(e)) => assert!(
                    refusal.matches(&e),
                    "{name} (base image: {base_image}): refused for another reason: {e:?}"
                ),
                (Some(_), Ok(_)) => panic!("{name} (base image: {base_image}): accepted"),
                // Allowed in a base image: what it holds is what its manifest says.
                (None, Ok(manifest)) => {
                    install::verify_tree(&tmp.path().join("outer/root"), &manifest, true)
                        .unwrap_or_else(|e| panic!("{name}: {e}"))
                }
                (None, Err(e)) if !common::is_root() && matches!(e, ExtractError::Io { .. }) => {
                    eprintln!("SKIP {name} as a base image: creating it needs root ({e})");
                }
                (None, Err(e)) => panic!("{name} (base image): refused: {e:?}"),
            }
        }
    }
    for base_image in [false, true] {
        let (tmp, result) = extract(&data().join("tar-clean.tar.gz"), base_image);
        let manifest = result.unwrap();
        install::verify_tree(&tmp.path().join("outer/root"), &manifest, true).unwrap();
    }
}

#[test]
fn the_fixtures_on_disk_are_the_ones_listed() {
    let listed: BTreeSet<&str> = SCENARIOS
        .iter()
        .map(|(name, _)| *name)
        .chain(DOCUMENTS.iter().map(|(name, _, _)| *name))
        .chain(ARCHIVES.iter().map(|(name, _, _)| *name))
        .chain(["tar-clean.tar.gz", "keys", "README.md"])
        .collect();
    let on_disk: BTreeSet<String> = fs::read_dir(data())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let on_disk: BTreeSet<&str> = on_disk.iter().map(String::as_str).collect();
    assert_eq!(
        on_disk, listed,
        "tests/data and this test disagree: rerun the generator or update the tables"
    );
}
