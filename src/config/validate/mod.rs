//! File structs → runtime [`Config`], collecting every error with its key path.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;

pub use super::errors::ConfigErrors;
use super::errors::Errors;
use super::file::{
    AcmeFile, AlertFile, DedupeFile, FileConfig, Keys as _, LogFile, OtelFile, QueueFile, RateLimitFile, RedisFile,
    ServerFile, SourceFile, TlsFile,
};
use super::presets;
use super::verify_table::apply_overrides;
use super::{
    Config, DedupeConfig, LogConfig, LogFormat, OnStoreError, QueueConfig, QueueStoreConfig, RateLimit, RedisConfig,
    RedisTarget, Secret, ServerConfig, ServerTls, Source, StoreConfig, Unrouted,
};
use crate::resign::Resigner;
use crate::route::policy::Rate;
use crate::telemetry::alerts::{ALERT_EVERY, AlertConfig, AlertFormat};
use crate::telemetry::otel::OtelConfig;
use crate::verify::{Challenge, Key, Scheme, Spec, Verifier, keys};

/// Upper bound of `dedupe.max_entries` (about 8 GB of remembered IDs).
const MAX_MEMORY_ENTRIES: u64 = 100_000_000;
/// Upper bound of `log.deliveries` (~200 bytes a record).
const MAX_LOG_RECORDS: u64 = 1_000_000;
/// Upper bound of `log.bodies`.
const MAX_LOG_BODIES: u64 = 64 << 30;

