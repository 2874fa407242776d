//! The boot manager's parsers of outside input: DHCP replies from the
//! network, superblocks of whatever disk is attached, the kernel command
//! line, and a module index. None may panic on any bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

use config::node::MacAddr;
use init::net::dhcp;
use init::{blockdev, kernel_cmdline::Cmdline, modprobe};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    match selector % 4 {
        0 => {
            let _ = dhcp::parse_reply(
                rest,
                0x1234_5678,
                MacAddr([0x52, 0x54, 0, 0x12, 0x34, 0x56]),
            );
        }
        1 => {
            let _ = blockdev::parse_superblock(rest);
        }
        2 => {
            let _ = Cmdline::parse(&String::from_utf8_lossy(rest));
        }
        _ => {
            let text = String::from_utf8_lossy(rest);
            let mut parts = text.splitn(3, '\u{0}');
            let (dep, alias, softdep) = (
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(""),
            );
            let index = modprobe::ModuleIndex::parse(
                Path::new("/lib/modules/fuzz"),
                floor::kmod::IndexTexts {
                    dep: dep.into(),
                    alias: alias.into(),
                    softdep: softdep.into(),
                    ..Default::default()
                },
            );
            for line in dep.lines().take(8) {
                if let Some((name, _)) = line.split_once(':') {
                    let _ = index.load_order(name);
                }
            }
            for modalias in alias.lines().take(8) {
                let _ = index.modules_for_alias(modalias);
            }
        }
    }
});
