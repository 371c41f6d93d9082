//! At-least-once-safe deduplication (SPEC §3).
//!
//! A delivery ID is *claimed* before forwarding (short `claim_ttl`), then
//! *committed* as delivered (long `ttl`) only after the upstream answers 2xx,
//! or *released* on any other outcome so the sender's retry goes through.
//!
//! [`Claim`] is a guard: it must be committed or released, and dropping it
//! (say, the sender hung up mid-forward) releases it. Release only ever deletes
//! the claim it made (a per-claim token), so a slow replica whose claim expired
//! can never clear another replica's. Commit marks the ID delivered whoever
//! holds the claim by then: it runs only after the upstream answered 2xx, so
//! the ID is delivered, and a newer claim's later release leaves it so.
//!
//! Backends: [`memory::MemoryStore`] (one process, the default) and
//! [`redis::RedisStore`] (shared by replicas; standalone or cluster).

pub mod memory;
pub mod redis;

use std::sync::Arc;
use std::time::Duration;

use crate::config::{DedupeConfig, StoreConfig};

/// The store could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("dedupe store unreachable: {0}")]
    Unavailable(String),
    #[error("dedupe store did not answer in time")]
    Timeout,
}

/// What a claim attempt found.
#[derive(Debug)]
pub enum ClaimOutcome {
    /// New: forward it, then commit or release.
    Claimed(Claim),
    /// Already delivered.
    Delivered,
    /// Another copy is being forwarded right now.
    InFlight,
}

/// The contract every backend meets. Keys are `(source, id)`; each backend
/// maps them to its own representation (Redis: `{key_prefix}{source}:{id}`).
pub trait DedupeStore: Send + Sync + 'static {
    /// Owned form of a key, kept by the claim guard.
    type Key: Send + Sync + 'static;
    /// Proof of ownership of one claim.
    type Token: Send + Sync + 'static;

    fn key(&self, source: &str, id: &str) -> Self::Key;
    fn claim(
        &self,
        key: &Self::Key,
        claim_ttl: Duration,
    ) -> impl Future<Output = Result<Result<Self::Token, Seen>, StoreError>> + Send;
    fn commit(
        &self,
        key: &Self::Key,
        token: &Self::Token,
        ttl: Duration,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn release(&self, key: &Self::Key, token: &Self::Token) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// What an existing entry says about an ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    Delivered,
    InFlight,
}

/// The configured backend. Cheap to clone.
#[derive(Clone)]
pub enum Store {
    Memory(Arc<memory::MemoryStore>),
    Redis(Arc<redis::RedisStore>),
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Store::Memory(_) => f.write_str("Store::Memory"),
            Store::Redis(_) => f.write_str("Store::Redis"),
        }
    }
}

/// A held claim; see the module docs.
pub struct Claim {
    held: Option<Held>,
    ttl: Duration,
}

enum Held {
    Memory(
        Arc<memory::MemoryStore>,
        <memory::MemoryStore as DedupeStore>::Key,
        <memory::MemoryStore as DedupeStore>::Token,
    ),
    Redis(Arc<redis::RedisStore>, <redis::RedisStore as DedupeStore>::Key, <redis::RedisStore as DedupeStore>::Token),
}

impl std::fmt::Debug for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Claim")
    }
}

impl Store {
    /// Builds the backend `cfg` names. Redis connects lazily, so this does not
    /// fail when Redis is down: the first requests get `StoreError` instead.
    pub fn from_config(cfg: &DedupeConfig) -> Result<Self, StoreError> {
        Ok(match &cfg.store {
            StoreConfig::Memory { max_entries } => Store::Memory(Arc::new(memory::MemoryStore::new(*max_entries))),
            StoreConfig::Redis(r) => Store::Redis(Arc::new(redis::RedisStore::new(r)?)),
        })
    }

    /// Claims `(source, id)` for forwarding.
    pub async fn claim(&self, source: &str, id: &str, cfg: &DedupeConfig) -> Result<ClaimOutcome, StoreError> {
        let held = match self {
            Store::Memory(s) => {
                let key = s.key(source, id);
                s.claim(&key, cfg.claim_ttl).await?.map(|token| Held::Memory(s.clone(), key, token))
            }
            Store::Redis(s) => {
                let key = s.key(source, id);
                // Redis futures are boxed (here and in commit and release):
                // inline they would make the memory store's futures ~1.6 KB too.
                Box::pin(s.claim(&key, cfg.claim_ttl)).await?.map(|token| Held::Redis(s.clone(), key, token))
            }
        };
        Ok(match held {
            Ok(held) => ClaimOutcome::Claimed(Claim { held: Some(held), ttl: cfg.ttl }),
            Err(Seen::Delivered) => ClaimOutcome::Delivered,
            Err(Seen::InFlight) => ClaimOutcome::InFlight,
        })
    }

    /// Whether the store answers (for `/readyz`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Store::Memory(s) => s.ping().await,
            Store::Redis(s) => s.ping().await,
        }
    }
}

impl Claim {
    /// Marks the delivery as done; the delivered `ttl` replaces the claim's.
    pub async fn commit(mut self) -> Result<(), StoreError> {
        match self.held.take() {
            Some(Held::Memory(s, k, t)) => s.commit(&k, &t, self.ttl).await,
            Some(Held::Redis(s, k, t)) => Box::pin(s.commit(&k, &t, self.ttl)).await,
            None => Ok(()),
        }
    }

    /// Gives the ID back so a retry is forwarded again.
    pub async fn release(mut self) -> Result<(), StoreError> {
        match self.held.take() {
            Some(Held::Memory(s, k, t)) => s.release(&k, &t).await,
            Some(Held::Redis(s, k, t)) => Box::pin(s.release(&k, &t)).await,
            None => Ok(()),
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        match self.held.take() {
            None => {}
            Some(Held::Memory(s, k, t)) => s.release_now(&k, &t),
            Some(Held::Redis(s, k, t)) => {
                // Cannot await in drop: release in the background. If the
                // runtime is gone the claim simply expires after claim_ttl.
                if let Ok(handle) = tokio::runtime::Handle::try_current() {
                    handle.spawn(async move {
                        let _ = s.release(&k, &t).await;
                    });
                }
            }
        }
    }
}
