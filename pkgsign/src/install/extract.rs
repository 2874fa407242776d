//! Safe extraction of a tar stream into a fresh directory.
//!
//! Every entry is checked before anything is written: no `..`, no absolute
//! paths, nothing written through a symlink, no link that leads outside the
//! tree, no device nodes, FIFOs or setuid/setgid bits unless the package is
//! a base image, and no more content than the signed `unpacked_length`.
//! The destination must be a directory that only this extractor writes to
//! (the installer's private staging directory).

use std::cell::Cell;
use std::collections::HashSet;
use std::ffi::CString;
use std::fs;
use std::io::{self, BufRead, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use sha2::{Digest, Sha256};
use tar::EntryType;

use super::manifest::{EntryKind, Manifest, ManifestEntry};
use super::write::FileWriter;
use crate::metadata::Sha256Digest;

/// What a package may contain.
#[derive(Debug, Clone)]
pub struct ExtractPolicy {
    /// Base images may hold device nodes, FIFOs, setuid/setgid files and
    /// absolute symlinks (meaning: inside this tree once it is the root).
    pub base_image: bool,
    /// Set owners from the archive (base images, when running as root).
    pub preserve_ownership: bool,
    /// Most regular-file content accepted, in bytes.
    pub max_unpacked: u64,
}

/// Why extraction stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// An entry breaks an extraction rule (`..` or an absolute path, a path
    /// through a symlink, a link leading out of the tree, a device node,
    /// FIFO or setuid/setgid bit outside a base image, an unsupported entry
    /// type); nothing of it was written.
    #[error("archive entry {entry:?}: {reason}")]
    Unsafe {
        /// The entry's path as the archive gives it (lossy UTF-8).
        entry: String,
        /// Which rule, for people.
        reason: String,
    },
    /// Regular-file content went past [`ExtractPolicy::max_unpacked`] (the
    /// decompression-bomb defence; nothing past the limit was written).
    #[error("unpacked content exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The stream is not a readable tar (bad header or checksum, bad
    /// compression upstream), reading it failed, or it holds far more tar
    /// framing than its entries account for (a bomb made of headers); the
    /// source is the reader's error.
    #[error("archive is unreadable: {0}")]
    Corrupt(#[source] io::Error),
    /// Writing into the destination failed (disk full, permissions).
    #[error("writing {path}: {source}")]
    Io {
        /// The file or directory being written.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
}

/// Counts of what was extracted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExtractStats {
    /// Archive entries written (files, directories, links, nodes).
    pub entries: u64,
    /// Bytes of regular-file content written (what `max_unpacked` bounds).
    pub unpacked_bytes: u64,
}

/// Bytes of tar framing (headers, padding, long names) allowed beyond the
/// accepted file content: keeps memory and work bounded for hostile streams.
const FRAMING_SLACK: u64 = 64 * 1024 * 1024;
const FRAMING_PER_ENTRY: u64 = 2048;
const COPY_BUFFER: usize = 512 * 1024;

/// Extracts the (decompressed) tar stream `reader` into `dest`, recording
/// every entry in `manifest` under `prefix` (empty, or `name/`).
pub fn extract_tar<R: Read>(
    reader: R,
    dest: &Path,
    prefix: &str,
    policy: &ExtractPolicy,
    manifest: &mut Manifest,
) -> Result<ExtractStats, ExtractError> {
    let buffered = io::BufReader::with_capacity(256 * 1024, reader);
    extract_buffered(buffered, dest, prefix, policy, manifest)
}

/// [`extract_tar`] for a stream that is buffered already: the tar entries
/// read straight from its buffer.
pub(super) fn extract_buffered<R: BufRead>(
    reader: R,
    dest: &Path,
    prefix: &str,
    policy: &ExtractPolicy,
    manifest: &mut Manifest,
) -> Result<ExtractStats, ExtractError> {
    let allowance = Rc::new(Cell::new(FRAMING_SLACK));
    let capped = FramingCap {
        inner: reader,
        read: 0,
        allowance: allowance.clone(),
    };
    let mut archive = tar::Archive::new(capped);
    std::thread::scope(|scope| {
        let writer = FileWriter::start(scope).map_err(|source| ExtractError::Io {
            path: dest.to_path_buf(),
            source,
        })?;
        let mut extractor = Extractor {
            dest,
            prefix,
            policy,
            manifest,
            stats: ExtractStats::default(),
            known_dirs: HashSet::new(),
            dir_modes: Vec::new(),
            writer,
            allowance,
        };
        let entries = archive.entries().map_err(ExtractError::Corrupt)?;
        for entry in entries {
            let mut entry = entry.map_err(ExtractError::Corrupt)?;
            extractor.stats.entries += 1;
            extractor.grant(FRAMING_PER_ENTRY);
            extractor.entry(&mut entry)?;
        }
        let Extractor {
            writer,
            dir_modes,
            stats,
            ..
        } = extractor;
        writer.finish()?;
        finish_dirs(dir_modes)?;
        Ok(stats)
    })
}

/// Fails the stream once it grows past what the accepted entries explain.
struct FramingCap<R> {
    inner: R,
    read: u64,
    allowance: Rc<Cell<u64>>,
}

impl<R: Read> Read for FramingCap<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read > self.allowance.get() {
            return Err(io::Error::other(
                "tar stream larger than its entries account for (decompression bomb?)",
            ));
        }
        Ok(n)
    }
}

