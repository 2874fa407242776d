//! Slivers under a pure cgroup v2 hierarchy with ext4 project quotas: what
//! the build host cannot show (its cgroup2 has no controllers, its kernel
//! no quota format). One boot of the Debian kernel with a small initramfs
//! (busybox, the static nodemgr, mke2fs, the modules for overlay, ext4,
//! quotas and loop devices, a busybox reference root); its /init mounts
//! cgroup2 with cpu, memory and pids, moves itself into `system/` as the
//! supervisor does, drives nodemgr and prints `@result ...@` lines, which
//! this test checks.

use std::path::{Path, PathBuf};
use std::time::Duration;

use mkimage::tree::{EntryKind, ImageTree};
use qemu_tests::artifacts::{self, ArtifactError};
use qemu_tests::qemu::{self, Firmware, Qemu, QemuConfig};

/// CPU weights 1:4 must give a CPU time ratio within this band (4 ± 25%):
/// TCG's timer and the guest's own init take a little time from both.
const CPU_RATIO: (f64, f64) = (3.0, 5.0);

const GUEST_INIT: &str = r#"#!/bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /tmp /run /var
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
exec > /dev/ttyS0 2>&1
r() { echo "@result $*@"; }
for m in loop overlay quota_v2 ext4; do modprobe $m || r "modprobe-failed $m"; done
mkdir -p /sys/fs/cgroup
mount -t cgroup2 cgroup2 /sys/fs/cgroup
echo "+cpu +memory +pids" > /sys/fs/cgroup/cgroup.subtree_control
mkdir /sys/fs/cgroup/system
echo $$ > /sys/fs/cgroup/system/cgroup.procs
# The reference root lives on ext4, as on a node's partition (the
# initramfs is tmpfs, which 6.1 cannot id-map).
/sbin/mke2fs -q -t ext4 /tmp/ref.img 64M && mkdir -p /plnode/ref && mount -o loop /tmp/ref.img /plnode/ref && cp -a /ref/. /plnode/ref/ || r "failed reference-root"
N="nodemgr --state-dir /var/nodemgr --run-dir /run/nodemgr --reference-root /plnode/ref --slivers-image /tmp/slivers.img --slivers-image-size 512MiB"
G=/sys/fs/cgroup/slivers
$N create pl_small --rspec /etc/test/small.toml --start || r "failed create pl_small"
$N create pl_big --rspec /etc/test/big.toml --start || r "failed create pl_big"
S=$G/pl_small
r "limits $(cat $S/cpu.weight) $(cat $S/memory.max) $(cat $S/memory.high) $(cat $S/memory.swap.max) $(cat $S/memory.oom.group) $(cat $S/pids.max)"
$N show pl_small

# Disk quota: the sliver's root writes past 8 MiB.
out=$($N enter pl_small -- sh -c 'dd if=/dev/zero of=/root/fill bs=1M count=32 2>&1; sync')
echo "$out"
r "quota $(echo "$out" | grep -c 'Disk quota exceeded') $($N show pl_small --json | grep disk_bytes | tr -dc 0-9)"
$N enter pl_small -- rm -f /root/fill
# The same write as the node's root, straight into the upper directory,
# is not bound by the quota (CAP_SYS_RESOURCE): had the node's root
# mounted the overlay, the sliver's writes would not be bound either.
dd if=/dev/zero of=/run/nodemgr/fs/pl_small/upper/node-root-file bs=1M count=16 2>/dev/null
r "node-root-bypass $? $(ls -l /run/nodemgr/fs/pl_small/upper/node-root-file | awk '{print $5}')"
rm -f /run/nodemgr/fs/pl_small/upper/node-root-file

# Loading a module from inside.
r "insmod $($N enter pl_big -- insmod /root/probe.ko 2>&1 | grep -c 'Operation not permitted')"

# A fork bomb stops at pids.max; the node goes on.
$N enter pl_small -- sh -c 'i=0; while [ $i -lt 100 ]; do sleep 300 & i=$((i+1)); done; wait' >/dev/null 2>&1 &
sleep 5
r "forkbomb $(cat $S/pids.current) $(grep max $S/pids.events | cut -d' ' -f2) $(sh -c 'echo node-runs')"
$N stop pl_small && $N start pl_small >/dev/null || r "failed restart pl_small"

# A memory hog is OOM-killed inside its cgroup while the neighbour runs.
$N enter pl_big -- sleep 1000 >/dev/null 2>&1 &
sleep 2
big_before=$(cat $G/pl_big/pids.current)
$N enter pl_small -- sh -c 'sleep 1000 & dd if=/dev/zero of=/dev/null bs=48M count=1' >/dev/null 2>&1
sleep 1
r "oom $(grep '^oom_kill ' $S/memory.events | cut -d' ' -f2) $big_before $(cat $G/pl_big/pids.current) $(cat $S/pids.current)"
$N stop pl_small && $N start pl_small >/dev/null || r "failed restart pl_small"

