//! Which routes the Redis store holds deliveries of, and moving a route's
//! deliveries under another route (SPEC §12): keys written by route position
//! migrated to route identities at start, orphans handed to a route or
//! dropped.
//!
//! The routes are listed in a set, `{prefix}routes` (route keys as bytes),
//! added to once per route and process before its first write, so `/queue`
//! finds orphans without scanning the keyspace (which Cluster spreads over
//! nodes). A route's four keys share one hash tag, but two routes' do not, so
//! a move is not one script: each delivery is written under its new route
//! first and removed from the old one after, so a move cut short by a crash
//! repeats some deliveries (at-least-once) and loses none.

use redis::Value;

use super::order::Resolved;
use super::{RedisQueue, entries_of, int, items, text};
use crate::queue::entry::{Meta, NewEntry, RouteKey, unpack};
use crate::queue::transfer::{Item, Place};
use crate::queue::{Legacy, QueueError};

/// Stream entries read per round trip while moving.
const PAGE: usize = 500;

impl RedisQueue {
    fn registry(&self) -> String {
        format!("{}routes", self.prefix)
    }

    /// Lists `route` in the registry (once per process).
    pub(super) async fn register(&self, route: &RouteKey) -> Result<(), QueueError> {
        if self.registered.lock().unwrap_or_else(|p| p.into_inner()).contains(route) {
            return Ok(());
        }
        self.query(redis::cmd("SADD").arg(self.registry()).arg(route.as_bytes())).await?;
        self.registered.lock().unwrap_or_else(|p| p.into_inner()).insert(route.clone());
        Ok(())
    }

    /// The registered routes that hold any delivery (waiting, taken, retrying or dead).
    pub async fn stored_routes(&self) -> Result<Vec<RouteKey>, QueueError> {
        let members = self.query(redis::cmd("SMEMBERS").arg(self.registry())).await?;
        let mut out = Vec::new();
        for m in items(&members) {
            let Value::BulkString(b) = m else { continue };
            let Some(route) = RouteKey::from_bytes(b) else { continue };
            let (c, taken) = self.depth(&route).await?;
            if c.pending + c.scheduled + c.dead + taken > 0 {
                out.push(route);
            }
        }
        Ok(out)
    }

