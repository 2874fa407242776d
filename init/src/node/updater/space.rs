//! Will the new deployment fit? Checked before anything is written.
//!
//! At the peak of an update the partition holds the downloaded archives of
//! the changed packages (in the cache) and the whole new deployment
//! (changed packages extracted, unchanged ones copied). The signed metadata
//! gives both sizes up front: `length` per archive and `unpacked_length`
//! (regular-file content) per package. File systems round every file up to
//! whole blocks and need inodes and directories, so a margin is added, and
//! a reserve stays free for the node's logs and the running services.

use std::path::Path;

/// Always left free after staging, for logs and the running services.
pub const RESERVE_BYTES: u64 = 32 << 20;
/// Per-file overhead assumed for block rounding and metadata, as a fraction
/// (1/MARGIN_DIVISOR) of the content.
const MARGIN_DIVISOR: u64 = 8;

/// What staging a deployment will take on the partition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpaceNeeds {
    /// Archive bytes still to download (partial downloads already count).
    pub download: u64,
    /// Content of the new deployment: every package, extracted or copied.
    pub content: u64,
}

impl SpaceNeeds {
    /// Everything that must be free before staging starts.
    pub fn required(&self) -> u64 {
        let data = self.download.saturating_add(self.content);
        data.saturating_add(data / MARGIN_DIVISOR)
            .saturating_add(RESERVE_BYTES)
    }
}

/// Bytes an unprivileged writer may still use on the file system of `path`
/// (`statvfs`: available blocks × fragment size).
pub fn free_bytes(path: &Path) -> std::io::Result<u64> {
    let s = nix::sys::statvfs::statvfs(path).map_err(std::io::Error::from)?;
    Ok(s.blocks_available().saturating_mul(s.fragment_size()))
}

pub use crate::deploy::build::human;

/// Space a build plan takes at its peak, given what the cache already holds.
pub fn needs(plan: &crate::deploy::Plan, cache: &pkgsign::cache::PackageCache) -> SpaceNeeds {
    let all = plan.install.iter().chain(plan.reuse.iter().map(|(p, _)| p));
    SpaceNeeds {
        download: plan
            .install
            .iter()
            .map(|p| p.info().length - cache.have(p))
            .sum(),
        content: all.map(|p| p.info().unpacked_limit()).sum(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_space_has_a_margin_and_a_reserve() {
        let needs = SpaceNeeds {
            download: 80 << 20,
            content: 240 << 20,
        };
        assert_eq!(needs.required(), (320 << 20) + (40 << 20) + RESERVE_BYTES);
        assert_eq!(SpaceNeeds::default().required(), RESERVE_BYTES);
        let huge = SpaceNeeds {
            download: u64::MAX,
            content: u64::MAX,
        };
        assert_eq!(huge.required(), u64::MAX);
    }

    #[test]
    fn free_space_of_a_real_file_system() {
        let dir = tempfile::tempdir().unwrap();
        let free = free_bytes(dir.path()).unwrap();
        assert!(free > 0);
        assert!(free_bytes(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn sizes_read_like_people_write_them() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(32 << 20), "32.0 MiB");
        assert_eq!(human(3 << 30), "3.0 GiB");
    }
}
