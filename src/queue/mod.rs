//! Queue mode (SPEC §5): a route with `delivery = "queue"` acknowledges the
//! sender once the delivery is stored durably, then delivers it itself,
//! retrying until the app answers 2xx.
//!
//! ```text
//!  pipeline ──enqueue──▶ store ──take──▶ worker (one per route) ──attempt──▶ upstream
//!     ▲ ack / 503          │   ◀──finish: done | retry at T | dead──┘
//!                          └── dead letters: /queue/dead (retry, delete)
//! ```
//!
//! - [`policy`]: the retry schedule and what each upstream answer means.
//! - [`entry`]: what is stored per delivery, and its byte layout.
//! - [`disk`]: the embedded store (fjall), group commit, crash recovery.
//! - [`redis`]: Redis Streams shared by replicas (standalone or Cluster).
//! - [`worker`]: the per-route delivery loops and graceful stop.
//!
//! Both stores answer the same calls ([`Store`]); the workers and the admin
//! API do not know which one they talk to.

pub mod disk;
pub mod entry;
pub mod health;
pub mod marker;
pub mod pause;
pub mod rate;
pub mod redis;
pub mod transfer;
pub mod worker;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

pub use crate::route::policy::{QueueRoute, RetryPolicy, Verdict};
pub use entry::{Meta, NewEntry, RouteKey, State};

use crate::config::{QueueConfig, QueueStoreConfig};

/// The queue store could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    #[error("queue store unavailable: {0}")]
    Unavailable(String),
    #[error("queue store stopped")]
    Closed,
    /// A cursor or entry that no page or listing gave out.
    #[error("{0}")]
    BadInput(&'static str),
}

/// Where a disk entry's schedule key is, so its outcome can replace it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Slot {
    Fresh(Vec<u8>),
    Retry(Vec<u8>),
    /// An `order_by` key's head released from its parked key, taken from there.
    Parked(Vec<u8>),
}

/// How the store finds a taken entry again to record its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handle {
    Disk {
        seq: u64,
        slot: Slot,
    },
    /// The stream (its key, shared by the entries of one take) and the entry
    /// it was read from, the delivery's queue ID, and the entry as stored
    /// (a retry or a dead letter stores it again as it is); when the stream
    /// entry was read or last claimed (an ordering key's lease, handed on
    /// from head to head, is claimed again before another replica could).
    Redis {
        route: RouteKey,
        stream: Arc<str>,
        stream_id: String,
        id: String,
        stored: bytes::Bytes,
        leased: std::time::Instant,
    },
}

/// One entry handed to a worker for an attempt.
#[derive(Debug, Clone)]
pub struct TakenEntry {
    pub handle: Handle,
    pub state: State,
    pub entry: NewEntry,
}

impl TakenEntry {
    /// Unique within its route while stored: the worker's in-flight key.
    pub fn ident(&self) -> String {
        match &self.handle {
            Handle::Disk { seq, .. } => seq.to_string(),
            Handle::Redis { id, .. } => id.clone(),
        }
    }

    /// Redis: when its stream entry was read or last claimed.
    pub fn leased(&self) -> Option<std::time::Instant> {
        match &self.handle {
            Handle::Disk { .. } => None,
            Handle::Redis { leased, .. } => Some(*leased),
        }
    }
}

/// What a take found.
#[derive(Debug, Default)]
pub struct Taken {
    pub entries: Vec<TakenEntry>,
    /// The earliest retry still waiting, unix ms.
    pub next_due_ms: Option<u64>,
}

/// The outcome of an attempt, as stored.
#[derive(Debug, Clone)]
pub enum Transition {
    Done,
    Retry { due_ms: u64, state: State },
    Dead { state: State },
}

/// Stored counts of one route (in flight is the worker's).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Never attempted yet.
    pub pending: u64,
    /// Waiting for a retry time.
    pub scheduled: u64,
    pub dead: u64,
}

#[derive(Debug, Clone)]
pub struct DeadItem {
    /// What `/queue/dead/{entry}` takes.
    pub entry: String,
    /// The route it is stored under (moved orphans: not the one in `meta`).
    pub route: RouteKey,
    pub meta: Meta,
    pub state: State,
}

