//! Ordering by key on disk (SPEC §16 `order_by`): of the deliveries of one
//! route with the same key, only one (the key's head) can be taken. The
//! first of a key gets a schedule key in `fresh` as any delivery; the others
//! wait in `parked`, by arrival (their sequence number), and do not exist for
//! takes. When the head is done or dead, the next one of its key becomes the
//! head where it is: it stays in `parked` and is handed out from there
//! ([`super::Slot::Parked`]), so a release writes nothing. A head waiting for
//! a retry keeps its key: only that key waits.
//!
//! - `heads`: `route ‖ key` → the sequence number of the key's head when
//!   that head has a `fresh` or `retry` key (written when it is admitted as
//!   head, and when a released head goes to `retry`; removed when the key
//!   has nothing left). At open, a key whose `heads` entry names no waiting
//!   delivery has its oldest parked entry as head: the one released last.
//! - `parked`: `route ‖ key ‖ seq` → nothing.
//!
//! The store thread also keeps, for each key with parked entries or a
//! released head, its head and parked sequence numbers in memory
//! ([`Groups`], 8 bytes per parked entry), and per route the released heads
//! not yet done ([`Ready`]), both rebuilt from `heads` and `parked` at open,
//! so releasing the next one reads and writes nothing. (Earlier, a release
//! looked up the key's range and then moved the next entry from `parked` to
//! `fresh` and rewrote its head record: ordered drains ran at 0.56-0.62 of
//! unordered ones, against 0.99 now; `bench/order.sh`.)

use std::collections::{HashMap, HashSet, VecDeque};

use fjall::OwnedWriteBatch as WriteBatch;

use super::{Db, RouteKey, be, io, read_u64, schedule_key};
use crate::queue::QueueError;

/// The length of a key as stored ([`crate::route::policy::OrderBy::key`]: 32 hex digits).
const KEY_LEN: usize = 32;

/// `route ‖ key`: the prefix of the key's parked entries and its `heads` key.
pub(super) fn group(route: &RouteKey, key: &str) -> Vec<u8> {
    let mut g = Vec::with_capacity(route.as_bytes().len() + key.len() + 8);
    g.extend_from_slice(route.as_bytes());
    g.extend_from_slice(key.as_bytes());
    g
}

fn parked_key(group: &[u8], seq: u64) -> Vec<u8> {
    let mut k = group.to_vec();
    k.extend_from_slice(&be(seq));
    k
}

/// `(group, seq)` of a `parked` key.
pub(super) fn split_parked(k: &[u8]) -> Option<(&[u8], u64)> {
    let (_, rest) = RouteKey::split(k)?;
    (rest.len() == KEY_LEN + 8).then(|| (&k[..k.len() - 8], read_u64(&k[k.len() - 8..])))
}

/// A key with parked entries: its head and the parked ones, oldest first.
#[derive(Debug, Default)]
pub(super) struct Group {
    head: u64,
    parked: VecDeque<u64>,
}

impl Group {
    fn park(&mut self, seq: u64) {
        // A revived dead letter takes its place by arrival.
        match self.parked.back() {
            Some(last) if seq < *last => {
                let at = self.parked.partition_point(|s| *s < seq);
                self.parked.insert(at, seq);
            }
            _ => self.parked.push_back(seq),
        }
    }
}

/// The keys with parked entries or a released head, by group (the store
/// thread's only).
pub(super) type Groups = std::cell::RefCell<HashMap<Vec<u8>, Group>>;

/// Per route, the `parked` keys of released heads (takeable, in flight or
/// not), oldest release first.
pub(super) type Ready = std::cell::RefCell<HashMap<RouteKey, VecDeque<Vec<u8>>>>;

/// Where a moved route's entry goes, given its route and sequence number.
pub(super) type MoveTarget<'a> = &'a dyn Fn(&RouteKey, u64) -> Result<Option<RouteKey>, QueueError>;

/// Heads given out by the batch being built (not yet readable from the store).
#[derive(Default)]
pub(super) struct NewHeads(HashMap<Vec<u8>, u64>);

impl Db {
    /// Where a new (or revived) entry of `route` with `key` goes: `true` when
    /// its key has a head already and it was parked behind it; `false` when
    /// it is the key's head now (the caller gives it its `fresh` key).
    pub(super) fn admit(
        &self,
        batch: &mut WriteBatch,
        new_heads: &mut NewHeads,
        route: &RouteKey,
        key: &str,
        seq: u64,
    ) -> Result<bool, QueueError> {
        let g = group(route, key);
        let mut groups = self.groups.borrow_mut();
        let head = match groups.get_mut(&g) {
            Some(group) => {
                group.park(seq);
                None
            }
            None => match new_heads.0.get(&g) {
                Some(h) => Some(*h),
                None => self.heads.get(&g).map_err(io)?.map(|h| read_u64(&h)),
            },
        };
        let parked = match head {
            // Parked in memory above.
            None if groups.contains_key(&g) => true,
            Some(head) => {
                groups.insert(g.clone(), Group { head, parked: VecDeque::from([seq]) });
                true
            }
            None => false,
        };
        if parked {
            batch.insert(&self.parked, parked_key(&g, seq), Vec::<u8>::new());
        } else {
            batch.insert(&self.heads, g.clone(), be(seq));
            new_heads.0.insert(g, seq);
        }
        Ok(parked)
    }