/// `[[alerts]]`: each table's URL compiled into a route (so https and Unix
/// sockets work as for upstreams), its format, threshold and interval.
fn alerts(errs: &mut Errors, value: Option<toml::Value>) -> Vec<AlertConfig> {
    let tables = match value {
        None => return Vec::new(),
        Some(toml::Value::Array(a)) => a,
        Some(_) => {
            errs.push("alerts", "expected [[alerts]] tables");
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for (i, table) in tables.into_iter().enumerate() {
        let path = format!("alerts[{i}]");
        let f: AlertFile = errs.table(&path, Some(table));
        errs.unknown(&path, &f.unknown, AlertFile::KEYS);
        let format = errs.choice(
            &format!("{path}.format"),
            f.format.as_deref(),
            AlertFormat::Json,
            &[("json", AlertFormat::Json), ("slack", AlertFormat::Slack)],
        );
        let alert_every = errs.duration(&format!("{path}.alert_every"), f.alert_every.as_deref(), ALERT_EVERY);
        let timeout = errs.duration(&format!("{path}.timeout"), f.timeout.as_deref(), Duration::from_secs(5));
        let signature_failures = f.signature_failures.as_deref().and_then(|t| match Rate::parse(t) {
            Ok(r) => Some(r),
            Err(e) => {
                errs.push(&format!("{path}.signature_failures"), e);
                None
            }
        });
        let Some(url) = f.url else {
            errs.push(&format!("{path}.url"), "required: where alerts are POSTed (http:// or https://)");
            continue;
        };
        match AlertConfig::new(&url, format, signature_failures, alert_every, timeout) {
            Ok(a) => out.push(a),
            Err(e) => errs.push(&format!("{path}.url"), e),
        }
    }
    out
}

/// `[otel]`: the collector's endpoint and the service name spans carry.
fn otel(errs: &mut Errors, value: toml::Value) -> Option<OtelConfig> {
    let f: OtelFile = errs.table("otel", Some(value));
    errs.unknown("otel", &f.unknown, OtelFile::KEYS);
    let timeout = errs.duration("otel.timeout", f.timeout.as_deref(), Duration::from_secs(5));
    let service = f.service_name.as_deref().unwrap_or("hookgate");
    if service.is_empty() || service.len() > 256 {
        errs.push("otel.service_name", "1 to 256 characters");
    }
    let Some(endpoint) = f.endpoint else {
        errs.push("otel.endpoint", "required: the collector's OTLP/HTTP base URL, e.g. http://collector:4318");
        return None;
    };
    OtelConfig::new(&endpoint, service, timeout).map_err(|e| errs.push("otel.endpoint", e)).ok()
}

/// `log.bodies`: "64MB", "1GiB" or a number of bytes; 0 when unset.
fn log_bodies(errs: &mut Errors, value: Option<&toml::Value>) -> usize {
    let bytes = match value {
        None => return 0,
        Some(toml::Value::Integer(n)) => u64::try_from(*n).ok(),
        Some(toml::Value::String(s)) => s.trim().parse::<bytesize::ByteSize>().ok().map(|b| b.as_u64()),
        Some(_) => None,
    };
    match bytes {
        Some(n) if n <= MAX_LOG_BODIES => usize::try_from(n).unwrap_or(0),
        Some(_) => {
            errs.push("log.bodies", "must be at most 64GiB");
            0
        }
        None => {
            errs.push("log.bodies", "expected a size such as \"64MB\" or a number of bytes");
            0
        }
    }
}

/// Parses, expands and validates a config file's text.
pub fn load_str(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigErrors> {
    let mut root: toml::Value = toml::from_str(text).map_err(|e| ConfigErrors(vec![format!("TOML syntax: {e}")]))?;
    let mut errs = Errors(Vec::new());
    super::env::expand_tree(&mut root, "", env, &mut errs.0);
    let file: FileConfig = errs.table("(top level)", Some(root));
    errs.unknown("", &file.unknown, FileConfig::KEYS);

    let server_file: ServerFile = errs.table("server", file.server);
    let server = server(&mut errs, server_file);
    let dedupe = dedupe(&mut errs, file.dedupe);
    let log_file: LogFile = errs.table("log", file.log);
    errs.unknown("log", &log_file.unknown, LogFile::KEYS);
    let deliveries = match log_file.deliveries {
        Some(n) if n > MAX_LOG_RECORDS => {
            errs.push("log.deliveries", format!("must be between 0 and {MAX_LOG_RECORDS}"));
            0
        }
        Some(n) => usize::try_from(n).unwrap_or(0),
        None => 10_000,
    };
    let log = LogConfig {
        format: errs.choice(
            "log.format",
            log_file.format.as_deref(),
            LogFormat::Text,
            &[("text", LogFormat::Text), ("json", LogFormat::Json)],
        ),
        deliveries,
        bodies: log_bodies(&mut errs, log_file.bodies.as_ref()),
    };
    let queue = file.queue.map(|v| queue(&mut errs, v, &dedupe));

    let mut sources = Vec::new();
    match file.sources {
        None => errs.push("sources", "no source configured; add a [sources.NAME] table"),
        Some(toml::Value::Table(table)) => {
            let mut paths: HashMap<String, String> = HashMap::new();
            for (name, value) in table {
                let path = format!("sources.{name}");
                let sf: SourceFile = errs.table(&path, Some(value));
                let redis_dedupe = matches!(dedupe.store, StoreConfig::Redis(_));
                if let Some(src) = source(&mut errs, &path, &name, sf, queue.is_some(), redis_dedupe) {
                    if let Some(other) = paths.insert(src.path.clone(), name.clone()) {
                        errs.push(
                            &format!("{path}.path"),
                            format!("{:?} is also the path of sources.{other}", src.path),
                        );
                    }
                    sources.push(src);
                }
            }
        }
        Some(_) => errs.push("sources", "must be a table of [sources.NAME] tables"),
    }

    let alerts = alerts(&mut errs, file.alerts);
    let otel = file.otel.and_then(|v| otel(&mut errs, v));
    if errs.0.is_empty() {
        Ok(Config { server, dedupe, log, sources, queue, alerts, otel })
    } else {
        Err(ConfigErrors(errs.0))
    }
}

fn server(errs: &mut Errors, f: ServerFile) -> ServerConfig {
    errs.unknown("server", &f.unknown, ServerFile::KEYS);
    let default_listen = SocketAddr::from(([0, 0, 0, 0], 8080));
    let listen = match f.listen.as_deref() {
        Some(t) => errs.socket("server.listen", t).unwrap_or(default_listen),
        None => default_listen,
    };
    let admin_listen =
        f.admin_listen.as_deref().filter(|t| !t.is_empty()).and_then(|t| errs.socket("server.admin_listen", t));
    let max_body_bytes = match f.max_body_bytes {
        Some(0) => {
            errs.push("server.max_body_bytes", "must be at least 1");
            1
        }
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
        None => 1024 * 1024,
    };
    let max_connections = match f.max_connections {
        Some(0) => {
            errs.push("server.max_connections", "must be at least 1");
            1
        }
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
        None => 10_000,
    };
    let (tls, acme) = match f.tls {
        Some(t) => server_tls(errs, t),
        None => (None, None),
    };
    ServerConfig {
        listen,
        admin_listen,
        max_body_bytes,
        request_timeout: errs.duration("server.request_timeout", f.request_timeout.as_deref(), Duration::from_secs(30)),
        shutdown_grace: errs.duration("server.shutdown_grace", f.shutdown_grace.as_deref(), Duration::from_secs(30)),
        trusted_proxies: errs.cidrs("server.trusted_proxies", f.trusted_proxies.as_deref().unwrap_or_default()),
        max_connections,
        admin_token: f.admin_token.as_deref().filter(|t| !t.is_empty()).map(Secret::new),
        tls,
        acme,
    }
}

fn server_tls(errs: &mut Errors, f: TlsFile) -> (Option<ServerTls>, Option<crate::tls::AcmeSettings>) {
    errs.unknown("server.tls", &f.unknown, TlsFile::KEYS);
    let client_ca = f.client_ca.filter(|c| !c.is_empty()).map(std::path::PathBuf::from);
    if let Some(a) = f.acme {
        errs.unknown("server.tls.acme", &a.unknown, AcmeFile::KEYS);
        if f.cert.is_some() || f.key.is_some() {
            errs.push("server.tls", "set either cert and key, or [server.tls.acme], not both");
        }
        let domains = a.domains.unwrap_or_default();
        if domains.is_empty() || domains.iter().any(|d| d.is_empty() || d.contains(['/', ':', ' '])) {
            errs.push(
                "server.tls.acme.domains",
                "list the DNS names to get a certificate for, e.g. [\"hooks.example.com\"]",
            );
        }
        let directory = a.directory.unwrap_or_else(|| "https://acme-v02.api.letsencrypt.org/directory".into());
        if !directory.starts_with("https://") {
            errs.push("server.tls.acme.directory", "must be an https:// URL");
        }
        let contact = a.contact.map(super::file::OneOrMany::into_vec).unwrap_or_default();
        for (i, c) in contact.iter().enumerate() {
            if !c.starts_with("mailto:") {
                errs.push(&format!("server.tls.acme.contact[{i}]"), "use mailto:ADDRESS");
            }
        }
        let settings = crate::tls::AcmeSettings {
            domains,
            contact,
            directory,
            directory_ca: a.directory_ca.filter(|c| !c.is_empty()).map(Into::into),
            cache: a.cache.unwrap_or_else(|| "./hookgate-data/acme".into()).into(),
            client_ca,
        };
        return (None, Some(settings));
    }
    let (Some(cert), Some(key)) = (f.cert, f.key) else {
        errs.push("server.tls", "set cert and key (PEM files), or a [server.tls.acme] table");
        return (None, None);
    };
    let files = crate::tls::TlsFiles { cert: cert.into(), key: key.into(), client_ca };
    match crate::tls::server_config(&files) {
        Ok(config) => (Some(ServerTls { files, config }), None),
        Err(e) => {
            let path = match &e {
                crate::tls::TlsError::Key(..) => "server.tls.key",
                crate::tls::TlsError::Ca(..) => "server.tls.client_ca",
                crate::tls::TlsError::Pair(_) => "server.tls",
                _ => "server.tls.cert",
            };
            errs.push(path, e);
            (None, None)
        }
    }
}

fn queue(errs: &mut Errors, value: toml::Value, dedupe: &DedupeConfig) -> QueueConfig {
    let f: QueueFile = errs.table("queue", Some(value));
    errs.unknown("queue", &f.unknown, QueueFile::KEYS);
    let store = match f.store.as_deref().unwrap_or("disk") {
        "disk" => {
            if f.redis.is_some() {
                errs.push("queue.redis", "only used with store = \"redis\"");
            }
            let fsync = errs.choice("queue.sync", f.sync.as_deref(), true, &[("always", true), ("none", false)]);
            let path = f.path.unwrap_or_else(|| "./hookgate-data/queue".into());
            if path.is_empty() {
                errs.push("queue.path", "must not be empty");
            }
            QueueStoreConfig::Disk { path: path.into(), fsync }
        }
        "redis" => {
            if f.sync.is_some() || f.path.is_some() {
                errs.push("queue", "path and sync apply to store = \"disk\" only");
            }
            let fallback = match &dedupe.store {
                StoreConfig::Redis(r) => Some(r),
                StoreConfig::Memory { .. } => None,
            };
            let redis = redis_config(errs, "queue.redis", f.redis.unwrap_or_default(), fallback, "hookgate:q:");
            QueueStoreConfig::Redis(redis)
        }
        other => {
            errs.push("queue.store", format!("invalid value {other:?}; expected \"disk\" or \"redis\""));
            QueueStoreConfig::Disk { path: ".".into(), fsync: true }
        }
    };
    let visibility_timeout =
        errs.duration("queue.visibility_timeout", f.visibility_timeout.as_deref(), Duration::from_secs(60));
    let dead_retention =
        errs.duration("queue.dead_retention", f.dead_retention.as_deref(), Duration::from_secs(7 * 24 * 3600));
    for (path, d) in [("queue.visibility_timeout", visibility_timeout), ("queue.dead_retention", dead_retention)] {
        if d.is_zero() {
            errs.push(path, "must be more than 0");
        }
    }
    QueueConfig { store, visibility_timeout, dead_retention }
}

fn dedupe(errs: &mut Errors, value: Option<toml::Value>) -> DedupeConfig {
    let f: DedupeFile = errs.table("dedupe", value);
    errs.unknown("dedupe", &f.unknown, DedupeFile::KEYS);
    let redis = f.redis.unwrap_or_default();
    let store = match f.store.as_deref().unwrap_or("memory") {
        "memory" => {
            let max_entries = match f.max_entries {
                Some(n) if !(1..=MAX_MEMORY_ENTRIES).contains(&n) => {
                    errs.push(
                        "dedupe.max_entries",
                        format!(
                            "must be between 1 and {MAX_MEMORY_ENTRIES} (the table is sized for it at start, \
                             ~80 bytes per remembered ID); use the Redis store for more"
                        ),
                    );
                    1
                }
                Some(n) => usize::try_from(n).unwrap_or(1),
                None => 1_000_000,
            };
            StoreConfig::Memory { max_entries }
        }
        "redis" => StoreConfig::Redis(redis_config(errs, "dedupe.redis", redis, None, "hookgate:")),
        other => {
            errs.push("dedupe.store", format!("invalid value {other:?}; expected \"memory\" or \"redis\""));
            StoreConfig::Memory { max_entries: 1 }
        }
    };
    let ttl = errs.duration("dedupe.ttl", f.ttl.as_deref(), Duration::from_secs(24 * 3600));
    let claim_ttl = errs.duration("dedupe.claim_ttl", f.claim_ttl.as_deref(), Duration::from_secs(60));
    for (path, d) in [("dedupe.ttl", ttl), ("dedupe.claim_ttl", claim_ttl)] {
        if d.as_millis() == 0 {
            errs.push(path, "must be at least 1ms");
        }
    }
    DedupeConfig {
        store,
        ttl,
        claim_ttl,
        on_store_error: errs.choice(
            "dedupe.on_store_error",
            f.on_store_error.as_deref(),
            OnStoreError::Reject,
            &[("reject", OnStoreError::Reject), ("allow", OnStoreError::Allow)],
        ),
    }
}

/// `[X.redis]`; unset url/cluster/timeout come from `fallback` when given.
fn redis_config(
    errs: &mut Errors,
    path: &str,
    redis: RedisFile,
    fallback: Option<&RedisConfig>,
    default_prefix: &str,
) -> RedisConfig {
    errs.unknown(path, &redis.unknown, RedisFile::KEYS);
    let inherited = redis.url.is_none() && redis.cluster.is_none();
    let target = match (redis.url, redis.cluster) {
        (Some(_), Some(_)) => {
            errs.push(path, "set either url or cluster, not both");
            RedisTarget::Single(String::new())
        }
        (_, Some(nodes)) if nodes.is_empty() => {
            errs.push(&format!("{path}.cluster"), "list at least one node");
            RedisTarget::Cluster(nodes)
        }
        (_, Some(nodes)) => {
            for (i, n) in nodes.iter().enumerate() {
                check_redis_url(errs, &format!("{path}.cluster[{i}]"), n);
            }
            RedisTarget::Cluster(nodes)
        }
        (Some(url), None) => {
            check_redis_url(errs, &format!("{path}.url"), &url);
            RedisTarget::Single(url)
        }
        (None, None) => match fallback {
            Some(f) => f.target.clone(),
            None => RedisTarget::Single("redis://127.0.0.1:6379/0".into()),
        },
    };
    let default_timeout = fallback.map_or(Duration::from_secs(2), |f| f.timeout);
    // The server's CA goes with the server: inherited with it, else its own.
    let roots = match redis.ca.as_deref().filter(|c| !c.is_empty()) {
        Some(ca) => redis_roots(errs, &format!("{path}.ca"), &target, ca),
        None if inherited => fallback.and_then(|f| f.roots.clone()),
        None => None,
    };
    RedisConfig {
        target,
        key_prefix: redis.key_prefix.unwrap_or_else(|| default_prefix.into()),
        timeout: errs.duration(&format!("{path}.timeout"), redis.timeout.as_deref(), default_timeout),
        roots,
    }
}

/// `ca`: read and checked now, for `rediss://` servers only.
fn redis_roots(errs: &mut Errors, path: &str, target: &RedisTarget, ca: &str) -> Option<crate::redis_conn::Roots> {
    let urls = match target {
        RedisTarget::Single(url) => std::slice::from_ref(url),
        RedisTarget::Cluster(nodes) => nodes.as_slice(),
    };
    if !urls.iter().all(|u| u.starts_with("rediss://")) {
        errs.push(path, "ca applies to rediss:// (TLS) servers only");
        return None;
    }
    match crate::tls::ca_pem(std::path::Path::new(ca)) {
        Ok(pem) => Some(crate::redis_conn::Roots { path: ca.into(), pem: pem.into() }),
        Err(e) => {
            errs.push(path, e.to_string());
            None
        }
    }
}

fn check_redis_url(errs: &mut Errors, path: &str, url: &str) {
    if redis::parse_redis_url(url).is_none()
        || !(url.starts_with("redis://")
            || url.starts_with("rediss://")
            || url.starts_with("redis+unix://")
            || url.starts_with("unix://"))
    {
        // The URL may carry a password: never echo it.
        errs.push(path, "invalid Redis URL; use redis://[USER:PASSWORD@]HOST:PORT/DB");
    }
}

fn source(
    errs: &mut Errors,
    path: &str,
    name: &str,
    f: SourceFile,
    queue_table: bool,
    redis_dedupe: bool,
) -> Option<Source> {
    errs.unknown(path, &f.unknown, SourceFile::KEYS);
    let before = errs.0.len();

    let src_path = match f.path {
        Some(p) if p.starts_with('/') => p,
        Some(p) => {
            errs.push(&format!("{path}.path"), format!("{p:?} must start with '/'"));
            p
        }
        None => {
            errs.push(&format!("{path}.path"), "missing; set the request path, e.g. \"/webhooks/NAME\"");
            String::new()
        }
    };

    let provider = f.provider.as_deref().unwrap_or("");
    let mut spec = match presets::get(provider) {
        Some(p) => p.spec.clone(),
        None => {
            let names: Vec<&str> = presets::all().iter().map(|p| p.name.as_str()).collect();
            errs.push(
                &format!("{path}.provider"),
                format!(
                    "{}; expected one of {} (`hookgate presets` describes each)",
                    match (provider.is_empty(), super::errors::closest(provider, names.iter().copied())) {
                        (true, _) => "missing".to_owned(),
                        (false, Some(near)) => format!("unknown provider {provider:?}; did you mean {near:?}?"),
                        (false, None) => format!("unknown provider {provider:?}"),
                    },
                    names.join(", ")
                ),
            );
            Spec::default()
        }
    };
    if let Some(v) = f.verify {
        apply_overrides(errs, &format!("{path}.verify"), &mut spec, v);
    }
    if let Some(t) = f.tolerance.as_deref() {
        spec.tolerance = errs.duration(&format!("{path}.tolerance"), Some(t), spec.tolerance);
    }
    if spec.signature.is_empty() && spec.scheme != Scheme::ClientState {
        errs.push(&format!("{path}.verify.signature_header"), format!("required for provider {provider:?}"));
    }
    let public_url = match f.public_url {
        Some(url) => {
            if !public_url_ok(&url) {
                errs.push(
                    &format!("{path}.public_url"),
                    format!("{url:?} is not an absolute http(s) URL without a query, e.g. \"https://hooks.example.com{src_path}\""),
                );
            }
            url
        }
        None if spec.payload.uses_url() => {
            errs.push(
                &format!("{path}.public_url"),
                format!(
                    "required: this provider signs the URL it was told, e.g. \"https://hooks.example.com{src_path}\""
                ),
            );
            String::new()
        }
        None => String::new(),
    };
    let verify_token = f.verify_token.unwrap_or_default();
    if spec.scheme == Scheme::ClientState && verify_token.is_empty() {
        errs.push(
            &format!("{path}.verify_token"),
            "required: the clientState set on the subscription (every notification must carry it)",
        );
    }
    if spec.challenge == Challenge::MetaSubscribe && verify_token.is_empty() {
        errs.push(
            &format!("{path}.verify_token"),
            "required: the Verify Token you enter in the provider's dashboard (answers its GET handshake)",
        );
    }

    let secret_list = f.secrets.map(super::file::OneOrMany::into_vec).unwrap_or_default();
    let keys = secrets(errs, &format!("{path}.secrets"), &spec, secret_list.clone());
    let allow_ips = errs.cidrs(&format!("{path}.allow_ips"), f.allow_ips.as_deref().unwrap_or_default());

    let rate_limit = f.rate_limit.and_then(|rl| {
        let p = format!("{path}.rate_limit");
        errs.unknown(&p, &rl.unknown, RateLimitFile::KEYS);
        let nz = |errs: &mut Errors, key: &str, v: Option<u64>| -> Option<NonZeroU32> {
            let v = v?;
            let out = u32::try_from(v).ok().and_then(NonZeroU32::new);
            if out.is_none() {
                errs.push(&format!("{p}.{key}"), format!("must be between 1 and {}", u32::MAX));
            }
            out
        };
        let per_second = nz(errs, "per_second", rl.per_second);
        let burst = nz(errs, "burst", rl.burst);
        if rl.per_second.is_none() {
            errs.push(&format!("{p}.per_second"), "missing");
        }
        let cluster =
            errs.choice(&format!("{p}.scope"), rl.scope.as_deref(), false, &[("local", false), ("cluster", true)]);
        if cluster && !redis_dedupe {
            errs.push(
                &format!("{p}.scope"),
                "\"cluster\" keeps the limit in the dedupe Redis: set [dedupe] store = \"redis\"",
            );
        }
        let per_second = per_second?;
        Some(RateLimit { per_second, burst: burst.unwrap_or(per_second), cluster })
    });

    let unrouted = errs.choice(
        &format!("{path}.unrouted"),
        f.unrouted.as_deref(),
        Unrouted::Ack,
        &[("ack", Unrouted::Ack), ("reject", Unrouted::Reject)],
    );

    let resign = f.sign_upstream.as_deref().and_then(|s| resigner(errs, &format!("{path}.sign_upstream"), s));
    let fan_out =
        errs.choice(&format!("{path}.match"), f.match_routes.as_deref(), false, &[("first", false), ("all", true)]);
    let signature_headers: Vec<http::HeaderName> = spec
        .signature
        .iter()
        .filter_map(|l| match l {
            crate::verify::Locator::Header(h) => Some(h.clone()),
            _ => None,
        })
        .collect();
    let routes = routes::routes(
        errs,
        path,
        f.routes.unwrap_or_default(),
        resign.as_ref(),
        queue_table,
        fan_out,
        &signature_headers,
    );

    let mut verifier = Verifier::new(spec, keys, public_url, verify_token);
    verifier.key_ids = secret_list.iter().filter(|s| !s.is_empty()).map(|s| crate::verify::key_id(s)).collect();
    let dedupe_body = f.dedupe_body.unwrap_or_else(|| verifier.plan.id_unsigned());
    (errs.0.len() == before).then(|| Source {
        name: name.to_owned(),
        path: src_path,
        verifier,
        allow_ips,
        rate_limit,
        unrouted,
        dedupe_body,
        fan_out,
        routes,
    })
}

/// `public_url`: what the provider was told, so an absolute http(s) URL; the
/// request's own query is appended when signing, so it carries none itself.
fn public_url_ok(url: &str) -> bool {
    url.parse::<http::Uri>().is_ok_and(|u| {
        matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some() && u.query().is_none()
    })
}

fn secrets(errs: &mut Errors, path: &str, spec: &Spec, list: Vec<String>) -> Vec<Key> {
    let mut keys = Vec::new();
    for (i, s) in list.iter().enumerate().filter(|(_, s)| !s.is_empty()) {
        let key = match spec.scheme {
            Scheme::Token => Ok(Key::Token(s.as_bytes().to_vec().into_boxed_slice())),
            Scheme::Hmac => keys::secret_bytes(s, spec.secret_format).map(|bytes| Key::hmac(spec.algorithm, &bytes)),
            Scheme::Ed25519 => Key::ed25519(s),
            Scheme::EcdsaP256 => Key::ecdsa_p256(s),
            // Nothing to key: the body's clientState is checked against verify_token.
            Scheme::ClientState => continue,
        };
        match key {
            Ok(k) => keys.push(k),
            // The message never includes the secret itself.
            Err(e) => errs.push(&format!("{path}[{i}]"), e),
        }
    }
    if list.iter().all(String::is_empty) && spec.scheme != Scheme::ClientState {
        errs.push(path, "no non-empty secret; set at least one (empty strings are ignored)");
    }
    keys
}

/// `sign_upstream`: a Standard Webhooks secret; empty means "not set" (so
/// `"${APP_SECRET:-}"` can leave it off).
fn resigner(errs: &mut Errors, path: &str, secret: &str) -> Option<std::sync::Arc<Resigner>> {
    if secret.is_empty() {
        return None;
    }
    match Resigner::new(secret) {
        Ok(r) => Some(std::sync::Arc::new(r)),
        Err(e) => {
            // The message never includes the secret itself.
            errs.push(path, format!("{e}; use a Standard Webhooks secret \"whsec_<base64>\""));
            None
        }
    }
}

#[cfg(test)]
mod tests;

mod routes;
