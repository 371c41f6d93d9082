//! hookgate: a receiver-side webhook gateway.
//!
//! It stands in front of an app that receives webhooks and lets through only
//! deliveries that are authentic, fresh and new. One request, top to bottom
//! (see [`pipeline`], which reads in exactly this order):
//!
//! ```text
//!   POST /webhooks/tampa
//!        │
//!   ┌────▼─────┐ 404 unknown path, 405 not POST
//!   │  source  │
//!   ├──────────┤ 403 outside allow_ips (X-Forwarded-For only via trusted_proxies)
//!   │  guard   │ 429 over the source's rate          (guard.rs)
//!   ├──────────┤ 413 over max_body_bytes, 408 too slow
//!   │   body   │
//!   ├──────────┤ 400 undecodable signature/timestamp
//!   │  verify  │ 401 missing/wrong signature, stale  (verify/)
//!   ├──────────┤
//!   │challenge │ 200 provider handshake / test ping  (challenge.rs)
//!   ├──────────┤ 200 + X-Hookgate-Duplicate, 409 in flight,
//!   │  dedupe  │ 503 store down                      (dedupe/)
//!   ├──────────┤
//!   │  route   │ 202 / 404 no route                  (route.rs)
//!   ├──────────┤
//!   │ forward  │ upstream's answer, 502/504          (forward.rs)
//!   └────┬─────┘
//!        └── 2xx: commit the claim; anything else: release it
//! ```
//!
//! # Layout
//! - [`config`]: TOML file → validated runtime [`config::Config`].
//! - [`server`]: accept loops, connection limits, graceful drain.
//! - [`pipeline`]: one request, stage by stage; [`error`] maps rejections to answers.
//! - [`verify`], [`challenge`], [`dedupe`], [`route`], [`forward`], [`guard`]: the stages.
//! - [`upstream`]: the per-thread upstream connection pool.
//! - [`admin`], [`metrics`]: `/healthz`, `/readyz`, `/metrics`.
//! - [`app`]: the loaded state shared by all connections, and config reload.

pub mod admin;
pub mod app;
pub mod body;
pub mod broker;
pub mod challenge;
pub mod config;
pub mod dedupe;
pub mod delivery_log;
pub mod error;
pub mod forward;
pub mod guard;
pub mod metrics;
pub mod pipeline;
pub mod queue;
pub mod redis_conn;
pub mod resign;
pub mod route;
pub mod server;
pub mod telemetry;
pub mod tls;
pub mod upstream;
pub mod verify;

/// Response body: a gateway-made answer, or the upstream's body streamed through.
pub type ResBody = http_body_util::Either<http_body_util::Full<bytes::Bytes>, forward::Streamed>;

pub use app::App;
