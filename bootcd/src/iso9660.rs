//! Just enough ISO 9660 (ECMA-119) with Rock Ridge names to find a file's
//! extent: `bootcd customize` writes into the per-node area in place, and
//! `verify`/`show` read it and `plnode/cd.toml`.
//!
//! The image is untrusted input: every length and offset is checked
//! against the image size and sane limits, nothing is allocated from a
//! length before it is checked, and lookups only descend along the asked
//! path (no recursion over the whole tree).

use std::io::{self, Read, Seek, SeekFrom};

pub const SECTOR: u64 = 2048;
/// Volume descriptors start at sector 16.
const FIRST_DESCRIPTOR: u64 = 16;
/// Stop looking for the primary descriptor after this many.
const MAX_DESCRIPTORS: u64 = 64;
/// Largest directory we read (ours have a handful of entries).
const MAX_DIRECTORY: u64 = 4 << 20;
/// Rock Ridge continuation areas followed per record.
const MAX_CONTINUATIONS: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum IsoError {
    #[error("reading the image: {0}")]
    Io(#[from] io::Error),
    #[error("not an ISO 9660 image: {0}")]
    NotIso(String),
    #[error("malformed ISO 9660 image: {0}")]
    Malformed(String),
    #[error("{0} is not on the image")]
    NotFound(String),
    #[error("{path} is {what}")]
    WrongKind { path: String, what: &'static str },
}

/// A file's bytes in the image: `len` bytes from byte `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub offset: u64,
    pub len: u64,
}

#[derive(Debug, Clone)]
struct Record {
    extent_sector: u64,
    len: u64,
    is_dir: bool,
    multi_extent: bool,
    iso_name: Vec<u8>,
    rr_name: Option<Vec<u8>>,
}

fn both_endian_u32(bytes: &[u8], at: usize) -> Option<u32> {
    bytes
        .get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn malformed(msg: impl Into<String>) -> IsoError {
    IsoError::Malformed(msg.into())
}

/// An opened image: its size and root directory.
#[derive(Debug)]
pub struct IsoImage<R> {
    inner: R,
    size: u64,
    root: Record,
    /// Rock Ridge SUSP bytes to skip at the start of each system use area.
    susp_skip: usize,
}

impl<R: Read + Seek> IsoImage<R> {
    /// Reads the primary volume descriptor.
    pub fn open(mut inner: R) -> Result<IsoImage<R>, IsoError> {
        let size = inner.seek(SeekFrom::End(0))?;
        let mut sector = vec![0u8; SECTOR as usize];
        let mut found = None;
        for index in FIRST_DESCRIPTOR..FIRST_DESCRIPTOR + MAX_DESCRIPTORS {
            if (index + 1) * SECTOR > size {
                break;
            }
            inner.seek(SeekFrom::Start(index * SECTOR))?;
            inner.read_exact(&mut sector)?;
            if &sector[1..6] != b"CD001" {
                return Err(IsoError::NotIso(format!(
                    "no volume descriptor at sector {index}"
                )));
            }
            match sector[0] {
                1 => {
                    found = Some(sector.clone());
                    break;
                }
                255 => break,
                _ => {}
            }
        }
        let pvd = found.ok_or_else(|| IsoError::NotIso("no primary volume descriptor".into()))?;
        let block = u16::from_le_bytes([pvd[128], pvd[129]]);
        if u64::from(block) != SECTOR {
            return Err(malformed(format!(
                "logical block size {block}, expected {SECTOR}"
            )));
        }
        let (root, _) =
            parse_record(&pvd[156..190]).ok_or_else(|| malformed("bad root directory record"))?;
        if !root.is_dir {
            return Err(malformed("root directory record is not a directory"));
        }
        let mut image = IsoImage {
            inner,
            size,
            root,
            susp_skip: 0,
        };
        image.susp_skip = image.detect_susp()?;
        Ok(image)
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn into_inner(self) -> R {
        self.inner
    }

    fn read_at(&mut self, offset: u64, len: u64, what: &str) -> Result<Vec<u8>, IsoError> {
        let end = offset
            .checked_add(len)
            .ok_or_else(|| malformed(format!("{what}: extent overflows")))?;
        if end > self.size {
            return Err(malformed(format!(
                "{what}: extent ends at byte {end}, past the image end {}",
                self.size
            )));
        }
        self.inner.seek(SeekFrom::Start(offset))?;
        let mut buf = vec![0u8; len as usize];
        self.inner.read_exact(&mut buf)?;
        Ok(buf)
    }

    fn extent_of(&self, record: &Record, what: &str) -> Result<Extent, IsoError> {
        let offset = record
            .extent_sector
            .checked_mul(SECTOR)
            .ok_or_else(|| malformed(format!("{what}: extent overflows")))?;
        let end = offset
            .checked_add(record.len)
            .ok_or_else(|| malformed(format!("{what}: extent overflows")))?;
        if end > self.size {
            return Err(malformed(format!(
                "{what}: extent ends at byte {end}, past the image end {}",
                self.size
            )));
        }
        Ok(Extent {
            offset,
            len: record.len,
        })
    }

    /// Rock Ridge: the root's `.` entry starts with `SP`, giving bytes to skip.
    fn detect_susp(&mut self) -> Result<usize, IsoError> {
        let root = self.root.clone();
        let extent = self.extent_of(&root, "root directory")?;
        if extent.len < 34 {
            return Ok(0);
        }
        let head = self.read_at(extent.offset, extent.len.min(SECTOR), "root directory")?;
        let len = usize::from(head[0]);
        if len < 34 || len > head.len() {
            return Ok(0);
        }
        let name_len = usize::from(head[32]);
        let su_start = 33 + name_len + (1 - name_len % 2);
        let su = head.get(su_start..len).unwrap_or(&[]);
        if su.len() >= 7 && &su[0..2] == b"SP" && su[4] == 0xBE && su[5] == 0xEF {
            return Ok(usize::from(su[6]));
        }
        Ok(0)
    }

    fn directory(&mut self, dir: &Record, what: &str) -> Result<Vec<Record>, IsoError> {
        if dir.len > MAX_DIRECTORY {
            return Err(malformed(format!(
                "{what}: directory of {} bytes is too large",
                dir.len
            )));
        }
        let extent = self.extent_of(dir, what)?;
        let data = self.read_at(extent.offset, extent.len, what)?;
        let mut records = Vec::new();
        let mut pos = 0usize;
        while pos < data.len() {
            let len = usize::from(data[pos]);
            if len == 0 {
                // Records do not cross sectors: the rest of this one is padding.
                pos = (pos / SECTOR as usize + 1) * SECTOR as usize;
                continue;
            }
            let raw = data
                .get(pos..pos + len)
                .ok_or_else(|| malformed(format!("{what}: record runs past the directory")))?;
            let (mut record, su) = parse_record(raw)
                .ok_or_else(|| malformed(format!("{what}: bad directory record")))?;
            let su = su
                .get(self.susp_skip.min(su.len())..)
                .unwrap_or(&[])
                .to_vec();
            record.rr_name = self.rock_ridge_name(&su)?;
            records.push(record);
            pos += len;
        }
        Ok(records)
    }

    /// The Rock Ridge `NM` name in a system use area (following `CE`
    /// continuations), if any.
    fn rock_ridge_name(&mut self, system_use: &[u8]) -> Result<Option<Vec<u8>>, IsoError> {
        let mut name: Option<Vec<u8>> = None;
        let mut area = system_use.to_vec();
        for _ in 0..=MAX_CONTINUATIONS {
            let mut next = None;
            let mut pos = 0usize;
            while pos + 4 <= area.len() {
                let sig = &area[pos..pos + 2];
                let len = usize::from(area[pos + 2]);
                if len < 4 || pos + len > area.len() {
                    break;
                }
                let body = &area[pos + 4..pos + len];
                match sig {
                    b"NM" if !body.is_empty() => {
                        let flags = body[0];
                        // CURRENT / PARENT flags name `.`/`..`: not a real name.
                        if flags & 0b110 == 0 {
                            name.get_or_insert_with(Vec::new)
                                .extend_from_slice(&body[1..]);
                        }
                    }
                    b"CE" if body.len() >= 24 => {
                        let sector = both_endian_u32(body, 0).map(u64::from);
                        let offset = both_endian_u32(body, 8).map(u64::from);
                        let length = both_endian_u32(body, 16).map(u64::from);
                        if let (Some(sector), Some(offset), Some(length)) = (sector, offset, length)
                        {
                            next = Some((sector, offset, length));
                        }
                    }
                    b"ST" => break,
                    _ => {}
                }
                pos += len;
            }
            let Some((sector, offset, length)) = next else {
                break;
            };
            if length > SECTOR || offset >= SECTOR {
                return Err(malformed("Rock Ridge continuation area is out of bounds"));
            }
            let start = sector
                .checked_mul(SECTOR)
                .and_then(|s| s.checked_add(offset))
                .ok_or_else(|| malformed("Rock Ridge continuation area overflows"))?;
            area = self.read_at(start, length, "Rock Ridge continuation area")?;
        }
        Ok(name)
    }

    fn lookup(&mut self, path: &str) -> Result<Record, IsoError> {
        let mut current = self.root.clone();
        let mut walked = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            if !current.is_dir {
                return Err(IsoError::WrongKind {
                    path: walked,
                    what: "a file, not a directory",
                });
            }
            let what = if walked.is_empty() {
                "/".to_string()
            } else {
                walked.clone()
            };
            let entries = self.directory(&current, &what)?;
            if !walked.is_empty() {
                walked.push('/');
            }
            walked.push_str(part);
            current = entries
                .into_iter()
                .find(|r| matches_name(r, part))
                .ok_or_else(|| IsoError::NotFound(walked.clone()))?;
        }
        Ok(current)
    }

    /// Where the regular file at `path` (`/`-separated, Rock Ridge or ISO
    /// names) lies in the image.
    pub fn find(&mut self, path: &str) -> Result<Extent, IsoError> {
        let record = self.lookup(path)?;
        if record.is_dir {
            return Err(IsoError::WrongKind {
                path: path.into(),
                what: "a directory",
            });
        }
        if record.multi_extent {
            return Err(IsoError::WrongKind {
                path: path.into(),
                what: "stored in several extents",
            });
        }
        self.extent_of(&record, path)
    }

    /// Reads the file at `path` if it is at most `max` bytes.
    pub fn read_file(&mut self, path: &str, max: u64) -> Result<Vec<u8>, IsoError> {
        let extent = self.find(path)?;
        if extent.len > max {
            return Err(malformed(format!(
                "{path} is {} bytes, more than the {max} expected",
                extent.len
            )));
        }
        self.read_at(extent.offset, extent.len, path)
    }
}

fn matches_name(record: &Record, wanted: &str) -> bool {
    if let Some(rr) = &record.rr_name {
        return rr == wanted.as_bytes();
    }
    let name = &record.iso_name;
    if name == b"\0" || name == b"\x01" {
        return false;
    }
    let base = match name.iter().rposition(|&b| b == b';') {
        Some(i) => &name[..i],
        None => &name[..],
    };
    let base = base.strip_suffix(b".").unwrap_or(base);
    base.eq_ignore_ascii_case(wanted.as_bytes())
}

/// Parses one directory record; returns it and its system use area.
fn parse_record(raw: &[u8]) -> Option<(Record, &[u8])> {
    let len = usize::from(*raw.first()?);
    if len < 34 || len > raw.len() {
        return None;
    }
    let raw = &raw[..len];
    let extent_sector = u64::from(both_endian_u32(raw, 2)?);
    let data_len = u64::from(both_endian_u32(raw, 10)?);
    let flags = raw[25];
    let name_len = usize::from(raw[32]);
    let name = raw.get(33..33 + name_len)?.to_vec();
    // A pad byte follows an even-length name.
    let su_start = 33 + name_len + (1 - name_len % 2);
    let system_use = raw.get(su_start..).unwrap_or(&[]);
    Some((
        Record {
            extent_sector,
            len: data_len,
            is_dir: flags & 0b10 != 0,
            multi_extent: flags & 0x80 != 0,
            iso_name: name,
            rr_name: None,
        },
        system_use,
    ))
}

/// Finds `path` in an image held in memory (the fuzz target's entry point).
pub fn find_in_bytes(image: &[u8], path: &str) -> Result<Extent, IsoError> {
    IsoImage::open(io::Cursor::new(image))?.find(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal image: PVD, terminator, root dir with a `BOOT` dir holding `NODECFG.IMG;1`.
    fn tiny_image(rock_ridge_name: Option<&str>) -> Vec<u8> {
        let mut img = vec![0u8; 24 * SECTOR as usize];
        fn record(lba: u32, len: u32, dir: bool, name: &[u8], su: &[u8]) -> Vec<u8> {
            let mut r = vec![0u8; 33];
            r[2..6].copy_from_slice(&lba.to_le_bytes());
            r[6..10].copy_from_slice(&lba.to_be_bytes());
            r[10..14].copy_from_slice(&len.to_le_bytes());
            r[14..18].copy_from_slice(&len.to_be_bytes());
            r[25] = if dir { 2 } else { 0 };
            r[32] = name.len() as u8;
            r.extend_from_slice(name);
            if name.len().is_multiple_of(2) {
                r.push(0);
            }
            r.extend_from_slice(su);
            r[0] = r.len() as u8;
            r
        }
        let pvd = 16 * SECTOR as usize;
        img[pvd] = 1;
        img[pvd + 1..pvd + 6].copy_from_slice(b"CD001");
        img[pvd + 128..pvd + 130].copy_from_slice(&2048u16.to_le_bytes());
        let root = record(18, 2048, true, b"\0", &[]);
        img[pvd + 156..pvd + 156 + 34].copy_from_slice(&root[..34]);
        let term = 17 * SECTOR as usize;
        img[term] = 255;
        img[term + 1..term + 6].copy_from_slice(b"CD001");
        let mut dir = Vec::new();
        dir.extend(record(18, 2048, true, b"\0", &[]));
        dir.extend(record(18, 2048, true, b"\x01", &[]));
        dir.extend(record(19, 2048, true, b"BOOT", &[]));
        img[18 * 2048..18 * 2048 + dir.len()].copy_from_slice(&dir);
        let su = match rock_ridge_name {
            Some(n) => {
                let mut nm = vec![b'N', b'M', (5 + n.len()) as u8, 1, 0];
                nm.extend_from_slice(n.as_bytes());
                nm
            }
            None => Vec::new(),
        };
        let file = record(20, 4096, false, b"NODECFG.IMG;1", &su);
        img[19 * 2048..19 * 2048 + file.len()].copy_from_slice(&file);
        img
    }

    #[test]
    fn finds_files_by_iso_and_rock_ridge_names() {
        let img = tiny_image(None);
        assert_eq!(
            find_in_bytes(&img, "boot/nodecfg.img").unwrap(),
            Extent {
                offset: 20 * 2048,
                len: 4096
            }
        );
        let img = tiny_image(Some("nodecfg.img"));
        assert_eq!(
            find_in_bytes(&img, "/boot/nodecfg.img").unwrap().offset,
            20 * 2048
        );
        // With a Rock Ridge name, it is the name that counts.
        assert!(matches!(
            find_in_bytes(&img, "boot/NODECFG.IMG"),
            Err(IsoError::NotFound(_))
        ));
        assert!(matches!(
            find_in_bytes(&img, "boot"),
            Err(IsoError::WrongKind { .. })
        ));
        assert!(matches!(
            find_in_bytes(&img, "boot/nodecfg.img/x"),
            Err(IsoError::WrongKind { .. })
        ));
    }

    #[test]
    fn hostile_images_give_errors_not_panics() {
        assert!(matches!(find_in_bytes(&[], "a"), Err(IsoError::NotIso(_))));
        assert!(find_in_bytes(&vec![0u8; 40000], "a").is_err());
        let mut img = tiny_image(None);
        // File extent past the end.
        let at = 19 * 2048 + 10;
        img[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            find_in_bytes(&img, "boot/nodecfg.img"),
            Err(IsoError::Malformed(_))
        ));
        // Every single-byte corruption of the metadata sectors is handled.
        let img = tiny_image(Some("nodecfg.img"));
        for at in (16 * 2048..16 * 2048 + 200)
            .chain(18 * 2048..18 * 2048 + 120)
            .chain(19 * 2048..19 * 2048 + 60)
        {
            for value in [0u8, 1, 0x7f, 0xff] {
                let mut bad = img.clone();
                bad[at] = value;
                let _ = find_in_bytes(&bad, "boot/nodecfg.img");
            }
        }
    }
}
