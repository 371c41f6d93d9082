//! The state every connection shares: the current config with everything
//! derived from it (limiters, metric handles, the dedupe store), the metrics
//! registry. A reload builds a new [`Loaded`] and swaps
//! it in atomically; requests in flight finish on the one they started with.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use http::HeaderValue;

use crate::config::{Config, OnStoreError, StoreConfig};
use crate::dedupe::{Store, StoreError};
use crate::delivery_log::DeliveryLog;
use crate::guard::{self, Limiter};
use crate::metrics::{Metrics, SourceMetrics};
use crate::queue::{Queue, QueueError};
use crate::telemetry::stats::Stats;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// Per-source state derived from the config.
pub struct SourceState {
    pub limiter: Option<Limiter>,
    /// `scope = "cluster"`: the shared limit (`limiter` stands in while Redis fails).
    pub cluster_limiter: Option<guard::ClusterLimiter>,
    pub metrics: SourceMetrics,
    /// `X-Hookgate-Source` value, made once.
    pub name_header: HeaderValue,
    /// The name, shared with delivery-log records.
    pub name: Arc<str>,
    /// Its minutes for `GET /stats` (kept across reloads by name).
    pub stats: Arc<crate::telemetry::stats::Series>,
}

/// One loaded config and what was built from it.
pub struct Loaded {
    pub config: Config,
    /// Parallel to `config.sources`.
    pub sources: Vec<SourceState>,
    pub store: Store,
}

/// Shared by all connections of both listeners.
pub struct App {
    loaded: RwLock<Arc<Loaded>>,
    pub metrics: Arc<Metrics>,
    /// The clock verification uses; tests may fix it.
    pub clock: fn() -> SystemTime,
    /// Per source and minute, outcomes and upstream latency (`GET /stats`).
    pub stats: Arc<crate::telemetry::stats::Stats>,
    /// `[otel]` (SPEC §17): the span exporter, started with the app (a reload keeps it).
    pub otel: Option<Arc<crate::telemetry::otel::Otel>>,
    /// `[[alerts]]` (SPEC §17).
    pub alerts: Arc<crate::telemetry::alerts::Alerts>,
    /// Logs store failures once per burst, not once per request.
    pub store_health: StoreHealth,
    /// Queue mode's store, when the config has a `[queue]` table. Its settings
    /// apply at start-up only (a reload keeps this one).
    pub queue: Option<Queue>,
    /// The recent requests (`GET /deliveries`).
    pub deliveries: DeliveryLog,
    /// `[server.tls.acme]`: the listener's TLS config, its certificate managed
    /// by the ACME task (start-up only).
    pub acme: Option<Arc<rustls::ServerConfig>>,
}

/// Whether the dedupe store is failing, so a burst of failures logs one line
/// when it starts and one when the store answers again.
#[derive(Debug, Default)]
pub struct StoreHealth {
    failing: AtomicBool,
}

impl StoreHealth {
    pub fn failed(&self, error: &StoreError, policy: OnStoreError) {
        if !self.failing.swap(true, Ordering::Relaxed) {
            let action = match policy {
                OnStoreError::Reject => "rejecting deliveries with 503 until it answers",
                OnStoreError::Allow => "forwarding deliveries without dedupe until it answers",
            };
            tracing::warn!(error = %error, "dedupe store failed; {action}");
        }
    }

    pub fn ok(&self) {
        if self.failing.swap(false, Ordering::Relaxed) {
            tracing::info!("dedupe store answers again");
        }
    }
}

impl Loaded {
    fn build(config: Config, metrics: &Metrics, stats: &Stats, previous: Option<&Loaded>) -> Result<Self, StoreError> {
        // Keep the store (and so the memory store's contents) when its settings did not change.
        let store = match previous {
            Some(p) if p.config.dedupe.store == config.dedupe.store => p.store.clone(),
            Some(p) => {
                // A memory store is rebuilt empty; another Redis holds other IDs.
                let what = match (&p.config.dedupe.store, &config.dedupe.store) {
                    (StoreConfig::Memory { .. }, StoreConfig::Memory { .. }) => {
                        "max_entries changed: the memory store starts empty"
                    }
                    (StoreConfig::Memory { .. }, StoreConfig::Redis(_)) => "memory -> redis",
                    (StoreConfig::Redis(_), StoreConfig::Memory { .. }) => {
                        "redis -> memory: the memory store starts empty"
                    }
                    (StoreConfig::Redis(_), StoreConfig::Redis(_)) => "another Redis or key prefix",
                };
                tracing::warn!(
                    change = what,
                    "the dedupe store was replaced by the reload: deliveries remembered before are not known to it, so a sender's retry of one may be forwarded again"
                );
                Store::from_config(&config.dedupe)?
            }
            None => Store::from_config(&config.dedupe)?,
        };
        // One connection for every cluster-wide limit, to the dedupe Redis.
        let rate_redis = match &config.dedupe.store {
            StoreConfig::Redis(r) if config.sources.iter().any(|s| s.rate_limit.is_some_and(|l| l.cluster)) => {
                let conn = crate::redis_conn::RedisConn::new(r).map_err(|e| StoreError::Unavailable(e.to_string()))?;
                Some((Arc::new(conn), r.key_prefix.clone()))
            }
            _ => None,
        };
        let sources = config
            .sources
            .iter()
            .map(|s| SourceState {
                limiter: s.rate_limit.as_ref().map(guard::limiter),
                cluster_limiter: match (&rate_redis, &s.rate_limit) {
                    (Some((conn, prefix)), Some(rl)) if rl.cluster => {
                        Some(guard::ClusterLimiter::new(conn.clone(), prefix, &s.name, rl))
                    }
                    _ => None,
                },
                metrics: metrics.for_source(
                    &s.name,
                    &s.routes.iter().map(|r| &*r.label).collect::<Vec<_>>(),
                    &s.verifier.key_ids,
                ),
                name_header: HeaderValue::from_str(&s.name).unwrap_or(HeaderValue::from_static("invalid")),
                name: s.name.as_str().into(),
                stats: stats.for_source(&s.name),
            })
            .collect();
        Ok(Loaded { config, sources, store })
    }
}

