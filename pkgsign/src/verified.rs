//! The one path for bytes that signed metadata vouches for.
//!
//! A [`VerifiedReader`] passes a stream through while counting and hashing
//! it, refuses the first byte past the signed length, and at the end of the
//! stream fails unless the length and the SHA-256 are exactly the signed
//! ones. Whatever reads through it — the installer's gunzip and tar, the
//! package cache's file, a copy of an installed file — either sees the end
//! of a stream that matched, or an error: there is no way to finish
//! reading unverified bytes. It is the "hash" link of the download chain
//! (source → limit → **verify** → decompress → unpack), in the manner of
//! coreos-installer's chain of `Read` adapters.
//!
//! ```
//! use std::io::Read;
//! use pkgsign::metadata::Sha256Digest;
//! use pkgsign::verified::{Expected, VerifiedReader, Mismatch};
//!
//! let signed = Expected::new("hello", 5, Sha256Digest::of(b"hello"));
//! let mut ok = VerifiedReader::new(&b"hello"[..], signed.clone());
//! let mut out = Vec::new();
//! ok.read_to_end(&mut out).unwrap();
//! assert_eq!(out, b"hello");
//!
//! let mut swapped = VerifiedReader::new(&b"jello"[..], signed.clone());
//! let err = swapped.read_to_end(&mut Vec::new()).unwrap_err();
//! assert!(matches!(Mismatch::of(&err), Some(Mismatch::WrongHash { .. })));
//!
//! let mut endless = VerifiedReader::new(&b"hello, and more"[..], signed);
//! let err = endless.read_to_end(&mut Vec::new()).unwrap_err();
//! assert!(matches!(Mismatch::of(&err), Some(Mismatch::TooLong { .. })));
//! ```

use std::io::{self, Read};

use sha2::{Digest, Sha256};

use crate::metadata::Sha256Digest;
use crate::verify::VerifiedPackage;

/// What a stream must be: its length and SHA-256, as signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// What the stream is, for messages (`package base`, a file's path).
    pub what: String,
    /// The signed length in bytes.
    pub length: u64,
    /// The signed SHA-256.
    pub sha256: Sha256Digest,
}

impl Expected {
    /// An expectation for `what`.
    pub fn new(what: impl Into<String>, length: u64, sha256: Sha256Digest) -> Expected {
        Expected {
            what: what.into(),
            length,
            sha256,
        }
    }

    /// What the signed targets metadata says of a package.
    pub fn of_package(package: &VerifiedPackage) -> Expected {
        Expected::new(
            format!("package {}", package.name()),
            package.info().length,
            package.info().hashes.sha256,
        )
    }
}

/// How a stream differed from what was signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    /// The stream ended early.
    #[error("{what}: {found} bytes, signed length is {expected}")]
    WrongLength {
        /// The stream.
        what: String,
        /// The signed length.
        expected: u64,
        /// What arrived.
        found: u64,
    },
    /// The stream went on past the signed length (endless data).
    #[error("{what}: longer than the signed {expected} bytes")]
    TooLong {
        /// The stream.
        what: String,
        /// The signed length.
        expected: u64,
    },
    /// The stream had the signed length but other content.
    #[error(
        "{what}: sha256 {found} differs from the signed {expected} (not the file that was signed)"
    )]
    WrongHash {
        /// The stream.
        what: String,
        /// The signed hash.
        expected: Sha256Digest,
        /// The hash of what arrived.
        found: Sha256Digest,
    },
}

impl Mismatch {
    /// The mismatch an I/O error from a [`VerifiedReader`] carries, if any
    /// (errors of the underlying stream pass through unchanged).
    pub fn of(err: &io::Error) -> Option<&Mismatch> {
        err.get_ref()
            .and_then(|inner| inner.downcast_ref::<Mismatch>())
    }

