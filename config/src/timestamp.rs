//! Points in time on the wire and in files: the workspace's one time type,
//! [`floor::time::Timestamp`], re-exported here so that configuration and
//! wire types name it from one place.

pub use floor::time::{parse_expiry, TimeError, Timestamp};