/// A stored delivery that is neither done nor dead (`GET /queue/waiting`).
#[derive(Debug, Clone)]
pub struct WaitingItem {
    /// The store's name for it (a disk sequence number, a Redis queue ID).
    pub entry: String,
    pub route: RouteKey,
    pub meta: Meta,
    pub state: State,
    /// Waiting for a retry: when it is due (unix ms); `None`: never attempted yet.
    pub next_attempt_ms: Option<u64>,
}

/// One route's page of waiting deliveries; `next` continues within the route.
#[derive(Debug, Default)]
pub struct WaitingPage {
    pub items: Vec<WaitingItem>,
    pub next: Option<String>,
}

#[derive(Debug, Default)]
pub struct DeadPage {
    pub items: Vec<DeadItem>,
    /// Cursor for the next page.
    pub next: Option<String>,
}

/// The configured store. `routes` arguments are the queue routes of the config
/// in force (the Redis store keeps its keys per route; the disk store knows
/// its own).
#[derive(Clone)]
pub enum Store {
    Disk(disk::DiskQueue),
    Redis(std::sync::Arc<redis::RedisQueue>),
}

impl Store {
    pub async fn enqueue(&self, route: RouteKey, entry: NewEntry) -> Result<(), QueueError> {
        match self {
            Store::Disk(d) => d.enqueue(route, entry).await.map(drop),
            Store::Redis(r) => r.enqueue(&route, &entry).await,
        }
    }

    pub async fn take(
        &self,
        route: RouteKey,
        limit: usize,
        skip: std::collections::HashSet<String>,
        now_ms: u64,
    ) -> Result<Taken, QueueError> {
        match self {
            Store::Disk(d) => {
                let skip = skip.iter().filter_map(|s| s.parse().ok()).collect();
                d.take(route, limit, skip, now_ms).await
            }
            Store::Redis(r) => r.take(&route, limit, &skip, now_ms).await,
        }
    }

    /// Records an attempt's outcome. With `go_on`, a Redis store may hand
    /// back the next delivery of a delivered entry's ordering key for the
    /// caller to attempt ([`redis::RedisQueue::finish_then`]).
    pub async fn finish(
        &self,
        taken: TakenEntry,
        t: Transition,
        go_on: bool,
    ) -> Result<Option<TakenEntry>, QueueError> {
        match self {
            Store::Disk(d) => d.finish(taken, t).await.map(|()| None),
            Store::Redis(r) => r.finish_then(&taken, &t, go_on).await,
        }
    }

    pub async fn dead_list(
        &self,
        routes: &[RouteKey],
        source: Option<String>,
        limit: usize,
        cursor: Option<String>,
    ) -> Result<DeadPage, QueueError> {
        match self {
            Store::Disk(d) => {
                let before = match cursor {
                    None => None,
                    Some(c) => Some(c.parse().map_err(|_| QueueError::BadInput("unknown cursor"))?),
                };
                d.dead_list(source, limit, before).await
            }
            Store::Redis(r) => r.dead_list(routes, source.as_deref(), limit, cursor.as_deref()).await,
        }
    }

    /// One dead letter (`entry`) or all (of `source`) back to pending, attempts reset.
    pub async fn dead_retry(
        &self,
        routes: &[RouteKey],
        entry: Option<&str>,
        source: Option<String>,
    ) -> Result<usize, QueueError> {
        match self {
            Store::Disk(d) => match entry {
                Some(e) => match e.parse::<u64>() {
                    Ok(seq) => d.dead_retry(Some(seq), None).await,
                    Err(_) => Ok(0),
                },
                None => d.dead_retry(None, source).await,
            },
            Store::Redis(r) => match entry {
                Some(e) => r.dead_retry_one(e).await,
                None => r.dead_retry_all(routes, source.as_deref()).await,
            },
        }
    }

    /// Drops a dead letter: `None` when there was none, else its meta when
    /// it could be read (the delivery log's record it points to is updated).
    pub async fn dead_delete(&self, entry: &str) -> Result<Option<Option<Meta>>, QueueError> {
        match self {
            Store::Disk(d) => match entry.parse::<u64>() {
                Ok(seq) => d.dead_delete(seq).await,
                Err(_) => Ok(None),
            },
            Store::Redis(r) => r.dead_delete(entry).await,
        }
    }

