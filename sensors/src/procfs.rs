//! Parsers of the kernel's text files the node-wide sensors wrap:
//! `/proc/loadavg`, `/proc/uptime`, `/proc/meminfo`, `/proc/stat`,
//! `/proc/net/dev` and `/proc/self/mountinfo`. Each takes the file's text
//! and says which line is wrong when it cannot read it; none panics on any
//! input (fuzzed).

/// A kernel file that does not read as expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {problem}")]
pub struct ParseError {
    /// The file.
    pub file: &'static str,
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub problem: String,
}

fn bad(file: &'static str, line: usize, problem: impl Into<String>) -> ParseError {
    ParseError {
        file,
        line,
        problem: problem.into(),
    }
}

fn number<T: std::str::FromStr>(
    file: &'static str,
    line: usize,
    what: &str,
    text: Option<&str>,
) -> Result<T, ParseError> {
    let text = text.ok_or_else(|| bad(file, line, format!("{what} is missing")))?;
    text.parse()
        .map_err(|_| bad(file, line, format!("{what} `{text}` is not a number")))
}

/// `/proc/loadavg`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadAvg {
    /// Load average over 1 minute.
    pub one: f64,
    /// Over 5 minutes.
    pub five: f64,
    /// Over 15 minutes.
    pub fifteen: f64,
    /// Tasks runnable now.
    pub runnable: u64,
    /// Tasks that exist.
    pub tasks: u64,
}

/// Parses `/proc/loadavg` (`0.15 0.20 0.25 1/234 5678`).
pub fn loadavg(text: &str) -> Result<LoadAvg, ParseError> {
    const FILE: &str = "/proc/loadavg";
    let mut words = text.split_whitespace();
    let one = number(FILE, 1, "the 1-minute load", words.next())?;
    let five = number(FILE, 1, "the 5-minute load", words.next())?;
    let fifteen = number(FILE, 1, "the 15-minute load", words.next())?;
    let tasks_field = words
        .next()
        .ok_or_else(|| bad(FILE, 1, "runnable/total tasks are missing"))?;
    let (runnable, tasks) = tasks_field
        .split_once('/')
        .ok_or_else(|| bad(FILE, 1, format!("`{tasks_field}` is not runnable/total")))?;
    Ok(LoadAvg {
        one,
        five,
        fifteen,
        runnable: number(FILE, 1, "runnable tasks", Some(runnable))?,
        tasks: number(FILE, 1, "total tasks", Some(tasks))?,
    })
}

/// `/proc/uptime`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Uptime {
    /// Seconds since boot.
    pub up_secs: f64,
    /// Seconds the CPUs spent idle, summed over CPUs.
    pub idle_secs: f64,
}

/// Parses `/proc/uptime` (`12345.67 23456.78`).
pub fn uptime(text: &str) -> Result<Uptime, ParseError> {
    const FILE: &str = "/proc/uptime";
    let mut words = text.split_whitespace();
    Ok(Uptime {
        up_secs: number(FILE, 1, "the uptime", words.next())?,
        idle_secs: number(FILE, 1, "the idle time", words.next())?,
    })
}

/// The unit of a `/proc/meminfo` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemUnit {
    /// Bytes (the kernel's `kB`, converted).
    Bytes,
    /// A count (pages, huge pages).
    Count,
}

impl MemUnit {
    /// The unit's name in the sensor's rows.
    pub fn as_str(self) -> &'static str {
        match self {
            MemUnit::Bytes => "bytes",
            MemUnit::Count => "count",
        }
    }
}

/// One line of `/proc/meminfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemField {
    /// The kernel's name (`MemTotal`).
    pub name: String,
    /// Its value, in bytes or as a count.
    pub value: u64,
    /// Which of the two.
    pub unit: MemUnit,
}

/// Parses `/proc/meminfo` (`MemTotal:       16384 kB`).
pub fn meminfo(text: &str) -> Result<Vec<MemField>, ParseError> {
    const FILE: &str = "/proc/meminfo";
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let (name, rest) = line
            .split_once(':')
            .ok_or_else(|| bad(FILE, n, "no `name:` at the start"))?;
        let name = name.trim();
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(bad(FILE, n, format!("`{name}` is not a field name")));
        }
        let mut words = rest.split_whitespace();
        let value: u64 = number(FILE, n, name, words.next())?;
        let (value, unit) = match words.next() {
            None => (value, MemUnit::Count),
            Some("kB") => (
                value
                    .checked_mul(1024)
                    .ok_or_else(|| bad(FILE, n, format!("{name} is too large")))?,
                MemUnit::Bytes,
            ),
            Some(other) => return Err(bad(FILE, n, format!("unknown unit `{other}`"))),
        };
        out.push(MemField {
            name: name.to_string(),
            value,
            unit,
        });
    }
    Ok(out)
}