/// A directory's final mode and owner, applied after its contents.
type DirMode = (PathBuf, u32, Option<(u32, u32)>);

struct Extractor<'a, 'scope> {
    dest: &'a Path,
    prefix: &'a str,
    policy: &'a ExtractPolicy,
    manifest: &'a mut Manifest,
    stats: ExtractStats,
    /// Directories already checked to be real directories inside `dest`.
    known_dirs: HashSet<PathBuf>,
    /// Modes applied at the end, so that read-only directories can be filled first.
    dir_modes: Vec<DirMode>,
    /// Writes regular files' content (see [`super::write`]).
    writer: FileWriter<'scope>,
    allowance: Rc<Cell<u64>>,
}

/// Splits an archive path into components: rejects absolute paths, `..`
/// and non-UTF-8 names; drops `.` and empty components.
fn split_path(raw: &[u8]) -> Result<Vec<&str>, String> {
    let text = std::str::from_utf8(raw).map_err(|_| "name is not UTF-8".to_string())?;
    if text.starts_with('/') {
        return Err("absolute path".into());
    }
    let mut out = Vec::new();
    for component in text.split('/') {
        match component {
            "" | "." => {}
            ".." => return Err("path contains `..`".into()),
            c if c.contains('\0') => return Err("name contains NUL".into()),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// A symlink at depth `parent_depth` (components of its directory below
/// the package root) may point: down the tree; up at most `parent_depth`
/// levels with leading `..` only; or, in base images, to an absolute path
/// without `..` (meaningful inside the tree once it is the root).
fn check_symlink_target(target: &str, parent_depth: usize, base_image: bool) -> Result<(), String> {
    if target.is_empty() || target.contains('\0') {
        return Err("empty symlink target".into());
    }
    let absolute = target.starts_with('/');
    if absolute && !base_image {
        return Err(format!(
            "absolute symlink to {target:?} (allowed only in base images)"
        ));
    }
    let mut ups = 0usize;
    let mut descended = false;
    for component in target.split('/') {
        match component {
            "" | "." => {}
            ".." if absolute || descended => {
                return Err(format!("symlink target {target:?} has `..` after a name"));
            }
            ".." => ups += 1,
            _ => descended = true,
        }
    }
    if ups > parent_depth {
        return Err(format!("symlink to {target:?} leads outside the tree"));
    }
    Ok(())
}

impl Extractor<'_, '_> {
    fn grant(&self, bytes: u64) {
        self.allowance
            .set(self.allowance.get().saturating_add(bytes));
    }

    fn unsafe_entry(entry: &str, reason: impl Into<String>) -> ExtractError {
        ExtractError::Unsafe {
            entry: entry.to_string(),
            reason: reason.into(),
        }
    }

    fn key(&self, components: &[&str]) -> String {
        format!("{}{}", self.prefix, components.join("/"))
    }

    fn path_of(&self, components: &[&str]) -> PathBuf {
        let mut path = self.dest.to_path_buf();
        path.extend(components);
        path
    }

    fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ExtractError + '_ {
        move |source| ExtractError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Makes sure every parent of `components` is a real directory,
    /// creating missing ones; never follows a symlink.
    fn ensure_parents(
        &mut self,
        name: &str,
        components: &[&str],
        create: bool,
    ) -> Result<(), ExtractError> {
        for depth in 1..components.len() {
            let path = self.path_of(&components[..depth]);
            if self.known_dirs.contains(&path) {
                continue;
            }
            match fs::symlink_metadata(&path) {
                Ok(meta) if meta.file_type().is_dir() => {}
                Ok(meta) if meta.file_type().is_symlink() => {
                    return Err(Self::unsafe_entry(
                        name,
                        format!(
                            "would write through symlink {}",
                            components[..depth].join("/")
                        ),
                    ));
                }
                Ok(_) => {
                    return Err(Self::unsafe_entry(
                        name,
                        format!("{} is not a directory", components[..depth].join("/")),
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                    fs::DirBuilder::new()
                        .mode(0o700)
                        .create(&path)
                        .map_err(Self::io_err(&path))?;
                    let key = self.key(&components[..depth]);
                    self.manifest.entries.insert(key, dir_entry(0o755, None));
                    self.dir_modes.push((path.clone(), 0o755, None));
                }
                Err(e) => return Err(ExtractError::Io { path, source: e }),
            }
            self.known_dirs.insert(path);
        }
        Ok(())
    }

    /// Creates a new entry at `path` with `create`. Where the name is taken,
    /// the way is cleared first ([`Self::clear_target`]) and `create` tried
    /// once more; an existing directory satisfies a directory entry. Trying
    /// first saves a lookup per entry: names are rarely repeated.
    fn create_fresh<T>(
        &mut self,
        name: &str,
        path: &Path,
        is_dir: bool,
        mut create: impl FnMut(&Path) -> io::Result<T>,
    ) -> Result<Option<T>, ExtractError> {
        match create(path) {
            Ok(made) => return Ok(Some(made)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Self::io_err(path)(e)),
        }
        if self.clear_target(name, path, is_dir)? {
            return Ok(None);
        }
        create(path).map(Some).map_err(Self::io_err(path))
    }

    /// Clears the way for a new entry at `path`: a later entry replaces an
    /// earlier non-directory; nothing replaces a directory except a directory.
    /// Returns whether `path` is a directory to keep.
    fn clear_target(
        &mut self,
        name: &str,
        path: &Path,
        is_dir: bool,
    ) -> Result<bool, ExtractError> {
        match fs::symlink_metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(ExtractError::Io {
                path: path.to_path_buf(),
                source: e,
            }),
            Ok(meta) if meta.file_type().is_dir() => {
                if is_dir {
                    Ok(true)
                } else {
                    Err(Self::unsafe_entry(name, "would replace a directory"))
                }
            }
            Ok(_) => {
                fs::remove_file(path).map_err(Self::io_err(path))?;
                Ok(false)
            }
        }
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), ExtractError> {
        let raw_path = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw_path).into_owned();
        let header = entry.header();
        let entry_type = header.entry_type();
        if entry_type == EntryType::XGlobalHeader {
            return Ok(());
        }
        let components = split_path(&raw_path).map_err(|r| Self::unsafe_entry(&name, r))?;
        let mode = header.mode().map_err(ExtractError::Corrupt)? & 0o7777;
        if mode & 0o6000 != 0 && !self.policy.base_image {
            return Err(Self::unsafe_entry(
                &name,
                format!("setuid/setgid mode {mode:o} (allowed only in base images)"),
            ));
        }
        let owner = if self.policy.preserve_ownership {
            let uid = header.uid().map_err(ExtractError::Corrupt)?;
            let gid = header.gid().map_err(ExtractError::Corrupt)?;
            match (u32::try_from(uid), u32::try_from(gid)) {
                (Ok(u), Ok(g)) => Some((u, g)),
                _ => return Err(Self::unsafe_entry(&name, "owner id out of range")),
            }
        } else {
            None
        };
        if components.is_empty() {
            // `./` itself: the tree's root directory.
            if entry_type != EntryType::Directory {
                return Err(Self::unsafe_entry(
                    &name,
                    "names the root of the tree but is not a directory",
                ));
            }
            let key = self.prefix.trim_end_matches('/').to_string();
            if !key.is_empty() {
                self.manifest.entries.insert(key, dir_entry(mode, owner));
            }
            self.dir_modes.push((self.dest.to_path_buf(), mode, owner));
            return Ok(());
        }
        self.ensure_parents(&name, &components, true)?;
        let path = self.path_of(&components);
        let key = self.key(&components);
        let manifest_entry = match entry_type {
            EntryType::Regular | EntryType::Continuous => {
                self.regular_file(&name, entry, &path, mode, owner)?
            }
            EntryType::Directory => {
                if !self.known_dirs.contains(&path) {
                    self.create_fresh(&name, &path, true, |path| {
                        fs::DirBuilder::new().mode(0o700).create(path)
                    })?;
                }
                self.known_dirs.insert(path.clone());
                self.dir_modes.push((path.clone(), mode, owner));
                dir_entry(mode, owner)
            }
            EntryType::Symlink => self.symlink(&name, entry, &components, &path, owner)?,
            EntryType::Link => self.hard_link(&name, entry, &path)?,
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                self.special(&name, entry, entry_type, &path, mode, owner)?
            }
            other => {
                return Err(Self::unsafe_entry(
                    &name,
                    format!("unsupported entry type {other:?}"),
                ))
            }
        };
        self.manifest.entries.insert(key, manifest_entry);
        Ok(())
    }

    fn regular_file<R: Read>(
        &mut self,
        name: &str,
        entry: &mut tar::Entry<'_, R>,
        path: &Path,
        mode: u32,
        owner: Option<(u32, u32)>,
    ) -> Result<ManifestEntry, ExtractError> {
        let size = entry.size();
        let total = self.stats.unpacked_bytes.saturating_add(size);
        if total > self.policy.max_unpacked {
            return Err(ExtractError::TooLarge {
                limit: self.policy.max_unpacked,
            });
        }
        self.stats.unpacked_bytes = total;
        self.grant(size.saturating_add(512));
        let file = self
            .create_fresh(name, path, false, |path| {
                fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                    .open(path)
            })?
            .ok_or_else(|| Self::unsafe_entry(name, "would replace a directory"))?;
        self.writer.open(file, path.to_path_buf());
        let mut hasher = Sha256::new();
        let mut written = 0u64;
        while written < size {
            let want = usize::try_from(size - written)
                .unwrap_or(usize::MAX)
                .min(COPY_BUFFER);
            let filled = self.writer.data(want, |buf| fill(entry, buf))?;
            if filled.is_empty() {
                break;
            }
            hasher.update(filled);
            written += filled.len() as u64;
            self.writer.maybe_send()?;
        }
        if written != size {
            return Err(Self::unsafe_entry(
                name,
                format!("holds {written} bytes, header says {size}"),
            ));
        }
        self.writer.close(mode, owner)?;
        Ok(ManifestEntry {
            kind: EntryKind::File,
            mode,
            size,
            sha256: Some(Sha256Digest(hasher.finalize().into())),
            link: None,
            owner,
            rdev: None,
        })
    }

    fn symlink<R: Read>(
        &mut self,
        name: &str,
        entry: &tar::Entry<'_, R>,
        components: &[&str],
        path: &Path,
        owner: Option<(u32, u32)>,
    ) -> Result<ManifestEntry, ExtractError> {
        let target = entry
            .link_name_bytes()
            .ok_or_else(|| Self::unsafe_entry(name, "symlink without a target"))?
            .into_owned();
        let target = String::from_utf8(target)
            .map_err(|_| Self::unsafe_entry(name, "symlink target is not UTF-8"))?;
        check_symlink_target(&target, components.len() - 1, self.policy.base_image)
            .map_err(|r| Self::unsafe_entry(name, r))?;
        self.create_fresh(name, path, false, |path| {
            std::os::unix::fs::symlink(&target, path)
        })?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(Self::io_err(path))?;
        }
        Ok(ManifestEntry {
            kind: EntryKind::Symlink,
            mode: 0,
            size: 0,
            sha256: None,
            link: Some(target),
            owner,
            rdev: None,
        })
    }

    fn hard_link<R: Read>(
        &mut self,
        name: &str,
        entry: &tar::Entry<'_, R>,
        path: &Path,
    ) -> Result<ManifestEntry, ExtractError> {
        let raw = entry
            .link_name_bytes()
            .ok_or_else(|| Self::unsafe_entry(name, "hard link without a target"))?
            .into_owned();
        let target_components = split_path(&raw)
            .map_err(|r| Self::unsafe_entry(name, format!("hard link target: {r}")))?;
        if target_components.is_empty() {
            return Err(Self::unsafe_entry(name, "hard link to the root"));
        }
        self.ensure_parents(name, &target_components, false)?;
        let target = self.path_of(&target_components);
        if target == path {
            return Err(Self::unsafe_entry(name, "hard link to itself"));
        }
        match fs::symlink_metadata(&target) {
            Ok(meta) if meta.file_type().is_file() => {}
            Ok(_) => {
                return Err(Self::unsafe_entry(
                    name,
                    "hard link target is not a regular file",
                ))
            }
            Err(_) => {
                return Err(Self::unsafe_entry(
                    name,
                    "hard link target is not in the archive before it",
                ))
            }
        }
        let recorded = self
            .manifest
            .entries
            .get(&self.key(&target_components))
            .cloned()
            .ok_or_else(|| Self::unsafe_entry(name, "hard link target is not in this package"))?;
        self.create_fresh(name, path, false, |path| fs::hard_link(&target, path))?;
        Ok(recorded)
    }

    fn special<R: Read>(
        &mut self,
        name: &str,
        entry: &tar::Entry<'_, R>,
        entry_type: EntryType,
        path: &Path,
        mode: u32,
        owner: Option<(u32, u32)>,
    ) -> Result<ManifestEntry, ExtractError> {
        if !self.policy.base_image {
            return Err(Self::unsafe_entry(
                name,
                "device node or FIFO (allowed only in base images)",
            ));
        }
        let header = entry.header();
        let (kind, file_type, rdev) = match entry_type {
            EntryType::Fifo => (EntryKind::Fifo, libc::S_IFIFO, 0),
            _ => {
                let major = header
                    .device_major()
                    .map_err(ExtractError::Corrupt)?
                    .unwrap_or(0);
                let minor = header
                    .device_minor()
                    .map_err(ExtractError::Corrupt)?
                    .unwrap_or(0);
                let rdev = libc::makedev(major, minor);
                if entry_type == EntryType::Char {
                    (EntryKind::Char, libc::S_IFCHR, rdev)
                } else {
                    (EntryKind::Block, libc::S_IFBLK, rdev)
                }
            }
        };
        let c_path = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| Self::unsafe_entry(name, "name contains NUL"))?;
        self.create_fresh(name, path, false, |_| {
            // SAFETY: c_path is a valid NUL-terminated string; mknod does not retain it.
            if unsafe { libc::mknod(c_path.as_ptr(), file_type | mode, rdev) } == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        })?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(Self::io_err(path))?;
        }
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(Self::io_err(path))?;
        Ok(ManifestEntry {
            kind,
            mode,
            size: 0,
            sha256: None,
            link: None,
            owner,
            rdev: if kind == EntryKind::Fifo {
                None
            } else {
                Some(rdev)
            },
        })
    }
}

