//! Points in time: seconds since the Unix epoch, spelled as RFC 3339 UTC
//! with whole seconds (`2027-01-01T00:00:00Z`) on the wire, in files and
//! in signed metadata. Signed documents depend on the exact spelling, so
//! there is one formatter, here.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Seconds since the Unix epoch, shown as RFC 3339 UTC.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

/// Text that is not an RFC 3339 time (or, for [`parse_expiry`], not a
/// duration either).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an RFC 3339 time like 2027-01-01T00:00:00Z")]
pub struct TimeError(pub String);

impl Timestamp {
    /// The time `secs` seconds after the Unix epoch (negative: before).
    pub const fn from_unix(secs: i64) -> Timestamp {
        Timestamp(secs)
    }

    /// Seconds since the Unix epoch.
    pub const fn unix(self) -> i64 {
        self.0
    }

    /// The system clock, now.
    pub fn now() -> Timestamp {
        Timestamp::from(SystemTime::now())
    }

    /// The same instant as a [`SystemTime`].
    pub fn to_system_time(self) -> SystemTime {
        if self.0 >= 0 {
            UNIX_EPOCH + Duration::from_secs(self.0.unsigned_abs())
        } else {
            UNIX_EPOCH - Duration::from_secs(self.0.unsigned_abs())
        }
    }

    /// `self` plus `secs` seconds (negative: minus), saturating.
    pub const fn saturating_add_secs(self, secs: i64) -> Timestamp {
        Timestamp(self.0.saturating_add(secs))
    }

    /// `self + d`, saturating.
    pub fn plus(self, d: Duration) -> Timestamp {
        self.saturating_add_secs(i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    }

    /// Seconds from `earlier` to `self` (negative when `earlier` is later).
    pub const fn secs_since(self, earlier: Timestamp) -> i64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Timestamp {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Timestamp(i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
            Err(e) => Timestamp(-i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX)),
        }
    }
}

impl fmt::Display for Timestamp {
    /// `YYYY-MM-DDTHH:MM:SSZ` for years 0 to 9999 (everything RFC 3339 can
    /// spell), `@<seconds>` beyond.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match OffsetDateTime::from_unix_timestamp(self.0) {
            Ok(t) if (0..=9999).contains(&t.year()) => write!(
                f,
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            ),
            _ => write!(f, "@{}", self.0),
        }
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Timestamp {
    type Err = TimeError;
    /// RFC 3339 with any offset (normalised to UTC); fractions of a second
    /// are dropped.
    fn from_str(s: &str) -> Result<Timestamp, TimeError> {
        OffsetDateTime::parse(s, &Rfc3339)
            .map(|t| Timestamp(t.unix_timestamp()))
            .map_err(|_| TimeError(s.to_string()))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = Timestamp;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an RFC 3339 time such as \"2027-01-01T00:00:00Z\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Timestamp, E> {
                v.parse().map_err(E::custom)
            }
            // TOML has a native date-time type, which serde sees as a map
            // of one entry holding its text.
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Timestamp, A::Error> {
                let Some((_, value)) = map.next_entry::<String, String>()? else {
                    return Err(de::Error::custom("empty date-time"));
                };
                value.parse().map_err(de::Error::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// Parses a time given by a person: a duration from `now` (`30d`, `12h`,
/// `90m`, `3600s`, `2w`) or an absolute RFC 3339 time.
pub fn parse_expiry(text: &str, now: Timestamp) -> Result<Timestamp, TimeError> {
    let bad = || TimeError(text.to_string());
    let trimmed = text.trim();
    if let Some(unit) = trimmed
        .chars()
        .last()
        .filter(|c| c.is_ascii_alphabetic() && trimmed.len() > 1)
    {
        let digits = &trimmed[..trimmed.len() - 1];
        if digits.bytes().all(|b| b.is_ascii_digit()) {
            let n: u64 = digits.parse().map_err(|_| bad())?;
            let seconds_per_unit = match unit {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                'd' => 86_400,
                'w' => 7 * 86_400,
                _ => return Err(bad()),
            };
            let secs = n.checked_mul(seconds_per_unit).ok_or_else(bad)?;
            return Ok(now.plus(Duration::from_secs(secs)));
        }
    }
    trimmed.parse()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trip() {
        let t: Timestamp = "2027-01-01T00:00:00Z".parse().unwrap();
        assert_eq!(t.unix(), 1_798_761_600);
        assert_eq!(t.to_string(), "2027-01-01T00:00:00Z");
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, "\"2027-01-01T00:00:00Z\"");
        assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), t);
    }

    #[test]
    fn toml_native_datetimes_are_accepted() {
        #[derive(Deserialize)]
        struct Doc {
            at: Timestamp,
        }
        let d: Doc = toml::from_str("at = 2027-01-01T00:00:00Z").unwrap();
        assert_eq!(d.at.unix(), 1_798_761_600);
        let d: Doc = toml::from_str("at = \"2027-01-01T00:00:00Z\"").unwrap();
        assert_eq!(d.at.unix(), 1_798_761_600);
    }

    #[test]
    fn offsets_are_normalised_and_junk_refused() {
        let t: Timestamp = "2027-01-01T01:00:00+01:00".parse().unwrap();
        assert_eq!(t.to_string(), "2027-01-01T00:00:00Z");
        for junk in ["next tuesday", "2027-01-01", "", "2027-13-01T00:00:00Z"] {
            assert!(junk.parse::<Timestamp>().is_err(), "{junk}");
        }
    }

    #[test]
    fn times_rfc3339_cannot_spell_are_shown_as_seconds() {
        assert_eq!(
            Timestamp::from_unix(-62_167_219_201).to_string(),
            "@-62167219201"
        );
        assert_eq!(
            Timestamp::from_unix(253_402_300_800).to_string(),
            "@253402300800"
        );
        assert_eq!(Timestamp::from_unix(0).to_string(), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn expiry_durations() {
        let now = Timestamp::from_unix(1_000_000);
        assert_eq!(
            parse_expiry("30d", now).unwrap().unix(),
            1_000_000 + 30 * 86_400
        );
        assert_eq!(
            parse_expiry("12h", now).unwrap().unix(),
            1_000_000 + 12 * 3600
        );
        assert_eq!(
            parse_expiry("2027-01-01T00:00:00Z", now)
                .unwrap()
                .to_string(),
            "2027-01-01T00:00:00Z"
        );
        for bad in ["12x", "d", "99999999999999999999d", "-3d"] {
            assert!(parse_expiry(bad, now).is_err(), "{bad}");
        }
    }

    proptest::proptest! {
        #[test]
        fn every_spellable_time_round_trips(secs in -62_167_219_200i64..253_402_300_800) {
            let t = Timestamp::from_unix(secs);
            let text = t.to_string();
            proptest::prop_assert_eq!(text.parse::<Timestamp>().unwrap(), t);
        }
    }
}
