//! A real signed repository made with pkgsign's library (the staff side).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pkgsign::keys::SecretKey;
use pkgsign::metadata::RoleType;
use pkgsign::repo::{Expiries, Repository, RoleSpec};

pub struct SignedRepo {
    pub dir: PathBuf,
    pub repo: Repository,
    root: SecretKey,
    targets: SecretKey,
    snapshot: SecretKey,
    timestamp: SecretKey,
}

fn spec(key: &SecretKey) -> RoleSpec {
    RoleSpec {
        keys: vec![key.public().clone()],
        threshold: 1,
    }
}

fn copy(key: &SecretKey) -> SecretKey {
    SecretKey::from_pem(&key.to_pem().unwrap()).unwrap()
}

pub fn far_future() -> floor::Timestamp {
    floor::Timestamp::now().plus(std::time::Duration::from_secs(365 * 86_400))
}

impl SignedRepo {
    pub fn new(dir: &Path) -> SignedRepo {
        let gen = || SecretKey::generate().unwrap();
        let (root, targets, snapshot, timestamp) = (gen(), gen(), gen(), gen());
        let mut roles = BTreeMap::new();
        roles.insert(RoleType::Root, spec(&root));
        roles.insert(RoleType::Targets, spec(&targets));
        roles.insert(RoleType::Snapshot, spec(&snapshot));
        roles.insert(RoleType::Timestamp, spec(&timestamp));
        let repo = Repository::init(dir, &roles, far_future(), &[copy(&root)]).unwrap();
        SignedRepo {
            dir: dir.to_path_buf(),
            repo,
            root,
            targets,
            snapshot,
            timestamp,
        }
    }

    pub fn root_json(&self) -> PathBuf {
        self.dir.join("metadata/1.root.json")
    }

    /// Adds a package holding one file with `content`; returns its
    /// repository path (`targets/<sha>.<name>-<version>.tar.gz`).
    pub fn add(&self, name: &str, version: &str, content: &[u8]) -> String {
        let upload = self
            .dir
            .with_extension(format!("{name}-{version}.upload.tar.gz"));
        std::fs::write(&upload, targz_with(&format!("opt/{name}/data"), content)).unwrap();
        let info = self
            .repo
            .add_package(&upload, name, version, false, Default::default())
            .unwrap();
        std::fs::remove_file(upload).unwrap();
        info.path
    }

    pub fn publish(&self) -> pkgsign::repo::Published {
        let at = far_future();
        self.repo
            .publish(
                &[
                    copy(&self.targets),
                    copy(&self.snapshot),
                    copy(&self.timestamp),
                ],
                &Expiries {
                    targets: at,
                    snapshot: at,
                    timestamp: at,
                },
            )
            .unwrap()
    }

    /// Root key, for tests that need to sign something else.
    pub fn root_key(&self) -> &SecretKey {
        &self.root
    }
}

/// A gzip'd tar with one regular file.
pub fn targz_with(path: &str, content: &[u8]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(content.len() as u64);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    builder.append_data(&mut header, path, content).unwrap();
    let tar = builder.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &tar).unwrap();
    gz.finish().unwrap()
}

/// Bytes that do not compress (so a package is about as large as asked).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
