//! The disk queue: an embedded fjall database (LSM tree + write-ahead journal)
//! owned by one store thread, so nothing blocks the async runtimes.
//!
//! Key spaces:
//! - `entries`: `seq` → the immutable entry ([`NewEntry::encode`]).
//! - `fresh`: `route ‖ received_ms ‖ seq` → empty: never attempted, oldest first.
//! - `retry`: `route ‖ due_ms ‖ seq` → [`State`]: waiting for its next attempt.
//! - `dead`: `seq` → `route ‖ State`: dead letters.
//!
//! Taking an entry for an attempt writes nothing: its schedule key stays
//! until the attempt's outcome is recorded, so a crash mid-attempt leaves it
//! due and it is attempted again after the restart (at-least-once).
//!
//! Group commit: the store thread takes every request waiting in its channel,
//! writes them as one atomic batch (the journal reaches the OS at once, which
//! is what survives SIGKILL) and, with `sync = "always"`, calls `fdatasync`
//! once for the batch before any of those senders is acknowledged.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use tokio::sync::{mpsc, oneshot};

use super::entry::{NewEntry, RouteKey, State};
use super::{Counts, DeadItem, DeadPage, Handle, Legacy, QueueError, Slot, Taken, TakenEntry, Transition};

mod check;
mod offline;
mod order;
mod routes;

pub use offline::{Location, Offline};

/// Requests handled per batch at most (one journal write, one fsync).
const MAX_BATCH: usize = 1024;
/// How often a route's scans start from its first key anyway (see [`Db::take`]).
const CURSOR_RESET: Duration = Duration::from_secs(30);
/// Retry keys looked at for the oldest waiting delivery (see [`Db::oldest_retry_ms`]).
const OLDEST_RETRY_SCAN: usize = 10_000;
/// How long a failed store waits before it tries to open the database again.
const REOPEN_AFTER: Duration = Duration::from_secs(2);

/// What opening the store gives the store thread.
struct Opened {
    db: Db,
    tallies: HashMap<RouteKey, Tally>,
    damage: check::Damage,
    ledger: check::Ledger,
}

/// The app's alerts, shared with the store thread once set.
type AlertSlot = Arc<std::sync::OnceLock<Arc<crate::telemetry::alerts::Alerts>>>;

/// What a `queue_lost` alert says happened.
const LOST_AT_OPEN: &str = "the store's files were damaged outside hookgate (found when it opened)";

/// Deliveries known lost, per route (`None`: route unknown), since start.
type Lost = Arc<Mutex<HashMap<Option<RouteKey>, u64>>>;

/// Counts per route, kept by the store thread as it writes, so one snapshot
/// is always consistent (an entry in flight keeps its schedule key until its
/// outcome is recorded; `taken_*` say how many of them are in flight).
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    fresh: u64,
    /// Waiting behind an earlier delivery of their `order_by` key ([`order`]).
    parked: u64,
    retry: u64,
    dead: u64,
    taken_fresh: u64,
    taken_retry: u64,
}

impl Tally {
    /// An entry taken from `slot` is no longer in flight (handed back unattempted).
    fn untake(&mut self, slot: &Slot) {
        match slot {
            Slot::Fresh(_) | Slot::Parked(_) => self.taken_fresh = self.taken_fresh.saturating_sub(1),
            Slot::Retry(_) => self.taken_retry = self.taken_retry.saturating_sub(1),
        }
    }
}

type Tallies = Arc<Mutex<HashMap<RouteKey, Tally>>>;

/// One request to the store thread.
enum Op {
    /// The route, the entry's receive time (unix ms), its `order_by` key and
    /// its encoding (done by the caller, off the store thread's serial path).
    Enqueue(RouteKey, u64, Option<String>, Vec<u8>, Reply<Result<u64, QueueError>>),
    Take {
        route: RouteKey,
        limit: usize,
        skip: HashSet<u64>,
        now_ms: u64,
        reply: oneshot::Sender<Result<RawTaken, QueueError>>,
    },
    /// An attempt's outcome: the entry's seq, its schedule key and route (the
    /// entry itself stays with the caller, which decoded it and drops it).
    Finish(Finished, Transition, Reply<Result<(), QueueError>>),
    DeadList {
        source: Option<String>,
        limit: usize,
        before: Option<u64>,
        reply: oneshot::Sender<Result<DeadPage, QueueError>>,
    },
    DeadRetry {
        seq: Option<u64>,
        source: Option<String>,
        reply: oneshot::Sender<Result<usize, QueueError>>,
    },
    DeadDelete(u64, oneshot::Sender<Result<Option<Option<crate::queue::Meta>>, QueueError>>),
    Sweep {
        older_than_ms: u64,
        reply: oneshot::Sender<Result<usize, QueueError>>,
    },
    Oldest(RouteKey, oneshot::Sender<Option<u64>>),
    /// A page of a route's waiting deliveries (`GET /queue/waiting`).
    Waiting {
        route: RouteKey,
        limit: usize,
        cursor: Option<String>,
        reply: oneshot::Sender<Result<super::WaitingPage, QueueError>>,
    },
    /// Every entry of one route under another (an orphan handed to a route).
    Move(RouteKey, RouteKey, oneshot::Sender<Result<u64, QueueError>>),
    /// Every entry of one route dropped (an orphan deleted).
    Purge(RouteKey, oneshot::Sender<Result<u64, QueueError>>),
}

/// What a take found, as stored: the store thread only reads; the caller
/// decodes the entries ([`DiskQueue::take`]), so a drain's decoding runs
/// beside the store thread instead of on it.
struct RawTaken {
    entries: Vec<(u64, Slot, State, fjall::Slice)>,
    next_due_ms: Option<u64>,
}

/// A per-delivery request's answer channel, and the hub of the caller's runtime.
///
/// Answering a task on another runtime wakes that runtime (tokio writes its
/// `eventfd` for every such wake), so answering each enqueue of a batch on its
/// own cost one syscall per acknowledgement on the store thread. The answers
/// of a batch go instead as one message per runtime to a small task there
/// ([`hub`]), which hands them out locally: one wake per runtime per batch.
struct Reply<T> {
    tx: oneshot::Sender<T>,
    hub: Option<HubTx>,
}

type HubTx = mpsc::UnboundedSender<Vec<Answer>>;

enum Answer {
    Enqueued(oneshot::Sender<Result<u64, QueueError>>, Result<u64, QueueError>),
    Finished(oneshot::Sender<Result<(), QueueError>>, Result<(), QueueError>),
}

impl Answer {
    fn deliver(self) {
        match self {
            Answer::Enqueued(tx, r) => drop(tx.send(r)),
            Answer::Finished(tx, r) => drop(tx.send(r)),
        }
    }
}

impl From<(oneshot::Sender<Result<u64, QueueError>>, Result<u64, QueueError>)> for Answer {
    fn from((tx, r): (oneshot::Sender<Result<u64, QueueError>>, Result<u64, QueueError>)) -> Self {
        Answer::Enqueued(tx, r)
    }
}

impl From<(oneshot::Sender<Result<(), QueueError>>, Result<(), QueueError>)> for Answer {
    fn from((tx, r): (oneshot::Sender<Result<(), QueueError>>, Result<(), QueueError>)) -> Self {
        Answer::Finished(tx, r)
    }
}

impl<T> Reply<T>
where
    Answer: From<(oneshot::Sender<T>, T)>,
{
    fn new(tx: oneshot::Sender<T>) -> Self {
        Reply { tx, hub: hub() }
    }

    /// Answers at once (errors before anything was written).
    fn now(self, v: T) {
        let _ = self.tx.send(v);
    }

    /// Answers with the rest of the batch ([`Answers::flush`]).
    fn later(self, v: T, answers: &mut Answers) {
        answers.push(self.hub, Answer::from((self.tx, v)));
    }
}

