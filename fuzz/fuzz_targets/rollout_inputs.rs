//! What rollouts add to the inputs: the release directive and check-in
//! reply a node decodes (after their signature checked, still from the
//! network), the supervisor's services file with `wake_on`, and what staff
//! type for waves, failure limits and intervals. None may panic; what
//! decodes survives its own encoding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

use bootserver::rollout::{FailureLimit, WavePlan};
use config::api::{CheckinResponse, ReleaseDirective};
use config::units::Period;
use init::node::supervisor::spec::SupervisorSpec;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    match selector % 4 {
        0 => {
            if let Ok(d) = serde_json::from_slice::<ReleaseDirective>(rest) {
                let bytes = serde_json::to_vec(&d).expect("a decoded directive encodes");
                let again: ReleaseDirective =
                    serde_json::from_slice(&bytes).expect("and decodes again");
                assert_eq!(d, again);
            }
        }
        1 => {
            if let Ok(r) = serde_json::from_slice::<CheckinResponse>(rest) {
                let _ = r.hints.set();
            }
        }
        2 => {
            let _ = SupervisorSpec::parse(&String::from_utf8_lossy(rest), Path::new("fuzz.toml"));
        }
        _ => {
            let text = String::from_utf8_lossy(rest);
            if let Ok(plan) = text.parse::<WavePlan>() {
                let again: WavePlan = plan.to_string().parse().expect("a plan reads back");
                assert_eq!(plan, again);
                for id in 1..20u64 {
                    let w = plan.wave_of(config::node::NodeId(id));
                    assert!(w < plan.len());
                }
            }
            if let Ok(limit) = text.parse::<FailureLimit>() {
                let _ = limit.exceeded(3, 7);
                assert_eq!(limit.to_string().parse::<FailureLimit>().ok(), Some(limit));
            }
            if let Ok(p) = text.parse::<Period>() {
                assert_eq!(p.to_string().parse::<Period>().ok(), Some(p));
            }
        }
    }
});
