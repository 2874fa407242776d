//! The attacks of the Update Framework's threat model, each rejected with
//! nothing written to the node's target or state directory.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use common::*;
use pkgsign::fetch::DirFetcher;
use pkgsign::install::{self, InstallError, InstallOptions, InstallReport};
use pkgsign::metadata::{
    sign_document, Envelope, MetaInfo, MetadataError, RoleType, Snapshot, Targets, Timestamp,
};
use pkgsign::repo::RepoError;
use pkgsign::verify::{Verifier, VerifyError};

/// The node's side: a state dir and a target dir under `node/`.
struct Node {
    base: PathBuf,
}

impl Node {
    fn new(fx: &Fixture) -> Node {
        let base = fx.path("node");
        fs::create_dir_all(&base).unwrap();
        Node { base }
    }
    fn state(&self) -> PathBuf {
        self.base.join("state")
    }
    fn target(&self) -> PathBuf {
        self.base.join("target")
    }
    fn verifier(&self, fx: &Fixture) -> Verifier {
        Verifier::open(&self.state(), &fx.initial_root()).unwrap()
    }
    fn update(&self, fx: &Fixture) -> Result<pkgsign::VerifiedRepo, VerifyError> {
        self.update_at(fx, SystemTime::now())
    }
    fn update_at(
        &self,
        fx: &Fixture,
        now: SystemTime,
    ) -> Result<pkgsign::VerifiedRepo, VerifyError> {
        self.verifier(fx)
            .update(&DirFetcher::new(fx.repo_dir()), now)
    }
    /// What `pkgsign install` does: check, install, then commit.
    fn install(&self, fx: &Fixture, names: &[&str]) -> Result<InstallReport, String> {
        let fetcher = DirFetcher::new(fx.repo_dir());
        let mut verifier = self.verifier(fx);
        let update = verifier
            .check(&fetcher, SystemTime::now())
            .map_err(|e| e.to_string())?;
        let packages = update
            .repo()
            .packages(names)
            .map_err(|n| format!("no package {n}"))?;
        let report = install::install(
            &fetcher,
            &packages,
            &self.target(),
            &InstallOptions::default(),
        )
        .map_err(|e| format!("{e:?}"))?;
        verifier.commit(update).map_err(|e| e.to_string())?;
        Ok(report)
    }
    fn snapshot(&self) -> BTreeMap<String, String> {
        snapshot_tree(&self.base)
    }
}

fn published_fixture() -> (Fixture, Node) {
    let fx = Fixture::new();
    fx.add("base", "1", &sample_package("one"), false);
    fx.publish();
    let node = Node::new(&fx);
    node.install(&fx, &["base"]).unwrap();
    (fx, node)
}

#[test]
fn arbitrary_package_bit_flip_is_rejected() {
    let (fx, node) = published_fixture();
    fx.add("base", "2", &sample_package("two"), false);
    fx.publish();
    let repo = node.update(&fx).unwrap();
    let path = fx.repo_dir().join(&repo.targets["base"].path);
    let mut bytes = fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    fs::write(&path, bytes).unwrap();
    let before = node.snapshot();
    let err = node.install(&fx, &["base"]).unwrap_err();
    assert!(err.contains("WrongHash"), "{err}");
    assert_eq!(
        node.snapshot(),
        before,
        "a rejected package must leave the node untouched"
    );
    assert_eq!(fs::read(node.target().join("etc/motd")).unwrap(), b"one");
}

