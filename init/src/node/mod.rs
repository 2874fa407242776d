//! The installed node's wing: PID 1 as the [`supervisor`] of the node's
//! services, and the signed [`updater`] it runs as one of them.

pub mod supervisor;
pub mod updater;