/// The calling thread's hub: a task on its runtime delivering answers sent
/// to it; made on first use, again after that runtime ended. `None` outside
/// a runtime (answers then go directly).
fn hub() -> Option<HubTx> {
    thread_local!(static HUB: std::cell::RefCell<Option<HubTx>> = const { std::cell::RefCell::new(None) });
    HUB.with_borrow_mut(|hub| {
        if hub.as_ref().is_none_or(|h| h.is_closed()) {
            let rt = tokio::runtime::Handle::try_current().ok()?;
            let (tx, mut rx) = mpsc::unbounded_channel::<Vec<Answer>>();
            rt.spawn(async move {
                while let Some(batch) = rx.recv().await {
                    batch.into_iter().for_each(Answer::deliver);
                }
            });
            *hub = Some(tx);
        }
        hub.clone()
    })
}

/// A batch's answers, grouped by hub until [`Answers::flush`].
#[derive(Default)]
struct Answers(Vec<(HubTx, Vec<Answer>)>);

impl Answers {
    fn push(&mut self, hub: Option<HubTx>, a: Answer) {
        let Some(hub) = hub else { return a.deliver() };
        match self.0.iter_mut().find(|(h, _)| h.same_channel(&hub)) {
            Some((_, list)) => list.push(a),
            None => self.0.push((hub, vec![a])),
        }
    }

    fn flush(self) {
        for (hub, list) in self.0 {
            // That runtime is gone: answer directly (nobody may be waiting).
            if let Err(unsent) = hub.send(list) {
                unsent.0.into_iter().for_each(Answer::deliver);
            }
        }
    }
}

/// [`Op::Finish`]'s part of a [`TakenEntry`].
struct Finished {
    seq: u64,
    slot: Slot,
    route: RouteKey,
    /// Its `order_by` key: done or dead, it lets the next of its key go.
    order: Option<String>,
}

/// The handle the rest of the gateway uses. Cheap to clone.
#[derive(Clone)]
pub struct DiskQueue {
    tx: mpsc::UnboundedSender<Op>,
    tallies: Tallies,
    healthy: Arc<std::sync::atomic::AtomicBool>,
    /// Set once the database first opened: until then its counts are not known.
    opened: Arc<std::sync::atomic::AtomicBool>,
    /// Deliveries known lost to storage damage since start.
    lost: Lost,
    alerts: AlertSlot,
}

struct Db {
    db: Database,
    entries: Keyspace,
    fresh: Keyspace,
    retry: Keyspace,
    dead: Keyspace,
    /// Ordering by key ([`order`]).
    heads: Keyspace,
    parked: Keyspace,
    /// The keys with parked entries, in memory ([`order`]).
    groups: order::Groups,
    /// Released heads still in `parked`, per route, oldest release first.
    ready: order::Ready,
    next_seq: u64,
    /// Where the next scan of a route's `retry` (true) or `fresh` (false) keys starts.
    cursors: HashMap<(bool, RouteKey), Vec<u8>>,
    /// When each route's cursors were last dropped for a full scan.
    cursor_reset: HashMap<RouteKey, std::time::Instant>,
}

fn io(e: impl std::fmt::Display) -> QueueError {
    QueueError::Unavailable(e.to_string())
}

fn be(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

fn read_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    let n = b.len().min(8);
    a[..n].copy_from_slice(&b[..n]);
    u64::from_be_bytes(a)
}

fn schedule_key(route: &RouteKey, at_ms: u64, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(route.as_bytes().len() + 16);
    k.extend_from_slice(route.as_bytes());
    k.extend_from_slice(&be(at_ms));
    k.extend_from_slice(&be(seq));
    k
}

/// Past every schedule key of `route` (`route ‖ at_ms ‖ seq`).
fn route_end(route: &RouteKey) -> Vec<u8> {
    let mut end = route.as_bytes().to_vec();
    end.extend_from_slice(&[0xff; 17]);
    end
}

/// `(at_ms, seq)` from the part of a schedule key after the route.
fn schedule_parts(rest: &[u8]) -> Option<(u64, u64)> {
    (rest.len() == 16).then(|| (read_u64(&rest[..8]), read_u64(&rest[8..])))
}

impl Db {
    fn open(path: &Path, legacy: &Legacy) -> Result<Opened, QueueError> {
        std::fs::create_dir_all(path).map_err(|e| io(format!("{}: {e}", path.display())))?;
        let db = Database::builder(path)
            // Bounded memory however deep the backlog: the block cache here,
            // the memtables per key space below.
            .cache_size(16 * 1024 * 1024)
            .worker_threads(1)
            .open()
            .map_err(|e| io(format!("{}: {e}", path.display())))?;
        let ks = |name: &str, memtable: u64| {
            db.keyspace(name, || KeyspaceCreateOptions::default().max_memtable_size(memtable)).map_err(io)
        };
        const MB: u64 = 1024 * 1024;
        let (entries, fresh, retry, dead) =
            (ks("entries", 16 * MB)?, ks("fresh", 4 * MB)?, ks("retry", 4 * MB)?, ks("dead", 4 * MB)?);
        let (heads, parked) = (ks("heads", MB)?, ks("parked", 4 * MB)?);
        let next_seq = match entries.last_key_value() {
            Some(g) => read_u64(&g.key().map_err(io)?) + 1,
            None => 1,
        };
        let mut db = Db {
            db,
            entries,
            fresh,
            retry,
            dead,
            heads,
            parked,
            groups: Default::default(),
            ready: Default::default(),
            next_seq,
            cursors: HashMap::new(),
            cursor_reset: HashMap::new(),
        };
        let (ledger, previous) = check::Ledger::open(path)?;
        let damage = db.check(path, previous)?;
        db.migrate(legacy)?;
        let mut tallies: HashMap<RouteKey, Tally> = HashMap::new();
        for (route, n) in db.parked_counts()? {
            let t = tallies.entry(route.clone()).or_default();
            db.count_parked_into(&route, n, t);
        }
        for (space, which) in [(&db.fresh, 0), (&db.retry, 1)] {
            for g in space.iter() {
                let k = g.key().map_err(io)?;
                if let Some((route, _)) = RouteKey::split(&k) {
                    let t = tallies.entry(route).or_default();
                    if which == 0 { t.fresh += 1 } else { t.retry += 1 }
                }
            }
        }
        for g in db.dead.iter() {
            let v = g.value().map_err(io)?;
            if let Some((route, _)) = RouteKey::split(&v) {
                tallies.entry(route).or_default().dead += 1;
            }
        }
        db.cursors.clear();
        db.cursor_reset.clear();
        Ok(Opened { db, tallies, damage, ledger })
    }

