//! The in-process series (SPEC §17): per source and minute, how many requests
//! ended in each outcome and how long the upstream took (a histogram, for
//! p50/p99), for the last hour. `GET /stats?window=1h` serves it and `/ui`
//! draws it.
//!
//! Recording is a few relaxed atomic adds into the current minute's slot, no
//! lock and no allocation. A slot is reused an hour later: the first writer
//! of a new minute claims it and zeroes it, so a count racing that claim at
//! the minute's edge may be lost (the series is a picture, `/metrics` the
//! ledger). Series are kept by source name, so a reload keeps their history.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use crate::metrics::OUTCOMES;

/// The minutes kept: the last hour and the current one.
pub const MINUTES: usize = 61;

/// Upper bounds (ms) of the latency buckets; one more bucket holds the rest.
const BOUNDS_MS: [f64; 28] = [
    1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 50.0, 75.0, 100.0, 150.0, 200.0, 300.0, 500.0, 750.0, 1000.0,
    1500.0, 2000.0, 3000.0, 5000.0, 7500.0, 10_000.0, 15_000.0, 20_000.0, 30_000.0, 60_000.0,
];

struct Minute {
    /// The unix minute this slot holds, plus one (0: never used).
    tag: AtomicU64,
    outcomes: [AtomicU32; OUTCOMES.len()],
    latency: [AtomicU32; BOUNDS_MS.len() + 1],
}

impl Minute {
    fn new() -> Self {
        Minute {
            tag: AtomicU64::new(0),
            outcomes: std::array::from_fn(|_| AtomicU32::new(0)),
            latency: std::array::from_fn(|_| AtomicU32::new(0)),
        }
    }
}

/// One source's last hour.
pub struct Series {
    minutes: Box<[Minute]>,
}

fn unix_minute(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() / 60)
}

impl Default for Series {
    fn default() -> Self {
        Series { minutes: (0..MINUTES).map(|_| Minute::new()).collect() }
    }
}

impl Series {
    /// The slot for `minute`, claimed (and zeroed) if it held an older one.
    fn slot(&self, minute: u64) -> &Minute {
        let m = &self.minutes[(minute % MINUTES as u64) as usize];
        let tag = m.tag.load(Relaxed);
        if tag != minute + 1 && m.tag.compare_exchange(tag, minute + 1, Relaxed, Relaxed).is_ok() {
            m.outcomes.iter().chain(&m.latency).for_each(|c| c.store(0, Relaxed));
        }
        m
    }

    /// A request that ended in `OUTCOMES[outcome]`.
    pub fn outcome(&self, outcome: usize, now: SystemTime) {
        if let Some(c) = self.slot(unix_minute(now)).outcomes.get(outcome) {
            c.fetch_add(1, Relaxed);
        }
    }

    /// An upstream exchange (sync forward or queue attempt) that took `took`.
    pub fn latency(&self, took: Duration, now: SystemTime) {
        let ms = took.as_secs_f64() * 1000.0;
        let bucket = BOUNDS_MS.iter().position(|b| ms <= *b).unwrap_or(BOUNDS_MS.len());
        self.slot(unix_minute(now)).latency[bucket].fetch_add(1, Relaxed);
    }

    /// The minutes of the last `window` up to `now`, oldest first.
    pub fn to_json(&self, window: Duration, now: SystemTime) -> Vec<Value> {
        let last = unix_minute(now);
        let count = (window.as_secs() / 60).clamp(1, MINUTES as u64 - 1);
        (last + 1 - count..=last)
            .map(|minute| {
                let m = &self.minutes[(minute % MINUTES as u64) as usize];
                let current = m.tag.load(Relaxed) == minute + 1;
                let read = |c: &AtomicU32| if current { u64::from(c.load(Relaxed)) } else { 0 };
                let mut outcomes = Map::new();
                let mut total = 0;
                for (name, c) in OUTCOMES.iter().zip(&m.outcomes) {
                    let n = read(c);
                    if n > 0 {
                        outcomes.insert((*name).to_owned(), n.into());
                        total += n;
                    }
                }
                let hist: Vec<u64> = m.latency.iter().map(read).collect();
                let at = UNIX_EPOCH + Duration::from_secs(minute * 60);
                json!({
                    "at": crate::delivery_log::rfc3339_ms(at),
                    "total": total,
                    "outcomes": outcomes,
                    "upstream": hist.iter().sum::<u64>(),
                    "p50_ms": quantile(&hist, 0.50),
                    "p99_ms": quantile(&hist, 0.99),
                })
            })
            .collect()
    }
}