    /// The head `seq` of `route`'s `key` is done or dead: the next of its key
    /// (if any) becomes the head, takeable from its `parked` key at once.
    /// Returns whether one was released.
    pub(super) fn release(
        &self,
        batch: &mut WriteBatch,
        route: &RouteKey,
        key: &str,
        seq: u64,
    ) -> Result<bool, QueueError> {
        let g = group(route, key);
        let mut groups = self.groups.borrow_mut();
        let Some(group) = groups.get_mut(&g) else {
            // Nothing parked: the key has no head any more (if this was it;
            // not, when ordering was switched on after it was stored).
            if self.heads.get(&g).map_err(io)?.is_some_and(|h| read_u64(&h) == seq) {
                batch.remove(&self.heads, g);
            }
            return Ok(false);
        };
        if group.head != seq {
            return Ok(false);
        }
        let Some(next) = group.parked.pop_front() else {
            // The last one (a released head) is done: the key is free.
            groups.remove(&g);
            batch.remove(&self.heads, g);
            return Ok(false);
        };
        group.head = next;
        self.ready.borrow_mut().entry(route.clone()).or_default().push_back(parked_key(&g, next));
        Ok(true)
    }

    /// Released heads of `route` not in flight, into `out` up to `limit`.
    pub(super) fn take_ready(
        &self,
        route: &RouteKey,
        limit: usize,
        skip: &HashSet<u64>,
        out: &mut Vec<(u64, super::Slot, crate::queue::entry::State, fjall::Slice)>,
    ) -> Result<(), QueueError> {
        let ready = self.ready.borrow();
        let Some(keys) = ready.get(route) else { return Ok(()) };
        let mut lost = Vec::new();
        for k in keys {
            if out.len() >= limit {
                break;
            }
            let seq = read_u64(&k[k.len() - 8..]);
            if skip.contains(&seq) {
                continue;
            }
            match self.load(seq, super::Slot::Parked(k.clone()), Default::default())? {
                Some(e) => out.push(e),
                None => lost.push(k.clone()),
            }
        }
        drop(ready);
        // Their entries were lost (`load` said so and dropped the parked
        // key): as if done, so their keys do not wait for ever.
        for k in lost {
            self.unready(route, &k);
            let seq = read_u64(&k[k.len() - 8..]);
            let key = RouteKey::split(&k).and_then(|(_, rest)| std::str::from_utf8(&rest[..KEY_LEN]).ok());
            if let Some(key) = key {
                let mut batch = self.db.batch();
                self.release(&mut batch, route, key, seq)?;
                batch.commit().map_err(io)?;
            }
        }
        Ok(())
    }

    /// A released head's outcome is being recorded: not takeable any more.
    pub(super) fn unready(&self, route: &RouteKey, key: &[u8]) {
        let mut ready = self.ready.borrow_mut();
        if let Some(keys) = ready.get_mut(route)
            && let Some(at) = keys.iter().position(|k| k == key)
        {
            keys.remove(at);
            if keys.is_empty() {
                ready.remove(route);
            }
        }
    }

    /// Released heads of `route` (in `parked`, counted as fresh).
    pub(super) fn ready_len(&self, route: &RouteKey) -> u64 {
        self.ready.borrow().get(route).map_or(0, |k| k.len() as u64)
    }

    /// `route`'s tally given the `parked` entries it has: its released heads
    /// among them count as fresh, the rest as parked.
    pub(super) fn count_parked_into(&self, route: &RouteKey, parked: u64, t: &mut super::Tally) {
        let ready = self.ready_len(route);
        t.parked = parked.saturating_sub(ready);
        t.fresh += ready;
    }

    /// Parked entries per route (for the tallies at open).
    pub(super) fn parked_counts(&self) -> Result<HashMap<RouteKey, u64>, QueueError> {
        let mut out: HashMap<RouteKey, u64> = HashMap::new();
        for g in self.parked.iter() {
            let k = g.key().map_err(io)?;
            if let Some((route, _)) = RouteKey::split(&k) {
                *out.entry(route).or_default() += 1;
            }
        }
        Ok(out)
    }

