//! The disk store opened by a command rather than a running gateway
//! (`hookgate queue move`, the start-up check for a previous store): read and
//! written directly, in the calling thread ([`crate::queue::transfer`]).

use fjall::PersistMode;

use super::{Db, RouteKey, State, be, io, read_u64, schedule_key, schedule_parts};
use crate::queue::entry::NewEntry;
use crate::queue::transfer::{Item, Moved, Place};
use crate::queue::{Legacy, QueueError};

/// Which key space a delivery was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Space {
    Fresh,
    Retry,
    Dead,
    /// Waiting behind its `order_by` key ([`super::order`]): moved as a
    /// plain waiting delivery (a key's order does not follow a move).
    Parked,
}

/// Where an exported delivery is, to remove it after it was imported elsewhere.
pub struct Location {
    space: Space,
    key: Vec<u8>,
    seq: u64,
}

/// An open disk store, not served by a gateway.
pub struct Offline {
    db: Db,
    ledger: super::check::Ledger,
    /// The last key exported per key space (deleted keys stay as tombstones
    /// until compaction; scanning from here does not walk them again).
    after: [Option<Vec<u8>>; 4],
}

impl Offline {
    pub fn open(path: &std::path::Path, legacy: &Legacy) -> Result<Offline, QueueError> {
        let opened = Db::open(path, legacy)?;
        Ok(Offline { db: opened.db, ledger: opened.ledger, after: [None, None, None, None] })
    }

    /// Up to `limit` deliveries not exported yet: waiting, then retrying,
    /// then dead, then waiting behind their `order_by` key.
    pub fn export(&mut self, limit: usize) -> Result<Vec<(Item, Location)>, QueueError> {
        let mut out = Vec::new();
        for (i, space) in [Space::Fresh, Space::Retry, Space::Dead, Space::Parked].into_iter().enumerate() {
            let ks = self.space(space);
            let iter: Box<dyn Iterator<Item = fjall::Guard>> = match &self.after[i] {
                Some(k) => Box::new(ks.range((std::ops::Bound::Excluded(k.clone()), std::ops::Bound::Unbounded))),
                None => Box::new(ks.iter()),
            };
            for g in iter {
                if out.len() >= limit {
                    return Ok(out);
                }
                let (k, v) = g.into_inner().map_err(io)?;
                self.after[i] = Some(k.to_vec());
                let (route, seq, place, state) = match space {
                    Space::Dead => {
                        let Some((route, rest)) = RouteKey::split(&v) else { continue };
                        let state = State::decode(rest);
                        let dead_ms = state.dead_ms.unwrap_or(0);
                        (route, read_u64(&k), Place::Dead { dead_ms }, state)
                    }
                    // `route ‖ key ‖ seq`: never attempted (a released head
                    // that failed went to `retry`).
                    Space::Parked => {
                        let (Some((route, _)), Some((_, seq))) = (RouteKey::split(&k), super::order::split_parked(&k))
                        else {
                            continue;
                        };
                        (route, seq, Place::Waiting, State::default())
                    }
                    _ => {
                        let Some((route, rest)) = RouteKey::split(&k) else { continue };
                        let Some((at, seq)) = schedule_parts(rest) else { continue };
                        match space {
                            Space::Retry => (route, seq, Place::Retry { due_ms: at }, State::decode(&v)),
                            _ => (route, seq, Place::Waiting, State::default()),
                        }
                    }
                };
                let Some(entry) = self.db.entries.get(be(seq)).map_err(io)? else { continue };
                out.push((
                    Item { route, place, state, entry: entry.to_vec() },
                    Location { space, key: k.to_vec(), seq },
                ));
            }
        }
        Ok(out)
    }

    /// Stores `items` as they were (route, state, place), under new sequence numbers.
    pub fn import(&mut self, items: &[Item]) -> Result<(), QueueError> {
        let db = &mut self.db;
        let mut batch = db.db.batch();
        for item in items {
            let seq = db.next_seq;
            db.next_seq += 1;
            batch.insert(&db.entries, be(seq), item.entry.clone());
            match item.place {
                Place::Waiting => {
                    let received = NewEntry::decode_meta(&item.entry).map(|m| m.received_ms).unwrap_or(0);
                    batch.insert(&db.fresh, schedule_key(&item.route, received, seq), Vec::<u8>::new());
                }
                Place::Retry { due_ms } => {
                    batch.insert(&db.retry, schedule_key(&item.route, due_ms, seq), item.state.encode());
                }
                Place::Dead { .. } => {
                    let mut v = item.route.as_bytes().to_vec();
                    v.extend_from_slice(&item.state.encode());
                    batch.insert(&db.dead, be(seq), v);
                }
            }
        }
        batch.commit().map_err(io)?;
        db.db.persist(PersistMode::SyncAll).map_err(io)?;
        self.record();
        Ok(())
    }

    /// The ledger follows what a move changed ([`super::check`]).
    fn record(&mut self) {
        let m = self.count();
        self.ledger.record(self.db.next_seq, m.total());
    }

    /// Removes exported deliveries (after they were imported elsewhere).
    pub fn remove(&mut self, locations: impl Iterator<Item = Location>) -> Result<(), QueueError> {
        let db = &self.db;
        let mut batch = db.db.batch();
        for l in locations {
            batch.remove(self.space(l.space), l.key);
            batch.remove(&db.entries, be(l.seq));
        }
        batch.commit().map_err(io)?;
        db.db.persist(PersistMode::SyncAll).map_err(io)?;
        self.record();
        Ok(())
    }

    /// Every delivery stored, by place (those behind an `order_by` key as waiting).
    pub fn count(&self) -> Moved {
        let n = |ks: &fjall::Keyspace| ks.iter().count() as u64;
        Moved { waiting: n(&self.db.fresh) + n(&self.db.parked), retrying: n(&self.db.retry), dead: n(&self.db.dead) }
    }

    fn space(&self, space: Space) -> &fjall::Keyspace {
        match space {
            Space::Fresh => &self.db.fresh,
            Space::Retry => &self.db.retry,
            Space::Dead => &self.db.dead,
            Space::Parked => &self.db.parked,
        }
    }
}