    pub async fn sweep(&self, routes: &[RouteKey], older_than_ms: u64) -> Result<usize, QueueError> {
        match self {
            Store::Disk(d) => d.sweep(older_than_ms).await,
            Store::Redis(r) => r.sweep(routes, older_than_ms).await,
        }
    }

    /// `route`'s deliveries that are neither done nor dead: never attempted
    /// first (by arrival), then those waiting for a retry (by due time);
    /// `cursor` is a previous page's `next`.
    pub async fn waiting(
        &self,
        route: &RouteKey,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<WaitingPage, QueueError> {
        match self {
            Store::Disk(d) => d.waiting(route.clone(), limit, cursor.map(str::to_owned)).await,
            Store::Redis(r) => r.waiting(route, limit, cursor).await,
        }
    }

    /// Unix ms of the oldest never-attempted delivery of `route`.
    pub async fn oldest_pending_ms(&self, route: &RouteKey) -> Option<u64> {
        match self {
            Store::Disk(d) => d.oldest_fresh_ms(route.clone()).await,
            Store::Redis(r) => r.oldest_pending_ms(route).await,
        }
    }

    /// Whether the store can take deliveries now (`/readyz`).
    pub async fn ready(&self) -> bool {
        match self {
            Store::Disk(d) => d.writable(),
            Store::Redis(r) => r.ping().await.is_ok(),
        }
    }

    /// Entries taken and not to be attempted here (the process is stopping,
    /// their route went away): on Redis handed to the other replicas at once
    /// (see [`redis::RedisQueue::hand_back`]); on disk no longer counted as
    /// in flight, takeable again. How many the other replicas got.
    pub async fn hand_back(&self, entries: &[TakenEntry]) -> Result<u64, QueueError> {
        match self {
            Store::Disk(d) => {
                d.untake(entries);
                Ok(0)
            }
            Store::Redis(r) => r.hand_back(entries).await,
        }
    }

    /// How long an idle worker waits before looking again: other replicas
    /// enqueue into a shared store without waking this process's workers.
    pub fn idle_check(&self) -> std::time::Duration {
        match self {
            Store::Disk(_) => std::time::Duration::from_secs(5),
            Store::Redis(_) => std::time::Duration::from_millis(500),
        }
    }
}

/// Wakes one of a route's workers. An enqueue wakes it only while it wants more to
/// take (`wanted`): a worker whose slots are full, or a paused route, is not
/// woken once per delivery (a cross-thread wake-up of its runtime each, ~4 us
/// of CPU per delivery while ingesting with `concurrency = 0`); it takes what
/// was stored when a slot frees or it is resumed. Reloads and dead-letter
/// retries wake it always.
#[derive(Debug, Default)]
pub struct RouteWaker {
    notify: Notify,
    wanted: std::sync::atomic::AtomicBool,
}

impl RouteWaker {
    /// Said by the worker before each take: whether it has room for more.
    /// (Set before the take, so an entry stored after the take's scan always wakes it.)
    pub fn want(&self, yes: bool) {
        self.wanted.store(yes, std::sync::atomic::Ordering::SeqCst);
    }

    pub async fn notified(&self) {
        self.notify.notified().await;
    }

    pub fn wake(&self) {
        self.notify.notify_one();
    }

    /// Wakes the worker if it wanted more; says whether it did.
    fn wake_if_wanted(&self) -> bool {
        let wanted = self.wanted.swap(false, std::sync::atomic::Ordering::SeqCst);
        if wanted {
            self.notify.notify_one();
        }
        wanted
    }
}

/// The notifiers of one route's workers, by worker index.
#[derive(Debug, Default)]
pub struct RouteWakers(Mutex<Vec<Arc<RouteWaker>>>);

impl RouteWakers {
    /// After an enqueue: wakes the first worker that wants more.
    fn wake_one(&self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).iter().any(|w| w.wake_if_wanted());
    }
}

