//! Reproducible renderings of an [`ImageTree`]: gzip'd tar (packages) and
//! newc cpio (initramfs).
//!
//! Same tree and same `mtime` → same bytes: entries in path order, owner
//! and group 0 with no names, every time stamp set to `mtime`, inode numbers
//! counted in path order, gzip header without a name or time.

use std::io::{self, Read, Write};

use flate2::{Compression, GzBuilder};
use indicatif::ProgressBar;

use crate::tree::{open_host, EntryKind, FileData, ImageTree};

/// Seconds since the epoch written as every entry's modification time
/// (the `SOURCE_DATE_EPOCH` convention).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mtime(pub u32);

/// A gzip stream with no file name and a zero time stamp.
pub fn gzip<W: Write>(writer: W, level: u32) -> flate2::write::GzEncoder<W> {
    GzBuilder::new()
        .mtime(0)
        .operating_system(3)
        .write(writer, Compression::new(level.min(9)))
}

/// Writes `tree` as a tar stream (GNU headers, long names as GNU
/// extensions) into `writer`, advancing `progress` by file bytes.
pub fn write_tar<W: Write>(
    tree: &ImageTree,
    writer: W,
    mtime: Mtime,
    progress: &ProgressBar,
) -> io::Result<W> {
    let mut builder = tar::Builder::new(writer);
    for (path, entry) in tree.entries() {
        let mut header = tar::Header::new_gnu();
        header.set_mode(entry.mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(u64::from(mtime.0));
        header.set_size(0);
        match &entry.kind {
            EntryKind::Dir => {
                header.set_entry_type(tar::EntryType::Directory);
                builder.append_data(&mut header, format!("{path}/"), io::empty())?;
            }
            EntryKind::File(data) => {
                header.set_entry_type(tar::EntryType::Regular);
                let len = entry.file_len()?;
                header.set_size(len);
                match data {
                    FileData::Bytes(bytes) => builder.append_data(&mut header, path, &bytes[..])?,
                    FileData::Host(host) => {
                        let file = open_host(host)?;
                        builder.append_data(
                            &mut header,
                            path,
                            progress.wrap_read(file).take(len),
                        )?
                    }
                }
                if matches!(data, FileData::Bytes(_)) {
                    progress.inc(len);
                }
            }
            EntryKind::Symlink(target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                builder.append_link(&mut header, path, target)?;
            }
            EntryKind::CharDevice { major, minor } | EntryKind::BlockDevice { major, minor } => {
                let kind = if matches!(entry.kind, EntryKind::CharDevice { .. }) {
                    tar::EntryType::Char
                } else {
                    tar::EntryType::Block
                };
                header.set_entry_type(kind);
                header.set_device_major(*major)?;
                header.set_device_minor(*minor)?;
                builder.append_data(&mut header, path, io::empty())?;
            }
        }
    }
    builder.into_inner()
}

/// Writes `tree` as a gzip'd tar (a package) into `writer`.
pub fn write_tar_gz<W: Write>(
    tree: &ImageTree,
    writer: W,
    mtime: Mtime,
    progress: &ProgressBar,
) -> io::Result<W> {
    let gz = gzip(writer, 6);
    let gz = write_tar(tree, gz, mtime, progress)?;
    gz.finish()
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;
const S_IFBLK: u32 = 0o060000;

fn too_big(path: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{path}: larger than a cpio entry can hold (4 GiB)"),
    )
}

/// Writes `tree` as a newc cpio archive (what the kernel unpacks as an
/// initramfs), ending with the trailer.
pub fn write_newc<W: Write>(
    tree: &ImageTree,
    mut writer: W,
    mtime: Mtime,
    progress: &ProgressBar,
) -> io::Result<W> {
    for (index, (path, entry)) in tree.entries().enumerate() {
        let ino = u32::try_from(index + 1).map_err(|_| too_big(path))?;
        let header = cpio::newc::Builder::new(path)
            .ino(ino)
            .uid(0)
            .gid(0)
            .mtime(mtime.0);
        writer = match &entry.kind {
            EntryKind::Dir => header
                .mode(S_IFDIR | entry.mode)
                .nlink(2)
                .write(writer, 0)
                .finish()?,
            EntryKind::File(data) => {
                let len = entry.file_len()?;
                let size = u32::try_from(len).map_err(|_| too_big(path))?;
                let mut out = header.mode(S_IFREG | entry.mode).write(writer, size);
                match data {
                    FileData::Bytes(bytes) => {
                        out.write_all(bytes)?;
                        progress.inc(len);
                    }
                    FileData::Host(host) => {
                        let copied = io::copy(
                            &mut progress.wrap_read(open_host(host)?).take(len),
                            &mut out,
                        )?;
                        if copied != len {
                            return Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                format!("{}: changed size while being read", host.display()),
                            ));
                        }
                    }
                }
                out.finish()?
            }
            EntryKind::Symlink(target) => {
                let size = u32::try_from(target.len()).map_err(|_| too_big(path))?;
                let mut out = header.mode(S_IFLNK | 0o777).write(writer, size);
                out.write_all(target.as_bytes())?;
                out.finish()?
            }
            EntryKind::CharDevice { major, minor } | EntryKind::BlockDevice { major, minor } => {
                let kind = if matches!(entry.kind, EntryKind::CharDevice { .. }) {
                    S_IFCHR
                } else {
                    S_IFBLK
                };
                header
                    .mode(kind | entry.mode)
                    .rdev_major(*major)
                    .rdev_minor(*minor)
                    .write(writer, 0)
                    .finish()?
            }
        };
    }
    cpio::newc::trailer(writer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ImageTree {
        let mut tree = ImageTree::new();
        tree.bytes("etc/passwd", "root:x:0:0::/root:/bin/sh\n", 0o644)
            .unwrap();
        tree.symlink("bin/sh", "busybox").unwrap();
        tree.char_device("dev/null", 1, 3, 0o666).unwrap();
        tree.bytes(
            &format!("deep/{}/file", "d".repeat(150)),
            "long name",
            0o600,
        )
        .unwrap();
        tree
    }

    #[test]
    fn tar_gz_is_reproducible_and_readable() {
        let bar = ProgressBar::hidden();
        let a = write_tar_gz(&sample(), Vec::new(), Mtime(1_700_000_000), &bar).unwrap();
        let b = write_tar_gz(&sample(), Vec::new(), Mtime(1_700_000_000), &bar).unwrap();
        assert_eq!(a, b);
        let c = write_tar_gz(&sample(), Vec::new(), Mtime(1_700_000_001), &bar).unwrap();
        assert_ne!(a, c, "mtime must be used");
        // gzip header: no name flag, zero time.
        assert_eq!(&a[3..8], &[0, 0, 0, 0, 0]);

        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&a[..]));
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            let h = entry.header();
            assert_eq!(
                (h.uid().unwrap(), h.gid().unwrap(), h.mtime().unwrap()),
                (0, 0, 1_700_000_000)
            );
            seen.push(entry.path().unwrap().to_string_lossy().into_owned());
        }
        assert_eq!(seen[0], "bin/");
        assert!(seen.contains(&"dev/null".to_string()));
        assert!(seen.iter().any(|p| p.ends_with("/file") && p.len() > 150));
    }

    #[test]
    fn newc_round_trips_through_the_cpio_reader() {
        let bar = ProgressBar::hidden();
        let bytes = write_newc(&sample(), Vec::new(), Mtime(5), &bar).unwrap();
        let mut names = Vec::new();
        let mut rest = &bytes[..];
        loop {
            let reader = cpio::NewcReader::new(rest).unwrap();
            if reader.entry().is_trailer() {
                break;
            }
            names.push((
                reader.entry().name().to_string(),
                reader.entry().mode(),
                reader.entry().mtime(),
            ));
            rest = reader.finish().unwrap();
        }
        assert!(names.contains(&("bin/sh".to_string(), S_IFLNK | 0o777, 5)));
        assert!(names.contains(&("dev/null".to_string(), S_IFCHR | 0o666, 5)));
        assert_eq!(bytes.len() % 4, 0);
    }
}