/// Applies directory owners and modes, deepest first.
fn finish_dirs(mut dirs: Vec<DirMode>) -> Result<(), ExtractError> {
    // Later entries for the same directory win: keep the last of each.
    let mut seen = HashSet::new();
    dirs.reverse();
    dirs.retain(|(path, _, _)| seen.insert(path.clone()));
    dirs.sort_by_key(|(path, _, _)| std::cmp::Reverse(path.components().count()));
    for (path, mode, owner) in dirs {
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::lchown(&path, Some(uid), Some(gid))
                .map_err(Extractor::io_err(&path))?;
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))
            .map_err(Extractor::io_err(&path))?;
    }
    Ok(())
}

/// Reads until `buf` is full or the stream ends.
fn fill(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn dir_entry(mode: u32, owner: Option<(u32, u32)>) -> ManifestEntry {
    ManifestEntry {
        kind: EntryKind::Dir,
        mode,
        size: 0,
        sha256: None,
        link: None,
        owner,
        rdev: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlink_rules() {
        assert!(check_symlink_target("libc.so.6", 0, false).is_ok());
        assert!(check_symlink_target("../lib/x", 1, false).is_ok());
        assert!(check_symlink_target("../../lib/x", 1, false).is_err());
        assert!(check_symlink_target("a/../../b", 3, false).is_err());
        assert!(check_symlink_target("/usr/lib", 0, false).is_err());
        assert!(check_symlink_target("/usr/lib", 0, true).is_ok());
        assert!(check_symlink_target("/usr/../../etc", 0, true).is_err());
        assert!(check_symlink_target("", 0, true).is_err());
    }

    #[test]
    fn path_rules() {
        assert_eq!(split_path(b"./a//b/./c").unwrap(), vec!["a", "b", "c"]);
        assert!(split_path(b"/etc/passwd").is_err());
        assert!(split_path(b"a/../../b").is_err());
        assert!(split_path(b"a/\xff").is_err());
    }
}
