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
use super::{Counts, DeadItem, DeadPage, Handle, QueueError, Slot, Taken, TakenEntry, Transition};

/// Requests handled per batch at most (one journal write, one fsync).
const MAX_BATCH: usize = 1024;
/// How long a failed store waits before it tries to open the database again.
const REOPEN_AFTER: Duration = Duration::from_secs(2);

/// Counts per route, kept by the store thread as it writes.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    fresh: u64,
    retry: u64,
    dead: u64,
}

type Tallies = Arc<Mutex<HashMap<RouteKey, Tally>>>;

/// One request to the store thread.
enum Op {
    Enqueue(RouteKey, NewEntry, oneshot::Sender<Result<u64, QueueError>>),
    Take {
        route: RouteKey,
        limit: usize,
        skip: HashSet<u64>,
        now_ms: u64,
        reply: oneshot::Sender<Result<Taken, QueueError>>,
    },
    Finish(TakenEntry, Transition, oneshot::Sender<Result<(), QueueError>>),
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
    DeadDelete(u64, oneshot::Sender<Result<bool, QueueError>>),
    Sweep {
        older_than_ms: u64,
        reply: oneshot::Sender<Result<usize, QueueError>>,
    },
    Oldest(RouteKey, oneshot::Sender<Option<u64>>),
}

/// The handle the rest of the gateway uses. Cheap to clone.
#[derive(Clone)]
pub struct DiskQueue {
    tx: mpsc::UnboundedSender<Op>,
    tallies: Tallies,
    healthy: Arc<std::sync::atomic::AtomicBool>,
}

struct Db {
    db: Database,
    entries: Keyspace,
    fresh: Keyspace,
    retry: Keyspace,
    dead: Keyspace,
    next_seq: u64,
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

/// `(at_ms, seq)` from the part of a schedule key after the route.
fn schedule_parts(rest: &[u8]) -> Option<(u64, u64)> {
    (rest.len() == 16).then(|| (read_u64(&rest[..8]), read_u64(&rest[8..])))
}

impl Db {
    fn open(path: &Path) -> Result<(Db, HashMap<RouteKey, Tally>), QueueError> {
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
        let next_seq = match entries.last_key_value() {
            Some(g) => read_u64(&g.key().map_err(io)?) + 1,
            None => 1,
        };
        let mut tallies: HashMap<RouteKey, Tally> = HashMap::new();
        for (space, which) in [(&fresh, 0), (&retry, 1)] {
            for g in space.iter() {
                let k = g.key().map_err(io)?;
                if let Some((route, _)) = RouteKey::split(&k) {
                    let t = tallies.entry(route).or_default();
                    if which == 0 { t.fresh += 1 } else { t.retry += 1 }
                }
            }
        }
        for g in dead.iter() {
            let v = g.value().map_err(io)?;
            if let Some((route, _)) = RouteKey::split(&v) {
                tallies.entry(route).or_default().dead += 1;
            }
        }
        Ok((Db { db, entries, fresh, retry, dead, next_seq }, tallies))
    }

