//! nodemgr's files read back from disk and its outside inputs (a sliver's
//! state file, the id table, the rcap table, the server's saved slivers
//! answer and each of its entries, an rcap, an rspec given to the API, an
//! `authorized_keys` list, a slice name): never a panic, and what is
//! accepted survives its own encoding.
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
    let _ = nodemgr::rcap::parse_table_bytes(data);
    if let Ok(answer) = nodemgr::reconcile::parse_answer(data) {
        for sliver in &answer.slivers {
            if let Ok(wanted) = nodemgr::reconcile::check(sliver) {
                assert!(wanted.rspec.validate().is_ok());
            }
        }
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(keys) = nodemgr::AuthorizedKeys::parse(text) {
        let again = nodemgr::AuthorizedKeys::parse(&keys.to_file()).expect("accepted keys survive");
        assert_eq!(keys, again);
    }
    if let Ok(rcap) = text.parse::<nodemgr::rcap::Rcap>() {
        assert_eq!(rcap.to_string().parse::<nodemgr::rcap::Rcap>(), Ok(rcap));
    }
    if let Ok(rspec) = toml::from_str::<config::rspec::Rspec>(text) {
        let _ = rspec.validate();
    }
    if let Ok(name) = nodemgr::SliceName::new(text) {
        assert!(!name.as_str().contains(['/', '.']));
    }
});
