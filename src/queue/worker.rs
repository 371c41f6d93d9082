//! The delivery loops: a queue route's worker takes due entries (at most
//! the route's `concurrency` in flight), attempts each with the same
//! forwarding code a sync route uses, and records the outcome. On Redis a
//! route has one worker per webhook worker thread, each with its share of
//! `concurrency`; on disk, one.
//!
//! A worker sleeps until something is due: an enqueue or a dead-letter retry
//! wakes it, a finished attempt frees a slot, and otherwise it waits for the
//! earliest scheduled retry (at most the store's idle check: 5 s on disk,
//! 0.5 s on Redis, where other replicas enqueue without waking it). However
//! deep the backlog, a route holds at most `concurrency` entries at the app,
//! half as many again taken ahead (only while attempts are quick), and twice
//! as many whose outcome is being written.
//!
//! On shutdown a worker takes nothing new; attempts in flight get
//! `shutdown_grace` to finish, and whatever is left stays stored.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderName, HeaderValue};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::policy::{Verdict, parse_retry_after, unit_random};
use super::{Queue, QueueError, RouteKey, State, TakenEntry, Transition, unix_ms};
use crate::app::{App, Loaded};
use crate::forward;
use crate::metrics::QueueRouteMetrics;
use crate::route::Route;

pub const X_ATTEMPT: HeaderName = HeaderName::from_static("x-hookgate-attempt");

