//! The resource specification of a sliver (the NSDI paper's `rspec`): what a
//! slice may use on one node, and until when.
//!
//! Defaults follow the paper's node: a CPU share of 1, 5 kbit/s guaranteed and
//! a 10 Mbit/s ceiling on outgoing traffic.

use serde::{Deserialize, Serialize};

use crate::timestamp::Timestamp;
use crate::units::{ByteSize, Rate};

/// What one sliver may use on one node. Every field has a default, so `{}`
/// is a valid rspec (the paper's default sliver); unknown fields are refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rspec {
    /// Relative CPU weight against other slivers (the paper's "shares").
    #[serde(default = "default_cpu_share")]
    pub cpu_share: u32,
    /// Guaranteed outgoing rate (HTB `rate`).
    #[serde(default = "default_min_rate")]
    pub net_min_rate: Rate,
    /// Outgoing ceiling (HTB `ceil`).
    #[serde(default = "default_max_rate")]
    pub net_max_rate: Rate,
    /// Memory limit; none means the node's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<ByteSize>,
    /// Disk quota for the sliver's writable layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<ByteSize>,
    /// Maximum number of processes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u32>,
    /// When the slice's lease on this node ends; the sliver is stopped then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_end: Option<Timestamp>,
    /// The sliver's `cpu_share` and `net_min_rate` are reserved for it:
    /// admitted only while the node's guaranteed CPU shares and bandwidth
    /// are not all promised (admission control). Otherwise the sliver gets
    /// fair best-effort service and is always admitted.
    #[serde(default, skip_serializing_if = "is_false")]
    pub guaranteed: bool,
    /// The slice may acquire resources on the node and bind them to other
    /// slices (a broker); every other slice acts on its own sliver only.
    #[serde(default, skip_serializing_if = "is_false")]
    pub privileged: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn default_cpu_share() -> u32 {
    1
}
fn default_min_rate() -> Rate {
    Rate::kbit(5)
}
fn default_max_rate() -> Rate {
    Rate::mbit(10)
}

impl Default for Rspec {
    fn default() -> Rspec {
        Rspec {
            cpu_share: default_cpu_share(),
            net_min_rate: default_min_rate(),
            net_max_rate: default_max_rate(),
            memory: None,
            disk: None,
            pids: None,
            lease_end: None,
            guaranteed: false,
            privileged: false,
        }
    }
}

impl Rspec {
    /// Checks what single fields cannot: a share of at least 1, a guaranteed
    /// rate no larger than the ceiling, limits that are not zero.
    pub fn validate(&self) -> Result<(), String> {
        if self.cpu_share == 0 || self.cpu_share > 10_000 {
            return Err(format!(
                "cpu_share {} is out of range (1 to 10000)",
                self.cpu_share
            ));
        }
        if self.net_min_rate > self.net_max_rate {
            return Err(format!(
                "net_min_rate {} is above net_max_rate {}",
                self.net_min_rate, self.net_max_rate
            ));
        }
        if self.net_max_rate.bits_per_sec() == 0 {
            return Err("net_max_rate must be above zero".into());
        }
        if self.memory.is_some_and(|m| m.bytes() < (4 << 20)) {
            return Err("memory below 4MiB cannot run a process".into());
        }
        if self.pids == Some(0) {
            return Err("pids must be at least 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_papers_node() {
        let r: Rspec = toml::from_str("").unwrap();
        assert_eq!(r, Rspec::default());
        assert_eq!(r.net_min_rate.to_string(), "5kbit");
        assert_eq!(r.net_max_rate.to_string(), "10mbit");
        assert!(r.validate().is_ok());
    }

    #[test]
    fn fields_parse_from_people_units() {
        let r: Rspec = toml::from_str(
            "cpu_share = 4\nnet_min_rate = \"1mbit\"\nnet_max_rate = \"100mbit\"\nmemory = \"512MiB\"\n\
             disk = \"2GiB\"\npids = 256\nlease_end = \"2027-03-01T00:00:00Z\"\n",
        )
        .unwrap();
        assert_eq!(r.memory, Some(ByteSize::mib(512)));
        assert_eq!(r.lease_end.unwrap().to_string(), "2027-03-01T00:00:00Z");
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Rspec>(&json).unwrap(), r);
        // Best effort and unprivileged unless said: old JSON reads the same.
        assert!(!r.guaranteed && !r.privileged);
        assert!(!json.contains("guaranteed") && !json.contains("privileged"));
        let g: Rspec = toml::from_str("guaranteed = true\nprivileged = true\n").unwrap();
        assert!(g.guaranteed && g.privileged);
    }

    #[test]
    fn inconsistent_rspecs_are_refused() {
        let r = Rspec {
            net_min_rate: Rate::mbit(20),
            ..Rspec::default()
        };
        assert!(r.validate().unwrap_err().contains("above net_max_rate"));
        let r = Rspec {
            cpu_share: 0,
            ..Rspec::default()
        };
        assert!(r.validate().is_err());
        assert!(toml::from_str::<Rspec>("cpu = 3").is_err());
    }
}
