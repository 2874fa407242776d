//! A DHCP datagram as the boot manager receives it from the network: never
//! a panic; what it accepts is a reply to this client's transaction.
//!
//! Seeds: `fuzz/seeds/dhcp_reply` (replies to transaction 0x12345678 for
//! 52:54:00:12:34:56, and hostile ones).
#![no_main]

use config::node::MacAddr;
use init::net::dhcp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mac = MacAddr([0x52, 0x54, 0, 0x12, 0x34, 0x56]);
    if dhcp::parse_reply(data, 0x1234_5678, mac).is_some() {
        // The transaction id and the client address are what tie a reply
        // to this client: another transaction's copy is never accepted.
        assert!(dhcp::parse_reply(data, 0x1234_5679, mac).is_none());
        assert!(dhcp::parse_reply(data, 0x1234_5678, MacAddr([0x52, 0x54, 0, 0, 0, 1])).is_none());
    }
});
