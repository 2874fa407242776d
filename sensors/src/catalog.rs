//! The sensors: each one's name, columns, kind (snapshot or streaming),
//! the source it reads, and how a reading becomes its table.

use crate::procfs::CPU_MODES;
use crate::sources::{Reading, Source};
use crate::table::{decimal, Column, Table};

/// Snapshot (a table, returned at once) or streaming (rows as they happen,
/// until the client leaves), as the NSDI paper divides sensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A finite table, returned at once.
    Snapshot,
    /// Rows delivered as they happen, until the client goes away.
    Streaming,
}

impl Kind {
    /// The kind's name in the index.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Snapshot => "snapshot",
            Kind::Streaming => "streaming",
        }
    }
}

/// Every sensor the server offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sensor {
    /// The 1-minute load average.
    Load,
    /// The 5-minute load average.
    Load5,
    /// Seconds since boot.
    Uptime,
    /// `/proc/meminfo`, one row per field.
    Meminfo,
    /// CPU time per CPU and mode.
    Cpu,
    /// Mounted file systems and their usage.
    Disk,
    /// Network interfaces and their counters.
    Net,
    /// The node's identity, versions and boot state.
    Node,
    /// Slivers: state, shares, usage, limits, lease.
    Slivers,
    /// Slivers' traffic over the last minute, hour and day, and budgets.
    Bandwidth,
    /// Node events (sliver lifecycle, check-ins, updates), streamed.
    Events,
    /// The last outgoing connections of each slice, then new ones as made.
    Connections,
}

macro_rules! columns {
    ($($name:literal: $about:literal),* $(,)?) => {
        &[$(Column { name: $name, about: $about }),*]
    };
}

const LOAD: &[Column] = columns!["load1": "load average over 1 minute"];
const LOAD5: &[Column] = columns!["load5": "load average over 5 minutes"];
const UPTIME: &[Column] = columns![
    "uptime_secs": "seconds since boot",
    "idle_secs": "seconds the CPUs were idle, summed over CPUs",
];
const MEMINFO: &[Column] = columns![
    "field": "the kernel's name (MemTotal, MemAvailable, ...)",
    "value": "its value",
    "unit": "bytes, or count",
];
const CPU: &[Column] = columns![
    "cpu": "all, or the CPU's number",
    "user": "seconds in user mode",
    "nice": "seconds in user mode at low priority",
    "system": "seconds in the kernel",
    "idle": "seconds idle",
    "iowait": "seconds idle waiting for I/O",
    "irq": "seconds serving interrupts",
    "softirq": "seconds serving soft interrupts",
    "steal": "seconds taken by the hypervisor",
    "guest": "seconds running guests",
    "guest_nice": "seconds running low-priority guests",
];
const DISK: &[Column] = columns![
    "mount": "where the file system is mounted",
    "device": "its device or source",
    "fstype": "its type",
    "size_bytes": "its size",
    "used_bytes": "bytes in use",
    "avail_bytes": "bytes available to users",
    "inodes": "inodes in total",
    "inodes_used": "inodes in use",
];
const NET: &[Column] = columns![
    "interface": "the interface",
    "rx_bytes": "bytes received",
    "rx_packets": "packets received",
    "rx_errors": "receive errors",
    "rx_dropped": "received packets dropped",
    "tx_bytes": "bytes sent",
    "tx_packets": "packets sent",
    "tx_errors": "send errors",
    "tx_dropped": "packets dropped on sending",
];
const NODE: &[Column] = columns![
    "node_id": "the node's number at the boot server",
    "hostname": "its host name",
    "os_version": "the running OS version",
    "cd_version": "the version of the CD that booted it",
    "boot_state": "the boot state the boot server named last",
    "deployment": "the running deployment",
    "kernel": "the running kernel's release",
];
const SLIVERS: &[Column] = columns![
    "name": "the slice",
    "state": "running, stopped, or down (should run and does not)",
    "cpu_share": "its CPU share (cpu.weight)",
    "cpu_secs": "CPU seconds used since it started",
    "memory_used_bytes": "memory in use (memory.current)",
    "memory_limit_bytes": "memory limit (memory.max, else what its rspec grants)",
    "processes": "processes in its cgroup",
    "disk_used_bytes": "bytes in its writable layer",
    "disk_quota_bytes": "its disk quota",
    "lease_end": "when its lease ends (RFC 3339)",
];
const BANDWIDTH: &[Column] = columns![
    "name": "the slice",
    "minute_bytes": "bytes it sent in the last 60 seconds",
    "minute_packets": "packets it sent in the last 60 seconds",
    "hour_bytes": "bytes it sent in the last hour",
    "hour_packets": "packets it sent in the last hour",
    "day_bytes": "bytes it sent in the last 24 hours",
    "day_packets": "packets it sent in the last 24 hours",
    "guaranteed_bps": "its guaranteed rate, bits per second",
    "ceiling_bps": "its ceiling in force, bits per second",
    "budget_bytes": "its daily byte budget",
    "budget_left_bytes": "bytes left in the current budget period",
    "budget_state": "normal, throttled (past 80 %) or exhausted",
    "period_end": "when the budget period ends (RFC 3339)",
];
/// Columns of the `events` sensor.
pub const EVENTS: &[Column] = columns![
    "kind": "checkin, update, or sliver",
    "time": "when it happened (RFC 3339)",
    "subject": "the boot state, the update step, or the slice",
    "detail": "what happened",
];
/// Columns of the `connections` sensor.
pub const CONNECTIONS: &[Column] = columns![
    "slice": "the slice whose sliver made the connection",
    "time": "when it was first seen (RFC 3339)",
    "protocol": "tcp or udp",
    "source": "local address and port",
    "destination": "remote address and port",
    "uid": "the socket's owner (host uid)",
];

