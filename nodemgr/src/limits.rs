//! From an rspec to cgroup v2 values.
//!
//! - `cpu.weight` = the rspec's `cpu_share` (both range over 1..=10000, so
//!   shares keep their ratios exactly).
//! - `memory.max` = the rspec's `memory` (or the node's default), rounded
//!   down to whole pages so that the kernel reports what was written;
//!   `memory.high` 1/8 below it, so the sliver is throttled and reclaimed
//!   before it is OOM-killed; `memory.swap.max` = 0; `memory.oom.group` = 1
//!   (an OOM kill takes the sliver's whole workload, never half of it).
//! - `pids.max` = the rspec's `pids` (or the default).

use config::rspec::Rspec;
use config::units::ByteSize;
use serde::{Deserialize, Serialize};

use crate::cgroup::LimitWrite;

const PAGE: u64 = 4096;

/// What a sliver gets when its rspec leaves a field out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Defaults {
    /// Memory limit.
    pub memory: ByteSize,
    /// Process limit.
    pub pids: u32,
    /// Disk quota of the writable layer.
    pub disk: ByteSize,
    /// Size of the sliver's `/tmp` (tmpfs, charged to its memory).
    pub tmp: ByteSize,
}

impl Default for Defaults {
    fn default() -> Defaults {
        Defaults {
            memory: ByteSize::mib(512),
            pids: 512,
            disk: ByteSize::gib(1),
            tmp: ByteSize::mib(64),
        }
    }
}

/// The limits in effect for one sliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// `cpu.weight`.
    pub cpu_weight: u32,
    /// `memory.max` in bytes.
    pub memory_max: u64,
    /// `memory.high` in bytes.
    pub memory_high: u64,
    /// `pids.max`.
    pub pids_max: u32,
    /// Disk quota in bytes.
    pub disk: u64,
}

impl Limits {
    /// The limits for `rspec` (already validated) on a node with `defaults`.
    pub fn from_rspec(rspec: &Rspec, defaults: &Defaults) -> Limits {
        let memory = rspec.memory.unwrap_or(defaults.memory).bytes();
        let memory_max = (memory / PAGE).max(1) * PAGE;
        let memory_high = ((memory_max - memory_max / 8) / PAGE).max(1) * PAGE;
        Limits {
            cpu_weight: rspec.cpu_share.clamp(1, 10_000),
            memory_max,
            memory_high,
            pids_max: rspec.pids.unwrap_or(defaults.pids),
            disk: rspec.disk.unwrap_or(defaults.disk).bytes(),
        }
    }

    /// The cgroup files and values, in the order they are written
    /// (`memory.high` before `memory.max`, so high never exceeds max).
    pub fn writes(&self) -> Vec<LimitWrite> {
        [
            ("cpu.weight", self.cpu_weight.to_string()),
            ("memory.high", self.memory_high.to_string()),
            ("memory.max", self.memory_max.to_string()),
            ("memory.swap.max", "0".to_string()),
            ("memory.oom.group", "1".to_string()),
            ("pids.max", self.pids_max.to_string()),
        ]
        .into_iter()
        .map(|(file, value)| LimitWrite { file, value })
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_rspec_becomes_page_aligned_cgroup_values() {
        let rspec = Rspec {
            cpu_share: 4,
            memory: Some(ByteSize::from_bytes(100 * 1024 * 1024 + 123)),
            pids: Some(64),
            ..Rspec::default()
        };
        let l = Limits::from_rspec(&rspec, &Defaults::default());
        assert_eq!(l.cpu_weight, 4);
        assert_eq!(l.memory_max, 100 * 1024 * 1024);
        assert_eq!(l.memory_high % PAGE, 0);
        assert!(l.memory_high < l.memory_max);
        assert_eq!(l.pids_max, 64);
        let files: Vec<&str> = l.writes().iter().map(|w| w.file).collect();
        assert_eq!(
            files,
            [
                "cpu.weight",
                "memory.high",
                "memory.max",
                "memory.swap.max",
                "memory.oom.group",
                "pids.max"
            ]
        );
    }

    #[test]
    fn missing_fields_take_the_node_defaults() {
        let l = Limits::from_rspec(&Rspec::default(), &Defaults::default());
        assert_eq!(l.memory_max, 512 << 20);
        assert_eq!(l.pids_max, 512);
        assert_eq!(l.disk, 1 << 30);
        assert_eq!(l.cpu_weight, 1);
    }
}
