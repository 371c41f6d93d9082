//! SPEC §16 end to end, on the disk store and on Redis: bulk replay of dead
//! letters by route, time range and status.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

mod common;

use std::time::{Duration, SystemTime};

use common::redis::RedisServer;
use common::*;

/// `queue` (the [queue] table), then a tampa source with `routes` (route tables).
fn tampa(queue: &str, routes: &str) -> String {
    format!(
        r#"[server]
shutdown_grace = "1s"
{queue}

[sources.tampa]
path = "/webhooks/tampa"
provider = "tampa"
secrets = ["{SECRET}"]
{routes}"#
    )
}

fn config(queue: &str, refuse: std::net::SocketAddr, gone: std::net::SocketAddr) -> String {
    tampa(
        queue,
        &format!(
            r#"
[[sources.tampa.routes]]
name = "orders"
events = ["order.*"]
upstream = "http://{refuse}/orders"
delivery = "queue"

[[sources.tampa.routes]]
events = ["*"]
upstream = "http://{gone}/other"
delivery = "queue"
retry = {{ attempts = 1 }}
"#
        ),
    )
}

async fn bulk_replay(queue: &str) {
    let refuse = spawn_upstream(Behavior::Answer(422, "no", Duration::ZERO)).await;
    let gone = spawn_upstream(Behavior::Answer(503, "down", Duration::ZERO)).await;
    let gw = spawn_gateway(&config(queue, refuse.addr, gone.addr)).await;
    let before = humantime::format_rfc3339_millis(SystemTime::now() - Duration::from_secs(1)).to_string();
    for (id, ty) in [("o-1", "order.created"), ("o-2", "order.paid"), ("x-1", "user.created")] {
        let r = gw.deliver("tampa", &tampa_body(id, ty), None, None).await;
        assert_eq!(r.status, 202, "{}", r.text());
    }
    let dead = async || {
        gw.admin_json("/queue").await["routes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["dead"].as_u64().unwrap())
            .sum::<u64>()
            == 3
    };
    assert!(eventually(Duration::from_secs(10), dead).await);
    let after = humantime::format_rfc3339_millis(SystemTime::now() + Duration::from_secs(60)).to_string();

    let retry = async |q: &str| {
        let r = send(&format!("http://{}/queue/dead/retry?{q}", gw.admin), "POST", &[], "").await;
        assert_eq!(r.status, 200, "{q}: {}", r.text());
        r.json()["retried"].as_u64().unwrap()
    };
    // Nothing matches: nothing moves.
    assert_eq!(retry(&format!("since={after}")).await, 0);
    assert_eq!(retry(&format!("until={before}")).await, 0);
    assert_eq!(retry("status=5xx&route=orders").await, 0);
    assert_eq!(retry("status=500").await, 0);
    assert_eq!(retry("route=nope").await, 0);
    // By route name and status class: the two orders (422).
    assert_eq!(retry(&format!("route=orders&status=4xx&since={before}&until={after}")).await, 2);
    assert!(eventually(Duration::from_secs(10), async || refuse.hits() == 4).await, "both attempted again");
    assert!(eventually(Duration::from_secs(10), dead).await);
    // By the unnamed route's position, and an exact status.
    assert_eq!(retry("route=1&status=503").await, 1);
    assert!(eventually(Duration::from_secs(10), async || gone.hits() == 2).await);
    assert!(eventually(Duration::from_secs(10), dead).await);
    // Bad filters are 400 with the reason.
    for bad in ["since=yesterday", "until=2026-13-01T00:00:00Z", "status=5x", "status=abc"] {
        let r = send(&format!("http://{}/queue/dead/retry?{bad}", gw.admin), "POST", &[], "").await;
        assert_eq!((r.status.as_u16(), r.error_code().as_str()), (400, "bad_request"), "{bad}");
    }
    // No filter: every dead letter, as before.
    assert_eq!(retry("").await, 3);
    gw.shutdown().await;
}

#[tokio::test]
async fn bulk_replay_by_route_time_and_status_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    bulk_replay(&format!("[queue]\npath = \"{}\"", dir.path().display())).await;
}

#[tokio::test]
async fn bulk_replay_by_route_time_and_status_on_redis() {
    let redis = RedisServer::start();
    bulk_replay(&format!("[queue]\nstore = \"redis\"\n[queue.redis]\nurl = \"{}\"", redis.url())).await;
}

fn one_queue_route(queue: &str, upstream: std::net::SocketAddr, extra: &str) -> String {
    tampa(
        queue,
        &format!(
            r#"
[[sources.tampa.routes]]
name = "orders"
events = ["*"]
upstream = "http://{upstream}/orders"
delivery = "queue"
retry = {{ backoff = "20ms", max_backoff = "50ms" }}
{extra}
"#
        ),
    )
}

