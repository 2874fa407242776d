//! Expiry times: RFC 3339 in UTC with whole seconds (`2027-01-01T00:00:00Z`).

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// A point in time with one-second resolution, always spelled in UTC.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UtcTime(i64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid time {0:?}: expected RFC 3339 UTC like 2027-01-01T00:00:00Z")]
pub struct TimeError(pub String);

impl UtcTime {
    pub fn from_unix(seconds: i64) -> Self {
        UtcTime(seconds)
    }

    pub fn unix(&self) -> i64 {
        self.0
    }

    pub fn from_system(t: SystemTime) -> Self {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => UtcTime(i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
            Err(e) => UtcTime(-i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX)),
        }
    }

    pub fn to_system(&self) -> SystemTime {
        if self.0 >= 0 {
            UNIX_EPOCH + Duration::from_secs(self.0.unsigned_abs())
        } else {
            UNIX_EPOCH - Duration::from_secs(self.0.unsigned_abs())
        }
    }

    pub fn now() -> Self {
        Self::from_system(SystemTime::now())
    }

    /// `self + d`, saturating.
    pub fn plus(&self, d: Duration) -> Self {
        UtcTime(
            self.0
                .saturating_add(i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
        )
    }
}

impl FromStr for UtcTime {
    type Err = TimeError;
    fn from_str(s: &str) -> Result<Self, TimeError> {
        let t = OffsetDateTime::parse(s, &Rfc3339).map_err(|_| TimeError(s.to_string()))?;
        Ok(UtcTime(t.unix_timestamp()))
    }
}

impl fmt::Display for UtcTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match OffsetDateTime::from_unix_timestamp(self.0) {
            Ok(t) => {
                let (y, mo, d) = (t.year(), u8::from(t.month()), t.day());
                write!(
                    f,
                    "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}Z",
                    t.hour(),
                    t.minute(),
                    t.second()
                )
            }
            Err(_) => write!(f, "@{}", self.0),
        }
    }
}

impl fmt::Debug for UtcTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for UtcTime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for UtcTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Parses an expiry given by a person: a duration from `now` (`30d`, `12h`,
/// `90m`, `3600s`, `2w`) or an absolute RFC 3339 time.
pub fn parse_expiry(text: &str, now: UtcTime) -> Result<UtcTime, TimeError> {
    let bad = || TimeError(text.to_string());
    let text = text.trim();
    if let Some(unit) = text
        .chars()
        .last()
        .filter(|c| c.is_ascii_alphabetic() && text.len() > 1)
    {
        let digits = &text[..text.len() - 1];
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
            return Ok(now.plus(Duration::from_secs(
                n.checked_mul(seconds_per_unit).ok_or_else(bad)?,
            )));
        }
    }
    text.parse()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses() {
        let t: UtcTime = "2027-01-01T00:00:00Z".parse().unwrap();
        assert_eq!(t.to_string(), "2027-01-01T00:00:00Z");
        let offset: UtcTime = "2027-01-01T02:00:00+02:00".parse().unwrap();
        assert_eq!(offset, t);
        assert!("2027-01-01".parse::<UtcTime>().is_err());
    }

    #[test]
    fn expiry_durations() {
        let now = UtcTime::from_unix(1_000_000);
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
        assert!(parse_expiry("12x", now).is_err());
        assert!(parse_expiry("d", now).is_err());
    }
}
