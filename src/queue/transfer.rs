//! Moving every stored delivery from one queue store to another (SPEC §12,
//! `hookgate queue move`): a deployment that outgrows one machine moves its
//! backlog from the disk store to Redis, or back, without losing it.
//!
//! Deliveries keep their route, their state (attempts, last answer) and their
//! place: waiting, waiting for a retry (due time kept), or dead. Each page is
//! written to the target first and removed from the source after, so a move
//! cut short (killed, a store down) repeats some deliveries when run again
//! (at-least-once, as everywhere in queue mode) and loses none.
//!
//! Both stores must not be in use by a running gateway: the disk store is
//! opened here (its lock makes that fail while a gateway has it), and a Redis
//! store's deliveries taken by a running replica would be moved under it.

use super::entry::{RouteKey, State};
use super::{Legacy, QueueError, disk, redis};

/// Where a delivery waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Not attempted yet, or taken and not finished.
    Waiting,
    Retry {
        due_ms: u64,
    },
    Dead {
        dead_ms: u64,
    },
}

/// One stored delivery as it travels.
#[derive(Debug, Clone)]
pub struct Item {
    pub route: RouteKey,
    pub place: Place,
    pub state: State,
    /// The entry as stored ([`super::NewEntry::encode`]).
    pub entry: Vec<u8>,
}

/// A queue store opened for a move.
pub enum Store {
    Disk(Box<disk::Offline>),
    Redis(std::sync::Arc<redis::RedisQueue>),
}

/// Where an exported item is in its source, to remove it once it was imported.
pub enum Origin {
    Disk(disk::Location),
    Redis(redis::Location),
}

/// What a move did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    pub waiting: u64,
    pub retrying: u64,
    pub dead: u64,
}

impl Moved {
    pub fn total(&self) -> u64 {
        self.waiting + self.retrying + self.dead
    }
}

/// Deliveries per page: one write to the target, one removal from the source.
const PAGE: usize = 500;

impl Store {
    /// Opens the store `cfg` names (a disk store is migrated from route
    /// positions as at a start, with `legacy`).
    pub fn open(cfg: &crate::config::QueueConfig, legacy: &Legacy) -> Result<Store, QueueError> {
        Ok(match &cfg.store {
            crate::config::QueueStoreConfig::Disk { path, .. } => {
                Store::Disk(Box::new(disk::Offline::open(path, legacy)?))
            }
            crate::config::QueueStoreConfig::Redis(r) => {
                Store::Redis(std::sync::Arc::new(redis::RedisQueue::new(r, cfg.visibility_timeout)?))
            }
        })
    }

    async fn export(&mut self, limit: usize) -> Result<Vec<(Item, Origin)>, QueueError> {
        match self {
            Store::Disk(d) => Ok(d.export(limit)?.into_iter().map(|(i, o)| (i, Origin::Disk(o))).collect()),
            Store::Redis(r) => Ok(r.export(limit).await?.into_iter().map(|(i, o)| (i, Origin::Redis(o))).collect()),
        }
    }

    async fn import(&mut self, items: &[Item]) -> Result<(), QueueError> {
        match self {
            Store::Disk(d) => d.import(items),
            Store::Redis(r) => r.import(items).await,
        }
    }

    async fn remove(&mut self, origins: Vec<Origin>) -> Result<(), QueueError> {
        match self {
            Store::Disk(d) => {
                d.remove(origins.into_iter().filter_map(|o| if let Origin::Disk(l) = o { Some(l) } else { None }))
            }
            Store::Redis(r) => {
                let list: Vec<_> =
                    origins.into_iter().filter_map(|o| if let Origin::Redis(l) = o { Some(l) } else { None }).collect();
                r.remove(&list).await
            }
        }
    }

    /// Every delivery in the store, counted by place (for the start-up check).
    pub async fn count(&mut self) -> Result<Moved, QueueError> {
        match self {
            Store::Disk(d) => Ok(d.count()),
            Store::Redis(r) => {
                let mut m = Moved::default();
                for route in r.stored_routes().await? {
                    let (c, taken) = r.depth(&route).await?;
                    m.waiting += c.pending + taken;
                    m.retrying += c.scheduled;
                    m.dead += c.dead;
                }
                Ok(m)
            }
        }
    }
}

/// Moves every delivery of `from` into `to`, page by page.
pub async fn move_all(from: &mut Store, to: &mut Store) -> Result<Moved, QueueError> {
    let mut moved = Moved::default();
    loop {
        let page = from.export(PAGE).await?;
        if page.is_empty() {
            return Ok(moved);
        }
        let (items, origins): (Vec<Item>, Vec<Origin>) = page.into_iter().unzip();
        to.import(&items).await?;
        from.remove(origins).await?;
        for i in &items {
            match i.place {
                Place::Waiting => moved.waiting += 1,
                Place::Retry { .. } => moved.retrying += 1,
                Place::Dead { .. } => moved.dead += 1,
            }
        }
    }
}
