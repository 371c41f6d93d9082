//! The floor for hookgate's sync path: a reverse proxy built from the same
//! parts (hyper 1.x server and client, one single-threaded tokio runtime per
//! core with its own `SO_REUSEPORT` listener, a per-thread pool of upstream
//! connections, mimalloc) that does nothing but read the body and forward it.
//! `bench/floor.sh` runs it next to nginx, haproxy and hookgate, so the part of
//! hookgate's cost that is hyper + tokio and the part that is hookgate's own
//! work are measured apart.
//!
//!   cargo run --release --example bare_proxy -- 127.0.0.1:8080 127.0.0.1:9000
//!
//! `BARE_AUTO=1` serves through hyper-util's auto (HTTP/1 + h2) builder with a
//! header read timeout, as hookgate does; unset, plain `http1::Builder`
//! (with `BARE_TIMER=1`: and the same header read timeout). `BARE_TLS=CERT:KEY`
//! terminates TLS first with hookgate's own listener config (`tls::server_config`:
//! rustls + ring, TLS 1.2/1.3, ALPN h2 + http/1.1) and then always serves
//! through the auto builder, as hookgate's TLS listener does; for `bench/tls.sh`'s floor.

use std::cell::RefCell;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Sender = SendRequest<Full<Bytes>>;

thread_local! {
    static IDLE: RefCell<Vec<Sender>> = const { RefCell::new(Vec::new()) };
}

async fn connect(upstream: SocketAddr) -> Result<Sender, String> {
    let stream = tokio::net::TcpStream::connect(upstream).await.map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let (s, conn) = hyper::client::conn::http1::Builder::new()
        .writev(false)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok(s)
}

/// On an idle connection if one takes it (a request never written is tried on
/// the next, as hookgate's pool does), else on a new one.
async fn send(upstream: SocketAddr, mut req: Request<Full<Bytes>>) -> Result<(Response<Incoming>, Sender), String> {
    while let Some(mut s) = IDLE.with(|i| i.borrow_mut().pop()) {
        if s.ready().await.is_err() {
            continue;
        }
        match s.try_send_request(req).await {
            Ok(res) => return Ok((res, s)),
            Err(mut e) => match e.take_message() {
                Some(unsent) => req = unsent,
                None => return Err(e.into_error().to_string()),
            },
        }
    }
    let mut s = connect(upstream).await?;
    s.ready().await.map_err(|e| e.to_string())?;
    let res = s.send_request(req).await.map_err(|e| e.to_string())?;
    Ok((res, s))
}

async fn proxy(
    req: Request<Incoming>,
    upstream: SocketAddr,
    host: HeaderValue,
) -> Result<Response<Full<Bytes>>, String> {
    let (mut head, body) = req.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    head.headers.insert(http::header::HOST, host);
    head.headers.remove(http::header::CONTENT_LENGTH);
    // Hop-by-hop: a sender's `Connection: close` is not the upstream's.
    head.headers.remove(http::header::CONNECTION);
    let mut out = Request::from_parts(head, Full::new(body));
    *out.uri_mut() = http::Uri::from_static("/hooks");
    let (res, s) = send(upstream, out).await?;
    let (parts, body) = res.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    IDLE.with(|i| i.borrow_mut().push(s));
    Ok(Response::from_parts(parts, Full::new(body)))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        eprintln!("usage: bare_proxy LISTEN_ADDR UPSTREAM_ADDR");
        std::process::exit(2);
    };
    let (Ok(listen), Ok(upstream)) = (listen.parse::<SocketAddr>(), upstream.parse::<SocketAddr>()) else {
        eprintln!("bare_proxy: LISTEN_ADDR and UPSTREAM_ADDR are IP:PORT");
        std::process::exit(2);
    };
    let auto = std::env::var_os("BARE_AUTO").is_some();
    let timer = std::env::var_os("BARE_TIMER").is_some();
    let tls = std::env::var("BARE_TLS").ok().map(|v| {
        let Some((cert, key)) = v.split_once(':') else {
            eprintln!("bare_proxy: BARE_TLS is CERT_PATH:KEY_PATH");
            std::process::exit(2);
        };
        let files = hookgate::tls::TlsFiles { cert: cert.into(), key: key.into(), client_ca: None };
        match hookgate::tls::server_config(&files) {
            Ok(c) => tokio_rustls::TlsAcceptor::from(c),
            Err(e) => {
                eprintln!("bare_proxy: {e}");
                std::process::exit(2);
            }
        }
    });
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let tls = tls.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
                rt.block_on(serve(listen, upstream, auto, timer, tls));
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
}

async fn serve(
    listen: SocketAddr,
    upstream: SocketAddr,
    auto: bool,
    timer: bool,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_reuseport(true).expect("reuseport");
    socket.bind(listen).expect("bind");
    let listener = socket.listen(4096).expect("listen");
    let host = HeaderValue::from_str(&upstream.to_string()).expect("host");
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(std::time::Duration::from_secs(30))
        .writev(false)
        .keep_alive(true);
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        let host = host.clone();
        let service = service_fn(move |req| {
            let host = host.clone();
            async move {
                Ok::<_, std::convert::Infallible>(match proxy(req, upstream, host).await {
                    Ok(res) => res,
                    Err(_) => Response::builder().status(502).body(Full::new(Bytes::new())).unwrap_or_default(),
                })
            }
        });
        if let Some(acceptor) = &tls {
            let (acceptor, builder) = (acceptor.clone(), builder.clone());
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(stream).await else { return };
                let _ = builder.serve_connection(TokioIo::new(stream), service).await;
            });
        } else if auto {
            let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
            tokio::spawn(async move {
                let _ = conn.await;
            });
        } else {
            let mut h1 = hyper::server::conn::http1::Builder::new();
            h1.writev(false).keep_alive(true);
            if timer {
                h1.timer(TokioTimer::new()).header_read_timeout(std::time::Duration::from_secs(30));
            }
            let conn = h1.serve_connection(TokioIo::new(stream), service);
            tokio::spawn(async move {
                let _ = conn.await;
            });
        }
    }
}
