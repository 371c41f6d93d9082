//! The Redis queue store: Redis Streams shared by any number of replicas
//! (standalone or Cluster). Per queue route, four keys that share one hash
//! tag, so every script touches one Cluster slot:
//!
//! - `{prefix}{source:route}:s` — a stream with the consumer group
//!   `hookgate`: deliveries waiting (`XADD`) or taken by a replica
//!   (`XREADGROUP`, in the group's pending list until `XACK`);
//! - `…:d` — a sorted set of retries by due time (unix ms);
//! - `…:x` — a sorted set of dead letters by time of death;
//! - `…:h` — a hash holding the delayed and dead records;
//! - `…:m:<delivery id>` — an enqueue's marker, kept 15 minutes, so a
//!   delivery is stored once even when a sender retries a write that timed
//!   out for it but reached Redis after all.
//!
//! A record is [`pack`]ed: the delivery's queue ID, its [`State`] and the
//! entry. Taking is one pipelined round trip: a small script moves due
//! retries back into the stream, then plain commands read new entries
//! (`XREADGROUP`) and the next retry's due time (`ZRANGE`). Entries another
//! replica took more than `visibility_timeout` ago are claimed (`XAUTOCLAIM`)
//! in place of the read at most every quarter of the timeout, new ones then
//! read in a second round trip if there is room. A delivered entry is acknowledged
//! (`XACK`) and deleted from the stream (`XDEL`), so it holds only what is
//! waiting or in flight; those of one scheduler tick go together. A retry or
//! a dead letter is one script that first `XACK`s: if that finds nothing,
//! another replica has claimed the entry meanwhile and owns its outcome, so
//! nothing else is written.
//!
//! Durability is the Redis server's: an enqueue is acknowledged once the
//! server acknowledged the `XADD`; it survives what the server's persistence
//! survives (AOF with `appendfsync always` or `everysec`).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::Value;
use tokio::sync::oneshot;

use super::entry::{Damaged, NewEntry, RouteKey, State, pack, unpack};
use super::{Counts, DeadItem, DeadPage, Handle, QueueError, Taken, TakenEntry, Transition};
use crate::config::RedisConfig;
use crate::redis_conn::{RedisConn, Script};

mod order;
mod routes;

pub use routes::Location;

const GROUP: &str = "hookgate";
/// Due retries moved back into the stream per take, at most.
const PROMOTE_BATCH: usize = 256;

/// Due retries back into the stream, the first part of a take. KEYS:
/// stream, delayed, hash, and the ordering heads and retrying heads
/// ([`order`]): a head of an ordering key back in the stream holds its key's
/// lease again. ARGV: now, the most due retries to move. Returns
/// how many it moved. The rest of a take is plain commands in the same
/// pipeline: a script that reads the stream pays for turning every entry into
/// a Lua table and back (2.1 us of Redis's one thread per entry, against 0.7
/// us for a plain `XREADGROUP`, in `INFO commandstats`).
const PROMOTE: &str = r"local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, id in ipairs(ids) do
  local v = redis.call('HGET', KEYS[3], id)
  if v then
    local sid = redis.call('XADD', KEYS[1], '*', 'p', v)
    local key = redis.call('HGET', KEYS[5], id)
    if key then
      if redis.call('HGET', KEYS[4], key) == id then redis.call('HSET', KEYS[4], key, id .. ' ' .. sid) end
      redis.call('HDEL', KEYS[5], id)
    end
  end
  redis.call('ZREM', KEYS[2], id)
  redis.call('HDEL', KEYS[3], id)
end
return #ids";

/// An enqueue, once per delivery: KEYS: stream, the delivery's marker. ARGV:
/// record, marker TTL (ms). A write that timed out for the sender (503) but
/// reached Redis after all has left its marker, so the sender's retry stores
/// nothing new (and is acknowledged: the delivery is stored). Returns 1 when
/// it stored, 0 when the delivery was there already.
const ENQUEUE: &str = r"if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[2]) then
  redis.call('XADD', KEYS[1], '*', 'p', ARGV[1])
  return 1
end
return 0";

/// How long an enqueue's marker is kept: a sender's retry after a 503
/// within this window finds it (Retry-After is 5 s).
const ENQUEUE_MARK_TTL: Duration = Duration::from_secs(15 * 60);

/// KEYS: stream, sorted set (delayed or dead), hash. ARGV: stream id, queue id, score, record.
const PARK: &str = r"if redis.call('XACK', KEYS[1], 'hookgate', ARGV[1]) == 1 then
  redis.call('XDEL', KEYS[1], ARGV[1])
  redis.call('HSET', KEYS[3], ARGV[2], ARGV[4])
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
  return 1
end
return 0";

/// KEYS: stream, dead, hash. ARGV: queue id, record. A dead letter back into the stream.
const REVIVE: &str = r"if redis.call('ZREM', KEYS[2], ARGV[1]) == 1 then
  redis.call('XADD', KEYS[1], '*', 'p', ARGV[2])
  redis.call('HDEL', KEYS[3], ARGV[1])
  return 1
end
return 0";

/// KEYS: dead, hash. ARGV: queue id.
const DELETE: &str = r"if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  local record = redis.call('HGET', KEYS[2], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
  return record or ''
end
return 0";

/// KEYS: dead, hash. ARGV: cutoff. Dead letters that died before the cutoff go.
const SWEEP: &str = r"local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
for _, id in ipairs(ids) do redis.call('HDEL', KEYS[2], id) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
return #ids";

/// A route's counts read at one instant (one script: Redis runs nothing
/// between its commands), so an entry moving between the stream and the
/// retry set is never counted twice or not at all. KEYS: stream, retry set,
/// dead set, the ordering links (one per parked entry). Returns stream length, taken (the group's pending
/// count; 0 without a group), retries, dead, parked.
const DEPTH: &str = r"local taken = 0
local ok, p = pcall(redis.call, 'XPENDING', KEYS[1], ARGV[1])
if ok then
  taken = p[1]
else
  local e = type(p) == 'table' and p.err or tostring(p)
  if not string.find(e, 'NOGROUP', 1, true) then return redis.error_reply(e) end
