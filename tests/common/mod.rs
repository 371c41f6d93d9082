//! Test helpers: the gateway in-process on 127.0.0.1:0, real upstream HTTP
//! servers that report what they received, a real `redis-server` per test on a
//! free loopback port, and signing helpers.
#![allow(dead_code)]

pub mod redis;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use hookgate::App;
use hookgate::config::{Config, load_str};
use hookgate::verify::sign::SignRequest;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

pub const SECRET: &str = "test-secret";

// === Gateway ===

pub struct Gateway {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub app: Arc<App>,
    pub config: Config,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

pub fn config(text: &str) -> Config {
    load_str(text, &|_| None).unwrap_or_else(|e| panic!("test config invalid:\n{e}\n---\n{text}"))
}

/// Starts the gateway (webhook and admin listeners) on loopback ports.
pub async fn spawn_gateway(text: &str) -> Gateway {
    let cfg = config(text);
    let app = App::new(cfg.clone()).expect("store");
    spawn_app(app, cfg).await
}

pub async fn spawn_app(app: Arc<App>, cfg: Config) -> Gateway {
    spawn_app_on(app, cfg, 0).await
}

/// As [`spawn_gateway`], with the queue's attempts (and, on Redis, its
/// route workers) on `runtimes` single-threaded runtimes of their own threads,
/// as `hookgate run` has one per worker thread.
pub async fn spawn_gateway_on_runtimes(text: &str, runtimes: usize) -> Gateway {
    let cfg = config(text);
    let app = App::new(cfg.clone()).expect("store");
    spawn_app_on(app, cfg, runtimes).await
}

async fn spawn_app_on(app: Arc<App>, cfg: Config, runtimes: usize) -> Gateway {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let admin_addr = admin.local_addr().unwrap();
    let (stop, rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let mut tasks = vec![
        tokio::spawn(hookgate::server::serve(app.clone(), listener, stopped(rx.clone()))),
        tokio::spawn(hookgate::server::serve_admin(app.clone(), admin, stopped(rx.clone()))),
    ];
    if let Some(q) = app.queue.clone() {
        // The runtimes run until the queue's loops are done (as in main).
        let (done_tx, done) = watch::channel(false);
        let handles = (0..runtimes)
            .map(|_| {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                let handle = rt.handle().clone();
                let done = done.clone();
                std::thread::spawn(move || rt.block_on(stopped(done)));
                handle
            })
            .collect();
        let run = hookgate::queue::worker::run(app.clone(), q, rx, handles);
        tasks.push(tokio::spawn(async move {
            run.await;
            let _ = done_tx.send(true);
        }));
    }
    // `/queue` answers 503 until a disk store has opened: tests start once it has
    // (or after a moment, for the tests of a store that cannot open).
    if let Some(hookgate::queue::Store::Disk(d)) = app.queue.as_ref().map(|q| &q.store) {
        eventually(Duration::from_secs(2), async || d.opened()).await;
    }
    Gateway { addr, admin: admin_addr, app, config: cfg, stop, tasks }
}

impl Gateway {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Signs `body` as the named source's sender would.
    pub fn sign(&self, source: &str, body: &str, id: Option<&str>, event_type: Option<&str>) -> Vec<(String, String)> {
        sign_with(&self.config, source, body, id, event_type, SystemTime::now())
    }

    /// POSTs a signed delivery to the source's path.
    pub async fn deliver(&self, source: &str, body: &str, id: Option<&str>, event_type: Option<&str>) -> Reply {
        let path = self.config.sources.iter().find(|s| s.name == source).unwrap().path.clone();
        let headers = self.sign(source, body, id, event_type);
        send(&self.url(&path), "POST", &headers, body.to_owned()).await
    }

    /// GET on the admin listener, as JSON.
    pub async fn admin_json(&self, path: &str) -> serde_json::Value {
        let r = send(&format!("http://{}{}", self.admin, path), "GET", &[], "").await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        r.json()
    }

    pub async fn metrics(&self) -> String {
        send(&format!("http://{}/metrics", self.admin), "GET", &[], "").await.text()
    }

    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }
}

pub fn sign_with(
    cfg: &Config,
    source: &str,
    body: &str,
    id: Option<&str>,
    event_type: Option<&str>,
    now: SystemTime,
) -> Vec<(String, String)> {
    let src = cfg.sources.iter().find(|s| s.name == source).unwrap();
    src.verifier
        .sign(SignRequest { body: body.as_bytes(), id, event_type, timestamp: None, now, private_key: None })
        .unwrap()
        .headers
}

/// A tampa body with a fresh timestamp.
pub fn tampa_body(id: &str, event_type: &str) -> String {
    tampa_body_at(id, event_type, SystemTime::now())
}

pub fn tampa_body_at(id: &str, event_type: &str, at: SystemTime) -> String {
    format!(
        r#"{{"id":"{id}","type":"{event_type}","timestamp":"{}","data":{{"n":1}}}}"#,
        humantime::format_rfc3339_seconds(at)
    )
}

/// The `[sources.tampa]` table (path, preset, the test secret) followed by
/// `rest` (more source keys, then its route tables).
pub fn tampa_source(rest: &str) -> String {
    format!("[sources.tampa]\npath = \"/webhooks/tampa\"\nprovider = \"tampa\"\nsecrets = [\"{SECRET}\"]\n{rest}")
}

/// A one-source tampa config routed to `upstream`, plus `extra` TOML.
pub fn tampa_config(upstream: SocketAddr, extra_source: &str, extra_top: &str) -> String {
    format!(
        r#"{extra_top}
[sources.tampa]
path = "/webhooks/tampa"
provider = "tampa"
secrets = ["{SECRET}"]
{extra_source}

[[sources.tampa.routes]]
events = ["dev.tampa.event.*"]
upstream = "http://{upstream}/hooks/events"
timeout = "2s"

[[sources.tampa.routes]]
events = ["*"]
upstream = "http://{upstream}/hooks"
timeout = "2s"
"#
    )
}

/// `top` (tables before the source), then one tampa source whose only route
/// goes to `upstream` (a URL) with `route` (more route keys).
pub fn one_route_config(top: &str, upstream: &str, route: &str) -> String {
    format!(
        r#"{top}

[sources.tampa]
path = "/webhooks/tampa"
provider = "tampa"
secrets = ["{SECRET}"]

[[sources.tampa.routes]]
events = ["*"]
upstream = "{upstream}"
{route}
"#
    )
}

// === HTTP client ===

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| panic!("not JSON: {}", self.text()))
    }
    /// The gateway's own error answers: JSON with `error` and `message`.
    pub fn error_code(&self) -> String {
        assert_eq!(self.headers["content-type"], "application/json", "{}", self.text());
        let v = self.json();
        assert!(v["message"].is_string(), "{v}");
        v["error"].as_str().unwrap().to_owned()
    }
}

pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

pub async fn send(url: &str, method: &str, headers: &[(String, String)], body: impl Into<Bytes>) -> Reply {
    send_with(&client(), url, method, headers, body).await
}

/// An orphan's move or delete (`POST .../move`, `DELETE`), sent again while
/// the disk store answers 409 `attempts_in_flight` (attempts started before
/// the route went away end within its timeout), for at most 10 s.
#[allow(dead_code)] // not every test binary uses it
pub async fn send_orphan_op(url: &str, method: &str) -> Reply {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = send(url, method, &[], "").await;
        if r.status != 409 || r.error_code() != "attempts_in_flight" || tokio::time::Instant::now() > deadline {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn send_with(
    client: &Client<HttpConnector, Full<Bytes>>,
    url: &str,
    method: &str,
    headers: &[(String, String)],
    body: impl Into<Bytes>,
) -> Reply {
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let res = client.request(req.body(Full::new(body.into())).unwrap()).await.expect("request");
    let (parts, body) = res.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Reply { status: parts.status, headers: parts.headers, body }
}

pub fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

// === Upstream ===

/// What an upstream received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// How a test upstream answers.
#[derive(Clone)]
pub enum Behavior {
    /// Status and body, after an optional delay.
    Answer(u16, &'static str, Duration),
    /// Close the connection without answering.
    Hangup,
    /// Answer 200 with `Connection: close`, then close.
    AnswerAndClose,
    /// Status, body and extra response headers, at once.
    AnswerWith(u16, &'static str, &'static [(&'static str, &'static str)]),
}

pub struct Upstream {
    pub addr: SocketAddr,
    pub rx: mpsc::UnboundedReceiver<Received>,
    pub hits: Arc<AtomicUsize>,
    /// TCP connections accepted.
    pub connections: Arc<AtomicUsize>,
    /// The most requests it was answering at once.
    pub max_concurrent: Arc<AtomicUsize>,
    behavior: Arc<std::sync::Mutex<Behavior>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A stream a test upstream serves on: TCP, TLS over TCP, or a Unix socket.
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> Io for T {}

/// Where a test upstream listens.
pub enum Listen {
    Tcp,
    /// TCP with TLS from this server config.
    Tls(Arc<rustls::ServerConfig>),
    /// A Unix socket at this path.
    Unix(std::path::PathBuf),
}

pub async fn spawn_upstream(behavior: Behavior) -> Upstream {
    spawn_upstream_on(Listen::Tcp, behavior).await
}

/// Accepts one connection as a boxed stream (TLS handshake done); `None` when the listener is gone.
async fn accept_io(
    tcp: &Option<TcpListener>,
    unix: &Option<tokio::net::UnixListener>,
    tls: &Option<tokio_rustls::TlsAcceptor>,
) -> Option<Option<Box<dyn Io>>> {
    if let Some(l) = unix {
        let (s, _) = l.accept().await.ok()?;
        return Some(Some(Box::new(s)));
    }
    let (s, _) = tcp.as_ref()?.accept().await.ok()?;
    match tls {
        None => Some(Some(Box::new(s))),
        // A failed handshake (say, the client refused our certificate) is a connection without a request.
        Some(acceptor) => Some(acceptor.accept(s).await.ok().map(|t| Box::new(t) as Box<dyn Io>)),
    }
}

pub async fn spawn_upstream_on(listen: Listen, behavior: Behavior) -> Upstream {
    let (tcp, unix, tls) = match listen {
        Listen::Tcp => (Some(TcpListener::bind("127.0.0.1:0").await.unwrap()), None, None),
        Listen::Tls(c) => {
            (Some(TcpListener::bind("127.0.0.1:0").await.unwrap()), None, Some(tokio_rustls::TlsAcceptor::from(c)))
        }
        Listen::Unix(path) => (None, Some(tokio::net::UnixListener::bind(path).unwrap()), None),
    };
    let addr = tcp.as_ref().map_or_else(|| "127.0.0.1:1".parse().unwrap(), |l| l.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    let hits = Arc::new(AtomicUsize::new(0));
    let connections = Arc::new(AtomicUsize::new(0));
    let max_concurrent = Arc::new(AtomicUsize::new(0));
    let now_concurrent = Arc::new(AtomicUsize::new(0));
    let behavior = Arc::new(std::sync::Mutex::new(behavior));
    let (h2, b2, c2) = (hits.clone(), behavior.clone(), connections.clone());
    let (m2, n2) = (max_concurrent.clone(), now_concurrent.clone());
    let task = tokio::spawn(async move {
        loop {
            let Some(stream) = accept_io(&tcp, &unix, &tls).await else {
                break;
            };
            c2.fetch_add(1, Ordering::SeqCst);
            let Some(stream) = stream else { continue };
            let (tx, hits, behavior) = (tx.clone(), h2.clone(), b2.clone());
            let (max_c, now_c) = (m2.clone(), n2.clone());
            tokio::spawn(async move {
                let current = behavior.lock().unwrap().clone();
                if let Behavior::Hangup = current {
                    // Read the request, then close without a response.
                    let mut buf = [0u8; 4096];
                    let _ = tokio::time::timeout(Duration::from_millis(200), async {
                        use tokio::io::AsyncReadExt;
                        let mut s = stream;
                        let _ = s.read(&mut buf).await;
                        hits.fetch_add(1, Ordering::SeqCst);
                    })
                    .await;
                    return;
                }
                let svc = service_fn(move |req: Request<Incoming>| {
                    let (tx, hits, behavior) = (tx.clone(), hits.clone(), behavior.clone());
                    let (max_c, now_c) = (max_c.clone(), now_c.clone());
                    async move {
                        let n = now_c.fetch_add(1, Ordering::SeqCst) + 1;
                        max_c.fetch_max(n, Ordering::SeqCst);
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
                        hits.fetch_add(1, Ordering::SeqCst);
                        let _ = tx.send(Received {
                            method: parts.method.to_string(),
                            uri: parts.uri.to_string(),
                            headers: parts.headers,
                            body,
                        });
                        let current = behavior.lock().unwrap().clone();
                        let (status, text, delay, extra) = match current {
                            Behavior::Answer(s, t, d) => (s, t, d, &[][..]),
                            Behavior::AnswerWith(s, t, h) => (s, t, Duration::ZERO, h),
                            Behavior::AnswerAndClose => (200, "closing", Duration::ZERO, &[][..]),
                            Behavior::Hangup => (500, "", Duration::ZERO, &[][..]),
                        };
                        tokio::time::sleep(delay).await;
                        now_c.fetch_sub(1, Ordering::SeqCst);
                        let mut res = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
                        *res.status_mut() = StatusCode::from_u16(status).unwrap();
                        res.headers_mut().insert("x-upstream", "yes".parse().unwrap());
                        for (k, v) in extra {
                            res.headers_mut().insert(*k, v.parse().unwrap());
                        }
                        if let Behavior::AnswerAndClose = current {
                            res.headers_mut().insert("connection", "close".parse().unwrap());
                        }
                        Ok::<_, std::convert::Infallible>(res)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    Upstream { addr, rx, hits, connections, max_concurrent, behavior, task }
}

impl Upstream {
    pub fn set(&self, b: Behavior) {
        *self.behavior.lock().unwrap() = b;
    }
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
    pub fn max_concurrent(&self) -> usize {
        self.max_concurrent.load(Ordering::SeqCst)
    }
    /// Everything received so far, without waiting.
    pub fn drain(&mut self) -> Vec<Received> {
        let mut out = Vec::new();
        while let Ok(r) = self.rx.try_recv() {
            out.push(r);
        }
        out
    }
    /// The next request received, waiting up to 5 s.
    pub async fn next(&mut self) -> Received {
        tokio::time::timeout(Duration::from_secs(5), self.rx.recv())
            .await
            .expect("upstream got nothing")
            .expect("closed")
    }
}

pub fn ok_upstream() -> Behavior {
    Behavior::Answer(200, "upstream-ok", Duration::ZERO)
}

/// A loopback address where nothing listens.
pub async fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    drop(l);
    a
}

/// Polls `f` until it returns true, up to `timeout`.
pub async fn eventually(timeout: Duration, mut f: impl AsyncFnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if f().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Verifies a re-signed request with the Standard Webhooks library itself
/// (PyPI `standardwebhooks`; `.ci/run` installs it).
pub fn verify_with_library(secret: &str, body: &[u8], headers: &http::HeaderMap) -> Result<(), String> {
    let h: serde_json::Map<String, serde_json::Value> = ["webhook-id", "webhook-timestamp", "webhook-signature"]
        .iter()
        .filter_map(|k| Some(((*k).to_owned(), headers.get(*k)?.to_str().ok()?.into())))
        .collect();
    let script = "import json,sys\nfrom standardwebhooks.webhooks import Webhook\n\
                  d=json.load(sys.stdin)\n\
                  Webhook(d['secret']).verify(d['body'].encode(), d['headers'], json_parse=False)\nprint('verified')";
    let input = serde_json::json!({"secret": secret, "body": String::from_utf8_lossy(body), "headers": h});
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 (with the standardwebhooks package; .ci/run installs it)");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), input.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.success() && String::from_utf8_lossy(&out.stdout).contains("verified") {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}
