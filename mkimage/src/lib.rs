//! Builds the node OS packages (`kernel`, `base`, `sliver-ref`) into a
//! pkgsign repository, and the image-building pieces `bootcd` shares:
//!
//! - [`tree`]: an image described in memory ([`tree::ImageTree`]);
//! - [`archive`]: reproducible tar.gz and newc cpio renderings of it;
//! - [`kmod`]: kernel module selection with dependencies and regenerated
//!   index files ([`kmod::NODE_MODULES`] is the node's set);
//! - [`elf`]: the loader and shared libraries a program needs;
//! - [`busybox`]: busybox-static and its applet links;
//! - [`kernel`]: finding the (Debian) kernel;
//! - [`spec`], [`packages`], [`build`]: the `mkimage build` pipeline.

pub mod archive;
pub mod build;
pub mod busybox;
pub mod elf;
pub mod kernel;
pub mod kmod;
pub mod packages;
pub mod progress;
pub mod spec;
pub mod tree;

pub use archive::Mtime;
pub use spec::ImageSpec;
pub use tree::ImageTree;

/// Whether this process runs as root (debootstrap and chroot tests need it).
pub fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The time stamp for reproducible output: `SOURCE_DATE_EPOCH`-style
/// seconds, or the current time (with a warning: the output will differ
/// from run to run).
pub fn mtime_or_now(given: Option<u32>) -> Mtime {
    match given {
        Some(secs) => Mtime(secs),
        None => {
            tracing::warn!("no SOURCE_DATE_EPOCH given: using the current time, so the output is not reproducible");
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            Mtime(u32::try_from(now).unwrap_or(u32::MAX))
        }
    }
}
