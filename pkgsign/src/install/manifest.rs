//! What an install wrote, and checking a tree against it later.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::metadata::Sha256Digest;

/// A manifest file that cannot be read back.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not canonical JSON.
    #[error("not a manifest (JSON)")]
    Json(#[source] crate::canonical::ParseError),
    /// JSON, but not a manifest's shape.
    #[error("not a manifest")]
    Shape(#[source] serde_json::Error),
}

/// Type of a tree entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// A regular file (also each name of a hard-linked file).
    File,
    /// A directory.
    Dir,
    /// A symbolic link; its target is [`ManifestEntry::link`].
    Symlink,
    /// A character device node (base images only).
    Char,
    /// A block device node (base images only).
    Block,
    /// A named pipe (base images only).
    Fifo,
}

/// One installed entry. Hard links appear as files with the same content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestEntry {
    /// What the entry is.
    pub kind: EntryKind,
    /// Permission bits (`mode & 0o7777`); 0 for symlinks.
    pub mode: u32,
    /// Content length of files; 0 otherwise.
    #[serde(default)]
    pub size: u64,
    /// SHA-256 of a file's content, computed as it was written; `None` for
    /// other kinds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<Sha256Digest>,
    /// A symlink's target exactly as stored; `None` for other kinds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// Owner, recorded only where the install set it (base images as root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<(u32, u32)>,
    /// Device number of device nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdev: Option<u64>,
}

/// Every entry below the destination, by `/`-separated relative path.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Keyed by path relative to the destination, without a leading `/`
    /// (`etc/passwd`); sorted, so the JSON is stable.
    pub entries: BTreeMap<String, ManifestEntry>,
}

impl Manifest {
    /// Pretty-printed JSON, as stored beside a deployment.
    pub fn to_json(&self) -> Vec<u8> {
        // Only integers and strings: cannot fail; fall back to empty on the impossible.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// Parses a stored manifest strictly (canonical-JSON parser: no
    /// duplicate keys or floats; unknown fields refused).
    pub fn from_json(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        let value = crate::canonical::parse(bytes).map_err(ManifestError::Json)?;
        serde_json::from_value(value).map_err(ManifestError::Shape)
    }

    /// Sum of file sizes.
    pub fn content_bytes(&self) -> u64 {
        self.entries.values().map(|e| e.size).sum()
    }
}

/// A difference between a tree and its manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeProblem {
    /// The entry's path relative to the tree, as in [`Manifest::entries`].
    pub path: String,
    /// What differs, e.g. `missing`, `mode 0755, expected 0644`, `not in the manifest`.
    pub problem: String,
}

/// Result of a failed [`verify_tree`].
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("{} difference(s) from the manifest, first: {}: {}", .problems.len(),
        .problems.first().map(|p| p.path.as_str()).unwrap_or("?"),
        .problems.first().map(|p| p.problem.as_str()).unwrap_or("?"))]
    /// The tree differs from the manifest.
    Mismatch {
        /// Every difference found, in path order, at most 1000.
        problems: Vec<TreeProblem>,
    },
    /// The tree could not be read (other than an entry being missing, which
    /// is a [`TreeProblem`]).
    #[error("{path}: {source}")]
    Io {
        /// What could not be read.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
}

/// At most this many problems are collected.
const MAX_PROBLEMS: usize = 1000;

/// Checks `dest` against `manifest`: types, sizes, modes, link targets,
/// owners and device numbers, and no entries beyond the manifest. With
/// `full`, file contents are re-hashed too.
pub fn verify_tree(dest: &Path, manifest: &Manifest, full: bool) -> Result<(), TreeError> {
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    walk(dest, dest, &mut |rel, path, meta| {
        seen.insert(rel.to_string());
        let Some(expected) = manifest.entries.get(rel) else {
            problems.push(TreeProblem {
                path: rel.into(),
                problem: "not in the manifest".into(),
            });
            return Ok(());
        };
        if let Some(problem) = compare(path, meta, expected, full)? {
            problems.push(TreeProblem {
                path: rel.into(),
                problem,
            });
        }
        Ok(())
    })?;
    for path in manifest.entries.keys() {
        if !seen.contains(path) {
            problems.push(TreeProblem {
                path: path.clone(),
                problem: "missing".into(),
            });
        }
    }
    problems.truncate(MAX_PROBLEMS);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(TreeError::Mismatch { problems })
    }
}

