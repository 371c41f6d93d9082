//! Redis Streams: `XADD KEY [MAXLEN ~ N] * id ID body BODY NAME VALUE ...`;
//! delivered when the server answers with the entry's ID. The headers go as
//! fields named by their lowercase names (`id` and `body` are ours).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::HeaderMap;

use crate::redis_conn::{RedisConfig, RedisConn, RedisTarget};

type Client = Result<RedisConn, String>;

static CONNS: super::Clients<Client> = OnceLock::new();

/// A route's handle on its shared client, looked up on first use.
#[derive(Default)]
pub(super) struct Cached(OnceLock<Arc<Client>>);

impl std::fmt::Debug for Cached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cached")
    }
}

/// Stream keys: no whitespace or control characters, no braces (hash tags).
pub(super) fn clean(v: &str) -> String {
    v.chars().map(|c| if c.is_whitespace() || c.is_control() || matches!(c, '{' | '}') { '_' } else { c }).collect()
}

/// Where one entry goes.
pub(super) struct Stream<'a> {
    pub url: &'a str,
    pub roots: Option<&'a super::Roots>,
    /// The shared client's name (the URL, and the CA file when set).
    pub client: &'a str,
    pub conn: &'a Cached,
    pub maxlen: Option<u64>,
    pub key: &'a str,
}

pub(super) async fn publish(
    to: Stream<'_>,
    id: &str,
    headers: &HeaderMap,
    body: &[u8],
    timeout: Duration,
) -> Result<(), String> {
    let Stream { url, roots, client, conn, maxlen, key } = to;
    let conn = conn.0.get_or_init(|| {
        super::shared(&CONNS, client, || {
            let cfg = RedisConfig {
                target: RedisTarget::Single(url.to_owned()),
                key_prefix: String::new(),
                timeout,
                roots: roots.cloned(),
            };
            RedisConn::new(&cfg).map_err(|e| format!("invalid Redis URL: {:?}", e.kind()))
        })
    });
    let conn = conn.as_ref().as_ref().map_err(Clone::clone)?;
    let mut cmd = redis::cmd("XADD");
    cmd.arg(key);
    if let Some(n) = maxlen {
        cmd.arg("MAXLEN").arg("~").arg(n);
    }
    cmd.arg("*").arg("id").arg(id).arg("body").arg(body);
    for (k, v) in headers.iter().filter(|(k, _)| !matches!(k.as_str(), "id" | "body")) {
        cmd.arg(k.as_str()).arg(v.as_bytes());
    }
    match conn.query_within(&cmd, timeout).await {
        Ok(Ok(redis::Value::BulkString(_) | redis::Value::SimpleString(_) | redis::Value::VerbatimString { .. })) => {
            Ok(())
        }
        Ok(Ok(other)) => Err(format!("Redis answered XADD with {other:?}")),
        Ok(Err(e)) => Err(format!("Redis XADD to {key:?} failed: {e}")),
        Err(_) => Err(format!("Redis did not answer XADD within {timeout:?}")),
    }
}
