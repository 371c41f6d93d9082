//! `rate = "50/s"` on a queue route (SPEC §16): at most that many attempts
//! started per second; the rest wait, stored, never dropped.
//!
//! A GCRA (generic cell rate algorithm): a "theoretical arrival time" moves
//! one interval (1/rate) per permit and may run ahead of now by at most
//! `burst - 1` intervals. The route's worker asks for permits before it takes
//! entries ([`RateLimits::acquire`]: "how many may I start now, and when can
//! I ask again?"), so what it takes it may start at once. With the disk store
//! the state is this process's; with Redis it is one key beside the route's
//! own (the same hash tag, so it lives on the route's Cluster node), updated
//! by one script call on the server's clock, so every replica together stays
//! within the rate.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::RouteKey;

pub use crate::route::policy::Rate;

/// One GCRA state: the theoretical arrival time.
#[derive(Debug)]
struct Local {
    tat: Option<Instant>,
}

/// This process's GCRA states, per route.
#[derive(Debug, Default)]
pub struct RateLimits(Mutex<HashMap<RouteKey, Arc<Mutex<Local>>>>);

/// Up to `want` permits now at `now`; and when the next may be had.
fn grant(tat: &mut Option<Instant>, rate: Rate, want: usize, now: Instant) -> (usize, Duration) {
    let t = rate.interval();
    let tau = t * (rate.burst() - 1);
    let mut at = tat.map_or(now, |x| x.max(now));
    let mut granted = 0;
    while granted < want && at.saturating_duration_since(now) <= tau {
        at += t;
        granted += 1;
    }
    *tat = Some(at);
    (granted, at.saturating_duration_since(now).saturating_sub(tau))
}

impl RateLimits {
    /// This process's permits for `route` (the disk store's, or Redis's when
    /// the store does not answer: then each replica keeps the rate alone).
    pub fn local(&self, route: &RouteKey, rate: Rate, want: usize) -> (usize, Duration) {
        let state = {
            let mut m = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            m.entry(route.clone()).or_insert_with(|| Arc::new(Mutex::new(Local { tat: None }))).clone()
        };
        let mut s = state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        grant(&mut s.tat, rate, want, Instant::now())
    }

    /// Permits for `route` from the store's shared state (Redis), else local.
    pub async fn acquire(&self, store: &super::Store, route: &RouteKey, rate: Rate, want: usize) -> (usize, Duration) {
        if let super::Store::Redis(r) = store {
            match r.rate_permits(route, rate, want).await {
                Ok(got) => return got,
                Err(e) => {
                    tracing::warn!(source = route.source(), route = %route.identity(), error = %e, "cannot reach the shared rate limit; limiting in this process alone")
                }
            }
        }
        self.local(route, rate, want)
    }
}

/// The same GCRA as [`grant`], in Redis, on the server's clock (µs):
/// KEYS[1] the state; ARGV interval µs, tolerance µs, wanted. Answers
/// {granted, µs until the next permit}.
pub const GCRA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local granted = 0
while granted < want and tat - now <= tau do
  tat = tat + interval
  granted = granted + 1
end
redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', math.floor((tat - now) / 1000) + 1000)
local wait = tat - now - tau
if wait < 0 then wait = 0 end
return {granted, wait}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_and_refuse() {
        assert_eq!(Rate::parse("50/s").unwrap(), Rate { per: 50, period: Duration::from_secs(1) });
        assert_eq!(Rate::parse("600/m").unwrap().interval(), Duration::from_millis(100));
        assert_eq!(Rate::parse("50/s").unwrap().burst(), 5);
        assert_eq!(Rate::parse("1/m").unwrap().burst(), 1);
        for bad in ["", "50", "0/s", "-1/s", "x/s", "50/d", "200000/s", "50/ s/"] {
            assert!(Rate::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_burst_then_one_per_interval() {
        let rate = Rate::parse("100/s").unwrap(); // 10 ms apart, burst 10
        let t0 = Instant::now();
        let mut tat = None;
        let (n, wait) = grant(&mut tat, rate, 50, t0);
        assert_eq!(n, 10, "the burst");
        assert_eq!(wait, Duration::from_millis(10));
        assert_eq!(grant(&mut tat, rate, 50, t0).0, 0, "nothing more now");
        assert_eq!(grant(&mut tat, rate, 50, t0 + Duration::from_millis(10)).0, 1);
        // Over one second of asking every 5 ms: the rate plus the burst at most.
        let mut total = 10 + 1;
        for ms in (15..=1000).step_by(5) {
            total += grant(&mut tat, rate, 50, t0 + Duration::from_millis(ms)).0;
        }
        assert!((100..=110).contains(&total), "{total}");
    }
}
