//! Configuration in two layers, as SPEC §2 describes it.
//!
//! - [`file`]: serde structs mirroring the TOML, every field optional and
//!   unknown keys captured so they can all be reported.
//! - [`env`]: `${VAR}` / `${VAR:-default}` expansion over the parsed tree.
//! - [`presets`]: the provider table (`presets.toml`), built by the same
//!   validation as a user's `[sources.x.verify]`.
//! - [`validate`]: one fallible pass producing the runtime [`Config`] below
//!   (parsed addresses, `Duration`s, compiled verifiers and routes) or *every*
//!   error found, each with its key path.
//!
//! Runtime types are never deserialized directly.

pub mod env;
mod errors;
pub mod file;
pub mod presets;
pub mod validate;
mod verify_table;

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;

use crate::route::Route;
use crate::verify::Verifier;

pub use crate::redis_conn::{RedisConfig, RedisTarget};
pub use validate::{ConfigErrors, load_str};

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub dedupe: DedupeConfig,
    pub log: LogConfig,
    /// Sorted by name.
    pub sources: Vec<Source>,
    /// `[queue]`: present when a route has `delivery = "queue"` or the table is set.
    pub queue: Option<QueueConfig>,
    /// `[[alerts]]` (SPEC §17), in file order.
    pub alerts: Vec<crate::telemetry::alerts::AlertConfig>,
    /// `[otel]` (SPEC §17): export traces; applies at start-up.
    pub otel: Option<crate::telemetry::otel::OtelConfig>,
}

/// `[queue]` (SPEC §5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueConfig {
    pub store: QueueStoreConfig,
    /// A delivery taken by a worker that died is handed out again after this.
    pub visibility_timeout: Duration,
    /// Dead letters older than this are dropped.
    pub dead_retention: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueStoreConfig {
    /// Embedded store in `path`; `fsync`: the ack waits for the data to be fsync'd.
    Disk {
        path: std::path::PathBuf,
        fsync: bool,
    },
    Redis(RedisConfig),
}

/// A secret compared in constant time and never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Box<str>);

impl Secret {
    pub fn new(s: &str) -> Self {
        Secret(s.into())
    }

    /// Constant-time comparison with what a client sent.
    pub fn matches(&self, given: &[u8]) -> bool {
        use subtle::ConstantTimeEq as _;
        bool::from(self.0.as_bytes().ct_eq(given))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Webhook traffic.
    pub listen: SocketAddr,
    /// `/healthz`, `/readyz`, `/metrics`; `None` disables the admin listener.
    pub admin_listen: Option<SocketAddr>,
    /// Larger bodies get 413 before they are read past the limit.
    pub max_body_bytes: usize,
    /// Budget for the sender to deliver headers and body.
    pub request_timeout: Duration,
    /// How long in-flight requests may finish after SIGTERM/SIGINT.
    pub shutdown_grace: Duration,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Open connections at once; the accept loop waits beyond this.
    pub max_connections: usize,
    /// `Authorization: Bearer` for every admin request but `/healthz` and
    /// `/readyz`; without it the section 5/6 endpoints are loopback-only.
    pub admin_token: Option<Secret>,
    /// `[server.tls]` with files: `listen` speaks HTTPS only.
    pub tls: Option<ServerTls>,
    /// `[server.tls.acme]`: HTTPS with certificates from an ACME CA (start-up only).
    pub acme: Option<crate::tls::AcmeSettings>,
}

/// The listener's TLS: the files and the config loaded from them.
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub files: crate::tls::TlsFiles,
    pub config: std::sync::Arc<rustls::ServerConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    Memory { max_entries: usize },
    Redis(RedisConfig),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnStoreError {
    /// 503 + Retry-After: the sender retries later.
    Reject,
    /// Forward without dedupe.
    Allow,
}

#[derive(Debug, Clone)]
pub struct DedupeConfig {
    pub store: StoreConfig,
    /// How long a delivered ID is remembered.
    pub ttl: Duration,
    /// How long an in-flight claim lives if the process dies.
    pub claim_ttl: Duration,
    pub on_store_error: OnStoreError,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    /// Records kept by the in-memory delivery log (`GET /deliveries`); 0 turns it off.
    pub deliveries: usize,
    /// Bytes of captured requests (headers and bodies) the log may hold; 0
    /// (the default) captures nothing (SPEC §17).
    pub bodies: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unrouted {
    /// 202, not forwarded.
    Ack,
    /// 404.
    Reject,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub per_second: NonZeroU32,
    pub burst: NonZeroU32,
    /// `scope = "cluster"`: one limit for all replicas, kept in `[dedupe.redis]`.
    pub cluster: bool,
}

/// One sender.
#[derive(Debug, Clone)]
pub struct Source {
    /// The `[sources.NAME]` key: used in dedupe keys, headers, metrics and logs.
    pub name: String,
    /// Exact request path that selects this source.
    pub path: String,
    pub verifier: Verifier,
    /// Empty: every client may send.
    pub allow_ips: Vec<IpNet>,
    pub rate_limit: Option<RateLimit>,
    pub unrouted: Unrouted,
    /// Also claim the body's SHA-256 in the dedupe store, so a captured body
    /// replayed under a fresh (unsigned) ID is a duplicate (SPEC §10).
    pub dedupe_body: bool,
    /// `match = "all"`: every route that takes a delivery gets it (SPEC §14);
    /// otherwise the first one does.
    pub fan_out: bool,
    pub routes: Vec<Route>,
}

impl Config {
    /// Reads and validates `path`, expanding variables from the process environment.
    pub fn load(path: &Path) -> Result<Self, ConfigErrors> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigErrors(vec![format!("{}: cannot read: {e}", path.display())]))?;
        load_str(&text, &|name| std::env::var(name).ok())
    }

    pub fn source_by_path(&self, path: &str) -> Option<&Source> {
        self.sources.iter().find(|s| s.path == path)
    }
}
