//! Moving a route's stored deliveries under another route key (SPEC §12):
//! keys written by position migrated to route identities when the store
//! opens, orphans handed to a route or dropped. Each is one atomic batch,
//! synced before it returns.

use fjall::PersistMode;

use super::{Db, RouteKey, Tally, be, io, read_u64, schedule_key, schedule_parts};
use crate::queue::entry::{Meta, NewEntry};
use crate::queue::{Legacy, QueueError};

/// Where a route's entries went: `(from, to, how many)`.
pub(super) type Moved = Vec<(RouteKey, RouteKey, u64)>;

impl Db {
    /// Rewrites the keys of every stored entry whose route `target` maps to
    /// another route key (given the route and the entry's meta); an entry
    /// whose meta cannot be read is given `None` for it.
    pub(super) fn rekey(
        &self,
        target: &dyn Fn(&RouteKey, Option<&Meta>) -> Option<RouteKey>,
    ) -> Result<Moved, QueueError> {
        let meta = |seq: u64| -> Result<Option<Meta>, QueueError> {
            Ok(self.entries.get(be(seq)).map_err(io)?.and_then(|b| NewEntry::decode_meta(&b).ok()))
        };
        let mut batch = self.db.batch();
        let mut moved: std::collections::BTreeMap<(RouteKey, RouteKey), u64> = Default::default();
        for space in [&self.fresh, &self.retry] {
            for g in space.iter() {
                let (k, v) = g.into_inner().map_err(io)?;
                let Some((route, rest)) = RouteKey::split(&k) else { continue };
                let Some((at, seq)) = schedule_parts(rest) else { continue };
                let Some(to) = target(&route, meta(seq)?.as_ref()).filter(|to| *to != route) else { continue };
                batch.remove(space, k.to_vec());
                batch.insert(space, schedule_key(&to, at, seq), v.to_vec());
                *moved.entry((route, to)).or_default() += 1;
            }
        }
        for g in self.dead.iter() {
            let (k, v) = g.into_inner().map_err(io)?;
            let Some((route, rest)) = RouteKey::split(&v) else { continue };
            let Some(to) = target(&route, meta(read_u64(&k))?.as_ref()).filter(|to| *to != route) else { continue };
            let mut value = to.as_bytes().to_vec();
            value.extend_from_slice(rest);
            batch.insert(&self.dead, k.to_vec(), value);
            *moved.entry((route, to)).or_default() += 1;
        }
        let now_ms = crate::queue::unix_ms(std::time::SystemTime::now());
        for (route, to) in self.unpark_moved(&mut batch, &|r, seq| Ok(target(r, meta(seq)?.as_ref())), now_ms)? {
            *moved.entry((route, to)).or_default() += 1;
        }
        if moved.is_empty() {
            return Ok(Vec::new());
        }
        batch.commit().map_err(io)?;
        self.db.persist(PersistMode::SyncAll).map_err(io)?;
        Ok(moved.into_iter().map(|((from, to), n)| (from, to, n)).collect())
    }

    /// Keys written by position (before route identities) moved to the
    /// identity of the route at that position in `legacy`, when that route
    /// matches the entry's event type; any other to the orphan `@<index>`.
    pub(super) fn migrate(&self, legacy: &Legacy) -> Result<(), QueueError> {
        // No routes to map positions to (a store opened only to count it):
        // leave keys by position as they are, for the start that has them.
        if legacy.is_empty() {
            return Ok(());
        }
        let moved = self.rekey(&|route, meta| route.legacy_index().map(|_| legacy.target(route, meta)))?;
        for (from, to, n) in moved {
            let orphan = to.identity().starts_with('@');
            tracing::info!(
                source = from.source(),
                position = from.legacy_index(),
                route = %to.identity(),
                deliveries = n,
                orphaned = orphan,
                "queued deliveries stored by route position now belong to the route's identity"
            );
        }
        Ok(())
    }

    /// Drops every stored entry of `route` (an orphan's); how many.
    pub(super) fn purge(&self, route: &RouteKey) -> Result<u64, QueueError> {
        let mut batch = self.db.batch();
        let mut n = 0;
        for space in [&self.fresh, &self.retry] {
            for g in space.prefix(route.as_bytes()) {
                let k = g.key().map_err(io)?;
                let Some((r, rest)) = RouteKey::split(&k) else { continue };
                let Some((_, seq)) = schedule_parts(rest).filter(|_| r == *route) else { continue };
                batch.remove(space, k.to_vec());
                batch.remove(&self.entries, be(seq));
                n += 1;
            }
        }
        for g in self.dead.iter() {
            let (k, v) = g.into_inner().map_err(io)?;
            if RouteKey::split(&v).is_some_and(|(r, _)| r == *route) {
                batch.remove(&self.dead, k.to_vec());
                batch.remove(&self.entries, k.to_vec());
                n += 1;
            }
        }
        n += self.purge_order(&mut batch, route)?;
        batch.commit().map_err(io)?;
        self.db.persist(PersistMode::SyncAll).map_err(io)?;
        Ok(n)
    }

    /// A route's stored counts, from the keys themselves (after a move).
    pub(super) fn count(&self, route: &RouteKey) -> Result<Tally, QueueError> {
        let mut t = Tally::default();
        for (space, retry) in [(&self.fresh, false), (&self.retry, true)] {
            for g in space.prefix(route.as_bytes()) {
                let k = g.key().map_err(io)?;
                if RouteKey::split(&k).is_some_and(|(r, _)| r == *route) {
                    if retry { t.retry += 1 } else { t.fresh += 1 }
                }
            }
        }
        for g in self.dead.iter() {
            let v = g.value().map_err(io)?;
            if RouteKey::split(&v).is_some_and(|(r, _)| r == *route) {
                t.dead += 1;
            }
        }
        self.count_parked_into(route, self.count_parked(route)?, &mut t);
        Ok(t)
    }
}
