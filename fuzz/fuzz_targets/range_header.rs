//! The `Range` and `If-None-Match` headers the boot server honours on
//! repository files: never a panic, and a range it serves lies inside the
//! file, whatever its length.
//!
//! Seeds: `fuzz/seeds/range_header`.
#![no_main]

use bootserver::input::{self, RangeRequest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for length in [0, 1, 512, 1 << 20, u64::MAX / 2, u64::MAX] {
        match input::parse_range(text, length) {
            RangeRequest::Part(r) => {
                assert!(
                    r.start < r.end && r.end <= length,
                    "{text:?} of {length} -> {r:?}"
                )
            }
            RangeRequest::Whole | RangeRequest::Unsatisfiable => {}
        }
    }
    let _ = input::etag_matches(text, "\"0123abcd\"");
});
