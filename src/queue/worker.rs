//! The delivery loops: a queue route's worker takes due entries (at most
//! the route's `concurrency` in flight), attempts each with the same
//! forwarding code a sync route uses, and records the outcome. On Redis a
//! route has one worker per webhook worker thread, each with its share of
//! `concurrency`; on disk, one.
//!
//! A worker sleeps until something is due: an enqueue or a dead-letter retry
//! wakes it, a finished attempt frees a slot (and, if it scheduled a retry,
//! makes the worker take again), and otherwise it waits for the
//! earliest scheduled retry (at most the store's idle check: 5 s on disk,
//! 0.5 s on Redis, where other replicas enqueue without waking it). However
//! deep the backlog, a route holds at most `concurrency` entries at the app,
//! half as many again taken ahead (only while attempts are quick), and twice
//! as many whose outcome is being written.
//!
//! On shutdown a worker takes nothing new; attempts in flight get
//! `shutdown_grace` to finish, and whatever is left stays stored.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderName, HeaderValue};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::{Queue, QueueError, RouteKey, State, TakenEntry, Transition, unix_ms};
use crate::app::{App, Loaded};
use crate::forward;
use crate::metrics::QueueRouteMetrics;
use crate::route::Route;
use crate::route::policy::{Verdict, parse_retry_after, unit_random};
use crate::telemetry::otel;

pub const X_ATTEMPT: HeaderName = HeaderName::from_static("x-hookgate-attempt");

/// How long a worker waits after its store first failed before it tries again.
const FIRST_ERROR_WAIT: Duration = Duration::from_millis(100);
/// The longest a worker waits after its store failed before it tries again.
const MAX_ERROR_WAIT: Duration = Duration::from_secs(5);
/// Attempts quicker than this on average: the worker takes entries ahead.
const QUICK_ATTEMPT: Duration = Duration::from_millis(50);
/// How often a replica reads the pauses shared through Redis.
const PAUSE_SYNC: Duration = Duration::from_secs(1);
/// How often new queue routes (after a reload) and expired dead letters are looked for.
const HOUSEKEEPING: Duration = Duration::from_secs(5);

