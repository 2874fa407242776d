//! Quantities written by people: network rates (`10mbit`) and sizes (`512MiB`).
//!
//! Rates use tc's decimal units (`kbit` = 1000 bit/s), so a value copied from
//! `tc -s class show` means the same here. Sizes accept binary (`MiB`) and
//! decimal (`MB`) units and plain bytes.

use std::fmt;
use std::str::FromStr;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// A network rate in bits per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Rate(u64);

impl Rate {
    /// A rate of `bps` bits per second.
    pub const fn from_bits_per_sec(bps: u64) -> Rate {
        Rate(bps)
    }
    /// The rate in bits per second (what tc's `rate` and `ceil` take as `bit`).
    pub const fn bits_per_sec(self) -> u64 {
        self.0
    }
    /// `n` kbit/s in tc's decimal units: `n` × 1000 bit/s.
    pub const fn kbit(n: u64) -> Rate {
        Rate(n * 1_000)
    }
    /// `n` Mbit/s in tc's decimal units: `n` × 1 000 000 bit/s.
    pub const fn mbit(n: u64) -> Rate {
        Rate(n * 1_000_000)
    }
}

/// A size in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(u64);

impl ByteSize {
    /// A size of `n` bytes.
    pub const fn from_bytes(n: u64) -> ByteSize {
        ByteSize(n)
    }
    /// The size in bytes.
    pub const fn bytes(self) -> u64 {
        self.0
    }
    /// `n` mebibytes (`n` × 2^20 bytes).
    pub const fn mib(n: u64) -> ByteSize {
        ByteSize(n << 20)
    }
    /// `n` gibibytes (`n` × 2^30 bytes).
    pub const fn gib(n: u64) -> ByteSize {
        ByteSize(n << 30)
    }
}

/// A length of time in whole seconds, written `90s`, `10m`, `2h`, `1d` or
/// as bare seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Period(u64);

impl Period {
    /// `secs` seconds.
    pub const fn from_secs(secs: u64) -> Period {
        Period(secs)
    }
    /// The length in seconds.
    pub const fn secs(self) -> u64 {
        self.0
    }
    /// The length as a [`std::time::Duration`].
    pub const fn as_duration(self) -> std::time::Duration {
        std::time::Duration::from_secs(self.0)
    }
}

/// A rate or size that does not parse: no number, an unknown unit, or a
/// value that does not fit in 64 bits. The text names the input and the
/// units accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UnitError(String);

const PERIOD_UNITS: &[(&str, u64)] = &[("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)];

const RATE_UNITS: &[(&str, u64)] = &[
    ("tbit", 1_000_000_000_000),
    ("gbit", 1_000_000_000),
    ("mbit", 1_000_000),
    ("kbit", 1_000),
    ("bit", 1),
];

const SIZE_UNITS: &[(&str, u64)] = &[
    ("tib", 1 << 40),
    ("gib", 1 << 30),
    ("mib", 1 << 20),
    ("kib", 1 << 10),
    ("tb", 1_000_000_000_000),
    ("gb", 1_000_000_000),
    ("mb", 1_000_000),
    ("kb", 1_000),
    ("t", 1 << 40),
    ("g", 1 << 30),
    ("m", 1 << 20),
    ("k", 1 << 10),
    ("b", 1),
];

/// Parses `<number>[.<fraction>]<unit>` exactly (no float rounding).
fn parse_quantity(text: &str, units: &[(&str, u64)], what: &str) -> Result<u64, UnitError> {
    let t = text.trim();
    let lower = t.to_ascii_lowercase();
    let digits_end = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(digits_end);
    let unit = unit.trim();
    let multiplier = if unit.is_empty() {
        1
    } else {
        units
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|(_, m)| *m)
            .ok_or_else(|| {
                let names: Vec<&str> = units.iter().map(|(n, _)| *n).collect();
                UnitError(format!(
                    "{what} `{t}`: unknown unit `{unit}` (use one of {})",
                    names.join(", ")
                ))
            })?
    };
    let (whole, frac) = match number.split_once('.') {
        Some((w, f)) => (w, f),
        None => (number, ""),
    };
    if whole.is_empty() && frac.is_empty() {
        return Err(UnitError(format!("{what} `{t}`: expected a number")));
    }
    let overflow = || UnitError(format!("{what} `{t}` is too large"));
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole
            .parse()
            .map_err(|_| UnitError(format!("{what} `{t}`: not a number")))?
    };
    let mut value = whole.checked_mul(multiplier).ok_or_else(overflow)?;
    if !frac.is_empty() {
        if frac.contains('.') || frac.len() > 12 {
            return Err(UnitError(format!("{what} `{t}`: not a number")));
        }
        let frac_value: u64 = frac
            .parse()
            .map_err(|_| UnitError(format!("{what} `{t}`: not a number")))?;
        let scale = 10u64.pow(frac.len() as u32);
        let part = (frac_value as u128 * multiplier as u128) / scale as u128;
        if !(frac_value as u128 * multiplier as u128).is_multiple_of(scale as u128) {
            return Err(UnitError(format!(
                "{what} `{t}` is not a whole number of the base unit"
            )));
        }
        value = value.checked_add(part as u64).ok_or_else(overflow)?;
    }
    Ok(value)
}

