//! A journal of one-line records that several processes append to and any
//! number of readers follow: a text file of lines, written with `O_APPEND`,
//! capped in size by renaming it to `<path>.1` (the previous `.1` is
//! replaced), so it never grows without bound on a tmpfs.
//!
//! Writers take an exclusive `flock` on the file for the append and the
//! rotation that may follow, and check after locking that the path still
//! names the file they opened (another writer may have rotated it): a
//! line therefore never lands in a file that was already rotated away.
//! Every line is written with one `write(2)`, so concurrent lines never
//! interleave.
//!
//! A [`Follower`] keeps its file open and reads what was appended since its
//! last call; when the path names another file (a rotation), it first reads
//! the old file to its end (complete: rotations happen under the lock, after
//! the writes) and then the new one from its start. Only when the journal
//! is rotated twice between two reads are lines lost to a follower.
//!
//! The journal is for what happened, not for what must survive a crash: it
//! is not synced to disk (see [`crate::durable`] for that).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The longest line a journal takes, without its line break.
pub const MAX_LINE: usize = 4096;

/// Why an append or a read failed.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The line holds a line break (it would become two records).
    #[error("journal {}: a record must be one line", path.display())]
    LineBreak {
        /// The journal.
        path: PathBuf,
    },
    /// The line is longer than [`MAX_LINE`].
    #[error("journal {}: a record of {len} bytes is longer than {MAX_LINE}", path.display())]
    TooLong {
        /// The journal.
        path: PathBuf,
        /// The line's length.
        len: usize,
    },
    /// The file system refused.
    #[error("journal {}: {what}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The system's reason.
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> JournalError + 'a {
    move |source| JournalError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// A journal file and its size cap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Journal {
    path: PathBuf,
    max_bytes: u64,
}

impl Journal {
    /// The journal at `path`, rotated once it holds `max_bytes` or more.
    pub fn new(path: impl Into<PathBuf>, max_bytes: u64) -> Journal {
        Journal {
            path: path.into(),
            max_bytes,
        }
    }

    /// The file appended to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the file goes when it is full (`<path>.1`).
    pub fn rotated_path(&self) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(".1");
        PathBuf::from(name)
    }

    /// Appends one line (a line break is added). Makes the file when
    /// missing, not its directory: a system without the directory (a build
    /// host without `/run/plnode`) has no journal, and the error says so
    /// (`NotFound`).
    pub fn append(&self, line: &str) -> Result<(), JournalError> {
        if line.contains(['\n', '\r']) {
            return Err(JournalError::LineBreak {
                path: self.path.clone(),
            });
        }
        if line.len() > MAX_LINE {
            return Err(JournalError::TooLong {
                path: self.path.clone(),
                len: line.len(),
            });
        }
        let mut record = Vec::with_capacity(line.len() + 1);
        record.extend_from_slice(line.as_bytes());
        record.push(b'\n');
        // A rotation between our open and our lock is seen and retried; a
        // few tries are plenty (each rotation needs a full journal).
        for _ in 0..8 {
            let file = OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o644)
                .open(&self.path)
                .map_err(io_err("opening", &self.path))?;
            let _lock = FileLock::exclusive(&file).map_err(io_err("locking", &self.path))?;
            let ours = file.metadata().map_err(io_err("reading", &self.path))?;
            match fs::metadata(&self.path) {
                Ok(now) if now.dev() == ours.dev() && now.ino() == ours.ino() => {}
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("reading", &self.path)(e)),
            }
            let written = (&file)
                .write(&record)
                .map_err(io_err("appending to", &self.path))?;
            if written != record.len() {
                return Err(io_err("appending to", &self.path)(io::Error::new(
                    io::ErrorKind::WriteZero,
                    format!("only {written} of {} bytes written", record.len()),
                )));
            }
            if ours.len() + record.len() as u64 >= self.max_bytes {
                fs::rename(&self.path, self.rotated_path())
                    .map_err(io_err("rotating", &self.path))?;
            }
            return Ok(());
        }
        Err(io_err("appending to", &self.path)(io::Error::other(
            "the file kept being rotated away",
        )))
    }

    /// A follower that reads only what is appended from now on.
    pub fn follow_from_end(&self) -> Follower {
        let mut f = Follower::new(self.path.clone());
        f.open_current(true);
        f
    }

    /// A follower that reads the current file from its start.
    pub fn follow_from_start(&self) -> Follower {
        let mut f = Follower::new(self.path.clone());
        f.open_current(false);
        f
    }
}

