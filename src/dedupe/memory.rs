//! The in-process dedupe store: a slab of fixed-size entries on an intrusive
//! doubly linked list (the eviction order), indexed by a hash table of slab
//! positions, behind one mutex. No allocation per entry.
//!
//! - Keys are the first 12 bytes (96 bits) of SHA-256(`source` NUL `id`): a
//!   new ID is mistaken for one of `n` remembered IDs with probability about
//!   `n / 2^96` — with a million remembered, ~1.3e-23 per delivery, ~1.3e-8
//!   over 10^15 deliveries.
//! - Order is "remembered longest ago first": a claim or a commit moves the
//!   entry to the back, and when `max_entries` is exceeded the front entry is
//!   evicted — strictly, not approximately.
//! - Expiry is lazy: an expired entry counts as absent when looked up, and
//!   expired entries at the front are dropped on every insert.
//! - A claim's token is its expiry time: the next claim of the same ID can only
//!   be made after that time, so its expiry (its token) is later — unique per ID
//!   without a field of its own. That keeps an entry at 28 bytes; with the index
//!   (a `u32` and a control byte per bucket, about two buckets per entry) a
//!   million IDs take ~38 MB (`examples/store_footprint.rs`).
//! - The token also names the slab position the claim was made at, so the
//!   commit goes straight to the entry: probing the index again cost two cache
//!   misses per delivery in a large store (`perf annotate` of the commit). A
//!   free node's state is 0, so a position since freed or reused by another
//!   ID is noticed and the index is probed after all.
//! - Time comes from `tokio::time::Instant`, so tests use `tokio::time::pause`.

use std::sync::Mutex;
use std::time::Duration;

use hashbrown::HashTable;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::{DedupeStore, Seen, StoreError};

/// No slab position (list ends, empty free list).
const NIL: u32 = u32::MAX;
/// Set in [`Node::state`] once the ID is delivered (a claim otherwise).
const DELIVERED: u64 = 1 << 63;

/// The 96-bit key of one `(source, id)`.
pub type Key = [u32; 3];

/// A claim: its expiry (unique per ID, see the module docs) and where the
/// entry was, a hint for the commit or release that follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    expiry: u64,
    slot: u32,
}

/// One remembered ID: 28 bytes, 4-byte aligned.
#[derive(Clone, Copy)]
struct Node {
    key: Key,
    /// Expiry in milliseconds after `MemoryStore::epoch`, split in two `u32`s
    /// so the node stays 4-byte aligned; bit 63 is [`DELIVERED`].
    state: [u32; 2],
    /// Toward the front (older); for a free node, unused.
    prev: u32,
    /// Toward the back (newer); for a free node, the next free node.
    next: u32,
}

impl Node {
    fn state(&self) -> u64 {
        (u64::from(self.state[0]) << 32) | u64::from(self.state[1])
    }
    fn set_state(&mut self, v: u64) {
        self.state = [(v >> 32) as u32, v as u32];
    }
    fn expires_ms(&self) -> u64 {
        self.state() & !DELIVERED
    }
    fn delivered(&self) -> bool {
        self.state() & DELIVERED != 0
    }
}

fn hash(key: &Key) -> u64 {
    // The key is already a cryptographic hash: its bits are the hash.
    (u64::from(key[0]) << 32) | u64::from(key[1])
}

struct Inner {
    nodes: Vec<Node>,
    index: HashTable<u32>,
    /// Oldest and newest remembered entries.
    head: u32,
    tail: u32,
    free: u32,
    len: usize,
}

impl Inner {
    fn find(&self, key: &Key) -> Option<u32> {
        let nodes = &self.nodes;
        self.index.find(hash(key), |&i| nodes[i as usize].key == *key).copied()
    }

    /// [`Self::find`], trying slab position `hint` first: a live node (state
    /// not 0) with this key is the key's only entry.
    fn find_at(&self, key: &Key, hint: u32) -> Option<u32> {
        match self.nodes.get(hint as usize) {
            Some(n) if n.key == *key && n.state() != 0 => Some(hint),
            _ => self.find(key),
        }
    }