    fn take(&self, route: &RouteKey, limit: usize, skip: &HashSet<u64>, now_ms: u64) -> Result<Taken, QueueError> {
        let mut out = Vec::new();
        let mut next_due_ms = None;
        // Retries whose time has come first, then never-attempted ones, oldest first.
        for g in self.retry.prefix(route.as_bytes()) {
            let (k, v) = g.into_inner().map_err(io)?;
            let Some((_, rest)) = RouteKey::split(&k) else { continue };
            let Some((due, seq)) = schedule_parts(rest) else { continue };
            if due > now_ms {
                next_due_ms = Some(due);
                break;
            }
            if skip.contains(&seq) || out.len() >= limit {
                continue;
            }
            if let Some(e) = self.load(seq, Slot::Retry(k.to_vec()), State::decode(&v))? {
                out.push(e);
            }
        }
        if out.len() < limit {
            for g in self.fresh.prefix(route.as_bytes()) {
                let k = g.key().map_err(io)?;
                let Some((_, rest)) = RouteKey::split(&k) else { continue };
                let Some((_, seq)) = schedule_parts(rest) else { continue };
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
        }
        Ok(Taken { entries: out, next_due_ms })
    }

    fn load(&self, seq: u64, slot: Slot, state: State) -> Result<Option<TakenEntry>, QueueError> {
        let Some(bytes) = self.entries.get(be(seq)).map_err(io)? else {
            tracing::warn!(seq, "queue schedule names a missing entry; dropping the schedule key");
            let (space, key) = match &slot {
                Slot::Fresh(k) => (&self.fresh, k.clone()),
                Slot::Retry(k) => (&self.retry, k.clone()),
            };
            space.remove(key).map_err(io)?;
            return Ok(None);
        };
        match NewEntry::decode(&bytes) {
            Ok(entry) => Ok(Some(TakenEntry { handle: Handle::Disk { seq, slot }, state, entry })),
            Err(e) => {
                tracing::error!(seq, error = %e, "damaged queue entry; leaving it stored");
                Ok(None)
            }
        }
    }
}

impl DiskQueue {
    /// Starts the store thread. A database that cannot be opened now (an
    /// unwritable directory) is not fatal: the queue answers
    /// [`QueueError::Unavailable`] (503 to senders, `/readyz` 503) and tries again.
    pub fn start(path: PathBuf, fsync: bool) -> Result<DiskQueue, QueueError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let tallies: Tallies = Arc::default();
        let healthy = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let store =
            StoreThread { path, fsync, db: None, failed_at: None, tallies: tallies.clone(), healthy: healthy.clone() };
        std::thread::Builder::new().name("hookgate-queue".into()).spawn(move || store.run(rx)).map_err(io)?;
        Ok(DiskQueue { tx, tallies, healthy })
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Op) -> Result<T, QueueError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).map_err(|_| QueueError::Closed)?;
        rx.await.map_err(|_| QueueError::Closed)
    }

    /// Stores `entry`; its sequence number.
    pub async fn enqueue(&self, route: RouteKey, entry: NewEntry) -> Result<u64, QueueError> {
        self.ask(|r| Op::Enqueue(route, entry, r)).await?
    }

    pub async fn take(
        &self,
        route: RouteKey,
        limit: usize,
        skip: HashSet<u64>,
        now_ms: u64,
    ) -> Result<Taken, QueueError> {
        self.ask(|reply| Op::Take { route, limit, skip, now_ms, reply }).await?
    }

    pub async fn finish(&self, taken: TakenEntry, t: Transition) -> Result<(), QueueError> {
        self.ask(|r| Op::Finish(taken, t, r)).await?
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

    pub async fn dead_delete(&self, seq: u64) -> Result<bool, QueueError> {
        self.ask(|r| Op::DeadDelete(seq, r)).await?
    }

    pub async fn sweep(&self, older_than_ms: u64) -> Result<usize, QueueError> {
        self.ask(|reply| Op::Sweep { older_than_ms, reply }).await?
    }

    pub async fn oldest_fresh_ms(&self, route: RouteKey) -> Option<u64> {
        self.ask(|r| Op::Oldest(route, r)).await.ok().flatten()
    }

    pub fn counts(&self, route: &RouteKey) -> Counts {
        let t = self.tallies.lock().unwrap_or_else(|p| p.into_inner()).get(route).copied().unwrap_or_default();
        Counts { pending: t.fresh, scheduled: t.retry, dead: t.dead }
    }

    /// The last write succeeded (or nothing failed since the database opened).
    pub fn writable(&self) -> bool {
        self.healthy.load(std::sync::atomic::Ordering::Relaxed)
    }
}

