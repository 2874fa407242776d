//! Benchmarks: the project against the tools a user would otherwise use
//! side by side, each a binary in `src/bin/`. What several of them share
//! is here.

use std::path::{Path, PathBuf};

use anyhow::anyhow;

/// The nearest-rank `p` quantile (0.0 ..= 1.0) of `sorted` (ascending);
/// `None` for no samples.
pub fn percentile<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    let last = sorted.len().checked_sub(1)?;
    let i = ((last as f64) * p.clamp(0.0, 1.0)).round() as usize;
    sorted.get(i.min(last)).copied()
}

/// mkimage's busybox `sliver-ref`, unpacked into `dir/sliver-ref`: the
/// reference root the sliver benchmarks start slivers (and crun) from.
pub fn busybox_sliver_ref(dir: &Path) -> anyhow::Result<PathBuf> {
    let spec = mkimage::spec::SliverRefSpec {
        version: None,
        flavour: mkimage::spec::SliverFlavour::Busybox,
        suite: String::new(),
        mirror: String::new(),
        busybox: "/bin/busybox".into(),
    };
    let package = mkimage::packages::sliver_ref_package(&spec, "bench")?
        .map_err(|s| anyhow!("sliver-ref skipped: {}", s.reason))?;
    let tar = mkimage::archive::write_tar(
        &package.tree,
        Vec::new(),
        mkimage::Mtime(1_795_000_000),
        &indicatif::ProgressBar::hidden(),
    )?;
    let root = dir.join("sliver-ref");
    let mut archive = tar::Archive::new(&tar[..]);
    archive.set_preserve_permissions(true);
    archive.unpack(&root)?;
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
        assert_eq!(percentile(&v, 0.5), Some(6));
        assert_eq!(percentile(&v, 0.0), Some(1));
        assert_eq!(percentile(&v, 1.0), Some(10));
        assert_eq!(percentile(&v, 0.99), Some(10));
        assert_eq!(percentile::<u32>(&[], 0.5), None);
    }
}