# CPU weights 1:4 under contention (one CPU).
$N enter pl_small -- sh -c 'while :; do :; done' >/dev/null 2>&1 &
$N enter pl_big -- sh -c 'while :; do :; done' >/dev/null 2>&1 &
sleep 3
a0=$(grep usage_usec $S/cpu.stat | cut -d' ' -f2)
b0=$(grep usage_usec $G/pl_big/cpu.stat | cut -d' ' -f2)
sleep 10
a1=$(grep usage_usec $S/cpu.stat | cut -d' ' -f2)
b1=$(grep usage_usec $G/pl_big/cpu.stat | cut -d' ' -f2)
r "cpu $((a1 - a0)) $((b1 - b0))"

# A "reboot": every sliver process dies; restore brings them back.
for s in pl_small pl_big; do echo 1 > $G/$s/cgroup.kill; done
sleep 2
$N restore
r "restore $($N list | grep -c ' pid ')"
$N delete pl_small && $N delete pl_big
r "deleted $(ls $G | grep -c pl_) $(ls /run/nodemgr/fs | grep -c pl_) $(grep -c pl_ /var/nodemgr/ids.json)"
r "done"
poweroff -f
"#;

const SMALL: &str = "cpu_share = 1\nmemory = \"32MiB\"\npids = 32\ndisk = \"8MiB\"\n";
const BIG: &str = "cpu_share = 4\nmemory = \"64MiB\"\npids = 64\ndisk = \"16MiB\"\n";

fn initramfs(dir: &Path, nodemgr: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let kernel =
        mkimage::kernel::Kernel::find(None, Path::new("/boot"), Path::new("/lib/modules"))?;
    let mut tree = ImageTree::new();
    for d in [
        "bin", "sbin", "usr/bin", "usr/sbin", "etc/test", "proc", "sys", "dev", "tmp", "run", "var",
    ] {
        tree.dir(d, 0o755)?;
    }
    tree.char_device("dev/console", 5, 1, 0o600)?;
    // Programs first: busybox's applet links never shadow them.
    tree.host_file_mode("usr/bin/nodemgr", nodemgr, 0o755)?;
    mkimage::elf::add_program(&mut tree, "sbin/mke2fs", Path::new("/sbin/mke2fs"))?;
    mkimage::busybox::add_busybox(&mut tree, Path::new("/bin/busybox"))?;
    if Path::new("/etc/mke2fs.conf").exists() {
        tree.host_file("etc/mke2fs.conf", Path::new("/etc/mke2fs.conf"))?;
    }
    let index = mkimage::kmod::load_index(&kernel.modules_dir)?;
    let modules = mkimage::kmod::ModuleSet::resolve(
        &index,
        &[
            "loop",
            "overlay",
            "ext4",
            "crc32c_generic",
            "quota_v2",
            "quota_tree",
        ],
    )?;
    modules.add_to_tree(&index, &mut tree, "")?;
    tree.bytes("init", GUEST_INIT, 0o755)?;
    tree.bytes("etc/test/small.toml", SMALL, 0o644)?;
    tree.bytes("etc/test/big.toml", BIG, 0o644)?;

    // The reference root under /ref: mkimage's busybox sliver-ref, plus a
    // real module file for the insmod probe.
    let spec = mkimage::spec::SliverRefSpec {
        version: None,
        flavour: mkimage::spec::SliverFlavour::Busybox,
        suite: String::new(),
        mirror: String::new(),
        busybox: "/bin/busybox".into(),
    };
    let package = mkimage::packages::sliver_ref_package(&spec, "test")?
        .map_err(|s| anyhow::anyhow!("sliver-ref skipped: {}", s.reason))?;
    tree.dir("ref", 0o755)?;
    for (path, entry) in package.tree.entries() {
        tree.insert(&format!("ref/{path}"), entry.kind.clone(), entry.mode)?;
    }
    let probe = std::fs::read_dir(kernel.modules_dir.join("kernel/drivers/block"))?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().is_some_and(|n| n == "loop.ko"))
        .ok_or_else(|| anyhow::anyhow!("no loop.ko"))?;
    tree.host_file("ref/root/probe.ko", &probe)?;
    assert!(matches!(
        tree.get("ref/bin/sh").map(|e| &e.kind),
        Some(EntryKind::Symlink(_))
    ));

    let out = dir.join("slivers.cpio");
    let file = std::fs::File::create(&out)?;
    mkimage::archive::write_newc(
        &tree,
        std::io::BufWriter::new(file),
        mkimage::Mtime(1_795_000_000),
        &indicatif::ProgressBar::hidden(),
    )?;
    Ok((kernel.image, out))
}

fn results(lines: &[String]) -> Vec<Vec<String>> {
    lines
        .iter()
        .filter_map(|l| {
            l.trim()
                .strip_prefix("@result ")
                .and_then(|r| r.strip_suffix('@'))
        })
        .map(|r| r.split_whitespace().map(str::to_string).collect())
        .collect()
}

fn number(v: &[String], i: usize) -> u64 {
    v.get(i)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("field {i} of {v:?} is not a number"))
}