/// The configured queue store and what the workers share. Cheap to clone.
#[derive(Clone)]
pub struct Queue {
    pub store: Store,
    /// Wakes a route's workers when something became due (enqueue, dead-letter
    /// retry): one notifier per worker, in the order of their index.
    wake: Arc<Mutex<HashMap<RouteKey, Arc<RouteWakers>>>>,
    /// The config it was started with (changing it needs a restart).
    pub config: QueueConfig,
    /// The routes by position at start (Redis migrates its legacy keys from them).
    pub legacy: Legacy,
    /// Wakes the workers' supervisor: routes may have come or gone (a reload).
    pub changed: Arc<Notify>,
    /// Paused routes (SPEC §16); with Redis, this process's copy of the store's.
    pub pauses: Arc<pause::Pauses>,
    /// Disk store: where the pauses are kept across restarts; one write at a time.
    pause_file: Option<(pause::PauseFile, Arc<tokio::sync::Mutex<()>>)>,
    /// `rate` limits kept in this process (disk store; Redis keeps them in the store).
    pub rates: Arc<rate::RateLimits>,
    /// Where pauses and lost deliveries are reported (SPEC §17); set once by the app.
    pub alerts: std::sync::OnceLock<Arc<crate::telemetry::alerts::Alerts>>,
}

impl Queue {
    /// Opens the store `config` names; `routes` is the config it starts with
    /// (what keys stored by route position, before identities, belong to).
    pub fn start(config: &QueueConfig, routes: &crate::config::Config) -> Result<Queue, QueueError> {
        let legacy = Legacy::of(routes);
        let pauses = Arc::new(pause::Pauses::default());
        let mut pause_file = None;
        if let QueueStoreConfig::Disk { path, .. } = &config.store {
            let file = pause::PauseFile::in_dir(path);
            for (route, p) in file.read() {
                pauses.pause(&route, p.reason, p.since);
            }
            pause_file = Some((file, Arc::default()));
        }
        let store = match &config.store {
            QueueStoreConfig::Disk { path, fsync } => {
                Store::Disk(disk::DiskQueue::start(path.clone(), *fsync, legacy.clone())?)
            }
            QueueStoreConfig::Redis(r) => {
                Store::Redis(std::sync::Arc::new(redis::RedisQueue::new(r, config.visibility_timeout)?))
            }
        };
        Ok(Queue {
            store,
            wake: Arc::default(),
            config: config.clone(),
            legacy,
            changed: Arc::default(),
            pauses,
            pause_file,
            rates: Arc::default(),
            alerts: std::sync::OnceLock::new(),
        })
    }

    /// The notifier of `route`'s worker number `index`.
    pub fn waker(&self, route: &RouteKey, index: usize) -> Arc<RouteWaker> {
        let wakers = self.wakers(route);
        let mut list = wakers.0.lock().unwrap_or_else(|p| p.into_inner());
        if list.len() <= index {
            list.resize_with(index + 1, Arc::default);
        }
        list[index].clone()
    }

    fn wakers(&self, route: &RouteKey) -> Arc<RouteWakers> {
        let mut wake = self.wake.lock().unwrap_or_else(|p| p.into_inner());
        // Looked up before `entry`, which would copy the key on every enqueue.
        match wake.get(route) {
            Some(w) => w.clone(),
            None => wake.entry(route.clone()).or_default().clone(),
        }
    }

    /// Reports pauses and lost deliveries to `alerts` from now on; what the
    /// disk store found lost when it opened is reported at once.
    pub fn set_alerts(&self, alerts: Arc<crate::telemetry::alerts::Alerts>) {
        match &self.store {
            Store::Redis(r) => r.set_alerts(alerts.clone()),
            Store::Disk(d) => d.set_alerts(alerts.clone()),
        }
        let _ = self.alerts.set(alerts);
    }

    /// Pauses `route` (for every replica with Redis); whether it was not paused.
    pub async fn pause(&self, route: &RouteKey, reason: pause::Reason) -> Result<bool, QueueError> {
        let since = std::time::SystemTime::now();
        if let Store::Redis(r) = &self.store {
            if self.pauses.get(route).is_some() {
                return Ok(false);
            }
            r.pause_write(route, Some(&pause::Pause { since, reason: reason.clone() })).await?;
        }
        let new = self.pauses.pause(route, reason.clone(), since);
        if new {
            self.keep_pauses().await;
            tracing::warn!(source = route.source(), route = %route.identity(), reason = %reason.text(), "queue route paused; deliveries are stored, not attempted");
            if let Some(a) = self.alerts.get() {
                a.paused(route.source(), &route.identity(), &reason.text());
            }
        }
        Ok(new)
    }

