//! `GET /metrics`: the sensors' figures as Prometheus series, encoded by
//! the `prometheus-client` crate in the Prometheus text format (0.0.4) or,
//! when the scraper asks for it (`Accept: application/openmetrics-text`),
//! in OpenMetrics. Per-sliver series carry a `slice` label; every source
//! has a `plnode_sensor_up{source=...}` series, 0 when it could not be
//! read (its other series are then left out).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::cache::Outcome;
use crate::procfs::{CpuName, MemUnit, CPU_MODES};
use crate::sources::{Reading, SliverRun, Source};

/// The text formats `/metrics` speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4.
    Prometheus,
    /// OpenMetrics 1.0 text.
    OpenMetrics,
}

impl Format {
    /// The format an `Accept` header asks for.
    pub fn from_accept(accept: Option<&str>) -> Format {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Prometheus,
        }
    }

    /// Its `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Value {
    Int(u64),
    Float(f64),
}

type Labels = Vec<(&'static str, String)>;

#[derive(Debug)]
struct Family {
    name: &'static str,
    help: &'static str,
    counter: bool,
    samples: Vec<(Labels, Value)>,
}

/// Every series of one scrape, built from the sources' readings.
#[derive(Debug, Default)]
pub struct Families(Vec<Family>);

impl Families {
    fn add(
        &mut self,
        name: &'static str,
        help: &'static str,
        counter: bool,
        samples: Vec<(Labels, Value)>,
    ) {
        if !samples.is_empty() {
            self.0.push(Family {
                name,
                help,
                counter,
                samples,
            });
        }
    }

    fn gauge(&mut self, name: &'static str, help: &'static str, samples: Vec<(Labels, Value)>) {
        self.add(name, help, false, samples);
    }

    fn counter(&mut self, name: &'static str, help: &'static str, samples: Vec<(Labels, Value)>) {
        self.add(name, help, true, samples);
    }

    /// The series of these readings.
    pub fn from_readings(readings: &[(Source, Outcome)]) -> Families {
        let mut f = Families::default();
        f.gauge(
            "plnode_sensor_up",
            "Whether the source could be read (1) or not (0)",
            readings
                .iter()
                .map(|(s, o)| {
                    (
                        vec![("source", s.name().to_string())],
                        Value::Int(u64::from(o.is_ok())),
                    )
                })
                .collect(),
        );
        for (_, outcome) in readings {
            if let Ok(reading) = outcome.as_ref() {
                f.reading(reading);
            }
        }
        f
    }

    fn reading(&mut self, reading: &Reading) {
        let none = Vec::new;
        let one = |v: Value| vec![(none(), v)];
        match reading {
            Reading::LoadAvg(l) => {
                self.gauge(
                    "plnode_load1",
                    "Load average over 1 minute",
                    one(Value::Float(l.one)),
                );
                self.gauge(
                    "plnode_load5",
                    "Load average over 5 minutes",
                    one(Value::Float(l.five)),
                );
                self.gauge(
                    "plnode_load15",
                    "Load average over 15 minutes",
                    one(Value::Float(l.fifteen)),
                );
                self.gauge(
                    "plnode_tasks_runnable",
                    "Tasks runnable now",
                    one(Value::Int(l.runnable)),
                );
                self.gauge("plnode_tasks", "Tasks that exist", one(Value::Int(l.tasks)));
            }
            Reading::Uptime(u) => self.gauge(
                "plnode_uptime_seconds",
                "Seconds since boot",
                one(Value::Float(u.up_secs)),
            ),
            Reading::Meminfo(fields) => self.gauge(
                "plnode_memory_bytes",
                "/proc/meminfo fields counted in bytes, by field",
                fields
                    .iter()
                    .filter(|m| m.unit == MemUnit::Bytes)
                    .map(|m| (vec![("field", m.name.clone())], Value::Int(m.value)))
                    .collect(),
            ),
            Reading::Cpu(cpus, hz) => {
                let hz = (*hz).max(1) as f64;
                let mut samples = Vec::new();
                for c in cpus {
                    let CpuName::Index(i) = c.cpu else { continue };
                    for (mode, ticks) in CPU_MODES.iter().zip(c.ticks) {
                        samples.push((
                            vec![("cpu", i.to_string()), ("mode", mode.to_string())],
                            Value::Float(ticks as f64 / hz),
                        ));
                    }
                }
                self.counter("plnode_cpu_seconds", "CPU seconds by CPU and mode", samples);
            }
            Reading::Disk(fss) => {
                let labels = |f: &crate::sources::Filesystem| {
                    vec![
                        ("mountpoint", f.mount.clone()),
                        ("device", f.device.clone()),
                        ("fstype", f.fstype.clone()),
                    ]
                };
                let per = |get: fn(&crate::sources::Filesystem) -> u64| {
                    fss.iter()
                        .map(|f| (labels(f), Value::Int(get(f))))
                        .collect::<Vec<_>>()
                };
                self.gauge(
                    "plnode_filesystem_size_bytes",
                    "File system size",
                    per(|f| f.size),
                );
                self.gauge(
                    "plnode_filesystem_used_bytes",
                    "Bytes in use",
                    per(|f| f.used),
                );
                self.gauge(
                    "plnode_filesystem_avail_bytes",
                    "Bytes available to users",
                    per(|f| f.avail),
                );
                self.gauge(
                    "plnode_filesystem_files",
                    "Inodes in total",
                    per(|f| f.inodes),
                );
                self.gauge(
                    "plnode_filesystem_files_used",
                    "Inodes in use",
                    per(|f| f.inodes_used),
                );
            }
            Reading::Net(devs) => {
                let per = |get: fn(&crate::procfs::NetDevice) -> u64| {
                    devs.iter()
                        .map(|d| (vec![("interface", d.name.clone())], Value::Int(get(d))))
                        .collect::<Vec<_>>()
                };
                self.counter(
                    "plnode_network_receive_bytes",
                    "Bytes received",
                    per(|d| d.rx_bytes),
                );
                self.counter(
                    "plnode_network_receive_packets",
                    "Packets received",
                    per(|d| d.rx_packets),
                );
                self.counter(
                    "plnode_network_receive_errors",
                    "Receive errors",
                    per(|d| d.rx_errors),
                );
                self.counter(
                    "plnode_network_receive_drop",
                    "Received packets dropped",
                    per(|d| d.rx_dropped),
                );
                self.counter(
                    "plnode_network_transmit_bytes",
                    "Bytes sent",
                    per(|d| d.tx_bytes),
                );
                self.counter(
                    "plnode_network_transmit_packets",
                    "Packets sent",
                    per(|d| d.tx_packets),
                );
                self.counter(
                    "plnode_network_transmit_errors",
                    "Send errors",
                    per(|d| d.tx_errors),
                );
                self.counter(
                    "plnode_network_transmit_drop",
                    "Packets dropped on sending",
                    per(|d| d.tx_dropped),
                );
            }
            Reading::Node(n) => self.gauge(
                "plnode_node_info",
                "The node's identity and versions (always 1)",
                vec![(
                    vec![
                        (
                            "node_id",
                            n.node_id.map(|i| i.to_string()).unwrap_or_default(),
                        ),
                        ("hostname", n.hostname.clone()),
                        ("os_version", n.os_version.clone()),
                        ("cd_version", n.cd_version.clone()),
                        ("boot_state", n.boot_state.clone()),
                        ("deployment", n.deployment.clone()),
                        ("kernel", n.kernel.clone()),
                    ],
                    Value::Int(1),
                )],
            ),
            Reading::Bandwidth(slivers) => self.bandwidth(slivers),
            Reading::Slivers(slivers) => {
                let slice =
                    |s: &crate::sources::SliverFigures| vec![("slice", s.slice.to_string())];
                let per = |get: &dyn Fn(&crate::sources::SliverFigures) -> Option<Value>| {
                    slivers
                        .iter()
                        .filter_map(|s| get(s).map(|v| (slice(s), v)))
                        .collect::<Vec<_>>()
                };
                self.gauge(
                    "plnode_sliver_running",
                    "Whether the sliver runs (1) or not (0)",
                    per(&|s| Some(Value::Int(u64::from(s.state == SliverRun::Running)))),
                );
                self.gauge(
                    "plnode_sliver_cpu_share",
                    "The sliver's CPU share (cpu.weight)",
                    per(&|s| Some(Value::Int(u64::from(s.cpu_share)))),
                );
                self.counter(
                    "plnode_sliver_cpu_seconds",
                    "CPU seconds the sliver used since it started",
                    per(&|s| s.cpu_usec.map(|u| Value::Float(u as f64 / 1e6))),
                );
                self.gauge(
                    "plnode_sliver_memory_used_bytes",
                    "Memory the sliver uses (memory.current)",
                    per(&|s| s.memory_used.map(Value::Int)),
                );
                self.gauge(
                    "plnode_sliver_memory_limit_bytes",
                    "The sliver's memory limit",
                    per(&|s| Some(Value::Int(s.memory_limit))),
                );
                self.gauge(
                    "plnode_sliver_processes",
                    "Processes in the sliver",
                    per(&|s| Some(Value::Int(s.processes as u64))),
                );
                self.gauge(
                    "plnode_sliver_disk_used_bytes",
                    "Bytes in the sliver's writable layer",
                    per(&|s| Some(Value::Int(s.disk_used))),
                );
                self.gauge(
                    "plnode_sliver_disk_quota_bytes",
                    "The sliver's disk quota",
                    per(&|s| Some(Value::Int(s.disk_quota))),
                );
                self.gauge(
                    "plnode_sliver_lease_end_timestamp_seconds",
                    "When the slice's lease on the node ends (Unix time)",
                    per(&|s| s.lease_end.map(|t| Value::Float(t.unix() as f64))),
                );
            }
        }
    }

    fn bandwidth(&mut self, slivers: &[bwcap::SliverUsage]) {
        let per = |get: &dyn Fn(&bwcap::SliverUsage) -> u64| {
            slivers
                .iter()
                .map(|s| (vec![("slice", s.slice.to_string())], Value::Int(get(s))))
                .collect::<Vec<_>>()
        };
        // Prometheus' base unit is the byte: a rate of 1 kbit is 125 B/s,
        // one of 1 bit 0.125 B/s.
        let bytes_per_sec = |get: &dyn Fn(&bwcap::SliverUsage) -> u64| {
            slivers
                .iter()
                .map(|s| {
                    let bits = get(s);
                    let value = if bits.is_multiple_of(8) {
                        Value::Int(bits / 8)
                    } else {
                        Value::Float(bits as f64 / 8.0)
                    };
                    (vec![("slice", s.slice.to_string())], value)
                })
                .collect::<Vec<_>>()
        };
        self.counter(
            "plnode_sliver_transmit_bytes",
            "Bytes the sliver sent since bwcap first shaped it",
            per(&|s| s.total_bytes),
        );
        self.counter(
            "plnode_sliver_transmit_packets",
            "Packets the sliver sent since bwcap first shaped it",
            per(&|s| s.total_packets),
        );
        self.gauge(
            "plnode_sliver_guaranteed_bytes_per_second",
            "The sliver's guaranteed rate",
            bytes_per_sec(&|s| s.guaranteed.bits_per_sec()),
        );
        self.gauge(
            "plnode_sliver_ceiling_bytes_per_second",
            "The sliver's ceiling in force (lowered past 80 % of its budget)",
            bytes_per_sec(&|s| s.ceiling.bits_per_sec()),
        );
        self.gauge(
            "plnode_sliver_budget_bytes",
            "The sliver's daily byte budget",
            per(&|s| s.daily_budget.bytes()),
        );
        self.gauge(
            "plnode_sliver_budget_left_bytes",
            "Bytes left in the sliver's current budget period",
            per(&|s| s.budget_left),
        );
    }

    /// Adds how many clients follow each streaming sensor.
    pub fn with_followers(mut self, followers: &[(&'static str, usize)]) -> Families {
        self.gauge(
            "plnode_sensor_followers",
            "Clients following a streaming sensor now",
            followers
                .iter()
                .map(|(sensor, n)| (vec![("sensor", sensor.to_string())], Value::Int(*n as u64)))
                .collect(),
        );
        self
    }

    /// The series as text in `format`.
    pub fn encode(self, format: Format) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self));
        let mut out = String::with_capacity(16 * 1024);
        // Writing into a String cannot fail.
        let _ = match format {
            Format::Prometheus => {
                prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
            }
            Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, &registry),
        };
        out
    }
}

impl Collector for Families {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for family in &self.0 {
            let kind = if family.counter {
                MetricType::Counter
            } else {
                MetricType::Gauge
            };
            let mut metric = encoder.encode_descriptor(family.name, family.help, None, kind)?;
            for (labels, value) in &family.samples {
                let sample = metric.encode_family(labels)?;
                match (family.counter, *value) {
                    (true, Value::Int(v)) => ConstCounter::new(v).encode(sample)?,
                    (true, Value::Float(v)) => ConstCounter::new(v).encode(sample)?,
                    (false, Value::Int(v)) => ConstGauge::new(v).encode(sample)?,
                    (false, Value::Float(v)) => ConstGauge::new(v).encode(sample)?,
                }
            }
        }
        Ok(())
    }
}