#[test]
fn limits_quotas_and_restore_in_a_pure_cgroup2_guest() {
    if let Err(e) = qemu::available(Firmware::Bios) {
        eprintln!("SKIP: {e}");
        return;
    }
    for tool in ["/bin/busybox", "/sbin/mke2fs"] {
        if !Path::new(tool).exists() {
            eprintln!("SKIP: {tool} missing (scripts/setup)");
            return;
        }
    }
    let nodemgr = match artifacts::build_nodemgr() {
        Ok(p) => p,
        Err(ArtifactError::Unavailable(why)) => {
            eprintln!("SKIP: {why}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let dir = tempfile::Builder::new()
        .prefix("qemu-slivers-")
        .tempdir()
        .unwrap();
    let (kernel, initrd) = match initramfs(dir.path(), &nodemgr) {
        Ok(x) => x,
        Err(e) if e.to_string().contains("no kernel") || e.to_string().contains("NoneFound") => {
            eprintln!("SKIP: {e}");
            return;
        }
        Err(e) => panic!("building the initramfs: {e:#}"),
    };
    let mut cfg = QemuConfig::new(Firmware::Bios, dir.path().join("run"));
    cfg.network = false;
    cfg.memory_mib = 512;
    cfg.extra_args = vec![
        "-smp".into(),
        "1".into(),
        "-kernel".into(),
        kernel.display().to_string(),
        "-initrd".into(),
        initrd.display().to_string(),
        "-append".into(),
        "console=ttyS0 panic=-1 quiet".into(),
    ];
    let mut guest = Qemu::start(&cfg).unwrap();
    guest
        .wait_for_marker("@result done@", Duration::from_secs(600))
        .unwrap_or_else(|e| panic!("{e}"));
    let lines = guest.lines().to_vec();
    let all = results(&lines);
    for r in &all {
        eprintln!("guest: {}", r.join(" "));
    }
    let log = lines.join("\n");
    let get = |key: &str| -> Vec<String> {
        all.iter()
            .find(|r| r.first().map(String::as_str) == Some(key))
            .unwrap_or_else(|| panic!("no `{key}` result in the console:\n{log}"))[1..]
            .to_vec()
    };
    let failures: Vec<&Vec<String>> = all
        .iter()
        .filter(|r| r[0] == "failed" || r[0] == "modprobe-failed")
        .collect();
    assert!(failures.is_empty(), "{failures:?}\n{log}");

    // Each limit as the kernel reports it after nodemgr wrote it.
    assert_eq!(
        get("limits"),
        ["1", "33554432", "29360128", "0", "1", "32"],
        "cpu.weight memory.max memory.high memory.swap.max memory.oom.group pids.max"
    );

    // EDQUOT for the sliver's root at its 8 MiB quota...
    let quota = get("quota");
    assert_eq!(quota[0], "1", "no `Disk quota exceeded`:\n{log}");
    let used = number(&quota, 1);
    assert!(used <= 8 << 20, "{used} bytes used past an 8 MiB quota");
    assert!(used >= 6 << 20, "only {used} bytes written before EDQUOT");
    // ... while the node's root (CAP_SYS_RESOURCE) writes past it.
    assert_eq!(get("node-root-bypass"), ["0", "16777216"]);

    assert_eq!(
        get("insmod"),
        ["1"],
        "insmod inside did not fail with EPERM\n{log}"
    );

    let bomb = get("forkbomb");
    // Forks were refused (pids.events max) and the count never passed
    // pids.max; the shell's failed forks leave it a little below.
    assert!(
        number(&bomb, 1) > 0,
        "no fork refused at pids.max: {bomb:?}"
    );
    let height = number(&bomb, 0);
    assert!(
        (24..=32).contains(&height),
        "pids.current {height} with pids.max 32"
    );
    assert_eq!(bomb[2], "node-runs");

    let oom = get("oom");
    assert!(
        number(&oom, 0) >= 1,
        "no OOM kill in the hog's cgroup: {oom:?}"
    );
    assert_eq!(
        number(&oom, 1),
        number(&oom, 2),
        "the neighbour lost processes: {oom:?}"
    );
    assert!(
        number(&oom, 1) >= 2,
        "the neighbour's workload is not running: {oom:?}"
    );
    assert!(
        number(&oom, 3) <= 1,
        "the hog's sliver kept workload after the OOM kill: {oom:?}"
    );

    let cpu = get("cpu");
    let (small, big) = (number(&cpu, 0) as f64, number(&cpu, 1) as f64);
    let ratio = big / small;
    eprintln!("cpu.weight 1:4 gave {small} µs : {big} µs = 1:{ratio:.2}");
    assert!(
        ratio >= CPU_RATIO.0 && ratio <= CPU_RATIO.1,
        "weights 1:4 gave 1:{ratio:.2} (allowed {CPU_RATIO:?})"
    );

    assert_eq!(
        get("restore"),
        ["2"],
        "slivers running after restore\n{log}"
    );
    assert_eq!(
        get("deleted"),
        ["0", "0", "0"],
        "cgroups, files, id ranges left"
    );
}
