//! The signed package repository the server publishes.

use std::path::Path;

use super::{Admin, AdminError};
use crate::model::RepoPublish;
use crate::{publish, registry};

impl Admin {
    /// Verifies the pkgsign repository at `repo` exactly as a node will and
    /// serves it (atomically; an unsigned, tampered or older repository is
    /// refused and the served one stays). `root` is the repository's initial
    /// root metadata, needed for the first publish only.
    pub fn publish(&self, repo: &Path, root: Option<&Path>) -> Result<RepoPublish, AdminError> {
        publish::publish(&self.workdir, repo, root).map_err(|source| AdminError::Publish {
            repo: repo.to_path_buf(),
            source: Box::new(source),
        })
    }

    /// The newest `limit` publishes, newest first.
    pub fn publishes(&self, limit: u32) -> Result<Vec<RepoPublish>, AdminError> {
        self.read(|c| Ok(registry::publishes(c, limit)?))
    }
}
