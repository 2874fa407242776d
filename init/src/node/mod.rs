//! The installed node's wing: PID 1 as the [`supervisor`] of the node's
//! services, and the signed [`updater`] it runs as one of them; both record
//! what happens in the node's [`events`] journal.

pub mod events;
pub mod supervisor;
pub mod updater;
