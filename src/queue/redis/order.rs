//! Ordering by key in Redis (SPEC §16 `order_by`), for all replicas
//! together: of a route's deliveries with the same key, only the key's head
//! is in flight (or waiting for a retry); the others wait, by arrival, in a
//! chain behind it. Each step is one script on the route's keys (one hash
//! tag, so one Cluster slot; every key a script touches is named in its KEYS):
//!
//! - `…:oh` — a hash: key → `<queue ID of its head> <stream ID of its lease>`,
//!   or the queue ID alone while the head waits for a retry;
//! - `…:on` — a hash: queue ID → the queue ID that waits next behind it, of
//!   the same key (head → first parked → second parked …); the parked
//!   records wait in `…:h`;
//! - `…:ot` — a hash: key → the queue ID last parked behind it (where the
//!   next arrival joins; it may name the head, once all before it went);
//! - `…:or` — a hash: queue ID of a head waiting for a retry → its key, so
//!   the retry back in the stream gives its key a lease again.
//!
//! **The lease.** A key's first head goes into the stream; the stream entry
//! a replica reads it from is the key's lease. When the head is delivered,
//! the replica that delivered it goes on with the key's next itself: the
//! outcome's script hands the next's record back and makes it the head on
//! the same lease, which stays in the group's pending list. So a key's
//! deliveries after the first pass through the stream not at all (no `XADD`,
//! read, `XACK` or `XDEL` each, nor their AOF writes); the next's record
//! stays in `…:h` until its own outcome. The lease ends (`XACK`, `XDEL`) when
//! the key has nothing left, when its head's attempt fails (a retry goes
//! through the retry set and the stream as any, and gets a new lease; a dead
//! letter puts the next into the stream), or when the replica does not go on
//! (the route has a `rate`, is paused, or the replica is shutting down: the
//! next goes into the stream for any replica to take).
//!
//! A replica that dies holding a lease leaves it pending: another claims it
//! after `visibility_timeout` and reads the record of the key's head of now
//! (`RESOLVE`), not the one the entry was added with; `GET /queue/waiting`,
//! orphan moves and `hookgate queue move` read a lease the same way. A
//! replica that goes on with a key for long claims its lease again (which
//! restarts its idle time) once it has held it a quarter of the timeout.
//!
//! An outcome counts only from the key's lease and head of now (`whose`): a
//! replica whose head was claimed by another meanwhile (its attempt outlived
//! the timeout) changes nothing once the other's outcome was recorded, so a
//! key is never handed on twice, nor past a retry.
//!
//! Each parked entry is the target of exactly one link, so `HLEN …:on` is how
//! many are parked (for `/queue`).
//!
//! (Before 0.3.0 was released, parked entries were one sorted set searched
//! by key per release, then a list per key popped per release, then each
//! released next went into the stream. Chains in hashes let one batch's
//! releases look up every next in one `HMGET`; the lease took Redis's time
//! per ordered delivery of a 10,000-key drain from 26-35 us to 11.5-14.4 us,
//! against 7-8 unordered.)

use redis::Value;

use super::{Keys, QueueError, RedisQueue, RouteKey, int};
use crate::redis_conn::Script;

/// What stands for an ordered stream entry read again (see [`RESOLVE`]).
pub(super) enum Resolved {
    /// Its own record.
    Own,
    /// Its key was handed on: the record (queue ID `id`) of the head it holds the lease of.
    Held { id: String, record: Vec<u8> },
    /// A lease with nothing behind it any more.
    Stale,
}

/// An ordered delivery's outcome waiting in a batch ([`RedisQueue::done`]).
pub(super) struct DoneOrder {
    pub route: RouteKey,
    pub id: String,
    pub key: String,
    pub go_on: GoOn,
}

/// How a delivered head's key goes on (see [`DONE`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum GoOn {
    /// Its next into the stream, for any replica to take.
    Stream,
    /// Its next handed back to this replica.
    Here,
    /// Handed back, and the lease's idle time restarted.
    HereRefreshed,
}

impl GoOn {
    fn as_arg(self) -> &'static str {
        match self {
            GoOn::Stream => "0",
            GoOn::Here => "1",
            GoOn::HereRefreshed => "2",
        }
    }
}