impl Sensor {
    /// Every sensor, in the order `/` lists them.
    pub const ALL: [Sensor; 12] = [
        Sensor::Load,
        Sensor::Load5,
        Sensor::Uptime,
        Sensor::Meminfo,
        Sensor::Cpu,
        Sensor::Disk,
        Sensor::Net,
        Sensor::Node,
        Sensor::Slivers,
        Sensor::Bandwidth,
        Sensor::Events,
        Sensor::Connections,
    ];

    /// The sensor named in a request's first path segment.
    pub fn find(name: &str) -> Option<Sensor> {
        Sensor::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Its name (its path).
    pub fn name(self) -> &'static str {
        match self {
            Sensor::Load => "load",
            Sensor::Load5 => "load5",
            Sensor::Uptime => "uptime",
            Sensor::Meminfo => "meminfo",
            Sensor::Cpu => "cpu",
            Sensor::Disk => "disk",
            Sensor::Net => "net",
            Sensor::Node => "node",
            Sensor::Slivers => "slivers",
            Sensor::Bandwidth => "bandwidth",
            Sensor::Events => "events",
            Sensor::Connections => "connections",
        }
    }

    /// What it tells.
    pub fn about(self) -> &'static str {
        match self {
            Sensor::Load => "the 1-minute load average",
            Sensor::Load5 => "the 5-minute load average",
            Sensor::Uptime => "seconds since boot",
            Sensor::Meminfo => "memory use, one row per /proc/meminfo field",
            Sensor::Cpu => "CPU seconds per CPU and mode",
            Sensor::Disk => "mounted file systems and their use",
            Sensor::Net => "network interfaces and their counters",
            Sensor::Node => "the node's id, host name, versions and boot state",
            Sensor::Slivers => "slivers: state, CPU share, memory, processes, disk, lease",
            Sensor::Bandwidth => {
                "per sliver: bytes and packets sent in the last minute, hour and day; rates; budget left"
            }
            Sensor::Events => "sliver lifecycle, check-ins and updates, as they happen",
            Sensor::Connections => {
                "the last outgoing connections of each slice, then new ones as they are seen"
            }
        }
    }

    /// Its columns; the first is the key that path arguments select rows by.
    pub fn columns(self) -> &'static [Column] {
        match self {
            Sensor::Load => LOAD,
            Sensor::Load5 => LOAD5,
            Sensor::Uptime => UPTIME,
            Sensor::Meminfo => MEMINFO,
            Sensor::Cpu => CPU,
            Sensor::Disk => DISK,
            Sensor::Net => NET,
            Sensor::Node => NODE,
            Sensor::Slivers => SLIVERS,
            Sensor::Bandwidth => BANDWIDTH,
            Sensor::Events => EVENTS,
            Sensor::Connections => CONNECTIONS,
        }
    }

    /// Snapshot or streaming.
    pub fn kind(self) -> Kind {
        match self {
            Sensor::Events | Sensor::Connections => Kind::Streaming,
            _ => Kind::Snapshot,
        }
    }

    /// The source a snapshot sensor reads (none for streaming ones).
    pub fn source(self) -> Option<Source> {
        Some(match self {
            Sensor::Load | Sensor::Load5 => Source::LoadAvg,
            Sensor::Uptime => Source::Uptime,
            Sensor::Meminfo => Source::Meminfo,
            Sensor::Cpu => Source::Cpu,
            Sensor::Disk => Source::Disk,
            Sensor::Net => Source::Net,
            Sensor::Node => Source::Node,
            Sensor::Slivers => Source::Slivers,
            Sensor::Bandwidth => Source::Bandwidth,
            Sensor::Events | Sensor::Connections => return None,
        })
    }

    /// The sensor's table from a reading of its source (empty when the
    /// reading is of another source).
    pub fn table(self, reading: &Reading) -> Table {
        let mut t = Table::new(self.columns());
        match (self, reading) {
            (Sensor::Load, Reading::LoadAvg(l)) => t.push(vec![decimal(l.one, 2)]),
            (Sensor::Load5, Reading::LoadAvg(l)) => t.push(vec![decimal(l.five, 2)]),
            (Sensor::Uptime, Reading::Uptime(u)) => {
                t.push(vec![decimal(u.up_secs, 2), decimal(u.idle_secs, 2)])
            }
            (Sensor::Meminfo, Reading::Meminfo(fields)) => {
                for f in fields {
                    t.push(vec![
                        f.name.clone(),
                        f.value.to_string(),
                        f.unit.as_str().into(),
                    ]);
                }
            }
            (Sensor::Cpu, Reading::Cpu(cpus, hz)) => {
                for c in cpus {
                    let mut row = Vec::with_capacity(1 + CPU_MODES.len());
                    row.push(c.cpu.to_string());
                    row.extend(c.ticks.iter().map(|&t| ticks_to_secs(t, *hz)));
                    t.push(row);
                }
            }
            (Sensor::Disk, Reading::Disk(fss)) => {
                for f in fss {
                    t.push(vec![
                        f.mount.clone(),
                        f.device.clone(),
                        f.fstype.clone(),
                        f.size.to_string(),
                        f.used.to_string(),
                        f.avail.to_string(),
                        f.inodes.to_string(),
                        f.inodes_used.to_string(),
                    ]);
                }
            }
            (Sensor::Net, Reading::Net(devs)) => {
                for d in devs {
                    t.push(vec![
                        d.name.clone(),
                        d.rx_bytes.to_string(),
                        d.rx_packets.to_string(),
                        d.rx_errors.to_string(),
                        d.rx_dropped.to_string(),
                        d.tx_bytes.to_string(),
                        d.tx_packets.to_string(),
                        d.tx_errors.to_string(),
                        d.tx_dropped.to_string(),
                    ]);
                }
            }
            (Sensor::Node, Reading::Node(n)) => t.push(vec![
                n.node_id.map(|i| i.to_string()).unwrap_or_default(),
                n.hostname.clone(),
                n.os_version.clone(),
                n.cd_version.clone(),
                n.boot_state.clone(),
                n.deployment.clone(),
                n.kernel.clone(),
            ]),
            (Sensor::Slivers, Reading::Slivers(slivers)) => {
                for s in slivers {
                    t.push(vec![
                        s.slice.to_string(),
                        s.state.as_str().into(),
                        s.cpu_share.to_string(),
                        s.cpu_usec
                            .map(|u| decimal(u as f64 / 1e6, 6))
                            .unwrap_or_default(),
                        opt(s.memory_used),
                        s.memory_limit.to_string(),
                        s.processes.to_string(),
                        s.disk_used.to_string(),
                        s.disk_quota.to_string(),
                        s.lease_end.map(|t| t.to_string()).unwrap_or_default(),
                    ]);
                }
            }
            (Sensor::Bandwidth, Reading::Bandwidth(slivers)) => {
                for s in slivers {
                    t.push(vec![
                        s.slice.to_string(),
                        s.last_minute.bytes.to_string(),
                        s.last_minute.packets.to_string(),
                        s.last_hour.bytes.to_string(),
                        s.last_hour.packets.to_string(),
                        s.last_day.bytes.to_string(),
                        s.last_day.packets.to_string(),
                        s.guaranteed.bits_per_sec().to_string(),
                        s.ceiling.bits_per_sec().to_string(),
                        s.daily_budget.bytes().to_string(),
                        s.budget_left.to_string(),
                        s.budget_state.as_str().into(),
                        s.period_end.to_string(),
                    ]);
                }
            }
            _ => {}
        }
        t
    }
}