    /// Due entries of `route`, retries first, at most `limit`, none of `skip`.
    ///
    /// Scans start at a per-route cursor rather than at the route's first key:
    /// an LSM tree keeps a deleted key as a tombstone until compaction, so a
    /// drained backlog would otherwise be walked again on every take. New keys
    /// land after the cursor (`fresh` by arrival, `retry` by due time, both
    /// from now on); when the tallies say there are more entries than the scan
    /// saw (a revived dead letter, a clock that stepped back), the next scan
    /// starts from the beginning again.
    fn take(
        &mut self,
        route: &RouteKey,
        limit: usize,
        skip: &HashSet<u64>,
        now_ms: u64,
        tally: Tally,
    ) -> Result<RawTaken, QueueError> {
        let mut out = Vec::new();
        let mut next_due_ms = None;
        // A full scan now and then catches whatever a cursor could have passed.
        let fresh_start = self.cursor_reset.get(route).is_none_or(|t| t.elapsed() >= CURSOR_RESET);
        if fresh_start {
            self.cursors.remove(&(true, route.clone()));
            self.cursors.remove(&(false, route.clone()));
            self.cursor_reset.insert(route.clone(), std::time::Instant::now());
        }
        let end = route_end(route);
        let start = self.scan_start(true, route);
        let mut first_live = None;
        for g in self.retry.range(start..end.clone()) {
            let (k, v) = g.into_inner().map_err(io)?;
            let Some((_, rest)) = RouteKey::split(&k) else { continue };
            let Some((due, seq)) = schedule_parts(rest) else { continue };
            if due > now_ms {
                next_due_ms = Some(due);
                break;
            }
            first_live.get_or_insert_with(|| k.to_vec());
            if out.len() >= limit {
                break;
            }
            if skip.contains(&seq) {
                continue;
            }
            if let Some(e) = self.load(seq, Slot::Retry(k.to_vec()), State::decode(&v))? {
                out.push(e);
            }
        }
        if let Some(k) = first_live {
            self.cursors.insert((true, route.clone()), k);
        }

        self.take_ready(route, limit, skip, &mut out)?;
        if out.len() < limit {
            let cursor = self.cursors.get(&(false, route.clone())).cloned();
            let from = cursor.clone().unwrap_or_else(|| route.as_bytes().to_vec());
            let seen = self.scan_fresh(route, from, &end, limit, skip, &mut out)?;
            // The scan reached the end yet saw fewer entries than are stored:
            // some are behind the cursor (a revived dead letter). Look again from the start.
            // (Released heads count as fresh but stay in `parked`.)
            if cursor.is_some() && out.len() < limit && seen < tally.fresh.saturating_sub(self.ready_len(route)) {
                self.cursors.remove(&(false, route.clone()));
                let mut skip = skip.clone();
                skip.extend(out.iter().map(|e| e.0));
                self.scan_fresh(route, route.as_bytes().to_vec(), &end, limit, &skip, &mut out)?;
            }
        }
        Ok(RawTaken { entries: out, next_due_ms })
    }

    /// Never-attempted entries from `from`, into `out` up to `limit`; how many
    /// stored entries the scan went over. Moves the route's cursor.
    fn scan_fresh(
        &mut self,
        route: &RouteKey,
        from: Vec<u8>,
        end: &[u8],
        limit: usize,
        skip: &HashSet<u64>,
        out: &mut Vec<(u64, Slot, State, fjall::Slice)>,
    ) -> Result<u64, QueueError> {
        let mut seen = 0;
        let mut first_live = None;
        for g in self.fresh.range(from..end.to_vec()) {
            let k = g.key().map_err(io)?;
            let Some((_, rest)) = RouteKey::split(&k) else { continue };
            let Some((_, seq)) = schedule_parts(rest) else { continue };
            seen += 1;
            first_live.get_or_insert_with(|| k.to_vec());
            if skip.contains(&seq) {
                continue;
            }
            if let Some(e) = self.load(seq, Slot::Fresh(k.to_vec()), State::default())? {
                out.push(e);
            }
            if out.len() >= limit {
                break;
            }
        }
        if let Some(k) = first_live {
            self.cursors.insert((false, route.clone()), k);
        }
        Ok(seen)
    }

    /// Where a scan of `route`'s `retry` (true) or `fresh` keys starts: its
    /// cursor, else the route's first key.
    fn scan_start(&self, retry: bool, route: &RouteKey) -> Vec<u8> {
        self.cursors.get(&(retry, route.clone())).cloned().unwrap_or_else(|| route.as_bytes().to_vec())
    }

    /// See [`DiskQueue::waiting`].
    fn waiting(&self, route: &RouteKey, limit: usize, cursor: Option<&str>) -> Result<super::WaitingPage, QueueError> {
        let bad = || QueueError::BadInput("unknown cursor");
        let (mut retry, mut after) = match cursor {
            None => (false, None),
            Some(c) => {
                let (phase, key) = c.split_at_checked(1).ok_or_else(bad)?;
                let key = hex::decode(key).map_err(|_| bad())?;
                if !key.starts_with(route.as_bytes()) {
                    return Err(bad());
                }
                (phase == "r", Some(key))
            }
        };
        let mut page = super::WaitingPage::default();
        loop {
            let space = if retry { &self.retry } else { &self.fresh };
            let from = match &after {
                Some(k) => std::ops::Bound::Excluded(k.clone()),
                None => std::ops::Bound::Included(self.scan_start(retry, route)),
            };
            for g in space.range((from, std::ops::Bound::Excluded(route_end(route)))) {
                let (k, v) = g.into_inner().map_err(io)?;
                let Some((_, rest)) = RouteKey::split(&k) else { continue };
                let Some((at, seq)) = schedule_parts(rest) else { continue };
                if page.items.len() == limit {
                    page.next = after.as_ref().map(|k| format!("{}{}", if retry { 'r' } else { 'f' }, hex::encode(k)));
                    return Ok(page);
                }
                after = Some(k.to_vec());
                let Some(bytes) = self.entries.get(be(seq)).map_err(io)? else { continue };
                let Ok(meta) = NewEntry::decode_meta(&bytes) else { continue };
                let (state, next) = if retry { (State::decode(&v), Some(at)) } else { (State::default(), None) };
                page.items.push(super::WaitingItem {
                    entry: seq.to_string(),
                    route: route.clone(),
                    meta,
                    state,
                    next_attempt_ms: next,
                });
            }
            if retry {
                return Ok(page);
            }
            (retry, after) = (true, None);
        }
    }

    /// When the oldest delivery of `route` that waits for a retry arrived.
    /// Retry keys sort by due time, so this looks at the first
    /// [`OLDEST_RETRY_SCAN`] of them (from the scan cursor): exact unless more
    /// wait, then the oldest among those.
    fn oldest_retry_ms(&self, route: &RouteKey) -> Option<u64> {
        let min_seq = self
            .retry
            .range(self.scan_start(true, route)..route_end(route))
            .take(OLDEST_RETRY_SCAN)
            .filter_map(|g| g.key().ok())
            .filter_map(|k| RouteKey::split(&k).and_then(|(_, rest)| schedule_parts(rest)).map(|(_, seq)| seq))
            .min()?;
        let bytes = self.entries.get(be(min_seq)).ok()??;
        NewEntry::decode_meta(&bytes).ok().map(|m| m.received_ms)
    }

    /// The stored entry `seq` names, as bytes; a schedule key naming no entry is dropped.
    fn load(&self, seq: u64, slot: Slot, state: State) -> Result<Option<(u64, Slot, State, fjall::Slice)>, QueueError> {
        let Some(bytes) = self.entries.get(be(seq)).map_err(io)? else {
            tracing::error!(
                seq,
                "the queue store is damaged: a stored delivery's entry is missing (lost); dropping its place"
            );
            let (space, key) = match &slot {
                Slot::Fresh(k) => (&self.fresh, k.clone()),
                Slot::Retry(k) => (&self.retry, k.clone()),
                Slot::Parked(k) => (&self.parked, k.clone()),
            };
            space.remove(key).map_err(io)?;
            return Ok(None);
        };
        Ok(Some((seq, slot, state, bytes)))
    }
}

