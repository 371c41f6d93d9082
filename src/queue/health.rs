//! Whether a queue route's app answers (SPEC §12, "Seeing a down app"):
//! while its attempts fail the log gets one WARN per route at most every
//! [`WARN_EVERY`] (how many wait, the last error, the next attempt), and one
//! INFO when it delivers again. Shared by the route's workers.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most one "still failing" line per route this often.
pub const WARN_EVERY: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
pub struct RouteHealth(Mutex<State>);

#[derive(Debug, Default)]
struct State {
    /// Since the first failure after the last success.
    failing_since: Option<Instant>,
    last_warn: Option<Instant>,
    failures: u64,
}

impl RouteHealth {
    /// An attempt failed at `now`: whether to log a WARN now.
    pub fn failed(&self, now: Instant) -> bool {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        s.failing_since.get_or_insert(now);
        s.failures += 1;
        let due = s.last_warn.is_none_or(|t| now.duration_since(t) >= WARN_EVERY);
        if due {
            s.last_warn = Some(now);
        }
        due
    }

    /// How long the route has been failing without a success, at `now`.
    pub fn failing_for(&self, now: Instant) -> Option<Duration> {
        let s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        s.failing_since.map(|t| now.saturating_duration_since(t))
    }

    /// An attempt delivered at `now`: if the route was failing, for how long
    /// and how many attempts failed (for the INFO line).
    pub fn delivered(&self, now: Instant) -> Option<(Duration, u64)> {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let since = s.failing_since.take()?;
        let failures = std::mem::take(&mut s.failures);
        s.last_warn = None;
        Some((now.duration_since(since), failures))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_warn_per_interval_and_one_info_on_recovery() {
        let h = RouteHealth::default();
        let t0 = Instant::now();
        assert_eq!(h.delivered(t0), None, "nothing failed: no recovery line");
        assert!(h.failed(t0), "the first failure warns");
        assert!(!h.failed(t0 + Duration::from_secs(1)));
        assert!(!h.failed(t0 + Duration::from_secs(29)));
        assert!(h.failed(t0 + WARN_EVERY), "then every 30 s at most");
        assert_eq!(h.delivered(t0 + Duration::from_secs(40)), Some((Duration::from_secs(40), 4)));
        assert_eq!(h.delivered(t0 + Duration::from_secs(41)), None, "once");
        assert!(h.failed(t0 + Duration::from_secs(42)), "a new outage warns at once");
    }
}