    /// At open ([`super::check`]): parked entries whose entry is gone are
    /// dropped (counted lost); a key whose `heads` entry names no waiting
    /// delivery (its head was released from `parked`, or its entry was lost)
    /// has its oldest parked entry as head, takeable from there, so no key
    /// waits for ever; the in-memory [`Groups`] and [`Ready`] are built. `live`: the sequence numbers with a `fresh` or
    /// `retry` key. Returns the lost per route and the parked entries kept.
    pub(super) fn check_order(
        &self,
        batch: &mut WriteBatch,
        live: &HashSet<u64>,
    ) -> Result<(HashMap<RouteKey, u64>, HashSet<u64>), QueueError> {
        let mut lost: HashMap<RouteKey, u64> = HashMap::new();
        let mut kept = HashSet::new();
        // The kept parked entries of each group, oldest first (key order).
        let mut parked: HashMap<Vec<u8>, (RouteKey, VecDeque<u64>)> = HashMap::new();
        for e in self.parked.iter() {
            let k = e.key().map_err(io)?;
            let (Some((route, _)), Some((g, seq))) = (RouteKey::split(&k), split_parked(&k)) else {
                batch.remove(&self.parked, k.to_vec());
                continue;
            };
            if !self.entries.contains_key(be(seq)).map_err(io)? {
                batch.remove(&self.parked, k.to_vec());
                *lost.entry(route).or_default() += 1;
                continue;
            }
            kept.insert(seq);
            parked.entry(g.to_vec()).or_insert_with(|| (route, VecDeque::new())).1.push_back(seq);
        }
        let mut heads = HashMap::new();
        for e in self.heads.iter() {
            let (g, v) = e.into_inner().map_err(io)?;
            if live.contains(&read_u64(&v)) {
                heads.insert(g.to_vec(), read_u64(&v));
            } else {
                batch.remove(&self.heads, g.to_vec());
            }
        }
        let mut groups = self.groups.borrow_mut();
        let mut ready = self.ready.borrow_mut();
        groups.clear();
        ready.clear();
        // Oldest first: the ready queues then hand out the oldest heads first.
        let mut parked: Vec<_> = parked.into_iter().collect();
        parked.sort_unstable_by_key(|(_, (_, waiting))| waiting.front().copied());
        for (g, (route, mut waiting)) in parked {
            let head = match heads.get(&g) {
                Some(h) => *h,
                // The head is the oldest parked one (released before the
                // restart, or its head's entry was lost): takeable from there.
                None => {
                    let Some(first) = waiting.pop_front() else { continue };
                    ready.entry(route).or_default().push_back(parked_key(&g, first));
                    first
                }
            };
            groups.insert(g, Group { head, parked: waiting });
        }
        Ok((lost, kept))
    }

    /// Every parked entry of a route `target` maps elsewhere (given its
    /// sequence number) goes to that route's `fresh` (ordering does not
    /// follow a move), and the moved route's heads go.
    pub(super) fn unpark_moved(
        &self,
        batch: &mut WriteBatch,
        target: MoveTarget<'_>,
        now_ms: u64,
    ) -> Result<Vec<(RouteKey, RouteKey)>, QueueError> {
        let mut moved = Vec::new();
        let mut from = HashSet::new();
        for e in self.parked.iter() {
            let k = e.key().map_err(io)?;
            let (Some((route, _)), Some((_, seq))) = (RouteKey::split(&k), split_parked(&k)) else { continue };
            let Some(to) = target(&route, seq)?.filter(|to| *to != route) else { continue };
            from.insert(route.clone());
            batch.remove(&self.parked, k.to_vec());
            batch.insert(&self.fresh, schedule_key(&to, now_ms, seq), Vec::<u8>::new());
            moved.push((route, to));
        }
        for e in self.heads.iter() {
            let (k, v) = e.into_inner().map_err(io)?;
            if let Some((route, _)) = RouteKey::split(&k)
                && (from.contains(&route) || target(&route, read_u64(&v))?.is_some_and(|to| to != route))
            {
                batch.remove(&self.heads, k.to_vec());
                from.insert(route);
            }
        }
        self.groups.borrow_mut().retain(|g, _| RouteKey::split(g).is_none_or(|(r, _)| !from.contains(&r)));
        self.ready.borrow_mut().retain(|r, _| !from.contains(r));
        Ok(moved)
    }

    /// A route's ordering state dropped with its parked entries (the route
    /// purged); how many entries went.
    pub(super) fn purge_order(&self, batch: &mut WriteBatch, route: &RouteKey) -> Result<u64, QueueError> {
        self.groups.borrow_mut().retain(|g, _| RouteKey::split(g).is_none_or(|(r, _)| r != *route));
        self.ready.borrow_mut().remove(route);
        let mut n = 0;
        for space in [&self.parked, &self.heads] {
            for e in space.prefix(route.as_bytes()) {
                let k = e.key().map_err(io)?;
                if RouteKey::split(&k).is_some_and(|(r, _)| r == *route) {
                    batch.remove(space, k.to_vec());
                    if let Some((_, seq)) = split_parked(&k).filter(|_| std::ptr::eq(space, &self.parked)) {
                        batch.remove(&self.entries, be(seq));
                        n += 1;
                    }
                }
            }
        }
        Ok(n)
    }

    /// A route's parked entries.
    pub(super) fn count_parked(&self, route: &RouteKey) -> Result<u64, QueueError> {
        let mut n = 0;
        for e in self.parked.prefix(route.as_bytes()) {
            let k = e.key().map_err(io)?;
            n += u64::from(RouteKey::split(&k).is_some_and(|(r, _)| r == *route));
        }
        Ok(n)
    }
}
