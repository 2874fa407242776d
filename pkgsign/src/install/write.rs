//! The writing stage: a thread that writes regular files' content, sets
//! their owners and modes and closes them, so that this kernel work overlaps
//! with the extractor's parsing, hashing and checking.
//!
//! Only content goes through here. Every name in the tree is created,
//! checked and replaced by the extractor itself, in archive order; the
//! writer receives each file already open and touches nothing else, so
//! the extraction rules see the same tree as if the writes were inline.
//! The first error stops the writer; the extractor learns of it at its
//! next hand-over or at [`FileWriter::finish`].

use std::fs;
use std::io::{self, Write};
use std::ops::Range;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::{Scope, ScopedJoinHandle};

use super::extract::ExtractError;

/// Batches in flight to the writer.
const IN_FLIGHT: usize = 4;
/// A batch is handed over once it holds this much content or this many
/// files: one hand-over per batch instead of one per file keeps the two
/// threads from waking each other for every small file.
const BATCH_BYTES: usize = 1 << 20;
const BATCH_FILES: usize = 256;
/// Files at least this large start their writeback as soon as they are
/// written, so the final syncfs has less left to do.
const EARLY_WRITEBACK: u64 = 64 * 1024;

enum Job {
    /// A new file, just created empty: what follows is its content.
    Open { file: fs::File, path: PathBuf },
    /// Content of the open file: a range of the batch's bytes.
    Data(Range<usize>),
    /// The file is complete: set its owner and mode, close it.
    Close {
        mode: u32,
        owner: Option<(u32, u32)>,
    },
}

/// Work for the writer, in order, with the content it refers to.
#[derive(Default)]
struct Batch {
    /// Content in `bytes[..used]`; the rest was used before and is kept
    /// (initialised) for the next round, so that it is not zeroed again.
    bytes: Vec<u8>,
    used: usize,
    jobs: Vec<Job>,
    files: usize,
}

impl Batch {
    fn clear(&mut self) {
        self.used = 0;
        self.jobs.clear();
        self.files = 0;
    }
}

/// The extractor's handle on the writer thread.
pub(super) struct FileWriter<'scope> {
    batch: Batch,
    batches: Option<SyncSender<Batch>>,
    spare: Receiver<Batch>,
    thread: Option<ScopedJoinHandle<'scope, Result<(), ExtractError>>>,
}

impl<'scope> FileWriter<'scope> {
    pub(super) fn start<'env>(scope: &'scope Scope<'scope, 'env>) -> io::Result<Self> {
        let (batches, queue) = sync_channel(IN_FLIGHT);
        let (spare_tx, spare) = sync_channel(IN_FLIGHT + 2);
        let thread = std::thread::Builder::new()
            .name("pkgsign-write".into())
            .spawn_scoped(scope, move || write_files(queue, spare_tx))?;
        Ok(FileWriter {
            batch: Batch::default(),
            batches: Some(batches),
            spare,
            thread: Some(thread),
        })
    }

    /// Starts the content of `file` (just created, empty) at `path`.
    pub(super) fn open(&mut self, file: fs::File, path: PathBuf) {
        self.batch.jobs.push(Job::Open { file, path });
        self.batch.files += 1;
    }

    /// Appends up to `len` bytes of content, filled in by `fill` (which
    /// returns how many it wrote, 0 at the end of the stream). Returns
    /// the bytes filled in.
    pub(super) fn data(
        &mut self,
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> io::Result<usize>,
    ) -> Result<&[u8], ExtractError> {
        let start = self.batch.used;
        if self.batch.bytes.len() < start + len {
            self.batch.bytes.resize(start + len, 0);
        }
        let filled = fill(&mut self.batch.bytes[start..start + len])
            .map_err(ExtractError::Corrupt)?
            .min(len);
        self.batch.used += filled;
        if filled > 0 {
            self.batch.jobs.push(Job::Data(start..start + filled));
        }
        Ok(&self.batch.bytes[start..start + filled])
    }

    /// Completes the open file; hands the batch over when it is full.
    pub(super) fn close(
        &mut self,
        mode: u32,
        owner: Option<(u32, u32)>,
    ) -> Result<(), ExtractError> {
        self.batch.jobs.push(Job::Close { mode, owner });
        if self.batch.used >= BATCH_BYTES || self.batch.files >= BATCH_FILES {
            self.send()?;
        }
        Ok(())
    }

    /// Hands the batch over if it holds a large file's worth of content
    /// (call between chunks of one file).
    pub(super) fn maybe_send(&mut self) -> Result<(), ExtractError> {
        if self.batch.used >= BATCH_BYTES {
            self.send()?;
        }
        Ok(())
    }

    /// Waits until everything handed over is written; the writer's first
    /// error, if any.
    pub(super) fn finish(mut self) -> Result<(), ExtractError> {
        if !self.batch.jobs.is_empty() {
            self.send()?;
        }
        self.stop()
    }

    fn send(&mut self) -> Result<(), ExtractError> {
        let mut next = self.spare.try_recv().unwrap_or_default();
        next.clear();
        let full = std::mem::replace(&mut self.batch, next);
        let sent = match &self.batches {
            Some(batches) => batches.send(full).is_ok(),
            None => false,
        };
        if sent {
            return Ok(());
        }
        // The writer stopped: it has an error to tell.
        self.stop()?;
        Err(ExtractError::Io {
            path: PathBuf::new(),
            source: io::Error::other("the file writer stopped"),
        })
    }

    fn stop(&mut self) -> Result<(), ExtractError> {
        self.batches = None;
        match self.thread.take() {
            Some(thread) => thread.join().unwrap_or_else(|_| {
                Err(ExtractError::Io {
                    path: PathBuf::new(),
                    source: io::Error::other("the file writer panicked"),
                })
            }),
            None => Ok(()),
        }
    }
}

impl Drop for FileWriter<'_> {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// The writer thread: carries out the jobs in order; stops at the first error.
fn write_files(queue: Receiver<Batch>, spare: SyncSender<Batch>) -> Result<(), ExtractError> {
    let mut current: Option<(fs::File, PathBuf, u64)> = None;
    for mut batch in queue {
        for job in batch.jobs.drain(..) {
            match job {
                Job::Open { file, path } => current = Some((file, path, 0)),
                Job::Data(range) => {
                    if let Some((file, path, written)) = &mut current {
                        let bytes = &batch.bytes[range];
                        file.write_all(bytes).map_err(io_error(path))?;
                        *written += bytes.len() as u64;
                    }
                }
                Job::Close { mode, owner } => {
                    if let Some((file, path, written)) = current.take() {
                        if written >= EARLY_WRITEBACK {
                            start_writeback(&file);
                        }
                        if let Some((uid, gid)) = owner {
                            std::os::unix::fs::fchown(&file, Some(uid), Some(gid))
                                .map_err(io_error(&path))?;
                        }
                        // After fchown, which clears setuid/setgid bits.
                        file.set_permissions(fs::Permissions::from_mode(mode))
                            .map_err(io_error(&path))?;
                    }
                }
            }
        }
        let _ = spare.try_send(batch);
    }
    Ok(())
}

fn io_error(path: &std::path::Path) -> impl FnOnce(io::Error) -> ExtractError + '_ {
    move |source| ExtractError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Asks the kernel to start writing `file` to disk now, without waiting.
fn start_writeback(file: &fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor is valid for the lifetime of `file`; the call
    // only schedules I/O. Failure is harmless (syncfs follows), so it is ignored.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
    }
}
