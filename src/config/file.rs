//! The config file as serde sees it: every field optional, unknown keys captured
//! (not rejected) so that `validate` can report all of them at once with their paths.
//!
//! Nothing here is used at run time; [`super::validate`] turns it into [`super::Config`].

use std::collections::BTreeMap;

use serde::Deserialize;

/// Keys a table did not declare; reported by `validate` as errors with their path.
pub type Unknown = BTreeMap<String, toml::Value>;

#[derive(Debug, Default, Deserialize)]
pub struct FileConfig {
    #[serde(default)]
    pub server: Option<toml::Value>,
    #[serde(default)]
    pub dedupe: Option<toml::Value>,
    #[serde(default)]
    pub log: Option<toml::Value>,
    #[serde(default)]
    pub sources: Option<toml::Value>,
    #[serde(default)]
    pub queue: Option<toml::Value>,
    #[serde(default)]
    pub alerts: Option<toml::Value>,
    #[serde(default)]
    pub otel: Option<toml::Value>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// One `[[alerts]]` table (SPEC §17).
#[derive(Debug, Default, Deserialize)]
pub struct AlertFile {
    pub url: Option<String>,
    pub format: Option<String>,
    pub signature_failures: Option<String>,
    pub alert_every: Option<String>,
    pub timeout: Option<String>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// `[otel]` (SPEC §17).
#[derive(Debug, Default, Deserialize)]
pub struct OtelFile {
    pub endpoint: Option<String>,
    pub service_name: Option<String>,
    pub timeout: Option<String>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

impl Keys for OtelFile {
    const KEYS: &'static [&'static str] = &["endpoint", "service_name", "timeout"];
}

impl Keys for AlertFile {
    const KEYS: &'static [&'static str] = &["url", "format", "signature_failures", "alert_every", "timeout"];
}

#[derive(Debug, Default, Deserialize)]
pub struct ServerFile {
    pub listen: Option<String>,
    pub admin_listen: Option<String>,
    pub max_body_bytes: Option<u64>,
    pub request_timeout: Option<String>,
    pub shutdown_grace: Option<String>,
    pub trusted_proxies: Option<Vec<String>>,
    pub max_connections: Option<u64>,
    pub admin_token: Option<String>,
    pub tls: Option<TlsFile>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// `[server.tls.acme]`.
#[derive(Debug, Default, Deserialize)]
pub struct AcmeFile {
    pub domains: Option<Vec<String>>,
    pub contact: Option<OneOrMany>,
    pub directory: Option<String>,
    pub directory_ca: Option<String>,
    pub cache: Option<String>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// `[server.tls]`.
#[derive(Debug, Default, Deserialize)]
pub struct TlsFile {
    pub cert: Option<String>,
    pub key: Option<String>,
    pub client_ca: Option<String>,
    pub acme: Option<AcmeFile>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub struct DedupeFile {
    pub store: Option<String>,
    pub ttl: Option<String>,
    pub claim_ttl: Option<String>,
    pub on_store_error: Option<String>,
    pub max_entries: Option<u64>,
    pub redis: Option<RedisFile>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub struct RedisFile {
    pub url: Option<String>,
    pub cluster: Option<Vec<String>>,
    pub key_prefix: Option<String>,
    pub timeout: Option<String>,
    /// A CA file (PEM) for a `rediss://` server.
    pub ca: Option<String>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub struct LogFile {
    pub format: Option<String>,
    pub deliveries: Option<u64>,
    /// A byte size ("64MB") or a number of bytes.
    pub bodies: Option<toml::Value>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub struct SourceFile {
    pub path: Option<String>,
    pub provider: Option<String>,
    pub secrets: Option<OneOrMany>,
    pub tolerance: Option<String>,
    pub allow_ips: Option<Vec<String>>,
    pub rate_limit: Option<RateLimitFile>,
    pub unrouted: Option<String>,
    pub verify: Option<VerifyFile>,
    pub routes: Option<Vec<toml::Value>>,
    pub sign_upstream: Option<String>,
    pub public_url: Option<String>,
    pub verify_token: Option<String>,
    pub dedupe_body: Option<bool>,
    /// `"first"` or `"all"` (fan-out, SPEC §14).
    #[serde(rename = "match")]
    pub match_routes: Option<String>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

#[derive(Debug, Default, Deserialize)]
pub struct RateLimitFile {
    pub per_second: Option<u64>,
    pub burst: Option<u64>,
    pub scope: Option<String>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// `[sources.NAME.verify]`: every field overrides the preset's value when set.
/// The same table, one per provider, is the preset data (`presets.toml`).
#[derive(Debug, Default, Clone, Deserialize)]
pub struct VerifyFile {
    pub scheme: Option<String>,
    /// A header name, `json:/pointer`, or a list of them (first present wins).
    pub signature_header: Option<OneOrMany>,
    pub algorithm: Option<String>,
    pub encoding: Option<String>,
    pub signature_prefix: Option<String>,
    pub signature_format: Option<String>,
    pub param_separator: Option<String>,
    pub signature_param: Option<String>,
    pub secret_format: Option<String>,
    pub signed_payload: Option<String>,
    /// Locators (one, or a list where the first found wins).
    pub timestamp: Option<OneOrMany>,
    pub timestamp_format: Option<String>,
    pub id: Option<OneOrMany>,
    pub event_type: Option<OneOrMany>,
    pub challenge: Option<String>,
    /// `"as-received"` (default) or `"as-received-or-decoded"` (HubSpot).
    pub signed_url: Option<String>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// One provider in `presets.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresetFile {
    /// One line for `hookgate presets`.
    pub description: String,
    /// What the provider calls the value that goes in `secrets`.
    pub secret: String,
    /// Default `tolerance` when the scheme has a timestamp.
    pub tolerance: Option<String>,
    /// Where the vectors or SDK that prove this preset come from.
    pub proof: String,
    /// Another preset whose `verify` fields (and tolerance) this one starts from.
    pub like: Option<String>,
    #[serde(default)]
    pub verify: toml::Table,
}

#[derive(Debug, Default, Deserialize)]
pub struct RouteFile {
    pub name: Option<String>,
    pub events: Option<Vec<String>>,
    pub upstream: Option<String>,
    pub timeout: Option<String>,
    pub delivery: Option<String>,
    pub retry: Option<RetryFile>,
    pub concurrency: Option<u64>,
    pub ack_status: Option<u64>,
    pub sign_upstream: Option<String>,
    pub ca: Option<String>,
    /// Locator -> condition (SPEC §14).
    pub filter: Option<toml::Table>,
    /// A jq program.
    pub transform: Option<String>,
    /// How long one run of `transform` may take.
    pub transform_budget: Option<String>,
    pub headers: Option<BTreeMap<String, String>>,
    pub remove_headers: Option<Vec<String>>,
    /// Queue routes: pause after failing this long; probe this often (SPEC §16).
    pub pause_after: Option<String>,
    /// Queue routes: attempts started per second/minute/hour (SPEC §16).
    pub rate: Option<String>,
    pub probe_every: Option<String>,
    /// Queue routes: one at a time per value of this locator (SPEC §16).
    pub order_by: Option<String>,
    /// Event-bus upstreams: keep the sender's signature headers in the message.
    pub keep_signature: Option<bool>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// `retry = { attempts, backoff, max_backoff }` on a queue route.
#[derive(Debug, Default, Deserialize)]
pub struct RetryFile {
    #[serde(rename = "for")]
    pub horizon: Option<String>,
    pub attempts: Option<u64>,
    pub backoff: Option<String>,
    pub max_backoff: Option<String>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// `[queue]`: where queue-mode deliveries are stored.
#[derive(Debug, Default, Deserialize)]
pub struct QueueFile {
    pub store: Option<String>,
    pub path: Option<String>,
    pub sync: Option<String>,
    pub visibility_timeout: Option<String>,
    pub dead_retention: Option<String>,
    pub redis: Option<RedisFile>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// `secrets = ["a", "b"]`, or a single `secrets = "a"`. Untagged, so a type
/// error never echoes the value (it may be a secret).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    Many(Vec<String>),
    One(String),
}

impl OneOrMany {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::Many(v) => v,
            OneOrMany::One(s) => vec![s],
        }
    }
}

/// The keys a table declares, for "did you mean" suggestions on unknown ones
/// (SPEC §2). Kept in step with the fields above; a test checks every name
/// is one.
pub trait Keys {
    const KEYS: &'static [&'static str];
}

impl Keys for FileConfig {
    const KEYS: &'static [&'static str] = &["server", "dedupe", "log", "sources", "queue", "alerts", "otel"];
}

impl Keys for ServerFile {
    const KEYS: &'static [&'static str] = &[
        "listen",
        "admin_listen",
        "max_body_bytes",
        "request_timeout",
        "shutdown_grace",
        "trusted_proxies",
        "max_connections",
        "admin_token",
        "tls",
    ];
}

impl Keys for AcmeFile {
    const KEYS: &'static [&'static str] = &["domains", "contact", "directory", "directory_ca", "cache"];
}

impl Keys for TlsFile {
    const KEYS: &'static [&'static str] = &["cert", "key", "client_ca", "acme"];
}

impl Keys for DedupeFile {
    const KEYS: &'static [&'static str] = &["store", "ttl", "claim_ttl", "on_store_error", "max_entries", "redis"];
}

impl Keys for RedisFile {
    const KEYS: &'static [&'static str] = &["url", "cluster", "key_prefix", "timeout", "ca"];
}

impl Keys for LogFile {
    const KEYS: &'static [&'static str] = &["format", "deliveries", "bodies"];
}

impl Keys for SourceFile {
    const KEYS: &'static [&'static str] = &[
        "path",
        "provider",
        "secrets",
        "tolerance",
        "allow_ips",
        "rate_limit",
        "unrouted",
        "verify",
        "routes",
        "sign_upstream",
        "public_url",
        "verify_token",
        "dedupe_body",
        "match",
    ];
}

