//! Module indexes checked in under `tests/data/kmod/` (the seeds of the
//! `module_index` fuzz target): an excerpt of Debian's real index for the
//! modules a node needs, and hostile or broken ones. The real one parses
//! cleanly and plans loads as modprobe does; the broken ones are reported
//! line by line, end, and never plan a module without its dependencies.
//! Every directory on disk is listed here, and every one listed is on disk.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use floor::kmod::{KmodError, ModuleIndex};

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/kmod")
}

fn load(name: &str) -> ModuleIndex {
    ModuleIndex::load(&data().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// For every module: the plan names the same modules as the closure, each
/// once, and (without cycles) every hard dependency loads before its user.
fn plans_are_sound(index: &ModuleIndex, acyclic: bool) {
    for (name, module) in index.modules() {
        let Ok(plan) = index.load_plan(name) else {
            continue;
        };
        let order: Vec<&str> = plan.iter().map(|(m, _)| m.as_str()).collect();
        let planned: BTreeSet<&str> = order.iter().copied().collect();
        assert_eq!(planned.len(), order.len(), "{name}: twice in {order:?}");
        let closure = index.closure(&[name]).unwrap();
        assert_eq!(
            planned,
            closure.iter().map(String::as_str).collect(),
            "{name}"
        );
        if acyclic {
            let at = |m: &str| order.iter().position(|p| *p == m);
            for dep in &module.deps {
                assert!(at(dep) < at(name), "{name}: {dep} after it in {order:?}");
            }
        }
    }
}

#[test]
fn debians_index_excerpt_plans_loads_as_modprobe_does() {
    let index = load("debian-6.1.0-56-amd64");
    assert_eq!(index.problems(), &[]);
    index.ensure_well_formed().unwrap();
    // ext4 wants crc32c through an alias in a `pre:` soft dependency.
    let plan = index.load_plan("ext4").unwrap();
    let soft: Vec<&str> = plan
        .iter()
        .filter(|(_, soft)| *soft)
        .map(|(m, _)| m.as_str())
        .collect();
    assert_eq!(soft, ["crc32c_intel", "crc32c_generic"], "{plan:?}");
    assert_eq!(
        index.load_order("ext4").unwrap()[2..],
        ["jbd2", "mbcache", "crc16", "ext4"]
    );
    assert_eq!(
        index.load_order("virtio_net").unwrap(),
        [
            "virtio_ring",
            "virtio",
            "failover",
            "net_failover",
            "virtio_net"
        ]
    );
    // A device's modalias finds its driver (QEMU's virtio network card).
    assert_eq!(
        index.modules_for_alias("pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00"),
        ["virtio_pci"]
    );
    // Built-in modules need nothing loaded; words before `pre:` are
    // ignored as kmod does (`softdep cifs gcm`).
    assert!(index.is_builtin("unix"));
    assert_eq!(index.load_order("unix").unwrap(), Vec::<String>::new());
    assert!(index.softdeps()["cifs"].pre.is_empty());
    plans_are_sound(&index, true);
}

#[test]
fn malformed_lines_are_skipped_reported_and_refused_by_strict_readers() {
    let index = load("malformed-lines");
    let lines: Vec<(&str, usize)> = index.problems().iter().map(|p| (p.file, p.line)).collect();
    assert_eq!(
        lines,
        [
            ("modules.dep", 2),
            ("modules.dep", 3),
            ("modules.alias", 2),
            ("modules.alias", 3),
            ("modules.softdep", 1)
        ]
    );
    // A node loads what it can...
    assert_eq!(index.load_order("fs-ext4").unwrap(), ["mbcache", "ext4"]);
    // ...and a tool writing an index for others refuses it, naming the line.
    let e = index.ensure_well_formed().unwrap_err();
    assert!(matches!(e, KmodError::Malformed { .. }), "{e}");
    assert!(
        e.to_string()
            .ends_with("modules.dep: line 2: expected `path: dependencies`"),
        "{e}"
    );
    plans_are_sound(&index, true);
}

#[test]
fn dependency_cycles_end() {
    let index = load("dependency-cycle");
    for name in ["a", "b", "c"] {
        let order = index.load_order(name).unwrap();
        assert_eq!(order.len(), 3, "{name}: {order:?}");
    }
    plans_are_sound(&index, false);
}

#[test]
fn a_missing_hard_dependency_is_an_error_and_a_missing_soft_one_is_not() {
    let index = load("missing-dependency");
    let e = index.load_order("virtio_net").unwrap_err();
    assert!(
        matches!(&e, KmodError::Missing { name, .. } if name == "net_failover"),
        "{e}"
    );
    assert_eq!(index.load_order("failover").unwrap(), ["failover"]);
    assert!(index.closure(&["virtio_net"]).is_err());
    // `a` wants `b` softly first, and needs it for real: `b`'s missing `x`
    // must surface, not vanish with the soft attempt.
    let e = index.load_order("a").unwrap_err();
    assert!(
        matches!(&e, KmodError::Missing { name, .. } if name == "x"),
        "{e}"
    );
}

#[test]
fn a_dependency_chain_deeper_than_any_kernel_is_not_planned_half() {
    let index = load("deep-chain");
    // Cut at some depth, the plan would load m64 first, without m65..m80;
    // and the image builder's closure would leave them off the CD.
    let e = index.load_order("m0").unwrap_err();
    assert!(matches!(e, KmodError::TooDeep { .. }), "{e}");
    assert!(index.closure(&["m0"]).is_err());
    // Where the chain fits, the whole of it is planned.
    assert_eq!(index.load_order("m40").unwrap().len(), 41);
}

#[test]
fn aliases_to_modules_not_in_the_index_find_nothing() {
    let index = load("alias-to-nowhere");
    assert_eq!(
        index.lookup("pci:v00008086d0000100Esv00008086sd0000001Ebc02sc00i00"),
        None
    );
    assert!(index
        .load_order("pci:v00008086d0000100Esv00008086sd0000001Ebc02sc00i00")
        .is_err());
    // A pattern of many stars against a long text ends quickly (no
    // exponential backtracking), matching as fnmatch does.
    let long = "b".repeat(10_000) + "a" + &"b".repeat(10);
    assert_eq!(index.modules_for_alias(&long), ["virtio_pci"]);
    assert!(index.modules_for_alias(&"b".repeat(10_000)).is_empty());
}

#[test]
fn the_fixtures_on_disk_are_the_ones_tested() {
    let on_disk: BTreeSet<String> = fs::read_dir(data())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let tested: BTreeSet<String> = [
        "debian-6.1.0-56-amd64",
        "malformed-lines",
        "dependency-cycle",
        "missing-dependency",
        "deep-chain",
        "alias-to-nowhere",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(on_disk, tested);
}
