//! The node's client for the boot server's node API (`docs/DESIGN.md` §2):
//! requests signed with the node's key (`config::api::auth`), replies
//! checked against the request's nonce, TLS trusting only the CD's CA, each
//! server URL tried in turn with failures explained (certificate, host
//! name, clock, network).
//!
//! Shared by `init` (the CD's boot manager, the supervisor, the updater)
//! and `nodemgr` (the slivers' reconciliation), which must not depend on
//! each other. [`NodeIdentity`] reads what an installed node knows about
//! itself (node config, CA, the CD's hand-over note) and makes a client.

#![warn(missing_docs)]

pub mod identity;

mod client;

pub use client::{
    fresh_nonce, repo_base, CachedReply, ClientError, Conditional, ServerClient, ServerError,
};
pub use config::handover::{Handover, HANDOVER_FILE};
pub use identity::{IdentityError, NodeIdentity};
