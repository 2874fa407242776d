//! Shared test fixtures: keys, repositories, archives, a certificate
//! authority and an HTTPS server on 127.0.0.1 with knobs for misbehaviour.
#![allow(dead_code)]

pub mod server;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use floor::Timestamp;
use pkgsign::keys::SecretKey;
use pkgsign::metadata::RoleType;
use pkgsign::repo::{Expiries, Repository, RoleSpec};
use sha2::{Digest, Sha256};

/// One secret key per role (root may have several).
pub struct Keys {
    pub root: Vec<SecretKey>,
    pub targets: Vec<SecretKey>,
    pub snapshot: Vec<SecretKey>,
    pub timestamp: Vec<SecretKey>,
}

fn gen(n: usize) -> Vec<SecretKey> {
    (0..n).map(|_| SecretKey::generate().unwrap()).collect()
}

impl Keys {
    pub fn new(root: usize, targets: usize) -> Keys {
        Keys {
            root: gen(root),
            targets: gen(targets),
            snapshot: gen(1),
            timestamp: gen(1),
        }
    }

    /// Copies of all non-root keys (for publishing).
    pub fn publishing(&self) -> Vec<SecretKey> {
        self.targets
            .iter()
            .chain(&self.snapshot)
            .chain(&self.timestamp)
            .map(clone_key)
            .collect()
    }
}

pub fn clone_key(key: &SecretKey) -> SecretKey {
    SecretKey::from_pem(&key.to_pem().unwrap()).unwrap()
}

pub fn spec(keys: &[SecretKey], threshold: u32) -> RoleSpec {
    RoleSpec {
        keys: keys.iter().map(|k| k.public().clone()).collect(),
        threshold,
    }
}

pub fn far_future() -> Timestamp {
    Timestamp::now().plus(std::time::Duration::from_secs(365 * 86_400))
}

pub fn expiries(at: Timestamp) -> Expiries {
    Expiries {
        targets: at,
        snapshot: at,
        timestamp: at,
    }
}

/// A repository in a temporary directory, with its keys.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub repo: Repository,
    pub keys: Keys,
    pub root_threshold: u32,
    pub targets_threshold: u32,
}

impl Fixture {
    /// Root k-of-n and targets k-of-n as given; snapshot and timestamp 1-of-1.
    pub fn with_thresholds(
        root_n: usize,
        root_k: u32,
        targets_n: usize,
        targets_k: u32,
    ) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let keys = Keys::new(root_n, targets_n);
        let mut roles = BTreeMap::new();
        roles.insert(RoleType::Root, spec(&keys.root, root_k));
        roles.insert(RoleType::Targets, spec(&keys.targets, targets_k));
        roles.insert(RoleType::Snapshot, spec(&keys.snapshot, 1));
        roles.insert(RoleType::Timestamp, spec(&keys.timestamp, 1));
        let root_signers: Vec<SecretKey> = keys.root.iter().map(clone_key).collect();
        let repo = Repository::init(
            &dir.path().join("repo"),
            &roles,
            far_future(),
            &root_signers,
        )
        .unwrap();
        Fixture {
            dir,
            repo,
            keys,
            root_threshold: root_k,
            targets_threshold: targets_k,
        }
    }

    pub fn new() -> Fixture {
        Self::with_thresholds(1, 1, 1, 1)
    }

    pub fn repo_dir(&self) -> PathBuf {
        self.dir.path().join("repo")
    }

    /// A path in the fixture's temp dir, outside the repository.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn initial_root(&self) -> Vec<u8> {
        fs::read(self.repo_dir().join("metadata/1.root.json")).unwrap()
    }

    pub fn add(&self, name: &str, version: &str, archive: &[u8], base_image: bool) {
        let file = self.path(&format!("{name}-{version}.upload.tar.gz"));
        fs::write(&file, archive).unwrap();
        self.repo
            .add_package(&file, name, version, base_image, Default::default())
            .unwrap();
        fs::remove_file(file).unwrap();
    }

    pub fn publish(&self) -> pkgsign::repo::Published {
        self.repo
            .publish(&self.keys.publishing(), &expiries(far_future()))
            .unwrap()
    }

    pub fn metadata(&self, file: &str) -> PathBuf {
        self.repo_dir().join("metadata").join(file)
    }
}

