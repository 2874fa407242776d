//! Builds, signs, customises and inspects the node boot CD (DESIGN.md §3).
//!
//! - [`build`]: `bootcd build` — initramfs ([`initramfs`]) and hybrid ISO
//!   ([`isobuild`]), signed ([`signature`]).
//! - [`customize`]: a per-node copy, config written into the per-node area
//!   ([`nodecfg`]) found with the ISO 9660 reader ([`iso9660`]).
//! - [`inspect`]: `bootcd show` and `bootcd verify`.
//! - [`layout`]: paths and sizes shared with `init`.

pub mod build;
pub mod customize;
pub mod initramfs;
pub mod inspect;
pub mod iso9660;
pub mod isobuild;
pub mod layout;
pub mod nodecfg;
pub mod signature;
pub mod tools;
