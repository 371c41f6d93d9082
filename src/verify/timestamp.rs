//! Signed timestamps: parsing the text a sender put in a header or body, and
//! the freshness window. The clock is always an argument so tests are exact.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How a timestamp is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampFormat {
    /// Seconds since the epoch (a fractional part is accepted).
    Unix,
    /// Milliseconds since the epoch.
    UnixMs,
    /// `2024-05-01T12:00:00Z`, any offset.
    Rfc3339,
}

impl TimestampFormat {
    /// Milliseconds since the epoch, or `None` if the text is not of this format.
    pub fn to_unix_ms(self, text: &str) -> Option<i64> {
        let text = text.trim();
        match self {
            Self::Unix => {
                if let Ok(secs) = text.parse::<i64>() {
                    return secs.checked_mul(1000);
                }
                let f: f64 = text.parse().ok()?;
                f.is_finite().then_some((f * 1000.0) as i64)
            }
            Self::UnixMs => text.parse::<i64>().ok(),
            Self::Rfc3339 => {
                let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
                i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
            }
        }
    }

    /// The text a sender would write for `now` (used by `hookgate sign`).
    pub fn render(self, now: SystemTime) -> String {
        let d = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        match self {
            Self::Unix => d.as_secs().to_string(),
            Self::UnixMs => d.as_millis().to_string(),
            Self::Rfc3339 => humantime::format_rfc3339_seconds(now).to_string(),
        }
    }
}

/// Milliseconds since the epoch for `now` (negative before 1970).
pub fn unix_ms(now: SystemTime) -> i64 {
    match now.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// True when `ts_ms` is within `tolerance` of `now`, in either direction.
pub fn is_fresh(ts_ms: i64, now: SystemTime, tolerance: Duration) -> bool {
    let skew = (i128::from(unix_ms(now)) - i128::from(ts_ms)).unsigned_abs();
    skew <= tolerance.as_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_format() {
        assert_eq!(TimestampFormat::Unix.to_unix_ms("1614265330"), Some(1_614_265_330_000));
        assert_eq!(TimestampFormat::Unix.to_unix_ms("1614265330.5"), Some(1_614_265_330_500));
        assert_eq!(TimestampFormat::Unix.to_unix_ms("abc"), None);
        assert_eq!(TimestampFormat::UnixMs.to_unix_ms("1649315900181"), Some(1_649_315_900_181));
        assert_eq!(TimestampFormat::UnixMs.to_unix_ms("1.5"), None);
        assert_eq!(TimestampFormat::Rfc3339.to_unix_ms("2021-02-25T15:02:10Z"), Some(1_614_265_330_000));
        assert_eq!(TimestampFormat::Rfc3339.to_unix_ms("2021-02-25T16:02:10+01:00"), Some(1_614_265_330_000));
        assert_eq!(TimestampFormat::Rfc3339.to_unix_ms("yesterday"), None);
    }

    #[test]
    fn tolerance_applies_both_ways_inclusive() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let tol = Duration::from_secs(300);
        assert!(is_fresh(1_000_000_000, now, tol));
        assert!(is_fresh(1_000_000_000 - 300_000, now, tol));
        assert!(!is_fresh(1_000_000_000 - 300_001, now, tol));
        assert!(is_fresh(1_000_000_000 + 300_000, now, tol));
        assert!(!is_fresh(1_000_000_000 + 300_001, now, tol));
    }

    #[test]
    fn render_round_trips() {
        let now = UNIX_EPOCH + Duration::from_millis(1_614_265_330_123);
        for f in [TimestampFormat::Unix, TimestampFormat::UnixMs, TimestampFormat::Rfc3339] {
            let ms = f.to_unix_ms(&f.render(now)).unwrap();
            assert!((1_614_265_330_000..=1_614_265_330_123).contains(&ms), "{f:?} {ms}");
        }
    }
}
