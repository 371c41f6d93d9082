//! A per-thread HTTP/1.1 connection pool to upstreams, on hyper's low-level
//! client API.
//!
//! Each worker thread runs its own single-threaded runtime, so each keeps its
//! own idle connections: checkout and checkin are a `RefCell` borrow, with no
//! lock, no background task and no cross-thread wake-up. A connection is
//! reused only after its previous response was read in full ([`Lease::release`]);
//! one idle longer than [`MAX_IDLE_TIME`] is closed rather than reused, so the
//! upstream's own keep-alive timeout does not race a new request.

use std::cell::RefCell;
use std::time::Duration;

use bytes::Bytes;
use http::uri::Authority;
use http::{HeaderValue, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

type Sender = SendRequest<Full<Bytes>>;

/// Idle connections kept per upstream and thread.
const MAX_IDLE_PER_UPSTREAM: usize = 256;
/// Idle connections older than this are not reused (nginx closes at 75 s).
const MAX_IDLE_TIME: Duration = Duration::from_secs(30);

/// Idle connections per upstream. A list, not a hash map: a config names a
/// handful of upstreams, and comparing a few short authorities costs less than
/// hashing one (`Authority` hashes byte by byte, lowercasing).
type Idle = Vec<(Authority, Vec<(Sender, Instant)>)>;

thread_local! {
    static IDLE: RefCell<Idle> = const { RefCell::new(Vec::new()) };
}

fn idle_for<'a>(idle: &'a mut Idle, key: &Authority) -> Option<&'a mut Vec<(Sender, Instant)>> {
    idle.iter_mut().find(|(k, _)| k == key).map(|(_, list)| list)
}

/// A connection in use for one request.
pub struct Lease {
    key: Authority,
    sender: Sender,
}

impl Lease {
    /// Returns the connection to the pool; call once the response body was read.
    pub fn release(self) {
        if self.sender.is_closed() {
            return;
        }
        IDLE.with(|idle| {
            let mut idle = idle.borrow_mut();
            let i = match idle.iter().position(|(k, _)| *k == self.key) {
                Some(i) => i,
                None => {
                    idle.push((self.key, Vec::new()));
                    idle.len() - 1
                }
            };
            let list = &mut idle[i].1;
            if list.len() < MAX_IDLE_PER_UPSTREAM {
                list.push((self.sender, Instant::now()));
            }
        });
    }
}

fn checkout(key: &Authority) -> Option<Sender> {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let list = idle_for(&mut idle, key)?;
        while let Some((sender, since)) = list.pop() {
            if !sender.is_closed() && since.elapsed() < MAX_IDLE_TIME {
                return Some(sender);
            }
        }
        None
    })
}

async fn connect(key: &Authority) -> Result<Sender, String> {
    let host = key.host().trim_start_matches('[').trim_end_matches(']');
    let port = key.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host, port)).await.map_err(|e| format!("connect {key}: {e}"))?;
    let _ = stream.set_nodelay(true);
    // One flat write per request rather than writev (see `server::serve_with`).
    let (sender, conn) = http1::Builder::new()
        .writev(false)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake {key}: {e}"))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}

/// Sends `req` to `key` with `host` as its `Host` header (`req`'s URI must be
/// in origin form: path and query), on an idle connection if one is ready,
/// else on a new one.
pub async fn send(
    key: &Authority,
    host: &HeaderValue,
    mut req: Request<Full<Bytes>>,
) -> Result<(Response<Incoming>, Lease), String> {
    req.headers_mut().insert(http::header::HOST, host.clone());
    while let Some(mut sender) = checkout(key) {
        if sender.ready().await.is_err() {
            continue;
        }
        match sender.try_send_request(req).await {
            Ok(res) => return Ok((res, Lease { key: key.clone(), sender })),
            Err(mut e) => match e.take_message() {
                // Never written: safe to try on another connection.
                Some(unsent) => req = unsent,
                None => return Err(e.into_error().to_string()),
            },
        }
    }
    let mut sender = connect(key).await?;
    sender.ready().await.map_err(|e| e.to_string())?;
    let res = sender.send_request(req).await.map_err(|e| e.to_string())?;
    Ok((res, Lease { key: key.clone(), sender }))
}
