//! Per-service log files with size-based rotation (`NAME.log`,
//! `NAME.log.1`, … up to a number kept).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub struct RotatingLog {
    path: PathBuf,
    file: Option<File>,
    size: u64,
    max_bytes: u64,
    keep: u32,
}

impl RotatingLog {
    pub fn open(dir: &Path, name: &str, max_bytes: u64, keep: u32) -> RotatingLog {
        let path = dir.join(format!("{name}.log"));
        let _ = std::fs::create_dir_all(dir);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .ok();
        let size = file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map(|m| m.len())
            .unwrap_or(0);
        RotatingLog {
            path,
            file,
            size,
            max_bytes: max_bytes.max(1024),
            keep,
        }
    }

    fn rotated(&self, n: u32) -> PathBuf {
        PathBuf::from(format!("{}.{n}", self.path.display()))
    }

    fn rotate(&mut self) {
        self.file = None;
        let _ = std::fs::remove_file(self.rotated(self.keep));
        for n in (1..self.keep).rev() {
            let _ = std::fs::rename(self.rotated(n), self.rotated(n + 1));
        }
        if self.keep > 0 {
            let _ = std::fs::rename(&self.path, self.rotated(1));
        } else {
            let _ = std::fs::remove_file(&self.path);
        }
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .ok();
        self.size = 0;
    }

    /// Appends one line (a newline is added), rotating first when it would
    /// pass the size limit. Logging never fails the service.
    pub fn line(&mut self, text: &str) {
        let len = text.len() as u64 + 1;
        if self.size > 0 && self.size + len > self.max_bytes {
            self.rotate();
        }
        if let Some(f) = self.file.as_mut() {
            if f.write_all(text.as_bytes())
                .and_then(|_| f.write_all(b"\n"))
                .is_ok()
            {
                self.size += len;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_rotate_at_the_set_size_and_keep_n() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = RotatingLog::open(dir.path(), "svc", 1024, 2);
        let line = "x".repeat(99); // 100 bytes with the newline
        for _ in 0..35 {
            log.line(&line);
        }
        let size = |p: &str| std::fs::metadata(dir.path().join(p)).map(|m| m.len()).ok();
        assert_eq!(size("svc.log.1"), Some(1000));
        assert_eq!(size("svc.log.2"), Some(1000));
        assert_eq!(size("svc.log.3"), None, "only two rotated files are kept");
        assert_eq!(size("svc.log"), Some(500));
        // Reopening continues the current file.
        let mut again = RotatingLog::open(dir.path(), "svc", 1024, 2);
        again.line(&line);
        assert_eq!(size("svc.log"), Some(600));
    }
}
