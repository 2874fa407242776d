//! What can go wrong in an admin operation, with every cause kept.

use std::path::PathBuf;

use crate::db::DbError;
use crate::model::{NetworkError, SshKeyError};
use crate::publish::PublishError;
use crate::registry::RegistryError;
use crate::server::ServerError;
use crate::workdir::WorkDirError;

/// An admin operation failed. Each variant says what was being done and
/// keeps the error beneath it as its `source()`, so a command line can print
/// the whole chain (`floor::report::one_line`).
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Opening the working directory failed (not initialised, bad config).
    #[error(transparent)]
    WorkDir(Box<WorkDirError>),
    /// `init` could not create the working directory.
    #[error("creating {}", path.display())]
    Init {
        /// The directory asked for.
        path: PathBuf,
        /// Why not.
        #[source]
        source: Box<WorkDirError>,
    },
    /// The registry database could not be opened.
    #[error(transparent)]
    Database(#[from] DbError),
    /// Another writer held the database for longer than the busy timeout.
    #[error("waiting for the database")]
    Begin(#[source] rusqlite::Error),
    /// The transaction did not commit; nothing of it was stored.
    #[error("committing")]
    Commit(#[source] rusqlite::Error),
    /// The registry refused the change or could not read what was asked.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// No random bytes for a new node key.
    #[error("drawing a random node key")]
    NodeKey(#[source] getrandom::Error),
    /// A host or domain name that is not a DNS name (`config` gives the
    /// reason as text).
    #[error("{reason}")]
    HostName {
        /// The name given.
        name: String,
        /// `config`'s reason.
        reason: String,
    },
    /// A dotted host name and a separate domain were both given.
    #[error(
        "`{hostname}` already names a domain; give either a dotted host name or a domain, not both"
    )]
    DomainTwice {
        /// The dotted host name.
        hostname: String,
    },
    /// The node config made for a node fails the checks the node applies
    /// (e.g. a gateway outside the node's subnet), so it is not handed out.
    /// `config`'s location would point into text nobody wrote, so only the
    /// field and the reason are kept.
    #[error("node {node}: {}{reason}", field_prefix(field))]
    InvalidNodeConfig {
        /// The node's full host name.
        node: String,
        /// The config field at fault, e.g. `network.gateway`.
        field: Option<String>,
        /// `config`'s reason.
        reason: String,
    },
    /// A registered node's network cannot go into a node config.
    #[error("node {node}: its network cannot go into a node config")]
    NodeNetwork {
        /// The node's full host name.
        node: String,
        /// What is wrong with it.
        #[source]
        source: NetworkError,
    },
    /// The node config made for a node does not parse back for another
    /// reason than a field's value.
    #[error("the generated node config does not parse back")]
    GeneratedConfig(#[source] config::ConfigError),
    /// Writing a node config file failed.
    #[error("writing the node config {}", path.display())]
    WriteConfig {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: floor::durable::DurableError,
    },
    /// An input file (rspec, init script, key list) could not be read.
    #[error("reading {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An rspec file is not TOML of the rspec's shape. (The `toml` error's
    /// own text draws the line over several lines; its message and place
    /// are kept instead.)
    #[error("{location}: {message}")]
    RspecSyntax {
        /// The file, line and column.
        location: config::Location,
        /// What the TOML parser said.
        message: String,
    },
    /// An rspec file parses but breaks an rspec rule (`config` gives the
    /// reason as text).
    #[error("{}: {reason}", path.display())]
    RspecInvalid {
        /// The file.
        path: PathBuf,
        /// `config`'s reason.
        reason: String,
    },
    /// A line of a key file is not an OpenSSH public key.
    #[error("{}:{line}", path.display())]
    SshKey {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong with it.
        #[source]
        source: SshKeyError,
    },
    /// A key file holds no key at all.
    #[error("{} holds no ssh public key", path.display())]
    NoSshKeys {
        /// The file.
        path: PathBuf,
    },
    /// `repo publish` refused or failed.
    #[error("publishing {}", repo.display())]
    Publish {
        /// The repository directory given.
        repo: PathBuf,
        /// Why.
        #[source]
        source: Box<PublishError>,
    },
    /// The published release could not be read.
    #[error("reading the published release")]
    Release {
        /// Why.
        #[source]
        source: Box<PublishError>,
    },
    /// A rollout named a release that is not the published one.
    #[error("`{asked}` is not the published release ({published}): publish it first (`bootserver repo publish`)")]
    NotPublished {
        /// What staff named.
        asked: String,
        /// The release the server publishes.
        published: String,
    },
    /// The async runtime for `serve` could not start.
    #[error("starting the async runtime")]
    Runtime(#[source] std::io::Error),
    /// The server could not start or stopped with an error.
    #[error(transparent)]
    Serve(#[from] ServerError),
    /// The bound address could not be read back.
    #[error("reading the bound address")]
    LocalAddr(#[source] std::io::Error),
}

fn field_prefix(field: &Option<String>) -> String {
    field
        .as_deref()
        .map(|f| format!("{f}: "))
        .unwrap_or_default()
}

impl From<WorkDirError> for AdminError {
    fn from(e: WorkDirError) -> AdminError {
        AdminError::WorkDir(Box::new(e))
    }
}