struct StoreThread {
    path: PathBuf,
    fsync: bool,
    db: Option<Db>,
    failed_at: Option<std::time::Instant>,
    tallies: Tallies,
    healthy: Arc<std::sync::atomic::AtomicBool>,
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
        match Db::open(&self.path) {
            Ok((db, tallies)) => {
                if self.failed_at.is_some() {
                    tracing::info!(path = %self.path.display(), "queue store open again");
                }
                *self.tallies.lock().unwrap_or_else(|p| p.into_inner()) = tallies;
                self.db = Some(db);
                self.failed_at = None;
                self.healthy.store(true, std::sync::atomic::Ordering::Relaxed);
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
        // Enqueues first, as one batch with one sync; the rest one by one.
        let (enqueues, others): (Vec<Op>, Vec<Op>) = ops.drain(..).partition(|o| matches!(o, Op::Enqueue(..)));
        if !enqueues.is_empty() {
            self.enqueue_batch(enqueues);
        }
        for op in others {
            self.other(op);
        }
    }

    fn enqueue_batch(&mut self, ops: Vec<Op>) {
        let Some(db) = self.db.as_mut() else {
            for op in ops {
                if let Op::Enqueue(_, _, reply) = op {
                    let _ = reply.send(Err(QueueError::Unavailable("queue store is not open".into())));
                }
            }
            return;
        };
        let mut batch = db.db.batch();
        let mut done = Vec::with_capacity(ops.len());
        for op in ops {
            let Op::Enqueue(route, entry, reply) = op else { continue };
            let seq = db.next_seq;
            db.next_seq += 1;
            batch.insert(&db.entries, be(seq), entry.encode());
            batch.insert(&db.fresh, schedule_key(&route, entry.meta.received_ms, seq), Vec::<u8>::new());
            done.push((route, seq, reply));
        }
        let mut result = batch.commit().map_err(io);
        if result.is_ok() && self.fsync {
            result = db.db.persist(PersistMode::SyncData).map_err(io);
        }
        match result {
            Ok(()) => {
                for (route, seq, reply) in done {
                    self.tally(&route, |t| t.fresh += 1);
                    let _ = reply.send(Ok(seq));
                }
            }
            Err(e) => {
                for (_, _, reply) in done {
                    let _ = reply.send(Err(e.clone()));
                }
                self.failed(&e);
            }
        }
    }

    fn other(&mut self, op: Op) {
        let unavailable = || QueueError::Unavailable("queue store is not open".into());
        match op {
            Op::Enqueue(..) => {}
            Op::Take { route, limit, skip, now_ms, reply } => {
                let r = self.db.as_ref().ok_or_else(unavailable).and_then(|db| db.take(&route, limit, &skip, now_ms));
                let _ = reply.send(r);
            }
            Op::Finish(taken, t, reply) => {
                let r = self.finish(taken, t);
                if let Err(e) = &r {
                    self.failed(e);
                }
                let _ = reply.send(r);
            }
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
            Op::Oldest(route, reply) => {
                let first = self.db.as_ref().and_then(|db| db.fresh.prefix(route.as_bytes()).next());
                let at = first.and_then(|g| g.key().ok()).and_then(|k| {
                    let (_, rest) = RouteKey::split(&k)?;
                    schedule_parts(rest).map(|(at, _)| at)
                });
                let _ = reply.send(at);
            }
        }
    }

    fn finish(&mut self, taken: TakenEntry, t: Transition) -> Result<(), QueueError> {
        let db = self.db.as_ref().ok_or_else(|| QueueError::Unavailable("queue store is not open".into()))?;
        let Handle::Disk { seq, slot } = taken.handle else {
            return Err(QueueError::BadInput("not a disk queue entry"));
        };
        let route = RouteKey::new(&taken.entry.meta.source, taken.entry.meta.route);
        let mut batch = db.db.batch();
        match &slot {
            Slot::Fresh(k) => batch.remove(&db.fresh, k.clone()),
            Slot::Retry(k) => batch.remove(&db.retry, k.clone()),
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
        batch.commit().map_err(io)?;
        self.tally(&route, |c| {
            match slot {
                Slot::Fresh(_) => c.fresh = c.fresh.saturating_sub(1),
                Slot::Retry(_) => c.retry = c.retry.saturating_sub(1),
            }
            match t {
                Transition::Done => {}
                Transition::Retry { .. } => c.retry += 1,
                Transition::Dead { .. } => c.dead += 1,
            }
        });
        Ok(())
    }

    /// Dead letters back to `fresh`, attempts reset. `seq`: that one; else
    /// every one (of `source`, when given).
    fn dead_retry(&mut self, seq: Option<u64>, source: Option<&str>) -> Result<usize, QueueError> {
        let db = self.db.as_ref().ok_or_else(|| QueueError::Unavailable("queue store is not open".into()))?;
        let picked = dead_pick(db, seq, source)?;
        let mut batch = db.db.batch();
        let mut moved = Vec::new();
        for (seq, route) in picked {
            let received_ms = match db.entries.get(be(seq)).map_err(io)? {
                Some(bytes) => NewEntry::decode_meta(&bytes).map(|m| m.received_ms).unwrap_or(0),
                None => {
                    batch.remove(&db.dead, be(seq));
                    continue;
                }
            };
            batch.remove(&db.dead, be(seq));
            batch.insert(&db.fresh, schedule_key(&route, received_ms, seq), Vec::<u8>::new());
            moved.push(route);
        }
        batch.commit().map_err(io)?;
        let n = moved.len();
        for route in moved {
            self.tally(&route, |t| {
                t.dead = t.dead.saturating_sub(1);
                t.fresh += 1;
            });
        }
        Ok(n)
    }

    fn dead_delete(&mut self, seq: u64) -> Result<bool, QueueError> {
        let db = self.db.as_ref().ok_or_else(|| QueueError::Unavailable("queue store is not open".into()))?;
        let picked = dead_pick(db, Some(seq), None)?;
        let Some((_, route)) = picked.into_iter().next() else { return Ok(false) };
        let mut batch = db.db.batch();
        batch.remove(&db.dead, be(seq));
        batch.remove(&db.entries, be(seq));
        batch.commit().map_err(io)?;
        self.tally(&route, |t| t.dead = t.dead.saturating_sub(1));
        Ok(true)
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
        items.push(DeadItem { entry: seq.to_string(), meta, state: State::decode(rest) });
    }
    Ok(DeadPage { items, next })
}
