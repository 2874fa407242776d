//! Checks on what arrives from the network, apart from the handlers so
//! they can be fuzzed alone: `Range` headers, ETag lists, and the bounds
//! on node reports beyond the body size limit (their strings end up in
//! tables and on the status page).

use config::api::{
    CheckinRequest, FailureReport, HardwareSummary, HealthSummary, InstallReport, ProgressReport,
    UpdateReport,
};

/// A byte range to send, inclusive start, exclusive end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub enum RangeRequest {
    /// No (usable) Range header: the whole file.
    Whole,
    Part(ByteRange),
    Unsatisfiable,
}

/// Parses a `Range` header for a file of `length` bytes. Only one range is
/// served; a multi-range or malformed header is ignored (RFC 9110 §14.2
/// allows that) and the whole file is sent.
pub fn parse_range(value: &str, length: u64) -> RangeRequest {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeRequest::Whole;
    };
    if spec.contains(',') {
        return RangeRequest::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    let range = if first.is_empty() {
        // bytes=-N: the last N bytes.
        let Ok(n) = last.parse::<u64>() else {
            return RangeRequest::Whole;
        };
        if n == 0 || length == 0 {
            return RangeRequest::Unsatisfiable;
        }
        ByteRange {
            start: length.saturating_sub(n),
            end: length,
        }
    } else {
        let Ok(start) = first.parse::<u64>() else {
            return RangeRequest::Whole;
        };
        let end = if last.is_empty() {
            length
        } else {
            match last.parse::<u64>() {
                Ok(l) if l >= start => l.saturating_add(1).min(length),
                _ => return RangeRequest::Whole,
            }
        };
        if start >= length {
            return RangeRequest::Unsatisfiable;
        }
        ByteRange { start, end }
    };
    RangeRequest::Part(range)
}

/// Whether an `If-None-Match` / `If-Range` list names this ETag.
pub fn etag_matches(list: &str, etag: &str) -> bool {
    list.split(',')
        .map(str::trim)
        .any(|t| t == "*" || t == etag || t.strip_prefix("W/").is_some_and(|w| w == etag))
}

/// Bounds on what nodes send, beyond the body size: a report's strings end
/// up in tables and on the status page.
#[derive(Debug)]
pub struct Limits;

impl Limits {
    pub const SHORT: usize = 128;
    pub const MESSAGE: usize = 4096;
    pub const LOG_LINES: usize = 2000;
    pub const LOG_LINE: usize = 4096;
    pub const LIST: usize = 256;
    pub const EVENTS: usize = 1000;
    pub const PACKAGES: usize = 10_000;
}

/// A node report that breaks one of the [`Limits`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("{field} is {len} bytes long; at most {max} are allowed")]
    TooLong {
        field: String,
        len: usize,
        max: usize,
    },
    #[error("{field} has {count} entries; at most {max} are allowed")]
    TooMany {
        field: String,
        count: usize,
        max: usize,
    },
    #[error("{field} is not a finite number")]
    NotFinite { field: &'static str },
    #[error("events is empty: a progress report carries at least one event")]
    NoEvents,
    #[error("{field} is above 100")]
    PercentAbove100 { field: String },
}

pub fn check_len(field: &str, value: &str, max: usize) -> Result<(), InputError> {
    if value.len() > max {
        return Err(InputError::TooLong {
            field: field.to_string(),
            len: value.len(),
            max,
        });
    }
    Ok(())
}

pub fn check_opt(field: &str, value: &Option<String>, max: usize) -> Result<(), InputError> {
    value
        .as_deref()
        .map_or(Ok(()), |v| check_len(field, v, max))
}

pub fn check_count(field: &str, n: usize, max: usize) -> Result<(), InputError> {
    if n > max {
        return Err(InputError::TooMany {
            field: field.to_string(),
            count: n,
            max,
        });
    }
    Ok(())
}

pub fn check_hardware(h: &HardwareSummary) -> Result<(), InputError> {
    check_len("hardware.cpu_model", &h.cpu_model, Limits::SHORT * 2)?;
    check_count("hardware.disks", h.disks.len(), Limits::LIST)?;
    check_count("hardware.nics", h.nics.len(), Limits::LIST)?;
    for (i, d) in h.disks.iter().enumerate() {
        check_len(&format!("hardware.disks[{i}].name"), &d.name, Limits::SHORT)?;
        check_opt(
            &format!("hardware.disks[{i}].model"),
            &d.model,
            Limits::SHORT,
        )?;
    }
    for (i, n) in h.nics.iter().enumerate() {
        check_len(&format!("hardware.nics[{i}].name"), &n.name, Limits::SHORT)?;
        check_opt(
            &format!("hardware.nics[{i}].driver"),
            &n.driver,
            Limits::SHORT,
        )?;
    }
    Ok(())
}