    /// Every delivery of `from` written under the route `target` names for it
    /// (given its meta, `None` when unreadable), then removed from `from`;
    /// how many moved.
    pub async fn move_route(
        &self,
        from: &RouteKey,
        target: &(dyn Fn(Option<&Meta>) -> RouteKey + Sync),
    ) -> Result<u64, QueueError> {
        let k = self.keys(from);
        let meta = |record: &[u8]| unpack(record).ok().and_then(|(_, _, bytes)| NewEntry::decode_meta(bytes).ok());
        let mut n = 0;
        // Waiting and taken deliveries: the stream, oldest first.
        let mut start = "-".to_owned();
        loop {
            let page =
                self.query(redis::cmd("XRANGE").arg(&k.stream).arg(&start).arg("+").arg("COUNT").arg(PAGE)).await?;
            let entries = entries_of(page);
            let Some((last, _)) = entries.last() else { break };
            start = format!("({last}");
            // An ordering key's lease stands for the head it was handed on to.
            let resolved = self.resolve(from, &entries).await?;
            for ((stream_id, own), r) in entries.iter().zip(resolved) {
                let (record, held) = match &r {
                    Resolved::Own => (own, None),
                    Resolved::Held { id, record } => (record, Some(id)),
                    Resolved::Stale => {
                        self.query(redis::cmd("XACK").arg(&k.stream).arg(super::GROUP).arg(stream_id)).await.ok();
                        self.query(redis::cmd("XDEL").arg(&k.stream).arg(stream_id)).await?;
                        continue;
                    }
                };
                let to = target(meta(record).as_ref());
                if to == *from {
                    continue;
                }
                let tk = self.keys(&to);
                self.register(&to).await?;
                self.ensure_group(&to, &tk).await?;
                self.query(redis::cmd("XADD").arg(&tk.stream).arg("*").arg("p").arg(record.as_slice())).await?;
                self.query(redis::cmd("XACK").arg(&k.stream).arg(super::GROUP).arg(stream_id)).await.ok();
                self.query(redis::cmd("XDEL").arg(&k.stream).arg(stream_id)).await?;
                if let Some(id) = held {
                    self.query(redis::cmd("HDEL").arg(&k.hash).arg(id)).await?;
                }
                n += 1;
            }
        }
        // Retries and dead letters: a sorted set of IDs and their records in the hash.
        for (set, dead) in [(&k.delayed, false), (&k.dead, true)] {
            let v = self.query(redis::cmd("ZRANGE").arg(set).arg(0).arg(-1).arg("WITHSCORES")).await?;
            for pair in items(&v).chunks(2) {
                let (Some(id), Some(score)) = (pair.first().and_then(text), pair.get(1).and_then(text)) else {
                    continue;
                };
                let Value::BulkString(record) = self.query(redis::cmd("HGET").arg(&k.hash).arg(&id)).await? else {
                    self.query(redis::cmd("ZREM").arg(set).arg(&id)).await?;
                    continue;
                };
                let to = target(meta(&record).as_ref());
                if to == *from {
                    continue;
                }
                let tk = self.keys(&to);
                self.register(&to).await?;
                let to_set = if dead { &tk.dead } else { &tk.delayed };
                self.query(redis::cmd("HSET").arg(&tk.hash).arg(&id).arg(record.as_slice())).await?;
                self.query(redis::cmd("ZADD").arg(to_set).arg(&score).arg(&id)).await?;
                self.query(redis::cmd("ZREM").arg(set).arg(&id)).await?;
                self.query(redis::cmd("HDEL").arg(&k.hash).arg(&id)).await?;
                self.query(redis::cmd("HDEL").arg(&k.retrying).arg(&id)).await?;
                n += 1;
            }
        }
        // Parked behind an ordering key: into the target's stream as plain
        // waiting deliveries (ordering does not follow a move; their heads
        // moved above), then the route's ordering state goes. A record is
        // dropped from the hash once written, so a move cut short and run
        // again writes none twice.
        let o = self.order_keys(from);
        let heads = self.query(redis::cmd("HGETALL").arg(&o.heads)).await?;
        for head in items(&heads).chunks(2).filter_map(|pair| pair.get(1).and_then(text)) {
            // `<queue ID> <lease>`, or the queue ID alone ([`super::order`]).
            let mut at = head.split(' ').next().unwrap_or_default().to_owned();
            while let Some(id) = text(&self.query(redis::cmd("HGET").arg(&o.next).arg(&at)).await?) {
                if let Value::BulkString(record) = self.query(redis::cmd("HGET").arg(&k.hash).arg(&id)).await? {
                    let to = target(meta(&record).as_ref());
                    let tk = self.keys(&to);
                    self.register(&to).await?;
                    self.ensure_group(&to, &tk).await?;
                    self.query(redis::cmd("XADD").arg(&tk.stream).arg("*").arg("p").arg(record.as_slice())).await?;
                    self.query(redis::cmd("HDEL").arg(&k.hash).arg(&id)).await?;
                    n += u64::from(to != *from);
                }
                at = id;
            }
        }
        self.query(redis::cmd("DEL").arg(&o.heads).arg(&o.tails).arg(&o.next).arg(&o.retrying)).await?;
        Ok(n)
    }

    /// Every delivery of `route` dropped (an orphan deleted); how many.
    pub async fn purge(&self, route: &RouteKey) -> Result<u64, QueueError> {
        let (k, o) = (self.keys(route), self.order_keys(route));
        let (c, taken) = self.depth(route).await?;
        self.query(redis::cmd("DEL").arg(&k.stream).arg(&k.delayed).arg(&k.dead).arg(&k.hash)).await?;
        self.query(redis::cmd("DEL").arg(&o.heads).arg(&o.tails).arg(&o.next).arg(&o.retrying)).await?;
        self.query(redis::cmd("SREM").arg(self.registry()).arg(route.as_bytes())).await?;
        self.registered.lock().unwrap_or_else(|p| p.into_inner()).remove(route);
        self.forget_group(route);
        Ok(c.pending + c.scheduled + c.dead + taken)
    }

