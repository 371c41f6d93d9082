//! Paused queue routes (SPEC §16). A paused route keeps accepting and storing
//! deliveries; its workers start no attempt, except one probe every
//! `probe_every` when it paused itself after `pause_after` of failure (the
//! first probe that delivers resumes it). A route pauses on an upstream
//! `410 Gone` (Standard Webhooks' "this endpoint is gone") and by the admin API
//! too; those wait for `POST .../resume`.
//!
//! The worker asks one question ([`Pauses::allowance`]: "how many may I start
//! now?") and reports what it did. With `store = "redis"` a pause is written to
//! the store and read back by every replica ([`super::redis`]), so a pause by one
//! holds for all.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use super::RouteKey;

/// Why a route is paused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// `POST /queue/routes/{source}/{route}/pause`.
    Api,
    /// The upstream answered `410 Gone`.
    Gone,
    /// Failing for `pause_after`: probed every `probe_every`.
    Failing { probe_every: Duration },
}

impl Reason {
    pub fn text(&self) -> String {
        match self {
            Reason::Api => "paused by the admin API".into(),
            Reason::Gone => "the upstream answered 410 Gone".into(),
            Reason::Failing { probe_every } => {
                format!("failing for pause_after; probed every {}", humantime::format_duration(*probe_every))
            }
        }
    }

    /// A compact form for the shared store: `api`, `gone`, `failing:<ms>`.
    pub fn encode(&self) -> String {
        match self {
            Reason::Api => "api".into(),
            Reason::Gone => "gone".into(),
            Reason::Failing { probe_every } => format!("failing:{}", probe_every.as_millis()),
        }
    }

    pub fn decode(s: &str) -> Option<Reason> {
        match s {
            "api" => Some(Reason::Api),
            "gone" => Some(Reason::Gone),
            _ => {
                let ms = s.strip_prefix("failing:")?.parse().ok()?;
                Some(Reason::Failing { probe_every: Duration::from_millis(ms) })
            }
        }
    }
}

/// A route's pause, as `GET /queue` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pause {
    pub since: SystemTime,
    pub reason: Reason,
}

#[derive(Debug)]
struct Paused {
    pause: Pause,
    /// When the next probe may start (failing pauses only).
    next_probe: Option<Instant>,
}

#[derive(Debug, Default)]
pub struct Pauses(Mutex<HashMap<RouteKey, Paused>>);

impl Pauses {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<RouteKey, Paused>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Pauses `route` (kept as it is if it already is); whether it was not before.
    pub fn pause(&self, route: &RouteKey, reason: Reason, since: SystemTime) -> bool {
        let mut m = self.map();
        if m.contains_key(route) {
            return false;
        }
        let next_probe = match &reason {
            Reason::Failing { probe_every } => Some(Instant::now() + *probe_every),
            _ => None,
        };
        m.insert(route.clone(), Paused { pause: Pause { since, reason }, next_probe });
        true
    }

    /// Whether it was paused.
    pub fn resume(&self, route: &RouteKey) -> bool {
        self.map().remove(route).is_some()
    }

    pub fn get(&self, route: &RouteKey) -> Option<Pause> {
        self.map().get(route).map(|p| p.pause.clone())
    }

    pub fn all(&self) -> Vec<(RouteKey, Pause)> {
        self.map().iter().map(|(k, p)| (k.clone(), p.pause.clone())).collect()
    }

    /// Makes the pauses exactly `shared` (a replica's view of the store),
    /// keeping the probe timers of the ones that stay.
    pub fn replace(&self, shared: Vec<(RouteKey, Pause)>) {
        let mut m = self.map();
        let mut next: HashMap<RouteKey, Paused> = HashMap::with_capacity(shared.len());
        for (k, pause) in shared {
            let next_probe = match (m.remove(&k), &pause.reason) {
                (Some(old), Reason::Failing { .. }) if old.pause.reason == pause.reason => old.next_probe,
                (_, Reason::Failing { probe_every }) => Some(Instant::now() + *probe_every),
                _ => None,
            };
            next.insert(k, Paused { pause, next_probe });
        }
        *m = next;
    }

    /// How many attempts `route`'s worker may start now: `None` when it is not
    /// paused; `Some(1)` when a probe is due and `idle` (nothing of the route
    /// under way in this worker), which counts as the probe started;
    /// `Some(0)` otherwise.
    pub fn allowance(&self, route: &RouteKey, now: Instant, idle: bool) -> Option<usize> {
        let mut m = self.map();
        let p = m.get_mut(route)?;
        let Reason::Failing { probe_every } = p.pause.reason else { return Some(0) };
        match p.next_probe {
            Some(t) if t <= now && idle => {
                p.next_probe = Some(now + probe_every);
                Some(1)
            }
            _ => Some(0),
        }
    }

    /// When the route's next probe is due (a paused worker's timer).
    pub fn next_probe(&self, route: &RouteKey) -> Option<Instant> {
        self.map().get(route).and_then(|p| p.next_probe)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_pause_allows_one_probe_per_interval_and_others_none() {
        let p = Pauses::default();
        let r = RouteKey::new("s", "orders");
        let t0 = Instant::now();
        assert_eq!(p.allowance(&r, t0, true), None, "not paused");
        assert!(p.pause(&r, Reason::Failing { probe_every: Duration::from_millis(50) }, SystemTime::now()));
        assert!(!p.pause(&r, Reason::Api, SystemTime::now()), "already paused: kept as it is");
        assert_eq!(p.allowance(&r, Instant::now(), true), Some(0), "not before probe_every");
        let due = p.next_probe(&r).unwrap();
        assert_eq!(p.allowance(&r, due, false), Some(0), "busy: no probe");
        assert_eq!(p.allowance(&r, due, true), Some(1), "one probe");
        assert_eq!(p.allowance(&r, due, true), Some(0), "then wait again");
        assert!(p.resume(&r));
        assert_eq!(p.allowance(&r, due, true), None);
        p.pause(&r, Reason::Gone, SystemTime::now());
        assert_eq!(p.allowance(&r, due + Duration::from_secs(3600), true), Some(0), "410: no probes");
        for reason in [Reason::Api, Reason::Gone, Reason::Failing { probe_every: Duration::from_secs(60) }] {
            assert_eq!(Reason::decode(&reason.encode()), Some(reason));
        }
        assert_eq!(Reason::decode("failing:x"), None);
    }
}