/// Runs every queue route's workers until `stop` turns true, then drains.
/// `runtimes` are the webhook worker threads' (each with its own upstream
/// connection pool), so a backlog drains on every core: on Redis a route has
/// a worker on each of them; on disk its one worker stays on this task and
/// hands its attempts to them in turn. With no runtimes given, everything
/// runs on the caller's.
pub async fn run(app: Arc<App>, queue: Queue, mut stop: watch::Receiver<bool>, runtimes: Vec<tokio::runtime::Handle>) {
    let runtimes: Arc<[tokio::runtime::Handle]> = runtimes.into();
    let mut workers: JoinSet<RouteKey> = JoinSet::new();
    // Routes with workers, and how many of them are still running.
    let mut running: HashMap<RouteKey, usize> = HashMap::new();
    let mut last_sweep: Option<Instant> = None;
    let mut orphans_seen: HashSet<RouteKey> = HashSet::new();
    // Redis: streams written by route position move to identities once (disk: at open).
    let mut migrated = !matches!(queue.store, super::Store::Redis(_));
    // Redis: every replica reads the shared pauses about once a second (SPEC §16).
    let pause_sync = matches!(queue.store, super::Store::Redis(_)).then(|| {
        let (queue, mut stop) = (queue.clone(), stop.clone());
        tokio::spawn(async move {
            while !*stop.borrow() {
                queue.sync_pauses().await;
                tokio::select! {
                    _ = tokio::time::sleep(PAUSE_SYNC) => {}
                    _ = stop.changed() => {}
                }
            }
        })
    });
    loop {
        if *stop.borrow() {
            break;
        }
        if !migrated && let super::Store::Redis(r) = &queue.store {
            match r.migrate(&queue.legacy).await {
                Ok(()) => migrated = true,
                Err(e) => tracing::warn!(error = %e, "cannot look for queued deliveries stored by route position yet"),
            }
        }
        let loaded = app.current();
        // Every queue route, and every route that stopped being one while it
        // still has deliveries stored (it drains, SPEC §12).
        let mut wanted = super::routes(&loaded.config);
        let stored = queue.stored_routes().await.unwrap_or_default();
        let mut orphans = Vec::new();
        for key in stored {
            match super::locate(&loaded.config, &key) {
                // Dead letters alone need no worker.
                Some(_) if !drained(&queue, &key).await => wanted.push(key),
                Some(_) => {}
                None => orphans.push(key),
            }
        }
        for key in wanted {
            if let std::collections::hash_map::Entry::Vacant(slot) = running.entry(key) {
                let key = slot.key().clone();
                slot.insert(spawn_route_workers(&mut workers, &app, &queue, key, &stop, &runtimes));
            }
        }
        let new_orphans: Vec<_> = orphans.iter().filter(|k| !orphans_seen.contains(*k)).collect();
        if !new_orphans.is_empty() {
            let names: Vec<String> = new_orphans.iter().map(|k| format!("{}/{}", k.source(), k.identity())).collect();
            tracing::warn!(
                routes = %names.join(", "),
                "queued deliveries whose route is no longer configured are kept as orphans: GET /queue lists them; POST /queue/orphans/SOURCE/ROUTE/move?to=NAME hands them to a route, DELETE drops them"
            );
        }
        orphans_seen = orphans.into_iter().collect();
        let retention = queue.config.dead_retention;
        if last_sweep.is_none_or(|t| t.elapsed() >= (retention / 10).clamp(HOUSEKEEPING, Duration::from_secs(3600))) {
            last_sweep = Some(Instant::now());
            let cutoff = unix_ms(SystemTime::now()).saturating_sub(retention.as_millis() as u64);
            match queue.store.sweep(&queue.known_routes(&loaded.config).await, cutoff).await {
                Ok(0) | Err(_) => {}
                Ok(n) => tracing::info!(dropped = n, "dead letters past queue.dead_retention dropped"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(HOUSEKEEPING) => {}
            _ = stop.changed() => {}
            _ = queue.changed.notified() => {}
            Some(Ok(key)) = workers.join_next(), if !workers.is_empty() => {
                // A worker retired (its route drained or is gone): once all
                // of the route's have, the route can have workers again.
                if let Some(n) = running.get_mut(&key) {
                    *n -= 1;
                    if *n == 0 {
                        running.remove(&key);
                    }
                }
            }
        }
    }
    while workers.join_next().await.is_some() {}
    if let Some(t) = pause_sync {
        t.abort();
    }
}

/// Starts `key`'s workers. On Redis, one per worker runtime, each with its
/// share of the route's `concurrency`: a worker takes, attempts and counts its
/// slots on one thread, so no attempt waits for a wake-up of another thread
/// (two such hops cost ~0.4 ms of each attempt's ~1.2 ms at `concurrency = 64`).
/// Two takes of one route never hand out the same entry there
/// (`XREADGROUP >`). The disk store's takes scan from a cursor, so its route
/// has one worker here, whose attempts go to the runtimes in turn.
fn spawn_route_workers(
    workers: &mut JoinSet<RouteKey>,
    app: &Arc<App>,
    queue: &Queue,
    key: RouteKey,
    stop: &watch::Receiver<bool>,
    runtimes: &Arc<[tokio::runtime::Handle]>,
) -> usize {
    let taken: Shared = Arc::default();
    let health: Arc<super::health::RouteHealth> = Arc::default();
    let per_runtime = matches!(queue.store, super::Store::Redis(_)) && runtimes.len() > 1;
    if per_runtime {
        let share = |index| Share { index, of: runtimes.len() };
        for (i, rt) in runtimes.iter().enumerate() {
            let shared = (taken.clone(), health.clone());
            let w = route_worker(app.clone(), queue.clone(), key.clone(), share(i), shared, stop.clone(), None);
            workers.spawn_on(w, rt);
        }
        runtimes.len()
    } else {
        let share = Share { index: 0, of: 1 };
        workers.spawn(route_worker(
            app.clone(),
            queue.clone(),
            key,
            share,
            (taken, health),
            stop.clone(),
            Some(runtimes.clone()),
        ));
        1
    }
}

/// Which part of a route's `concurrency` a worker has: worker `index` of `of`.
#[derive(Clone, Copy, Debug)]
struct Share {
    index: usize,
    of: usize,
}

impl Share {
    /// This worker's slots out of `concurrency` (the shares add up to it; with
    /// fewer slots than workers, the first workers have one each).
    fn of(self, concurrency: usize) -> usize {
        concurrency / self.of + usize::from(self.index < concurrency % self.of)
    }
}

/// The entries a route's workers have in flight, shared by them: a take must
/// not hand out again what another worker of this process is attempting.
type Shared = Arc<std::sync::Mutex<HashSet<String>>>;

/// The route `key` names in the config in force (by identity, SPEC §12): the
/// config, the source's index and the route's. A route that is no longer a
/// queue route is still found: it drains what it stored.
fn lookup(app: &App, key: &RouteKey) -> Option<(Arc<crate::app::Loaded>, usize, usize)> {
    let loaded = app.current();
    let (source, route) = super::locate(&loaded.config, key)?;
    Some((loaded, source, route))
}

/// Whether the store holds nothing of `key` but dead letters.
async fn drained(queue: &Queue, key: &RouteKey) -> bool {
    matches!(queue.depth(key).await, Ok((c, 0)) if c.pending == 0 && c.scheduled == 0)
}

/// One worker of a route: its attempts run on `runtimes` in turn, or, with
/// none given, on the worker's own runtime.
async fn route_worker(
    app: Arc<App>,
    queue: Queue,
    key: RouteKey,
    share: Share,
    (taken, health): (Shared, Arc<super::health::RouteHealth>),
    stop: watch::Receiver<bool>,
    runtimes: Option<Arc<[tokio::runtime::Handle]>>,
) -> RouteKey {
    let (freed_tx, freed_rx) = tokio::sync::mpsc::unbounded_channel::<Duration>();
    RouteWorker {
        waker: queue.waker(&key, share.index),
        metrics: app.metrics.queue_route(key.source(), &key.identity()),
        // Redis: a taken entry is handed to another replica once it has been
        // pending `visibility_timeout`; one held ready so long that its attempt
        // might outlast that is left to be claimed again instead.
        visibility: matches!(queue.store, super::Store::Redis(_)).then_some(queue.config.visibility_timeout),
        app,
        queue,
        key,
        share,
        health,
        runtimes,
        next_runtime: 0,
        attempts: JoinSet::new(),
        in_flight: InFlight { mine: HashSet::new(), all: taken },
        freed_tx,
        freed_rx,
        upstream_busy: 0,
        ready: VecDeque::new(),
        attempt_time: QUICK_ATTEMPT,
        taking: None,
        exhausted: false,
        due_ms: None,
        retake: false,
        error_wait: FIRST_ERROR_WAIT,
        paused_until: None,
        rate: None,
        stopping: stop.clone(),
    }
    .run(stop)
    .await
}

/// A route worker's state between the events of its loop ([`RouteWorker::run`]).
struct RouteWorker {
    app: Arc<App>,
    queue: Queue,
    key: RouteKey,
    share: Share,
    /// Shared by the route's workers: the WARN while it fails, the INFO when it recovers.
    health: Arc<super::health::RouteHealth>,
    /// Where attempts run, in turn (none: on the worker's own runtime).
    runtimes: Option<Arc<[tokio::runtime::Handle]>>,
    next_runtime: usize,
    waker: Arc<super::RouteWaker>,
    metrics: QueueRouteMetrics,
    /// Attempts started and not yet reaped (their outcome may still be recorded).
    attempts: JoinSet<Finished>,
    /// Idents of the entries this worker has in flight (also in the route's shared set).
    in_flight: InFlight,
    /// Attempts still talking to the upstream: `concurrency` bounds these. An
    /// attempt frees its slot once the exchange is over, before its outcome is
    /// recorded (a store round trip that is not the app's load), and is
    /// reaped from `attempts` when that is done too.
    freed_tx: tokio::sync::mpsc::UnboundedSender<Duration>,
    freed_rx: tokio::sync::mpsc::UnboundedReceiver<Duration>,
    upstream_busy: usize,
    /// Entries taken and not yet attempted, with when they were taken: while
    /// attempts are quick, a batch is taken while the slots are still busy, so
    /// a slot that frees starts its next attempt at once instead of after a
    /// take's round trip to the store.
    ready: VecDeque<(Instant, TakenEntry)>,
    /// How long attempts take (a moving average of the last few); until
    /// some were timed, as if they were slow.
    attempt_time: Duration,
    /// Redis: the store's `visibility_timeout` (see [`Self::start_ready`]).
    visibility: Option<Duration>,
    taking: Option<TakeFuture>,
    /// The last take found less than it asked for: the next waits for
    /// something to happen (an enqueue, a freed slot, a timer), not a loop.
    exhausted: bool,
    /// The store's earliest scheduled retry, as the last take reported it.
    due_ms: Option<u64>,
    /// An attempt that scheduled a retry was reaped while a take was under
    /// way: that take may have skipped the retry as still in flight (see
    /// [`Self::reap`]), so coming back short does not make it `exhausted`.
    retake: bool,
    /// After a failed take: how long until the next, doubling from
    /// [`FIRST_ERROR_WAIT`] up to [`MAX_ERROR_WAIT`].
    error_wait: Duration,
    paused_until: Option<Instant>,
    /// The route's `rate`, as of the last loop (a reload may change it).
    rate: Option<crate::route::policy::Rate>,
    /// Turns true on shutdown: attempts then hand no ordering key on (see [`Attempt::run`]).
    stopping: watch::Receiver<bool>,
}

impl RouteWorker {
    async fn run(mut self, mut stop: watch::Receiver<bool>) -> RouteKey {
        loop {
            if *stop.borrow() {
                break;
            }
            let now = unix_ms(SystemTime::now());
            let wait = self.timer(now);
            match lookup(&self.app, &self.key) {
                Some((loaded, index, route_index)) => {
                    let route = &loaded.config.sources[index].routes[route_index];
                    // A route that stopped being a queue route drains with the defaults.
                    let concurrency = self.share.of(route
                        .queue()
                        .map_or_else(|| super::QueueRoute::default().concurrency as usize, |q| q.concurrency as usize));
                    if route.queue().is_none() && self.idle() && drained(&self.queue, &self.key).await {
                        tracing::info!(source = self.key.source(), route = %self.key.identity(), "route drained its queued deliveries");
                        break;
                    }
                    self.rate = route.queue().and_then(|q| q.rate);
                    let free = self.start_ready(&loaded, index, route_index, concurrency);
                    self.plan_take(concurrency, free, now);
                }
                // Gone from the config: its entries wait as orphans (SPEC §12).
                // What was taken and not started is handed back (moved or
                // deleted meanwhile, it must not go out here when the route
                // returns); the worker retires once its attempts have ended.
                None => {
                    self.hand_back().await;
                    if self.taking.is_none() && self.attempts.is_empty() {
                        break;
                    }
                }
            }
            tokio::select! {
                _ = self.waker.notified() => self.exhausted = false,
                Some(took) = self.freed_rx.recv() => self.freed(took),
                Some(done) = self.attempts.join_next(), if !self.attempts.is_empty() => {
                    self.reap(Some(done));
                }
                (result, asked) = async { self.taking.as_mut().expect("polled only while taking").await }, if self.taking.is_some() => {
                    self.took(result, asked);
                }
                _ = tokio::time::sleep(wait) => {
                    self.exhausted = false;
                    if self.due_ms.is_some_and(|d| d <= unix_ms(SystemTime::now())) {
                        self.due_ms = None;
                    }
                }
                _ = stop.changed() => {}
            }
        }
        let key = self.key.clone();
        self.shut_down().await;
        key
    }

    /// Nothing taken, under way or in flight.
    fn idle(&self) -> bool {
        self.exhausted && self.taking.is_none() && self.ready.is_empty() && self.attempts.is_empty()
    }

    /// How long the loop may sleep with nothing else happening: the store's
    /// idle check, the next scheduled retry, the end of a pause after an error.
    fn timer(&self, now: u64) -> Duration {
        let mut wait = self.queue.store.idle_check();
        if let Some(due) = self.due_ms {
            wait = wait.min(Duration::from_millis(due.saturating_sub(now)));
        }
        if let Some(until) = self.paused_until {
            wait = wait.min(until.saturating_duration_since(Instant::now()));
        }
        if let Some(probe) = self.queue.pauses.next_probe(&self.key) {
            wait = wait.min(probe.saturating_duration_since(Instant::now()));
        }
        wait
    }

    /// Starts attempts of ready entries while slots are free; returns the
    /// slots still free.
    fn start_ready(&mut self, loaded: &Arc<Loaded>, index: usize, route_index: usize, concurrency: usize) -> usize {
        let route = &loaded.config.sources[index].routes[route_index];
        // Outcomes being recorded hold no slot, but at most twice
        // `concurrency` of them wait (a slow store slows the takes down,
        // not memory up). Once `concurrency` was the bound, and under a
        // Redis drain it held attempts back: recording waits a round trip.
        let recording = self.attempts.len().saturating_sub(self.upstream_busy);
        let mut free = concurrency.saturating_sub(self.upstream_busy).min((2 * concurrency).saturating_sub(recording));
        // Paused (SPEC §16): nothing starts, but a due probe.
        if !self.ready.is_empty()
            && let Some(allowed) = self.queue.pauses.allowance(&self.key, Instant::now(), self.upstream_busy == 0)
        {
            free = free.min(allowed);
        }
        let hold_limit = self.visibility.map(|v| v.saturating_sub(route.timeout).max(v / 4));
        while free > 0
            && let Some((taken_at, entry)) = self.ready.pop_front()
        {
            if hold_limit.is_some_and(|limit| taken_at.elapsed() > limit) {
                self.in_flight.remove(&entry.ident());
                continue;
            }
            self.upstream_busy += 1;
            free -= 1;
            let job = Attempt {
                app: self.app.clone(),
                queue: self.queue.clone(),
                loaded: loaded.clone(),
                metrics: self.metrics.clone(),
                key: self.key.clone(),
                health: self.health.clone(),
                source_index: index,
                route_index,
                stopping: self.stopping.clone(),
            };
            // Boxed: the attempt's future is large, and a task
            // moves what it is given several times on spawn.
            let run = Box::pin(job.run(entry, Slot(self.freed_tx.clone(), Instant::now())));
            match self.runtimes.as_ref().and_then(|r| r.get(self.next_runtime % r.len().max(1))) {
                Some(rt) => self.attempts.spawn_on(run, rt),
                None => self.attempts.spawn(run),
            };
            self.next_runtime = self.next_runtime.wrapping_add(1);
        }
        free
    }

    /// Says whether the worker wants entries, and starts a take when it does
    /// and none is under way.
    fn plan_take(&mut self, concurrency: usize, free: usize, now: u64) {
        // Take in batches: every take is a range scan of the store (on
        // disk, a merge over the LSM tree's memtables and tables), which
        // costs about as much for one entry as for dozens. So a worker
        // takes at least a quarter of its slots' worth at a time (or
        // anything, when it has nothing). While attempts are quick it
        // holds up to two such batches ready beyond its free slots; with
        // a slow app, taking ahead gains nothing and would only make the
        // entries wait.
        let mut batch = (concurrency / 4).max(1);
        let ahead = if self.attempt_time < QUICK_ATTEMPT { 2 * batch } else { 0 };
        // With a `rate`, nothing is taken ahead: a permit is spent per entry taken.
        let ahead = if self.rate.is_some() { 0 } else { ahead };
        let mut room = if concurrency == 0 { 0 } else { (free + ahead).saturating_sub(self.ready.len()) };
        // Paused: take one entry for a due probe, else nothing.
        if self.queue.pauses.get(&self.key).is_some() {
            let probe_due = self.queue.pauses.next_probe(&self.key).is_some_and(|t| t <= Instant::now());
            let idle = self.upstream_busy == 0 && self.ready.is_empty();
            room = usize::from(probe_due && idle && concurrency > 0);
            batch = 1;
        }
        let idle = self.upstream_busy == 0 && self.ready.is_empty();
        let wants = self.paused_until.is_none_or(|t| t <= Instant::now()) && (room >= batch || (idle && room > 0));
        // Said before the take: an entry stored after its scan wakes the
        // worker (also while the take is under way, or when it came back
        // short), so it is not left for the idle check.
        self.waker.want(wants);
        if wants && self.taking.is_none() && !self.exhausted {
            let skip = self.in_flight.all.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let (q, k) = (self.queue.clone(), self.key.clone());
            let rate = self.rate;
            self.taking = Some(Box::pin(async move {
                // `rate` (SPEC §16): permits first, so what is taken may start at once.
                let room = match rate {
                    None => room,
                    Some(rate) => match q.rates.acquire(&q.store, &k, rate, room).await {
                        (0, wait) => {
                            let next = now + wait.as_millis().max(1) as u64;
                            return (Ok(super::Taken { entries: Vec::new(), next_due_ms: Some(next) }), room);
                        }
                        (n, _) => n,
                    },
                };
                (q.store.take(k, room, skip, now).await, room)
            }));
        }
    }

    /// Slots given back (`took`, and any others freed by now): their
    /// attempts' times go into the moving average.
    fn freed(&mut self, took: Duration) {
        let mut next = Some(took);
        while let Some(took) = next {
            self.attempt_time = (self.attempt_time * 7 + took) / 8;
            self.upstream_busy = self.upstream_busy.saturating_sub(1);
            next = self.freed_rx.try_recv().ok();
        }
        self.exhausted = false;
        self.reap(None);
    }

    /// Forgets the attempts that have ended (`first`, and any others done by
    /// now): their entries may be handed out by a take again. After one that
    /// scheduled a retry the worker takes again: the take that followed its
    /// freed slot may have run after the retry was recorded but before this,
    /// skipping a retry already due as in flight and coming back short
    /// without its due time, and nothing else would wake the worker for it
    /// before the store's idle check (5 s on disk). The same after an ordered
    /// delivery's outcome: the next of its key became takeable only then.
    fn reap(&mut self, first: Option<Result<Finished, tokio::task::JoinError>>) {
        // A panicked or aborted attempt has no ident to give back; its entry
        // stays in flight until this worker holds nothing.
        let attempts = &mut self.attempts;
        for done in first.into_iter().chain(std::iter::from_fn(|| attempts.try_join_next())).flatten() {
            self.in_flight.remove(&done.ident);
            // The next of a delivered head's ordering key, handed to this
            // worker with the key's lease: first in line, held no longer
            // than the lease allows (see `start_ready`).
            if let Some(next) = done.next {
                self.in_flight.insert(next.ident());
                self.ready.push_front((next.leased().unwrap_or_else(Instant::now), next));
            }
            if done.retake {
                self.exhausted = false;
                self.retake |= self.taking.is_some();
            }
        }
        if self.attempts.is_empty() && self.ready.is_empty() {
            self.in_flight.clear();
        }
    }

    /// Hands back the entries taken and not started: they stay stored as
    /// they are, for a later take (Redis: the other replicas' at once).
    async fn hand_back(&mut self) {
        if self.ready.is_empty() {
            return;
        }
        let held: Vec<TakenEntry> = self.ready.drain(..).map(|(_, entry)| entry).collect();
        for entry in &held {
            self.in_flight.remove(&entry.ident());
        }
        match self.queue.store.hand_back(&held).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::debug!(source = self.key.source(), route = %self.key.identity(), handed = n, "taken deliveries handed to the other replicas")
            }
            Err(e) => {
                tracing::warn!(source = self.key.source(), route = %self.key.identity(), error = %e, "cannot hand taken deliveries to the other replicas; they take them after queue.visibility_timeout")
            }
        }
    }

    /// A take came back with `result`, having asked for `asked` entries.
    fn took(&mut self, result: Result<super::Taken, QueueError>, asked: usize) {
        self.taking = None;
        let retake = std::mem::take(&mut self.retake);
        match result {
            Ok(taken) => {
                self.error_wait = FIRST_ERROR_WAIT;
                self.paused_until = None;
                self.due_ms = taken.next_due_ms;
                // Short, unless a retry was reaped meanwhile (see `retake`).
                self.exhausted = taken.entries.len() < asked && !retake;
                let at = Instant::now();
                for entry in taken.entries {
                    self.in_flight.insert(entry.ident());
                    self.ready.push_back((at, entry));
                }
            }
            Err(e) => {
                tracing::warn!(source = self.key.source(), route = %self.key.identity(), error = %e, "queue take failed");
                self.paused_until = Some(Instant::now() + self.error_wait);
                self.error_wait = (self.error_wait * 2).min(MAX_ERROR_WAIT);
            }
        }
    }

    /// Entries taken and never attempted stay stored as they were (Redis:
    /// handed back to the other replicas at once; disk: at the next start);
    /// attempts in flight get `shutdown_grace` to finish.
    async fn shut_down(mut self) {
        self.hand_back().await;
        let grace = self.app.current().config.server.shutdown_grace;
        let attempts = &mut self.attempts;
        let drained = tokio::time::timeout(grace, async { while attempts.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!(
                source = self.key.source(),
                route = %self.key.identity(),
                left = self.attempts.len(),
                "shutdown grace expired with queue attempts in flight; they stay stored and are attempted after the next start"
            );
            self.attempts.abort_all();
        }
    }
}

/// A worker's entries in flight: its own, and the set its route's workers share.
struct InFlight {
    mine: HashSet<String>,
    all: Shared,
}

impl InFlight {
    fn insert(&mut self, ident: String) {
        self.all.lock().unwrap_or_else(|p| p.into_inner()).insert(ident.clone());
        self.mine.insert(ident);
    }

    fn remove(&mut self, ident: &str) {
        if self.mine.remove(ident) {
            self.all.lock().unwrap_or_else(|p| p.into_inner()).remove(ident);
        }
    }

    fn clear(&mut self) {
        let mut all = self.all.lock().unwrap_or_else(|p| p.into_inner());
        for ident in self.mine.drain() {
            all.remove(&ident);
        }
    }
}

/// What an attempt hands back once its outcome is recorded.
struct Finished {
    ident: String,
    /// Its recorded outcome may have made an entry takeable that a take
    /// running meanwhile did not see: a retry (itself, once due), or the next
    /// delivery of its `order_by` key (released when it was done or dead).
    retake: bool,
    /// Redis: the next delivery of its `order_by` key, for this worker to attempt.
    next: Option<TakenEntry>,
}

/// A take in progress: what it took, and how many it asked for.
type TakeFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = (Result<super::Taken, QueueError>, usize)> + Send>>;

/// An attempt's share of its route's `concurrency`: given back (a message to
/// the route's worker, with how long the attempt held it) when the exchange
/// with the upstream is over, or when the attempt ends any other way (dropped
/// on shutdown, panicked).
struct Slot(tokio::sync::mpsc::UnboundedSender<Duration>, Instant);

impl Drop for Slot {
    fn drop(&mut self) {
        let _ = self.0.send(self.1.elapsed());
    }
}

/// Everything one attempt needs, taken from the config in force when it started.
struct Attempt {
    app: Arc<App>,
    queue: Queue,
    /// The config the attempt started with (its route may move on a reload).
    loaded: Arc<Loaded>,
    metrics: QueueRouteMetrics,
    key: RouteKey,
    health: Arc<super::health::RouteHealth>,
    source_index: usize,
    route_index: usize,
    stopping: watch::Receiver<bool>,
}

impl Attempt {
    fn route(&self) -> &Route {
        &self.loaded.config.sources[self.source_index].routes[self.route_index]
    }

    async fn run(self, mut taken: TakenEntry, slot: Slot) -> Finished {
        let ident = taken.ident();
        let source = &self.loaded.sources[self.source_index];
        let route = self.route();
        let n = taken.state.attempts + 1;
        // Moved, not copied: recording the outcome needs only the handle and
        // the meta (a Redis retry stores the entry's bytes as they were taken).
        let mut headers = std::mem::take(&mut taken.entry.headers);
        let meta = &taken.entry.meta;
        headers.insert(X_ATTEMPT, HeaderValue::from(n));
        // The stored X-Hookgate-Source is the one from enqueue; keep it current.
        headers.insert(forward::X_SOURCE, source.name_header.clone());
        // [otel]: a span per attempt, a child of (and linked to) the delivery's enqueue span.
        let traced = self.app.otel.as_ref().map(|_| {
            let link = headers.get("traceparent").and_then(|v| otel::Context::parse(v.as_bytes()));
            let ctx =
                otel::Context { trace: link.map_or_else(otel::new_trace_id, |l| l.trace), span: otel::new_span_id() };
            headers.insert(http::HeaderName::from_static("traceparent"), ctx.header());
            (ctx, link, SystemTime::now())
        });
        let started = Instant::now();
        // The route's transform, headers and re-signing, as they are now.
        let result = match forward::prepare(route, headers, meta.query.as_deref(), &meta.id, &taken.entry.body) {
            Ok((path, headers, body)) => forward::send(route, path, headers, body).await,
            Err(e) => Err(e),
        };
        let elapsed = started.elapsed();
        // A transform fails the same way every time: no retry (SPEC §14).
        let transform_failed = matches!(&result, Err(forward::ForwardError::Transform(_)));
        let (status, retry_after, error) = match &result {
            Ok(res) => {
                let ra = res
                    .headers()
                    .get(http::header::RETRY_AFTER)
                    .and_then(|v| parse_retry_after(v.as_bytes(), SystemTime::now()));
                (Some(res.status()), ra, None)
            }
            Err(e) => (None, None, Some(e.to_string())),
        };
        // The answer's body is not needed; dropping it ends the exchange, and
        // with it the attempt's hold on a concurrency slot.
        drop(result);
        drop(slot);
        let policy = route.queue().map(|q| q.retry).unwrap_or_default();
        let now = unix_ms(SystemTime::now());
        let age = Duration::from_millis(now.saturating_sub(meta.received_ms));
        // 410 Gone: the route pauses, the delivery waits as it was (the
        // attempt is not counted: Standard Webhooks' meaning, SPEC §16).
        let gone = status == Some(http::StatusCode::GONE);
        let verdict = if transform_failed {
            Verdict::Dead
        } else if gone {
            Verdict::Retry(Duration::ZERO)
        } else {
            policy.within_horizon(policy.verdict(n, status, retry_after, unit_random()), age)
        };
        if gone && let Err(e) = self.queue.pause(&self.key, super::pause::Reason::Gone).await {
            tracing::warn!(source = %meta.source, route = %route.identity, error = %e, "cannot pause the route after 410 Gone");
        }
        if let (Some(o), Some((ctx, link, start))) = (&self.app.otel, traced) {
            let mut attributes = vec![
                ("hookgate.source", meta.source.clone()),
                ("hookgate.route", route.label.to_string()),
                ("hookgate.delivery_id", meta.id.clone()),
                ("hookgate.attempt", n.to_string()),
            ];
            if let Some(s) = status {
                attributes.push(("http.response.status_code", s.as_u16().to_string()));
            }
            let failed =
                error.clone().or_else(|| status.filter(|s| !s.is_success()).map(|s| format!("upstream answered {s}")));
            o.send(otel::Finished {
                trace: ctx.trace,
                id: ctx.span,
                parent: link.map(|l| l.span),
                name: "attempt",
                kind: otel::SpanKind::Client,
                start,
                end: SystemTime::now(),
                attributes,
                links: link.into_iter().collect(),
                error: if transform_failed { Some("transform failed".into()) } else { failed },
            });
        }
        let state = State {
            attempts: if gone { n - 1 } else { n },
            last_status: status.map(|s| s.as_u16()),
            last_error: error.or_else(|| status.filter(|s| !s.is_success()).map(|s| format!("upstream answered {s}"))),
            dead_ms: None,
        };
        let (transition, label) = match verdict {
            Verdict::Done => (Transition::Done, "delivered"),
            Verdict::Retry(d) => (Transition::Retry { due_ms: now + d.as_millis() as u64, state }, "scheduled"),
            Verdict::Dead => (Transition::Dead { state: State { dead_ms: Some(now), ..state } }, "dead"),
        };
        match label {
            "delivered" => self.metrics.ok.inc(),
            "scheduled" => self.metrics.retry.inc(),
            _ => self.metrics.dead.inc(),
        };
        source.metrics.upstream(self.route_index, elapsed.as_secs_f64());
        source.stats.latency(elapsed, std::time::SystemTime::now());
        let log = &self.app.deliveries;
        if let Some((epoch, record)) = meta.log
            && epoch == log.epoch
        {
            let next = match &verdict {
                Verdict::Retry(d) => Some(SystemTime::now() + *d),
                _ => None,
            };
            let error = state_error(&transition);
            log.update(record, |item| {
                item.attempts = Some(n);
                item.last_status = status.map(|s| s.as_u16());
                item.upstream_ms = Some(elapsed.as_millis() as u64);
                item.queue_state = Some(label);
                item.last_error = error.map(Into::into);
                item.next_attempt_at = next;
            });
        }
        match &verdict {
            Verdict::Dead => {
                tracing::warn!(source = %meta.source, route = %route.identity, delivery_id = %meta.id, attempts = n, status = status.map(|s| s.as_u16()), "queued delivery is dead")
            }
            Verdict::Retry(d) => {
                tracing::debug!(source = %meta.source, delivery_id = %meta.id, attempt = n, retry_in_ms = d.as_millis() as u64, "queued delivery will be retried")
            }
            Verdict::Done => {
                tracing::debug!(source = %meta.source, delivery_id = %meta.id, attempt = n, "queued delivery delivered")
            }
        }
        let failed = !matches!(verdict, Verdict::Done) && !status.is_some_and(|s| s.is_client_error());
        let alerts = &self.app.alerts;
        if alerts.enabled() {
            // A transform's error may quote the body: alerts say only that it failed.
            let error = if transform_failed { Some("transform failed") } else { state_error(&transition) };
            if matches!(verdict, Verdict::Done) {
                alerts.route_ok(&meta.source, &route.label);
            } else if failed {
                alerts.route_failed(&meta.source, &route.label, error.unwrap_or("failed"));
            }
            if matches!(verdict, Verdict::Dead) {
                alerts.dead_letter(&meta.source, &route.label, &meta.id, n, error);
            }
        }
        self.pause_or_resume(route, failed, matches!(verdict, Verdict::Done)).await;
        if failed && self.health.failed(Instant::now()) {
            // At most every 30 s per route: how many wait, why, and when the next try is.
            let waiting = self.queue.depth(&self.key).await.map(|(c, f)| c.pending + c.scheduled + f).ok();
            tracing::warn!(
                source = %meta.source,
                route = %route.identity,
                waiting,
                last_error = state_error(&transition),
                next_attempt_in_ms = match &verdict { Verdict::Retry(d) => Some(d.as_millis() as u64), _ => None },
                "queue route's app is failing; deliveries wait and are retried"
            );
        } else if matches!(verdict, Verdict::Done)
            && let Some((down_for, failures)) = self.health.delivered(Instant::now())
        {
            tracing::info!(source = %meta.source, route = %route.identity, down_for_ms = down_for.as_millis() as u64, failed_attempts = failures, "queue route's app delivers again");
        }
        // A delivered head's next is attempted here at once (Redis: no trip
        // through the stream) unless something must hold it back: the
        // route's `rate` (its permits come with takes), a pause, shutdown.
        let go_on = meta.order_key.is_some()
            && route.queue().is_some_and(|q| q.rate.is_none())
            && self.queue.pauses.get(&self.key).is_none()
            && !*self.stopping.borrow();
        let retry = matches!(transition, Transition::Retry { .. });
        let ordered = meta.order_key.is_some();
        match self.queue.store.finish(taken, transition, go_on).await {
            // A next handed back comes here, not through a take.
            Ok(next) => Finished { ident, retake: retry || (ordered && next.is_none()), next },
            Err(e) => {
                // Left as it was: it is attempted again (at-least-once).
                tracing::error!(error = %e, "cannot record a queue attempt's outcome");
                Finished { ident, retake: false, next: None }
            }
        }
    }
}

impl Attempt {
    /// `pause_after` of failure pauses the route; a delivery (its probe)
    /// resumes a route that paused itself that way (SPEC §16).
    async fn pause_or_resume(&self, route: &Route, failed: bool, delivered: bool) {
        let pauses = &self.queue.pauses;
        let result = if delivered
            && pauses.get(&self.key).is_some_and(|p| matches!(p.reason, super::pause::Reason::Failing { .. }))
        {
            self.queue.resume(&self.key).await.map(drop)
        } else if failed
            && let Some(q) = route.queue()
            && let Some(after) = q.pause_after
            && self.health.failing_for(Instant::now()).is_some_and(|d| d >= after)
            && pauses.get(&self.key).is_none()
        {
            let reason = super::pause::Reason::Failing { probe_every: q.probe_every };
            self.queue.pause(&self.key, reason).await.map(drop)
        } else {
            Ok(())
        };
        if let Err(e) = result {
            tracing::warn!(source = self.key.source(), route = %self.key.identity(), error = %e, "cannot record the route's pause");
        }
    }
}

/// The error a failed attempt's outcome records.
fn state_error(t: &Transition) -> Option<&str> {
    match t {
        Transition::Retry { state, .. } | Transition::Dead { state } => state.last_error.as_deref(),
        Transition::Done => None,
    }
}

#[cfg(test)]
mod tests {
    use super::Share;

    fn shares(concurrency: usize, of: usize) -> Vec<usize> {
        (0..of).map(|index| Share { index, of }.of(concurrency)).collect()
    }

    #[test]
    fn the_shares_of_a_routes_workers_add_up_to_its_concurrency() {
        assert_eq!(shares(64, 2), [32, 32]);
        assert_eq!(shares(3, 2), [2, 1]);
        assert_eq!(shares(1, 2), [1, 0], "one slot: only the first worker takes");
        assert_eq!(shares(0, 2), [0, 0], "a paused route stays paused");
        for concurrency in 0..20 {
            for of in 1..5 {
                let s = shares(concurrency, of);
                assert_eq!(s.iter().sum::<usize>(), concurrency);
                assert!(s.iter().max().unwrap() - s.iter().min().unwrap() <= 1, "{concurrency}/{of}: {s:?}");
            }
        }
    }
}
