//! The in-process dedupe store: one insertion-ordered hash map behind a mutex.
//!
//! - Keys are the first 16 bytes of SHA-256(`source` NUL `id`): fixed size, no
//!   per-entry heap string, and collision-free in practice.
//! - Order is "remembered longest ago first": a claim or a commit moves the
//!   entry to the back, and when `max_entries` is exceeded the front entry is
//!   evicted — strictly, not approximately.
//! - Expiry is lazy: an expired entry counts as absent when looked up, and
//!   expired entries at the front are dropped on every insert.
//! - Time comes from `tokio::time::Instant`, so tests use `tokio::time::pause`.

use std::sync::Mutex;
use std::time::Duration;

use hashlink::LinkedHashMap;
use hashlink::linked_hash_map::RawEntryMut;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::{DedupeStore, Seen, StoreError};

/// Token 0 marks a delivered entry; claims get 1, 2, 3, …
const DELIVERED: u64 = 0;

#[derive(Debug, Clone, Copy)]
struct Entry {
    token: u64,
    /// Milliseconds after `MemoryStore::epoch`.
    expires_ms: u64,
}

struct Inner {
    map: LinkedHashMap<u128, Entry>,
    next_token: u64,
}

pub struct MemoryStore {
    inner: Mutex<Inner>,
    max_entries: usize,
    epoch: Instant,
}

impl MemoryStore {
    pub fn new(max_entries: usize) -> Self {
        MemoryStore {
            // Sized for the bound up front: growing the table while it fills
            // rehashes every entry under the lock, which stalled every request
            // for up to ~80 ms at 1M entries (`examples/store_footprint.rs`).
            // Costs ~2 bytes per entry of touched memory (the control bytes)
            // until the slots are used; the rest is untouched address space.
            inner: Mutex::new(Inner { map: LinkedHashMap::with_capacity(max_entries.max(1)), next_token: 1 }),
            max_entries: max_entries.max(1),
            epoch: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the map inconsistent
        // (each operation is a single map call), so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Number of remembered entries (claims and delivered), expired ones included.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Remembers `entry` at the back (the newest), replacing any older one.
    fn insert(&self, inner: &mut Inner, key: u128, entry: Entry, now: u64) {
        inner.map.insert(key, entry);
        self.evict(inner, now);
    }

    /// Drops entries from the front while the map is over its bound or they expired.
    fn evict(&self, inner: &mut Inner, now: u64) {
        while let Some((_, front)) = inner.map.front() {
            if inner.map.len() > self.max_entries || front.expires_ms <= now {
                inner.map.pop_front();
            } else {
                break;
            }
        }
    }

    /// Synchronous release, for the claim guard's `Drop`.
    pub fn release_now(&self, key: &u128, token: &u64) {
        let mut inner = self.lock();
        if inner.map.get(key).is_some_and(|e| e.token == *token) {
            inner.map.remove(key);
        }
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl DedupeStore for MemoryStore {
    type Key = u128;
    type Token = u64;

    fn key(&self, source: &str, id: &str) -> u128 {
        let mut h = Sha256::new();
        h.update(source.as_bytes());
        h.update([0u8]);
        h.update(id.as_bytes());
        let digest = h.finalize();
        let mut b = [0u8; 16];
        b.copy_from_slice(&digest[..16]);
        u128::from_le_bytes(b)
    }

    async fn claim(&self, key: &u128, claim_ttl: Duration) -> Result<Result<u64, Seen>, StoreError> {
        let now = self.now_ms();
        let mut inner = self.lock();
        let inner = &mut *inner;
        let token = inner.next_token;
        let claim = Entry { token, expires_ms: now.saturating_add(ms(claim_ttl)) };
        // One hash probe: look up and claim in place.
        match inner.map.raw_entry_mut().from_key(key) {
            RawEntryMut::Occupied(o) if o.get().expires_ms > now => {
                return Ok(Err(if o.get().token == DELIVERED { Seen::Delivered } else { Seen::InFlight }));
            }
            RawEntryMut::Occupied(mut o) => {
                o.to_back();
                o.replace_value(claim);
            }
            RawEntryMut::Vacant(v) => {
                v.insert(*key, claim);
            }
        }
        inner.next_token += 1;
        self.evict(inner, now);
        Ok(Ok(token))
    }

    async fn commit(&self, key: &u128, _token: &u64, ttl: Duration) -> Result<(), StoreError> {
        // The upstream took it: the ID is delivered, whoever holds the claim now
        // (see the `dedupe` module docs). The token only matters to release.
        let now = self.now_ms();
        let mut inner = self.lock();
        self.insert(&mut inner, *key, Entry { token: DELIVERED, expires_ms: now.saturating_add(ms(ttl)) }, now);
        Ok(())
    }

    async fn release(&self, key: &u128, token: &u64) -> Result<(), StoreError> {
        self.release_now(key, token);
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);
    const DAY: Duration = Duration::from_secs(86_400);

    async fn claim(s: &MemoryStore, id: &str) -> Result<u64, Seen> {
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

    /// Filling the store to its bound, and past it, never grows (rehashes) the
    /// table, which would stall every request behind the lock.
    #[tokio::test(start_paused = true)]
    async fn the_table_is_sized_for_the_bound_and_never_grows() {
        let s = MemoryStore::new(50_000);
        let capacity = s.lock().map.capacity();
        assert!(capacity >= 50_000, "{capacity}");
        for i in 0..60_000u32 {
            let t = claim(&s, &i.to_string()).await.unwrap();
            s.commit(&s.key("src", &i.to_string()), &t, DAY).await.unwrap();
        }
        assert_eq!(s.len(), 50_000);
        // (Capacity counts free slots, so removals' tombstones lower it; a
        // growth would at least double it.)
        assert!(s.lock().map.capacity() <= capacity);
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
        let c = store.claim("src", "x", &cfg).await.unwrap();
        assert!(matches!(c, super::super::ClaimOutcome::Claimed(_)));
        assert!(matches!(store.claim("src", "x", &cfg).await.unwrap(), super::super::ClaimOutcome::InFlight));
        drop(c);
        assert!(matches!(store.claim("src", "x", &cfg).await.unwrap(), super::super::ClaimOutcome::Claimed(_)));
    }
}
