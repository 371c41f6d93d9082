//! A per-thread HTTP/1.1 connection pool to upstreams, on hyper's low-level
//! client API, over TCP, TLS (rustls, SNI from the URL's host) or a Unix
//! socket ([`Connect`]).
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
use http::{HeaderValue, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use crate::route::{Connect, Target};

type Sender = SendRequest<Full<Bytes>>;

/// Idle connections kept per upstream and thread.
const MAX_IDLE_PER_UPSTREAM: usize = 256;
/// Idle connections older than this are not reused (nginx closes at 75 s).
const MAX_IDLE_TIME: Duration = Duration::from_secs(30);

/// Idle connections per upstream (by [`Target::key`]). A list, not a hash map:
/// a config names a handful of upstreams, and comparing a few short keys costs
/// less than hashing one.
type Idle = Vec<(Box<str>, Vec<(Sender, Instant)>)>;

thread_local! {
    static IDLE: RefCell<Idle> = const { RefCell::new(Vec::new()) };
}

fn idle_for<'a>(idle: &'a mut Idle, key: &str) -> Option<&'a mut Vec<(Sender, Instant)>> {
    idle.iter_mut().find(|(k, _)| &**k == key).map(|(_, list)| list)
}

/// A connection in use for one request.
pub struct Lease {
    target: std::sync::Arc<Target>,
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
            let i = match idle.iter().position(|(k, _)| *k == self.target.key) {
                Some(i) => i,
                None => {
                    idle.push((self.target.key.clone(), Vec::new()));
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

fn checkout(key: &str) -> Option<Sender> {
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

/// A TLS stream on which the peer closing the connection without TLS's
/// `close_notify` reads as the end of the stream, as for plain TCP: an app
/// that ends its answer by closing (HTTP/1.0 style, no Content-Length, no
/// chunking; Python's `http.server` over ssl does) has its whole answer
/// passed on instead of an error mid-body (SPEC §13). Answers with a length
/// or chunks are still cut short visibly: hyper sees the end come early.
struct CloseIsEof<T>(T);

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for CloseIsEof<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match std::pin::Pin::new(&mut self.0).poll_read(cx, buf) {
            std::task::Poll::Ready(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                std::task::Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for CloseIsEof<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

async fn handshake<IO>(io: IO, key: &str) -> Result<Sender, String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // One flat write per request rather than writev (see `server::serve_with`).
    let (sender, conn) = http1::Builder::new()
        .writev(false)
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("handshake {key}: {e}"))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}

async fn connect(target: &Target) -> Result<Sender, String> {
    let key = &target.key;
    match &target.connect {
        Connect::Tcp { host, port } => {
            let stream = tokio::net::TcpStream::connect((host.as_str(), *port))
                .await
                .map_err(|e| format!("connect {key}: {e}"))?;
            let _ = stream.set_nodelay(true);
            handshake(stream, key).await
        }
        Connect::Tls { host, port, name, config } => {
            let stream = tokio::net::TcpStream::connect((host.as_str(), *port))
                .await
                .map_err(|e| format!("connect {key}: {e}"))?;
            let _ = stream.set_nodelay(true);
            let tls = tokio_rustls::TlsConnector::from(config.clone())
                .connect(name.clone(), stream)
                .await
                .map_err(|e| format!("TLS handshake with {key}: {e}"))?;
            handshake(CloseIsEof(tls), key).await
        }
        Connect::Unix { path } => {
            let stream = tokio::net::UnixStream::connect(path).await.map_err(|e| format!("connect {key}: {e}"))?;
            handshake(stream, key).await
        }
    }
}

/// Sends `req` to `target` with `host` as its `Host` header (`req`'s URI must
/// be in origin form: path and query), on an idle connection if one is ready,
/// else on a new one.
pub async fn send(
    target: &std::sync::Arc<Target>,
    host: &HeaderValue,
    mut req: Request<Full<Bytes>>,
) -> Result<(Response<Incoming>, Lease), String> {
    req.headers_mut().insert(http::header::HOST, host.clone());
    while let Some(mut sender) = checkout(&target.key) {
        if sender.ready().await.is_err() {
            continue;
        }
        match sender.try_send_request(req).await {
            Ok(res) => return Ok((res, Lease { target: target.clone(), sender })),
            Err(mut e) => match e.take_message() {
                // Never written: safe to try on another connection.
                Some(unsent) => req = unsent,
                None => return Err(e.into_error().to_string()),
            },
        }
    }
    // Boxed: a new connection is the rare case, and its future (a TLS
    // handshake's state included) would otherwise make every request's
    // future kilobytes larger, and copied on each move.
    let mut sender = Box::pin(connect(target)).await?;
    sender.ready().await.map_err(|e| e.to_string())?;
    let res = sender.send_request(req).await.map_err(|e| e.to_string())?;
    Ok((res, Lease { target: target.clone(), sender }))
}