/// The longest a worker waits after its store failed before it tries again.
const MAX_ERROR_WAIT: Duration = Duration::from_secs(5);
/// Attempts quicker than this on average: the worker takes entries ahead.
const QUICK_ATTEMPT: Duration = Duration::from_millis(50);
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
    let mut workers: JoinSet<()> = JoinSet::new();
    let mut running: HashSet<RouteKey> = HashSet::new();
    let mut last_sweep: Option<Instant> = None;
    loop {
        if *stop.borrow() {
            break;
        }
        let loaded = app.current();
        for source in &loaded.config.sources {
            for (i, route) in source.routes.iter().enumerate() {
                let key = RouteKey::new(&source.name, i);
                if route.queue().is_some() && running.insert(key.clone()) {
                    spawn_route_workers(&mut workers, &app, &queue, key, &stop, &runtimes);
                }
            }
        }
        let retention = queue.config.dead_retention;
        if last_sweep.is_none_or(|t| t.elapsed() >= (retention / 10).clamp(HOUSEKEEPING, Duration::from_secs(3600))) {
            last_sweep = Some(Instant::now());
            let cutoff = unix_ms(SystemTime::now()).saturating_sub(retention.as_millis() as u64);
            match queue.store.sweep(&super::routes(&loaded.config), cutoff).await {
                Ok(0) | Err(_) => {}
                Ok(n) => tracing::info!(dropped = n, "dead letters past queue.dead_retention dropped"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(HOUSEKEEPING) => {}
            _ = stop.changed() => {}
        }
    }
    while workers.join_next().await.is_some() {}
}

/// Starts `key`'s workers. On Redis, one per worker runtime, each with its
/// share of the route's `concurrency`: a worker takes, attempts and counts its
/// slots on one thread, so no attempt waits for a wake-up of another thread
/// (two such hops cost ~0.4 ms of each attempt's ~1.2 ms at `concurrency = 64`).
/// Two takes of one route never hand out the same entry there
/// (`XREADGROUP >`). The disk store's takes scan from a cursor, so its route
/// has one worker here, whose attempts go to the runtimes in turn.
fn spawn_route_workers(
    workers: &mut JoinSet<()>,
    app: &Arc<App>,
    queue: &Queue,
    key: RouteKey,
    stop: &watch::Receiver<bool>,
    runtimes: &Arc<[tokio::runtime::Handle]>,
) {
    let taken: Shared = Arc::default();
    let per_runtime = matches!(queue.store, super::Store::Redis(_)) && runtimes.len() > 1;
    if per_runtime {
        let share = |index| Share { index, of: runtimes.len() };
        for (i, rt) in runtimes.iter().enumerate() {
            let w = route_worker(app.clone(), queue.clone(), key.clone(), share(i), taken.clone(), stop.clone(), None);
            workers.spawn_on(w, rt);
        }
    } else {
        let share = Share { index: 0, of: 1 };
        workers.spawn(route_worker(
            app.clone(),
            queue.clone(),
            key,
            share,
            taken,
            stop.clone(),
            Some(runtimes.clone()),
        ));
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

/// The route `key` names in the config in force, if it is still a queue route.
fn lookup(app: &App, key: &RouteKey) -> Option<(Arc<crate::app::Loaded>, usize)> {
    let loaded = app.current();
    let index = loaded.config.sources.iter().position(|s| s.name == key.source())?;
    let route = loaded.config.sources[index].routes.get(key.route())?;
    route.queue()?;
    Some((loaded, index))
}

/// One worker of a route: its attempts run on `runtimes` in turn, or, with
/// none given, on the worker's own runtime.
async fn route_worker(
    app: Arc<App>,
    queue: Queue,
    key: RouteKey,
    share: Share,
    taken: Shared,
    mut stop: watch::Receiver<bool>,
    runtimes: Option<Arc<[tokio::runtime::Handle]>>,
) {
    let mut next_runtime = 0usize;
    let waker = queue.waker(&key, share.index);
    let metrics = app.metrics.queue_route(key.source(), key.route());
    let mut attempts: JoinSet<String> = JoinSet::new();
    // Idents of the entries this worker has in flight (also in `taken`).
    let mut in_flight = InFlight { mine: HashSet::new(), all: taken };
    // Attempts still talking to the upstream: `concurrency` bounds these. An
    // attempt frees its slot once the exchange is over, before its outcome is
    // recorded (a store round trip that is not the app's load), and is
    // reaped from `attempts` when that is done too.
    let (freed_tx, mut freed_rx) = tokio::sync::mpsc::unbounded_channel::<Duration>();
    let mut upstream_busy = 0usize;
    // Entries taken and not yet attempted, with when they were taken: while
    // attempts are quick, a batch is taken while the slots are still busy, so
    // a slot that frees starts its next attempt at once instead of after a
    // take's round trip to the store.
    let mut ready: VecDeque<(Instant, TakenEntry)> = VecDeque::new();
    // How long attempts take (a moving average of the last few); until
    // some were timed, as if they were slow.
    let mut attempt_time = QUICK_ATTEMPT;
    // Redis: a taken entry is handed to another replica once it has been
    // pending `visibility_timeout`; one held ready so long that its attempt
    // might outlast that is left to be claimed again instead.
    let visibility = matches!(queue.store, super::Store::Redis(_)).then_some(queue.config.visibility_timeout);
    let mut taking: Option<TakeFuture> = None;
    // The last take found less than it asked for: the next waits for
    // something to happen (an enqueue, a freed slot, a timer), not a loop.
    let mut exhausted = false;
    let mut due_ms: Option<u64> = None;
    let mut error_wait = Duration::from_millis(100);
    let mut paused_until: Option<Instant> = None;
    loop {
        if *stop.borrow() {
            break;
        }
        let now = unix_ms(SystemTime::now());
        let mut wait = queue.store.idle_check();
        if let Some(due) = due_ms {
            wait = wait.min(Duration::from_millis(due.saturating_sub(now)));
        }
        if let Some(until) = paused_until {
            wait = wait.min(until.saturating_duration_since(Instant::now()));
        }
        if let Some((loaded, index)) = lookup(&app, &key) {
            let source = &loaded.config.sources[index];
            let route = &source.routes[key.route()];
            let concurrency = share.of(route.queue().map_or(1, |q| q.concurrency as usize));
            // Outcomes being recorded hold no slot, but at most twice
            // `concurrency` of them wait (a slow store slows the takes down,
            // not memory up). Once `concurrency` was the bound, and under a
            // Redis drain it held attempts back: recording waits a round trip.
            let recording = attempts.len().saturating_sub(upstream_busy);
            let mut free = concurrency.saturating_sub(upstream_busy).min((2 * concurrency).saturating_sub(recording));
            let hold_limit = visibility.map(|v| v.saturating_sub(route.timeout).max(v / 4));
            while free > 0
                && let Some((taken_at, entry)) = ready.pop_front()
            {
                if hold_limit.is_some_and(|limit| taken_at.elapsed() > limit) {
                    in_flight.remove(&entry.ident());
                    continue;
                }
                upstream_busy += 1;
                free -= 1;
                let job = Attempt {
                    app: app.clone(),
                    queue: queue.clone(),
                    loaded: loaded.clone(),
                    metrics: metrics.clone(),
                    source_index: index,
                    route_index: key.route(),
                };
                // Boxed: the attempt's future is large, and a task
                // moves what it is given several times on spawn.
                let run = Box::pin(job.run(entry, Slot(freed_tx.clone(), Instant::now())));
                match runtimes.as_ref().and_then(|r| r.get(next_runtime % r.len().max(1))) {
                    Some(rt) => attempts.spawn_on(run, rt),
                    None => attempts.spawn(run),
                };
                next_runtime = next_runtime.wrapping_add(1);
            }
            // Take in batches: every take is a range scan of the store (on
            // disk, a merge over the LSM tree's memtables and tables), which
            // costs about as much for one entry as for dozens. So a worker
            // takes at least a quarter of its slots' worth at a time (or
            // anything, when it has nothing). While attempts are quick it
            // holds up to two such batches ready beyond its free slots; with
            // a slow app, taking ahead gains nothing and would only make the
            // entries wait.
            let batch = (concurrency / 4).max(1);
            let ahead = if attempt_time < QUICK_ATTEMPT { 2 * batch } else { 0 };
            let room = if concurrency == 0 { 0 } else { (free + ahead).saturating_sub(ready.len()) };
            let idle = upstream_busy == 0 && ready.is_empty();
            let wants = paused_until.is_none_or(|t| t <= Instant::now()) && (room >= batch || (idle && room > 0));
            // Said before the take: an entry stored after its scan wakes the
            // worker (also while the take is under way, or when it came back
            // short), so it is not left for the idle check.
            waker.want(wants);
            let will_take = wants && taking.is_none() && !exhausted;
            if will_take {
                let skip = in_flight.all.lock().unwrap_or_else(|p| p.into_inner()).clone();
                let (q, k) = (queue.clone(), key.clone());
                taking = Some(Box::pin(async move { (q.store.take(k, room, skip, now).await, room) }));
            }
        }
        tokio::select! {
            _ = waker.notified() => exhausted = false,
            Some(took) = freed_rx.recv() => {
                attempt_time = (attempt_time * 7 + took) / 8;
                upstream_busy = upstream_busy.saturating_sub(1);
                while let Ok(took) = freed_rx.try_recv() {
                    attempt_time = (attempt_time * 7 + took) / 8;
                    upstream_busy = upstream_busy.saturating_sub(1);
                }
                exhausted = false;
                reap(&mut attempts, &mut in_flight, None, ready.is_empty());
            }
            Some(done) = attempts.join_next(), if !attempts.is_empty() => {
                reap(&mut attempts, &mut in_flight, Some(done), ready.is_empty());
            }
            (result, asked) = async { taking.as_mut().expect("polled only while taking").await }, if taking.is_some() => {
                taking = None;
                match result {
                    Ok(taken) => {
                        error_wait = Duration::from_millis(100);
                        paused_until = None;
                        due_ms = taken.next_due_ms;
                        exhausted = taken.entries.len() < asked;
                        let at = Instant::now();
                        for entry in taken.entries {
                            in_flight.insert(entry.ident());
                            ready.push_back((at, entry));
                        }
                    }
                    Err(e) => {
                        tracing::warn!(source = key.source(), route = key.route(), error = %e, "queue take failed");
                        paused_until = Some(Instant::now() + error_wait);
                        error_wait = (error_wait * 2).min(MAX_ERROR_WAIT);
                    }
                }
            }
            _ = tokio::time::sleep(wait) => {
                exhausted = false;
                if due_ms.is_some_and(|d| d <= unix_ms(SystemTime::now())) {
                    due_ms = None;
                }
            }
            _ = stop.changed() => {}
        }
    }
    // Taken and never attempted: stored as they were (Redis: read by a
    // replica after `visibility_timeout`; disk: at the next start).
    drop(ready);
    let grace = app.current().config.server.shutdown_grace;
    let drained = tokio::time::timeout(grace, async { while attempts.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            source = key.source(),
            route = key.route(),
            left = attempts.len(),
            "shutdown grace expired with queue attempts in flight; they stay stored and are attempted after the next start"
        );
        attempts.abort_all();
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

/// Forgets the attempts that have ended (`first`, and any others done by
/// now): their entries may be handed out by a take again.
/// (`nothing_ready`: the worker holds no taken entry that is not attempted yet.)
fn reap(
    attempts: &mut JoinSet<String>,
    in_flight: &mut InFlight,
    first: Option<Result<String, tokio::task::JoinError>>,
    nothing_ready: bool,
) {
    // A panicked or aborted attempt has no ident to give back; its entry
    // stays in flight until this worker holds nothing.
    for seq in first.into_iter().chain(std::iter::from_fn(|| attempts.try_join_next())).flatten() {
        in_flight.remove(&seq);
    }
    if attempts.is_empty() && nothing_ready {
        in_flight.clear();
    }
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
    source_index: usize,
    route_index: usize,
}

impl Attempt {
    fn route(&self) -> &Route {
        &self.loaded.config.sources[self.source_index].routes[self.route_index]
    }

    async fn run(self, mut taken: TakenEntry, slot: Slot) -> String {
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
        if let Some(r) = &route.resign {
            r.apply(&mut headers, &meta.id, forward::unix_now(), &taken.entry.body);
        }
        let path = forward::upstream_path_with(&route.path, meta.query.as_deref());
        let started = Instant::now();
        let result = forward::send(route, path, headers, taken.entry.body.clone()).await;
        let elapsed = started.elapsed();
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
        let verdict = policy.verdict(n, status, retry_after, unit_random());
        let now = unix_ms(SystemTime::now());
        let state = State {
            attempts: n,
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
        let log = &self.app.deliveries;
        if let Some((epoch, record)) = meta.log
            && epoch == log.epoch
        {
            log.update(record, |item| {
                item.attempts = Some(n);
                item.last_status = status.map(|s| s.as_u16());
                item.upstream_ms = Some(elapsed.as_millis() as u64);
                item.queue_state = Some(label);
            });
        }
        match &verdict {
            Verdict::Dead => {
                tracing::warn!(source = %meta.source, route = meta.route, delivery_id = %meta.id, attempts = n, status = status.map(|s| s.as_u16()), "queued delivery is dead")
            }
            Verdict::Retry(d) => {
                tracing::debug!(source = %meta.source, delivery_id = %meta.id, attempt = n, retry_in_ms = d.as_millis() as u64, "queued delivery will be retried")
            }
            Verdict::Done => {
                tracing::debug!(source = %meta.source, delivery_id = %meta.id, attempt = n, "queued delivery delivered")
            }
        }
        if let Err(e) = self.queue.store.finish(taken, transition).await {
            // Left as it was: it is attempted again (at-least-once).
            tracing::error!(error = %e, "cannot record a queue attempt's outcome");
        }
        ident
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