impl DiskQueue {
    /// Starts the store thread. A database that cannot be opened now (an
    /// unwritable directory) is not fatal: the queue answers
    /// [`QueueError::Unavailable`] (503 to senders, `/readyz` 503) and tries again.
    pub fn start(path: PathBuf, fsync: bool, legacy: Legacy) -> Result<DiskQueue, QueueError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let tallies: Tallies = Arc::default();
        let healthy = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let opened = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let lost: Lost = Arc::default();
        let alerts = AlertSlot::default();
        let store = StoreThread {
            path,
            fsync,
            ledger: None,
            lost: lost.clone(),
            alerts: alerts.clone(),
            legacy,
            db: None,
            failed_at: None,
            tallies: tallies.clone(),
            healthy: healthy.clone(),
            opened: opened.clone(),
        };
        std::thread::Builder::new().name("hookgate-queue".into()).spawn(move || store.run(rx)).map_err(io)?;
        Ok(DiskQueue { tx, tallies, healthy, opened, lost, alerts })
    }

    /// Reports deliveries found lost to `alerts`: those found already, and
    /// those a later open finds (an alert of the same route twice within its
    /// `alert_every` is sent once).
    pub fn set_alerts(&self, alerts: Arc<crate::telemetry::alerts::Alerts>) {
        let _ = self.alerts.set(alerts.clone());
        for (route, n) in self.lost() {
            let (source, identity) = route.as_ref().map(|r| (r.source(), r.identity())).unzip();
            alerts.queue_lost(source, identity.as_deref(), Some(n), LOST_AT_OPEN);
        }
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Op) -> Result<T, QueueError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).map_err(|_| QueueError::Closed)?;
        rx.await.map_err(|_| QueueError::Closed)
    }

    /// Stores `entry`; its sequence number.
    pub async fn enqueue(&self, route: RouteKey, entry: NewEntry) -> Result<u64, QueueError> {
        let (received_ms, bytes) = (entry.meta.received_ms, entry.encode());
        let order = entry.meta.order_key;
        self.ask(|r| Op::Enqueue(route, received_ms, order, bytes, Reply::new(r))).await?
    }

    pub async fn take(
        &self,
        route: RouteKey,
        limit: usize,
        skip: HashSet<u64>,
        now_ms: u64,
    ) -> Result<Taken, QueueError> {
        let raw = self.ask(|reply| Op::Take { route: route.clone(), limit, skip, now_ms, reply }).await??;
        let mut entries = Vec::with_capacity(raw.entries.len());
        for (seq, slot, state, bytes) in raw.entries {
            match NewEntry::decode(bytes::Bytes::copy_from_slice(&bytes)) {
                Ok(entry) => entries.push(TakenEntry { handle: Handle::Disk { seq, slot }, state, entry }),
                Err(e) => {
                    // Not handed out: no longer counted as taken; it stays stored.
                    tracing::error!(seq, error = %e, "damaged queue entry; leaving it stored");
                    let mut tallies = self.tallies.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(c) = tallies.get_mut(&route) {
                        c.untake(&slot);
                    }
                }
            }
        }
        Ok(Taken { entries, next_due_ms: raw.next_due_ms })
    }

    /// Entries taken that will not be attempted (their route went away, the
    /// process is stopping): no longer counted as taken. They stay stored
    /// as they are, takeable again.
    pub fn untake(&self, entries: &[TakenEntry]) {
        let mut tallies = self.tallies.lock().unwrap_or_else(|p| p.into_inner());
        for e in entries {
            let Handle::Disk { slot, .. } = &e.handle else { continue };
            let (Slot::Fresh(k) | Slot::Retry(k) | Slot::Parked(k)) = slot;
            if let Some(c) = RouteKey::split(k).and_then(|(route, _)| tallies.get_mut(&route)) {
                c.untake(slot);
            }
        }
    }

    pub async fn finish(&self, taken: TakenEntry, t: Transition) -> Result<(), QueueError> {
        let Handle::Disk { seq, slot } = taken.handle else {
            return Err(QueueError::BadInput("not a disk queue entry"));
        };
        // The route the entry is stored under (its schedule key's prefix), not
        // the one it was enqueued for: moved orphans and migrated keys differ.
        let key = match &slot {
            Slot::Fresh(k) | Slot::Retry(k) | Slot::Parked(k) => k,
        };
        let route = RouteKey::split(key).ok_or(QueueError::BadInput("damaged schedule key"))?.0;
        let order = taken.entry.meta.order_key;
        // The entry (headers, body) is dropped here, not on the store thread.
        drop(taken.entry.headers);
        drop(taken.entry.body);
        self.ask(|r| Op::Finish(Finished { seq, slot, route, order }, t, Reply::new(r))).await?
    }

    pub async fn dead_list(
        &self,
        source: Option<String>,
        limit: usize,
        before: Option<u64>,
    ) -> Result<DeadPage, QueueError> {
        self.ask(|reply| Op::DeadList { source, limit, before, reply }).await?
    }

    pub async fn dead_retry(&self, seq: Option<u64>, source: Option<String>) -> Result<usize, QueueError> {
        self.ask(|reply| Op::DeadRetry { seq, source, reply }).await?
    }

    /// Drops a dead letter; `None` when there was none, else its meta (when readable).
    pub async fn dead_delete(&self, seq: u64) -> Result<Option<Option<crate::queue::Meta>>, QueueError> {
        self.ask(|r| Op::DeadDelete(seq, r)).await?
    }

    pub async fn sweep(&self, older_than_ms: u64) -> Result<usize, QueueError> {
        self.ask(|reply| Op::Sweep { older_than_ms, reply }).await?
    }

    /// Every entry of `from` now belongs to `to`; how many moved.
    pub async fn move_route(&self, from: RouteKey, to: RouteKey) -> Result<u64, QueueError> {
        self.ask(|r| Op::Move(from, to, r)).await?
    }

    /// A page of `route`'s waiting deliveries; `cursor` is `f<hex key>` or
    /// `r<hex key>` (after that key of `fresh` or `retry`).
    pub async fn waiting(
        &self,
        route: RouteKey,
        limit: usize,
        cursor: Option<String>,
    ) -> Result<super::WaitingPage, QueueError> {
        self.ask(|reply| Op::Waiting { route, limit, cursor, reply }).await?
    }

    /// Every entry of `route` dropped; how many.
    pub async fn purge(&self, route: RouteKey) -> Result<u64, QueueError> {
        self.ask(|r| Op::Purge(route, r)).await?
    }

    /// The routes the store holds entries of (dead letters included).
    pub fn stored_routes(&self) -> Vec<RouteKey> {
        let tallies = self.tallies.lock().unwrap_or_else(|p| p.into_inner());
        tallies.iter().filter(|(_, t)| t.fresh + t.parked + t.retry + t.dead > 0).map(|(k, _)| k.clone()).collect()
    }

    pub async fn oldest_fresh_ms(&self, route: RouteKey) -> Option<u64> {
        self.ask(|r| Op::Oldest(route, r)).await.ok().flatten()
    }

    /// The route's depth and its attempts in flight (taken, outcome not yet recorded).
    pub fn counts(&self, route: &RouteKey) -> (Counts, u64) {
        let t = self.tallies.lock().unwrap_or_else(|p| p.into_inner()).get(route).copied().unwrap_or_default();
        let counts = Counts {
            pending: t.fresh.saturating_sub(t.taken_fresh) + t.parked,
            scheduled: t.retry.saturating_sub(t.taken_retry),
            dead: t.dead,
        };
        (counts, t.taken_fresh + t.taken_retry)
    }

    /// Deliveries known lost to storage damage since start, per route
    /// (`None`: the route is not known).
    pub fn lost(&self) -> Vec<(Option<RouteKey>, u64)> {
        self.lost.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(k, n)| (k.clone(), *n)).collect()
    }

    /// The database has opened (its counts are known).
    pub fn opened(&self) -> bool {
        self.opened.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The last write succeeded (or nothing failed since the database opened).
    pub fn writable(&self) -> bool {
        self.healthy.load(std::sync::atomic::Ordering::Relaxed)
    }
}

struct StoreThread {
    path: PathBuf,
    fsync: bool,
    /// Beside the store: what it should hold ([`check`]).
    ledger: Option<check::Ledger>,
    lost: Lost,
    /// Where losses found at open are reported (set by the app).
    alerts: AlertSlot,
    /// The routes by position when the store opened (keys written by position are migrated).
    legacy: Legacy,
    db: Option<Db>,
    failed_at: Option<std::time::Instant>,
    tallies: Tallies,
    healthy: Arc<std::sync::atomic::AtomicBool>,
    opened: Arc<std::sync::atomic::AtomicBool>,
}