impl Keys for RateLimitFile {
    const KEYS: &'static [&'static str] = &["per_second", "burst", "scope"];
}

impl Keys for VerifyFile {
    const KEYS: &'static [&'static str] = &[
        "scheme",
        "signature_header",
        "algorithm",
        "encoding",
        "signature_prefix",
        "signature_format",
        "param_separator",
        "signature_param",
        "secret_format",
        "signed_payload",
        "timestamp",
        "timestamp_format",
        "id",
        "event_type",
        "challenge",
        "signed_url",
    ];
}

impl Keys for RouteFile {
    const KEYS: &'static [&'static str] = &[
        "name",
        "events",
        "upstream",
        "timeout",
        "delivery",
        "retry",
        "concurrency",
        "ack_status",
        "sign_upstream",
        "ca",
        "filter",
        "transform",
        "transform_budget",
        "headers",
        "remove_headers",
        "pause_after",
        "rate",
        "probe_every",
        "order_by",
        "keep_signature",
    ];
}

impl Keys for RetryFile {
    const KEYS: &'static [&'static str] = &["for", "attempts", "backoff", "max_backoff"];
}

impl Keys for QueueFile {
    const KEYS: &'static [&'static str] = &["store", "path", "sync", "visibility_timeout", "dead_retention", "redis"];
}