    /// Takes the mismatch out of an I/O error, or gives the error back.
    pub fn take(err: io::Error) -> Result<Mismatch, io::Error> {
        if Mismatch::of(&err).is_none() {
            return Err(err);
        }
        match err.into_inner().map(|inner| inner.downcast::<Mismatch>()) {
            Some(Ok(mismatch)) => Ok(*mismatch),
            // Unreachable after the check above; keep the error rather than panic.
            Some(Err(other)) => Err(io::Error::other(other)),
            None => Err(io::Error::other("verification error without detail")),
        }
    }

    fn into_io(self) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, self)
    }
}

/// A reader that lets through exactly the signed bytes (see the module docs).
#[derive(Debug)]
pub struct VerifiedReader<R> {
    inner: R,
    expected: Expected,
    hasher: Sha256,
    read: u64,
    verified: bool,
}

impl<R: Read> VerifiedReader<R> {
    /// Verifies `inner` from its first byte.
    pub fn new(inner: R, expected: Expected) -> VerifiedReader<R> {
        VerifiedReader {
            inner,
            expected,
            hasher: Sha256::new(),
            read: 0,
            verified: false,
        }
    }

    /// Continues a stream whose first bytes were kept earlier: `held` is
    /// read and hashed first (not passed on), then `rest` is verified as
    /// the remainder. Returns the reader and how many bytes were held.
    pub fn resume<H: Read>(
        mut held: H,
        rest: R,
        expected: Expected,
    ) -> io::Result<(VerifiedReader<R>, u64)> {
        let mut reader = VerifiedReader::new(rest, expected);
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = match held.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            reader.account(&buf[..n])?;
        }
        let held = reader.read;
        Ok((reader, held))
    }

    /// Bytes let through so far (including held ones).
    pub fn bytes_read(&self) -> u64 {
        self.read
    }

    /// Whether the end of the stream was reached and matched.
    pub fn is_verified(&self) -> bool {
        self.verified
    }

    /// The expectation this reader checks.
    pub fn expected(&self) -> &Expected {
        &self.expected
    }

    /// Gives back the underlying stream.
    pub fn into_inner(self) -> R {
        self.inner
    }

    fn account(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.read += bytes.len() as u64;
        if self.read > self.expected.length {
            return Err(Mismatch::TooLong {
                what: self.expected.what.clone(),
                expected: self.expected.length,
            }
            .into_io());
        }
        self.hasher.update(bytes);
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        if self.read != self.expected.length {
            return Err(Mismatch::WrongLength {
                what: self.expected.what.clone(),
                expected: self.expected.length,
                found: self.read,
            }
            .into_io());
        }
        let found = Sha256Digest(self.hasher.clone().finalize().into());
        if found != self.expected.sha256 {
            return Err(Mismatch::WrongHash {
                what: self.expected.what.clone(),
                expected: self.expected.sha256,
                found,
            }
            .into_io());
        }
        self.verified = true;
        Ok(())
    }
}

impl<R: Read> Read for VerifiedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let remaining = self.expected.length - self.read.min(self.expected.length);
        // Never ask for more than the signed length, except one byte to
        // learn that the stream goes on.
        let want = usize::try_from(remaining.max(1))
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = loop {
            match self.inner.read(&mut buf[..want]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        if n == 0 {
            if !self.verified {
                self.finish()?;
            }
            return Ok(0);
        }
        self.account(&buf[..n])?;
        Ok(n)
    }
}

