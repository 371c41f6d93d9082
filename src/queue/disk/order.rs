//! Ordering by key on disk (SPEC §16 `order_by`): of the deliveries of one
//! route with the same key, only the oldest stored one (the key's head) has
//! a schedule key in `fresh` or `retry`; the others wait in `parked`, by
//! arrival (their sequence number), and do not exist for takes. When the head
//! is done or dead, the next one of its key moves to `fresh` in the same
//! batch. A head waiting for a retry keeps its key: only that key waits.
//!
//! - `heads`: `route ‖ key` → the head's sequence number;
//! - `parked`: `route ‖ key ‖ seq` → nothing.
//!
//! A released entry gets a `fresh` key at the time of its release, so it
//! lands after the route's scan cursor like any new entry.

use std::collections::{HashMap, HashSet};

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
fn split_parked(k: &[u8]) -> Option<(&[u8], u64)> {
    let (route, rest) = RouteKey::split(k)?;
    let _ = route;
    (rest.len() == KEY_LEN + 8).then(|| (&k[..k.len() - 8], read_u64(&k[k.len() - 8..])))
}

/// Heads given out by the batch being built (not yet readable from the store).
#[derive(Default)]
pub(super) struct NewHeads(HashSet<Vec<u8>>);

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
        if new_heads.0.contains(&g) || self.heads.contains_key(&g).map_err(io)? {
            batch.insert(&self.parked, parked_key(&g, seq), Vec::<u8>::new());
            // A revived dead letter parks before the look-up's start: start over.
            let mut from = self.parked_from.borrow_mut();
            if from.get(&g).is_some_and(|f| seq < *f) {
                from.remove(&g);
            }
            return Ok(true);
        }
        batch.insert(&self.heads, g.clone(), be(seq));
        new_heads.0.insert(g);
        Ok(false)
    }

    /// The head `seq` of `route`'s `key` is done or dead: the next of its key
    /// (if any) becomes the head, with a `fresh` key at `now_ms`. Returns
    /// whether one was released.
    pub(super) fn release(
        &self,
        batch: &mut WriteBatch,
        route: &RouteKey,
        key: &str,
        seq: u64,
        now_ms: u64,
    ) -> Result<bool, QueueError> {
        let g = group(route, key);
        match self.heads.get(&g).map_err(io)? {
            Some(h) if read_u64(&h) == seq => {}
            // Not the head (ordering was switched on after it was stored).
            _ => return Ok(false),
        }
        self.promote(batch, route, &g, now_ms)
    }

    /// The first parked entry of `g` becomes its head, or the head goes.
    /// The look-up starts after the last one released (a key's released
    /// entries are tombstones until compaction; walking them on every
    /// release made a one-key backlog quadratic).
    fn promote(&self, batch: &mut WriteBatch, route: &RouteKey, g: &[u8], now_ms: u64) -> Result<bool, QueueError> {
        let start = parked_key(g, self.parked_from.borrow().get(g).copied().unwrap_or(0));
        let end = parked_key(g, u64::MAX);
        let next = self.parked.range(start..=end).next().map(|e| e.key().map_err(io)).transpose()?;
        match next.as_deref().and_then(split_parked) {
            Some((_, next)) => {
                self.parked_from.borrow_mut().insert(g.to_vec(), next + 1);
                batch.remove(&self.parked, parked_key(g, next));
                batch.insert(&self.heads, g.to_vec(), be(next));
                batch.insert(&self.fresh, schedule_key(route, now_ms, next), Vec::<u8>::new());
                Ok(true)
            }
            None => {
                self.parked_from.borrow_mut().remove(g);
                batch.remove(&self.heads, g.to_vec());
                Ok(false)
            }
        }
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
    /// dropped (counted lost); a key whose head is no longer waiting (its
    /// entry lost, or the store damaged between two batches) gets its next
    /// parked entry as head, so no key waits for ever. `live`: the sequence
    /// numbers with a `fresh` or `retry` key. Returns the lost per route and
    /// the parked entries kept.
    pub(super) fn check_order(
        &self,
        batch: &mut WriteBatch,
        live: &HashSet<u64>,
        now_ms: u64,
    ) -> Result<(HashMap<RouteKey, u64>, HashSet<u64>), QueueError> {
        let mut lost: HashMap<RouteKey, u64> = HashMap::new();
        let mut kept = HashSet::new();
        // The first kept parked entry of each group.
        let mut first: HashMap<Vec<u8>, (RouteKey, u64)> = HashMap::new();
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
            first.entry(g.to_vec()).or_insert((route, seq));
        }
        let mut headed = HashSet::new();
        for e in self.heads.iter() {
            let (g, v) = e.into_inner().map_err(io)?;
            if live.contains(&read_u64(&v)) {
                headed.insert(g.to_vec());
            } else {
                batch.remove(&self.heads, g.to_vec());
            }
        }
        for (g, (route, seq)) in first {
            if headed.contains(&g) {
                continue;
            }
            batch.remove(&self.parked, parked_key(&g, seq));
            batch.insert(&self.heads, g.clone(), be(seq));
            batch.insert(&self.fresh, schedule_key(&route, now_ms, seq), Vec::<u8>::new());
            kept.remove(&seq);
        }
        Ok((lost, kept))
    }

    /// Every parked entry of a route `target` maps elsewhere (given its
    /// sequence number) goes to that route's `fresh` (ordering does not
    /// follow a move), and the moved route's heads go.
    pub(super) fn unpark_moved(
        &self,
        batch: &mut WriteBatch,
        target: &dyn Fn(&RouteKey, u64) -> Result<Option<RouteKey>, QueueError>,
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
            }
        }
        Ok(moved)
    }

    /// A route's ordering state dropped with its parked entries (the route
    /// purged); how many entries went.
    pub(super) fn purge_order(&self, batch: &mut WriteBatch, route: &RouteKey) -> Result<u64, QueueError> {
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
