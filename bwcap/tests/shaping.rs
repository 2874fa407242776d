//! Real shaping, measured: greedy TCP senders in sliver cgroups on the node
//! side of a veth pair, a receiver on the peer counting bytes. Rates are
//! compared as HTB charges them: every segment with its Ethernet, IP and
//! TCP headers ([`bwcap::testbed::Measured::wire_bps`]).
//!
//! The tests run one at a time (a lock here; the `bwcap-rates` test group
//! under nextest): several shaped flows at once on a two-core machine would
//! measure the machine, not the shaper.

mod common;

use std::sync::Mutex;
use std::time::Duration;

use bwcap::layout::{ALARM_PACKETS_PER_SEC, CLASS_ICMP};
use bwcap::testbed::{jain, Measured};
use common::{at, deviation, node, Node, CONNECT, T0};
use config::units::{ByteSize, Rate};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

const WARMUP: Duration = Duration::from_millis(1000);
const WINDOW: Duration = Duration::from_millis(2500);
const TOLERANCE: f64 = 0.05;

/// How many windows a rate may be measured in: the machine is shared, and
/// a window in which the senders or the receiver did not get the CPU
/// measures the machine. A shaper that is wrong is wrong in every window.
const ATTEMPTS: usize = 3;

/// Starts one greedy sender per cgroup (ids 1..), waits until all send,
/// then measures windows until `good` accepts one (at most [`ATTEMPTS`]);
/// returns the last window's rates.
fn measure_until(
    n: &Node,
    cgroups: &[&std::path::Path],
    port: u16,
    good: impl Fn(&[Measured]) -> bool,
) -> Vec<Measured> {
    let receiver = n.bed.receiver(port).unwrap();
    let seconds = (WARMUP + WINDOW * ATTEMPTS as u32).as_secs_f64() + 1.5;
    let ids: Vec<u32> = (1..=cgroups.len() as u32).collect();
    let pids: Vec<u32> = cgroups
        .iter()
        .zip(&ids)
        .map(|(cgroup, id)| n.send(cgroup, *id, seconds, u64::MAX / 2, port))
        .collect();
    assert!(receiver.wait_for(&ids, CONNECT), "every sender connected");
    let mut warmup = WARMUP;
    let mut rates = Vec::new();
    for attempt in 1..=ATTEMPTS {
        let measured = receiver.measure(&ids, warmup, WINDOW);
        warmup = Duration::ZERO;
        rates = ids.iter().map(|id| measured[id]).collect();
        if good(&rates) {
            break;
        }
        eprintln!(
            "window {attempt}: {:?}, measuring again",
            rates.iter().map(|m| mbit(m.wire_bps())).collect::<Vec<_>>()
        );
    }
    for pid in pids {
        n.stop(pid);
    }
    rates
}

/// [`measure_until`] for rates each within [`TOLERANCE`] of `expected`.
fn measure(n: &Node, cgroups: &[&std::path::Path], port: u16, expected: &[f64]) -> Vec<Measured> {
    measure_until(n, cgroups, port, |m| {
        m.iter()
            .zip(expected)
            .all(|(m, e)| deviation(m.wire_bps(), *e) <= TOLERANCE)
    })
}

fn mbit(bps: f64) -> String {
    format!("{:.3} Mbit/s", bps / 1e6)
}

#[test]
fn a_sliver_capped_at_1_10_and_100_mbit_gets_its_cap() {
    let Some(n) = node("rates") else { return };
    let _serial = serial();
    for (i, cap) in [1u64, 10, 100].into_iter().enumerate() {
        let a = n.sliver("alpha", Rate::kbit(5), Rate::mbit(cap));
        n.apply_ok(
            &n.desired(Some(Rate::mbit(1000)), vec![a.clone()]),
            at(i as i64),
        );
        let expected = cap as f64 * 1e6;
        let m = measure(&n, &[&a.cgroup], 5001 + i as u16, &[expected])[0];
        eprintln!(
            "cap {cap} Mbit/s: measured {} (goodput {})",
            mbit(m.wire_bps()),
            mbit(m.goodput_bps())
        );
        assert!(
            deviation(m.wire_bps(), expected) <= TOLERANCE,
            "cap {cap} Mbit/s, measured {}",
            mbit(m.wire_bps())
        );
    }
}

