//! The ISO's detached signature (`IMAGE.iso.sig`, pkgsign's format) covers
//! the whole image with the per-node area read as zeros, so one signature
//! serves every customised copy.
//!
//! Why moving the area cannot smuggle anything past it: the area's place is
//! read from the image's own directory, which is signed. Pointing it
//! elsewhere changes signed bytes, unless the directory record itself were
//! inside the zeroed range, and then those bytes read as zeros where the
//! signed image had a directory: the hash differs either way.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use pkgsign::detached::{self, DetachedError, DetachedSignature};
use pkgsign::{PublicKey, SecretKey};

use crate::iso9660::{Extent, IsoError, IsoImage};
use crate::layout::{ISO_NODE_AREA, NODE_AREA_SIZE};

#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: {source}", path.display())]
    Iso {
        path: PathBuf,
        #[source]
        source: IsoError,
    },
    #[error("{}: the per-node area {ISO_NODE_AREA} is {len} bytes at byte {offset}; a boot CD has {NODE_AREA_SIZE} bytes on a sector boundary", path.display())]
    BadArea {
        path: PathBuf,
        offset: u64,
        len: u64,
    },
    #[error("{}: {source}", path.display())]
    Signature {
        path: PathBuf,
        #[source]
        source: DetachedError,
    },
}

/// Reads `inner` with the bytes of `zeroed` replaced by zeros.
#[derive(Debug)]
pub struct MaskedReader<R> {
    inner: R,
    position: u64,
    zeroed: Extent,
}

impl<R: Read> MaskedReader<R> {
    pub fn new(inner: R, zeroed: Extent) -> Self {
        MaskedReader {
            inner,
            position: 0,
            zeroed,
        }
    }
}

impl<R: Read> Read for MaskedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let start = self.position;
        let end = start + n as u64;
        let zero_from = self.zeroed.offset.max(start);
        let zero_to = (self.zeroed.offset + self.zeroed.len).min(end);
        if zero_from < zero_to {
            buf[(zero_from - start) as usize..(zero_to - start) as usize].fill(0);
        }
        self.position = end;
        Ok(n)
    }
}

/// Finds the per-node area of the ISO at `path` and checks its shape.
pub fn node_area(path: &Path) -> Result<Extent, SignatureError> {
    let file = File::open(path).map_err(|source| SignatureError::Io {
        path: path.into(),
        source,
    })?;
    let mut image = IsoImage::open(file).map_err(|source| SignatureError::Iso {
        path: path.into(),
        source,
    })?;
    let extent = image
        .find(ISO_NODE_AREA)
        .map_err(|source| SignatureError::Iso {
            path: path.into(),
            source,
        })?;
    if extent.len != NODE_AREA_SIZE as u64 || extent.offset % crate::iso9660::SECTOR != 0 {
        return Err(SignatureError::BadArea {
            path: path.into(),
            offset: extent.offset,
            len: extent.len,
        });
    }
    Ok(extent)
}

fn masked(path: &Path, area: Extent) -> Result<MaskedReader<BufReader<File>>, SignatureError> {
    let file = File::open(path).map_err(|source| SignatureError::Io {
        path: path.into(),
        source,
    })?;
    Ok(MaskedReader::new(
        BufReader::with_capacity(1 << 20, file),
        area,
    ))
}

/// Signs the ISO at `path` (per-node area read as zeros).
pub fn sign_iso(key: &SecretKey, path: &Path) -> Result<DetachedSignature, SignatureError> {
    let area = node_area(path)?;
    detached::sign_reader(key, masked(path, area)?).map_err(|source| SignatureError::Signature {
        path: path.into(),
        source,
    })
}

/// Checks `signature` over the ISO at `path` (per-node area read as zeros)
/// against `trusted` keys.
pub fn verify_iso(
    path: &Path,
    signature: &DetachedSignature,
    trusted: &[PublicKey],
) -> Result<(), SignatureError> {
    let area = node_area(path)?;
    detached::verify_reader(signature, trusted, masked(path, area)?).map_err(|source| {
        SignatureError::Signature {
            path: path.into(),
            source,
        }
    })
}

/// Loads `IMAGE.iso.sig` or another signature file.
pub fn load_signature(path: &Path) -> Result<DetachedSignature, SignatureError> {
    DetachedSignature::load(path).map_err(|source| SignatureError::Signature {
        path: path.into(),
        source,
    })
}

/// `IMAGE.iso` → `IMAGE.iso.sig`.
pub fn signature_path(iso: &Path) -> PathBuf {
    let mut name = iso.as_os_str().to_owned();
    name.push(".sig");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masking_zeroes_exactly_the_area() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8 + 1).collect();
        let area = Extent {
            offset: 4096,
            len: 2048,
        };
        let mut out = Vec::new();
        // Tiny reads cross the area's edges at every alignment.
        let mut reader = MaskedReader::new(io::Cursor::new(&data), area);
        let mut buf = [0u8; 7];
        loop {
            let n = reader.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        for (i, (&a, &b)) in data.iter().zip(&out).enumerate() {
            if (4096..6144).contains(&i) {
                assert_eq!(b, 0, "byte {i}");
            } else {
                assert_eq!(a, b, "byte {i}");
            }
        }
        assert_eq!(out.len(), data.len());
    }
}
