//! An image described in memory before it is written anywhere.
//!
//! Packages (tar.gz) and the CD's initramfs (newc cpio) are both rendered
//! from an [`ImageTree`]: a sorted map from path to entry. Keeping the image
//! in memory first makes the archives reproducible by construction (entries
//! come out sorted, owners and times are set by the renderer, never read
//! from the host) and lets an image hold device nodes without the builder
//! being able to `mknod`.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("{path:?} is not a usable image path: {reason}")]
    BadPath { path: String, reason: &'static str },
    #[error("{0} is already in the image")]
    Exists(String),
    #[error("cannot put {path} in the image: {parent} is not a directory there")]
    ParentNotDir { path: String, parent: String },
    #[error("{}: {source}", path.display())]
    Host {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: is a {kind}, which an image cannot hold", path.display())]
    Unsupported { path: PathBuf, kind: &'static str },
}

/// Where a regular file's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileData {
    /// A file on the build host, read when the image is rendered.
    Host(PathBuf),
    /// Bytes made by the builder (configuration files).
    Bytes(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File(FileData),
    Symlink(String),
    CharDevice { major: u32, minor: u32 },
    BlockDevice { major: u32, minor: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: EntryKind,
    /// Permission bits only (`0o7777`); the file type is `kind`.
    pub mode: u32,
}

/// A checked relative path inside an image: `/`-separated, no `.`/`..`,
/// no empty components, no NUL. Leading and trailing `/` are dropped.
pub fn image_path(path: &str) -> Result<String, TreeError> {
    let bad = |reason| TreeError::BadPath {
        path: path.to_string(),
        reason,
    };
    let trimmed = path.trim_matches('/');
    if trimmed.is_empty() {
        return Err(bad("empty (the image root is implicit)"));
    }
    if trimmed.contains('\0') {
        return Err(bad("contains NUL"));
    }
    for part in trimmed.split('/') {
        match part {
            "" => return Err(bad("empty component")),
            "." | ".." => return Err(bad("`.` or `..` component")),
            _ => {}
        }
    }
    Ok(trimmed.to_string())
}

/// A whole image: path (relative, see [`image_path`]) → entry, sorted by
/// path bytes, so parents always precede their children.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageTree {
    entries: BTreeMap<String, Entry>,
}

impl ImageTree {
    pub fn new() -> ImageTree {
        ImageTree::default()
    }

    pub fn entries(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.entries.iter().map(|(p, e)| (p.as_str(), e))
    }

    pub fn get(&self, path: &str) -> Option<&Entry> {
        image_path(path).ok().and_then(|p| self.entries.get(&p))
    }

    pub fn contains(&self, path: &str) -> bool {
        self.get(path).is_some()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Creates `path` and its missing parents as directories (`mkdir -p`).
    /// An existing directory keeps its mode unless `mode` is given again
    /// for exactly that path, which sets it.
    pub fn dir(&mut self, path: &str, mode: u32) -> Result<(), TreeError> {
        let path = image_path(path)?;
        self.parents(&path)?;
        match self.entries.get_mut(&path) {
            Some(Entry {
                kind: EntryKind::Dir,
                mode: existing,
            }) => {
                *existing = mode & 0o7777;
                Ok(())
            }
            Some(_) => Err(TreeError::Exists(path)),
            None => {
                self.entries.insert(
                    path,
                    Entry {
                        kind: EntryKind::Dir,
                        mode: mode & 0o7777,
                    },
                );
                Ok(())
            }
        }
    }

    /// Makes sure every parent of `path` is a directory, creating missing ones 0755.
    fn parents(&mut self, path: &str) -> Result<(), TreeError> {
        let mut prefix_end = 0;
        while let Some(offset) = path[prefix_end..].find('/') {
            let parent = &path[..prefix_end + offset];
            match self.entries.get(parent) {
                Some(Entry {
                    kind: EntryKind::Dir,
                    ..
                }) => {}
                Some(_) => {
                    return Err(TreeError::ParentNotDir {
                        path: path.to_string(),
                        parent: parent.to_string(),
                    })
                }
                None => {
                    self.entries.insert(
                        parent.to_string(),
                        Entry {
                            kind: EntryKind::Dir,
                            mode: 0o755,
                        },
                    );
                }
            }
            prefix_end += offset + 1;
        }
        Ok(())
    }

    /// Adds a non-directory entry; fails if `path` exists.
    pub fn insert(&mut self, path: &str, kind: EntryKind, mode: u32) -> Result<(), TreeError> {
        let path = image_path(path)?;
        if self.entries.contains_key(&path) {
            return Err(TreeError::Exists(path));
        }
        self.parents(&path)?;
        self.entries.insert(
            path,
            Entry {
                kind,
                mode: mode & 0o7777,
            },
        );
        Ok(())
    }

    /// Adds an entry unless `path` already exists (then it is left alone and
    /// `false` returned): for links that must not shadow a real program.
    pub fn insert_if_absent(
        &mut self,
        path: &str,
        kind: EntryKind,
        mode: u32,
    ) -> Result<bool, TreeError> {
        let checked = image_path(path)?;
        if self.entries.contains_key(&checked) {
            return Ok(false);
        }
        self.insert(&checked, kind, mode)?;
        Ok(true)
    }

    pub fn bytes(
        &mut self,
        path: &str,
        data: impl Into<Vec<u8>>,
        mode: u32,
    ) -> Result<(), TreeError> {
        self.insert(path, EntryKind::File(FileData::Bytes(data.into())), mode)
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> Result<(), TreeError> {
        self.insert(path, EntryKind::Symlink(target.to_string()), 0o777)
    }

    pub fn char_device(
        &mut self,
        path: &str,
        major: u32,
        minor: u32,
        mode: u32,
    ) -> Result<(), TreeError> {
        self.insert(path, EntryKind::CharDevice { major, minor }, mode)
    }

    /// Adds the host file `host` (following symlinks) at `path`, with the
    /// host file's permission bits. Opens it now so a missing or unreadable
    /// input fails the build before anything is written.
    pub fn host_file(&mut self, path: &str, host: &Path) -> Result<(), TreeError> {
        let meta = check_readable(host)?;
        if !meta.is_file() {
            return Err(TreeError::Host {
                path: host.to_path_buf(),
                source: io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"),
            });
        }
        self.insert(
            path,
            EntryKind::File(FileData::Host(host.to_path_buf())),
            meta.permissions().mode(),
        )
    }

    /// Like [`host_file`](Self::host_file) with an explicit mode.
    pub fn host_file_mode(&mut self, path: &str, host: &Path, mode: u32) -> Result<(), TreeError> {
        self.host_file(path, host)?;
        self.set_mode(path, mode);
        Ok(())
    }

    /// Adds a host directory tree under `prefix` (`""` for the image root):
    /// directories, regular files (hard links become copies) and symlinks
    /// as they are. Device nodes are taken only if `devices` is true;
    /// otherwise they, sockets and FIFOs are skipped and returned, so the
    /// caller can say what was left out.
    pub fn import_dir(
        &mut self,
        prefix: &str,
        host: &Path,
        devices: bool,
    ) -> Result<Vec<PathBuf>, TreeError> {
        let mut skipped = Vec::new();
        let prefix = prefix.trim_matches('/').to_string();
        if !prefix.is_empty() {
            let meta = check_readable(host)?;
            self.dir(&prefix, meta.permissions().mode())?;
        }
        self.import_children(&prefix, host, devices, &mut skipped)?;
        Ok(skipped)
    }

    fn import_children(
        &mut self,
        prefix: &str,
        host: &Path,
        devices: bool,
        skipped: &mut Vec<PathBuf>,
    ) -> Result<(), TreeError> {
        let host_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| TreeError::Host { path, source }
        };
        let mut children: Vec<_> = fs::read_dir(host)
            .map_err(host_err(host))?
            .map(|entry| entry.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .map_err(host_err(host))?;
        children.sort();
        for child in children {
            let Some(name) = child.file_name().and_then(|n| n.to_str()) else {
                return Err(TreeError::Unsupported {
                    path: child.clone(),
                    kind: "file with a non-UTF-8 name",
                });
            };
            let path = if prefix.is_empty() {
                name.to_string()
            } else {
                format!("{prefix}/{name}")
            };
            let meta = fs::symlink_metadata(&child).map_err(host_err(&child))?;
            let mode = meta.permissions().mode();
            let file_type = meta.file_type();
            if file_type.is_dir() {
                self.dir(&path, mode)?;
                self.import_children(&path, &child, devices, skipped)?;
            } else if file_type.is_symlink() {
                let target = fs::read_link(&child).map_err(host_err(&child))?;
                let Some(target) = target.to_str() else {
                    return Err(TreeError::Unsupported {
                        path: child.clone(),
                        kind: "symlink with a non-UTF-8 target",
                    });
                };
                self.symlink(&path, target)?;
            } else if file_type.is_file() {
                self.insert(&path, EntryKind::File(FileData::Host(child.clone())), mode)?;
            } else if devices && (file_type.is_char_device() || file_type.is_block_device()) {
                let (major, minor) = split_dev(meta.rdev());
                let kind = if file_type.is_char_device() {
                    EntryKind::CharDevice { major, minor }
                } else {
                    EntryKind::BlockDevice { major, minor }
                };
                self.insert(&path, kind, mode)?;
            } else {
                skipped.push(child.clone());
            }
        }
        Ok(())
    }

    /// Sets the permission bits of an existing entry; returns whether it exists.
    pub fn set_mode(&mut self, path: &str, mode: u32) -> bool {
        let Ok(path) = image_path(path) else {
            return false;
        };
        match self.entries.get_mut(&path) {
            Some(entry) => {
                entry.mode = mode & 0o7777;
                true
            }
            None => false,
        }
    }

    /// Removes `path` and everything under it; returns whether it existed.
    pub fn remove(&mut self, path: &str) -> bool {
        let Ok(path) = image_path(path) else {
            return false;
        };
        let below = format!("{path}/");
        let existed = self.entries.remove(&path).is_some();
        self.entries.retain(|p, _| !p.starts_with(&below));
        existed
    }

    /// Sum of regular-file sizes (for progress bars and size reports).
    pub fn file_bytes(&self) -> u64 {
        self.entries
            .values()
            .map(|e| match &e.kind {
                EntryKind::File(FileData::Bytes(b)) => b.len() as u64,
                EntryKind::File(FileData::Host(p)) => fs::metadata(p).map(|m| m.len()).unwrap_or(0),
                _ => 0,
            })
            .sum()
    }
}

fn split_dev(rdev: u64) -> (u32, u32) {
    // glibc's gnu_dev_major / gnu_dev_minor.
    let major = ((rdev >> 32) & 0xffff_f000) | ((rdev >> 8) & 0x0000_0fff);
    let minor = ((rdev >> 12) & 0xffff_ff00) | (rdev & 0x0000_00ff);
    (major as u32, minor as u32)
}

fn check_readable(host: &Path) -> Result<fs::Metadata, TreeError> {
    let err = |source| TreeError::Host {
        path: host.to_path_buf(),
        source,
    };
    let meta = fs::metadata(host).map_err(err)?;
    if meta.is_file() {
        fs::File::open(host).map_err(err)?;
    }
    Ok(meta)
}

/// Reads a host path for an image, naming the file in the error.
pub(crate) fn open_host(path: &Path) -> io::Result<fs::File> {
    fs::File::open(path).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

impl Entry {
    /// Size of the file content, reading host metadata when needed.
    pub(crate) fn file_len(&self) -> io::Result<u64> {
        match &self.kind {
            EntryKind::File(FileData::Bytes(b)) => Ok(b.len() as u64),
            EntryKind::File(FileData::Host(p)) => fs::metadata(p)
                .map(|m| m.len())
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display()))),
            _ => Ok(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_checked_and_parents_made() {
        let mut tree = ImageTree::new();
        tree.bytes("/etc/plnode/cd.toml", "x", 0o644).unwrap();
        assert_eq!(tree.get("etc").unwrap().kind, EntryKind::Dir);
        assert_eq!(tree.get("etc/plnode").unwrap().kind, EntryKind::Dir);
        assert!(matches!(
            tree.bytes("etc/plnode/cd.toml", "y", 0o644),
            Err(TreeError::Exists(_))
        ));
        assert!(matches!(
            tree.bytes("etc/plnode/cd.toml/x", "y", 0o644),
            Err(TreeError::ParentNotDir { .. })
        ));
        for bad in ["", "/", "a/../b", "a//b", "./a", "a\0b"] {
            assert!(
                matches!(image_path(bad), Err(TreeError::BadPath { .. })),
                "{bad:?}"
            );
        }
        assert!(!tree
            .insert_if_absent("etc/plnode/cd.toml", EntryKind::Symlink("/x".into()), 0o777)
            .unwrap());
        let order: Vec<&str> = tree.entries().map(|(p, _)| p).collect();
        assert_eq!(order, ["etc", "etc/plnode", "etc/plnode/cd.toml"]);
    }

    #[test]
    fn missing_host_file_fails_when_added() {
        let mut tree = ImageTree::new();
        let e = tree
            .host_file("bin/x", Path::new("/nonexistent/file"))
            .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/file"), "{e}");
    }
}