    /// Resumes `route`; whether it was paused.
    pub async fn resume(&self, route: &RouteKey) -> Result<bool, QueueError> {
        if let Store::Redis(r) = &self.store {
            r.pause_write(route, None).await?;
        }
        let was = self.pauses.resume(route);
        if was {
            self.keep_pauses().await;
            tracing::info!(source = route.source(), route = %route.identity(), "queue route resumed");
            self.wake_all();
        }
        Ok(was)
    }

    /// Disk store: the pauses as they are now into the pause file. A failed
    /// write is logged; the pause holds in this process either way.
    async fn keep_pauses(&self) {
        let Some((file, lock)) = &self.pause_file else { return };
        let _one = lock.lock().await;
        if let Err(e) = file.write(self.pauses.all()).await {
            tracing::error!(error = %e, "cannot write the queue's pause file; pauses end with this process");
        }
    }

    /// Redis: reads the store's pauses into this process's copy (every replica
    /// does, about once a second, so a pause by one holds for all).
    pub async fn sync_pauses(&self) {
        if let Store::Redis(r) = &self.store
            && let Ok(shared) = r.pauses_read().await
        {
            let before: Vec<RouteKey> = self.pauses.all().into_iter().map(|(k, _)| k).collect();
            self.pauses.replace(shared);
            if before.iter().any(|k| self.pauses.get(k).is_none()) {
                self.wake_all();
            }
        }
    }

    pub fn wake_all(&self) {
        self.changed.notify_one();
        for w in self.wake.lock().unwrap_or_else(|p| p.into_inner()).values() {
            for n in w.0.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                n.wake();
            }
        }
    }

    /// A route's depth and its attempts in flight (disk: this process's;
    /// Redis: every replica's).
    pub async fn depth(&self, route: &RouteKey) -> Result<(Counts, u64), QueueError> {
        match &self.store {
            Store::Disk(d) => Ok(d.counts(route)),
            Store::Redis(r) => r.depth(route).await,
        }
    }

    /// The routes the store holds deliveries of (any state), whatever the config.
    pub async fn stored_routes(&self) -> Result<Vec<RouteKey>, QueueError> {
        match &self.store {
            Store::Disk(d) => Ok(d.stored_routes()),
            Store::Redis(r) => r.stored_routes().await,
        }
    }

    /// The config's queue routes and every route the store holds deliveries of.
    pub async fn known_routes(&self, config: &crate::config::Config) -> Vec<RouteKey> {
        let mut all = routes(config);
        for k in self.stored_routes().await.unwrap_or_default() {
            if !all.contains(&k) {
                all.push(k);
            }
        }
        all
    }

    /// Every delivery of `from` (an orphan) now belongs to `to`; how many.
    pub async fn move_route(&self, from: &RouteKey, to: &RouteKey) -> Result<u64, QueueError> {
        let n = match &self.store {
            Store::Disk(d) => d.move_route(from.clone(), to.clone()).await?,
            Store::Redis(r) => r.move_route(from, &|_| to.clone()).await?,
        };
        self.wake_all();
        Ok(n)
    }

    /// Every delivery of `route` (an orphan) dropped; how many.
    pub async fn purge(&self, route: &RouteKey) -> Result<u64, QueueError> {
        match &self.store {
            Store::Disk(d) => d.purge(route.clone()).await,
            Store::Redis(r) => r.purge(route).await,
        }
    }

    /// Stores `entry` durably; the sender may be acknowledged once this returns `Ok`.
    pub async fn enqueue(&self, route: RouteKey, entry: NewEntry) -> Result<(), QueueError> {
        let wakers = self.wakers(&route);
        self.store.enqueue(route, entry).await?;
        wakers.wake_one();
        Ok(())
    }
}