/// The Lua that puts a record (`ARGV[2]`, queue ID `ARGV[1]`, key `ARGV[3]`)
/// in the stream as its key's head, or parks it at the end of its key's
/// chain. KEYS: stream, hash, heads, tails, next.
macro_rules! admit {
    () => {
        r"local head = redis.call('HGET', KEYS[3], ARGV[3])
  if not head then
    local sid = redis.call('XADD', KEYS[1], '*', 'p', ARGV[2])
    redis.call('HSET', KEYS[3], ARGV[3], ARGV[1] .. ' ' .. sid)
    redis.call('HDEL', KEYS[2], ARGV[1])
  else
    local last = redis.call('HGET', KEYS[4], ARGV[3]) or string.match(head, '^%S+')
    redis.call('HSET', KEYS[5], last, ARGV[1])
    redis.call('HSET', KEYS[4], ARGV[3], ARGV[1])
    redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
  end"
    };
}

/// An enqueue (once per delivery, as [`super::ENQUEUE`]). KEYS: as
/// [`admit`], and the marker. ARGV: queue ID, record, key, marker TTL.
const ENQUEUE: &str = concat!(
    r"if redis.call('SET', KEYS[6], '1', 'NX', 'PX', ARGV[4]) then
  ",
    admit!(),
    r"
  return 1
end
return 0"
);

/// A dead letter back, behind its key's waiting deliveries if it has a head.
/// KEYS: as [`admit`], and the dead set. ARGV: queue ID, record, key.
const REVIVE: &str = concat!(
    r"if redis.call('ZREM', KEYS[6], ARGV[1]) == 1 then
  ",
    admit!(),
    r"
  return 1
end
return 0"
);