/// An exclusive `flock`, released on drop.
struct FileLock<'a>(&'a File);

impl<'a> FileLock<'a> {
    fn exclusive(file: &'a File) -> io::Result<FileLock<'a>> {
        loop {
            // SAFETY: flock on a file descriptor we own; no memory involved.
            let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
            if r == 0 {
                return Ok(FileLock(file));
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

impl Drop for FileLock<'_> {
    fn drop(&mut self) {
        // SAFETY: as above; unlocking cannot fail in a way we could act on.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// Reads the lines appended to a journal since the last call.
#[derive(Debug)]
pub struct Follower {
    path: PathBuf,
    file: Option<File>,
    identity: Option<(u64, u64)>,
    position: u64,
    partial: Vec<u8>,
}

impl Follower {
    fn new(path: PathBuf) -> Follower {
        Follower {
            path,
            file: None,
            identity: None,
            position: 0,
            partial: Vec::new(),
        }
    }

    /// Opens whatever the path names now (nothing when it is missing).
    fn open_current(&mut self, at_end: bool) {
        self.file = None;
        self.identity = None;
        self.position = 0;
        self.partial.clear();
        if let Ok(file) = File::open(&self.path) {
            if let Ok(meta) = file.metadata() {
                self.identity = Some((meta.dev(), meta.ino()));
                if at_end {
                    self.position = meta.len();
                }
                self.file = Some(file);
            }
        }
    }

    /// The complete lines appended since the last call, oldest first
    /// (bytes that are not UTF-8 are replaced). A line still being written
    /// is kept for the next call.
    pub fn read_new(&mut self) -> Result<Vec<String>, JournalError> {
        let mut lines = Vec::new();
        if self.file.is_none() {
            self.open_current(false);
        }
        self.drain(&mut lines)?;
        // A rotation (or a removal and a new file): finish the old file,
        // then start on the new one.
        let now = fs::metadata(&self.path).ok().map(|m| (m.dev(), m.ino()));
        if now.is_some() && now != self.identity {
            self.open_current(false);
            self.drain(&mut lines)?;
        }
        Ok(lines)
    }

    fn drain(&mut self, lines: &mut Vec<String>) -> Result<(), JournalError> {
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        let len = file
            .metadata()
            .map_err(io_err("reading", &self.path))?
            .len();
        if len < self.position {
            // Truncated by hand: start over.
            self.position = 0;
            self.partial.clear();
        }
        if len == self.position {
            return Ok(());
        }
        file.seek(SeekFrom::Start(self.position))
            .map_err(io_err("reading", &self.path))?;
        let mut chunk = Vec::new();
        file.take(len - self.position)
            .read_to_end(&mut chunk)
            .map_err(io_err("reading", &self.path))?;
        self.position += chunk.len() as u64;
        self.partial.extend_from_slice(&chunk);
        let mut start = 0;
        while let Some(end) = self.partial[start..].iter().position(|&b| b == b'\n') {
            let line = &self.partial[start..start + end];
            // A line longer than any writer makes is garbage, not a record.
            if line.len() <= MAX_LINE {
                lines.push(String::from_utf8_lossy(line).into_owned());
            }
            start += end + 1;
        }
        self.partial.drain(..start);
        if self.partial.len() > MAX_LINE {
            self.partial.clear();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_appended_are_read_once_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let missing = Journal::new(dir.path().join("run/events.jsonl"), 1 << 20);
        match missing.append("lost") {
            Err(JournalError::Io { source, .. }) => {
                assert_eq!(source.kind(), io::ErrorKind::NotFound)
            }
            other => panic!("{other:?}"),
        }
        let journal = Journal::new(dir.path().join("events.jsonl"), 1 << 20);
        let mut from_start = journal.follow_from_start();
        assert!(from_start.read_new().unwrap().is_empty());
        journal.append("one").unwrap();
        let mut from_end = journal.follow_from_end();
        journal.append("two").unwrap();
        assert_eq!(from_start.read_new().unwrap(), ["one", "two"]);
        assert_eq!(from_end.read_new().unwrap(), ["two"]);
        assert!(from_start.read_new().unwrap().is_empty());
        journal.append("three").unwrap();
        assert_eq!(from_end.read_new().unwrap(), ["three"]);
    }

    #[test]
    fn bad_lines_are_refused_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::new(dir.path().join("j"), 1 << 20);
        assert!(matches!(
            journal.append("a\nb"),
            Err(JournalError::LineBreak { .. })
        ));
        assert!(matches!(
            journal.append(&"x".repeat(MAX_LINE + 1)),
            Err(JournalError::TooLong { .. })
        ));
        assert!(!journal.path().exists());
        journal.append(&"x".repeat(MAX_LINE)).unwrap();
        assert_eq!(
            fs::read(journal.path()).unwrap().len(),
            MAX_LINE + 1,
            "the longest line and its break"
        );
    }

    #[test]
    fn rotation_caps_the_size_and_followers_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::new(dir.path().join("j"), 100);
        let mut follower = journal.follow_from_start();
        let mut seen = Vec::new();
        for i in 0..50 {
            journal.append(&format!("line {i:04}")).unwrap();
            if i % 3 == 0 {
                seen.extend(follower.read_new().unwrap());
            }
            assert!(fs::metadata(journal.path()).map_or(0, |m| m.len()) < 100);
        }
        seen.extend(follower.read_new().unwrap());
        let expected: Vec<String> = (0..50).map(|i| format!("line {i:04}")).collect();
        assert_eq!(seen, expected);
        assert!(journal.rotated_path().exists());
        assert!(fs::metadata(journal.rotated_path()).unwrap().len() <= 100);
    }

    fn write_concurrently(journal: &Journal, threads: usize, lines: usize) {
        let threads: Vec<_> = (0..threads)
            .map(|t| {
                let journal = journal.clone();
                std::thread::spawn(move || {
                    for i in 0..lines {
                        journal
                            .append(&format!("{t}:{i}:{}", "y".repeat(40)))
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }

    fn assert_whole(line: &str) {
        let parts: Vec<&str> = line.split(':').collect();
        assert_eq!(parts.len(), 3, "{line}");
        assert_eq!(parts[2].len(), 40, "{line}");
    }

    #[test]
    fn concurrent_writers_never_interleave() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::new(dir.path().join("j"), 1 << 20);
        let mut follower = journal.follow_from_start();
        write_concurrently(&journal, 4, 200);
        let seen = follower.read_new().unwrap();
        assert_eq!(seen.len(), 800);
        seen.iter().for_each(|l| assert_whole(l));
    }

    #[test]
    fn concurrent_rotations_keep_every_line_whole() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::new(dir.path().join("j"), 2048);
        write_concurrently(&journal, 4, 200);
        // The last append may have rotated the file away.
        for path in [journal.path().to_path_buf(), journal.rotated_path()] {
            let text = fs::read_to_string(&path).unwrap_or_default();
            assert!(text.len() < 2048 + MAX_LINE, "{}", text.len());
            text.lines().for_each(assert_whole);
        }
    }

    #[test]
    fn a_replaced_or_emptied_file_is_read_from_its_start() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::new(dir.path().join("j"), 1 << 20);
        journal.append("old").unwrap();
        let mut follower = journal.follow_from_end();
        fs::remove_file(journal.path()).unwrap();
        journal.append("new").unwrap();
        assert_eq!(follower.read_new().unwrap(), ["new"]);
        fs::write(journal.path(), "").unwrap();
        assert!(follower.read_new().unwrap().is_empty());
        journal.append("after truncation").unwrap();
        assert_eq!(follower.read_new().unwrap(), ["after truncation"]);
    }
}
