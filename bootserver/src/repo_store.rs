//! Published repository snapshots in the working directory.
//!
//! `repo publish` copies a pkgsign repository's `metadata/` and `targets/`
//! into a new directory under `repo.d/`, writes an index of every file with
//! its SHA-256 and length, and switches the `repo` symlink to it by
//! renaming a new symlink over the old one: a node sees either the old or
//! the new repository, never a mix, and files it is downloading stay
//! readable. The server serves exactly the files the index names.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use floor::durable::{self, DurableError};

/// The index file inside a snapshot (never served: it is outside the two
/// served directories).
pub const INDEX_FILE: &str = "index.json";
/// The only directories of a repository that are published and served.
pub const AREAS: [&str; 2] = ["metadata", "targets"];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Durable(#[from] DurableError),
    #[error("{}: not a snapshot index", path.display())]
    BadIndex {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{}: lists `{key}`, which is not a servable repository file", path.display())]
    UnservableKey { path: PathBuf, key: String },
    #[error("{}: is not a directory (a repository has metadata/ and targets/)", path.display())]
    NotADirectory { path: PathBuf },
    #[error("{}: has a name a repository file cannot have", path.display())]
    BadFileName { path: PathBuf },
    #[error("{}: is not a regular file (symlinks and directories are not published)", path.display())]
    NotAFile { path: PathBuf },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntry {
    pub sha256: String,
    pub length: u64,
}

/// Every served file, keyed `metadata/NAME` or `targets/NAME`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotIndex {
    pub files: BTreeMap<String, IndexEntry>,
}

impl SnapshotIndex {
    pub fn load(snapshot: &Path) -> Result<SnapshotIndex, StoreError> {
        let path = snapshot.join(INDEX_FILE);
        let text = fs::read(&path).map_err(io_err(&path))?;
        let index: SnapshotIndex =
            serde_json::from_slice(&text).map_err(|source| StoreError::BadIndex {
                path: path.clone(),
                source,
            })?;
        for key in index.files.keys() {
            if split_key(key).is_none() {
                return Err(StoreError::UnservableKey {
                    path,
                    key: key.clone(),
                });
            }
        }
        Ok(index)
    }

    pub fn total_bytes(&self) -> u64 {
        self.files.values().map(|e| e.length).sum()
    }
}

/// A file name that may be published and served: one path component of
/// letters, digits and `._+-`, not starting with a dot.
pub fn valid_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-'))
}

/// `metadata/NAME` → (`metadata`, `NAME`) when both parts are valid.
pub fn split_key(key: &str) -> Option<(&str, &str)> {
    let (area, name) = key.split_once('/')?;
    (AREAS.contains(&area) && valid_file_name(name)).then_some((area, name))
}

/// Copies `source/{metadata,targets}` into a new staging directory under
/// `store`, hashing as it goes. Only regular files with servable names are
/// taken; anything else (a symlink, a subdirectory, an odd name) refuses
/// the whole repository, since a signed repository has none.
pub fn stage_copy(source: &Path, store: &Path) -> Result<(PathBuf, SnapshotIndex), StoreError> {
    fs::create_dir_all(store).map_err(io_err(store))?;
    let staging = store.join(format!(
        ".staging-{}-{}",
        std::process::id(),
        unique_suffix()
    ));
    fs::create_dir(&staging).map_err(io_err(&staging))?;
    match copy_areas(source, &staging) {
        Ok(index) => Ok((staging, index)),
        Err(e) => {
            let _ = fs::remove_dir_all(&staging);
            Err(e)
        }
    }
}

fn unique_suffix() -> String {
    let mut b = [0u8; 4];
    let _ = getrandom::fill(&mut b);
    hex::encode(b)
}

fn copy_areas(source: &Path, staging: &Path) -> Result<SnapshotIndex, StoreError> {
    let mut index = SnapshotIndex::default();
    for area in AREAS {
        let from = source.join(area);
        let meta = fs::symlink_metadata(&from).map_err(io_err(&from))?;
        if !meta.is_dir() {
            return Err(StoreError::NotADirectory { path: from });
        }
        let to = staging.join(area);
        fs::create_dir(&to).map_err(io_err(&to))?;
        let mut names = Vec::new();
        for entry in fs::read_dir(&from).map_err(io_err(&from))? {
            let entry = entry.map_err(io_err(&from))?;
            names.push(entry.file_name());
        }
        names.sort();
        for os_name in names {
            let path = from.join(&os_name);
            let name = os_name
                .to_str()
                .filter(|n| valid_file_name(n))
                .ok_or_else(|| StoreError::BadFileName { path: path.clone() })?;
            let file_type = fs::symlink_metadata(&path)
                .map_err(io_err(&path))?
                .file_type();
            if !file_type.is_file() {
                return Err(StoreError::NotAFile { path });
            }
            let entry = copy_hashed(&path, &to.join(name))?;
            index.files.insert(format!("{area}/{name}"), entry);
        }
        durable::sync_dir(&to)?;
    }
    Ok(index)
}