    /// Streams written by route position (before identities) moved to the
    /// identity of the route at that position in `legacy` when it matches
    /// the delivery's event type, else to the orphan `@<position>`.
    pub async fn migrate(&self, legacy: &Legacy) -> Result<(), QueueError> {
        for (source, index) in legacy.positions() {
            let old = RouteKey::legacy(source, index);
            let k = self.keys(&old);
            let exists = self.query(redis::cmd("EXISTS").arg(&k.stream).arg(&k.delayed).arg(&k.dead)).await?;
            if int(&exists) == 0 {
                continue;
            }
            let moved = self.move_route(&old, &|meta| legacy.target(&old, meta)).await?;
            self.query(redis::cmd("DEL").arg(&k.stream).arg(&k.delayed).arg(&k.dead).arg(&k.hash)).await?;
            tracing::info!(
                source,
                position = index,
                deliveries = moved,
                "queued deliveries stored by route position now belong to route identities"
            );
        }
        Ok(())
    }
}

/// Where an exported delivery is in the Redis store (see [`crate::queue::transfer`]).
pub enum Location {
    /// A stream entry; `held`: the queue ID of the head its key was handed
    /// on to, whose record (in the hash) stood for it.
    Stream {
        route: RouteKey,
        stream_id: String,
        held: Option<String>,
    },
    Set {
        route: RouteKey,
        dead: bool,
        id: String,
    },
    /// Waiting behind its `order_by` key: the link to it (`…:on`) and its ID.
    Parked {
        route: RouteKey,
        link: String,
        id: String,
    },
}

impl RedisQueue {
    /// A new queue ID for a delivery received at `received_ms` (as enqueue makes them).
    fn new_id(&self, received_ms: u64) -> String {
        let n = self.counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{received_ms}-{}-{n}", self.id_base)
    }