/// The queue routes of `config`, by identity (SPEC §12).
pub fn routes(config: &crate::config::Config) -> Vec<RouteKey> {
    let mut out = Vec::new();
    for s in &config.sources {
        for r in &s.routes {
            if r.queue().is_some() {
                out.push(RouteKey::new(&s.name, &r.identity));
            }
        }
    }
    out
}

/// The route `key` belongs to in `config`: the source's index and the route's
/// (found by identity; a legacy or orphan key is found nowhere).
pub fn locate(config: &crate::config::Config, key: &RouteKey) -> Option<(usize, usize)> {
    if key.legacy_index().is_some() {
        return None;
    }
    let source = config.sources.iter().position(|s| s.name == key.source())?;
    let identity = key.identity();
    let route = config.sources[source].routes.iter().position(|r| *r.identity == *identity)?;
    Some((source, route))
}

/// The routes of the config a store opens with, by position: what keys
/// written by position (before route identities) belong to.
#[derive(Debug, Clone, Default)]
pub struct Legacy(HashMap<String, Vec<LegacyRoute>>);

/// A route at its position: its identity and what it matches.
type LegacyRoute = (Arc<str>, Vec<crate::route::Pattern>);

impl Legacy {
    pub fn of(config: &crate::config::Config) -> Self {
        let routes =
            |s: &crate::config::Source| s.routes.iter().map(|r| (r.identity.clone(), r.patterns.clone())).collect();
        Legacy(config.sources.iter().map(|s| (s.name.clone(), routes(s))).collect())
    }

    /// Where a legacy `key`'s entry (with `meta`) belongs: the route now at
    /// that position, if it matches the entry's event type (the config did
    /// not change across the upgrade); otherwise the orphan `@<position>`,
    /// never another route. Identity keys stay as they are.
    pub fn target(&self, key: &RouteKey, meta: Option<&Meta>) -> RouteKey {
        let Some(index) = key.legacy_index() else { return key.clone() };
        match self.0.get(key.source()).and_then(|routes| routes.get(index)) {
            Some((identity, patterns)) if meta.is_some_and(|m| patterns.iter().any(|p| p.matches(&m.event_type))) => {
                RouteKey::new(key.source(), identity)
            }
            _ => RouteKey::new(key.source(), &format!("@{index}")),
        }
    }

    /// No config to map positions from.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The positions worth looking for legacy keys at, per source.
    pub fn positions(&self) -> impl Iterator<Item = (&str, usize)> {
        self.0.iter().flat_map(|(s, routes)| (0..routes.len() + 8).map(move |i| (s.as_str(), i)))
    }
}

/// Unix milliseconds of `t`.
pub fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::{RouteWaker, RouteWakers};
    use std::time::Duration;

    async fn woken(w: &RouteWaker) -> bool {
        tokio::time::timeout(Duration::from_millis(50), w.notified()).await.is_ok()
    }

    #[tokio::test]
    async fn an_enqueue_wakes_the_worker_only_while_it_wants_more() {
        let w = RouteWaker::default();
        w.want(false);
        w.wake_if_wanted();
        assert!(!woken(&w).await, "a full or paused worker is not woken by an enqueue");

        w.want(true);
        w.wake_if_wanted();
        assert!(woken(&w).await, "the wake is kept for a worker not yet waiting (no lost wake-up)");
        w.wake_if_wanted();
        assert!(!woken(&w).await, "one wake per want: the next enqueue finds it already woken");

        w.want(false);
        w.wake();
        assert!(woken(&w).await, "reloads and dead-letter retries wake it regardless");
    }

    #[tokio::test]
    async fn an_enqueue_wakes_the_first_of_a_routes_workers_that_wants_more() {
        let ws = RouteWakers::default();
        let list: Vec<std::sync::Arc<RouteWaker>> = (0..3).map(|_| Default::default()).collect();
        ws.0.lock().unwrap().extend(list.iter().cloned());
        list[1].want(true);
        list[2].want(true);
        ws.wake_one();
        assert!(!woken(&list[0]).await, "a full worker is passed over");
        assert!(woken(&list[1]).await);
        assert!(!woken(&list[2]).await, "one enqueue wakes one worker");
        ws.wake_one();
        assert!(woken(&list[2]).await, "the next enqueue wakes the next that wants more");
    }
}
