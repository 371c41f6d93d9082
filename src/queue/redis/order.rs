//! Ordering by key in Redis (SPEC §16 `order_by`), for all replicas
//! together: of a route's deliveries with the same key, only the key's head
//! is in the stream (or waiting for a retry); the others wait, by arrival, in
//! a chain behind it. Each step is one script on the route's keys (one hash
//! tag, so one Cluster slot; every key a script touches is named in its KEYS):
//!
//! - `…:oh` — a hash: key → the queue ID of its head;
//! - `…:on` — a hash: queue ID → the queue ID that waits next behind it, of
//!   the same key (head → first parked → second parked …); the parked
//!   records wait in `…:h`;
//! - `…:ot` — a hash: key → the queue ID last parked behind it (where the
//!   next arrival joins; it may name the head, once all before it went).
//!
//! Each parked entry is the target of exactly one link, so `HLEN …:on` is how
//! many are parked (for `/queue`).
//!
//! The head's outcome (done or dead) and the release of the next of its key
//! are one script, so a replica that dies in between leaves nothing stuck: the
//! head stays in the group's pending list and is claimed again.
//!
//! (Before 0.3.0 was released, parked entries were one sorted set searched
//! by key per release, then a list per key popped with `LPOP` per release.
//! Chains in hashes let one batch's releases look up every next in one
//! `HMGET` and keep 10,000 small list keys out of the keyspace: Redis's own
//! time per ordered delivery of a 10,000-key drain fell by about a tenth,
//! 28.6-33.3 us to 26.4-31.2 us in alternating runs. That time bounds the
//! drain on a machine whose cores Redis shares with hookgate and the app.)

use super::{Keys, QueueError, RedisQueue, RouteKey, int};
use crate::redis_conn::Script;