/// Reads `reader` to its end and discards the bytes: for a
/// [`VerifiedReader`] that means "verify the rest".
pub fn drain(reader: &mut impl Read) -> io::Result<u64> {
    io::copy(reader, &mut io::sink())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expected(content: &[u8]) -> Expected {
        Expected::new("test", content.len() as u64, Sha256Digest::of(content))
    }

    fn read_all(r: &mut impl Read) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        r.read_to_end(&mut out).map(|_| out)
    }

    #[test]
    fn exact_content_passes() {
        let mut r = VerifiedReader::new(&b"signed bytes"[..], expected(b"signed bytes"));
        assert_eq!(read_all(&mut r).unwrap(), b"signed bytes");
        assert!(r.is_verified());
        // Reading again after the end stays at the end.
        assert_eq!(r.read(&mut [0u8; 4]).unwrap(), 0);
    }

    #[test]
    fn every_kind_of_difference_is_refused_at_the_end() {
        let e = expected(b"signed bytes");
        type Check = fn(&Mismatch) -> bool;
        let cases: [(&[u8], Check); 4] = [
            (b"signed byte", |m| {
                matches!(m, Mismatch::WrongLength { found: 11, .. })
            }),
            (b"", |m| matches!(m, Mismatch::WrongLength { found: 0, .. })),
            (b"signed bytez", |m| matches!(m, Mismatch::WrongHash { .. })),
            (b"signed bytes!", |m| {
                matches!(m, Mismatch::TooLong { expected: 12, .. })
            }),
        ];
        for (content, check) in cases {
            let mut r = VerifiedReader::new(content, e.clone());
            let err = read_all(&mut r).unwrap_err();
            let m = Mismatch::of(&err).expect("a mismatch");
            assert!(check(m), "{content:?}: {m}");
            assert!(!r.is_verified());
        }
    }

    #[test]
    fn no_byte_past_the_signed_length_is_handed_on() {
        let e = expected(b"abc");
        let mut r = VerifiedReader::new(&b"abcdefgh"[..], e);
        let mut buf = [0u8; 64];
        assert_eq!(r.read(&mut buf).unwrap(), 3);
        assert_eq!(&buf[..3], b"abc");
        let err = r.read(&mut buf).unwrap_err();
        assert!(matches!(Mismatch::of(&err), Some(Mismatch::TooLong { .. })));
    }

    #[test]
    fn a_resumed_stream_covers_the_held_bytes() {
        let content = b"0123456789";
        let (mut r, held) =
            VerifiedReader::resume(&content[..4], &content[4..], expected(content)).unwrap();
        assert_eq!(held, 4);
        assert_eq!(read_all(&mut r).unwrap(), b"456789");
        assert!(r.is_verified());
        // Held bytes that were not the signed ones spoil the whole.
        let (mut r, _) =
            VerifiedReader::resume(&b"XXXX"[..], &content[4..], expected(content)).unwrap();
        let err = read_all(&mut r).unwrap_err();
        assert!(matches!(
            Mismatch::take(err),
            Ok(Mismatch::WrongHash { .. })
        ));
        // More held bytes than signed: refused at once.
        let held_too_much =
            VerifiedReader::resume(&b"0123456789X"[..], &b""[..], expected(content));
        assert!(held_too_much.is_err());
    }

    #[test]
    fn errors_of_the_stream_pass_through() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "peer went away",
                ))
            }
        }
        let mut r = VerifiedReader::new(Broken, expected(b"x"));
        let err = read_all(&mut r).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
        assert!(Mismatch::of(&err).is_none());
        assert!(Mismatch::take(err).is_err());
    }

    proptest::proptest! {
        #[test]
        fn only_the_signed_bytes_pass(signed in proptest::collection::vec(0u8.., 0..200),
                                       served in proptest::collection::vec(0u8.., 0..200),
                                       chunk in 1usize..64) {
            struct Chunked<'a>(&'a [u8], usize);
            impl Read for Chunked<'_> {
                fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                    let n = self.0.len().min(self.1).min(buf.len());
                    buf[..n].copy_from_slice(&self.0[..n]);
                    self.0 = &self.0[n..];
                    Ok(n)
                }
            }
            let mut r = VerifiedReader::new(Chunked(&served, chunk), expected(&signed));
            let result = read_all(&mut r);
            proptest::prop_assert_eq!(result.is_ok(), served == signed);
            if let Ok(out) = result {
                proptest::prop_assert_eq!(out, signed);
            }
        }
    }
}
