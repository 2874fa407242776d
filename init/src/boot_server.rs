//! Talking to the boot server: the node's signed client, shared with the
//! node manager (`nodeclient`, DESIGN.md §7).

pub use nodeclient::{
    fresh_nonce, repo_base, CachedReply, ClientError, Conditional, ServerClient, ServerError,
};