type Visit<'a> = dyn FnMut(&str, &Path, &fs::Metadata) -> Result<(), TreeError> + 'a;

fn walk(root: &Path, dir: &Path, visit: &mut Visit<'_>) -> Result<(), TreeError> {
    let io_err = |path: &Path, source| TreeError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut names: Vec<_> = fs::read_dir(dir)
        .map_err(|e| io_err(dir, e))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(|e| io_err(dir, e))?;
    names.sort();
    for name in names {
        let path = dir.join(&name);
        let meta = fs::symlink_metadata(&path).map_err(|e| io_err(&path, e))?;
        let rel = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .to_string_lossy()
            .into_owned();
        visit(&rel, &path, &meta)?;
        if meta.file_type().is_dir() {
            walk(root, &path, visit)?;
        }
    }
    Ok(())
}

fn kind_of(meta: &fs::Metadata) -> Option<EntryKind> {
    let t = meta.file_type();
    Some(if t.is_file() {
        EntryKind::File
    } else if t.is_dir() {
        EntryKind::Dir
    } else if t.is_symlink() {
        EntryKind::Symlink
    } else if t.is_char_device() {
        EntryKind::Char
    } else if t.is_block_device() {
        EntryKind::Block
    } else if t.is_fifo() {
        EntryKind::Fifo
    } else {
        return None;
    })
}

fn compare(
    path: &Path,
    meta: &fs::Metadata,
    expected: &ManifestEntry,
    full: bool,
) -> Result<Option<String>, TreeError> {
    let kind = kind_of(meta);
    if kind != Some(expected.kind) {
        return Ok(Some(format!("is {kind:?}, expected {:?}", expected.kind)));
    }
    if expected.kind != EntryKind::Symlink && meta.mode() & 0o7777 != expected.mode {
        return Ok(Some(format!(
            "mode {:o}, expected {:o}",
            meta.mode() & 0o7777,
            expected.mode
        )));
    }
    if let Some((uid, gid)) = expected.owner {
        if (meta.uid(), meta.gid()) != (uid, gid) {
            return Ok(Some(format!(
                "owner {}:{}, expected {uid}:{gid}",
                meta.uid(),
                meta.gid()
            )));
        }
    }
    match expected.kind {
        EntryKind::File => {
            if meta.len() != expected.size {
                return Ok(Some(format!(
                    "size {}, expected {}",
                    meta.len(),
                    expected.size
                )));
            }
            if full {
                let digest = hash_file(path).map_err(|source| TreeError::Io {
                    path: path.into(),
                    source,
                })?;
                if Some(digest) != expected.sha256 {
                    return Ok(Some("content differs (sha256)".into()));
                }
            }
        }
        EntryKind::Symlink => {
            let target = fs::read_link(path).map_err(|source| TreeError::Io {
                path: path.into(),
                source,
            })?;
            if Some(target.to_string_lossy().as_ref()) != expected.link.as_deref() {
                return Ok(Some(format!(
                    "points to {}, expected {:?}",
                    target.display(),
                    expected.link
                )));
            }
        }
        EntryKind::Char | EntryKind::Block => {
            if Some(meta.rdev()) != expected.rdev {
                return Ok(Some("device number differs".into()));
            }
        }
        EntryKind::Dir | EntryKind::Fifo => {}
    }
    Ok(None)
}

fn hash_file(path: &Path) -> io::Result<Sha256Digest> {
    let mut file = fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(Sha256Digest(hasher.finalize().into()))
}