#[test]
fn rollback_of_timestamp_is_rejected() {
    let (fx, node) = published_fixture();
    let old = fs::read(fx.metadata("timestamp.json")).unwrap();
    fx.publish();
    assert_eq!(node.update(&fx).unwrap().timestamp_version, 2);
    fs::write(fx.metadata("timestamp.json"), old).unwrap();
    let before = node.snapshot();
    let err = node.update(&fx).unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::Rollback {
                trusted: 2,
                offered: 1,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(node.snapshot(), before);
}

#[test]
fn rollback_of_snapshot_is_rejected_even_with_the_timestamp_key() {
    let (fx, node) = published_fixture();
    let snapshot_1 = fs::read(fx.metadata("1.snapshot.json")).unwrap();
    fx.publish();
    node.update(&fx).unwrap();
    // An attacker holding the timestamp key points a fresh timestamp at snapshot 1.
    let forged = Timestamp::new(3, far_future(), MetaInfo::describe(1, &snapshot_1));
    fs::write(
        fx.metadata("timestamp.json"),
        sign_document(&forged, &[&fx.keys.timestamp[0]]).unwrap(),
    )
    .unwrap();
    let before = node.snapshot();
    let err = node.update(&fx).unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::Rollback {
                trusted: 2,
                offered: 1,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(node.snapshot(), before);
}

#[test]
fn rollback_of_targets_is_rejected_even_with_snapshot_and_timestamp_keys() {
    let (fx, node) = published_fixture();
    let targets_1 = fs::read(fx.metadata("1.targets.json")).unwrap();
    fx.publish();
    node.update(&fx).unwrap();
    let snapshot = Snapshot::new(3, far_future(), MetaInfo::describe(1, &targets_1));
    let snapshot_bytes = sign_document(&snapshot, &[&fx.keys.snapshot[0]]).unwrap();
    fs::write(fx.metadata("3.snapshot.json"), &snapshot_bytes).unwrap();
    let timestamp = Timestamp::new(3, far_future(), MetaInfo::describe(3, &snapshot_bytes));
    fs::write(
        fx.metadata("timestamp.json"),
        sign_document(&timestamp, &[&fx.keys.timestamp[0]]).unwrap(),
    )
    .unwrap();
    let before = node.snapshot();
    let err = node.update(&fx).unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::Rollback {
                trusted: 2,
                offered: 1,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(node.snapshot(), before);
}

#[test]
fn freeze_with_an_expired_timestamp_is_rejected() {
    let (fx, node) = published_fixture();
    let soon = floor::Timestamp::now().plus(Duration::from_secs(3600));
    fx.repo
        .refresh_timestamp(&[clone_key(&fx.keys.timestamp[0])], soon)
        .unwrap();
    let before = node.snapshot();
    // Two hours later the attacker still serves that timestamp.
    let later = SystemTime::now() + Duration::from_secs(7200);
    let err = node.update_at(&fx, later).unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::Expired {
                role: RoleType::Timestamp,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(node.snapshot(), before);
    // Before expiry it is accepted.
    node.update(&fx).unwrap();
}

#[test]
fn mix_and_match_targets_from_another_snapshot_is_rejected() {
    let (fx, node) = published_fixture();
    fx.add("extra", "1", &sample_package("extra"), false);
    fx.publish();
    // Serve targets 1 where snapshot 2 names targets 2.
    fs::copy(fx.metadata("1.targets.json"), fx.metadata("2.targets.json")).unwrap();
    let before = node.snapshot();
    let err = node.update(&fx).unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::WrongHash { .. } | VerifyError::WrongLength { .. }
        ),
        "{err}"
    );
    assert_eq!(node.snapshot(), before);
}

#[test]
fn endless_timestamp_is_cut_at_its_limit() {
    let (fx, node) = published_fixture();
    let mut bytes = fs::read(fx.metadata("timestamp.json")).unwrap();
    bytes.extend(std::iter::repeat_n(b' ', 20_000));
    fs::write(fx.metadata("timestamp.json"), bytes).unwrap();
    let before = node.snapshot();
    let err = node.update(&fx).unwrap_err();
    assert!(
        matches!(
            &err,
            VerifyError::Fetch {
                source: pkgsign::fetch::FetchError::TooLong { limit: 16384, .. },
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(node.snapshot(), before);
}

#[test]
fn endless_package_is_cut_at_its_signed_length() {
    let (fx, node) = published_fixture();
    fx.add("base", "2", &sample_package("two"), false);
    fx.publish();
    let repo = node.update(&fx).unwrap();
    let path = fx.repo_dir().join(&repo.targets["base"].path);
    let mut bytes = fs::read(&path).unwrap();
    bytes.extend_from_slice(&[0u8; 4096]);
    fs::write(&path, bytes).unwrap();
    let before = node.snapshot();
    let err = node.install(&fx, &["base"]).unwrap_err();
    assert!(err.contains("TooLong"), "{err}");
    assert_eq!(node.snapshot(), before);
}

/// Writes targets signed by `signers`, with a snapshot and timestamp
/// signed properly on top (as an attacker holding those keys would).
fn publish_targets_signed_by(fx: &Fixture, signers: &[&pkgsign::SecretKey], duplicate: bool) {
    let current: Targets = {
        let bytes = fs::read(fx.metadata("1.targets.json")).unwrap();
        Envelope::parse(&bytes).unwrap().decode().unwrap()
    };
    let mut targets = current.clone();
    targets.version = 2;
    let mut bytes = sign_document(&targets, signers).unwrap();
    if duplicate {
        // The same signature twice.
        let mut value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let first = value["signatures"][0].clone();
        value["signatures"].as_array_mut().unwrap().push(first);
        bytes = pkgsign::canonical::encode(&value).unwrap();
    }
    fs::write(fx.metadata("2.targets.json"), &bytes).unwrap();
    let snapshot = Snapshot::new(2, far_future(), MetaInfo::describe(2, &bytes));
    let snapshot_bytes = sign_document(&snapshot, &[&fx.keys.snapshot[0]]).unwrap();
    fs::write(fx.metadata("2.snapshot.json"), &snapshot_bytes).unwrap();
    let timestamp = Timestamp::new(2, far_future(), MetaInfo::describe(2, &snapshot_bytes));
    fs::write(
        fx.metadata("timestamp.json"),
        sign_document(&timestamp, &[&fx.keys.timestamp[0]]).unwrap(),
    )
    .unwrap();
}

#[test]
fn fewer_than_threshold_signatures_are_rejected() {
    let fx = Fixture::with_thresholds(1, 1, 3, 2);
    fx.add("base", "1", &sample_package("one"), false);
    fx.publish();
    let node = Node::new(&fx);
    node.update(&fx).unwrap();
    // The publisher itself refuses to sign below the threshold.
    let one_key = vec![
        clone_key(&fx.keys.targets[0]),
        clone_key(&fx.keys.snapshot[0]),
        clone_key(&fx.keys.timestamp[0]),
    ];
    let err = fx
        .repo
        .publish(&one_key, &expiries(far_future()))
        .unwrap_err();
    assert!(
        matches!(
            err,
            RepoError::Threshold {
                role: RoleType::Targets,
                have: 1,
                need: 2
            }
        ),
        "{err}"
    );
    // A node refuses such a document when someone else writes it.
    publish_targets_signed_by(&fx, &[&fx.keys.targets[0]], false);
    let before = node.snapshot();
    let err = node.update(&fx).unwrap_err();
    assert!(
        matches!(
            &err,
            VerifyError::Metadata {
                source: MetadataError::Threshold {
                    valid: 1,
                    threshold: 2,
                    ..
                },
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(node.snapshot(), before);
    // Two distinct keys are enough.
    publish_targets_signed_by(&fx, &[&fx.keys.targets[0], &fx.keys.targets[2]], false);
    assert_eq!(node.update(&fx).unwrap().targets_version, 2);
}

#[test]
fn duplicate_signatures_by_one_key_count_once() {
    let fx = Fixture::with_thresholds(1, 1, 2, 2);
    fx.add("base", "1", &sample_package("one"), false);
    fx.publish();
    let node = Node::new(&fx);
    node.update(&fx).unwrap();
    publish_targets_signed_by(&fx, &[&fx.keys.targets[0]], true);
    let text = fs::read_to_string(fx.metadata("2.targets.json")).unwrap();
    assert_eq!(
        text.matches(&fx.keys.targets[0].id().to_string()).count(),
        2,
        "the document carries the signature twice"
    );
    let before = node.snapshot();
    let err = node.update(&fx).unwrap_err();
    assert!(
        matches!(
            &err,
            VerifyError::Metadata {
                source: MetadataError::Threshold {
                    valid: 1,
                    threshold: 2,
                    ..
                },
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(node.snapshot(), before);
}

#[test]
fn root_chain_1_to_5_is_walked() {
    let fx = Fixture::with_thresholds(2, 2, 1, 1);
    fx.add("base", "1", &sample_package("one"), false);
    fx.publish();
    let node = Node::new(&fx);
    let mut current: Vec<pkgsign::SecretKey> = fx.keys.root.iter().map(clone_key).collect();
    for expected in 2..=5u64 {
        let next = vec![
            pkgsign::SecretKey::generate().unwrap(),
            pkgsign::SecretKey::generate().unwrap(),
        ];
        let mut changes = BTreeMap::new();
        changes.insert(RoleType::Root, spec(&next, 2));
        let signers: Vec<_> = current.iter().chain(&next).map(clone_key).collect();
        assert_eq!(
            fx.repo
                .rotate_root(&changes, far_future(), &signers)
                .unwrap(),
            expected
        );
        current = next;
    }
    // A node that only knows root 1 reaches root 5.
    let repo = node.update(&fx).unwrap();
    assert_eq!(repo.root_version, 5);
    assert_eq!(
        node.verifier(&fx).root().version,
        5,
        "the new root is persisted"
    );
}

#[test]
fn rotation_signed_by_too_few_old_keys_is_rejected() {
    let fx = Fixture::with_thresholds(3, 2, 1, 1);
    fx.add("base", "1", &sample_package("one"), false);
    fx.publish();
    let node = Node::new(&fx);
    node.update(&fx).unwrap();
    let new_keys = vec![pkgsign::SecretKey::generate().unwrap()];
    let mut changes = BTreeMap::new();
    changes.insert(RoleType::Root, spec(&new_keys, 1));
    let signers = vec![clone_key(&fx.keys.root[0]), clone_key(&new_keys[0])];
    let err = fx
        .repo
        .rotate_root(&changes, far_future(), &signers)
        .unwrap_err();
    assert!(
        matches!(
            err,
            RepoError::RotationThreshold {
                which: "old",
                have: 1,
                need: 2
            }
        ),
        "{err}"
    );
    // The same root written by hand with one old signature is refused by nodes.
    let old_root = fx.repo.root().unwrap();
    let mut forged = old_root.clone();
    forged.version = 2;
    forged.keys.clear();
    forged.keys.insert(
        *new_keys[0].id(),
        pkgsign::metadata::KeyEntry::ed25519(new_keys[0].public()),
    );
    for role in RoleType::ALL {
        let (key, _) = match role {
            RoleType::Root => (&new_keys[0], ()),
            RoleType::Targets => (&fx.keys.targets[0], ()),
            RoleType::Snapshot => (&fx.keys.snapshot[0], ()),
            RoleType::Timestamp => (&fx.keys.timestamp[0], ()),
        };
        forged.keys.insert(
            *key.id(),
            pkgsign::metadata::KeyEntry::ed25519(key.public()),
        );
        forged.roles.insert(
            role,
            pkgsign::metadata::RoleKeys {
                keyids: vec![*key.id()],
                threshold: 1,
            },
        );
    }
    let bytes = sign_document(&forged, &[&fx.keys.root[0], &new_keys[0]]).unwrap();
    fs::write(fx.metadata("2.root.json"), bytes).unwrap();
    let before = node.snapshot();
    let err = node.update(&fx).unwrap_err();
    assert!(
        err.to_string()
            .contains("signed by 1 of the previous root's keys; 2 required"),
        "{err}"
    );
    assert_eq!(node.snapshot(), before);
}

#[test]
fn rotated_timestamp_key_recovers_with_fast_forward() {
    let (fx, node) = published_fixture();
    node.update(&fx).unwrap();
    let new_ts = vec![pkgsign::SecretKey::generate().unwrap()];
    let mut changes = BTreeMap::new();
    changes.insert(RoleType::Timestamp, spec(&new_ts, 1));
    fx.repo
        .rotate_root(&changes, far_future(), &[clone_key(&fx.keys.root[0])])
        .unwrap();
    // Old timestamp (signed by the old key) no longer verifies.
    let err = node.update(&fx).unwrap_err();
    assert!(
        matches!(
            &err,
            VerifyError::Metadata {
                source: MetadataError::Threshold { .. },
                ..
            }
        ),
        "{err}"
    );
    let keys = vec![
        clone_key(&fx.keys.targets[0]),
        clone_key(&fx.keys.snapshot[0]),
        clone_key(&new_ts[0]),
    ];
    fx.repo.publish(&keys, &expiries(far_future())).unwrap();
    let repo = node.update(&fx).unwrap();
    assert_eq!((repo.root_version, repo.timestamp_version), (2, 2));
}

#[test]
fn state_refuses_a_lower_version_after_restart() {
    let (fx, node) = published_fixture();
    fx.publish();
    fx.publish();
    assert_eq!(node.update(&fx).unwrap().snapshot_version, 3);
    // A new verifier opened on the same state remembers version 3.
    let repo = node.verifier(&fx).trusted_repo().unwrap();
    assert_eq!(
        (
            repo.timestamp_version,
            repo.snapshot_version,
            repo.targets_version
        ),
        (3, 3, 3)
    );
}

#[test]
fn install_errors_leave_target_and_state_unchanged() {
    let (fx, node) = published_fixture();
    let before = node.snapshot();
    let err = node.install(&fx, &["missing"]).unwrap_err();
    assert!(err.contains("no package missing"));
    assert_eq!(node.snapshot(), before);
    let _ = InstallError::Nothing;
}

/// An object store without listing: every missing file is 403 Forbidden.
struct ForbiddenWhenMissing(DirFetcher);

impl pkgsign::fetch::Fetcher for ForbiddenWhenMissing {
    fn fetch(
        &self,
        relative_path: &str,
        max_len: u64,
    ) -> Result<Box<dyn std::io::Read + Send>, pkgsign::fetch::FetchError> {
        self.0.fetch(relative_path, max_len).map_err(|e| match e {
            pkgsign::fetch::FetchError::NotFound { location } => {
                pkgsign::fetch::FetchError::Status {
                    location,
                    status: 403,
                }
            }
            other => other,
        })
    }
    fn location(&self, relative_path: &str) -> String {
        self.0.location(relative_path)
    }
}

#[test]
fn a_403_for_the_next_root_ends_the_walk_like_a_404_but_nowhere_else() {
    let (fx, node) = published_fixture();
    fx.add("base", "2", &sample_package("two"), false);
    fx.publish();
    let store = ForbiddenWhenMissing(DirFetcher::new(fx.repo_dir()));
    let repo = node
        .verifier(&fx)
        .update(&store, SystemTime::now())
        .expect("2.root.json answered 403 is no newer root");
    assert_eq!(repo.targets["base"].version, "2");
    // A 403 for a file the signed metadata names is an error, not "absent".
    let snapshot = fx
        .repo_dir()
        .join(format!("metadata/{}.snapshot.json", repo.snapshot_version));
    fx.add("base", "3", &sample_package("three"), false);
    fx.publish();
    let newer = fx.repo_dir().join(format!(
        "metadata/{}.snapshot.json",
        repo.snapshot_version + 1
    ));
    fs::remove_file(&newer).unwrap();
    let err = node
        .verifier(&fx)
        .check(&store, SystemTime::now())
        .unwrap_err()
        .to_string();
    assert!(err.contains("403"), "{err}");
    assert!(snapshot.exists());
}