#[test]
fn the_node_cap_holds_for_the_sum() {
    let Some(n) = node("sum") else { return };
    let _serial = serial();
    let a = n.sliver("alpha", Rate::kbit(5), Rate::mbit(100));
    let b = n.sliver("beta", Rate::kbit(5), Rate::mbit(100));
    n.apply_ok(
        &n.desired(Some(Rate::mbit(20)), vec![a.clone(), b.clone()]),
        T0,
    );
    let sum_of = |m: &[Measured]| m.iter().map(Measured::wire_bps).sum::<f64>();
    let m = measure_until(&n, &[&a.cgroup, &b.cgroup], 5001, |m| {
        deviation(sum_of(m), 20e6) <= TOLERANCE
    });
    let sum = sum_of(&m);
    eprintln!(
        "node cap 20 Mbit/s: sum {} ({} + {})",
        mbit(sum),
        mbit(m[0].wire_bps()),
        mbit(m[1].wire_bps())
    );
    assert!(deviation(sum, 20e6) <= TOLERANCE, "sum {}", mbit(sum));
}

#[test]
fn greedy_slivers_with_equal_shares_share_fairly() {
    let Some(n) = node("fair") else { return };
    let _serial = serial();
    for count in [2usize, 10] {
        let slivers: Vec<_> = (0..count)
            .map(|i| n.sliver(&format!("s{i}"), Rate::kbit(5), Rate::mbit(100)))
            .collect();
        n.apply_ok(
            &n.desired(Some(Rate::mbit(20)), slivers.clone()),
            at(count as i64),
        );
        let cgroups: Vec<&std::path::Path> = slivers.iter().map(|s| s.cgroup.as_path()).collect();
        let wire = |m: &[Measured]| m.iter().map(Measured::wire_bps).collect::<Vec<f64>>();
        let m = measure_until(&n, &cgroups, 5000 + count as u16, |m| {
            let r = wire(m);
            jain(&r) >= 0.98 && deviation(r.iter().sum(), 20e6) <= TOLERANCE
        });
        let rates = wire(&m);
        let index = jain(&rates);
        let sum: f64 = rates.iter().sum();
        eprintln!(
            "{count} slivers: Jain {index:.4}, sum {}, each {:?}",
            mbit(sum),
            rates
                .iter()
                .map(|r| format!("{:.2}", r / 1e6))
                .collect::<Vec<_>>()
        );
        assert!(index >= 0.98, "{count} slivers: Jain's index {index:.4}");
        assert!(deviation(sum, 20e6) <= TOLERANCE, "sum {}", mbit(sum));
    }
}

#[test]
fn a_guarantee_holds_while_the_others_are_greedy() {
    let Some(n) = node("guarantee") else { return };
    let _serial = serial();
    let mut slivers = vec![n.sliver("vip", Rate::mbit(10), Rate::mbit(20))];
    for i in 0..4 {
        slivers.push(n.sliver(&format!("crowd{i}"), Rate::kbit(5), Rate::mbit(20)));
    }
    n.apply_ok(&n.desired(Some(Rate::mbit(20)), slivers.clone()), T0);
    let cgroups: Vec<&std::path::Path> = slivers.iter().map(|s| s.cgroup.as_path()).collect();
    let rates: Vec<f64> = measure_until(&n, &cgroups, 5001, |m| {
        m[0].wire_bps() >= 10e6 * (1.0 - TOLERANCE)
    })
    .iter()
    .map(Measured::wire_bps)
    .collect();
    eprintln!(
        "guaranteed 10 Mbit/s of 20: {:?}",
        rates
            .iter()
            .map(|r| format!("{:.2}", r / 1e6))
            .collect::<Vec<_>>()
    );
    assert!(
        rates[0] >= 10e6 * (1.0 - TOLERANCE),
        "the guaranteed sliver got {}",
        mbit(rates[0])
    );
}

#[test]
fn a_new_node_cap_takes_effect_at_once() {
    let Some(n) = node("newcap") else { return };
    let _serial = serial();
    let a = n.sliver("alpha", Rate::kbit(5), Rate::mbit(100));
    n.apply_ok(&n.desired(Some(Rate::mbit(40)), vec![a.clone()]), T0);
    let receiver = n.bed.receiver(5001).unwrap();
    let pid = n.send(&a.cgroup, 1, 16.0, u64::MAX / 2, 5001);
    assert!(receiver.wait_for(&[1], CONNECT));
    let window = |warmup, expected: f64| {
        let mut m = receiver.measure(&[1], warmup, Duration::from_millis(1500))[&1];
        for _ in 1..ATTEMPTS {
            if deviation(m.wire_bps(), expected) <= TOLERANCE {
                break;
            }
            eprintln!("window: {}, measuring again", mbit(m.wire_bps()));
            m = receiver.measure(&[1], Duration::ZERO, Duration::from_millis(1500))[&1];
        }
        m
    };
    let before = window(WARMUP, 40e6);
    n.apply_ok(&n.desired(Some(Rate::mbit(10)), vec![a.clone()]), at(1));
    // The queue built at 40 Mbit/s drains at the new rate; TCP settles in
    // well under a second.
    let after = window(Duration::from_millis(500), 10e6);
    n.stop(pid);
    eprintln!(
        "cap 40 -> 10 Mbit/s: {} then {}",
        mbit(before.wire_bps()),
        mbit(after.wire_bps())
    );
    assert!(
        deviation(before.wire_bps(), 40e6) <= TOLERANCE,
        "before: {}",
        mbit(before.wire_bps())
    );
    assert!(
        deviation(after.wire_bps(), 10e6) <= TOLERANCE,
        "after: {}",
        mbit(after.wire_bps())
    );
}