    fn unlink(&mut self, i: u32) {
        let Node { prev, next, .. } = self.nodes[i as usize];
        match prev {
            NIL => self.head = next,
            p => self.nodes[p as usize].next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.nodes[n as usize].prev = prev,
        }
    }

    fn push_back(&mut self, i: u32) {
        let tail = self.tail;
        let node = &mut self.nodes[i as usize];
        node.prev = tail;
        node.next = NIL;
        match tail {
            NIL => self.head = i,
            t => self.nodes[t as usize].next = i,
        }
        self.tail = i;
    }

    /// Moves an entry to the back (the newest) with a new state.
    fn renew(&mut self, i: u32, state: u64) {
        self.nodes[i as usize].set_state(state);
        if self.tail != i {
            self.unlink(i);
            self.push_back(i);
        }
    }

    /// Remembers a new key at the back; returns its slab position.
    fn insert(&mut self, key: Key, state: u64) -> u32 {
        let node = Node { key, state: [0; 2], prev: NIL, next: NIL };
        let i = match self.free {
            NIL => {
                self.nodes.push(node);
                (self.nodes.len() - 1) as u32
            }
            f => {
                self.free = self.nodes[f as usize].next;
                self.nodes[f as usize] = node;
                f
            }
        };
        self.nodes[i as usize].set_state(state);
        self.push_back(i);
        let nodes = &self.nodes;
        self.index.insert_unique(hash(&key), i, |&j| hash(&nodes[j as usize].key));
        self.len += 1;
        i
    }

    /// Forgets the entry at slab position `i`.
    fn remove(&mut self, i: u32) {
        let key = self.nodes[i as usize].key;
        if let Ok(entry) = self.index.find_entry(hash(&key), |&j| j == i) {
            entry.remove();
        }
        self.unlink(i);
        let node = &mut self.nodes[i as usize];
        node.set_state(0);
        node.next = self.free;
        self.free = i;
        self.len -= 1;
    }
}

pub struct MemoryStore {
    inner: Mutex<Inner>,
    max_entries: usize,
    epoch: Instant,
}