/// Which CPU a line of `/proc/stat` counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuName {
    /// Every CPU together (the `cpu` line).
    All,
    /// One CPU (`cpu3`).
    Index(u32),
}

impl std::fmt::Display for CpuName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CpuName::All => f.write_str("all"),
            CpuName::Index(i) => write!(f, "{i}"),
        }
    }
}

/// The modes `/proc/stat` counts CPU time in, in its order.
pub const CPU_MODES: [&str; 10] = [
    "user",
    "nice",
    "system",
    "idle",
    "iowait",
    "irq",
    "softirq",
    "steal",
    "guest",
    "guest_nice",
];

/// One `cpu` line of `/proc/stat`: time per mode in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTimes {
    /// Which CPU.
    pub cpu: CpuName,
    /// Ticks per mode, in [`CPU_MODES`] order (modes an old kernel does
    /// not count are 0).
    pub ticks: [u64; 10],
}

/// Parses the `cpu` lines of `/proc/stat`.
pub fn cpu_times(text: &str) -> Result<Vec<CpuTimes>, ParseError> {
    const FILE: &str = "/proc/stat";
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let mut words = line.split_whitespace();
        let Some(label) = words.next().and_then(|w| w.strip_prefix("cpu")) else {
            continue;
        };
        let cpu = if label.is_empty() {
            CpuName::All
        } else {
            CpuName::Index(number(FILE, n, "the CPU number", Some(label))?)
        };
        let mut ticks = [0u64; 10];
        let mut count = 0;
        for (slot, word) in ticks.iter_mut().zip(words.by_ref()) {
            *slot = number(FILE, n, "a CPU time", Some(word))?;
            count += 1;
        }
        if count < 4 {
            return Err(bad(FILE, n, "fewer than 4 CPU times"));
        }
        out.push(CpuTimes { cpu, ticks });
    }
    if !out.iter().any(|c| c.cpu == CpuName::All) {
        return Err(bad(FILE, 1, "no `cpu` line"));
    }
    Ok(out)
}

/// One interface of `/proc/net/dev`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetDevice {
    /// The interface.
    pub name: String,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Packets received.
    pub rx_packets: u64,
    /// Receive errors.
    pub rx_errors: u64,
    /// Received packets dropped.
    pub rx_dropped: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Send errors.
    pub tx_errors: u64,
    /// Packets dropped on sending.
    pub tx_dropped: u64,
}

/// Parses `/proc/net/dev` (two header lines, then `name: 16 counters`).
pub fn net_dev(text: &str) -> Result<Vec<NetDevice>, ParseError> {
    const FILE: &str = "/proc/net/dev";
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().skip(2) {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let (name, counters) = line
            .split_once(':')
            .ok_or_else(|| bad(FILE, n, "no `interface:` at the start"))?;
        let name = name.trim();
        if name.is_empty() {
            return Err(bad(FILE, n, "empty interface name"));
        }
        let values: Vec<u64> = counters
            .split_whitespace()
            .map(|w| number(FILE, n, "a counter", Some(w)))
            .collect::<Result<_, _>>()?;
        if values.len() < 16 {
            return Err(bad(
                FILE,
                n,
                format!("{} counters, expected 16", values.len()),
            ));
        }
        out.push(NetDevice {
            name: name.to_string(),
            rx_bytes: values[0],
            rx_packets: values[1],
            rx_errors: values[2],
            rx_dropped: values[3],
            tx_bytes: values[8],
            tx_packets: values[9],
            tx_errors: values[10],
            tx_dropped: values[11],
        });
    }
    Ok(out)
}

/// One mount of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Where it is mounted.
    pub point: String,
    /// The file system type.
    pub fstype: String,
    /// The device or source (`/dev/vda1`, `tmpfs`).
    pub source: String,
}

/// `\040`-style escapes of mountinfo (space, tab, line break, backslash).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let digits = &bytes[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let value = u32::from(digits[0] - b'0') * 64
                    + u32::from(digits[1] - b'0') * 8
                    + u32::from(digits[2] - b'0');
                if let Ok(byte) = u8::try_from(value) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses `/proc/self/mountinfo`