fn copy_hashed(from: &Path, to: &Path) -> Result<IndexEntry, StoreError> {
    let mut src = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(from)
        .map_err(io_err(from))?;
    let mut dst = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(to)
        .map_err(io_err(to))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut length = 0u64;
    loop {
        let n = src.read(&mut buf).map_err(io_err(from))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        dst.write_all(&buf[..n]).map_err(io_err(to))?;
        length += n as u64;
    }
    dst.sync_all().map_err(io_err(to))?;
    Ok(IndexEntry {
        sha256: hex::encode(hasher.finalize()),
        length,
    })
}

/// Moves a verified staging directory into place and switches the `repo`
/// symlink to it. Returns the snapshot's directory name.
pub fn activate(
    staging: &Path,
    index: &SnapshotIndex,
    store: &Path,
    link: &Path,
) -> Result<String, StoreError> {
    let index_path = staging.join(INDEX_FILE);
    let text = serde_json::to_vec_pretty(index).map_err(|source| StoreError::BadIndex {
        path: index_path.clone(),
        source,
    })?;
    durable::write_atomic(&index_path, &text)?;

    let stamp = time::OffsetDateTime::now_utc();
    let name = format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z-{}",
        stamp.year(),
        u8::from(stamp.month()),
        stamp.day(),
        stamp.hour(),
        stamp.minute(),
        stamp.second(),
        unique_suffix()
    );
    let snapshot = store.join(&name);
    durable::rename(staging, &snapshot)?;

    // A new symlink renamed over the old one: the switch is one rename(2).
    let tmp_link = link.with_file_name(format!(".repo.tmp-{}", unique_suffix()));
    let target = Path::new(store.file_name().unwrap_or_else(|| "repo.d".as_ref())).join(&name);
    std::os::unix::fs::symlink(&target, &tmp_link).map_err(io_err(&tmp_link))?;
    if let Err(e) = fs::rename(&tmp_link, link) {
        let _ = fs::remove_file(&tmp_link);
        return Err(StoreError::Io {
            path: link.to_path_buf(),
            source: e,
        });
    }
    durable::sync_dir(durable::parent_of(link))?;
    Ok(name)
}

/// The snapshot the `repo` symlink names, if any.
pub fn current_snapshot(link: &Path) -> Option<PathBuf> {
    let target = fs::read_link(link).ok()?;
    Some(link.parent()?.join(target))
}

/// Removes snapshots other than the current one and the one before it
/// (a node may still be reading a file of the previous one; open files
/// survive the removal anyway, but a fresh request for an old name fails
/// cleanly with 404 only after two publishes).
pub fn prune(store: &Path, keep: &[&str]) -> Result<Vec<String>, StoreError> {
    let mut snapshots: Vec<String> = fs::read_dir(store)
        .map_err(io_err(store))?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    snapshots.sort();
    let mut removed = Vec::new();
    for name in snapshots {
        if keep.contains(&name.as_str()) {
            continue;
        }
        let path = store.join(&name);
        fs::remove_dir_all(&path).map_err(io_err(&path))?;
        removed.push(name);
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_are_servable() {
        for ok in ["timestamp.json", "3.root.json", "ab12.base-1.0+x_y.tar.gz"] {
            assert!(valid_file_name(ok), "{ok}");
        }
        for bad in [
            "", ".", "..", ".hidden", "a/b", "a\\b", "a b", "é.json", "a\0b",
        ] {
            assert!(!valid_file_name(bad), "{bad:?}");
        }
        assert_eq!(
            split_key("metadata/root.json"),
            Some(("metadata", "root.json"))
        );
        assert_eq!(split_key("pending.json"), None);
        assert_eq!(split_key("secret/x"), None);
        assert_eq!(split_key("metadata/../x"), None);
    }

    #[test]
    fn a_repository_with_a_symlink_is_refused_and_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fs::create_dir_all(src.join("metadata")).unwrap();
        fs::create_dir_all(src.join("targets")).unwrap();
        fs::write(src.join("metadata/timestamp.json"), b"{}").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", src.join("targets/passwd")).unwrap();
        let store = tmp.path().join("store");
        let e = stage_copy(&src, &store).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        assert_eq!(fs::read_dir(&store).unwrap().count(), 0);
    }

    #[test]
    fn activate_switches_the_link_and_prune_keeps_what_is_asked() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fs::create_dir_all(src.join("metadata")).unwrap();
        fs::create_dir_all(src.join("targets")).unwrap();
        fs::write(src.join("metadata/timestamp.json"), b"{\"v\":1}").unwrap();
        let store = tmp.path().join("repo.d");
        let link = tmp.path().join("repo");
        let (staging, index) = stage_copy(&src, &store).unwrap();
        assert_eq!(index.files["metadata/timestamp.json"].length, 7);
        let first = activate(&staging, &index, &store, &link).unwrap();
        let (staging, index) = stage_copy(&src, &store).unwrap();
        let second = activate(&staging, &index, &store, &link).unwrap();
        assert_eq!(
            current_snapshot(&link).unwrap(),
            tmp.path().join("repo.d").join(&second)
        );
        assert_eq!(SnapshotIndex::load(&store.join(&second)).unwrap(), index);
        let removed = prune(&store, &[second.as_str()]).unwrap();
        assert_eq!(removed, [first]);
        assert_eq!(
            fs::read(link.join("metadata/timestamp.json")).unwrap(),
            b"{\"v\":1}"
        );
    }
}