/// The Lua that puts a record (`ARGV[2]`, queue ID `ARGV[1]`, key `ARGV[3]`)
/// in the stream as its key's head, or parks it at the end of its key's
/// chain. KEYS: stream, hash, heads, tails, next.
macro_rules! admit {
    () => {
        r"if redis.call('HSETNX', KEYS[3], ARGV[3], ARGV[1]) == 1 then
    redis.call('XADD', KEYS[1], '*', 'p', ARGV[2])
    redis.call('HDEL', KEYS[2], ARGV[1])
  else
    local last = redis.call('HGET', KEYS[4], ARGV[3]) or redis.call('HGET', KEYS[3], ARGV[3])
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
/// - `release(keys, ids)` lets the next of each key `keys[j]`, whose head
///   `ids[j]` is done or dead, go: into the stream as its key's new head, or
///   the key has no head any more. A parked ID whose record is gone is
///   skipped. Each step is one command for all the keys together but the
///   `XADD`s: Lua's own work per `redis.call` is about 1-2 us of Redis's
///   time, as much as a command's.
macro_rules! release_fns {
    () => {
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
local function release(keys, ids)
  local sets, gone, drop = {}, {}, {}
  while #keys > 0 do
    local nexts = many('HMGET', KEYS[5], nil, ids)
    many('HDEL', KEYS[5], nil, ids)
    local nkeys, nids = {}, {}
    for j = 1, #keys do
      if nexts[j] then
        nkeys[#nkeys + 1] = keys[j]
        nids[#nids + 1] = nexts[j]
      else
        gone[#gone + 1] = keys[j]
      end
    end
    keys, ids = {}, {}
    if #nids > 0 then
      local records = many('HMGET', KEYS[2], nil, nids)
      for j = 1, #nids do
        if records[j] then
          redis.call('XADD', KEYS[1], '*', 'p', records[j])
          sets[#sets + 1] = nkeys[j]
          sets[#sets + 1] = nids[j]
          drop[#drop + 1] = nids[j]
        else
          keys[#keys + 1] = nkeys[j]
          ids[#ids + 1] = nids[j]
        end
      end
    end
  end
  if #drop > 0 then many('HDEL', KEYS[2], nil, drop) end
  if #sets > 0 then many('HSET', KEYS[3], nil, sets) end
  if #gone > 0 then
    many('HDEL', KEYS[3], nil, gone)
    many('HDEL', KEYS[4], nil, gone)
  end
end
"
    };
}

/// A head's outcome, dead (its record `ARGV[4]` into the dead set `KEYS[6]`
/// at score `ARGV[3]`), then the next of its key into the stream. Nothing
/// when the entry is not this replica's any more (`XACK` found nothing).
/// KEYS: as [`admit`], and the dead set. ARGV: stream ID, queue ID,
/// score, record, key.
const DEAD: &str = concat!(
    release_fns!(),
    r"if redis.call('XACK', KEYS[1], 'hookgate', ARGV[1]) == 0 then return 0 end
redis.call('XDEL', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[4])
redis.call('ZADD', KEYS[6], ARGV[3], ARGV[2])
if redis.call('HGET', KEYS[3], ARGV[5]) == ARGV[2] then release({ARGV[5]}, {ARGV[2]}) end
return 1"
);

/// Deliveries of one stream done together (one scheduler tick's, as the
/// unordered `XACK`/`XDEL` batch): ARGV is triples of stream ID, queue ID and
/// key (empty: not ordered). KEYS: as [`admit`]. An ordered entry is
/// acknowledged on its own: only the replica whose `XACK` took it lets its
/// key's next go (another may have claimed it and scheduled a retry
/// meanwhile), and only when it is still its key's head.
const DONE: &str = concat!(
    release_fns!(),
    r"local plain, acked, keys, ids = {}, {}, {}, {}
for i = 1, #ARGV, 3 do
  local sid, key = ARGV[i], ARGV[i + 2]
  if key == '' then
    plain[#plain + 1] = sid
    acked[#acked + 1] = sid
  elseif redis.call('XACK', KEYS[1], 'hookgate', sid) == 1 then
    acked[#acked + 1] = sid
    keys[#keys + 1] = key
    ids[#ids + 1] = ARGV[i + 1]
  end
end
if #plain > 0 then many('XACK', KEYS[1], 'hookgate', plain) end
if #acked > 0 then many('XDEL', KEYS[1], nil, acked) end
if #keys > 0 then
  local heads, go, done = many('HMGET', KEYS[3], nil, keys), {}, {}
  for j = 1, #keys do
    if heads[j] == ids[j] then
      go[#go + 1] = keys[j]
      done[#done + 1] = ids[j]
    end
  end
  release(go, done)
end
return 1"
);

pub(super) struct Scripts {
    enqueue: Script,
    revive: Script,
    dead: Script,
    done: Script,
}

impl Default for Scripts {
    fn default() -> Self {
        Scripts {
            enqueue: Script::new(ENQUEUE),
            revive: Script::new(REVIVE),
            dead: Script::new(DEAD),
            done: Script::new(DONE),
        }
    }
}

/// A route's ordering keys (see the module docs).
pub(super) struct OrderKeys {
    pub heads: String,
    pub tails: String,
    pub next: String,
}

impl RedisQueue {
    pub(super) fn order_keys(&self, route: &RouteKey) -> OrderKeys {
        OrderKeys {
            heads: self.key_named(route, "oh"),
            tails: self.key_named(route, "ot"),
            next: self.key_named(route, "on"),
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

    /// A head dead (`record` at `score` into the dead set), and the next of
    /// its key released; whether this replica still owned the entry.
    pub(super) async fn dead_ordered(
        &self,
        route: &RouteKey,
        stream_id: &str,
        id: &str,
        key: &str,
        score: &str,
        record: &[u8],
    ) -> Result<bool, QueueError> {
        let (k, o) = (self.keys(route), self.order_keys(route));
        let keys = [&*k.stream, &*k.hash, &*o.heads, &*o.tails, &*o.next, &*k.dead];
        let args = [stream_id.as_bytes(), id.as_bytes(), score.as_bytes(), record, key.as_bytes()];
        Ok(int(&self.eval(&self.order.dead, &keys, &args).await?) == 1)
    }

    /// One stream's batch of delivered entries ([`RedisQueue::done`]) when
    /// some are ordered: one script call.
    pub(super) async fn done_ordered(&self, route: &RouteKey, group: &[super::DoneWaiting]) -> Result<(), QueueError> {
        let (k, o) = (self.keys(route), self.order_keys(route));
        let mut args: Vec<&[u8]> = Vec::with_capacity(group.len() * 3);
        for d in group {
            let (id, key) = d.order.as_ref().map_or(("", ""), |(_, i, k)| (i.as_str(), k.as_str()));
            args.extend([d.stream_id.as_bytes(), id.as_bytes(), key.as_bytes()]);
        }
        // The batch is one stream's (the route's): its keys share one slot.
        let keys = [&*k.stream, &*k.hash, &*o.heads, &*o.tails, &*o.next];
        self.eval(&self.order.done, &keys, &args).await.map(drop)
    }
}
