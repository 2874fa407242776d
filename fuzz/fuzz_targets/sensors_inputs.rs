//! What the sensor server reads from outside: the kernel's text files
//! (`/proc/loadavg`, `uptime`, `meminfo`, `stat`, `net/dev`,
//! `self/mountinfo`), sock_diag replies, event journal lines, the
//! hand-over note and request paths with their row and column selection.
//! The first byte picks the parser. Never a panic; what is accepted holds
//! together.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sensors::{procfs, sockdiag, table};

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    match which % 10 {
        0 => {
            let _ = procfs::loadavg(&text);
        }
        1 => {
            let _ = procfs::uptime(&text);
        }
        2 => {
            if let Ok(fields) = procfs::meminfo(&text) {
                assert!(fields.iter().all(|f| !f.name.is_empty()));
            }
        }
        3 => {
            if let Ok(cpus) = procfs::cpu_times(&text) {
                assert!(cpus.iter().any(|c| c.cpu == procfs::CpuName::All));
            }
        }
        4 => {
            let _ = procfs::net_dev(&text);
        }
        5 => {
            let _ = procfs::mountinfo(&text);
        }
        6 => {
            let mut out = Vec::new();
            let _ = sockdiag::parse_reply(rest, sockdiag::Protocol::Tcp, &mut out);
        }
        7 => {
            if let Ok(event) = config::events::NodeEvent::parse_line(&text) {
                let line = event.to_line();
                assert!(!line.contains('\n'));
                assert_eq!(config::events::NodeEvent::parse_line(&line).unwrap(), event);
            }
        }
        8 => {
            if let Ok(parts) = sensors::server::segments(&text) {
                if let Some((name, args)) = parts.split_first() {
                    if let Some(sensor) = sensors::catalog::Sensor::find(name) {
                        let selection = table::Selection::parse(sensor.columns(), args);
                        let mut t = table::Table::new(sensor.columns());
                        t.push(args.to_vec());
                        let csv = t.to_csv(&selection);
                        assert!(csv.ends_with('\n'));
                    }
                }
            }
        }
        _ => {
            let _ = config::handover::Handover::parse(rest);
        }
    }
});