fn format_quantity(value: u64, units: &[(&str, u64)]) -> String {
    for (name, m) in units {
        if *m > 1 && value >= *m && value.is_multiple_of(*m) {
            return format!("{}{}", value / m, name);
        }
    }
    value.to_string()
}

impl FromStr for Rate {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Rate, UnitError> {
        parse_quantity(s, RATE_UNITS, "rate").map(Rate)
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = format_quantity(self.0, RATE_UNITS);
        if s.chars().all(|c| c.is_ascii_digit()) {
            write!(f, "{s}bit")
        } else {
            f.write_str(&s)
        }
    }
}

impl FromStr for Period {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Period, UnitError> {
        parse_quantity(s, PERIOD_UNITS, "time").map(Period)
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = format_quantity(self.0, PERIOD_UNITS);
        if s.chars().all(|c| c.is_ascii_digit()) {
            write!(f, "{s}s")
        } else {
            f.write_str(&s)
        }
    }
}

const DISPLAY_SIZE_UNITS: &[(&str, u64)] = &[
    ("TiB", 1 << 40),
    ("GiB", 1 << 30),
    ("MiB", 1 << 20),
    ("KiB", 1 << 10),
];

impl FromStr for ByteSize {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<ByteSize, UnitError> {
        parse_quantity(s, SIZE_UNITS, "size").map(ByteSize)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_quantity(self.0, DISPLAY_SIZE_UNITS))
    }
}

/// Accepts `"10mbit"` or a bare integer (already in base units).
macro_rules! serde_quantity {
    ($ty:ident, $expecting:literal) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_string())
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<$ty, D::Error> {
                struct V;
                impl<'de> de::Visitor<'de> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_u64<E: de::Error>(self, v: u64) -> Result<$ty, E> {
                        Ok($ty(v))
                    }
                    fn visit_i64<E: de::Error>(self, v: i64) -> Result<$ty, E> {
                        u64::try_from(v)
                            .map($ty)
                            .map_err(|_| E::custom(concat!($expecting, ", not negative")))
                    }
                    fn visit_str<E: de::Error>(self, v: &str) -> Result<$ty, E> {
                        v.parse().map_err(E::custom)
                    }
                }
                d.deserialize_any(V)
            }
        }
    };
}

serde_quantity!(Rate, "a rate such as \"10mbit\" or bits per second");
serde_quantity!(ByteSize, "a size such as \"512MiB\" or bytes");
serde_quantity!(Period, "a time such as \"10m\" or seconds");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_read_like_people_write_them() {
        assert_eq!("10m".parse::<Period>().unwrap().secs(), 600);
        assert_eq!("90".parse::<Period>().unwrap().secs(), 90);
        assert_eq!("1.5h".parse::<Period>().unwrap().secs(), 5400);
        assert_eq!(Period::from_secs(600).to_string(), "10m");
        assert_eq!(Period::from_secs(90).to_string(), "90s");
        assert!("10 weeks".parse::<Period>().is_err());
    }

    #[test]
    fn rates_use_tc_decimal_units() {
        assert_eq!("5kbit".parse::<Rate>().unwrap(), Rate(5_000));
        assert_eq!("10Mbit".parse::<Rate>().unwrap(), Rate(10_000_000));
        assert_eq!("1.5mbit".parse::<Rate>().unwrap(), Rate(1_500_000));
        assert_eq!("100".parse::<Rate>().unwrap(), Rate(100));
        assert_eq!(Rate(10_000_000).to_string(), "10mbit");
        assert_eq!(Rate(1_500_000).to_string(), "1500kbit");
        assert_eq!(Rate(7).to_string(), "7bit");
    }

    #[test]
    fn sizes_accept_binary_and_decimal_units() {
        assert_eq!("512MiB".parse::<ByteSize>().unwrap(), ByteSize(512 << 20));
        assert_eq!("2GB".parse::<ByteSize>().unwrap(), ByteSize(2_000_000_000));
        assert_eq!("4k".parse::<ByteSize>().unwrap(), ByteSize(4096));
        assert_eq!(ByteSize(3 << 30).to_string(), "3GiB");
    }

    #[test]
    fn bad_quantities_say_what_is_wrong() {
        let e = "10furlongs".parse::<Rate>().unwrap_err().to_string();
        assert!(e.contains("unknown unit `furlongs`"), "{e}");
        let e = "mbit".parse::<Rate>().unwrap_err().to_string();
        assert!(e.contains("expected a number"), "{e}");
        let e = "99999999999999999999gbit"
            .parse::<Rate>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a number") || e.contains("too large"), "{e}");
        let e = "0.0001bit".parse::<Rate>().unwrap_err().to_string();
        assert!(e.contains("whole number"), "{e}");
    }

    proptest::proptest! {
        #[test]
        fn display_round_trips(n in 0u64..u64::MAX / 2) {
            let r = Rate(n);
            proptest::prop_assert_eq!(r.to_string().parse::<Rate>().unwrap(), r);
            let s = ByteSize(n);
            proptest::prop_assert_eq!(s.to_string().parse::<ByteSize>().unwrap(), s);
        }
    }
}
