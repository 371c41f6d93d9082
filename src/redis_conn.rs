//! Connections to Redis shared by the dedupe store and the Redis queue store:
//! standalone (one lazy, multiplexed `ConnectionManager` per worker thread,
//! reconnecting by itself) or Cluster (created on first use, re-resolving
//! slots after failures). Every call is bounded by the configured timeout.
//! Scripts run with `EVALSHA`, falling back to `EVAL` once per node when the
//! node has not cached them.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisError, Value};
use tokio::sync::OnceCell;

/// A Redis server or cluster and how to talk to it (`[dedupe.redis]`,
/// `[queue.redis]`, an event-bus `redis://` upstream).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    pub target: RedisTarget,
    pub key_prefix: String,
    /// Per-command budget; past it the store counts as unreachable.
    pub timeout: Duration,
    /// `rediss://`: the CA the server is verified against instead of the
    /// system's roots (`ca`).
    pub roots: Option<Roots>,
}

/// A CA file's PEM text, checked to hold a root certificate
/// ([`crate::tls::ca_pem`]).
#[derive(Clone, PartialEq, Eq)]
pub struct Roots {
    /// The file it came from: clients are shared per URL and CA file.
    pub path: Box<str>,
    pub pem: Arc<[u8]>,
}

impl std::fmt::Debug for Roots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Roots").field("path", &self.path).finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    Single(String),
    Cluster(Vec<String>),
}

/// A Lua script and its SHA1, computed once.
pub struct Script {
    body: &'static str,
    sha: String,
}

impl Script {
    pub fn new(body: &'static str) -> Self {
        Script { body, sha: redis::Script::new(body).get_hash().to_owned() }
    }

    /// For `EVALSHA` in a pipeline (a `NOSCRIPT` reply is then the caller's
    /// to handle, e.g. with [`RedisConn::eval`]).
    pub fn sha(&self) -> &str {
        &self.sha
    }
}

/// What [`RedisConn`] sends: one command or a pipeline.
#[derive(Clone, Copy)]
enum Request<'a> {
    Cmd(&'a Cmd),
    Pipe(&'a Pipeline),
}

impl Request<'_> {
    async fn on(self, conn: &mut impl redis::aio::ConnectionLike) -> Result<Value, RedisError> {
        match self {
            Request::Cmd(c) => c.query_async::<Value>(conn).await,
            Request::Pipe(p) => p.query_async::<Value>(conn).await,
        }
    }
}

/// The cluster client and its connection, made on first use.
struct ClusterConn {
    client: redis::cluster::ClusterClient,
    conn: OnceCell<ClusterConnection>,
}

enum Conn {
    /// One multiplexed connection per worker thread (see [`thread_slot`]).
    Single(Vec<ConnectionManager>),
    Cluster(Box<ClusterConn>),
}

/// A call did not finish within the timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

pub struct RedisConn {
    conn: Conn,
    timeout: Duration,
}

/// A small per-thread number, so each worker thread keeps using "its" Redis
/// connection, whose driver task then runs on that thread's runtime.
fn thread_slot() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local!(static SLOT: usize = NEXT.fetch_add(1, Ordering::Relaxed));
    SLOT.with(|s| *s)
}

impl RedisConn {
    /// Sets up the client without connecting. A `rediss://` server is
    /// verified against `cfg.roots` when set, else the system's roots.
    pub fn new(cfg: &RedisConfig) -> Result<Self, RedisError> {
        let t = cfg.timeout;
        let certs = |r: &Roots| redis::TlsCertificates { client_tls: None, root_cert: Some(r.pem.to_vec()) };
        let conn = match &cfg.target {
            RedisTarget::Single(url) => {
                let client = match &cfg.roots {
                    Some(r) => redis::Client::build_with_tls(url.as_str(), certs(r))?,
                    None => redis::Client::open(url.as_str())?,
                };
                let mc = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(t))
                    .set_response_timeout(Some(t))
                    .set_number_of_retries(1)
                    .set_min_delay(Duration::from_millis(50))
                    .set_max_delay(Duration::from_millis(500));
                let per_thread = std::thread::available_parallelism().map_or(1, usize::from).min(16);
                let managers = (0..per_thread)
                    .map(|_| ConnectionManager::new_lazy_with_config(client.clone(), mc.clone()))
                    .collect::<Result<Vec<_>, _>>()?;
                Conn::Single(managers)
            }
            RedisTarget::Cluster(nodes) => {
                let mut builder = redis::cluster::ClusterClient::builder(nodes.iter().map(String::as_str))
                    .connection_timeout(t)
                    .response_timeout(t)
                    .retries(2);
                if let Some(r) = &cfg.roots {
                    builder = builder.certs(certs(r));
                }
                let client = builder.build()?;
                Conn::Cluster(Box::new(ClusterConn { client, conn: OnceCell::new() }))
            }
        };
        Ok(RedisConn { conn, timeout: t })
    }

    /// One command, bounded by the timeout. `Ok(Err(_))` is an error reply or a
    /// connection failure, kept whole so callers can look at its kind.
    pub async fn query(&self, cmd: &Cmd) -> Result<Result<Value, RedisError>, Elapsed> {
        self.send(Request::Cmd(cmd), self.timeout).await
    }

    /// As [`RedisConn::query`], bounded by `timeout` instead of the client's
    /// (a client shared by callers with deadlines of their own).
    pub async fn query_within(&self, cmd: &Cmd, timeout: Duration) -> Result<Result<Value, RedisError>, Elapsed> {
        self.send(Request::Cmd(cmd), timeout).await
    }

    /// Commands sent together, answered together, bounded by the timeout.
    /// All keys must hash to one slot (hash tags) for Cluster.
    pub async fn pipe(&self, pipe: &Pipeline) -> Result<Result<Value, RedisError>, Elapsed> {
        self.send(Request::Pipe(pipe), self.timeout).await
    }

    async fn send(&self, req: Request<'_>, timeout: Duration) -> Result<Result<Value, RedisError>, Elapsed> {
        let once = || async {
            match &self.conn {
                Conn::Single(m) => req.on(&mut m[thread_slot() % m.len()].clone()).await,
                Conn::Cluster(cc) => {
                    let c = cc.conn.get_or_try_init(|| cc.client.get_async_connection()).await?;
                    req.on(&mut c.clone()).await
                }
            }
        };
        // A connection that died under us (Redis restarted) fails the first
        // command sent on it; the manager reconnects for the next, so that one
        // is sent again, within the same timeout. Every command hookgate sends
        // is safe to repeat (claims see their own token, enqueues are
        // idempotent per delivery).
        let run = async {
            match once().await {
                Err(e) if e.is_connection_dropped() || e.is_io_error() => once().await,
                other => other,
            }
        };
        tokio::time::timeout(timeout, run).await.map_err(|_| Elapsed)
    }

    /// `EVALSHA`, or `EVAL` when this node has not cached the script yet. All
    /// `keys` must hash to one slot (hash tags) for Cluster.
    pub async fn eval(
        &self,
        script: &Script,
        keys: &[&str],
        args: &[&[u8]],
    ) -> Result<Result<Value, RedisError>, Elapsed> {
        let build = |verb: &str, what: &str| {
            let mut c = redis::cmd(verb);
            c.arg(what).arg(keys.len());
            for k in keys {
                c.arg(*k);
            }
            for a in args {
                c.arg(*a);
            }
            c
        };
        match self.query(&build("EVALSHA", &script.sha)).await? {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                self.query(&build("EVAL", script.body)).await
            }
            other => Ok(other),
        }
    }
}
