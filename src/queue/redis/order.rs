//! Ordering by key in Redis (SPEC §16 `order_by`), for all replicas
//! together: of a route's deliveries with the same key, only the key's head
//! is in the stream (or waiting for a retry); the others wait, by arrival, in
//! their key's list. Each step is one script on the route's keys (one hash
//! tag, so one Cluster slot):
//!
//! - `…:oh` — a hash: key → the queue ID of its head;
//! - `…:p:<key>` — a list per key with parked entries: their queue IDs,
//!   oldest first; their records wait in `…:h`;
//! - `…:pn` — how many entries are parked (for `/queue`).
//!
//! The head's outcome (done or dead) and the release of the next of its key
//! are one script, so a replica that dies in between leaves nothing stuck: the
//! head stays in the group's pending list and is claimed again.
//!
//! (Before 0.3.0 was released, parked entries were one sorted set `…:p`
//! searched by key per release; a list per key pops the next with one
//! command. Records in the lists themselves were slower: `LPOP` then copies
//! each record into the script, where `HGET` did before.)

use super::{Keys, QueueError, RedisQueue, RouteKey, int};
use crate::redis_conn::Script;

/// The Lua that puts a record (`ARGV[2]`, queue ID `ARGV[1]`, key `ARGV[3]`)
/// in the stream as its key's head, or parks it. KEYS: stream, hash, heads,
/// the key's list, parked count.
macro_rules! admit {
    () => {
        r"if redis.call('HSETNX', KEYS[3], ARGV[3], ARGV[1]) == 1 then
    redis.call('XADD', KEYS[1], '*', 'p', ARGV[2])
    redis.call('HDEL', KEYS[2], ARGV[1])
  else
    redis.call('RPUSH', KEYS[4], ARGV[1])
    redis.call('INCR', KEYS[5])
    redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
  end"
    };
}

/// An enqueue (once per delivery, as [`super::ENQUEUE`]). KEYS: stream,
/// hash, heads, the key's list, parked count, marker. ARGV: queue ID, record,
/// key, marker TTL.
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
/// KEYS: stream, hash, heads, the key's list, parked count, dead. ARGV: queue
/// ID, record, key.
const REVIVE: &str = concat!(
    r"if redis.call('ZREM', KEYS[6], ARGV[1]) == 1 then
  ",
    admit!(),
    r"
  return 1
end
return 0"
);

/// The Lua that lets the next parked entry of key `KEY` (list `LIST`) go
/// once its head `ID` is done or dead: into the stream as the new head, or
/// the key has no head any more (a parked ID whose record is gone is
/// skipped). KEYS: stream, hash, heads, parked count.
macro_rules! release {
    ($list:literal, $key:literal, $id:literal) => {
        concat!(
            "if redis.call('HGET', KEYS[3], ",
            $key,
            ") == ",
            $id,
            r" then
  while true do
    local nid = redis.call('LPOP', ",
            $list,
            r")
    if not nid then
      redis.call('HDEL', KEYS[3], ",
            $key,
            r")
      break
    end
    redis.call('DECR', KEYS[4])
    local record = redis.call('HGET', KEYS[2], nid)
    if record then
      redis.call('HDEL', KEYS[2], nid)
      redis.call('HSET', KEYS[3], ",
            $key,
            r", nid)
      redis.call('XADD', KEYS[1], '*', 'p', record)
      break
    end
  end
end"
        )
    };
}

/// A head's outcome, dead (its record `ARGV[4]` into the dead set `KEYS[6]`
/// at score `ARGV[3]`), then the next of its key into the stream. Nothing
/// when the entry is not this replica's any more (`XACK` found nothing).
/// KEYS: stream, hash, heads, parked count, the key's list, dead. ARGV:
/// stream ID, queue ID, score, record, key.
const DEAD: &str = concat!(
    r"if redis.call('XACK', KEYS[1], 'hookgate', ARGV[1]) == 0 then return 0 end
redis.call('XDEL', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[4])
redis.call('ZADD', KEYS[6], ARGV[3], ARGV[2])
",
    release!("KEYS[5]", "ARGV[5]", "ARGV[2]"),
    r"
return 1"
);

/// Deliveries of one stream done together (one scheduler tick's, as the
/// unordered `XACK`/`XDEL` batch): ARGV is triples of stream ID, queue ID and
/// key (empty: not ordered). KEYS: stream, hash, heads, parked count, and the
/// lists' common prefix (`…:p`; a key's list is `…:p:<key>`, in the same slot).
const DONE: &str = concat!(
    r"for i = 1, #ARGV, 3 do
  local sid, id, key = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if redis.call('XACK', KEYS[1], 'hookgate', sid) == 1 then
    redis.call('XDEL', KEYS[1], sid)
    if key ~= '' then
      local list = KEYS[5] .. ':' .. key
      ",
    release!("list", "key", "id"),
    r"
    end
  end
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
    /// The prefix of the per-key lists.
    pub parked: String,
    /// How many are parked.
    pub count: String,
}

impl OrderKeys {
    /// The list of `key`'s parked entries.
    pub(super) fn list(&self, key: &str) -> String {
        format!("{}:{key}", self.parked)
    }
}

impl RedisQueue {
    pub(super) fn order_keys(&self, route: &RouteKey) -> OrderKeys {
        OrderKeys {
            heads: self.key_named(route, "oh"),
            parked: self.key_named(route, "p"),
            count: self.key_named(route, "pn"),
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
        let keys = [&*k.stream, &*k.hash, &*o.heads, &o.list(key), &*o.count, marker];
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
        let keys = [&*k.stream, &*k.hash, &*o.heads, &o.list(key), &*o.count, &*k.dead];
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
        let keys = [&*k.stream, &*k.hash, &*o.heads, &*o.count, &o.list(key), &*k.dead];
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
        self.eval(&self.order.done, &[&*k.stream, &*k.hash, &*o.heads, &*o.count, &*o.parked], &args).await.map(drop)
    }
}
