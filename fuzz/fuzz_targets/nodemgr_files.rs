//! nodemgr's files read back from disk (a sliver's state file, the id
//! table, an `authorized_keys` list, a slice name): never a panic, and
//! what is accepted survives its own encoding.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(state) = nodemgr::state::parse_state(data) {
        let json = serde_json::to_vec(&state).expect("an accepted state encodes");
        let again =
            nodemgr::state::parse_state(&json).expect("an accepted state survives its own JSON");
        assert_eq!(state, again);
    }
    let _ = nodemgr::ids::check_table_bytes(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(keys) = nodemgr::AuthorizedKeys::parse(text) {
        let again = nodemgr::AuthorizedKeys::parse(&keys.to_file()).expect("accepted keys survive");
        assert_eq!(keys, again);
    }
    if let Ok(name) = nodemgr::SliceName::new(text) {
        assert!(!name.as_str().contains(['/', '.']));
    }
});
