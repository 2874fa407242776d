//! The JSON bodies nodes send the boot server (check-in, progress, failure,
//! install and update reports, an unregistered node's hello), with the
//! server's bounds checks: never a panic, and a body the checks accept
//! survives a JSON round trip.
//!
//! Seeds: `fuzz/seeds/node_reports`.
#![no_main]

use bootserver::input;
use config::api::{
    CheckinRequest, FailureReport, HelloRequest, InstallReport, ProgressReport, UpdateReport,
};
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::Serialize;

fn check<T, E>(data: &[u8], bounds: impl Fn(&T) -> Result<(), E>)
where
    T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug,
{
    let Ok(body) = serde_json::from_slice::<T>(data) else {
        return;
    };
    if bounds(&body).is_ok() {
        let text = serde_json::to_vec(&body).expect("an accepted body serialises");
        let again: T = serde_json::from_slice(&text).expect("its own JSON parses");
        assert_eq!(again, body);
    }
}

fuzz_target!(|data: &[u8]| {
    check::<CheckinRequest, _>(data, input::check_checkin);
    check::<ProgressReport, _>(data, input::check_progress);
    check::<FailureReport, _>(data, input::check_failure);
    check::<InstallReport, _>(data, input::check_install);
    check::<UpdateReport, _>(data, input::check_update);
    check::<HelloRequest, _>(data, |r: &HelloRequest| input::check_hardware(&r.hardware));
});
