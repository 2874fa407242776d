//! The decoding stage: a thread reads the package through its
//! [`VerifiedReader`] and gunzips it, handing the tar stream to the
//! extractor in large chunks, so that hashing and inflating overlap with
//! the extractor's file system work.
//!
//! The source is always read to its end, whatever the extractor does: a
//! wrong hash or length is found even when the archive failed earlier, and
//! it is the reason reported. When the extractor stops early (an error, or
//! the end of the tar archive), the rest is hashed without being inflated.

use std::io::{self, BufRead, Read};
use std::sync::mpsc::{Receiver, SyncSender};

use crate::verified::VerifiedReader;

/// Bytes of tar stream handed over at a time.
const CHUNK: usize = 1 << 20;
/// Read size of the compressed source.
const SOURCE_BUFFER: usize = 256 * 1024;

/// A chunk of tar stream, or why the stream is not a valid gzip stream.
pub(super) type Chunk = io::Result<Vec<u8>>;

/// The compressed source, with errors of the source itself kept apart
/// from gzip's complaints about the data.
struct Source<'a> {
    inner: VerifiedReader<Box<dyn Read + Send>>,
    /// The first error of the source (I/O or a mismatch); gzip gets a
    /// stand-in, since the original is what the caller must see.
    failed: Option<io::Error>,
    read: u64,
    progress: &'a (dyn Fn(u64) + Sync),
}

impl Read for Source<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.failed.is_some() {
            return Err(io::Error::other("the package source failed"));
        }
        match self.inner.read(buf) {
            Ok(n) => {
                self.read += n as u64;
                if n > 0 {
                    (self.progress)(self.read);
                }
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                let kind = e.kind();
                self.failed = Some(e);
                Err(io::Error::new(kind, "the package source failed"))
            }
        }
    }
}

/// Decoder thread: gunzips `source` into chunks sent on `data` (empty
/// buffers come back on `spare`). Returns the source's own error, if any
/// (a [`crate::verified::Mismatch`] among them); a gzip error is sent to the
/// extractor as the stream's error instead. `flush` is called after every
/// `flush_every` bytes of tar stream.
pub(super) fn decode(
    source: VerifiedReader<Box<dyn Read + Send>>,
    data: SyncSender<Chunk>,
    spare: Receiver<Vec<u8>>,
    progress: &(dyn Fn(u64) + Sync),
    flush: &(dyn Fn() + Sync),
    flush_every: u64,
) -> io::Result<()> {
    let source = Source {
        inner: source,
        failed: None,
        read: 0,
        progress,
    };
    let mut gunzip =
        flate2::bufread::MultiGzDecoder::new(io::BufReader::with_capacity(SOURCE_BUFFER, source));
    let mut since_flush = 0u64;
    let outcome = loop {
        let mut buf = spare
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(CHUNK));
        buf.resize(CHUNK, 0);
        // Data before an error is handed over first: a tar archive that
        // ends before the damage is whole.
        let (filled, error) = fill(&mut gunzip, &mut buf);
        if filled > 0 {
            buf.truncate(filled);
            since_flush += filled as u64;
            if since_flush >= flush_every {
                since_flush = 0;
                flush();
            }
            if data.send(Ok(buf)).is_err() {
                // The extractor is done; verify the rest below.
                break Ok(());
            }
        }
        match error {
            Some(e) => break Err(e),
            None if filled == 0 => break Ok(()),
            None => {}
        }
    };
    let mut source = gunzip.into_inner().into_inner();
    if let Some(failed) = source.failed.take() {
        return Err(failed);
    }
    if let Err(gzip) = outcome {
        // Tell the extractor now; the verdict on the bytes comes below.
        let _ = data.send(Err(gzip));
    }
    drop(data);
    // Through `source`, so that progress counts these bytes too.
    match crate::verified::drain(&mut source) {
        Ok(_) => Ok(()),
        Err(e) => Err(source.failed.take().unwrap_or(e)),
    }
}

/// Reads until `buf` is full or the stream ends; the bytes read, and the
/// error that stopped the reading early, if any.
fn fill(reader: &mut impl Read, buf: &mut [u8]) -> (usize, Option<io::Error>) {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (filled, Some(e)),
        }
    }
    (filled, None)
}

/// The extractor's end: a `BufRead` over the chunks (no copying). Dropping
/// it tells the decoder to stop inflating.
pub(super) struct ChunkReader {
    data: Receiver<Chunk>,
    spare: SyncSender<Vec<u8>>,
    current: Vec<u8>,
    pos: usize,
}

impl ChunkReader {
    pub(super) fn new(data: Receiver<Chunk>, spare: SyncSender<Vec<u8>>) -> ChunkReader {
        ChunkReader {
            data,
            spare,
            current: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for ChunkReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.pos >= self.current.len() {
            // A closed channel is the end: the decoder reports the source's
            // errors when joined.
            match self.data.recv() {
                Ok(Ok(next)) => {
                    let old = std::mem::replace(&mut self.current, next);
                    let _ = self.spare.try_send(old);
                    self.pos = 0;
                }
                Ok(Err(gzip)) => return Err(gzip),
                Err(_) => return Ok(&[]),
            }
        }
        Ok(&self.current[self.pos..])
    }

    fn consume(&mut self, amount: usize) {
        self.pos = (self.pos + amount).min(self.current.len());
    }
}