/// (`36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw`).
pub fn mountinfo(text: &str) -> Result<Vec<Mount>, ParseError> {
    const FILE: &str = "/proc/self/mountinfo";
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let words: Vec<&str> = line.split(' ').collect();
        let dash = words
            .iter()
            .position(|w| *w == "-")
            .ok_or_else(|| bad(FILE, n, "no ` - ` separator"))?;
        if dash < 6 {
            return Err(bad(FILE, n, "fewer than 6 fields before ` - `"));
        }
        let (fstype, source) = match (words.get(dash + 1), words.get(dash + 2)) {
            (Some(t), Some(s)) if !t.is_empty() => (*t, *s),
            _ => return Err(bad(FILE, n, "no file system type and source after ` - `")),
        };
        out.push(Mount {
            point: unescape(words[4]),
            fstype: unescape(fstype),
            source: unescape(source),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loadavg_and_uptime() {
        let l = loadavg("0.15 0.20 1.25 2/345 6789\n").unwrap();
        assert_eq!((l.one, l.five, l.fifteen), (0.15, 0.20, 1.25));
        assert_eq!((l.runnable, l.tasks), (2, 345));
        assert!(loadavg("0.15 0.20").is_err());
        assert!(loadavg("0.15 0.20 x 1/2").is_err());
        assert!(loadavg("0.1 0.2 0.3 12")
            .unwrap_err()
            .to_string()
            .contains("runnable/total"));
        let u = uptime("350735.47 234388.90\n").unwrap();
        assert_eq!((u.up_secs, u.idle_secs), (350735.47, 234388.90));
        assert_eq!(
            uptime("").unwrap_err().to_string(),
            "/proc/uptime:1: the uptime is missing"
        );
    }

    #[test]
    fn meminfo_fields_in_bytes_or_counts() {
        let m = meminfo("MemTotal:       16384 kB\nHugePages_Total:       0\nDirectMap2M:  1 kB\n")
            .unwrap();
        assert_eq!(m[0].name, "MemTotal");
        assert_eq!((m[0].value, m[0].unit), (16384 * 1024, MemUnit::Bytes));
        assert_eq!((m[1].value, m[1].unit), (0, MemUnit::Count));
        assert_eq!(
            meminfo("MemTotal: 1 kB\nBad line\n")
                .unwrap_err()
                .to_string(),
            "/proc/meminfo:2: no `name:` at the start"
        );
        assert!(meminfo("X: 1 MB").is_err());
        assert!(meminfo("X: 99999999999999999999 kB").is_err());
        assert!(meminfo(&format!("X: {} kB", u64::MAX)).is_err());
    }

    #[test]
    fn cpu_lines() {
        let text = "cpu  10 1 20 300 4 0 2 0 0 0\ncpu0 5 1 10 150 2 0 1 0 0 0\ncpu1 5 0 10 150 2 0 1\nintr 1 2\nctxt 9\n";
        let c = cpu_times(text).unwrap();
        assert_eq!(c.len(), 3);
        assert_eq!(c[0].cpu, CpuName::All);
        assert_eq!(c[0].ticks[3], 300);
        assert_eq!(c[2].cpu, CpuName::Index(1));
        assert_eq!(c[2].ticks[9], 0);
        assert_eq!(c[1].cpu.to_string(), "0");
        assert!(cpu_times("cpu0 1 2 3 4\n").is_err(), "no total line");
        assert!(cpu_times("cpu 1 2\n").is_err());
        assert!(cpu_times("cpux 1 2 3 4\ncpu 1 2 3 4").is_err());
    }

    #[test]
    fn net_dev_counters() {
        let text = "Inter-|   Receive                            |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo: 100 2 0 0 0 0 0 0 100 2 0 0 0 0 0 0\n  eth0:5000 40 1 2 0 0 0 0 6000 50 3 4 0 0 0 0\n";
        let d = net_dev(text).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d[1].name, "eth0");
        assert_eq!(
            (d[1].rx_bytes, d[1].rx_errors, d[1].rx_dropped),
            (5000, 1, 2)
        );
        assert_eq!(
            (d[1].tx_bytes, d[1].tx_packets, d[1].tx_dropped),
            (6000, 50, 4)
        );
        assert!(net_dev("h\nh\neth0: 1 2 3\n").is_err());
    }

    #[test]
    fn mounts_with_escapes() {
        let text = "36 35 98:0 / /mnt\\040disk rw,noatime master:1 - ext4 /dev/vda1 rw\n\
                    37 35 0:5 / /run rw - tmpfs tmpfs rw,size=10k\n";
        let m = mountinfo(text).unwrap();
        assert_eq!(m[0].point, "/mnt disk");
        assert_eq!(
            (m[0].fstype.as_str(), m[0].source.as_str()),
            ("ext4", "/dev/vda1")
        );
        assert_eq!(m[1].point, "/run");
        assert!(mountinfo("1 2 3 4 5 6\n").is_err());
        assert!(mountinfo("1 2 - ext4 x\n").is_err());
        assert_eq!(unescape("a\\134b\\12"), "a\\b\\12");
    }
}