impl StoreThread {
    fn run(mut self, mut rx: mpsc::UnboundedReceiver<Op>) {
        self.reopen();
        let mut ops = Vec::with_capacity(MAX_BATCH);
        while let Some(op) = rx.blocking_recv() {
            ops.push(op);
            while ops.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(op) => ops.push(op),
                    Err(_) => break,
                }
            }
            if self.db.is_none() && self.failed_at.is_none_or(|t| t.elapsed() >= REOPEN_AFTER) {
                self.reopen();
            }
            self.handle(&mut ops);
        }
        if let Some(db) = &self.db {
            let _ = db.db.persist(PersistMode::SyncAll);
        }
    }

    fn reopen(&mut self) {
        // Drop the old handles first: the database holds a lock file.
        self.db = None;
        match Db::open(&self.path, &self.legacy) {
            Ok(Opened { db, tallies, damage, ledger }) => {
                if self.failed_at.is_some() {
                    tracing::info!(path = %self.path.display(), "queue store open again");
                }
                let mut lost = self.lost.lock().unwrap_or_else(|p| p.into_inner());
                for (route, n) in damage.lost {
                    if let Some(a) = self.alerts.get() {
                        let (source, identity) = route.as_ref().map(|r| (r.source(), r.identity())).unzip();
                        a.queue_lost(source, identity.as_deref(), Some(n), LOST_AT_OPEN);
                    }
                    *lost.entry(route).or_default() += n;
                }
                drop(lost);
                self.ledger = Some(ledger);
                *self.tallies.lock().unwrap_or_else(|p| p.into_inner()) = tallies;
                self.db = Some(db);
                self.failed_at = None;
                self.healthy.store(true, std::sync::atomic::Ordering::Relaxed);
                self.opened.store(true, std::sync::atomic::Ordering::Release);
            }
            Err(e) => self.failed(&e),
        }
    }

    fn failed(&mut self, e: &QueueError) {
        if self.healthy.swap(false, std::sync::atomic::Ordering::Relaxed) || self.failed_at.is_none() {
            tracing::error!(error = %e, path = %self.path.display(), "queue store cannot be written; answering 503 until it can");
        }
        self.db = None;
        self.failed_at = Some(std::time::Instant::now());
    }

    fn tally(&self, route: &RouteKey, f: impl FnOnce(&mut Tally)) {
        let mut t = self.tallies.lock().unwrap_or_else(|p| p.into_inner());
        f(t.entry(route.clone()).or_default());
    }

    fn handle(&mut self, ops: &mut Vec<Op>) {
        // Enqueues as one batch with one sync, outcomes as one batch (no sync:
        // losing one to a power cut means a repeat delivery, which
        // at-least-once allows), the rest one by one.
        let (enqueues, rest): (Vec<Op>, Vec<Op>) = ops.drain(..).partition(|o| matches!(o, Op::Enqueue(..)));
        let (finishes, others): (Vec<Op>, Vec<Op>) = rest.into_iter().partition(|o| matches!(o, Op::Finish(..)));
        let mut answers = Answers::default();
        if !enqueues.is_empty() {
            self.enqueue_batch(enqueues, &mut answers);
        }
        if !finishes.is_empty() {
            self.finish_batch(finishes, &mut answers);
        }
        answers.flush();
        for op in others {
            self.other(op);
        }
        self.record_ledger();
    }

    /// The ledger says what the store holds now ([`check`]).
    fn record_ledger(&mut self) {
        let (Some(db), Some(ledger)) = (self.db.as_ref(), self.ledger.as_mut()) else { return };
        let stored = self
            .tallies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|t| t.fresh + t.parked + t.retry + t.dead)
            .sum();
        ledger.record(db.next_seq, stored);
    }

    fn finish_batch(&mut self, ops: Vec<Op>, answers: &mut Answers) {
        let Some(db) = self.db.as_ref() else {
            for op in ops {
                if let Op::Finish(_, _, reply) = op {
                    reply.now(Err(QueueError::Unavailable("queue store is not open".into())));
                }
            }
            return;
        };
        let mut batch = db.db.batch();
        let mut done = Vec::with_capacity(ops.len());
        let mut released = Vec::new();
        for op in ops {
            let Op::Finish(Finished { seq, slot, route, order }, t, reply) = op else { continue };
            match &slot {
                Slot::Fresh(k) => batch.remove(&db.fresh, k.clone()),
                Slot::Retry(k) => batch.remove(&db.retry, k.clone()),
                Slot::Parked(k) => {
                    db.unready(&route, k);
                    batch.remove(&db.parked, k.clone());
                    // A released head now waits for a retry: `heads` names it,
                    // so an open finds it the key's head ([`order`]).
                    if let (Some(key), Transition::Retry { .. }) = (order.as_deref(), &t) {
                        batch.insert(&db.heads, order::group(&route, key), be(seq));
                    }
                }
            }
            if let Some(key) = order.as_deref().filter(|_| !matches!(t, Transition::Retry { .. })) {
                match db.release(&mut batch, &route, key, seq) {
                    Ok(true) => released.push(route.clone()),
                    Ok(false) => {}
                    Err(e) => tracing::error!(error = %e, "cannot read the queue's ordering state"),
                }
            }
            match &t {
                Transition::Done => batch.remove(&db.entries, be(seq)),
                Transition::Retry { due_ms, state } => {
                    batch.insert(&db.retry, schedule_key(&route, *due_ms, seq), state.encode());
                }
                Transition::Dead { state } => {
                    let mut v = route.as_bytes().to_vec();
                    v.extend_from_slice(&state.encode());
                    batch.insert(&db.dead, be(seq), v);
                }
            }
            done.push((route, slot, t, reply));
        }
        match batch.commit().map_err(io) {
            Ok(()) => {
                for route in released {
                    self.tally(&route, |c| {
                        c.parked = c.parked.saturating_sub(1);
                        c.fresh += 1;
                    });
                }
                for (route, slot, t, reply) in done {
                    self.tally(&route, |c| {
                        match slot {
                            Slot::Fresh(_) | Slot::Parked(_) => {
                                c.fresh = c.fresh.saturating_sub(1);
                                c.taken_fresh = c.taken_fresh.saturating_sub(1);
                            }
                            Slot::Retry(_) => {
                                c.retry = c.retry.saturating_sub(1);
                                c.taken_retry = c.taken_retry.saturating_sub(1);
                            }
                        }
                        match t {
                            Transition::Done => {}
                            Transition::Retry { .. } => c.retry += 1,
                            Transition::Dead { .. } => c.dead += 1,
                        }
                    });
                    reply.later(Ok(()), answers);
                }
            }
            Err(e) => {
                for (_, _, _, reply) in done {
                    reply.later(Err(e.clone()), answers);
                }
                self.failed(&e);
            }
        }
    }

    fn enqueue_batch(&mut self, ops: Vec<Op>, answers: &mut Answers) {
        let Some(db) = self.db.as_mut() else {
            for op in ops {
                if let Op::Enqueue(_, _, _, _, reply) = op {
                    reply.now(Err(QueueError::Unavailable("queue store is not open".into())));
                }
            }
            return;
        };
        let mut batch = db.db.batch();
        let mut done = Vec::with_capacity(ops.len());
        let mut heads = order::NewHeads::default();
        let mut failed = None;
        for op in ops {
            let Op::Enqueue(route, received_ms, order, bytes, reply) = op else { continue };
            let seq = db.next_seq;
            db.next_seq += 1;
            batch.insert(&db.entries, be(seq), bytes);
            let parked = match order.as_deref().map(|key| db.admit(&mut batch, &mut heads, &route, key, seq)) {
                Some(Ok(parked)) => parked,
                Some(Err(e)) => {
                    failed = Some(e);
                    false
                }
                None => false,
            };
            if !parked {
                batch.insert(&db.fresh, schedule_key(&route, received_ms, seq), Vec::<u8>::new());
            }
            done.push((route, seq, parked, reply));
        }
        let mut result = match failed {
            Some(e) => Err(e),
            None => batch.commit().map_err(io),
        };
        if result.is_ok() && self.fsync {
            result = db.db.persist(PersistMode::SyncData).map_err(io);
        }
        match result {
            Ok(()) => {
                for (route, seq, parked, reply) in done {
                    self.tally(&route, |t| if parked { t.parked += 1 } else { t.fresh += 1 });
                    reply.later(Ok(seq), answers);
                }
            }
            Err(e) => {
                for (_, _, _, reply) in done {
                    reply.later(Err(e.clone()), answers);
                }
                self.failed(&e);
            }
        }
    }

    fn other(&mut self, op: Op) {
        let unavailable = || QueueError::Unavailable("queue store is not open".into());
        match op {
            Op::Take { route, limit, skip, now_ms, reply } => {
                let tally =
                    self.tallies.lock().unwrap_or_else(|p| p.into_inner()).get(&route).copied().unwrap_or_default();
                let r = self
                    .db
                    .as_mut()
                    .ok_or_else(unavailable)
                    .and_then(|db| db.take(&route, limit, &skip, now_ms, tally));
                if let Ok(t) = &r {
                    let retries = t.entries.iter().filter(|e| matches!(e.1, Slot::Retry(_))).count();
                    let fresh = (t.entries.len() - retries) as u64;
                    self.tally(&route, |c| {
                        c.taken_fresh += fresh;
                        c.taken_retry += retries as u64;
                    });
                }
                let _ = reply.send(r);
            }
            Op::Enqueue(..) | Op::Finish(..) => {}
            Op::DeadList { source, limit, before, reply } => {
                let r = self
                    .db
                    .as_ref()
                    .ok_or_else(unavailable)
                    .and_then(|db| dead_list(db, source.as_deref(), limit, before));
                let _ = reply.send(r);
            }
            Op::DeadRetry { seq, source, reply } => {
                let r = self.dead_retry(seq, source.as_deref());
                let _ = reply.send(r);
            }
            Op::DeadDelete(seq, reply) => {
                let r = self.dead_delete(seq);
                let _ = reply.send(r);
            }
            Op::Sweep { older_than_ms, reply } => {
                let r = self.sweep(older_than_ms);
                let _ = reply.send(r);
            }
            Op::Waiting { route, limit, cursor, reply } => {
                let r = self
                    .db
                    .as_ref()
                    .ok_or_else(unavailable)
                    .and_then(|db| db.waiting(&route, limit, cursor.as_deref()));
                let _ = reply.send(r);
            }
            Op::Move(from, to, reply) => {
                let r = self.move_route(&from, &to);
                let _ = reply.send(r);
            }
            Op::Purge(route, reply) => {
                let r = self.db.as_ref().ok_or_else(unavailable).and_then(|db| db.purge(&route));
                if r.is_ok() {
                    self.tally(&route, |t| {
                        *t = Tally { taken_fresh: t.taken_fresh, taken_retry: t.taken_retry, ..Tally::default() }
                    });
                }
                let _ = reply.send(r);
            }
            Op::Oldest(route, reply) => {
                // From the route's scan cursor when there is one: keys before it
                // are deleted ones (tombstones until compaction) that a drain
                // leaves behind, and walking them on every `GET /queue` made
                // polling it during a drain cost the store thread more than
                // the drain (a revived dead letter moves the cursor back to it).
                let first = self
                    .db
                    .as_ref()
                    .and_then(|db| db.fresh.range(db.scan_start(false, &route)..route_end(&route)).next());
                let at = first.and_then(|g| g.key().ok()).and_then(|k| {
                    let (_, rest) = RouteKey::split(&k)?;
                    schedule_parts(rest).map(|(at, _)| at)
                });
                // Waiting for a retry counts too (SPEC §12): the oldest of those
                // is the lowest sequence number (given out in arrival order).
                let retry = self.db.as_ref().and_then(|db| db.oldest_retry_ms(&route));
                let _ = reply.send(match (at, retry) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                });
            }
        }
    }

    fn move_route(&mut self, from: &RouteKey, to: &RouteKey) -> Result<u64, QueueError> {
        let db = self.db.as_mut().ok_or_else(|| QueueError::Unavailable("queue store is not open".into()))?;
        let moved = db.rekey(&|r, _| (r == from).then(|| to.clone()))?;
        // The moved keys sort elsewhere: the target's scans start over.
        for retry in [true, false] {
            db.cursors.remove(&(retry, to.clone()));
        }
        let counted = [(from, db.count(from)?), (to, db.count(to)?)];
        for (route, c) in counted {
            self.tally(route, |t| *t = Tally { taken_fresh: t.taken_fresh, taken_retry: t.taken_retry, ..c });
        }
        Ok(moved.iter().map(|m| m.2).sum())
    }

    /// Dead letters back to `fresh`, attempts reset. `seq`: that one; else
    /// every one (of `source`, when given).
    fn dead_retry(&mut self, seq: Option<u64>, source: Option<&str>) -> Result<usize, QueueError> {
        let db = self.db.as_ref().ok_or_else(|| QueueError::Unavailable("queue store is not open".into()))?;
        let picked = dead_pick(db, seq, source)?;
        // `admit` parks entries in memory as it goes: if anything fails from
        // here on, the store is opened again, which builds that state from
        // what was written.
        let revived = || -> Result<_, QueueError> {
            let mut batch = db.db.batch();
            let mut moved = Vec::new();
            let mut parked = Vec::new();
            let mut heads = order::NewHeads::default();
            for (seq, route) in picked {
                let (received_ms, order) = match db.entries.get(be(seq)).map_err(io)? {
                    Some(bytes) => {
                        NewEntry::decode_meta(&bytes).map(|m| (m.received_ms, m.order_key)).unwrap_or((0, None))
                    }
                    None => {
                        batch.remove(&db.dead, be(seq));
                        continue;
                    }
                };
                batch.remove(&db.dead, be(seq));
                // An ordered one waits behind its key's head again, in arrival order.
                if let Some(key) = order
                    && db.admit(&mut batch, &mut heads, &route, &key, seq)?
                {
                    parked.push(route);
                    continue;
                }
                let key = schedule_key(&route, received_ms, seq);
                batch.insert(&db.fresh, key.clone(), Vec::<u8>::new());
                moved.push((route, key));
            }
            batch.commit().map_err(io)?;
            Ok((moved, parked))
        };
        let (moved, parked) = match revived() {
            Ok(r) => r,
            Err(e) => {
                self.failed(&e);
                return Err(e);
            }
        };
        let n = moved.len() + parked.len();
        for route in parked {
            self.tally(&route, |t| {
                t.dead = t.dead.saturating_sub(1);
                t.parked += 1;
            });
        }
        if let Some(db) = self.db.as_mut() {
            // A revived entry keeps its place by arrival, usually behind the
            // route's scan cursor: move the cursor back to it, so the next
            // take and the oldest-pending figure see it at once.
            for (route, key) in &moved {
                if let Some(cursor) = db.cursors.get_mut(&(false, route.clone()))
                    && key < cursor
                {
                    cursor.clone_from(key);
                }
            }
        }
        for (route, _) in moved {
            self.tally(&route, |t| {
                t.dead = t.dead.saturating_sub(1);
                t.fresh += 1;
            });
        }
        Ok(n)
    }

    fn dead_delete(&mut self, seq: u64) -> Result<Option<Option<crate::queue::Meta>>, QueueError> {
        let db = self.db.as_ref().ok_or_else(|| QueueError::Unavailable("queue store is not open".into()))?;
        let picked = dead_pick(db, Some(seq), None)?;
        let Some((_, route)) = picked.into_iter().next() else { return Ok(None) };
        let meta = db.entries.get(be(seq)).ok().flatten().and_then(|v| NewEntry::decode_meta(&v).ok());
        let mut batch = db.db.batch();
        batch.remove(&db.dead, be(seq));
        batch.remove(&db.entries, be(seq));
        batch.commit().map_err(io)?;
        self.tally(&route, |t| t.dead = t.dead.saturating_sub(1));
        Ok(Some(meta))
    }

    /// Drops dead letters that died before `older_than_ms`.
    fn sweep(&mut self, older_than_ms: u64) -> Result<usize, QueueError> {
        let db = self.db.as_ref().ok_or_else(|| QueueError::Unavailable("queue store is not open".into()))?;
        let mut gone = Vec::new();
        for g in db.dead.iter() {
            let (k, v) = g.into_inner().map_err(io)?;
            let Some((route, rest)) = RouteKey::split(&v) else { continue };
            if State::decode(rest).dead_ms.unwrap_or(0) < older_than_ms {
                gone.push((read_u64(&k), route));
            }
        }
        let mut batch = db.db.batch();
        for (seq, _) in &gone {
            batch.remove(&db.dead, be(*seq));
            batch.remove(&db.entries, be(*seq));
        }
        batch.commit().map_err(io)?;
        for (_, route) in &gone {
            self.tally(route, |t| t.dead = t.dead.saturating_sub(1));
        }
        Ok(gone.len())
    }
}

