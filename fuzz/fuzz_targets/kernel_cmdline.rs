//! The kernel command line (anyone at the boot loader's prompt can edit
//! it): never a panic; names it accepts are plain names, never paths.
//!
//! Seeds: `fuzz/seeds/kernel_cmdline`.
#![no_main]

use init::kernel_cmdline::Cmdline;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let cmdline = Cmdline::parse(&String::from_utf8_lossy(data));
    for name in [&cmdline.handover, &cmdline.disk].into_iter().flatten() {
        assert!(
            !name.contains('/') && name != "." && name != "..",
            "{name:?}"
        );
    }
});