pub fn check_health(h: &HealthSummary) -> Result<(), InputError> {
    check_count(
        "health.failed_services",
        h.failed_services.len(),
        Limits::LIST,
    )?;
    for (i, s) in h.failed_services.iter().enumerate() {
        check_len(&format!("health.failed_services[{i}]"), s, Limits::SHORT)?;
    }
    if !h.load1.is_finite() {
        return Err(InputError::NotFinite {
            field: "health.load1",
        });
    }
    Ok(())
}

pub fn check_checkin(r: &CheckinRequest) -> Result<(), InputError> {
    check_opt("bootcd_version", &r.bootcd_version, Limits::SHORT)?;
    check_opt("os_version", &r.os_version, Limits::SHORT)?;
    check_opt("deployment", &r.deployment, Limits::SHORT)?;
    if let Some(h) = &r.hardware {
        check_hardware(h)?;
    }
    if let Some(h) = &r.health {
        check_health(h)?;
    }
    Ok(())
}

pub fn check_progress(r: &ProgressReport) -> Result<(), InputError> {
    if r.events.is_empty() {
        return Err(InputError::NoEvents);
    }
    check_count("events", r.events.len(), Limits::EVENTS)?;
    for (i, e) in r.events.iter().enumerate() {
        check_len(&format!("events[{i}].step"), &e.step, Limits::SHORT)?;
        check_len(&format!("events[{i}].message"), &e.message, Limits::MESSAGE)?;
        if e.percent.is_some_and(|p| p > 100) {
            return Err(InputError::PercentAbove100 {
                field: format!("events[{i}].percent"),
            });
        }
    }
    Ok(())
}

pub fn check_failure(r: &FailureReport) -> Result<(), InputError> {
    check_len("step", &r.step, Limits::SHORT)?;
    check_len("error", &r.error, Limits::MESSAGE * 2)?;
    check_count("log_tail", r.log_tail.len(), Limits::LOG_LINES)?;
    for (i, l) in r.log_tail.iter().enumerate() {
        check_len(&format!("log_tail[{i}]"), l, Limits::LOG_LINE)?;
    }
    Ok(())
}

pub fn check_install(r: &InstallReport) -> Result<(), InputError> {
    check_len("os_version", &r.os_version, Limits::SHORT)?;
    check_len("deployment", &r.deployment, Limits::SHORT)?;
    check_count("packages", r.packages.len(), Limits::PACKAGES)?;
    for (i, p) in r.packages.iter().enumerate() {
        check_len(&format!("packages[{i}].name"), &p.name, Limits::SHORT)?;
        check_len(&format!("packages[{i}].version"), &p.version, Limits::SHORT)?;
        check_len(&format!("packages[{i}].sha256"), &p.sha256, Limits::SHORT)?;
    }
    Ok(())
}

pub fn check_update(r: &UpdateReport) -> Result<(), InputError> {
    check_len("os_version", &r.os_version, Limits::SHORT)?;
    check_len("deployment", &r.deployment, Limits::SHORT)?;
    check_opt("reason", &r.reason, Limits::MESSAGE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_like_rfc_9110() {
        use RangeRequest::*;
        let r = |s, e| Part(ByteRange { start: s, end: e });
        assert_eq!(parse_range("bytes=0-99", 1000), r(0, 100));
        assert_eq!(parse_range("bytes=900-", 1000), r(900, 1000));
        assert_eq!(parse_range("bytes=-100", 1000), r(900, 1000));
        assert_eq!(parse_range("bytes=-5000", 1000), r(0, 1000));
        assert_eq!(parse_range("bytes=990-5000", 1000), r(990, 1000));
        assert_eq!(parse_range("bytes=1000-", 1000), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 1000), Unsatisfiable);
        assert_eq!(parse_range("bytes=5-1", 1000), Whole);
        assert_eq!(parse_range("bytes=0-1,5-6", 1000), Whole);
        assert_eq!(parse_range("items=0-1", 1000), Whole);
        assert_eq!(parse_range("bytes=x-1", 1000), Whole);
    }

    #[test]
    fn etag_lists_match_exactly_or_by_star() {
        let etag = "\"abc\"";
        assert!(etag_matches("\"abc\"", etag));
        assert!(etag_matches("\"x\", \"abc\"", etag));
        assert!(etag_matches("*", etag));
        assert!(etag_matches("W/\"abc\"", etag));
        assert!(!etag_matches("\"abd\"", etag));
    }
}