/// `(seq, route)` of the dead letters a retry or delete names.
fn dead_pick(db: &Db, seq: Option<u64>, source: Option<&str>) -> Result<Vec<(u64, RouteKey)>, QueueError> {
    if let Some(seq) = seq {
        let found = db.dead.get(be(seq)).map_err(io)?;
        return Ok(found.and_then(|v| RouteKey::split(&v).map(|(r, _)| (seq, r))).into_iter().collect());
    }
    let mut out = Vec::new();
    for g in db.dead.iter() {
        let (k, v) = g.into_inner().map_err(io)?;
        if let Some((route, _)) = RouteKey::split(&v)
            && source.is_none_or(|s| s == route.source())
        {
            out.push((read_u64(&k), route));
        }
    }
    Ok(out)
}

/// Newest first (highest `seq`), below `before` when given.
fn dead_list(db: &Db, source: Option<&str>, limit: usize, before: Option<u64>) -> Result<DeadPage, QueueError> {
    let upper = before.unwrap_or(u64::MAX);
    let mut items = Vec::new();
    let mut next = None;
    for g in db.dead.range(be(0)..be(upper)).rev() {
        let (k, v) = g.into_inner().map_err(io)?;
        let Some((route, rest)) = RouteKey::split(&v) else { continue };
        if source.is_some_and(|s| s != route.source()) {
            continue;
        }
        let seq = read_u64(&k);
        if items.len() == limit {
            next = items.last().map(|i: &DeadItem| i.entry.clone());
            break;
        }
        let meta = match db.entries.get(be(seq)).map_err(io)? {
            Some(bytes) => NewEntry::decode_meta(&bytes).ok(),
            None => None,
        };
        let Some(meta) = meta else { continue };
        items.push(DeadItem { entry: seq.to_string(), route, meta, state: State::decode(rest) });
    }
    Ok(DeadPage { items, next })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::Meta;

    fn entry(id: &str, received_ms: u64) -> NewEntry {
        NewEntry {
            meta: Meta {
                source: "s".into(),
                route: 0,
                id: id.into(),
                event_type: String::new(),
                query: None,
                received_ms,
                log: None,
                replay: false,
                order_key: None,
            },
            headers: http::HeaderMap::new(),
            body: bytes::Bytes::from_static(b"{}"),
        }
    }

    fn ids(t: &Taken) -> Vec<String> {
        t.entries.iter().map(|e| e.entry.meta.id.clone()).collect()
    }

    /// Answers reach callers through their runtime's hub, one message per
    /// runtime per batch; a thread whose runtime ended gets a new hub with the
    /// next runtime, and answers for a hub that is gone are sent directly.
    #[test]
    fn answers_go_through_a_hub_per_runtime_and_survive_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let q = DiskQueue::start(dir.path().to_owned(), true, Legacy::default()).unwrap();
        let route = RouteKey::new("s", "r");
        let rt = || tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let first = rt();
        let seqs = first.block_on(async {
            let many = (0..20).map(|i| q.enqueue(route.clone(), entry(&format!("a{i}"), 1)));
            futures_util::future::join_all(many).await
        });
        assert!(seqs.iter().all(Result::is_ok), "{seqs:?}");
        let stale = hub().expect("a hub outlives its runtime only as a closed channel");
        drop(first);
        assert!(stale.is_closed(), "the hub's task ended with its runtime");
        assert!(hub().is_none(), "outside a runtime there is no hub");

        let second = rt();
        let seq = second.block_on(q.enqueue(route.clone(), entry("b", 2))).unwrap();
        assert!(seq > 20);
        // An answer for the dead hub is delivered directly.
        let (tx, rx) = oneshot::channel();
        let mut answers = Answers::default();
        Reply { tx, hub: Some(stale) }.later(Ok::<u64, QueueError>(7), &mut answers);
        answers.flush();
        assert_eq!(second.block_on(rx).unwrap().unwrap(), 7);
        let taken = second.block_on(q.take(route, 100, HashSet::new(), 10)).unwrap();
        assert_eq!(taken.entries.len(), 21, "every acknowledged enqueue was stored");
    }

    /// The oldest pending entry's arrival, also once a take has moved the
    /// scan cursor and entries before it were finished (their tombstones are skipped).
    #[tokio::test]
    async fn oldest_pending_follows_the_drain() {
        let dir = tempfile::tempdir().unwrap();
        let q = DiskQueue::start(dir.path().to_owned(), false, Legacy::default()).unwrap();
        let route = RouteKey::new("s", "r");
        assert_eq!(q.oldest_fresh_ms(route.clone()).await, None);
        for (id, at) in [("a", 10), ("b", 20), ("c", 30)] {
            q.enqueue(route.clone(), entry(id, at)).await.unwrap();
        }
        assert_eq!(q.oldest_fresh_ms(route.clone()).await, Some(10));
        let taken = q.take(route.clone(), 2, HashSet::new(), 100).await.unwrap();
        assert_eq!(ids(&taken), ["a", "b"]);
        assert_eq!(q.oldest_fresh_ms(route.clone()).await, Some(10), "taken, not yet finished: still pending");
        for t in taken.entries {
            q.finish(t, Transition::Done).await.unwrap();
        }
        assert_eq!(q.oldest_fresh_ms(route.clone()).await, Some(30));
        q.enqueue(route.clone(), entry("d", 40)).await.unwrap();
        assert_eq!(q.oldest_fresh_ms(route.clone()).await, Some(30));
    }

    /// A dead letter revived behind the scan cursor is still found.
    #[tokio::test]
    async fn entries_behind_the_cursor_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let q = DiskQueue::start(dir.path().to_owned(), false, Legacy::default()).unwrap();
        let route = RouteKey::new("s", "r");
        let a = q.enqueue(route.clone(), entry("a", 1000)).await.unwrap();
        let b = q.enqueue(route.clone(), entry("b", 2000)).await.unwrap();
        let t = q.take(route.clone(), 1, HashSet::new(), 5000).await.unwrap();
        assert_eq!(ids(&t), ["a"]);
        let taken_a = t.entries.into_iter().next().unwrap();
        let dead = State { attempts: 1, last_status: Some(400), last_error: None, dead_ms: Some(5000) };
        q.finish(taken_a, Transition::Dead { state: dead }).await.unwrap();
        // The cursor moves on to b.
        let t = q.take(route.clone(), 1, HashSet::new(), 5000).await.unwrap();
        assert_eq!(ids(&t), ["b"]);
        assert_eq!(q.counts(&route), (Counts { pending: 0, scheduled: 0, dead: 1 }, 1), "b is in flight");
        assert_eq!(q.dead_retry(Some(a), None).await.unwrap(), 1);
        assert_eq!(
            q.oldest_fresh_ms(route.clone()).await,
            Some(1000),
            "the revived entry is the oldest pending at once"
        );
        // With b in flight, a (older than the cursor) must still be handed out.
        let t = q.take(route.clone(), 1, HashSet::from([b]), 5000).await.unwrap();
        assert_eq!(ids(&t), ["a"]);
        assert_eq!(t.entries[0].state.attempts, 0, "attempts reset");
    }

    /// Retries come back when due, not before, and a drained backlog is not rescanned.
    #[tokio::test]
    async fn retries_wait_for_their_time() {
        let dir = tempfile::tempdir().unwrap();
        let q = DiskQueue::start(dir.path().to_owned(), true, Legacy::default()).unwrap();
        let route = RouteKey::new("s", "r");
        for i in 0..50 {
            q.enqueue(route.clone(), entry(&format!("e{i}"), 1000 + i)).await.unwrap();
        }
        for _ in 0..49 {
            let t = q.take(route.clone(), 1, HashSet::new(), 5000).await.unwrap();
            q.finish(t.entries.into_iter().next().unwrap(), Transition::Done).await.unwrap();
        }
        let t = q.take(route.clone(), 8, HashSet::new(), 5000).await.unwrap();
        assert_eq!(ids(&t), ["e49"]);
        let state = State { attempts: 1, last_status: Some(503), last_error: None, dead_ms: None };
        q.finish(t.entries.into_iter().next().unwrap(), Transition::Retry { due_ms: 9000, state }).await.unwrap();
        let t = q.take(route.clone(), 8, HashSet::new(), 8999).await.unwrap();
        assert!(t.entries.is_empty());
        assert_eq!(t.next_due_ms, Some(9000));
        let t = q.take(route.clone(), 8, HashSet::new(), 9000).await.unwrap();
        assert_eq!(ids(&t), ["e49"]);
        assert_eq!(t.entries[0].state.attempts, 1);
        assert_eq!(q.counts(&route), (Counts { pending: 0, scheduled: 0, dead: 0 }, 1), "e49 is taken again");
    }

    /// `order_by` on disk: only a key's head is taken; done, retried, dead
    /// and revived, its key's entries go one at a time in the order received.
    #[tokio::test]
    async fn ordered_entries_go_one_at_a_time_per_key() {
        let dir = tempfile::tempdir().unwrap();
        let q = DiskQueue::start(dir.path().to_owned(), true, Legacy::default()).unwrap();
        let route = RouteKey::new("s", "r");
        let (ka, kb) = ("a".repeat(32), "b".repeat(32));
        let keyed = |id: &str, at: u64, key: &str| {
            let mut e = entry(id, at);
            e.meta.order_key = Some(key.to_owned());
            e
        };
        let mut seqs = HashMap::new();
        for (i, (id, key)) in [("a1", &ka), ("a2", &ka), ("b1", &kb), ("a3", &ka)].into_iter().enumerate() {
            seqs.insert(id, q.enqueue(route.clone(), keyed(id, 1000 + i as u64, key)).await.unwrap());
        }
        let take = async || q.take(route.clone(), 8, HashSet::new(), 5000).await.unwrap();
        let t = take().await;
        assert_eq!(ids(&t), ["a1", "b1"], "the heads only");
        assert_eq!(q.counts(&route).0.pending, 2, "a2 and a3 wait, counted as pending");
        let mut it = t.entries.into_iter();
        q.finish(it.next().unwrap(), Transition::Done).await.unwrap();
        q.finish(it.next().unwrap(), Transition::Done).await.unwrap();
        let t = take().await;
        assert_eq!(ids(&t), ["a2"]);
        let state = State { attempts: 1, last_status: Some(503), last_error: None, dead_ms: None };
        let retry = Transition::Retry { due_ms: 9000, state: state.clone() };
        q.finish(t.entries.into_iter().next().unwrap(), retry).await.unwrap();
        assert!(take().await.entries.is_empty(), "a3 waits for a2's retry");
        let t = q.take(route.clone(), 8, HashSet::new(), 9000).await.unwrap();
        assert_eq!(ids(&t), ["a2"]);
        let dead = Transition::Dead { state: State { dead_ms: Some(9000), ..state } };
        q.finish(t.entries.into_iter().next().unwrap(), dead).await.unwrap();
        let t = take().await;
        assert_eq!(ids(&t), ["a3"], "a dead letter lets the next go");
        // a2 revived while a3 is the head: it waits behind it.
        assert_eq!(q.dead_retry(Some(seqs["a2"]), None).await.unwrap(), 1);
        assert!(q.take(route.clone(), 8, HashSet::from([seqs["a3"]]), 9000).await.unwrap().entries.is_empty());
        q.finish(t.entries.into_iter().next().unwrap(), Transition::Done).await.unwrap();
        assert_eq!(ids(&take().await), ["a2"]);
    }

    /// A released head is taken from its parked key (a release writes
    /// nothing); a reopen finds each key's head again: a released one left in
    /// flight is takeable, a released one waiting for a retry still holds its
    /// key, and what was parked behind them still waits, in order.
    #[tokio::test]
    async fn released_heads_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let route = RouteKey::new("s", "r");
        let (ka, kb) = ("a".repeat(32), "b".repeat(32));
        let keyed = |id: &str, at: u64, key: &str| {
            let mut e = entry(id, at);
            e.meta.order_key = Some(key.to_owned());
            e
        };
        let q = DiskQueue::start(dir.path().to_owned(), true, Legacy::default()).unwrap();
        for (i, (id, key)) in [("a1", &ka), ("b1", &kb), ("a2", &ka), ("b2", &kb), ("a3", &ka)].into_iter().enumerate()
        {
            q.enqueue(route.clone(), keyed(id, 1000 + i as u64, key)).await.unwrap();
        }
        let t = q.take(route.clone(), 8, HashSet::new(), 5000).await.unwrap();
        assert_eq!(ids(&t), ["a1", "b1"]);
        for e in t.entries {
            q.finish(e, Transition::Done).await.unwrap();
        }
        let t = q.take(route.clone(), 8, HashSet::new(), 5000).await.unwrap();
        assert_eq!(ids(&t), ["a2", "b2"], "released heads, taken from parked");
        assert!(t.entries.iter().all(|e| matches!(&e.handle, Handle::Disk { slot: Slot::Parked(_), .. })));
        assert_eq!(q.counts(&route).0.pending, 1, "a3 waits");
        let mut it = t.entries.into_iter();
        let state = State { attempts: 1, last_status: Some(503), last_error: None, dead_ms: None };
        q.finish(it.next().unwrap(), Transition::Retry { due_ms: 9000, state }).await.unwrap();
        // b2 stays in flight: the process ends before its outcome is recorded.
        drop(it);
        drop(q);

        let q = DiskQueue::start(dir.path().to_owned(), true, Legacy::default()).unwrap();
        let mut opened = false;
        for _ in 0..300 {
            if q.opened() {
                opened = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(opened, "the store opens again");
        let (c, _) = q.counts(&route);
        assert_eq!((c.pending, c.scheduled), (2, 1), "b2 again and a3 waiting, a2's retry");
        let t = q.take(route.clone(), 8, HashSet::new(), 5000).await.unwrap();
        assert_eq!(ids(&t), ["b2"], "a2 holds its key while it waits for its retry");
        q.finish(t.entries.into_iter().next().unwrap(), Transition::Done).await.unwrap();
        assert!(q.take(route.clone(), 8, HashSet::new(), 5000).await.unwrap().entries.is_empty());
        for want in ["a2", "a3"] {
            let t = q.take(route.clone(), 8, HashSet::new(), 9000).await.unwrap();
            assert_eq!(ids(&t), [want]);
            q.finish(t.entries.into_iter().next().unwrap(), Transition::Done).await.unwrap();
        }
        assert!(q.take(route.clone(), 8, HashSet::new(), 9000).await.unwrap().entries.is_empty());
        let (c, taken) = q.counts(&route);
        assert_eq!((c.pending, c.scheduled, c.dead, taken), (0, 0, 0, 0));
    }
}
