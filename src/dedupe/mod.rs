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

/// A held claim; see the module docs. With `dedupe_body` (SPEC §10) it holds
/// the body digest's claim too, and commits or releases both together.
pub struct Claim {
    held: Option<Held>,
    body: Option<Held>,
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

/// The ID under which a body's digest is claimed: `body:<hex>` beside the
/// source's delivery IDs (Redis: `{key_prefix}{source}:body:<hex>`).
pub fn body_key_id(digest_hex: &str) -> String {
    format!("body:{digest_hex}")
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

    /// Claims `(source, id)` for forwarding and, when `body_digest` is given,
    /// the body's digest beside it (both at once: one round trip on Redis's
    /// multiplexed connection). Either one delivered makes the delivery a
    /// duplicate; either one in flight makes it in flight; a half-made claim is
    /// released.
    pub async fn claim(
        &self,
        source: &str,
        id: &str,
        body_digest: Option<&str>,
        cfg: &DedupeConfig,
    ) -> Result<ClaimOutcome, StoreError> {
        let Some(digest) = body_digest else {
            return Ok(match self.claim_one(source, id, cfg).await? {
                Ok(held) => ClaimOutcome::Claimed(Claim { held: Some(held), body: None, ttl: cfg.ttl }),
                Err(Seen::Delivered) => ClaimOutcome::Delivered,
                Err(Seen::InFlight) => ClaimOutcome::InFlight,
            });
        };
        // Boxed: two claims side by side would make every request's future larger.
        Box::pin(self.claim_with_body(source, id, digest, cfg)).await
    }

    async fn claim_with_body(
        &self,
        source: &str,
        id: &str,
        digest: &str,
        cfg: &DedupeConfig,
    ) -> Result<ClaimOutcome, StoreError> {
        let body_id = body_key_id(digest);
        let (by_id, by_body) =
            futures_util::future::join(self.claim_one(source, id, cfg), self.claim_one(source, &body_id, cfg)).await;
        // Whatever was claimed is released by this guard's drop unless it is returned.
        let mut claim = Claim { held: None, body: None, ttl: cfg.ttl };
        let mut seen = None;
        let mut failed = None;
        for (slot, outcome) in [(&mut claim.held, by_id), (&mut claim.body, by_body)] {
            match outcome {
                Ok(Ok(held)) => *slot = Some(held),
                Ok(Err(s)) => seen = Some(if seen == Some(Seen::Delivered) { Seen::Delivered } else { s }),
                Err(e) => failed = Some(e),
            }
        }
        if let Some(e) = failed {
            claim.release().await.ok();
            return Err(e);
        }
        Ok(match seen {
            None => ClaimOutcome::Claimed(claim),
            Some(s) => {
                claim.release().await?;
                if s == Seen::Delivered { ClaimOutcome::Delivered } else { ClaimOutcome::InFlight }
            }
        })
    }

    async fn claim_one(&self, source: &str, id: &str, cfg: &DedupeConfig) -> Result<Result<Held, Seen>, StoreError> {
        Ok(match self {
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
        let (held, ttl) = (self.held.take(), self.ttl);
        match self.body.take() {
            None => Held::commit(held, ttl).await,
            // Boxed, like the claim of both: rare, and larger.
            body => {
                Box::pin(async move {
                    let (a, b) = futures_util::future::join(Held::commit(held, ttl), Held::commit(body, ttl)).await;
                    a.and(b)
                })
                .await
            }
        }
    }

    /// Gives the ID back so a retry is forwarded again.
    pub async fn release(mut self) -> Result<(), StoreError> {
        let held = self.held.take();
        match self.body.take() {
            None => Held::release(held).await,
            body => {
                Box::pin(async move {
                    let (a, b) = futures_util::future::join(Held::release(held), Held::release(body)).await;
                    a.and(b)
                })
                .await
            }
        }
    }
}

impl Held {
    async fn commit(held: Option<Held>, ttl: Duration) -> Result<(), StoreError> {
        match held {
            Some(Held::Memory(s, k, t)) => s.commit(&k, &t, ttl).await,
            Some(Held::Redis(s, k, t)) => Box::pin(s.commit(&k, &t, ttl)).await,
            None => Ok(()),
        }
    }

    async fn release(held: Option<Held>) -> Result<(), StoreError> {
        match held {
            Some(Held::Memory(s, k, t)) => s.release(&k, &t).await,
            Some(Held::Redis(s, k, t)) => Box::pin(s.release(&k, &t)).await,
            None => Ok(()),
        }
    }

    /// Releases without awaiting (from a drop).
    fn release_now(self) {
        match self {
            Held::Memory(s, k, t) => s.release_now(&k, &t),
            Held::Redis(s, k, t) => {
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

impl Drop for Claim {
    fn drop(&mut self) {
        for held in [self.held.take(), self.body.take()].into_iter().flatten() {
            held.release_now();
        }
    }
}