impl MemoryStore {
    pub fn new(max_entries: usize) -> Self {
        let max_entries = max_entries.clamp(1, NIL as usize - 1);
        MemoryStore {
            // Sized for the bound up front: growing the index while it fills
            // rehashes every entry under the lock (a stall of every request of
            // up to ~80 ms at 1M entries, `examples/store_footprint.rs`). The
            // slab reserves address space only; pages are touched as it fills.
            inner: Mutex::new(Inner {
                nodes: Vec::with_capacity(max_entries + 1),
                index: HashTable::with_capacity(max_entries + 1),
                head: NIL,
                tail: NIL,
                free: NIL,
                len: 0,
            }),
            max_entries,
            epoch: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX).min(DELIVERED - 1)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the store half-changed
        // (no operation can panic between its first and last write), so
        // poisoning is ignored.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Number of remembered entries (claims and delivered), expired ones included.
    pub fn len(&self) -> usize {
        self.lock().len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops entries from the front while the store is over its bound or they expired.
    fn evict(&self, inner: &mut Inner, now: u64) {
        while inner.head != NIL {
            let front = inner.nodes[inner.head as usize];
            if inner.len > self.max_entries || front.expires_ms() <= now {
                inner.remove(inner.head);
            } else {
                break;
            }
        }
    }

    /// Synchronous release, for the claim guard's `Drop`.
    pub fn release_now(&self, key: &Key, token: &Token) {
        let mut inner = self.lock();
        if let Some(i) = inner.find_at(key, token.slot) {
            let node = inner.nodes[i as usize];
            if !node.delivered() && node.expires_ms() == token.expiry {
                inner.remove(i);
            }
        }
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// An expiry `ttl` after `now`, kept below the [`DELIVERED`] bit.
fn expiry(now: u64, ttl: Duration) -> u64 {
    now.saturating_add(ms(ttl).max(1)).min(DELIVERED - 1)
}

impl DedupeStore for MemoryStore {
    type Key = Key;
    type Token = Token;

    fn key(&self, source: &str, id: &str) -> Key {
        let mut h = Sha256::new();
        h.update(source.as_bytes());
        h.update([0u8]);
        h.update(id.as_bytes());
        let d = h.finalize();
        let word = |i: usize| u32::from_le_bytes([d[i], d[i + 1], d[i + 2], d[i + 3]]);
        [word(0), word(4), word(8)]
    }

    async fn claim(&self, key: &Key, claim_ttl: Duration) -> Result<Result<Token, Seen>, StoreError> {
        Ok(self.claim_at(key, claim_ttl, self.now_ms()))
    }

    async fn commit(&self, key: &Key, token: &Token, ttl: Duration) -> Result<(), StoreError> {
        // The upstream took it: the ID is delivered, whoever holds the claim now
        // (see the `dedupe` module docs). Here the token is only a hint of
        // where the entry is; it matters to release.
        self.commit_at(key, token.slot, ttl, self.now_ms());
        Ok(())
    }

    async fn release(&self, key: &Key, token: &Token) -> Result<(), StoreError> {
        self.release_now(key, token);
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

// === impl MemoryStore: the operations at a given time ===

impl MemoryStore {
    fn claim_at(&self, key: &Key, claim_ttl: Duration, now: u64) -> Result<Token, Seen> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let expiry = expiry(now, claim_ttl);
        let slot = match inner.find(key) {
            Some(i) => {
                let node = inner.nodes[i as usize];
                if node.expires_ms() > now {
                    return Err(if node.delivered() { Seen::Delivered } else { Seen::InFlight });
                }
                inner.renew(i, expiry);
                i
            }
            None => inner.insert(*key, expiry),
        };
        self.evict(inner, now);
        Ok(Token { expiry, slot })
    }

    /// Marks `key` delivered; `hint` is where its claim was (see [`Token`]).
    fn commit_at(&self, key: &Key, hint: u32, ttl: Duration, now: u64) {
        let mut inner = self.lock();
        let state = expiry(now, ttl) | DELIVERED;
        match inner.find_at(key, hint) {
            Some(i) => inner.renew(i, state),
            None => _ = inner.insert(*key, state),
        }
        self.evict(&mut inner, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);
    const DAY: Duration = Duration::from_secs(86_400);

    async fn claim(s: &MemoryStore, id: &str) -> Result<Token, Seen> {
        s.claim(&s.key("src", id), MIN).await.unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn claim_commit_release_cycle() {
        let s = MemoryStore::new(100);
        let k = s.key("src", "a");
        let t = claim(&s, "a").await.unwrap();
        assert_eq!(claim(&s, "a").await, Err(Seen::InFlight));
        s.release(&k, &t).await.unwrap();
        let t = claim(&s, "a").await.unwrap();
        s.commit(&k, &t, DAY).await.unwrap();
        assert_eq!(claim(&s, "a").await, Err(Seen::Delivered));
        // Same ID, other source: independent.
        assert!(s.claim(&s.key("other", "a"), MIN).await.unwrap().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn claims_and_deliveries_expire_exactly() {
        let s = MemoryStore::new(100);
        let k = s.key("src", "a");
        claim(&s, "a").await.unwrap();
        tokio::time::advance(MIN - Duration::from_millis(1)).await;
        assert_eq!(claim(&s, "a").await, Err(Seen::InFlight));
        tokio::time::advance(Duration::from_millis(1)).await;
        let t = claim(&s, "a").await.expect("expired claim lets the retry through");
        s.commit(&k, &t, DAY).await.unwrap();
        tokio::time::advance(DAY - Duration::from_millis(1)).await;
        assert_eq!(claim(&s, "a").await, Err(Seen::Delivered));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(claim(&s, "a").await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn stale_release_never_touches_a_newer_claim_and_a_late_commit_marks_delivered() {
        let s = MemoryStore::new(100);
        let k = s.key("src", "a");
        let old = claim(&s, "a").await.unwrap();
        tokio::time::advance(MIN).await;
        let new = claim(&s, "a").await.unwrap();
        s.release(&k, &old).await.unwrap();
        assert_eq!(claim(&s, "a").await, Err(Seen::InFlight));
        // The late owner's upstream took it after all: delivered, so no further copy goes through.
        s.commit(&k, &old, DAY).await.unwrap();
        assert_eq!(claim(&s, "a").await, Err(Seen::Delivered));
        // The newer claim's owner fails: its release must not forget the delivery.
        s.release(&k, &new).await.unwrap();
        assert_eq!(claim(&s, "a").await, Err(Seen::Delivered));
    }

    /// A token's slot is only a hint: a commit or release after that slot was
    /// freed, or reused by another ID, still finds (or makes) its own entry.
    #[tokio::test(start_paused = true)]
    async fn a_commit_whose_slot_was_freed_or_reused_finds_its_own_entry() {
        let s = MemoryStore::new(100);
        let (ka, kb) = (s.key("src", "a"), s.key("src", "b"));
        let ta = claim(&s, "a").await.unwrap();
        s.release(&ka, &ta).await.unwrap();
        let tb = claim(&s, "b").await.unwrap();
        assert_eq!(ta.slot, tb.slot, "the freed slot is reused");
        s.commit(&ka, &ta, DAY).await.unwrap();
        assert_eq!(claim(&s, "a").await, Err(Seen::Delivered));
        assert_eq!(claim(&s, "b").await, Err(Seen::InFlight), "b's claim is untouched");
        s.release(&ka, &ta).await.unwrap();
        assert_eq!(claim(&s, "a").await, Err(Seen::Delivered), "a release never forgets a delivery");
        // A freed node keeps its key but not a live state.
        s.release(&kb, &tb).await.unwrap();
        s.commit(&kb, &tb, DAY).await.unwrap();
        assert_eq!(claim(&s, "b").await, Err(Seen::Delivered));
        assert_eq!(s.len(), 2);
    }

    /// Filling the store to its bound, and past it, never grows (rehashes) the
    /// index or the slab, which would stall every request behind the lock.
    #[tokio::test(start_paused = true)]
    async fn the_table_is_sized_for_the_bound_and_never_grows() {
        let s = MemoryStore::new(50_000);
        let (index, slab) = {
            let inner = s.lock();
            (inner.index.capacity(), inner.nodes.capacity())
        };
        assert!(index >= 50_000 && slab >= 50_000, "{index} {slab}");
        for i in 0..60_000u32 {
            let t = claim(&s, &i.to_string()).await.unwrap();
            s.commit(&s.key("src", &i.to_string()), &t, DAY).await.unwrap();
        }
        assert_eq!(s.len(), 50_000);
        let inner = s.lock();
        // (Index capacity counts free buckets, so removals' tombstones lower it;
        // a growth would at least double it.)
        assert!(inner.index.capacity() <= index && inner.nodes.capacity() == slab);
        assert!(inner.nodes.len() <= 50_001, "evicted nodes are reused: {}", inner.nodes.len());
        assert_eq!(std::mem::size_of::<Node>(), 28);
    }

    /// The linked order and the index agree with a plain model (a list of
    /// (id, delivered, expires) in eviction order) after any sequence of
    /// claims, commits, releases, expiries and evictions.
    #[test]
    fn matches_a_simple_model_under_random_operations() {
        use proptest::prelude::*;
        let mut runner =
            proptest::test_runner::TestRunner::new(proptest::test_runner::Config { cases: 256, ..Default::default() });
        let ops = prop::collection::vec((0u8..4, 0u8..12, 0u64..12), 1..300);
        runner
            .run(&ops, |ops| {
                let s = MemoryStore::new(5);
                let key = |id: u8| s.key("m", &id.to_string());
                let mut model: Vec<(u8, bool, u64)> = Vec::new();
                let mut tokens = std::collections::HashMap::new();
                let mut now = 0u64;
                for (op, id, wait) in ops {
                    now += wait;
                    let changed = match op {
                        0 | 1 => {
                            let got = s.claim_at(&key(id), Duration::from_millis(10), now);
                            let want = match model.iter().find(|e| e.0 == id && e.2 > now) {
                                Some(e) if e.1 => Err(Seen::Delivered),
                                Some(_) => Err(Seen::InFlight),
                                None => {
                                    model.retain(|e| e.0 != id);
                                    model.push((id, false, now + 10));
                                    Ok(now + 10)
                                }
                            };
                            prop_assert_eq!(got.map(|t| t.expiry), want);
                            if let Ok(t) = got {
                                tokens.insert(id, t);
                            }
                            got.is_ok()
                        }
                        2 => {
                            // The hint is this ID's last claim's position, which
                            // may since have been freed or reused by another ID.
                            let hint = tokens.get(&id).map_or(NIL, |t: &Token| t.slot);
                            s.commit_at(&key(id), hint, Duration::from_millis(30), now);
                            model.retain(|e| e.0 != id);
                            model.push((id, true, now + 30));
                            true
                        }
                        _ => {
                            let t = tokens.get(&id).copied().unwrap_or(Token { expiry: 0, slot: NIL });
                            s.release_now(&key(id), &t);
                            model.retain(|e| !(e.0 == id && !e.1 && e.2 == t.expiry));
                            false
                        }
                    };
                    if changed {
                        while model.first().is_some_and(|f| model.len() > 5 || f.2 <= now) {
                            model.remove(0);
                        }
                    }
                    let inner = s.lock();
                    let mut order = Vec::new();
                    let mut i = inner.head;
                    while i != NIL {
                        let n = inner.nodes[i as usize];
                        prop_assert_eq!(inner.find(&n.key), Some(i));
                        order.push((n.key, n.delivered(), n.expires_ms()));
                        i = n.next;
                    }
                    let want: Vec<_> = model.iter().map(|e| (key(e.0), e.1, e.2)).collect();
                    prop_assert_eq!(order, want);
                    prop_assert_eq!(inner.len, model.len());
                    prop_assert_eq!(inner.index.len(), model.len());
                }
                Ok(())
            })
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn evicts_the_oldest_strictly() {
        let s = MemoryStore::new(3);
        for id in ["a", "b", "c"] {
            let t = claim(&s, id).await.unwrap();
            s.commit(&s.key("src", id), &t, DAY).await.unwrap();
        }
        // "a" is re-remembered by being seen? No: lookups do not reorder. Insert "d".
        assert_eq!(claim(&s, "a").await, Err(Seen::Delivered));
        let t = claim(&s, "d").await.unwrap();
        s.commit(&s.key("src", "d"), &t, DAY).await.unwrap();
        assert_eq!(s.len(), 3);
        assert!(claim(&s, "a").await.is_ok(), "a was remembered longest ago and must be evicted");
        // Claiming "a" again evicted "b", the next oldest.
        assert_eq!(claim(&s, "c").await, Err(Seen::Delivered));
        assert!(claim(&s, "b").await.is_ok());
    }

    #[tokio::test]
    async fn guard_drop_releases() {
        use crate::config::{DedupeConfig, OnStoreError, StoreConfig};
        let cfg = DedupeConfig {
            store: StoreConfig::Memory { max_entries: 10 },
            ttl: DAY,
            claim_ttl: MIN,
            on_store_error: OnStoreError::Reject,
        };
        let store = super::super::Store::from_config(&cfg).unwrap();
        let c = store.claim("src", "x", None, &cfg).await.unwrap();
        assert!(matches!(c, super::super::ClaimOutcome::Claimed(_)));
        assert!(matches!(store.claim("src", "x", None, &cfg).await.unwrap(), super::super::ClaimOutcome::InFlight));
        drop(c);
        assert!(matches!(store.claim("src", "x", None, &cfg).await.unwrap(), super::super::ClaimOutcome::Claimed(_)));
    }
}
