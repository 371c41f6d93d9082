//! Which queue stores this deployment used (SPEC §12): a small file beside the
//! config file lists them, so a start whose `[queue]` names another store (a
//! new `path`, or Redis after the disk store) while a previous one still
//! holds deliveries says so at ERROR, with the command that moves them.
//!
//! The file is `.<config file name>.queue-stores` in the config's directory,
//! one store a line: `disk:<absolute path>` or `redis:<url without
//! credentials> <key prefix>`. No secret is written there. Where the config's
//! directory is read-only (a mounted ConfigMap), the check is skipped with an
//! INFO line.

use std::path::{Path, PathBuf};

use super::transfer::{Moved, Store};
use super::{Legacy, QueueError};
use crate::config::{QueueConfig, QueueStoreConfig, RedisTarget};

/// The marker file for the config at `config_path`.
pub fn path_for(config_path: &Path) -> PathBuf {
    let name = config_path.file_name().map_or_else(|| "hookgate.toml".into(), |n| n.to_string_lossy().into_owned());
    config_path.parent().unwrap_or(Path::new(".")).join(format!(".{name}.queue-stores"))
}

/// A store as one line of the marker (and as `--from` takes it).
pub fn describe(cfg: &QueueConfig) -> String {
    match &cfg.store {
        QueueStoreConfig::Disk { path, .. } => {
            let abs = std::path::absolute(path).unwrap_or_else(|_| path.clone());
            format!("disk:{}", abs.display())
        }
        QueueStoreConfig::Redis(r) => {
            let url = match &r.target {
                RedisTarget::Single(u) => without_credentials(u),
                RedisTarget::Cluster(nodes) => {
                    nodes.iter().map(|u| without_credentials(u)).collect::<Vec<_>>().join(",")
                }
            };
            format!("redis:{url} {}", r.key_prefix)
        }
    }
}

/// `redis://user:pass@host:port/db` without `user:pass@`.
fn without_credentials(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}{}", &url[..s + 3], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

/// Reads a store line (or a `--from` argument: `disk:PATH`, `redis:URL
/// [PREFIX]`, or a bare `redis://...` URL) into a queue config.
pub fn parse(text: &str, prefix: Option<&str>) -> Result<QueueConfig, String> {
    // `[queue]`'s defaults: only the store matters for a move or a count.
    let mut cfg = QueueConfig {
        store: QueueStoreConfig::Disk { path: PathBuf::new(), fsync: true },
        visibility_timeout: std::time::Duration::from_secs(60),
        dead_retention: std::time::Duration::from_secs(7 * 24 * 3600),
    };
    let text = text.trim();
    if let Some(path) = text.strip_prefix("disk:") {
        cfg.store = QueueStoreConfig::Disk { path: PathBuf::from(path), fsync: true };
        return Ok(cfg);
    }
    let rest = text.strip_prefix("redis:").filter(|r| !r.starts_with("//")).unwrap_or(text);
    let (urls, line_prefix) = rest.split_once(' ').map_or((rest, None), |(u, p)| (u, Some(p.trim())));
    if !urls.starts_with("redis://") && !urls.starts_with("rediss://") {
        return Err(format!("{text:?}: expected disk:PATH or redis:URL (redis://host:port/db)"));
    }
    let nodes: Vec<String> = urls.split(',').map(str::to_owned).collect();
    let target = if nodes.len() > 1 { RedisTarget::Cluster(nodes) } else { RedisTarget::Single(urls.to_owned()) };
    let key_prefix = prefix.or(line_prefix).unwrap_or("hookgate:q:").to_owned();
    cfg.store = QueueStoreConfig::Redis(crate::config::RedisConfig {
        target,
        key_prefix,
        timeout: std::time::Duration::from_secs(2),
        roots: None,
    });
    Ok(cfg)
}

/// Counts what a store holds (opening a disk store that exists only).
async fn holds(cfg: &QueueConfig) -> Result<Option<Moved>, QueueError> {
    if let QueueStoreConfig::Disk { path, .. } = &cfg.store
        && !path.exists()
    {
        return Ok(None);
    }
    let mut store = Store::open(cfg, &Legacy::default())?;
    Ok(Some(store.count().await?))
}

/// At start: names every previously used store that still holds deliveries
/// (ERROR), then records the configured one. Never fails the start.
pub async fn check(config_path: &Path, current: &QueueConfig) {
    let marker = path_for(config_path);
    let now = describe(current);
    let previous: Vec<String> = std::fs::read_to_string(&marker)
        .map(|t| t.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect())
        .unwrap_or_default();
    let mut keep = vec![now.clone()];
    for line in previous.iter().filter(|l| **l != now) {
        let Ok(cfg) = parse(line, None) else { continue };
        match holds(&cfg).await {
            Ok(Some(m)) if m.total() > 0 => {
                tracing::error!(
                    previous_store = %line,
                    configured_store = %now,
                    deliveries = m.total(),
                    waiting = m.waiting,
                    retrying = m.retrying,
                    dead = m.dead,
                    command = %format!("hookgate -c {} queue move --from '{line}'", config_path.display()),
                    "a queue store this deployment used before still holds deliveries that this start will not deliver; move them into the configured store"
                );
                keep.push(line.clone());
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(previous_store = %line, error = %e, "cannot look into a queue store this deployment used before");
                keep.push(line.clone());
            }
        }
    }
    let text = keep.join("\n") + "\n";
    if previous.join("\n") + "\n" != text
        && let Err(e) = std::fs::write(&marker, text)
    {
        tracing::info!(file = %marker.display(), error = %e, "cannot record the queue store in use; a later start will not notice deliveries left in it if [queue] changes");
    }
}