end
local parked = redis.call('HLEN', KEYS[4])
return {redis.call('XLEN', KEYS[1]), taken, redis.call('ZCARD', KEYS[2]), redis.call('ZCARD', KEYS[3]), parked}";

/// KEYS: stream. ARGV: consumer, idle ms, stream IDs. Each entry still
/// pending in this consumer's name is made that idle (`visibility_timeout`):
/// the next claiming take of any replica has it. Returns how many.
const HAND_BACK: &str = r"local n = 0
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], 'hookgate', ARGV[i], ARGV[i], 1)
  if p[1] and p[1][2] == ARGV[1] then
    redis.call('XCLAIM', KEYS[1], 'hookgate', ARGV[1], 0, ARGV[i], 'IDLE', ARGV[2], 'JUSTID')
    n = n + 1
  end
end
return n";

struct Scripts {
    enqueue: Script,
    hand_back: Script,
    depth: Script,
    promote: Script,
    park: Script,
    revive: Script,
    delete: Script,
    sweep: Script,
    rate: Script,
}

pub struct RedisQueue {
    conn: RedisConn,
    prefix: String,
    /// This process's consumer name in every route's group.
    consumer: String,
    visibility: Duration,
    /// Streams whose consumer group this process has made sure of.
    groups: Mutex<HashSet<RouteKey>>,
    /// Routes this process has listed in the routes set ([`routes`]).
    registered: Mutex<HashSet<RouteKey>>,
    /// Per route, how often its stream or group was found gone, and when last.
    resets: Mutex<HashMap<RouteKey, (u64, std::time::SystemTime)>>,
    /// Where lost streams are counted (`hookgate_queue_store_resets_total`).
    metrics: std::sync::OnceLock<Arc<crate::metrics::Metrics>>,
    /// Where lost streams are reported as alerts.
    alerts: std::sync::OnceLock<Arc<crate::telemetry::alerts::Alerts>>,
    /// Delivered entries waiting to be recorded together (see [`RedisQueue::done`]).
    done_waiting: Mutex<Vec<DoneWaiting>>,
    /// When each route last claimed stale entries (see [`RedisQueue::take`]).
    claimed_at: Mutex<HashMap<RouteKey, Instant>>,
    scripts: Scripts,
    /// Ordering by key ([`order`]).
    order: order::Scripts,
    /// Makes queue IDs unique within this process.
    counter: AtomicU64,
    id_base: String,
}

/// A delivered entry waiting to be recorded.
struct DoneWaiting {
    stream: Arc<str>,
    stream_id: String,
    /// An ordered entry's: its key's next goes.
    order: Option<order::DoneOrder>,
    /// The record of the key's next, when this replica attempts it itself.
    tx: oneshot::Sender<Result<Option<Vec<u8>>, QueueError>>,
}

/// Held by the task that sends a batch of outcomes until it took the batch:
/// if that task is cancelled first, what waits is failed (and attempted
/// again later, at least once) instead of waiting for a sender that is gone.
struct DoneLead<'a> {
    waiting: &'a Mutex<Vec<DoneWaiting>>,
    armed: bool,
}

impl DoneLead<'_> {
    /// The batch: everything waiting now (a later arrival leads the next one).
    fn take(mut self) -> Vec<DoneWaiting> {
        self.armed = false;
        std::mem::take(&mut *self.waiting.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Drop for DoneLead<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let left = std::mem::take(&mut *self.waiting.lock().unwrap_or_else(|p| p.into_inner()));
        for d in left {
            let _ = d.tx.send(Err(unavailable("the task recording this outcome was cancelled")));
        }
    }
}

struct Keys {
    stream: String,
    delayed: String,
    dead: String,
    hash: String,
    /// The ordering heads and retrying heads ([`order`]), for [`PROMOTE`].
    heads: String,
    retrying: String,
}

impl Keys {
    fn promote_keys(&self) -> [&str; 5] {
        [&self.stream, &self.delayed, &self.hash, &self.heads, &self.retrying]
    }
}

fn unavailable(e: impl std::fmt::Display) -> QueueError {
    QueueError::Unavailable(e.to_string())
}

fn damaged(e: Damaged) -> QueueError {
    QueueError::Unavailable(e.to_string())
}