async fn orders(gw: &Gateway) -> serde_json::Value {
    gw.admin_json("/queue").await["routes"][0].clone()
}

async fn post(gw: &Gateway, path: &str) -> Reply {
    send(&format!("http://{}{path}", gw.admin), "POST", &[], "").await
}

/// Paused by the API: stored, not attempted, resumed on request; then a 410
/// pauses it without counting the attempt.
async fn pause_by_api_and_by_410(queue: &str) {
    let up = spawn_upstream(ok_upstream()).await;
    let gw = spawn_gateway(&one_queue_route(queue, up.addr, "")).await;
    let r = post(&gw, "/queue/routes/tampa/orders/pause").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["paused"]["reason"].as_str().unwrap().contains("admin API"), "{}", r.text());
    for i in 0..3 {
        assert_eq!(gw.deliver("tampa", &tampa_body(&format!("p-{i}"), "order.created"), None, None).await.status, 202);
    }
    let route = orders(&gw).await;
    assert_eq!(route["pending"], 3, "{route}");
    assert!(route["paused"]["since"].as_str().unwrap().ends_with('Z'), "{route}");
    assert!(gw.metrics().await.contains(r#"hookgate_queue_paused{source="tampa",route="orders"} 1"#));
    // Still nothing attempted a while later (a worker wakes on every enqueue and idle check).
    let attempted = eventually(Duration::from_millis(600), async || up.hits() > 0).await;
    assert!(!attempted, "a paused route attempts nothing");
    let r = post(&gw, "/queue/routes/tampa/orders/resume").await;
    assert_eq!(r.json()["paused"], serde_json::Value::Null, "{}", r.text());
    assert!(eventually(Duration::from_secs(5), async || up.hits() == 3).await);
    assert_eq!(post(&gw, "/queue/routes/tampa/nope/pause").await.status, 404);

    // 410 Gone: paused at once, the delivery waits with its attempt not counted.
    up.set(Behavior::Answer(410, "gone", Duration::ZERO));
    assert_eq!(gw.deliver("tampa", &tampa_body("g-1", "order.created"), None, None).await.status, 202);
    assert!(eventually(Duration::from_secs(5), async || !orders(&gw).await["paused"].is_null()).await);
    let route = orders(&gw).await;
    assert!(route["paused"]["reason"].as_str().unwrap().contains("410"), "{route}");
    assert_eq!(route["dead"], 0, "{route}");
    let waiting = gw.admin_json("/queue/waiting").await;
    assert_eq!(waiting["items"][0]["attempts"], 0, "the 410 attempt is not counted: {waiting}");
    assert_eq!(up.hits(), 4);
    up.set(ok_upstream());
    post(&gw, "/queue/routes/tampa/orders/resume").await;
    assert!(eventually(Duration::from_secs(5), async || up.hits() == 5).await);
    gw.shutdown().await;
}

#[tokio::test]
async fn pause_by_api_and_by_410_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    pause_by_api_and_by_410(&format!("[queue]\npath = \"{}\"", dir.path().display())).await;
}

#[tokio::test]
async fn pause_by_api_and_by_410_on_redis() {
    let redis = RedisServer::start();
    pause_by_api_and_by_410(&format!("[queue]\nstore = \"redis\"\n[queue.redis]\nurl = \"{}\"", redis.url())).await;
}

/// `pause_after` of failure pauses the route; one probe per `probe_every`
/// until one delivers, then full speed again.
#[tokio::test]
async fn pause_after_failing_then_probes_until_one_delivers() {
    let dir = tempfile::tempdir().unwrap();
    let up = spawn_upstream(Behavior::Answer(503, "down", Duration::ZERO)).await;
    let queue = format!("[queue]\npath = \"{}\"", dir.path().display());
    let gw = spawn_gateway(&one_queue_route(&queue, up.addr, "pause_after = \"300ms\"\nprobe_every = \"400ms\"")).await;
    for i in 0..5 {
        assert_eq!(gw.deliver("tampa", &tampa_body(&format!("f-{i}"), "order.created"), None, None).await.status, 202);
    }
    assert!(eventually(Duration::from_secs(5), async || !orders(&gw).await["paused"].is_null()).await);
    let route = orders(&gw).await;
    assert!(route["paused"]["reason"].as_str().unwrap().contains("failing"), "{route}");
    // Probes: about one per probe_every, not the retry schedule's dozens.
    let at_pause = up.hits();
    let started = std::time::Instant::now();
    assert!(eventually(Duration::from_secs(5), async || up.hits() >= at_pause + 2).await, "probes go on");
    let probes = up.hits() - at_pause;
    let allowed = (started.elapsed().as_millis() / 400 + 2) as usize;
    assert!(probes <= allowed, "{probes} probes in {:?}", started.elapsed());
    // The app is back: the next probe delivers and the route resumes.
    up.set(ok_upstream());
    assert!(eventually(Duration::from_secs(5), async || orders(&gw).await["paused"].is_null()).await);
    let idle = async || {
        let r = orders(&gw).await;
        r["pending"] == 0 && r["scheduled"] == 0 && r["in_flight"] == 0
    };
    assert!(eventually(Duration::from_secs(5), idle).await);
    gw.shutdown().await;
}

