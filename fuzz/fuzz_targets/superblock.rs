//! The first bytes of whatever block device is attached (a USB stick may
//! carry a node config; anyone can write its superblock): never a panic.
//!
//! Seeds: `fuzz/seeds/superblock` (ext4, FAT and ISO 9660 heads, hostile labels).
#![no_main]

use init::blockdev;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(info) = blockdev::parse_superblock(data) {
        if let Some(label) = info.label {
            // Labels end up in log lines and mount decisions: printable only.
            assert!(
                !label.is_empty() && !label.chars().any(char::is_control),
                "{label:?}"
            );
        }
    }
});
