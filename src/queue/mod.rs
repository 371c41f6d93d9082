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
//! - [`worker`]: the per-route delivery loops and graceful stop.

pub mod disk;
pub mod entry;
pub mod policy;
pub mod worker;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

pub use entry::{Meta, NewEntry, RouteKey, State};
pub use policy::{QueueRoute, RetryPolicy, Verdict};

use crate::config::{QueueConfig, QueueStoreConfig};

/// The queue store could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    #[error("queue store unavailable: {0}")]
    Unavailable(String),
    #[error("queue store stopped")]
    Closed,
}

/// Where a taken entry's schedule key is, so its outcome can replace it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Slot {
    Fresh(Vec<u8>),
    Retry(Vec<u8>),
}

/// One entry handed to a worker for an attempt.
#[derive(Debug, Clone)]
pub struct TakenEntry {
    pub seq: u64,
    pub slot: Slot,
    pub state: State,
    pub entry: NewEntry,
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

/// Attempts in flight by where their entry was taken from.
#[derive(Debug, Default, Clone, Copy)]
struct InFlight {
    fresh: u64,
    retry: u64,
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
    pub entry: u64,
    pub meta: Meta,
    pub state: State,
}

#[derive(Debug, Default)]
pub struct DeadPage {
    pub items: Vec<DeadItem>,
    /// Cursor for the next page.
    pub next: Option<u64>,
}

/// The configured queue store and what the workers share. Cheap to clone.
#[derive(Clone)]
pub struct Queue {
    pub store: disk::DiskQueue,
    /// Wakes a route's worker when something became due (enqueue, dead-letter retry).
    wake: Arc<Mutex<HashMap<RouteKey, Arc<Notify>>>>,
    /// Attempts in flight per route, in this process.
    in_flight: Arc<Mutex<HashMap<RouteKey, InFlight>>>,
    /// The config it was started with (changing it needs a restart).
    pub config: QueueConfig,
}

impl Queue {
    pub fn start(config: &QueueConfig) -> Result<Queue, QueueError> {
        let store = match &config.store {
            QueueStoreConfig::Disk { path, fsync } => disk::DiskQueue::start(path.clone(), *fsync)?,
            QueueStoreConfig::Redis(_) => {
                return Err(QueueError::Unavailable("the Redis queue store is not available in this version".into()));
            }
        };
        Ok(Queue { store, wake: Arc::default(), in_flight: Arc::default(), config: config.clone() })
    }

    /// The notifier of `route`'s worker.
    pub fn waker(&self, route: &RouteKey) -> Arc<Notify> {
        self.wake.lock().unwrap_or_else(|p| p.into_inner()).entry(route.clone()).or_default().clone()
    }

    pub fn wake_all(&self) {
        for n in self.wake.lock().unwrap_or_else(|p| p.into_inner()).values() {
            n.notify_one();
        }
    }

    /// A route's depth: stored counts less what is in flight (an entry in
    /// flight keeps its schedule key until its outcome is recorded).
    pub fn depth(&self, route: &RouteKey) -> (Counts, u64) {
        let f = self.in_flight.lock().unwrap_or_else(|p| p.into_inner()).get(route).copied().unwrap_or_default();
        let c = self.store.counts(route);
        let counts = Counts {
            pending: c.pending.saturating_sub(f.fresh),
            scheduled: c.scheduled.saturating_sub(f.retry),
            dead: c.dead,
        };
        (counts, f.fresh + f.retry)
    }

    fn set_in_flight(&self, route: &RouteKey, n: InFlight) {
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner()).insert(route.clone(), n);
    }

    /// Stores `entry` durably; the sender may be acknowledged once this returns `Ok`.
    pub async fn enqueue(&self, route: RouteKey, entry: NewEntry) -> Result<u64, QueueError> {
        let waker = self.waker(&route);
        let seq = self.store.enqueue(route, entry).await?;
        waker.notify_one();
        Ok(seq)
    }
}

/// Unix milliseconds of `t`.
pub fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
