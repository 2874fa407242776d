//! The admin API: everything `bootserver`'s subcommands do, as typed calls
//! on a working directory.
//!
//! Each call takes typed arguments (names, node references, `config`
//! types, paths), does its registry work in one transaction and returns
//! typed values; nothing here prints. The command line (`src/bin/bootserver`)
//! turns arguments into these calls and prints what they return; test
//! harnesses and benchmarks call the same functions in-process.
//!
//! - [`Admin::open`], [`Admin::init`]: the working directory.
//! - sites ([`Admin::add_site`], …), nodes ([`Admin::add_node`], …), slices
//!   ([`Admin::create_slice`], …): the registry.
//! - [`Admin::publish`]: verify and serve a signed repository;
//!   [`Admin::start_rollout`] and its companions: roll a published release
//!   out in waves.
//! - [`Admin::serve`]: run the HTTPS server until told to stop.
//! - [`files`]: the admin's input files (rspecs, init scripts, ssh keys) and
//!   the node config files it writes.

#![warn(missing_docs, missing_debug_implementations)]

mod error;
pub mod files;
mod nodes;
mod repo;
mod rollouts;
mod serve;
mod sites;
mod slices;

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

pub use crate::registry::{NewNode, NodeRef, NodeSort};
pub use crate::workdir::{InitOptions, SiteCertificate};
pub use error::AdminError;
pub use files::NodeConfigFormat;
pub use nodes::{BootStateChange, ConfigUrls, NodeDetails};
pub use rollouts::RolloutSpec;
pub use serve::shutdown_signal;
pub use slices::{LeaseEnd, SliceMembership, SliceSpec};

use crate::workdir::WorkDir;

/// An opened boot server working directory, ready for admin calls. Calls
/// may run while the server is serving: each opens its own connection and
/// waits for the server's writer when it must.
#[derive(Debug, Clone)]
pub struct Admin {
    workdir: WorkDir,
}

impl Admin {
    /// Opens the working directory made by [`Admin::init`].
    pub fn open(dir: &Path) -> Result<Admin, AdminError> {
        Ok(Admin {
            workdir: WorkDir::open(dir)?,
        })
    }

    /// Creates a working directory (CA, server certificate, database,
    /// config); nothing is left behind if it fails.
    pub fn init(dir: &Path, options: &InitOptions) -> Result<Admin, AdminError> {
        let workdir = WorkDir::init(dir, options).map_err(|source| AdminError::Init {
            path: dir.to_path_buf(),
            source: Box::new(source),
        })?;
        Ok(Admin { workdir })
    }

    /// The working directory: its paths and configuration.
    pub fn workdir(&self) -> &WorkDir {
        &self.workdir
    }

    /// Runs `change` in one immediate transaction: it waits for the
    /// server's writer, and either all of `change` is stored or none of it.
    fn write<T>(
        &self,
        change: impl FnOnce(&Connection) -> Result<T, AdminError>,
    ) -> Result<T, AdminError> {
        let mut conn = self.workdir.open_db()?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(AdminError::Begin)?;
        let value = change(&tx)?;
        tx.commit().map_err(AdminError::Commit)?;
        Ok(value)
    }

    /// Runs `query` in one read transaction, so everything it reads is from
    /// the same moment.
    fn read<T>(
        &self,
        query: impl FnOnce(&Connection) -> Result<T, AdminError>,
    ) -> Result<T, AdminError> {
        let mut conn = self.workdir.open_db()?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Deferred)
            .map_err(AdminError::Begin)?;
        let value = query(&tx)?;
        tx.commit().map_err(AdminError::Commit)?;
        Ok(value)
    }

    /// The number of log entries kept per node.
    fn event_log_limit(&self) -> u32 {
        self.workdir.config.nodes.event_log_limit
    }
}
