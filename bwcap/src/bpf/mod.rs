//! Classification: which class a packet belongs to is decided by the cgroup
//! of the socket that sent it. A tiny `cgroup_skb/egress` program, assembled
//! here by hand and loaded with the raw `bpf()` call, is attached to each
//! sliver's cgroup and to the node's own cgroup; it writes the class id into
//! `skb->priority`, which HTB reads directly.

pub mod asm;
pub mod cgroup;
pub mod program;

pub use cgroup::{Attached, BpfError, Cgroup};
pub use program::Program;
