//! Wave assignment: a node's wave depends on its id alone (the same every
//! time, on every server, in every rollout with the same plan), and each
//! wave gets about its share of the nodes.

use bootserver::rollout::{bucket, WavePlan, SCALE};
use config::node::NodeId;
use proptest::prelude::*;

/// Cumulative wave bounds: 1 to 6 growing shares ending at 100 %.
fn plans() -> impl Strategy<Value = WavePlan> {
    proptest::collection::btree_set(1u32..SCALE, 0..6).prop_map(|cuts| {
        let mut bounds: Vec<u32> = cuts.into_iter().collect();
        bounds.push(SCALE);
        WavePlan::new(bounds).expect("growing bounds ending at 100%")
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn a_node_is_always_in_the_same_wave(plan in plans(), id in 1u64..u64::MAX / 2) {
        let node = NodeId(id);
        let wave = plan.wave_of(node);
        prop_assert_eq!(plan.wave_of(node), wave);
        let again: WavePlan = plan.to_string().parse().unwrap();
        prop_assert_eq!(again.wave_of(node), wave, "the same plan written out and read back");
        let (from, to) = plan.range(wave);
        prop_assert!(from <= bucket(node) && bucket(node) < to);
    }

    #[test]
    fn waves_get_their_share_of_the_nodes(plan in plans(), start in 1u64..1_000_000_000) {
        const N: u64 = 20_000;
        let mut counts = vec![0u64; plan.len()];
        for id in start..start + N {
            counts[plan.wave_of(NodeId(id))] += 1;
        }
        for (i, count) in counts.iter().enumerate() {
            let (from, to) = plan.range(i);
            let p = f64::from(to - from) / f64::from(SCALE);
            let expected = p * N as f64;
            // Five standard deviations of a binomial, plus rounding slack.
            let tolerance = 5.0 * (N as f64 * p * (1.0 - p)).sqrt() + 3.0;
            prop_assert!(
                (*count as f64 - expected).abs() <= tolerance,
                "wave {} ({}..{} of {}): {} nodes, expected {:.0} ± {:.0}",
                i + 1, from, to, SCALE, count, expected, tolerance
            );
        }
    }

    #[test]
    fn a_bigger_first_wave_only_moves_nodes_earlier(
        small in 1u32..SCALE - 1,
        extra in 1u32..SCALE,
        id in 1u64..u64::MAX / 2,
    ) {
        let big = (small + extra).min(SCALE - 1).max(small + 1);
        let a = WavePlan::new(vec![small, SCALE]).unwrap();
        let b = WavePlan::new(vec![big, SCALE]).unwrap();
        let node = NodeId(id);
        prop_assert!(b.wave_of(node) <= a.wave_of(node));
    }
}

#[test]
fn the_canaries_are_the_same_nodes_every_time() {
    let plan: WavePlan = "1%,10%,50%,100%".parse().unwrap();
    let canaries: Vec<u64> = (1..=5000u64)
        .filter(|id| plan.wave_of(NodeId(*id)) == 0)
        .collect();
    let again: Vec<u64> = (1..=5000u64)
        .filter(|id| plan.wave_of(NodeId(*id)) == 0)
        .collect();
    assert_eq!(canaries, again);
    assert!(
        (30..=75).contains(&canaries.len()),
        "{} of 5000",
        canaries.len()
    );
}
