//! Typed, validated configuration and the wire types shared by the node and
//! the boot server.
//!
//! - [`node`]: the node config (`node.toml`), strict, with errors that name
//!   file, line and field; [`plnode`] imports PlanetLab's `plnode.txt`.
//! - [`rspec`]: a sliver's resources; [`units`]: rates and sizes as people write them.
//! - [`cd`]: what a boot CD says about itself; [`handover`]: what the CD
//!   tells the installed system it starts.
//! - [`events`]: the node's event journal (what its services append, what
//!   the sensors follow).
//! - [`api`]: the node API's JSON types and request authentication;
//!   [`release`]: the id of a node OS release, computed alike on both sides.
//!
//! This crate does no I/O beyond reading the file it is asked to parse.

#![warn(missing_docs)]

pub mod api;
pub mod cd;
mod error;
pub mod events;
pub mod handover;
pub mod node;
pub mod plnode;
pub mod release;
pub mod rspec;
pub mod server;
pub mod sshkey;
pub mod timestamp;
pub mod units;

pub use error::{ConfigError, Location};
pub use node::NodeConfig;
pub use timestamp::Timestamp;

/// Reads a node config from either form, chosen by content: `plnode.txt`
/// lines (`NAME="value"`) or TOML. Returns the warnings of an import.
pub fn load_any_node_config(
    path: &std::path::Path,
) -> Result<(NodeConfig, Vec<String>), ConfigError> {
    let text = error::read_file_text(path)?;
    parse_any_node_config(&text, path)
}

/// Like [`load_any_node_config`], on text already read.
pub fn parse_any_node_config(
    text: &str,
    source: &std::path::Path,
) -> Result<(NodeConfig, Vec<String>), ConfigError> {
    let looks_like_plnode = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .is_some_and(|l| l.starts_with(|c: char| c.is_ascii_uppercase()) && !l.starts_with('['));
    if looks_like_plnode {
        plnode::parse(text, source).map(|i| (i.config, i.warnings))
    } else {
        NodeConfig::from_toml(text, source).map(|c| (c, Vec::new()))
    }
}