fn int(v: &Value) -> u64 {
    match v {
        Value::Int(n) => (*n).max(0) as u64,
        Value::BulkString(b) => std::str::from_utf8(b).ok().and_then(|s| s.parse().ok()).unwrap_or(0),
        _ => 0,
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

fn items(v: &Value) -> &[Value] {
    match v {
        Value::Array(a) => a,
        _ => &[],
    }
}

/// How a take's pipeline reads the stream.
#[derive(Clone, Copy)]
enum Read {
    /// Claim entries idle past the visibility timeout.
    Claim,
    /// Read new entries.
    New,
}

/// What one pipeline of a take found.
#[derive(Default)]
struct Round {
    entries: Vec<(String, Vec<u8>)>,
    next_due_ms: Option<u64>,
    /// Due retries were moved back into the stream after this round's read.
    moved_late: bool,
}

/// A pipeline reply: an error reply becomes an error.
fn ok(v: Value) -> Result<Value, QueueError> {
    match v {
        Value::ServerError(e) => Err(unavailable(e)),
        v => Ok(v),
    }
}

/// Stream entries taken apart by value, `[[id, [field, value, ...]], ...]`
/// → `(stream id, the "p" field)`: the records move out of the reply
/// instead of being copied. An entry deleted meanwhile (no fields) is left out.
fn entries_of(v: Value) -> Vec<(String, Vec<u8>)> {
    let Value::Array(list) = v else { return Vec::new() };
    let mut out = Vec::with_capacity(list.len());
    for e in list {
        let Value::Array(parts) = e else { continue };
        let mut parts = parts.into_iter();
        let (Some(Value::BulkString(id)), Some(Value::Array(fields))) = (parts.next(), parts.next()) else { continue };
        let Ok(id) = String::from_utf8(id) else { continue };
        let mut fields = fields.into_iter();
        while let (Some(k), Some(v)) = (fields.next(), fields.next()) {
            if let (Value::BulkString(k), Value::BulkString(v)) = (k, v)
                && k == b"p"
            {
                out.push((id, v));
                break;
            }
        }
    }
    out
}

/// The API's name for a dead letter: the route's key in hex, a dot, the queue ID.
fn entry_name(route: &RouteKey, id: &str) -> String {
    format!("{}.{id}", hex::encode(route.as_bytes()))
}

fn parse_entry(entry: &str) -> Option<(RouteKey, &str)> {
    let (route, id) = entry.split_once('.')?;
    let route = RouteKey::from_bytes(&hex::decode(route).ok()?)?;
    (!id.is_empty()).then_some((route, id))
}

impl RedisQueue {
    pub fn new(cfg: &RedisConfig, visibility: Duration) -> Result<Self, QueueError> {
        let mut rnd = [0u8; 6];
        getrandom::fill(&mut rnd).map_err(unavailable)?;
        let tag = hex::encode(rnd);
        Ok(RedisQueue {
            conn: RedisConn::new(cfg).map_err(unavailable)?,
            prefix: cfg.key_prefix.clone(),
            consumer: format!("hg-{tag}"),
            visibility,
            groups: Mutex::default(),
            registered: Mutex::default(),
            resets: Mutex::default(),
            metrics: std::sync::OnceLock::new(),
            alerts: std::sync::OnceLock::new(),
            claimed_at: Mutex::default(),
            done_waiting: Mutex::default(),
            scripts: Scripts {
                enqueue: Script::new(ENQUEUE),
                hand_back: Script::new(HAND_BACK),
                depth: Script::new(DEPTH),
                rate: Script::new(super::rate::GCRA),
                promote: Script::new(PROMOTE),
                park: Script::new(PARK),
                revive: Script::new(REVIVE),
                delete: Script::new(DELETE),
                sweep: Script::new(SWEEP),
            },
            order: order::Scripts::default(),
            counter: AtomicU64::new(0),
            id_base: tag,
        })
    }

    fn keys(&self, route: &RouteKey) -> Keys {
        Keys {
            stream: self.key(route, 's'),
            delayed: self.key(route, 'd'),
            dead: self.key(route, 'x'),
            hash: self.key(route, 'h'),
            heads: self.key_named(route, "oh"),
            retrying: self.key_named(route, "or"),
        }
    }

    /// One of `route`'s keys (see the module docs); a delivered outcome
    /// builds only its stream's.
    fn key(&self, route: &RouteKey, kind: char) -> String {
        let mut buf = [0u8; 4];
        self.key_named(route, kind.encode_utf8(&mut buf))
    }

    fn key_named(&self, route: &RouteKey, kind: &str) -> String {
        // A legacy key (by position) is the stream the previous versions wrote.
        match route.legacy_index() {
            Some(i) => format!("{}{{{}:{i}}}:{kind}", self.prefix, route.source()),
            None => format!("{}{{{}:{}}}:{kind}", self.prefix, route.source(), route.identity()),
        }
    }

    async fn query(&self, cmd: &redis::Cmd) -> Result<Value, QueueError> {
        self.conn.query(cmd).await.map_err(|_| unavailable("Redis did not answer in time"))?.map_err(unavailable)
    }

    async fn eval(&self, script: &Script, keys: &[&str], args: &[&[u8]]) -> Result<Value, QueueError> {
        self.conn
            .eval(script, keys, args)
            .await
            .map_err(|_| unavailable("Redis did not answer in time"))?
            .map_err(unavailable)
    }

    /// Entries this replica took and will not attempt (it is stopping) are
    /// handed to the other replicas now rather than after
    /// `visibility_timeout`: made as idle as that, so the next claiming take
    /// of any replica has them (an ordering key's lease stands for the key's
    /// head, see [`order`]). What another replica claimed meanwhile is left
    /// alone. Returns how many were handed back.
    pub async fn hand_back(&self, entries: &[TakenEntry]) -> Result<u64, QueueError> {
        let mut by_stream: HashMap<&str, Vec<&[u8]>> = HashMap::new();
        for e in entries {
            if let Handle::Redis { stream, stream_id, .. } = &e.handle {
                by_stream.entry(stream).or_default().push(stream_id.as_bytes());
            }
        }
        let idle = (self.visibility.as_millis() as u64).max(1).to_string();
        let mut handed = 0;
        for (stream, ids) in by_stream {
            let mut args = vec![self.consumer.as_bytes(), idle.as_bytes()];
            args.extend(ids);
            handed += int(&self.eval(&self.scripts.hand_back, &[stream], &args).await?);
        }
        Ok(handed)
    }

    pub async fn ping(&self) -> Result<(), QueueError> {
        self.query(&redis::cmd("PING")).await.map(drop)
    }

    pub async fn enqueue(&self, route: &RouteKey, entry: &NewEntry) -> Result<(), QueueError> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}-{}-{n}", entry.meta.received_ms, self.id_base);
        let record = pack(&id, &State::default(), &entry.encode());
        let k = self.keys(route);
        self.register(route).await?;
        // The marker makes a sender's retry after a late write idempotent; a
        // replay (SPEC §17) is not such a retry: a marker of its own.
        let mark = match entry.meta.replay {
            true => format!("{}:{}:replay:{id}", self.key(route, 'm'), entry.meta.id),
            false => format!("{}:{}", self.key(route, 'm'), entry.meta.id),
        };
        let ttl = ENQUEUE_MARK_TTL.as_millis().to_string();
        let stored = match &entry.meta.order_key {
            Some(key) => self.enqueue_ordered(route, &k, &mark, (&id, &record), key, &ttl).await?,
            None => int(&self.eval(&self.scripts.enqueue, &[&k.stream, &mark], &[&record, ttl.as_bytes()]).await?) == 1,
        };
        if !stored {
            tracing::info!(source = %entry.meta.source, delivery_id = %entry.meta.id, "queued delivery was stored already (an earlier try reached Redis late); not stored again");
        }
        Ok(())
    }

    /// Creates the route's consumer group once (from the stream's start, so
    /// entries added before any replica ran are delivered too).
    async fn ensure_group(&self, route: &RouteKey, k: &Keys) -> Result<(), QueueError> {
        if self.groups.lock().unwrap_or_else(|p| p.into_inner()).contains(route) {
            return Ok(());
        }
        let mut create = redis::cmd("XGROUP");
        create.arg("CREATE").arg(&k.stream).arg(GROUP).arg("0").arg("MKSTREAM");
        match self.conn.query(&create).await.map_err(|_| unavailable("Redis did not answer in time"))? {
            Ok(_) => {}
            Err(e) if e.to_string().contains("BUSYGROUP") => {}
            Err(e) => return Err(unavailable(e)),
        }
        self.groups.lock().unwrap_or_else(|p| p.into_inner()).insert(route.clone());
        Ok(())
    }

    fn forget_group(&self, route: &RouteKey) {
        self.groups.lock().unwrap_or_else(|p| p.into_inner()).remove(route);
    }

    pub async fn take(
        &self,
        route: &RouteKey,
        limit: usize,
        skip: &HashSet<String>,
        now_ms: u64,
    ) -> Result<Taken, QueueError> {
        let k = self.keys(route);
        self.ensure_group(route, &k).await?;
        // Claiming looks for entries idle past the visibility timeout, so
        // looking every quarter of it is enough (they wait at most 25% longer)
        // and spares the pending-list scan on nearly every take.
        let claim = limit > 0 && self.claim_due(route);
        let now = now_ms.to_string();
        // One round trip: due retries moved back, entries read (or claimed),
        // the next due retry. A claiming take reads new entries in a second
        // round trip when the claim left room.
        let mut round = match self.take_round(&k, Some(&now), if claim { Read::Claim } else { Read::New }, limit).await
        {
            Ok(round) => round,
            Err(e) => return Err(self.take_failed(route, e)),
        };
        // Only what was claimed may be one of this process's entries in
        // flight (`skip`): an entry read as new was stored again after its
        // last attempt ended (a retry moved back, the next of an ordering
        // key), however soon, even while that attempt is still being reaped.
        // Read and then left out, it would wait in the group's pending list
        // for `visibility_timeout`.
        let mut claimed = if claim { round.entries.len() } else { 0 };
        if claim {
            // A claim that filled the take may have left more idle entries (a
            // replica died or stopped holding many): the next take claims
            // again, rather than a take's worth per quarter of the timeout.
            let full = round.entries.len() >= limit;
            {
                let mut claimed_at = self.claimed_at.lock().unwrap_or_else(|p| p.into_inner());
                if full {
                    claimed_at.remove(route);
                } else {
                    claimed_at.insert(route.clone(), Instant::now());
                }
            }
            if !full {
                match self.take_round(&k, None, Read::New, limit - round.entries.len()).await {
                    Ok(more) => {
                        round.entries.extend(more.entries);
                        round.next_due_ms = more.next_due_ms;
                    }
                    // What was claimed is handed out; the next take meets the error again.
                    Err(e) => drop(self.take_failed(route, e)),
                }
            }
        }
        // Retries moved into the stream after this read (the script had to be
        // loaded first) are read by the next take, at once.
        let next_due_ms = if round.moved_late { Some(now_ms) } else { round.next_due_ms };
        let mut entries = round.entries;
        // A claimed entry of an ordering key is the key's lease: its key may
        // have been handed on from the head it was read for ([`order`]).
        if claimed > 0 {
            let resolved = match self.resolve(route, &entries[..claimed]).await {
                Ok(r) => r,
                // Left pending: claimed again by a later take.
                Err(e) => return Err(self.take_failed(route, e)),
            };
            let mut stale = Vec::new();
            for (i, r) in resolved.into_iter().enumerate() {
                match r {
                    order::Resolved::Own => {}
                    order::Resolved::Held { record, .. } => entries[i].1 = record,
                    order::Resolved::Stale => stale.push(i),
                }
            }
            for i in stale.into_iter().rev() {
                let (stream_id, _) = entries.remove(i);
                claimed -= 1;
                let mut pipe = redis::pipe();
                pipe.cmd("XACK").arg(&k.stream).arg(GROUP).arg(&stream_id).ignore();
                pipe.cmd("XDEL").arg(&k.stream).arg(&stream_id).ignore();
                drop(self.conn.pipe(&pipe).await);
            }
        }
        let stream: Arc<str> = k.stream.as_str().into();
        let mut out = Vec::with_capacity(entries.len());
        let read_at = Instant::now();
        for (i, (stream_id, record)) in entries.into_iter().enumerate() {
            let skip = if i < claimed { Some(skip) } else { None };
            out.extend(self.taken_entry(route, &stream, stream_id, record, skip, read_at));
        }
        Ok(Taken { entries: out, next_due_ms })
    }

    /// A stream entry (or a lease's next) as handed to a worker; `None` when
    /// its queue ID is in `skip` or its record is damaged.
    fn taken_entry(
        &self,
        route: &RouteKey,
        stream: &Arc<str>,
        stream_id: String,
        record: Vec<u8>,
        skip: Option<&HashSet<String>>,
        leased: Instant,
    ) -> Option<TakenEntry> {
        let record = bytes::Bytes::from(record);
        let parts = unpack(&record).and_then(|(id, state, bytes)| {
            if skip.is_some_and(|s| s.contains(&id)) {
                return Ok(None);
            }
            // The entry's header values and body are slices of the record.
            let stored = record.slice_ref(bytes);
            Ok(Some((id, state, NewEntry::decode(stored.clone())?, stored)))
        });
        let (id, state, entry, stored) = match parts {
            Ok(Some(parts)) => parts,
            Ok(None) => return None,
            Err(e) => {
                tracing::error!(error = %e, stream_id, "damaged queue record; leaving it");
                return None;
            }
        };
        let handle = Handle::Redis { route: route.clone(), stream: stream.clone(), stream_id, id, stored, leased };
        Some(TakenEntry { handle, state, entry })
    }

    /// A failed take: a stream without its group (deleted or flushed) makes
    /// the next take create the group again.
    fn take_failed(&self, route: &RouteKey, e: QueueError) -> QueueError {
        if e.to_string().contains("NOGROUP") {
            // This process made the group before it took: it is gone, and
            // with it what was stored (FLUSHALL, a restart without persistence).
            let had = self.groups.lock().unwrap_or_else(|p| p.into_inner()).contains(route);
            self.forget_group(route);
            if had {
                let n = {
                    let mut resets = self.resets.lock().unwrap_or_else(|p| p.into_inner());
                    let r = resets.entry(route.clone()).or_insert((0, std::time::SystemTime::now()));
                    *r = (r.0 + 1, std::time::SystemTime::now());
                    r.0
                };
                if let Some(m) = self.metrics.get() {
                    m.queue_store_reset(route.source(), &route.identity());
                }
                if let Some(a) = self.alerts.get() {
                    let what =
                        "its Redis stream or consumer group is gone (FLUSHALL, or Redis restarted without persistence)";
                    a.queue_lost(Some(route.source()), Some(&route.identity()), None, what);
                }
                tracing::error!(
                    source = route.source(),
                    route = %route.identity(),
                    times = n,
                    "the route's Redis stream or consumer group is gone: deliveries stored there were lost outside hookgate (FLUSHALL, or Redis restarted without persistence); run Redis with appendonly yes"
                );
            }
        }
        e
    }

    /// Reports lost streams to `alerts` from now on.
    pub fn set_alerts(&self, alerts: Arc<crate::telemetry::alerts::Alerts>) {
        let _ = self.alerts.set(alerts);
    }

    /// Counts lost streams in `metrics` from now on.
    pub fn set_metrics(&self, metrics: Arc<crate::metrics::Metrics>) {
        let _ = self.metrics.set(metrics);
    }

    /// How often `route`'s stream or group was found gone, and when last.
    pub fn resets(&self, route: &RouteKey) -> Option<(u64, std::time::SystemTime)> {
        self.resets.lock().unwrap_or_else(|p| p.into_inner()).get(route).copied()
    }

    /// One pipeline of a take (see [`RedisQueue::take`]): first, when
    /// `promote` holds now (unix ms), due retries are moved back into the stream.
    async fn take_round(&self, k: &Keys, promote: Option<&str>, read: Read, count: usize) -> Result<Round, QueueError> {
        let mut pipe = redis::pipe();
        // Each reply comes back, errors too: a script the server has not
        // cached must not hide what the read next to it took.
        pipe.ignore_errors();
        if let Some(now) = promote {
            pipe.cmd("EVALSHA")
                .arg(self.scripts.promote.sha())
                .arg(5)
                .arg(&k.stream)
                .arg(&k.delayed)
                .arg(&k.hash)
                .arg(&k.heads)
                .arg(&k.retrying)
                .arg(now)
                .arg(PROMOTE_BATCH);
        }
        match read {
            _ if count == 0 => {}
            Read::Claim => {
                let idle = (self.visibility.as_millis() as u64).max(1);
                pipe.cmd("XAUTOCLAIM")
                    .arg(&k.stream)
                    .arg(GROUP)
                    .arg(&self.consumer)
                    .arg(idle)
                    .arg("0-0")
                    .arg("COUNT")
                    .arg(count);
            }
            Read::New => {
                pipe.cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg(GROUP)
                    .arg(&self.consumer)
                    .arg("COUNT")
                    .arg(count)
                    .arg("STREAMS")
                    .arg(&k.stream)
                    .arg(">");
            }
        }
        pipe.cmd("ZRANGE").arg(&k.delayed).arg(0).arg(0).arg("WITHSCORES");
        let reply = match self.conn.pipe(&pipe).await {
            Ok(r) => r.map_err(unavailable)?,
            Err(_) => return Err(unavailable("Redis did not answer in time")),
        };
        let Value::Array(replies) = reply else {
            return Err(unavailable("unexpected reply to a queue take"));
        };
        let mut replies = replies.into_iter();
        let mut round = Round::default();
        if let Some(now) = promote {
            match replies.next() {
                Some(Value::ServerError(e)) if e.kind() == Some(redis::ServerErrorKind::NoScript) => {
                    let batch = PROMOTE_BATCH.to_string();
                    let args: [&[u8]; 2] = [now.as_bytes(), batch.as_bytes()];
                    let moved = int(&self.eval(&self.scripts.promote, &k.promote_keys(), &args).await?);
                    round.moved_late = moved > 0;
                }
                Some(v) => drop(ok(v)?),
                None => return Err(unavailable("short reply to a queue take")),
            }
        }
        if count > 0 {
            let taken = ok(replies.next().unwrap_or(Value::Nil))?;
            round.entries = match read {
                // `[cursor, entries, deleted ids]`
                Read::Claim => match taken {
                    Value::Array(parts) => parts.into_iter().nth(1).map(entries_of).unwrap_or_default(),
                    _ => Vec::new(),
                },
                // `[[stream, entries]]`, or nil when there is nothing new
                Read::New => match taken {
                    Value::Array(streams) => streams
                        .into_iter()
                        .next()
                        .and_then(|s| match s {
                            Value::Array(s) => s.into_iter().nth(1),
                            _ => None,
                        })
                        .map(entries_of)
                        .unwrap_or_default(),
                    _ => Vec::new(),
                },
            };
        }
        round.next_due_ms = match ok(replies.next().unwrap_or(Value::Nil))? {
            Value::Array(first) => first.get(1).map(int),
            _ => None,
        };
        Ok(round)
    }

    /// Whether this take should also claim other replicas' stale entries.
    fn claim_due(&self, route: &RouteKey) -> bool {
        let at = self.claimed_at.lock().unwrap_or_else(|p| p.into_inner()).get(route).copied();
        at.is_none_or(|t| t.elapsed() >= self.visibility / 4)
    }

    /// Records a delivered entry. The deliveries that finish in the same
    /// scheduler tick (on any thread) go to Redis together, one `XACK` and
    /// one `XDEL` per stream in one round trip: the first of them waits one
    /// yield for the rest, then sends them all. Before, each was a Lua call
    /// of its own (~7 us of Redis's one thread per delivery). A stream with
    /// ordered entries among them goes as one script call that also lets
    /// each one's next go ([`order`]).
    async fn done(
        &self,
        stream: Arc<str>,
        stream_id: String,
        order: Option<order::DoneOrder>,
    ) -> Result<Option<Vec<u8>>, QueueError> {
        let (tx, rx) = oneshot::channel();
        let lead = {
            let mut waiting = self.done_waiting.lock().unwrap_or_else(|p| p.into_inner());
            waiting.push(DoneWaiting { stream, stream_id, order, tx });
            waiting.len() == 1
        };
        if lead {
            let lead = DoneLead { waiting: &self.done_waiting, armed: true };
            tokio::task::yield_now().await;
            let mut batch = lead.take();
            batch.sort_unstable_by(|a, b| a.stream.cmp(&b.stream));
            while !batch.is_empty() {
                let n = batch.iter().take_while(|d| d.stream == batch[0].stream).count();
                let group: Vec<_> = batch.drain(..n).collect();
                // For each outcome, the record of its key's next when handed back.
                let result = if let Some(o) = group.iter().find_map(|d| d.order.as_ref()) {
                    self.done_ordered(&o.route, &group).await
                } else {
                    // Acknowledged, then deleted from the stream, in one round trip
                    // (no script: deleting an ID that another replica claimed and
                    // finished meanwhile is a no-op, so nothing needs checking).
                    let mut pipe = redis::pipe();
                    let ack = pipe.cmd("XACK").arg(&*group[0].stream).arg(GROUP);
                    for d in &group {
                        ack.arg(&d.stream_id);
                    }
                    let del = pipe.ignore().cmd("XDEL").arg(&*group[0].stream);
                    for d in &group {
                        del.arg(&d.stream_id);
                    }
                    pipe.ignore();
                    match self.conn.pipe(&pipe).await {
                        Ok(r) => r.map(|_| Vec::new()).map_err(unavailable),
                        Err(_) => Err(unavailable("Redis did not answer in time")),
                    }
                };
                match result {
                    Ok(nexts) => {
                        for (d, next) in group.into_iter().zip(nexts.into_iter().chain(std::iter::repeat(None))) {
                            let _ = d.tx.send(Ok(next));
                        }
                    }
                    Err(e) => {
                        for d in group {
                            let _ = d.tx.send(Err(e.clone()));
                        }
                    }
                }
            }
        }
        rx.await.unwrap_or_else(|_| Err(unavailable("the batch this outcome was in was cancelled")))
    }

    /// Records an attempt's outcome.
    pub async fn finish(&self, taken: &TakenEntry, t: &Transition) -> Result<(), QueueError> {
        self.finish_then(taken, t, false).await.map(drop)
    }

    /// Records an attempt's outcome; with `go_on`, a delivered head of an
    /// ordering key hands back the key's next for the caller to attempt
    /// (holding the key's lease, see [`order`]), instead of putting it into
    /// the stream for any replica to take.
    pub async fn finish_then(
        &self,
        taken: &TakenEntry,
        t: &Transition,
        go_on: bool,
    ) -> Result<Option<TakenEntry>, QueueError> {
        let Handle::Redis { route, stream, stream_id, id, stored, leased } = &taken.handle else {
            return Err(QueueError::BadInput("not a Redis queue entry"));
        };
        let order = taken.entry.meta.order_key.as_deref();
        let (dead, score, state) = match t {
            // The common case builds no key: its stream's came with the take.
            Transition::Done => {
                // A lease held a quarter of `visibility_timeout` is claimed
                // again (its idle time restarts) as its key goes on here.
                let refresh = leased.elapsed() >= self.visibility / 4;
                let go_on = match (go_on, refresh) {
                    (false, _) => order::GoOn::Stream,
                    (true, false) => order::GoOn::Here,
                    (true, true) => order::GoOn::HereRefreshed,
                };
                let order = order.map(|key| order::DoneOrder {
                    route: route.clone(),
                    id: id.clone(),
                    key: key.to_owned(),
                    go_on,
                });
                let Some(record) = self.done(stream.clone(), stream_id.clone(), order).await? else {
                    return Ok(None);
                };
                // The next holds the same lease: the head's stream entry.
                let leased = if refresh { Instant::now() } else { *leased };
                return Ok(self.taken_entry(route, stream, stream_id.clone(), record, None, leased));
            }
            Transition::Retry { due_ms, state } => (false, *due_ms, state),
            Transition::Dead { state } => (true, state.dead_ms.unwrap_or(0), state),
        };
        let k = self.keys(route);
        let set = if dead { &k.dead } else { &k.delayed };
        let record = pack(id, state, stored);
        let score = score.to_string();
        if let Some(key) = order {
            if !self.failed_ordered(route, dead, (stream_id, id), key, &score, &record).await? {
                tracing::debug!(id, "queue entry was claimed by another replica meanwhile; its outcome is theirs");
            }
            return Ok(None);
        }
        let claimed = self
            .eval(
                &self.scripts.park,
                &[&k.stream, set, &k.hash],
                &[stream_id.as_bytes(), id.as_bytes(), score.as_bytes(), &record],
            )
            .await?;
        if int(&claimed) == 0 {
            tracing::debug!(id, "queue entry was claimed by another replica meanwhile; its outcome is theirs");
        }
        Ok(None)
    }

    pub async fn depth(&self, route: &RouteKey) -> Result<(Counts, u64), QueueError> {
        let k = self.keys(route);
        let parked = self.order_keys(route).next;
        let keys = [k.stream.as_str(), &k.delayed, &k.dead, &parked];
        let v = self.eval(&self.scripts.depth, &keys, &[GROUP.as_bytes()]).await?;
        let n: Vec<u64> = items(&v).iter().map(int).collect();
        let [len, taken, scheduled, dead, parked] = n[..] else {
            return Err(unavailable(format!("Redis answered the depth script with {v:?}")));
        };
        Ok((Counts { pending: len.saturating_sub(taken) + parked, scheduled, dead }, taken))
    }

    /// When the oldest stored delivery that is neither done nor dead arrived:
    /// never handed out, or waiting for a retry (SPEC §12). Queue IDs start
    /// with the arrival time; retries are looked at up to the first 10000 by
    /// due time.
    pub async fn oldest_pending_ms(&self, route: &RouteKey) -> Option<u64> {
        let fresh = self.oldest_fresh_ms(route).await;
        let k = self.keys(route);
        let ids = self.query(redis::cmd("ZRANGE").arg(&k.delayed).arg(0).arg(9_999)).await.ok();
        let retry = ids
            .as_ref()
            .map(items)
            .unwrap_or_default()
            .iter()
            .filter_map(text)
            .filter_map(|id| id.split('-').next().and_then(|ms| ms.parse::<u64>().ok()))
            .min();
        match (fresh, retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The oldest entry not yet handed to any replica (after the group's last delivered ID).
    async fn oldest_fresh_ms(&self, route: &RouteKey) -> Option<u64> {
        let k = self.keys(route);
        let groups = self.query(redis::cmd("XINFO").arg("GROUPS").arg(&k.stream)).await.ok()?;
        let last = items(&groups).iter().find_map(|g| {
            let f = items(g);
            let name = f.chunks(2).find(|kv| kv.first().and_then(text).as_deref() == Some("name"))?;
            if name.get(1).and_then(text).as_deref() != Some(GROUP) {
                return None;
            }
            f.chunks(2)
                .find(|kv| kv.first().and_then(text).as_deref() == Some("last-delivered-id"))?
                .get(1)
                .and_then(text)
        });
        let start = last.map_or_else(|| "-".to_owned(), |l| format!("({l}"));
        let v = self.query(redis::cmd("XRANGE").arg(&k.stream).arg(start).arg("+").arg("COUNT").arg(1)).await.ok()?;
        let (_, record) = entries_of(v).into_iter().next()?;
        let (_, _, bytes) = unpack(&record).ok()?;
        NewEntry::decode_meta(bytes).ok().map(|m| m.received_ms)
    }

    /// A page of `route`'s waiting deliveries: the stream (never attempted, or
    /// taken and not finished) by arrival, then retries by due time. The
    /// cursor is `s<stream id>` (after it) or `d<offset>` (into the retries).
    pub async fn waiting(
        &self,
        route: &RouteKey,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<super::WaitingPage, QueueError> {
        let bad = || QueueError::BadInput("unknown cursor");
        let k = self.keys(route);
        let mut page = super::WaitingPage::default();
        let mut offset = 0usize;
        let stream_from = match cursor {
            None => Some("-".to_owned()),
            Some(c) if c.starts_with('s') => Some(format!("({}", &c[1..])),
            Some(c) if c.starts_with('d') => {
                offset = c[1..].parse().map_err(|_| bad())?;
                None
            }
            Some(_) => return Err(bad()),
        };
        if let Some(from) = stream_from {
            let v =
                self.query(redis::cmd("XRANGE").arg(&k.stream).arg(&from).arg("+").arg("COUNT").arg(limit + 1)).await?;
            let mut last: Option<String> = None;
            let entries = entries_of(v);
            // An ordering key's lease stands for the head it was handed on to.
            let resolved = self.resolve(route, &entries).await?;
            for (i, ((stream_id, own), r)) in entries.into_iter().zip(resolved).enumerate() {
                if i == limit {
                    page.next = last.map(|l| format!("s{l}"));
                    return Ok(page);
                }
                last = Some(stream_id);
                let record = match r {
                    order::Resolved::Own => own,
                    order::Resolved::Held { record, .. } => record,
                    order::Resolved::Stale => continue,
                };
                let Ok((id, state, bytes)) = unpack(&record) else { continue };
                let Ok(meta) = NewEntry::decode_meta(bytes) else { continue };
                let entry = entry_name(route, &id);
                page.items.push(super::WaitingItem { entry, route: route.clone(), meta, state, next_attempt_ms: None });
            }
        }
        let room = limit - page.items.len();
        if room == 0 {
            page.next = Some("d0".into());
            return Ok(page);
        }
        let v =
            self.query(redis::cmd("ZRANGE").arg(&k.delayed).arg(offset).arg(offset + room).arg("WITHSCORES")).await?;
        for (n, pair) in items(&v).chunks(2).enumerate() {
            if n == room {
                page.next = Some(format!("d{}", offset + room));
                break;
            }
            let (Some(id), Some(score)) = (pair.first().and_then(text), pair.get(1).and_then(text)) else { continue };
            let Value::BulkString(record) = self.query(redis::cmd("HGET").arg(&k.hash).arg(&id)).await? else {
                continue;
            };
            let Ok((_, state, bytes)) = unpack(&record) else { continue };
            let Ok(meta) = NewEntry::decode_meta(bytes) else { continue };
            let due = score.parse::<f64>().unwrap_or(0.0) as u64;
            page.items.push(super::WaitingItem {
                entry: entry_name(route, &id),
                route: route.clone(),
                meta,
                state,
                next_attempt_ms: Some(due),
            });
        }
        Ok(page)
    }

    /// Newest first across `routes` (by time of death, then entry); the cursor
    /// is `"<dead ms>:<entry>"` of the last item shown.
    pub async fn dead_list(
        &self,
        routes: &[RouteKey],
        source: Option<&str>,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<DeadPage, QueueError> {
        let after = match cursor {
            None => None,
            Some(c) => {
                let (ms, entry) = c.split_once(':').ok_or(QueueError::BadInput("unknown cursor"))?;
                Some((ms.parse::<u64>().map_err(|_| QueueError::BadInput("unknown cursor"))?, entry.to_owned()))
            }
        };
        let max = after.as_ref().map_or_else(|| "+inf".to_owned(), |(ms, _)| ms.to_string());
        let mut found: Vec<(u64, String, RouteKey, String)> = Vec::new();
        for route in routes.iter().filter(|r| source.is_none_or(|s| s == r.source())) {
            let k = self.keys(route);
            // Enough to fill a page even when some share the cursor's time.
            let mut range = redis::cmd("ZREVRANGEBYSCORE");
            range.arg(&k.dead).arg(&max).arg("-inf").arg("WITHSCORES").arg("LIMIT").arg(0).arg(limit + 1 + 64);
            let v = self.query(&range).await?;
            for pair in items(&v).chunks(2) {
                let (Some(id), Some(score)) = (pair.first().and_then(text), pair.get(1)) else { continue };
                let ms = text(score).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0) as u64;
                found.push((ms, entry_name(route, &id), route.clone(), id));
            }
        }
        found.sort_by(|a, b| (b.0, &b.1).cmp(&(a.0, &a.1)));
        if let Some((ms, entry)) = &after {
            found.retain(|f| (f.0, &f.1) < (*ms, entry));
        }
        let more = found.len() > limit;
        found.truncate(limit);
        let mut page = DeadPage::default();
        for (ms, entry, route, id) in &found {
            let k = self.keys(route);
            let Value::BulkString(record) = self.query(redis::cmd("HGET").arg(&k.hash).arg(id)).await? else {
                continue;
            };
            let Ok((_, state, bytes)) = unpack(&record) else { continue };
            let Ok(meta) = NewEntry::decode_meta(bytes) else { continue };
            let (entry, route) = (entry.clone(), route.clone());
            page.items.push(DeadItem { entry, route, meta, state: State { dead_ms: Some(*ms), ..state } });
        }
        if more {
            page.next = found.last().map(|(ms, entry, _, _)| format!("{ms}:{entry}"));
        }
        Ok(page)
    }

    async fn revive(&self, route: &RouteKey, id: &str) -> Result<bool, QueueError> {
        let k = self.keys(route);
        let Value::BulkString(record) = self.query(redis::cmd("HGET").arg(&k.hash).arg(id)).await? else {
            return Ok(false);
        };
        let (_, _, bytes) = unpack(&record).map_err(damaged)?;
        let fresh = pack(id, &State::default(), bytes);
        if let Some(key) = NewEntry::decode_meta(bytes).ok().and_then(|m| m.order_key) {
            return self.revive_ordered(route, id, &fresh, &key).await;
        }
        let v = self.eval(&self.scripts.revive, &[&k.stream, &k.dead, &k.hash], &[id.as_bytes(), &fresh]).await?;
        Ok(int(&v) == 1)
    }

    /// The hash of paused routes shared by every replica (SPEC §16): field =
    /// the route key in hex, value = `<since unix ms> <reason>`.
    fn paused_key(&self) -> String {
        format!("{}paused", self.prefix)
    }

    pub async fn pause_write(&self, route: &RouteKey, pause: Option<&super::pause::Pause>) -> Result<(), QueueError> {
        let cmd = match pause {
            Some(p) => {
                let (field, value) = p.encode(route);
                let mut c = redis::cmd("HSET");
                c.arg(self.paused_key()).arg(field).arg(value);
                c
            }
            None => {
                let mut c = redis::cmd("HDEL");
                c.arg(self.paused_key()).arg(hex::encode(route.as_bytes()));
                c
            }
        };
        self.query(&cmd).await.map(drop)
    }

    pub async fn pauses_read(&self) -> Result<Vec<(RouteKey, super::pause::Pause)>, QueueError> {
        let v = self.query(redis::cmd("HGETALL").arg(self.paused_key())).await?;
        let flat: Vec<String> = items(&v).iter().filter_map(text).collect();
        Ok(flat.chunks(2).filter_map(|kv| super::pause::Pause::decode(kv.first()?, kv.get(1)?)).collect())
    }

    /// Up to `want` of `route`'s rate permits, shared by every replica: how
    /// many, and how long until the next (SPEC §16).
    pub async fn rate_permits(
        &self,
        route: &RouteKey,
        rate: super::rate::Rate,
        want: usize,
    ) -> Result<(usize, Duration), QueueError> {
        let interval = rate.interval().as_micros().to_string();
        let tau = (rate.interval() * (rate.burst() - 1)).as_micros().to_string();
        let want = want.to_string();
        let key = self.key(route, 'r');
        let v = self.eval(&self.scripts.rate, &[&key], &[interval.as_bytes(), tau.as_bytes(), want.as_bytes()]).await?;
        let pair = items(&v);
        let granted = pair.first().map_or(0, int) as usize;
        let wait_us = pair.get(1).map_or(0, int);
        Ok((granted, Duration::from_micros(wait_us)))
    }

    pub async fn dead_retry_one(&self, entry: &str) -> Result<usize, QueueError> {
        let Some((route, id)) = parse_entry(entry) else { return Ok(0) };
        Ok(usize::from(self.revive(&route, id).await?))
    }

    pub async fn dead_retry_all(&self, routes: &[RouteKey], source: Option<&str>) -> Result<usize, QueueError> {
        let mut n = 0;
        for route in routes.iter().filter(|r| source.is_none_or(|s| s == r.source())) {
            let k = self.keys(route);
            let ids = self.query(redis::cmd("ZRANGE").arg(&k.dead).arg(0).arg(-1)).await?;
            for id in items(&ids).iter().filter_map(text) {
                n += usize::from(self.revive(route, &id).await?);
            }
        }
        Ok(n)
    }

    /// Drops a dead letter; `None` when there was none, else its meta (when readable).
    pub async fn dead_delete(&self, entry: &str) -> Result<Option<Option<crate::queue::Meta>>, QueueError> {
        let Some((route, id)) = parse_entry(entry) else { return Ok(None) };
        let k = self.keys(&route);
        let v = self.eval(&self.scripts.delete, &[&k.dead, &k.hash], &[id.as_bytes()]).await?;
        Ok(match v {
            redis::Value::BulkString(record) => {
                Some(unpack(&record).ok().and_then(|(_, _, bytes)| NewEntry::decode_meta(bytes).ok()))
            }
            redis::Value::SimpleString(_) | redis::Value::Okay => Some(None),
            _ => None,
        })
    }

    pub async fn sweep(&self, routes: &[RouteKey], older_than_ms: u64) -> Result<usize, QueueError> {
        let cutoff = older_than_ms.to_string();
        let mut n = 0;
        for route in routes {
            let k = self.keys(route);
            n += int(&self.eval(&self.scripts.sweep, &[&k.dead, &k.hash], &[cutoff.as_bytes()]).await?) as usize;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names_round_trip() {
        let r = RouteKey::new("tampa.dev/x", "orders");
        let name = entry_name(&r, "1700000000000-abc-7");
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-'), "{name}");
        assert_eq!(parse_entry(&name), Some((r, "1700000000000-abc-7")));
        assert_eq!(parse_entry("zz.1"), None);
        assert_eq!(parse_entry("nodot"), None);
    }
}
