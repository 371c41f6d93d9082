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
//! holds for all. With the disk store the pauses are kept in a file beside it
//! ([`PauseFile`]), so a pause outlives a restart.

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

impl Pause {
    /// As stored (a Redis hash field and value, a line of [`PauseFile`]): the
    /// route key in hex, and `<since unix ms> <reason>`.
    pub fn encode(&self, route: &RouteKey) -> (String, String) {
        (hex::encode(route.as_bytes()), format!("{} {}", super::unix_ms(self.since), self.reason.encode()))
    }

    /// Back from [`Pause::encode`]; `None` unless well formed.
    pub fn decode(field: &str, value: &str) -> Option<(RouteKey, Pause)> {
        let route = RouteKey::from_bytes(&hex::decode(field).ok()?)?;
        let (since, reason) = value.split_once(' ')?;
        let since = std::time::UNIX_EPOCH + Duration::from_millis(since.parse().ok()?);
        Some((route, Pause { since, reason: Reason::decode(reason)? }))
    }
}

/// The disk store's pauses: `pauses` in its directory, a line per paused
/// route (`<route hex> <since unix ms> <reason>`), replaced whole (written
/// beside, synced, renamed) at every pause and resume.
#[derive(Debug, Clone)]
pub struct PauseFile(std::path::PathBuf);

impl PauseFile {
    pub fn in_dir(dir: &std::path::Path) -> PauseFile {
        PauseFile(dir.join("pauses"))
    }

    /// What the file holds; nothing when there is none. A line that cannot
    /// be read is skipped with a warning (that route is not paused).
    pub fn read(&self) -> Vec<(RouteKey, Pause)> {
        let Ok(text) = std::fs::read_to_string(&self.0) else { return Vec::new() };
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .filter_map(|line| {
                let got = line.split_once(' ').and_then(|(field, value)| Pause::decode(field, value));
                if got.is_none() {
                    tracing::warn!(path = %self.0.display(), "unreadable line in the queue's pause file; that route is not paused");
                }
                got
            })
            .collect()
    }

    /// Replaces the file with `all` (off the runtime's threads).
    pub async fn write(&self, all: Vec<(RouteKey, Pause)>) -> std::io::Result<()> {
        let path = self.0.clone();
        let text: String = all
            .iter()
            .map(|(route, p)| {
                let (field, value) = p.encode(route);
                format!("{field} {value}\n")
            })
            .collect();
        tokio::task::spawn_blocking(move || {
            use std::io::Write as _;
            let tmp = path.with_extension("new");
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            if let Some(dir) = path.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        })
        .await
        .map_err(std::io::Error::other)?
    }
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

    /// The disk store's pause file: what is written is read back; damaged
    /// lines are skipped, a missing file is no pause.
    #[tokio::test]
    async fn the_pause_file_round_trips_and_skips_what_it_cannot_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = PauseFile::in_dir(dir.path());
        assert!(file.read().is_empty(), "no file yet");
        let since = std::time::UNIX_EPOCH + Duration::from_millis(1_796_000_000_123);
        let all = vec![
            (RouteKey::new("stripe", "orders"), Pause { since, reason: Reason::Api }),
            (
                RouteKey::new("gh", "ci"),
                Pause { since, reason: Reason::Failing { probe_every: Duration::from_secs(60) } },
            ),
        ];
        file.write(all.clone()).await.unwrap();
        let mut back = file.read();
        back.sort_by(|a, b| a.0.cmp(&b.0));
        let mut want = all.clone();
        want.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(back, want);
        let good = std::fs::read_to_string(dir.path().join("pauses")).unwrap();
        std::fs::write(dir.path().join("pauses"), format!("zz 1 api\n{}\n\nnot a line\n00 x gone\n", good.trim()))
            .unwrap();
        assert_eq!(file.read().len(), 2, "the two good lines");
        file.write(Vec::new()).await.unwrap();
        assert!(file.read().is_empty());
    }
}
