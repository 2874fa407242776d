//! bwcap's parsers of outside input: the kernel's rtnetlink replies (class
//! and qdisc dumps, acknowledgements, HTB attributes), the state file staff
//! write (TOML) and the state bwcap keeps (JSON). Every input goes to every
//! parser; none may panic.
#![no_main]

use std::path::Path;

use bwcap::store::State;
use bwcap::tc::{decode, htb};
use bwcap::DesiredState;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode::decode_replies(data);
    let _ = htb::decode_class_options(data);
    let _ = htb::decode_qdisc_options(data);
    let _ = State::from_json(data, Path::new("state.json"));
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = DesiredState::from_toml(text, Path::new("state.toml"));
    }
});
