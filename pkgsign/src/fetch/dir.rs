//! Fetching from a repository directory on a local file system.

use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;

use super::{check_relative_path, FetchError, Fetcher, LimitedReader};

/// A repository directory (for example a mounted CD or the staff's `REPO/`).
#[derive(Debug, Clone)]
pub struct DirFetcher {
    base: PathBuf,
}

impl DirFetcher {
    /// A fetcher for the repository at `base` (the directory holding
    /// `metadata/` and `targets/`). Nothing is checked until a fetch.
    pub fn new(base: impl Into<PathBuf>) -> Self {
        DirFetcher { base: base.into() }
    }
}

impl Fetcher for DirFetcher {
    fn fetch(&self, relative_path: &str, max_len: u64) -> Result<Box<dyn Read + Send>, FetchError> {
        check_relative_path(relative_path)?;
        let path = self.base.join(relative_path);
        let location = path.display().to_string();
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(FetchError::NotFound { location })
            }
            Err(source) => return Err(FetchError::Io { location, source }),
        };
        let meta = file.metadata().map_err(|source| FetchError::Io {
            location: location.clone(),
            source,
        })?;
        if !meta.is_file() {
            return Err(FetchError::Io {
                location,
                source: io::Error::other("not a regular file"),
            });
        }
        if meta.len() > max_len {
            return Err(FetchError::TooLong {
                location,
                limit: max_len,
            });
        }
        Ok(Box::new(LimitedReader::new(file, max_len, location)))
    }

    fn location(&self, relative_path: &str) -> String {
        self.base.join(relative_path).display().to_string()
    }

    /// A local file can always be continued where it was left; whether it
    /// is still the same file is for the caller's hash check to say.
    fn fetch_from(
        &self,
        relative_path: &str,
        offset: u64,
        _validator: &str,
        max_len: u64,
    ) -> Result<Box<dyn Read + Send>, FetchError> {
        let mut reader = self.fetch(relative_path, max_len)?;
        let location = self.location(relative_path);
        let skipped = io::copy(&mut (&mut reader).take(offset), &mut io::sink())
            .map_err(|e| FetchError::from_io(&location, e))?;
        if skipped < offset {
            return Err(FetchError::Changed { location });
        }
        Ok(reader)
    }
}
