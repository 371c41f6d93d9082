//! SPEC §16 `order_by` end to end, on the disk store, on Redis and with two
//! replicas sharing Redis: deliveries with the same key are attempted one at
//! a time in the order received, a failing head holds back only its own key,
//! a dead letter releases its key, other keys flow in parallel.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use common::redis::{RedisCluster, RedisServer};
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// An app that logs each attempt's delivery ID when it starts, answers 500
/// to the IDs in `failing` and 200 to the others after `delay`.
struct App {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    failing: Arc<Mutex<HashSet<String>>>,
    /// The most attempts of one key it was answering at once.
    overlap: Arc<Mutex<(std::collections::HashMap<String, u32>, u32)>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for App {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl App {
    async fn start(delay: Duration) -> App {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let failing: Arc<Mutex<HashSet<String>>> = Arc::default();
        let overlap: Arc<Mutex<(std::collections::HashMap<String, u32>, u32)>> = Arc::default();
        let (l, f, o) = (log.clone(), failing.clone(), overlap.clone());
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (l, f, o) = (l.clone(), f.clone(), o.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let (l, f, o) = (l.clone(), f.clone(), o.clone());
                        async move {
                            let body = req.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
                            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                            let id = v["id"].as_str().unwrap_or_default().to_owned();
                            let key = v["data"]["key"].as_str().unwrap_or_default().to_owned();
                            l.lock().unwrap().push(id.clone());
                            {
                                let mut o = o.lock().unwrap();
                                let n = o.0.entry(key.clone()).or_default();
                                *n += 1;
                                let n = *n;
                                o.1 = o.1.max(n);
                            }
                            tokio::time::sleep(delay).await;
                            *o.lock().unwrap().0.get_mut(&key).unwrap() -= 1;
                            let status = if f.lock().unwrap().contains(&id) { 500 } else { 200 };
                            let mut res = http::Response::new(Full::new(Bytes::from_static(b"ok")));
                            *res.status_mut() = http::StatusCode::from_u16(status).unwrap();
                            Ok::<_, std::convert::Infallible>(res)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        App { addr, log, failing, overlap, task }
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    fn fail(&self, id: &str, yes: bool) {
        let mut f = self.failing.lock().unwrap();
        if yes {
            f.insert(id.to_owned());
        } else {
            f.remove(id);
        }
    }

    fn most_at_once_per_key(&self) -> u32 {
        self.overlap.lock().unwrap().1
    }
}

fn body(id: &str, key: &str) -> String {
    format!(
        r#"{{"id":"{id}","type":"order.updated","timestamp":"{}","data":{{"key":"{key}"}}}}"#,
        humantime::format_rfc3339_seconds(SystemTime::now())
    )
}

fn config(queue: &str, app: SocketAddr, attempts: u32) -> String {
    format!(
        r#"[server]
shutdown_grace = "1s"
{queue}
{}
[[sources.tampa.routes]]
name = "orders"
events = ["*"]
upstream = "http://{app}/orders"
delivery = "queue"
concurrency = 8
order_by = "json:/data/key"
retry = {{ backoff = "50ms", max_backoff = "100ms", attempts = {attempts} }}
"#,
        tampa_source("")
    )
}

/// The order in which `ids` were first attempted, as the app saw them.
fn firsts(log: &[String], ids: &[&str]) -> Vec<String> {
    let mut seen = Vec::new();
    for id in log {
        if ids.contains(&id.as_str()) && !seen.contains(id) {
            seen.push(id.clone());
        }
    }
    seen
}

/// A failing head holds back its key while another key flows; it then
/// goes, the rest of its key after it, in order.
async fn a_failing_head_blocks_only_its_key(queue: &str) {
    let app = App::start(Duration::from_millis(20)).await;
    app.fail("a1", true);
    let gw = spawn_gateway(&config(queue, app.addr, 100)).await;
    for id in ["a1", "a2", "a3"] {
        assert_eq!(gw.deliver("tampa", &body(id, "a"), None, None).await.status, 202);
    }
    for id in ["b1", "b2", "b3", "b4"] {
        assert_eq!(gw.deliver("tampa", &body(id, "b"), None, None).await.status, 202);
    }
    let b_done = async || firsts(&app.log(), &["b1", "b2", "b3", "b4"]).len() == 4;
    assert!(eventually(Duration::from_secs(10), b_done).await, "key b flows: {:?}", app.log());
    assert!(
        eventually(Duration::from_secs(10), async || app.log().iter().filter(|i| *i == "a1").count() >= 3).await,
        "a1 is retried: {:?}",
        app.log()
    );
    let log = app.log();
    assert_eq!(firsts(&log, &["b1", "b2", "b3", "b4"]), ["b1", "b2", "b3", "b4"], "{log:?}");
    assert!(!log.iter().any(|i| i == "a2" || i == "a3"), "a2/a3 wait for a1: {log:?}");
    // The two parked count as pending (polled: on Redis the counts are read
    // one by one while a1 moves between the stream and the retry set).
    let parked = async || gw.admin_json("/queue").await["routes"][0]["pending"] == 2;
    assert!(eventually(Duration::from_secs(5), parked).await, "{}", gw.admin_json("/queue").await);
    app.fail("a1", false);
    let all = async || firsts(&app.log(), &["a1", "a2", "a3"]).len() == 3;
    assert!(eventually(Duration::from_secs(10), all).await, "{:?}", app.log());
    let log = app.log();
    let last_a1 = log.iter().rposition(|i| i == "a1").unwrap();
    let first_a2 = log.iter().position(|i| i == "a2").unwrap();
    assert!(last_a1 < first_a2, "a2 only after a1 was delivered: {log:?}");
    assert_eq!(firsts(&log, &["a1", "a2", "a3"]), ["a1", "a2", "a3"]);
    assert_eq!(app.most_at_once_per_key(), 1, "one at a time per key");
    let settled = async || {
        let r = gw.admin_json("/queue").await["routes"][0].clone();
        r["pending"] == 0 && r["in_flight"] == 0 && r["scheduled"] == 0
    };
    assert!(eventually(Duration::from_secs(10), settled).await);
    gw.shutdown().await;
}

/// Many keys go in parallel; each key's deliveries arrive in order.
async fn many_keys_in_parallel_each_in_order(queue: &str) {
    let app = App::start(Duration::from_millis(10)).await;
    let gw = spawn_gateway(&config(queue, app.addr, 100)).await;
    let keys = ["k0", "k1", "k2", "k3", "k4"];
    let mut ids = Vec::new();
    for n in 0..6 {
        for k in keys {
            let id = format!("{k}-{n}");
            assert_eq!(gw.deliver("tampa", &body(&id, k), None, None).await.status, 202);
            ids.push(id);
        }
    }
    assert!(eventually(Duration::from_secs(15), async || app.log().len() >= ids.len()).await, "{:?}", app.log());
    let log = app.log();
    for k in keys {
        let of_key: Vec<&String> = log.iter().filter(|i| i.starts_with(&format!("{k}-"))).collect();
        let want: Vec<String> = (0..6).map(|n| format!("{k}-{n}")).collect();
        assert_eq!(of_key, want.iter().collect::<Vec<_>>(), "key {k}");
    }
    assert_eq!(app.most_at_once_per_key(), 1, "one at a time per key");
    gw.shutdown().await;
}

/// A head that dies (attempts used up) releases its key.
async fn a_dead_letter_releases_its_key(queue: &str) {
    let app = App::start(Duration::ZERO).await;
    app.fail("d1", true);
    let gw = spawn_gateway(&config(queue, app.addr, 2)).await;
    for id in ["d1", "d2"] {
        assert_eq!(gw.deliver("tampa", &body(id, "d"), None, None).await.status, 202);
    }
    assert!(eventually(Duration::from_secs(10), async || app.log().contains(&"d2".to_owned())).await);
    assert_eq!(app.log(), ["d1", "d1", "d2"], "d2 after d1 died");
    assert_eq!(gw.admin_json("/queue").await["routes"][0]["dead"], 1);
    gw.shutdown().await;
}

/// An ordered route that loses its name becomes an orphan with its waiting
/// head and the deliveries parked behind it: a move hands all of them to
/// another route, a delete drops all of them (nothing parked is left behind).
async fn an_ordered_orphan_moves_and_deletes_whole(queue: &str) {
    let app = App::start(Duration::ZERO).await;
    let other = App::start(Duration::ZERO).await;
    app.fail("m1", true);
    let base = config(queue, app.addr, 1000);
    let gw = spawn_gateway(&base).await;
    for id in ["m1", "m2", "m3"] {
        assert_eq!(gw.deliver("tampa", &body(id, "m"), None, None).await.status, 202);
    }
    assert!(eventually(Duration::from_secs(10), async || app.log().contains(&"m1".to_owned())).await);
    let renamed = |name: &str, to: SocketAddr| {
        base.replace("name = \"orders\"", &format!("name = \"{name}\"")).replace(&app.addr.to_string(), &to.to_string())
    };
    let orphan = async |gw: &Gateway, name: &str| {
        let routes = gw.admin_json("/queue").await["routes"].as_array().unwrap().clone();
        routes.into_iter().find(|r| r["orphaned"] == true && r["route"] == name)
    };
    let held = |r: &serde_json::Value| {
        ["pending", "scheduled", "in_flight"].iter().map(|k| r[k].as_u64().unwrap()).sum::<u64>()
    };

    // Moved: the head waiting for its retry and the two parked behind it.
    gw.app.reload(common::config(&renamed("orders-v2", other.addr))).unwrap();
    let gone =
        eventually(Duration::from_secs(10), async || orphan(&gw, "orders").await.is_some_and(|o| held(&o) == 3)).await;
    assert!(gone, "{:?}", gw.admin_json("/queue").await);
    let admin = |path: &str| format!("http://{}{path}", gw.admin);
    let r = send_orphan_op(&admin("/queue/orphans/tampa/orders/move?to=orders-v2"), "POST").await;
    assert_eq!((r.status.as_u16(), r.json()["moved"].as_u64()), (200, Some(3)), "{}", r.text());
    let all = |log: Vec<String>, ids: &[&str]| ids.iter().all(|id| log.contains(&(*id).to_owned()));
    assert!(
        eventually(Duration::from_secs(10), async || all(other.log(), &["m1", "m2", "m3"])).await,
        "{:?}",
        other.log()
    );

    // Deleted: the same shape under orders-v2, orphaned by another rename.
    other.fail("d1", true);
    for id in ["d1", "d2", "d3"] {
        assert_eq!(gw.deliver("tampa", &body(id, "d"), None, None).await.status, 202);
    }
    assert!(eventually(Duration::from_secs(10), async || other.log().contains(&"d1".to_owned())).await);
    gw.app.reload(common::config(&renamed("orders-v3", app.addr))).unwrap();
    assert!(
        eventually(Duration::from_secs(10), async || orphan(&gw, "orders-v2").await.is_some_and(|o| held(&o) == 3))
            .await
    );
    let r = send_orphan_op(&admin("/queue/orphans/tampa/orders-v2"), "DELETE").await;
    assert_eq!((r.status.as_u16(), r.json()["deleted"].as_u64()), (200, Some(3)), "{}", r.text());
    assert!(orphan(&gw, "orders-v2").await.is_none());
    let routes = gw.admin_json("/queue").await["routes"].as_array().unwrap().clone();
    assert!(routes.iter().all(|r| held(r) == 0 && r["dead"] == 0), "{routes:?}");
    assert!(!other.log().contains(&"d2".to_owned()), "d2 waited behind d1 and was deleted with it");
    gw.shutdown().await;
}

/// Once an ordered route on Redis has nothing waiting, its ordering state is
/// gone too: no key keeps a head, a chain link (what `/queue` counts as
/// parked) or a tail, and the route's record hash holds only its dead letters. Keys go
/// through every way a head ends: delivered, delivered after a retry, dead
/// (with deliveries parked behind each), and a lone head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_a_drained_ordered_route_leaves_no_ordering_state() {
    let redis = RedisServer::start();
    let app = App::start(Duration::from_millis(5)).await;
    app.fail("b1", true);
    app.fail("c1", true);
    // Retries 300 ms apart: b1's first failure is seen long before its last.
    let slow = config(&redis_queue(&redis), app.addr, 3)
        .replace(r#"backoff = "50ms", max_backoff = "100ms""#, r#"backoff = "300ms", max_backoff = "300ms""#);
    let gw = spawn_gateway(&slow).await;
    let mut ids = Vec::new();
    for n in 1..=4 {
        for key in ["a", "b", "c"] {
            ids.push(format!("{key}{n}"));
        }
    }
    ids.push("lone1".to_owned());
    for id in &ids {
        let key = id.trim_end_matches(char::is_numeric);
        assert_eq!(gw.deliver("tampa", &body(id, key), None, None).await.status, 202);
    }
    // b1 recovers after its first attempt; c1 fails until it is dead.
    assert!(eventually(Duration::from_secs(10), async || app.log().contains(&"b1".to_owned())).await);
    app.fail("b1", false);
    let settled = async || {
        let r = &gw.admin_json("/queue").await["routes"][0];
        ["pending", "scheduled", "in_flight"].iter().all(|k| r[k] == 0) && r["dead"] == 1
    };
    assert!(eventually(Duration::from_secs(20), settled).await, "{}", gw.admin_json("/queue").await);
    let log = app.log();
    for key in ["a", "b", "c"] {
        let want: Vec<String> = (1..=4).map(|n| format!("{key}{n}")).collect();
        let want: Vec<&str> = want.iter().map(String::as_str).collect();
        assert_eq!(firsts(&log, &want), want, "{key} in order: {log:?}");
    }
    let keys = |pattern: &str| -> Vec<String> {
        redis.cli(&["--scan", "--pattern", pattern]).lines().filter(|l| !l.is_empty()).map(str::to_owned).collect()
    };
    for kind in ["oh", "ot", "on", "or"] {
        assert_eq!(keys(&format!("*:{kind}")), Vec::<String>::new(), "ordering state left: {kind}");
    }
    let hashes = keys("*:h");
    assert_eq!(hashes.len(), 1, "{hashes:?}");
    assert_eq!(redis.cli(&["HLEN", &hashes[0]]).trim(), "1", "only the dead letter's record stays");
    gw.shutdown().await;
}

fn disk() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let q = format!("[queue]\npath = \"{}\"", dir.path().display());
    (dir, q)
}

fn redis_queue(redis: &RedisServer) -> String {
    format!("[queue]\nstore = \"redis\"\n[queue.redis]\nurl = \"{}\"", redis.url())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_disk_a_failing_head_blocks_only_its_key() {
    let (_d, q) = disk();
    a_failing_head_blocks_only_its_key(&q).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_a_failing_head_blocks_only_its_key() {
    let redis = RedisServer::start();
    a_failing_head_blocks_only_its_key(&redis_queue(&redis)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_disk_many_keys_in_parallel_each_in_order() {
    let (_d, q) = disk();
    many_keys_in_parallel_each_in_order(&q).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_many_keys_in_parallel_each_in_order() {
    let redis = RedisServer::start();
    many_keys_in_parallel_each_in_order(&redis_queue(&redis)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_disk_a_dead_letter_releases_its_key() {
    let (_d, q) = disk();
    a_dead_letter_releases_its_key(&q).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_a_dead_letter_releases_its_key() {
    let redis = RedisServer::start();
    a_dead_letter_releases_its_key(&redis_queue(&redis)).await;
}

/// Redis Cluster (3 masters): every ordering script touches one slot (the
/// route's hash tag), so the same holds there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_cluster_a_failing_head_blocks_only_its_key() {
    let cluster = tokio::task::spawn_blocking(RedisCluster::start).await.unwrap();
    let nodes: Vec<String> = cluster.urls().iter().map(|u| format!("\"{u}\"")).collect();
    let q = format!("[queue]\nstore = \"redis\"\n[queue.redis]\ncluster = [{}]", nodes.join(", "));
    a_failing_head_blocks_only_its_key(&q).await;
}

/// Two replicas share the Redis store: deliveries received by either, one
/// key, attempted one at a time in the order received.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_keep_one_keys_order_with_redis() {
    let redis = RedisServer::start();
    let app = App::start(Duration::from_millis(10)).await;
    let text = config(&redis_queue(&redis), app.addr, 100);
    let (one, two) = (spawn_gateway(&text).await, spawn_gateway(&text).await);
    let ids: Vec<String> = (0..20).map(|n| format!("r-{n}")).collect();
    for (n, id) in ids.iter().enumerate() {
        let gw = if n % 2 == 0 { &one } else { &two };
        assert_eq!(gw.deliver("tampa", &body(id, "shared"), None, None).await.status, 202);
    }
    assert!(eventually(Duration::from_secs(15), async || app.log().len() >= ids.len()).await, "{:?}", app.log());
    assert_eq!(app.log(), ids, "in the order received, across replicas");
    assert_eq!(app.most_at_once_per_key(), 1);
    one.shutdown().await;
    two.shutdown().await;
}

/// Enqueued with the key's head parked behind an earlier one, then the
/// ordering survives a restart of the disk store: what was parked is still
/// waiting, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_disk_order_survives_a_restart() {
    let (dir, q) = disk();
    let down = dead_addr().await;
    let gw = spawn_gateway(&config(&q, down, 100)).await;
    for n in 0..5 {
        assert_eq!(gw.deliver("tampa", &body(&format!("s-{n}"), "s"), None, None).await.status, 202);
    }
    gw.shutdown().await;
    let app = App::start(Duration::ZERO).await;
    let gw = spawn_gateway(&config(&q, app.addr, 100)).await;
    assert!(eventually(Duration::from_secs(15), async || app.log().len() >= 5).await, "{:?}", app.log());
    let want: Vec<String> = (0..5).map(|n| format!("s-{n}")).collect();
    assert_eq!(firsts(&app.log(), &want.iter().map(String::as_str).collect::<Vec<_>>()), want);
    gw.shutdown().await;
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_disk_an_ordered_orphan_moves_and_deletes_whole() {
    let (_d, q) = disk();
    an_ordered_orphan_moves_and_deletes_whole(&q).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_an_ordered_orphan_moves_and_deletes_whole() {
    let redis = RedisServer::start();
    an_ordered_orphan_moves_and_deletes_whole(&redis_queue(&redis)).await;
}
