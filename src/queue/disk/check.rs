//! Storage damage is never silent (SPEC §12). The embedded store recovers a
//! torn tail by itself; other damage (a journal zeroed mid-file, truncated or
//! deleted, a key space's files removed) it may "recover" by dropping what it
//! cannot read, without a word. So the store keeps its own check beside it:
//!
//! - a ledger file, `hookgate.ledger`: the next sequence number and how many
//!   deliveries were stored, rewritten in place (16 bytes) after every batch
//!   of enqueues; an open that finds fewer sequence numbers than the ledger
//!   says lost acknowledged deliveries: ERROR with the count;
//! - at open, every stored entry must have its place (waiting, retrying or
//!   dead) and every place its entry: an entry without one is queued again
//!   (at-least-once), a place without its entry is a lost delivery of that
//!   route (ERROR, counted).
//!
//! Losses are kept per route (unknown route: the empty source and route) for
//! `GET /queue` and `hookgate_queue_lost_total`.

use std::collections::{HashMap, HashSet};
use std::io::{Read as _, Seek as _, Write as _};
use std::path::Path;

use super::{Db, RouteKey, be, io, read_u64, schedule_key, schedule_parts};
use crate::queue::QueueError;
use crate::queue::entry::NewEntry;

/// The ledger beside the store.
pub(super) struct Ledger {
    file: std::fs::File,
    written: (u64, u64),
}

impl Ledger {
    /// Opens (or creates) the ledger in `dir`; what it said before, if anything.
    pub(super) fn open(dir: &Path) -> Result<(Ledger, Option<(u64, u64)>), QueueError> {
        let path = dir.join("hookgate.ledger");
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io(format!("{}: {e}", path.display())))?;
        let mut buf = [0u8; 16];
        let previous = file.read_exact(&mut buf).ok().map(|()| (read_u64(&buf[..8]), read_u64(&buf[8..])));
        Ok((Ledger { file, written: previous.unwrap_or((0, 0)) }, previous))
    }

    /// Records the next sequence number and how many deliveries are stored.
    pub(super) fn record(&mut self, next_seq: u64, stored: u64) {
        if self.written == (next_seq, stored) {
            return;
        }
        let mut buf = [0u8; 16];
        buf[..8].copy_from_slice(&be(next_seq));
        buf[8..].copy_from_slice(&be(stored));
        // One 16-byte write in place: no sync (the journal's own sync decides
        // what survives a power cut; a stale ledger only under-reports).
        if self.file.rewind().and_then(|()| self.file.write_all(&buf)).is_ok() {
            self.written = (next_seq, stored);
        }
    }
}

/// What an open found.
#[derive(Debug, Default)]
pub(super) struct Damage {
    /// Deliveries known lost, by route (`None`: which route is not known).
    pub lost: HashMap<Option<RouteKey>, u64>,
    /// Entries found without their place, queued again.
    pub requeued: u64,
}

impl Db {
    /// The checks above, at open (before route positions are migrated:
    /// entries queued again go under their position at enqueue).
    pub(super) fn check(&mut self, path: &Path, ledger: Option<(u64, u64)>) -> Result<Damage, QueueError> {
        let mut damage = Damage::default();
        let mut placed: HashSet<u64> = HashSet::new();
        let mut batch = self.db.batch();
        let mut changed = false;
        let parked_before = self.parked.len().map_err(io)?;
        let heads_before = self.heads.len().map_err(io)?;
        for space in [&self.fresh, &self.retry] {
            for g in space.iter() {
                let k = g.key().map_err(io)?;
                let Some((route, rest)) = RouteKey::split(&k) else { continue };
                let Some((_, seq)) = schedule_parts(rest) else { continue };
                if self.entries.contains_key(be(seq)).map_err(io)? {
                    placed.insert(seq);
                } else {
                    batch.remove(space, k.to_vec());
                    changed = true;
                    *damage.lost.entry(Some(route)).or_default() += 1;
                }
            }
        }
        // Ordering ([`super::order`]): parked entries have their place too;
        // a key whose head is gone gets its next one as head.
        let live = placed.clone();
        if parked_before + heads_before > 0 {
            let (lost, parked) = self.check_order(&mut batch, &live)?;
            for (route, n) in lost {
                *damage.lost.entry(Some(route)).or_default() += n;
            }
            placed.extend(parked);
            changed = true;
        }
        for g in self.dead.iter() {
            let (k, v) = g.into_inner().map_err(io)?;
            let seq = read_u64(&k);
            if self.entries.contains_key(be(seq)).map_err(io)? {
                placed.insert(seq);
            } else {
                batch.remove(&self.dead, k.to_vec());
                changed = true;
                let route = RouteKey::split(&v).map(|(r, _)| r);
                *damage.lost.entry(route).or_default() += 1;
            }
        }
        for g in self.entries.iter() {
            let (k, v) = g.into_inner().map_err(io)?;
            let seq = read_u64(&k);
            if placed.contains(&seq) {
                continue;
            }
            // Its place is gone: queued again, under its route's position at enqueue.
            match NewEntry::decode_meta(&v) {
                Ok(meta) => {
                    let route = RouteKey::legacy(&meta.source, meta.route);
                    batch.insert(&self.fresh, schedule_key(&route, meta.received_ms, seq), Vec::<u8>::new());
                    damage.requeued += 1;
                }
                Err(_) => {
                    batch.remove(&self.entries, k.to_vec());
                    *damage.lost.entry(None).or_default() += 1;
                }
            }
            changed = true;
        }
        if changed {
            batch.commit().map_err(io)?;
            self.db.persist(fjall::PersistMode::SyncAll).map_err(io)?;
        }
        if let Some((next, stored)) = ledger {
            // Fewer deliveries stored than the ledger recorded last, and
            // sequence numbers it saw given out gone with them: lost.
            let now_stored = (self.fresh.len().map_err(io)?
                + self.retry.len().map_err(io)?
                + self.dead.len().map_err(io)?
                + self.parked.len().map_err(io)?) as u64;
            let counted: u64 = damage.lost.values().sum();
            let gone = next.saturating_sub(self.next_seq).min(stored.saturating_sub(now_stored + counted));
            if gone > 0 {
                *damage.lost.entry(None).or_default() += gone;
            }
            self.next_seq = self.next_seq.max(next);
        }
        let lost: u64 = damage.lost.values().sum();
        if lost > 0 {
            tracing::error!(
                path = %path.display(),
                lost,
                "the queue store is damaged: acknowledged deliveries were lost (a journal or key space damaged outside hookgate); what is readable is kept; GET /queue and hookgate_queue_lost_total count them"
            );
        }
        if damage.requeued > 0 {
            tracing::error!(
                path = %path.display(),
                requeued = damage.requeued,
                "the queue store is damaged: stored deliveries had lost their place in the queue; they are queued again (some may be delivered twice)"
            );
        }
        Ok(damage)
    }
}