    /// Up to `limit` stored deliveries, route by route: waiting (the stream,
    /// taken ones included), retrying, dead. What was exported is expected to
    /// be removed ([`Self::remove`]) before the next call.
    pub async fn export(&self, limit: usize) -> Result<Vec<(Item, Location)>, QueueError> {
        let mut out = Vec::new();
        for route in self.stored_routes().await? {
            let k = self.keys(&route);
            let room = limit - out.len();
            let page = self.query(redis::cmd("XRANGE").arg(&k.stream).arg("-").arg("+").arg("COUNT").arg(room)).await?;
            let entries = entries_of(page);
            let resolved = self.resolve(&route, &entries).await?;
            for ((stream_id, own), r) in entries.into_iter().zip(resolved) {
                let (record, held) = match r {
                    Resolved::Own => (own, None),
                    Resolved::Held { id, record } => (record, Some(id)),
                    // A lease with nothing behind it: not a delivery.
                    Resolved::Stale => {
                        self.query(redis::cmd("XACK").arg(&k.stream).arg(super::GROUP).arg(&stream_id)).await.ok();
                        self.query(redis::cmd("XDEL").arg(&k.stream).arg(&stream_id)).await?;
                        continue;
                    }
                };
                let (_, state, entry) = unpack(&record).map_err(super::damaged)?;
                let item = Item { route: route.clone(), place: Place::Waiting, state, entry: entry.to_vec() };
                out.push((item, Location::Stream { route: route.clone(), stream_id, held }));
            }
            for (set, dead) in [(&k.delayed, false), (&k.dead, true)] {
                let room = limit - out.len();
                if room == 0 {
                    break;
                }
                let v = self.query(redis::cmd("ZRANGE").arg(set).arg(0).arg(room - 1).arg("WITHSCORES")).await?;
                for pair in items(&v).chunks(2) {
                    let (Some(id), Some(score)) = (pair.first().and_then(text), pair.get(1).and_then(text)) else {
                        continue;
                    };
                    let at = score.parse::<f64>().unwrap_or(0.0) as u64;
                    let Value::BulkString(record) = self.query(redis::cmd("HGET").arg(&k.hash).arg(&id)).await? else {
                        // A set member without its record: nothing to move; drop the member.
                        self.query(redis::cmd("ZREM").arg(set).arg(&id)).await?;
                        continue;
                    };
                    let (_, state, entry) = unpack(&record).map_err(super::damaged)?;
                    let place = if dead { Place::Dead { dead_ms: at } } else { Place::Retry { due_ms: at } };
                    out.push((
                        Item { route: route.clone(), place, state, entry: entry.to_vec() },
                        Location::Set { route: route.clone(), dead, id },
                    ));
                }
            }
            // Waiting behind an `order_by` key: each is the target of one
            // link in `…:on`; moved as plain waiting deliveries (a key's
            // order does not follow a move). Removing them drops their links.
            let room = limit - out.len();
            if room > 0 {
                let next = self.order_keys(&route).next;
                let v = self.query(redis::cmd("HSCAN").arg(&next).arg(0).arg("COUNT").arg(room)).await?;
                let pairs: Vec<String> =
                    items(&v).get(1).map(items).unwrap_or_default().iter().filter_map(text).collect();
                for pair in pairs.chunks(2).take(room) {
                    let [link, id] = pair else { continue };
                    let Value::BulkString(record) = self.query(redis::cmd("HGET").arg(&k.hash).arg(id)).await? else {
                        // A link without its record: nothing to move.
                        self.query(redis::cmd("HDEL").arg(&next).arg(link)).await?;
                        continue;
                    };
                    let (_, state, entry) = unpack(&record).map_err(super::damaged)?;
                    let item = Item { route: route.clone(), place: Place::Waiting, state, entry: entry.to_vec() };
                    out.push((item, Location::Parked { route: route.clone(), link: link.clone(), id: id.clone() }));
                }
            }
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Stores `items` as they were: route, state and place.
    pub async fn import(&self, items: &[Item]) -> Result<(), QueueError> {
        for item in items {
            let received = NewEntry::decode_meta(&item.entry).map(|m| m.received_ms).unwrap_or(0);
            let id = self.new_id(received);
            let record = crate::queue::entry::pack(&id, &item.state, &item.entry);
            let k = self.keys(&item.route);
            self.register(&item.route).await?;
            match item.place {
                Place::Waiting => {
                    self.ensure_group(&item.route, &k).await?;
                    self.query(redis::cmd("XADD").arg(&k.stream).arg("*").arg("p").arg(record)).await?;
                }
                Place::Retry { due_ms: at } | Place::Dead { dead_ms: at } => {
                    let set = if matches!(item.place, Place::Dead { .. }) { &k.dead } else { &k.delayed };
                    self.query(redis::cmd("HSET").arg(&k.hash).arg(&id).arg(record)).await?;
                    self.query(redis::cmd("ZADD").arg(set).arg(at).arg(&id)).await?;
                }
            }
        }
        Ok(())
    }

    /// Removes exported deliveries (after they were imported elsewhere); a
    /// route left with nothing loses its ordering state too (a key's head
    /// that moved away must not hold back what arrives later).
    pub async fn remove(&self, locations: &[Location]) -> Result<(), QueueError> {
        let mut routes: Vec<&RouteKey> = Vec::new();
        for l in locations {
            let (Location::Stream { route, .. } | Location::Set { route, .. } | Location::Parked { route, .. }) = l;
            if !routes.contains(&route) {
                routes.push(route);
            }
            match l {
                Location::Stream { route, stream_id, held } => {
                    let k = self.keys(route);
                    self.query(redis::cmd("XACK").arg(&k.stream).arg(super::GROUP).arg(stream_id)).await.ok();
                    self.query(redis::cmd("XDEL").arg(&k.stream).arg(stream_id)).await?;
                    if let Some(id) = held {
                        self.query(redis::cmd("HDEL").arg(&k.hash).arg(id)).await?;
                    }
                }
                Location::Set { route, dead, id } => {
                    let k = self.keys(route);
                    self.query(redis::cmd("ZREM").arg(if *dead { &k.dead } else { &k.delayed }).arg(id)).await?;
                    self.query(redis::cmd("HDEL").arg(&k.hash).arg(id)).await?;
                }
                Location::Parked { route, link, id } => {
                    let (k, o) = (self.keys(route), self.order_keys(route));
                    self.query(redis::cmd("HDEL").arg(&o.next).arg(link)).await?;
                    self.query(redis::cmd("HDEL").arg(&k.hash).arg(id)).await?;
                }
            }
        }
        for route in routes {
            let (c, taken) = self.depth(route).await?;
            if c.pending + c.scheduled + c.dead + taken == 0 {
                let o = self.order_keys(route);
                self.query(redis::cmd("DEL").arg(&o.heads).arg(&o.tails).arg(&o.next).arg(&o.retrying)).await?;
            }
        }
        Ok(())
    }
}