fn opt(v: Option<u64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

/// Clock ticks as seconds with two decimals (ticks are 1/100 s on Linux).
pub fn ticks_to_secs(ticks: u64, hz: u64) -> String {
    let hz = hz.max(1);
    let whole = ticks / hz;
    let frac = (ticks % hz) * 100 / hz;
    if frac == 0 {
        whole.to_string()
    } else if frac.is_multiple_of(10) {
        format!("{whole}.{}", frac / 10)
    } else {
        format!("{whole}.{frac:02}")
    }
}

/// The index (`/`): one row per sensor, with its columns.
pub fn index() -> Table {
    const INDEX: &[Column] = columns![
        "sensor": "the sensor's name (its path)",
        "kind": "snapshot or streaming",
        "columns": "its columns, space-separated; the first is its key",
        "about": "what it tells",
    ];
    let mut t = Table::new(INDEX);
    for s in Sensor::ALL {
        let columns: Vec<&str> = s.columns().iter().map(|c| c.name).collect();
        t.push(vec![
            s.name().into(),
            s.kind().as_str().into(),
            columns.join(" "),
            s.about().into(),
        ]);
    }
    t.push(vec![
        "metrics".into(),
        "snapshot".into(),
        String::new(),
        "every figure above in the Prometheus/OpenMetrics text format".into(),
    ]);
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_found() {
        for s in Sensor::ALL {
            assert_eq!(Sensor::find(s.name()), Some(s));
            assert_eq!(s.kind() == Kind::Snapshot, s.source().is_some());
            // A column named like a key would hide rows with that key.
            let cols = s.columns();
            for (i, c) in cols.iter().enumerate() {
                assert!(!cols[i + 1..].iter().any(|d| d.name == c.name), "{c:?}");
            }
        }
        assert_eq!(Sensor::find("metrics"), None);
        assert_eq!(index().rows().len(), Sensor::ALL.len() + 1);
    }

    #[test]
    fn ticks_become_seconds() {
        assert_eq!(ticks_to_secs(12345, 100), "123.45");
        assert_eq!(ticks_to_secs(12340, 100), "123.4");
        assert_eq!(ticks_to_secs(12300, 100), "123");
        assert_eq!(ticks_to_secs(7, 100), "0.07");
        assert_eq!(ticks_to_secs(1, 0), "1");
    }
}