impl App {
    pub fn new(config: Config) -> Result<Arc<Self>, StartError> {
        Self::with_clock(config, SystemTime::now)
    }

    /// Like [`App::new`] with a fixed clock, for tests of the freshness window.
    pub fn with_clock(config: Config, clock: fn() -> SystemTime) -> Result<Arc<Self>, StartError> {
        let metrics = Arc::new(Metrics::new());
        let queue = config.queue.as_ref().map(|q| Queue::start(q, &config)).transpose()?;
        let deliveries = DeliveryLog::new(config.log.deliveries, config.log.bodies);
        let acme = config.server.acme.as_ref().map(crate::tls::acme_server_config).transpose()?;
        if let Some(crate::queue::Store::Redis(r)) = queue.as_ref().map(|q| &q.store) {
            r.set_metrics(metrics.clone());
        }
        let stats = Arc::new(Stats::default());
        let alerts = Arc::new(crate::telemetry::alerts::Alerts::new(&config.alerts));
        let otel = match (&config.otel, tokio::runtime::Handle::try_current()) {
            (Some(o), Ok(_)) => Some(crate::telemetry::otel::Otel::start(o)),
            _ => None,
        };
        if let Some(q) = &queue {
            q.set_alerts(alerts.clone());
        }
        let loaded = Loaded::build(config, &metrics, &stats, None)?;
        Ok(Arc::new(App {
            loaded: RwLock::new(Arc::new(loaded)),
            metrics,
            stats,
            alerts,
            otel,
            clock,
            store_health: StoreHealth::default(),
            queue,
            deliveries,
            acme,
        }))
    }

    /// The config in force now.
    pub fn current(&self) -> Arc<Loaded> {
        self.loaded.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Reads `path` and swaps it in (SIGHUP); an invalid file or a failed
    /// build keeps the config in force. Counted in `hookgate_config_reloads_total{result}`.
    pub fn reload_file(&self, path: &std::path::Path) -> bool {
        let result = match Config::load(path) {
            Ok(cfg) => match self.reload(cfg) {
                Ok(()) => {
                    tracing::info!(config = %path.display(), "config reloaded");
                    "ok"
                }
                Err(e) => {
                    tracing::error!(error = %e, "reload failed; keeping the old config");
                    "failed"
                }
            },
            Err(errors) => {
                for e in &errors.0 {
                    tracing::error!(error = %e, "invalid config on reload; keeping the old config");
                }
                "invalid"
            }
        };
        self.metrics.reloaded(result);
        result == "ok"
    }

    /// Swaps in a new config. Listen addresses cannot change without a restart.
    pub fn reload(&self, config: Config) -> Result<(), StoreError> {
        let current = self.current();
        let (old, new) = (&current.config.server, &config.server);
        if old.listen != new.listen
            || old.admin_listen != new.admin_listen
            || old.max_connections != new.max_connections
        {
            tracing::warn!(
                "server.listen, server.admin_listen and server.max_connections apply at start-up only; restart to change them"
            );
        }
        if current.config.server.acme != config.server.acme {
            tracing::warn!("[server.tls.acme] applies at start-up only; restart to change it");
        }
        if current.config.otel != config.otel {
            tracing::warn!("[otel] applies at start-up only; restart to change it");
        }
        if current.config.queue != config.queue {
            tracing::warn!("[queue] applies at start-up only; restart to change it (the running queue is kept)");
        }
        self.deliveries.set_capacity(config.log.deliveries, config.log.bodies);
        self.alerts.set(&config.alerts);
        let next = Loaded::build(config, &self.metrics, &self.stats, Some(&current))?;
        *self.loaded.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
        // Queue workers look at their route's settings again (concurrency, upstream).
        if let Some(q) = &self.queue {
            q.wake_all();
        }
        Ok(())
    }
}