/// What a test archive holds.
pub enum Item<'a> {
    File(&'a str, &'a [u8], u32),
    Dir(&'a str, u32),
    Symlink(&'a str, &'a str),
    HardLink(&'a str, &'a str),
    Fifo(&'a str),
    CharDevice(&'a str, u32, u32),
}

/// A raw GNU header with the name written byte for byte (tar's own setters
/// refuse the hostile names these tests need).
pub fn raw_header(
    name: &[u8],
    entry_type: tar::EntryType,
    mode: u32,
    size: u64,
    link: &[u8],
) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    {
        let old = header.as_old_mut();
        old.name[..name.len()].copy_from_slice(name);
        old.linkname[..link.len()].copy_from_slice(link);
    }
    header.set_entry_type(entry_type);
    header.set_mode(mode);
    header.set_size(size);
    header.set_mtime(1_700_000_000);
    header.set_uid(0);
    header.set_gid(0);
    header.set_cksum();
    header
}

pub fn tar_bytes(items: &[Item<'_>]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for item in items {
        match *item {
            Item::File(name, data, mode) => {
                let h = raw_header(
                    name.as_bytes(),
                    tar::EntryType::Regular,
                    mode,
                    data.len() as u64,
                    b"",
                );
                builder.append(&h, data).unwrap();
            }
            Item::Dir(name, mode) => builder
                .append(
                    &raw_header(name.as_bytes(), tar::EntryType::Directory, mode, 0, b""),
                    &[][..],
                )
                .unwrap(),
            Item::Symlink(name, target) => builder
                .append(
                    &raw_header(
                        name.as_bytes(),
                        tar::EntryType::Symlink,
                        0o777,
                        0,
                        target.as_bytes(),
                    ),
                    &[][..],
                )
                .unwrap(),
            Item::HardLink(name, target) => builder
                .append(
                    &raw_header(
                        name.as_bytes(),
                        tar::EntryType::Link,
                        0o644,
                        0,
                        target.as_bytes(),
                    ),
                    &[][..],
                )
                .unwrap(),
            Item::Fifo(name) => builder
                .append(
                    &raw_header(name.as_bytes(), tar::EntryType::Fifo, 0o644, 0, b""),
                    &[][..],
                )
                .unwrap(),
            Item::CharDevice(name, major, minor) => {
                let mut h = raw_header(name.as_bytes(), tar::EntryType::Char, 0o666, 0, b"");
                h.set_device_major(major).unwrap();
                h.set_device_minor(minor).unwrap();
                h.set_cksum();
                builder.append(&h, &[][..]).unwrap()
            }
        }
    }
    builder.into_inner().unwrap()
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

pub fn targz(items: &[Item<'_>]) -> Vec<u8> {
    gzip(&tar_bytes(items))
}

/// A small ordinary package.
pub fn sample_package(marker: &str) -> Vec<u8> {
    targz(&[
        Item::Dir("etc", 0o755),
        Item::File("etc/motd", marker.as_bytes(), 0o644),
        Item::Dir("bin", 0o755),
        Item::File("bin/tool", b"#!/bin/sh\necho tool\n", 0o755),
        Item::Symlink("bin/motd", "../etc/motd"),
    ])
}

/// Everything under `dir` (recursively): path → (type, mode, content hash
/// or link target). Used to assert that a failure changed nothing.
pub fn snapshot_tree(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if dir.symlink_metadata().is_ok() {
        walk(dir, dir, &mut out);
    }
    out
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        let meta = fs::symlink_metadata(&path).unwrap();
        let rel = path
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let t = meta.file_type();
        let desc = if t.is_symlink() {
            format!("link {}", fs::read_link(&path).unwrap().display())
        } else if t.is_dir() {
            format!("dir {:o}", meta.permissions().mode() & 0o7777)
        } else if t.is_file() {
            format!(
                "file {:o} {}",
                meta.mode() & 0o7777,
                hex::encode(Sha256::digest(fs::read(&path).unwrap()))
            )
        } else {
            format!("special {:o}", meta.mode())
        };
        out.insert(rel, desc);
        if t.is_dir() {
            walk(root, &path, out);
        }
    }
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