#[test]
fn a_ping_flood_is_held_to_the_icmp_rate() {
    let Some(n) = node("ping") else { return };
    let _serial = serial();
    let a = n.sliver("alpha", Rate::kbit(5), Rate::mbit(100));
    n.apply_ok(&n.desired(Some(Rate::mbit(100)), vec![a.clone()]), T0);
    let seconds = 4.0;
    let result = n.run(
        "ping",
        &a.cgroup,
        &[
            "--to".into(),
            n.bed.peer_addr.to_string(),
            "--rate".into(),
            "500".into(),
            "--seconds".into(),
            seconds.to_string(),
        ],
    );
    let sent = result["sent"].as_u64().unwrap();
    let replies: Vec<u64> = result["replies_ms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    // The class starts with a second's worth of tokens: count after it.
    let (from, to) = (1500u64, 4000u64);
    let in_window = replies.iter().filter(|t| (from..to).contains(t)).count() as f64;
    let pps = in_window / ((to - from) as f64 / 1000.0);
    let expected = ALARM_PACKETS_PER_SEC as f64;
    eprintln!(
        "ping flood: {sent} requests, {} replies, {pps:.1}/s after the burst",
        replies.len()
    );
    assert!(sent >= 1500, "the flood ran: {sent}");
    assert!(
        (pps - expected).abs() <= 1.0,
        "{pps:.1} echo replies/s, class rate {expected}/s"
    );
    let icmp = n
        .usage(at(10))
        .classes
        .into_iter()
        .find(|c| c.minor == CLASS_ICMP)
        .unwrap();
    assert!(
        icmp.stats.drops > 1000,
        "the rest was dropped in the ICMP class: {:?}",
        icmp.stats
    );
}

#[test]
fn past_80_percent_of_its_budget_a_sliver_is_slowed_as_computed() {
    let Some(n) = node("budget") else { return };
    let _serial = serial();
    let mut a = n.sliver("alpha", Rate::kbit(5), Rate::mbit(50));
    a.daily_budget = ByteSize::from_bytes(20_000_000);
    let desired = n.desired(Some(Rate::mbit(100)), vec![a.clone()]);
    n.apply_ok(&desired, T0);
    // 17 MB of payload: with headers, past 80 % of 20 MB.
    let receiver = n.bed.receiver(5001).unwrap();
    let pid = n.send_all(&a.cgroup, 1, 17_000_000, 5001);
    n.wait(pid);
    drop(receiver);
    // The last acknowledgements of the closed connection, through the class too.
    std::thread::sleep(Duration::from_millis(300));
    // Eight seconds before the period ends (on the fake clock).
    let now = at(86_400 - 8);
    n.apply_ok(&desired, now);
    let usage = n.usage(now);
    let alpha = &usage.slivers[0];
    assert!(
        alpha.budget_used * 100 >= 80 * 20_000_000,
        "used {}",
        alpha.budget_used
    );
    let left = 20_000_000 - alpha.budget_used;
    let expected = left * 8 / 8;
    assert_eq!(
        alpha.ceiling,
        Rate::from_bits_per_sec(expected),
        "ceiling = bytes left x 8 / seconds left"
    );
    assert_eq!(alpha.budget_state, bwcap::budget::BudgetState::Throttled);
    let class = usage
        .classes
        .iter()
        .find(|c| c.minor == alpha.class)
        .unwrap();
    assert_eq!(class.params.ceil, expected / 8);

    let m = measure(&n, &[&a.cgroup], 5002, &[expected as f64])[0];
    eprintln!(
        "budget: {} of 20000000 bytes used, ceiling {}, measured {}",
        alpha.budget_used,
        mbit(expected as f64),
        mbit(m.wire_bps())
    );
    assert!(
        deviation(m.wire_bps(), expected as f64) <= TOLERANCE,
        "measured {}",
        mbit(m.wire_bps())
    );
}