/// With Redis, a pause by one replica holds for the other.
#[tokio::test]
async fn a_pause_on_one_replica_holds_for_all_with_redis() {
    let redis = RedisServer::start();
    let up = spawn_upstream(ok_upstream()).await;
    let queue = format!("[queue]\nstore = \"redis\"\n[queue.redis]\nurl = \"{}\"", redis.url());
    let a = spawn_gateway(&one_queue_route(&queue, up.addr, "")).await;
    let b = spawn_gateway(&one_queue_route(&queue, up.addr, "")).await;
    assert_eq!(post(&a, "/queue/routes/tampa/orders/pause").await.status, 200);
    assert!(eventually(Duration::from_secs(5), async || !orders(&b).await["paused"].is_null()).await);
    for i in 0..4 {
        assert_eq!(b.deliver("tampa", &tampa_body(&format!("rp-{i}"), "order.created"), None, None).await.status, 202);
    }
    let attempted = eventually(Duration::from_millis(1500), async || up.hits() > 0).await;
    assert!(!attempted, "neither replica attempts");
    assert_eq!(post(&b, "/queue/routes/tampa/orders/resume").await.status, 200);
    assert!(eventually(Duration::from_secs(5), async || up.hits() == 4).await);
    assert!(eventually(Duration::from_secs(5), async || orders(&a).await["paused"].is_null()).await);
    a.shutdown().await;
    b.shutdown().await;
}

/// `rate = "20/s"`: a stored backlog drains at the rate (within 10% over 5 s,
/// the first tenth of a second's burst included), with one gateway or with
/// two sharing Redis; `extra`: more of the route's keys.
async fn drains_at_the_rate(queue: &str, replicas: usize, extra: &str) {
    let up = spawn_upstream(ok_upstream()).await;
    let text = one_queue_route(queue, up.addr, &format!("rate = \"20/s\"\n{extra}"));
    let mut gws = Vec::new();
    for _ in 0..replicas {
        gws.push(spawn_gateway(&text).await);
    }
    assert_eq!(post(&gws[0], "/queue/routes/tampa/orders/pause").await.status, 200);
    for g in &gws {
        assert!(eventually(Duration::from_secs(5), async || !orders(g).await["paused"].is_null()).await);
    }
    for i in 0..160 {
        let gw = &gws[i % replicas];
        assert_eq!(gw.deliver("tampa", &tampa_body(&format!("rt-{i}"), "order.created"), None, None).await.status, 202);
    }
    assert_eq!(up.hits(), 0);
    assert_eq!(post(&gws[0], "/queue/routes/tampa/orders/resume").await.status, 200);
    let started = std::time::Instant::now();
    // The window is the measurement, not a wait for something to happen.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let n = up.hits();
    let secs = started.elapsed().as_secs_f64();
    let expected = 20.0 * secs + 2.0;
    assert!(
        (n as f64) >= expected * 0.9 && (n as f64) <= expected * 1.1,
        "{n} attempts in {secs:.2} s with {replicas} replica(s); expected {expected:.0} ±10%"
    );
    for g in gws {
        g.shutdown().await;
    }
}

#[tokio::test]
async fn a_rate_holds_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    drains_at_the_rate(&format!("[queue]\npath = \"{}\"", dir.path().display()), 1, "").await;
}

#[tokio::test]
async fn a_rate_holds_for_two_replicas_together_on_redis() {
    let redis = RedisServer::start();
    drains_at_the_rate(&format!("[queue]\nstore = \"redis\"\n[queue.redis]\nurl = \"{}\"", redis.url()), 2, "").await;
}

/// With `order_by` on Redis, a replica that delivers a key's head goes on
/// with the key's next itself, but not past the route's `rate`: every
/// delivery of one key (the same event type) still waits for its permit.
#[tokio::test]
async fn a_rate_holds_for_one_ordering_key_on_redis() {
    let redis = RedisServer::start();
    let queue = format!("[queue]\nstore = \"redis\"\n[queue.redis]\nurl = \"{}\"", redis.url());
    drains_at_the_rate(&queue, 1, "order_by = \"json:/type\"").await;
}