/// The Lua functions of the scripts that let parked entries go. KEYS: as
/// [`admit`].
///
/// - `many(cmd, key, extra, items)` calls `cmd key [extra] items…` in chunks
///   (Lua's `unpack` has a limit) and returns the replies' items together;
/// - `release(keys, ids, leases, go, at, out)` lets the next of each key
///   `keys[j]`, whose head `ids[j]` is done or dead, go. Where `go[j]` is
///   `'1'` the replica that finished the head attempts the next itself: the
///   next's record goes into `out[at[j]]` (and stays in `…:h` until its own
///   outcome), and the head's stream entry `leases[j]` stays in the group's
///   pending list as the key's lease, so a replica that dies holding it
///   leaves it to be claimed (see [`RESOLVE`]). Else the next goes into the
///   stream as its key's new head, and the lease (if any) is acknowledged and
///   deleted, as when the key has no next. A parked ID whose record is gone
///   is skipped. Each step is one command for all the keys together but the
///   `XADD`s: Lua's own work per `redis.call` is about 1-2 us of Redis's
///   time, as much as a command's.
macro_rules! release_fns {
    () => {
        concat!(
            whose_fn!(),
            r"local function many(cmd, key, extra, items)
  local out = {}
  for i = 1, #items, 500 do
    local args = {}
    if extra then args[1] = extra end
    for j = i, math.min(i + 499, #items) do args[#args + 1] = items[j] end
    local r = redis.call(cmd, key, unpack(args))
    if type(r) == 'table' then
      for _, v in ipairs(r) do out[#out + 1] = v end
    end
  end
  return out
end
local function release(keys, ids, leases, go, at, out)
  local sets, gone, drop, ack = {}, {}, {}, {}
  while #keys > 0 do
    local nexts = many('HMGET', KEYS[5], nil, ids)
    many('HDEL', KEYS[5], nil, ids)
    local nk, ni, nl, ng, na = {}, {}, {}, {}, {}
    for j = 1, #keys do
      if nexts[j] then
        nk[#nk + 1], ni[#ni + 1], nl[#nl + 1], ng[#ng + 1], na[#na + 1] = keys[j], nexts[j], leases[j], go[j], at[j]
      else
        gone[#gone + 1] = keys[j]
        if leases[j] then ack[#ack + 1] = leases[j] end
      end
    end
    keys, ids, leases, go, at = {}, {}, {}, {}, {}
    if #ni > 0 then
      local records = many('HMGET', KEYS[2], nil, ni)
      for j = 1, #ni do
        if records[j] then
          sets[#sets + 1] = nk[j]
          if ng[j] ~= '0' then
            out[na[j]] = records[j]
            sets[#sets + 1] = ni[j] .. ' ' .. nl[j]
          else
            sets[#sets + 1] = ni[j] .. ' ' .. redis.call('XADD', KEYS[1], '*', 'p', records[j])
            drop[#drop + 1] = ni[j]
            if nl[j] then ack[#ack + 1] = nl[j] end
          end
        else
          local n = #keys + 1
          keys[n], ids[n], leases[n], go[n], at[n] = nk[j], ni[j], nl[j], ng[j], na[j]
        end
      end
    end
  end
  if #ack > 0 then
    many('XACK', KEYS[1], 'hookgate', ack)
    many('XDEL', KEYS[1], nil, ack)
  end
  if #drop > 0 then many('HDEL', KEYS[2], nil, drop) end
  if #sets > 0 then many('HSET', KEYS[3], nil, sets) end
  if #gone > 0 then
    many('HDEL', KEYS[3], nil, gone)
    many('HDEL', KEYS[4], nil, gone)
  end
end
"
        )
    };
}

/// `whose(head, sid, id)`: what the stream entry `sid`, read for queue ID
/// `id`, is to its key, whose `…:oh` value is `head` (`<queue ID> <lease>`,
/// or `<queue ID>` alone while the head waits for a retry):
///
/// - `'mine'`: the key's lease, and `id` is still its head;
/// - `'moved'`: the key's lease, but its key was handed on to the head
///   `hid` (the second value) since;
/// - `'other'`: not the key's lease (the key has no head, waits for a retry
///   or is led by another entry; or the entry came in by an orphan move): an
///   entry of its own, as if not ordered.
macro_rules! whose_fn {
    () => {
        r"local function whose(head, sid, id)
  if not head then return 'other' end
  local hid, hsid = string.match(head, '^(%S+) ?(%S*)$')
  if hsid ~= sid then return 'other' end
  if hid == id then return 'mine' end
  return 'moved', hid
end
"
    };
}

/// The part [`DEAD`] and [`RETRY`] share: unless the entry is not this
/// replica's any more (`'moved'`, or `XACK` found nothing: return 0), it
/// leaves the stream and its record (`ARGV[4]`) goes into the hash, its
/// queue ID into the sorted set `KEYS[6]` at `ARGV[3]`; `w` says what the
/// entry was to its key.
macro_rules! set_aside {
    () => {
        r"local w = whose(redis.call('HGET', KEYS[3], ARGV[5]), ARGV[1], ARGV[2])
if w == 'moved' then return 0 end
if redis.call('XACK', KEYS[1], 'hookgate', ARGV[1]) == 0 then return 0 end
redis.call('XDEL', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[4])
redis.call('ZADD', KEYS[6], ARGV[3], ARGV[2])
"
    };
}

/// A head's outcome, dead (its record `ARGV[4]` into the dead set `KEYS[6]`
/// at score `ARGV[3]`), then the next of its key into the stream. Nothing
/// when the entry is not this replica's any more: another replica's outcome
/// of it handed its key on (`'moved'`), or took its stream entry (`XACK`
/// found nothing). KEYS: as [`admit`], the dead set, the retrying heads
/// (unused). ARGV: stream ID, queue ID, score, record, key.
const DEAD: &str = concat!(
    release_fns!(),
    set_aside!(),
    r"if w == 'mine' then release({ARGV[5]}, {ARGV[2]}, {false}, {'0'}, {0}, {}) end
return 1"
);

/// A head's retry (its record `ARGV[4]` into the retry set `KEYS[6]` at due
/// time `ARGV[3]`), checked as [`DEAD`]. The key keeps its head, without a
/// lease until the retry is back in the stream: `…:or` (`KEYS[7]`) names its
/// key for [`super::PROMOTE`]. KEYS and ARGV: as [`DEAD`].
const RETRY: &str = concat!(
    whose_fn!(),
    set_aside!(),
    r"if w == 'mine' then
  redis.call('HSET', KEYS[3], ARGV[5], ARGV[2])
  redis.call('HSET', KEYS[7], ARGV[2], ARGV[5])
end
return 1"
);

/// Deliveries of one stream done together (one scheduler tick's, as the
/// unordered `XACK`/`XDEL` batch). ARGV: this replica's consumer name, then
/// quadruples of stream ID, queue ID, key (empty: not ordered) and how the
/// key goes on (`'0'`: its next into the stream; `'1'`: handed back to this
/// replica; `'2'`: handed back, and the lease claimed again, which restarts
/// its idle time so no other replica claims a key handed on for long).
/// Returns one item per quadruple: the record of the key's next when it is
/// handed back, else nil. KEYS: as [`admit`].
///
/// An ordered entry's outcome counts only while it is `'mine'` (see
/// `whose`): another replica may have claimed it meanwhile and handed its
/// key on, or scheduled a retry. An `'other'` entry is acknowledged as a
/// plain one.
const DONE: &str = concat!(
    release_fns!(),
    r"local out, plain, keys, ids, leases, go, at = {}, {}, {}, {}, {}, {}, {}
for i = 2, #ARGV, 4 do
  local n = #out + 1
  out[n] = false
  if ARGV[i + 2] == '' then
    plain[#plain + 1] = ARGV[i]
  else
    local m = #keys + 1
    keys[m], ids[m], leases[m], go[m], at[m] = ARGV[i + 2], ARGV[i + 1], ARGV[i], ARGV[i + 3], n
  end
end
if #keys > 0 then
  local heads, refresh = many('HMGET', KEYS[3], nil, keys), {}
  local k2, i2, l2, g2, a2 = {}, {}, {}, {}, {}
  for j = 1, #keys do
    local w = whose(heads[j], leases[j], ids[j])
    if w == 'mine' then
      local m = #k2 + 1
      k2[m], i2[m], l2[m], g2[m], a2[m] = keys[j], ids[j], leases[j], go[j], at[j]
      if go[j] == '2' then refresh[#refresh + 1] = leases[j] end
    elseif w == 'other' then
      plain[#plain + 1] = leases[j]
    end
  end
  for i = 1, #refresh, 500 do
    local args = {'hookgate', ARGV[1], 0}
    for j = i, math.min(i + 499, #refresh) do args[#args + 1] = refresh[j] end
    args[#args + 1] = 'JUSTID'
    redis.call('XCLAIM', KEYS[1], unpack(args))
  end
  if #i2 > 0 then
    many('HDEL', KEYS[2], nil, i2)
    release(k2, i2, l2, g2, a2, out)
  end
end
if #plain > 0 then
  many('XACK', KEYS[1], 'hookgate', plain)
  many('XDEL', KEYS[1], nil, plain)
end
return out"
);

/// Which record stands for each ordered stream entry read again (claimed
/// after its replica stopped, listed, moved): a lease's entry holds the
/// record of the head it was read for, but its key may have been handed on
/// since (see `release`). ARGV: triples of stream ID, queue ID and key.
/// Returns one item per triple: 0 when the entry stands for itself, the
/// record of the head its key was handed on to (from `…:h`), or 1 when that
/// is gone. KEYS: heads, hash.
const RESOLVE: &str = concat!(
    whose_fn!(),
    r"local out = {}
for i = 1, #ARGV, 3 do
  local w, hid = whose(redis.call('HGET', KEYS[1], ARGV[i + 2]), ARGV[i], ARGV[i + 1])
  if w == 'moved' then
    out[#out + 1] = redis.call('HGET', KEYS[2], hid) or 1
  else
    out[#out + 1] = 0
  end
end
return out"
);

pub(super) struct Scripts {
    enqueue: Script,
    revive: Script,
    dead: Script,
    retry: Script,
    done: Script,
    resolve: Script,
}

impl Default for Scripts {
    fn default() -> Self {
        Scripts {
            enqueue: Script::new(ENQUEUE),
            revive: Script::new(REVIVE),
            dead: Script::new(DEAD),
            retry: Script::new(RETRY),
            done: Script::new(DONE),
            resolve: Script::new(RESOLVE),
        }
    }
}

/// A route's ordering keys (see the module docs).
pub(super) struct OrderKeys {
    pub heads: String,
    pub tails: String,
    pub next: String,
    pub retrying: String,
}

impl RedisQueue {
    pub(super) fn order_keys(&self, route: &RouteKey) -> OrderKeys {
        OrderKeys {
            heads: self.key_named(route, "oh"),
            tails: self.key_named(route, "ot"),
            next: self.key_named(route, "on"),
            retrying: self.key_named(route, "or"),
        }
    }

    /// Stores `record` (queue ID `id`) as its key's head or parked behind it;
    /// whether it was stored (not there already per `marker`).
    pub(super) async fn enqueue_ordered(
        &self,
        route: &RouteKey,
        k: &Keys,
        marker: &str,
        (id, record): (&str, &[u8]),
        key: &str,
        ttl_ms: &str,
    ) -> Result<bool, QueueError> {
        let o = self.order_keys(route);
        let keys = [&*k.stream, &*k.hash, &*o.heads, &*o.tails, &*o.next, marker];
        let v =
            self.eval(&self.order.enqueue, &keys, &[id.as_bytes(), record, key.as_bytes(), ttl_ms.as_bytes()]).await?;
        Ok(int(&v) == 1)
    }

    pub(super) async fn revive_ordered(
        &self,
        route: &RouteKey,
        id: &str,
        record: &[u8],
        key: &str,
    ) -> Result<bool, QueueError> {
        let (k, o) = (self.keys(route), self.order_keys(route));
        let keys = [&*k.stream, &*k.hash, &*o.heads, &*o.tails, &*o.next, &*k.dead];
        let v = self.eval(&self.order.revive, &keys, &[id.as_bytes(), record, key.as_bytes()]).await?;
        Ok(int(&v) == 1)
    }

    /// A head dead (`record` at `score` into the dead set, and the next of
    /// its key released) or to be retried (into the retry set at `score`);
    /// whether this replica still owned the entry.
    pub(super) async fn failed_ordered(
        &self,
        route: &RouteKey,
        dead: bool,
        (stream_id, id): (&str, &str),
        key: &str,
        score: &str,
        record: &[u8],
    ) -> Result<bool, QueueError> {
        let (k, o) = (self.keys(route), self.order_keys(route));
        let (set, script) = if dead { (&k.dead, &self.order.dead) } else { (&k.delayed, &self.order.retry) };
        let keys = [&*k.stream, &*k.hash, &*o.heads, &*o.tails, &*o.next, set, &*o.retrying];
        let args = [stream_id.as_bytes(), id.as_bytes(), score.as_bytes(), record, key.as_bytes()];
        Ok(int(&self.eval(script, &keys, &args).await?) == 1)
    }

    /// For each of `entries` (stream ID, record) read again from `route`'s
    /// stream, what stands for it ([`RESOLVE`]): its own record, the record
    /// of the head its key was handed on to, or nothing (a lease left over).
    /// Plain entries are their own; an unreadable record is left as it is.
    pub(super) async fn resolve(
        &self,
        route: &RouteKey,
        entries: &[(String, Vec<u8>)],
    ) -> Result<Vec<Resolved>, QueueError> {
        let mut args: Vec<Vec<u8>> = Vec::new();
        let mut at = Vec::new();
        for (i, (stream_id, record)) in entries.iter().enumerate() {
            let Ok((id, _, bytes)) = super::unpack(record) else { continue };
            let Some(key) = super::NewEntry::decode_meta(bytes).ok().and_then(|m| m.order_key) else { continue };
            args.extend([stream_id.clone().into_bytes(), id.into_bytes(), key.into_bytes()]);
            at.push(i);
        }
        let mut out: Vec<Resolved> = entries.iter().map(|_| Resolved::Own).collect();
        if at.is_empty() {
            return Ok(out);
        }
        let o = self.order_keys(route);
        let hash = self.keys(route).hash;
        let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        let v = self.eval(&self.order.resolve, &[&o.heads, &hash], &args).await?;
        for (i, item) in at.into_iter().zip(super::items(&v)) {
            out[i] = match item {
                Value::BulkString(record) => match super::unpack(record) {
                    Ok((id, ..)) => Resolved::Held { id, record: record.clone() },
                    Err(_) => Resolved::Own,
                },
                v if int(v) == 1 => Resolved::Stale,
                _ => Resolved::Own,
            };
        }
        Ok(out)
    }

    /// One stream's batch of delivered entries ([`RedisQueue::done`]) when
    /// some are ordered: one script call. For each, the record of its key's
    /// next when this replica attempts it itself.
    pub(super) async fn done_ordered(
        &self,
        route: &RouteKey,
        group: &[super::DoneWaiting],
    ) -> Result<Vec<Option<Vec<u8>>>, QueueError> {
        let (k, o) = (self.keys(route), self.order_keys(route));
        let mut args: Vec<&[u8]> = Vec::with_capacity(1 + group.len() * 4);
        args.push(self.consumer.as_bytes());
        for d in group {
            let (id, key, go) = match &d.order {
                Some(o) => (o.id.as_str(), o.key.as_str(), o.go_on.as_arg()),
                None => ("", "", "0"),
            };
            args.extend([d.stream_id.as_bytes(), id.as_bytes(), key.as_bytes(), go.as_bytes()]);
        }
        // The batch is one stream's (the route's): its keys share one slot.
        let keys = [&*k.stream, &*k.hash, &*o.heads, &*o.tails, &*o.next];
        let v = self.eval(&self.order.done, &keys, &args).await?;
        let Value::Array(items) = v else { return Err(super::unavailable("unexpected reply to a queue outcome")) };
        Ok(items
            .into_iter()
            .map(|v| match v {
                Value::BulkString(b) => Some(b),
                _ => None,
            })
            .collect())
    }
}
