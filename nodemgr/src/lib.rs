//! nodemgr: slivers, the per-slice containers of a PlanetLab-style node.
//!
//! A sliver is a process tree started with `clone3` straight into its own
//! cgroup (`slivers/<slice>`, cgroup v2 limits from the slice's rspec) and
//! into new user, mount, PID, UTS, IPC and cgroup namespaces; the network
//! is the node's, and the sliver's root has no capability over it. Its root
//! file system is an overlay: the node's reference root (`sliver-ref`),
//! id-mapped to the sliver's own range of 65,536 host ids, below a
//! writable layer on the slivers' file system with an ext4 project quota.
//!
//! Data flow: [`settings`] say where things are; [`NodeManager`]
//! ([`manager`]) takes a [`SliceName`], an rspec and keys, allocates ids
//! ([`ids`]), makes the writable layer ([`storage`]) and the cgroup with its
//! limits ([`cgroup`], [`limits`]), records the sliver ([`state`]), and
//! starts it ([`spawn`] on the host side, [`inside`] in the sliver).
//!
//! A program using this crate must call [`helper_main`] first thing in
//! `main`: the sliver's PID 1 and the `enter` helper are that program,
//! exec'd under another name.

#![warn(missing_docs)]

pub mod admission;
pub mod api;
pub mod api_client;
pub mod bandwidth;
pub mod cgroup;
pub mod ids;
pub mod inside;
pub mod keys;
pub mod limits;
pub mod logins;
pub mod manager;
pub mod name;
pub mod rcap;
pub mod reconcile;
pub mod serve;
pub mod service;
pub mod settings;
pub mod spawn;
pub mod state;
pub mod storage;
pub mod sys;
pub mod terminal;
pub mod vsh;

pub use inside::helper_main;
pub use keys::AuthorizedKeys;
pub use manager::{EnterOptions, NodeError, NodeManager};
pub use name::SliceName;
pub use settings::Settings;
