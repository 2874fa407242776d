//! Traffic control over rtnetlink: the requests bwcap sends (qdiscs and HTB
//! classes), the kernel objects it reads back, and the socket that carries
//! them in batches.
//!
//! Handles: the HTB qdisc is `1:`; every class is `1:<minor>`; the leaf
//! qdisc under class `1:<minor>` has handle `<minor>:`, so a leaf names its
//! class.

pub mod decode;
pub mod htb;
pub mod request;
pub mod socket;

pub use decode::{KernelClass, KernelQdisc, LeafOptions, QdiscOptions};
pub use htb::HtbClassParams;
pub use request::{LeafQdisc, Parent, TcRequest};
pub use socket::{BatchOutcome, NetlinkError, RouteSocket};

/// The major number of bwcap's HTB qdisc (`1:`).
pub const HTB_MAJOR: u16 = 1;

/// `TC_H_ROOT`: the parent of a root qdisc and of a top-level class.
pub const TC_H_ROOT: u32 = 0xFFFF_FFFF;

/// `major:minor` as the kernel writes it in one 32-bit word.
pub const fn handle(major: u16, minor: u16) -> u32 {
    ((major as u32) << 16) | minor as u32
}

/// The major half of a handle.
pub const fn major_of(handle: u32) -> u16 {
    (handle >> 16) as u16
}

/// The minor half of a handle.
pub const fn minor_of(handle: u32) -> u16 {
    (handle & 0xFFFF) as u16
}

/// A handle as `tc` prints it (`1:a`, `10:`, `root`).
pub fn handle_text(h: u32) -> String {
    if h == TC_H_ROOT {
        return "root".into();
    }
    match minor_of(h) {
        0 => format!("{:x}:", major_of(h)),
        m => format!("{:x}:{:x}", major_of(h), m),
    }
}