/// The `q` quantile of a bucketed histogram, interpolated inside its bucket;
/// `None` without samples. The open last bucket reports its lower bound.
fn quantile(hist: &[u64], q: f64) -> Option<f64> {
    let total: u64 = hist.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = (q * total as f64).ceil().max(1.0);
    let mut seen = 0.0;
    for (i, &n) in hist.iter().enumerate() {
        if n == 0 {
            continue;
        }
        if seen + n as f64 >= rank {
            let lower = if i == 0 { 0.0 } else { BOUNDS_MS[i - 1] };
            let Some(&upper) = BOUNDS_MS.get(i) else { return Some(lower) };
            let within = (rank - seen) / n as f64;
            return Some(((lower + (upper - lower) * within) * 100.0).round() / 100.0);
        }
        seen += n as f64;
    }
    None
}

/// Every source's series, by name (kept across reloads).
#[derive(Default)]
pub struct Stats {
    series: Mutex<HashMap<Arc<str>, Arc<Series>>>,
}

impl Stats {
    /// The series of source `name`, made on first use.
    pub fn for_source(&self, name: &str) -> Arc<Series> {
        let mut map = self.series.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(name.into()).or_default().clone()
    }

    /// `GET /stats`: `sources` in `names` order (the config's), each with its minutes.
    pub fn to_json(&self, names: &[&str], window: Duration, now: SystemTime) -> Value {
        let sources: Vec<Value> = names
            .iter()
            .map(|name| json!({ "source": name, "minutes": self.for_source(name).to_json(window, now) }))
            .collect();
        json!({ "window_seconds": window.as_secs(), "step_seconds": 60, "sources": sources })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minute: u64, second: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(29_000_000 * 60 + minute * 60 + second)
    }

    fn index(outcome: &str) -> usize {
        OUTCOMES.iter().position(|o| *o == outcome).unwrap()
    }

    #[test]
    fn counts_outcomes_per_minute_and_forgets_the_hour_before() {
        let s = Series::default();
        for i in 0..5 {
            s.outcome(index("forwarded"), at(0, i));
        }
        s.outcome(index("invalid_signature"), at(0, 59));
        s.outcome(index("forwarded"), at(1, 0));
        let minutes = s.to_json(Duration::from_secs(3600), at(1, 30));
        assert_eq!(minutes.len(), 60);
        let (prev, last) = (&minutes[58], &minutes[59]);
        assert_eq!(prev["outcomes"], json!({ "forwarded": 5, "invalid_signature": 1 }));
        assert_eq!(prev["total"], 6);
        assert_eq!(last["outcomes"], json!({ "forwarded": 1 }));
        assert!(last["at"].as_str().unwrap().ends_with(":00.000Z"));
        assert_eq!(minutes[0]["total"], 0);
        // An hour later minute 0's slot holds minute 61: the old counts are gone.
        s.outcome(index("queued"), at(61, 0));
        let minutes = s.to_json(Duration::from_secs(3600), at(61, 1));
        assert_eq!(minutes[59]["outcomes"], json!({ "queued": 1 }));
        assert_eq!(minutes.iter().map(|m| m["total"].as_u64().unwrap()).sum::<u64>(), 1);
        // A shorter window: only its minutes.
        assert_eq!(s.to_json(Duration::from_secs(300), at(61, 1)).len(), 5);
    }

    #[test]
    fn latency_quantiles_from_the_buckets() {
        let s = Series::default();
        for _ in 0..98 {
            s.latency(Duration::from_millis(4), at(0, 0));
        }
        s.latency(Duration::from_millis(900), at(0, 1));
        s.latency(Duration::from_secs(90), at(0, 2));
        let m = &s.to_json(Duration::from_secs(60), at(0, 3))[0];
        assert_eq!(m["upstream"], 100);
        let p50 = m["p50_ms"].as_f64().unwrap();
        assert!((3.0..=5.0).contains(&p50), "{p50}");
        let p99 = m["p99_ms"].as_f64().unwrap();
        assert!((750.0..=1000.0).contains(&p99), "{p99}");
        let empty = &s.to_json(Duration::from_secs(60), at(5, 0))[0];
        assert_eq!(empty["p50_ms"], Value::Null);
        assert_eq!(quantile(&[0, 0, 1], 1.0), Some(2.0 + 1.0));
        let mut open = vec![0; BOUNDS_MS.len() + 1];
        open[BOUNDS_MS.len()] = 1;
        assert_eq!(quantile(&open, 0.5), Some(60_000.0));
    }

    #[test]
    fn series_outlive_a_reload_by_name() {
        let stats = Stats::default();
        stats.for_source("a").outcome(0, SystemTime::now());
        let shown = stats.to_json(&["a", "b"], Duration::from_secs(120), SystemTime::now());
        assert_eq!(shown["sources"][0]["minutes"][1]["total"], 1);
        assert_eq!(shown["sources"][1]["source"], "b");
        assert_eq!(shown["window_seconds"], 120);
    }
}
