//! SPEC §5 with `store = "redis"`: Redis Streams on a real `redis-server` per
//! test (and a 3-master Cluster), shared by replicas; a Redis outage answers
//! 503 and the workers resume by themselves; a replica that dies with a taken
//! delivery leaves it to another after `visibility_timeout`.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::redis::{RedisCluster, RedisServer};
use common::*;

/// A tampa source whose only route is a queue route on the Redis store at `target`
/// (`url = "..."` or `cluster = [...]`).
fn redis_queue_config(upstream: SocketAddr, target: &str, route_extra: &str) -> String {
    let timeout = if route_extra.contains("timeout =") { "" } else { "timeout = \"1s\"" };
    let top = format!(
        "[server]\nshutdown_grace = \"1s\"\n\n[queue]\nstore = \"redis\"\nvisibility_timeout = \"1s\"\n\n\
         [queue.redis]\n{target}\ntimeout = \"500ms\""
    );
    one_route_config(
        &top,
        &format!("http://{upstream}/hooks"),
        &format!("{timeout}\ndelivery = \"queue\"\n{route_extra}"),
    )
}

fn url(r: &RedisServer) -> String {
    format!("url = \"{}\"", r.url())
}

async fn deliver(gw: &Gateway, id: &str) -> Reply {
    gw.deliver("tampa", &tampa_body(id, "dev.tampa.event.created"), Some(id), None).await
}

async fn route_state(gw: &Gateway) -> serde_json::Value {
    gw.admin_json("/queue").await["routes"][0].clone()
}

#[tokio::test]
async fn stores_in_a_stream_then_delivers_and_dead_letters_can_be_retried() {
    let redis = RedisServer::start();
    let mut up = spawn_upstream(ok_upstream()).await;
    let gw = spawn_gateway(&redis_queue_config(
        up.addr,
        &url(&redis),
        r#"retry = { attempts = 2, backoff = "20ms", max_backoff = "50ms" }"#,
    ))
    .await;
    let r = deliver(&gw, "r-1").await;
    assert_eq!(r.status, 202, "{}", r.text());
    let got = up.next().await;
    assert_eq!(got.headers["x-hookgate-delivery-id"], "r-1");
    assert_eq!(got.headers["x-hookgate-attempt"], "1");
    assert!(
        eventually(Duration::from_secs(5), async || {
            let s = route_state(&gw).await;
            s["pending"] == 0 && s["in_flight"] == 0
        })
        .await
    );
    // Keyed by the route's identity (an unnamed route: a fingerprint of its events), SPEC §12.
    let identity = route_state(&gw).await["route"].as_str().unwrap().to_owned();
    assert!(identity.starts_with('~'), "{identity}");
    let stream = format!("hookgate:q:{{tampa:{identity}}}:s");
    assert_eq!(redis.cli(&["XLEN", &stream]), "0", "acknowledged entries leave the stream");

    // 5xx twice (attempts = 2) -> dead; retried from the admin API -> delivered.
    up.set(Behavior::Answer(503, "down", Duration::ZERO));
    assert_eq!(deliver(&gw, "r-2").await.status, 202);
    assert!(eventually(Duration::from_secs(5), async || route_state(&gw).await["dead"] == 1).await);
    let dead = gw.admin_json("/queue/dead").await;
    let item = &dead["items"][0];
    assert_eq!(
        (item["id"].as_str(), item["attempts"].as_u64(), item["last_status"].as_u64()),
        (Some("r-2"), Some(2), Some(503))
    );
    let entry = item["entry"].as_str().unwrap().to_owned();
    up.drain();
    up.set(ok_upstream());
    let admin = |p: &str| format!("http://{}{p}", gw.admin);
    assert_eq!(send(&admin("/queue/dead/nope.1/retry"), "POST", &[], "").await.status, 404);
    assert_eq!(send(&admin(&format!("/queue/dead/{entry}/retry")), "POST", &[], "").await.status, 200);
    let again = up.next().await;
    assert_eq!(
        (
            again.headers["x-hookgate-delivery-id"].to_str().unwrap(),
            again.headers["x-hookgate-attempt"].to_str().unwrap()
        ),
        ("r-2", "1")
    );
    // Parked twice (retry, then dead) and revived: the stored headers and body
    // are the ones it was enqueued with.
    assert_eq!(again.headers["x-hookgate-event-type"], "dev.tampa.event.created");
    assert_eq!(again.headers["content-type"], got.headers["content-type"]);
    let body: serde_json::Value = serde_json::from_slice(&again.body).unwrap();
    assert_eq!((body["id"].as_str(), body["type"].as_str()), (Some("r-2"), Some("dev.tampa.event.created")));
    assert!(eventually(Duration::from_secs(5), async || route_state(&gw).await["dead"] == 0).await);
    gw.shutdown().await;
}

#[tokio::test]
async fn dead_letter_pages_delete_and_retry_all() {
    let redis = RedisServer::start();
    let mut up = spawn_upstream(Behavior::Answer(422, "refused", Duration::ZERO)).await;
    let gw = spawn_gateway(&redis_queue_config(up.addr, &url(&redis), "")).await;
    for i in 0..5 {
        assert_eq!(deliver(&gw, &format!("page-{i}")).await.status, 202);
    }
    assert!(eventually(Duration::from_secs(5), async || route_state(&gw).await["dead"] == 5).await);
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = cursor.as_ref().map_or(String::new(), |c| format!("&cursor={c}"));
        let page = gw.admin_json(&format!("/queue/dead?limit=2{q}")).await;
        seen.extend(page["items"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_owned()));
        match page["next"].as_str() {
            Some(n) => cursor = Some(n.to_owned()),
            None => break,
        }
    }
    seen.sort();
    assert_eq!(seen, ["page-0", "page-1", "page-2", "page-3", "page-4"], "every dead letter once across pages");
    let bad = send(&format!("http://{}/queue/dead?cursor=garbage", gw.admin), "GET", &[], "").await;
    assert_eq!(bad.status, 400);
    let newest = gw.admin_json("/queue/dead?limit=1").await["items"][0].clone();
    let first = newest["entry"].as_str().unwrap().to_owned();
    let deleted_id = newest["id"].as_str().unwrap().to_owned();
    assert_eq!(send(&format!("http://{}/queue/dead/{first}", gw.admin), "DELETE", &[], "").await.status, 204);
    assert_eq!(send(&format!("http://{}/queue/dead/{first}", gw.admin), "DELETE", &[], "").await.status, 404);
    let logged = gw.admin_json(&format!("/deliveries?id={deleted_id}")).await["items"][0].clone();
    assert_eq!(logged["queue_state"], "deleted", "the log no longer says dead: {logged}");
    up.drain();
    up.set(ok_upstream());
    let r = send(&format!("http://{}/queue/dead/retry?source=tampa", gw.admin), "POST", &[], "").await;
    assert_eq!(r.json(), serde_json::json!({"retried": 4}));
    let mut redelivered = std::collections::BTreeSet::new();
    while redelivered.len() < 4 {
        redelivered.insert(up.next().await.headers["x-hookgate-delivery-id"].to_str().unwrap().to_owned());
    }
    assert!(!redelivered.contains(&deleted_id), "the deleted one is not among them");
    assert!(eventually(Duration::from_secs(5), async || route_state(&gw).await["dead"] == 0).await);
    gw.shutdown().await;
}

#[tokio::test]
async fn redis_down_answers_503_and_workers_resume_when_it_returns() {
    let mut redis = RedisServer::start();
    let mut up = spawn_upstream(ok_upstream()).await;
    let gw = spawn_gateway(&redis_queue_config(up.addr, &url(&redis), "")).await;
    assert_eq!(deliver(&gw, "before").await.status, 202);
    up.next().await;
    redis.kill();
    let r = deliver(&gw, "during").await;
    assert_eq!((r.status.as_u16(), r.error_code().as_str()), (503, "queue_unavailable"));
    assert!(r.headers.contains_key("retry-after"));
    let ready = send(&format!("http://{}/readyz", gw.admin), "GET", &[], "").await;
    assert_eq!(ready.status, 503);
    let depth = send(&format!("http://{}/queue", gw.admin), "GET", &[], "").await;
    assert_eq!(
        (depth.status.as_u16(), depth.error_code().as_str()),
        (503, "queue_unavailable"),
        "not \"nothing queued\""
    );
    redis.restart();
    // The claim was released, so the sender's retry is accepted once Redis is back.
    assert!(eventually(Duration::from_secs(10), async || deliver(&gw, "during").await.status == 202).await);
    let got = up.next().await;
    assert_eq!(got.headers["x-hookgate-delivery-id"], "during", "the worker resumed by itself");
    gw.shutdown().await;
}

/// A replica that stops hands the deliveries it had taken ahead and not
/// started to the other replicas at once: they go out long before
/// `visibility_timeout` (30 s here). Only the attempt cut short by
/// `shutdown_grace` waits for that.
#[tokio::test]
async fn a_replica_that_stops_hands_what_it_took_ahead_to_another_at_once() {
    let redis = RedisServer::start();
    let mut app = spawn_upstream(ok_upstream()).await;
    let text = redis_queue_config(app.addr, &url(&redis), "timeout = \"10s\"\nconcurrency = 1")
        .replace("shutdown_grace = \"1s\"", "shutdown_grace = \"100ms\"")
        .replace("visibility_timeout = \"1s\"", "visibility_timeout = \"30s\"");
    let a = spawn_gateway(&text).await;
    // Quick attempts first: A then takes two ahead of its one slot.
    for i in 0..3 {
        assert_eq!(deliver(&a, &format!("warm-{i}")).await.status, 202);
    }
    assert!(eventually(Duration::from_secs(5), async || app.hits() >= 3).await);
    app.drain();
    app.set(Behavior::Answer(200, "slow", Duration::from_secs(20)));
    for i in 0..5 {
        assert_eq!(deliver(&a, &format!("ahead-{i}")).await.status, 202);
    }
    // One attempt hangs on the app, two more wait for its slot.
    let taken = async || route_state(&a).await["in_flight"].as_u64().unwrap_or(0) >= 3;
    assert!(eventually(Duration::from_secs(5), taken).await, "{}", route_state(&a).await);
    let hung: Vec<String> =
        app.drain().iter().map(|r| r.headers["x-hookgate-delivery-id"].to_str().unwrap().to_owned()).collect();
    assert_eq!(hung.len(), 1);
    a.shutdown().await;

    app.set(ok_upstream());
    let started = std::time::Instant::now();
    let b = spawn_gateway(&text).await;
    let mut got = std::collections::BTreeSet::new();
    let four = eventually(Duration::from_secs(10), async || {
        got.extend(app.drain().iter().map(|r| r.headers["x-hookgate-delivery-id"].to_str().unwrap().to_owned()));
        got.len() >= 4
    })
    .await;
    assert!(four, "the two taken ahead and the two never taken: {got:?}");
    // (B's first take has room for one; a claim that fills a take is followed by another at once.)
    assert!(started.elapsed() < Duration::from_secs(5), "not after visibility_timeout, nor a quarter of it");
    assert!(!got.contains(&hung[0]), "the attempt cut short waits for visibility_timeout: {got:?}");
    b.shutdown().await;
}

#[tokio::test]
async fn a_replica_that_dies_with_a_taken_delivery_leaves_it_to_another() {
    let redis = RedisServer::start();
    // Replica A takes the delivery and hangs on a slow app; then it dies.
    let slow = spawn_upstream(Behavior::Answer(200, "too late", Duration::from_secs(30))).await;
    let fast_stop = |t: String| {
        t.replace("shutdown_grace = \"1s\"", "shutdown_grace = \"100ms\"")
            .replace("visibility_timeout = \"1s\"", "visibility_timeout = \"2s\"")
    };
    let a = spawn_gateway(&fast_stop(redis_queue_config(slow.addr, &url(&redis), "timeout = \"60s\""))).await;
    assert_eq!(deliver(&a, "orphan-1").await.status, 202);
    assert!(eventually(Duration::from_secs(5), async || slow.hits() == 1).await, "replica A took it");
    let taken_at = std::time::Instant::now();
    a.shutdown().await; // shutdown_grace = 100ms: the attempt is abandoned, unacknowledged
    // Replica B (another consumer) finds it once visibility_timeout (2 s) has passed.
    let mut up = spawn_upstream(ok_upstream()).await;
    let b = spawn_gateway(&fast_stop(redis_queue_config(up.addr, &url(&redis), ""))).await;
    let got = up.next().await;
    assert_eq!(got.headers["x-hookgate-delivery-id"], "orphan-1");
    assert!(taken_at.elapsed() >= Duration::from_millis(1900), "not before the visibility timeout (2 s)");
    assert!(eventually(Duration::from_secs(5), async || route_state(&b).await["in_flight"] == 0).await);
    b.shutdown().await;
}

#[tokio::test]
async fn two_replicas_share_one_queue_and_deliver_each_entry_once() {
    let redis = RedisServer::start();
    let mut up = spawn_upstream(Behavior::Answer(200, "ok", Duration::from_millis(20))).await;
    let text = redis_queue_config(up.addr, &url(&redis), "concurrency = 4");
    let a = spawn_gateway(&text).await;
    let b = spawn_gateway(&text).await;
    for i in 0..40 {
        let gw = if i % 2 == 0 { &a } else { &b };
        assert_eq!(deliver(gw, &format!("shared-{i}")).await.status, 202);
    }
    let mut ids = Vec::new();
    while ids.len() < 40 {
        ids.push(up.next().await.headers["x-hookgate-delivery-id"].to_str().unwrap().to_owned());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(up.drain().is_empty(), "no delivery twice");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 40);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_route_has_a_worker_per_runtime_that_share_its_concurrency() {
    // As `hookgate run` with two worker threads: one worker of the route on
    // each runtime, with 2 and 1 of its 3 slots.
    let redis = RedisServer::start();
    let mut up = spawn_upstream(Behavior::Answer(200, "ok", Duration::from_millis(50))).await;
    let gw = spawn_gateway_on_runtimes(&redis_queue_config(up.addr, &url(&redis), "concurrency = 3"), 2).await;
    for i in 0..30 {
        assert_eq!(deliver(&gw, &format!("rt-{i}")).await.status, 202);
    }
    let mut ids = Vec::new();
    while ids.len() < 30 {
        ids.push(up.next().await.headers["x-hookgate-delivery-id"].to_str().unwrap().to_owned());
    }
    assert!(eventually(Duration::from_secs(5), async || route_state(&gw).await["in_flight"] == 0).await);
    assert!(up.drain().is_empty(), "no delivery twice");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 30);
    assert_eq!(up.max_concurrent(), 3, "the workers' shares add up to `concurrency`, not more");
    gw.shutdown().await;
}

#[tokio::test]
async fn with_fewer_slots_than_runtimes_the_route_stays_within_its_concurrency() {
    let redis = RedisServer::start();
    let up = spawn_upstream(Behavior::Answer(200, "ok", Duration::from_millis(30))).await;
    let gw = spawn_gateway_on_runtimes(&redis_queue_config(up.addr, &url(&redis), "concurrency = 1"), 2).await;
    for i in 0..6 {
        assert_eq!(deliver(&gw, &format!("one-{i}")).await.status, 202);
    }
    assert!(eventually(Duration::from_secs(10), async || up.hits() == 6).await);
    assert_eq!(up.max_concurrent(), 1, "the second worker has no slot and takes nothing");
    gw.shutdown().await;
}

#[tokio::test]
async fn with_a_slow_app_nothing_is_taken_ahead() {
    // Taking entries before a slot frees only pays while attempts are quick;
    // with an app that takes 300 ms, each take is for a free slot, so no
    // entry waits taken (and, on Redis, ages towards another replica's claim).
    let redis = RedisServer::start();
    let mut up = spawn_upstream(Behavior::Answer(200, "ok", Duration::from_millis(300))).await;
    let gw = spawn_gateway(&redis_queue_config(up.addr, &url(&redis), "concurrency = 1")).await;
    for i in 0..4 {
        assert_eq!(deliver(&gw, &format!("slow-{i}")).await.status, 202);
    }
    let mut most = 0;
    let mut ids = Vec::new();
    while ids.len() < 4 {
        tokio::select! {
            r = up.next() => ids.push(r.headers["x-hookgate-delivery-id"].to_str().unwrap().to_owned()),
            _ = tokio::time::sleep(Duration::from_millis(20)) => {
                most = most.max(route_state(&gw).await["in_flight"].as_u64().unwrap());
            }
        }
    }
    // One at the app, and at most one more taken while its outcome is written.
    assert!(most <= 2, "{most} taken at once with concurrency = 1 and a slow app");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 4);
    gw.shutdown().await;
}

#[tokio::test]
async fn an_entry_taken_ahead_and_held_too_long_is_left_to_a_claim_not_attempted_late() {
    // visibility_timeout 1 s, route timeout 1 s: an entry held ready more than
    // 250 ms (a quarter of the visibility timeout, as nothing is left of it
    // once the route's timeout is taken off) is not attempted by the worker
    // that holds it; it comes back through a claim once it has been pending 1 s.
    let redis = RedisServer::start();
    let mut up = spawn_upstream(ok_upstream()).await;
    let gw = spawn_gateway(&redis_queue_config(up.addr, &url(&redis), "concurrency = 4")).await;
    // Quick attempts first, so the worker takes ahead.
    for i in 0..8 {
        assert_eq!(deliver(&gw, &format!("quick-{i}")).await.status, 202);
    }
    for _ in 0..8 {
        up.next().await;
    }
    // Now the app takes 600 ms: four at the app, the next two taken ahead and
    // held past 250 ms before a slot frees.
    up.set(Behavior::Answer(200, "ok", Duration::from_millis(600)));
    let mut acked = std::collections::HashMap::new();
    for i in 0..6 {
        let id = format!("held-{i}");
        assert_eq!(deliver(&gw, &id).await.status, 202);
        acked.insert(id, std::time::Instant::now());
    }
    let mut seen = Vec::new();
    while seen.len() < 6 {
        let r = up.next().await;
        let id = r.headers["x-hookgate-delivery-id"].to_str().unwrap().to_owned();
        assert_eq!(r.headers["x-hookgate-attempt"], "1", "{id}: held entries were never attempted");
        seen.push((id.clone(), acked[&id].elapsed()));
    }
    for (id, after) in &seen[4..] {
        // Attempted by its holder, it would have come at ~600 ms.
        assert!(*after >= Duration::from_millis(900), "{id} attempted {after:?} after its ack: {seen:?}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(up.drain().is_empty(), "no delivery twice");
    let mut ids: Vec<_> = seen.iter().map(|(id, _)| id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 6);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn works_on_a_three_master_cluster() {
    let cluster = tokio::task::spawn_blocking(RedisCluster::start).await.unwrap();
    let nodes: Vec<String> = cluster.urls().iter().map(|u| format!("\"{u}\"")).collect();
    let mut up = spawn_upstream(Behavior::Answer(500, "no", Duration::ZERO)).await;
    let text = redis_queue_config(
        up.addr,
        &format!("cluster = [{}]", nodes.join(", ")),
        r#"retry = { attempts = 2, backoff = "10ms", max_backoff = "20ms" }"#,
    );
    let gw = spawn_gateway(&text).await;
    for i in 0..3 {
        assert_eq!(deliver(&gw, &format!("cl-{i}")).await.status, 202);
    }
    assert!(
        eventually(Duration::from_secs(10), async || route_state(&gw).await["dead"] == 3).await,
        "retried then dead"
    );
    up.drain();
    up.set(ok_upstream());
    let r = send(&format!("http://{}/queue/dead/retry", gw.admin), "POST", &[], "").await;
    assert_eq!(r.json()["retried"], 3);
    let mut ids = std::collections::BTreeSet::new();
    while ids.len() < 3 {
        ids.insert(up.next().await.headers["x-hookgate-delivery-id"].to_str().unwrap().to_owned());
    }
    assert!(
        eventually(Duration::from_secs(5), async || {
            let s = route_state(&gw).await;
            s["dead"] == 0 && s["pending"] == 0 && s["in_flight"] == 0 && s["scheduled"] == 0
        })
        .await
    );
    gw.shutdown().await;
}

/// How often the server ran each of `commands` (its `INFO commandstats`).
fn calls(redis: &RedisServer, commands: &[&str]) -> u64 {
    let stats = redis.cli(&["INFO", "commandstats"]);
    commands
        .iter()
        .filter_map(|c| stats.lines().find_map(|l| l.strip_prefix(&format!("cmdstat_{c}:calls="))))
        .map(|rest| rest.split(',').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

/// The commands clients sent (not those scripts ran) while `f` ran, as the
/// server's `MONITOR` shows them, between two `ECHO` markers.
async fn client_commands<T>(redis: &RedisServer, f: impl std::future::Future<Output = T>) -> (T, Vec<String>) {
    use std::io::BufRead;
    let mut monitor = std::process::Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &redis.port.to_string(), "MONITOR"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(monitor.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap().trim(), "OK", "MONITOR started");
    redis.cli(&["ECHO", "mark-start"]);
    let out = f.await;
    redis.cli(&["ECHO", "mark-end"]);
    let mut seen = Vec::new();
    for line in lines.by_ref().map(Result::unwrap) {
        if line.contains("\"mark-end\"") {
            break;
        }
        seen.push(line);
    }
    monitor.kill().unwrap();
    let _ = monitor.wait();
    let start = seen.iter().position(|l| l.contains("\"mark-start\"")).unwrap();
    let sent = seen[start + 1..].iter().filter(|l| !l.contains(" lua] ")).cloned().collect();
    (out, sent)
}

/// The Redis queue store alone, on `redis`, keys under `t:`.
fn queue_on(redis: &RedisServer) -> hookgate::queue::redis::RedisQueue {
    queue_with_visibility(redis, Duration::from_secs(30))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

fn stored_entry(i: usize) -> hookgate::queue::NewEntry {
    hookgate::queue::NewEntry {
        meta: hookgate::queue::Meta {
            source: "tampa".into(),
            route: 0,
            id: format!("batch-{i}"),
            event_type: "dev.tampa.event.created".into(),
            query: None,
            received_ms: 1_700_000_000_000 + i as u64,
            log: None,
            replay: false,
            order_key: None,
        },
        headers: http::HeaderMap::from_iter([(
            http::HeaderName::from_static("x-n"),
            http::HeaderValue::from_str(&i.to_string()).unwrap(),
        )]),
        body: bytes::Bytes::from(format!("{{\"n\":{i}}}")),
    }
}

/// Taking is one pipeline (due retries moved by a script, new entries read
/// with plain XREADGROUP, the next due time), and deliveries that finish together are recorded
/// with one `XACK` and one `XDEL` for all of them; each is still acknowledged
/// and deleted from the stream.
#[tokio::test]
async fn a_take_is_one_pipeline_of_plain_reads_and_outcomes_finished_together_one_round_trip() {
    use hookgate::queue::{RouteKey, Transition};
    let redis = RedisServer::start();
    let q = std::sync::Arc::new(queue_on(&redis));
    let route = RouteKey::new("tampa", "r");
    for i in 0..20 {
        q.enqueue(&route, &stored_entry(i)).await.unwrap();
    }
    let now = now_ms();
    // The first take also makes the consumer group and, as the server has
    // not cached the retries' script yet, runs it with EVAL.
    let first = q.take(&route, 8, &Default::default(), now).await.unwrap();
    assert_eq!(first.entries.len(), 8);
    let (rest, sent) = client_commands(&redis, q.take(&route, 50, &Default::default(), now)).await;
    let rest = rest.unwrap();
    assert_eq!(rest.entries.len(), 12);
    assert_eq!(rest.next_due_ms, None, "no retry is scheduled");
    let verbs: Vec<_> = sent.iter().filter_map(|l| l.split('"').nth(1)).collect();
    // Retries moved back by a script; the stream read by plain XREADGROUP,
    // not from Lua (the filtered-out lines): nothing else.
    assert_eq!(verbs, ["EVALSHA", "XREADGROUP", "ZRANGE"], "one pipeline of a take: {sent:?}");
    let taken: Vec<_> = first.entries.into_iter().chain(rest.entries).collect();
    let mut ids: Vec<_> = taken.iter().map(|e| e.entry.meta.id.clone()).collect();
    ids.sort();
    let mut want: Vec<_> = (0..20).map(|i| format!("batch-{i}")).collect();
    want.sort();
    assert_eq!(ids, want);

    let before = calls(&redis, &["xack", "xdel", "evalsha", "eval"]);
    let mut finishing = tokio::task::JoinSet::new();
    for t in taken {
        let q = q.clone();
        finishing.spawn(async move { q.finish(&t, &Transition::Done).await });
    }
    while let Some(r) = finishing.join_next().await {
        r.unwrap().unwrap();
    }
    assert_eq!(
        calls(&redis, &["xack", "xdel", "evalsha", "eval"]) - before,
        2,
        "20 outcomes of one tick are one XACK and one XDEL"
    );
    assert_eq!(redis.cli(&["XLEN", "t:{tampa:r}:s"]).trim(), "0", "each was deleted from the stream");
    let pending = redis.cli(&["XPENDING", "t:{tampa:r}:s", "hookgate"]);
    assert_eq!(pending.lines().next().map(str::trim), Some("0"), "each was acknowledged: {pending}");
}

#[tokio::test]
async fn due_retries_come_back_even_when_the_server_lost_its_scripts() {
    use hookgate::queue::{RouteKey, Transition};
    let redis = RedisServer::start();
    let q = queue_on(&redis);
    let route = RouteKey::new("tampa", "r");
    let now = now_ms();
    for i in 0..3 {
        q.enqueue(&route, &stored_entry(i)).await.unwrap();
    }
    let taken = q.take(&route, 3, &Default::default(), now).await.unwrap();
    assert_eq!(taken.entries.len(), 3);
    let mut taken = taken.entries.into_iter();
    let retry = taken.next().unwrap();
    let state = hookgate::queue::State { attempts: 1, ..Default::default() };
    q.finish(&retry, &Transition::Retry { due_ms: now + 1000, state }).await.unwrap();
    for t in taken {
        q.finish(&t, &Transition::Done).await.unwrap();
    }
    let later = now + 5000;
    let idle = q.take(&route, 3, &Default::default(), now).await.unwrap();
    assert!(idle.entries.is_empty(), "not due yet");
    assert_eq!(idle.next_due_ms, Some(now + 1000), "the next retry's due time comes back");

    // A restarted server has no scripts cached: the take's EVALSHA fails next
    // to its read, the retries are moved with EVAL, and the worker is told to
    // take again at once (they were moved after that read).
    redis.cli(&["SCRIPT", "FLUSH"]);
    let first = q.take(&route, 3, &Default::default(), later).await.unwrap();
    assert!(first.entries.is_empty(), "moved after this take's read");
    assert_eq!(first.next_due_ms, Some(later), "take again at once");
    let second = q.take(&route, 3, &Default::default(), later).await.unwrap();
    let ids: Vec<_> = second.entries.iter().map(|e| (e.entry.meta.id.clone(), e.state.attempts)).collect();
    assert_eq!(ids, [(retry.entry.meta.id.clone(), 1)], "the due retry, with its attempt count");
    // Stored again as it was taken: the same headers and body come back.
    let back = &second.entries[0].entry;
    assert_eq!((&back.headers, &back.body), (&retry.entry.headers, &retry.entry.body));
    assert_eq!(back.headers["x-n"], "0");
    assert_eq!(second.next_due_ms, None, "nothing else is scheduled");
}

/// A retry due at once (full jitter can make it so) is moved back and read
/// by the next take while its last attempt may still count as in flight in
/// the worker (`skip`): that take hands it out. Left out after `XREADGROUP`
/// had read it, it waited in the pending list for `visibility_timeout`.
#[tokio::test]
async fn a_retry_read_while_its_last_attempt_is_still_in_flight_is_handed_out() {
    use hookgate::queue::{RouteKey, Transition};
    let redis = RedisServer::start();
    let q = queue_on(&redis);
    let route = RouteKey::new("tampa", "r");
    let now = now_ms();
    q.enqueue(&route, &stored_entry(0)).await.unwrap();
    let first = q.take(&route, 1, &Default::default(), now).await.unwrap().entries.remove(0);
    let state = hookgate::queue::State { attempts: 1, ..Default::default() };
    q.finish(&first, &Transition::Retry { due_ms: now, state }).await.unwrap();
    // Its attempt not reaped yet: its ident is still in the worker's set.
    let skip: std::collections::HashSet<String> = [first.ident()].into();
    let again = q.take(&route, 1, &skip, now + 1).await.unwrap();
    let ids: Vec<_> = again.entries.iter().map(|e| (e.entry.meta.id.clone(), e.state.attempts)).collect();
    assert_eq!(ids, [("batch-0".to_owned(), 1)], "the retry, handed out");
    assert_eq!(again.entries[0].ident(), first.ident());
}

/// A key's waiting deliveries are a chain (`…:on`, next by queue ID) whose
/// records wait in the route's hash; one whose record is gone (damage, a
/// delete by hand) is skipped when its turn comes, and the one behind it goes.
/// Once the key has nothing waiting, its ordering state is gone.
#[tokio::test]
async fn a_released_key_skips_a_waiting_delivery_whose_record_is_gone() {
    use hookgate::queue::{RouteKey, Transition};
    let redis = RedisServer::start();
    let q = queue_on(&redis);
    let route = RouteKey::new("tampa", "r");
    let ordered = |i| {
        let mut e = stored_entry(i);
        e.meta.order_key = Some("k".into());
        e
    };
    for i in 0..3 {
        q.enqueue(&route, &ordered(i)).await.unwrap();
    }
    let ids = |t: &hookgate::queue::Taken| t.entries.iter().map(|e| e.entry.meta.id.clone()).collect::<Vec<_>>();
    let head = q.take(&route, 10, &Default::default(), now_ms()).await.unwrap();
    assert_eq!(ids(&head), ["batch-0"], "only the key's head is takeable");
    assert_eq!(redis.cli(&["HLEN", "t:{tampa:r}:on"]).trim(), "2", "two links: two parked");
    assert_eq!(q.depth(&route).await.unwrap().0.pending, 2, "the parked count as pending");
    let second = redis.cli(&["HGET", "t:{tampa:r}:on", &head.entries[0].ident()]);
    assert_eq!(redis.cli(&["HDEL", "t:{tampa:r}:h", second.trim()]).trim(), "1");
    q.finish(&head.entries[0], &Transition::Done).await.unwrap();
    let third = q.take(&route, 10, &Default::default(), now_ms()).await.unwrap();
    assert_eq!(ids(&third), ["batch-2"], "batch-1 had no record: the next behind it goes");
    q.finish(&third.entries[0], &Transition::Done).await.unwrap();
    assert!(q.take(&route, 10, &Default::default(), now_ms()).await.unwrap().entries.is_empty());
    let left = redis.cli(&["EXISTS", "t:{tampa:r}:oh", "t:{tampa:r}:ot", "t:{tampa:r}:on", "t:{tampa:r}:h"]);
    assert_eq!(left.trim(), "0", "no ordering state left");
    assert_eq!(q.depth(&route).await.unwrap().0, Default::default(), "nothing counted");
}

/// `hookgate_queue_oldest_pending_seconds` for the Redis store: the oldest
/// entry no replica has read yet, from its stored meta.
#[tokio::test]
async fn the_oldest_pending_entry_is_the_first_not_yet_read() {
    use hookgate::queue::RouteKey;
    let redis = RedisServer::start();
    let q = queue_on(&redis);
    let route = RouteKey::new("tampa", "r");
    assert_eq!(q.oldest_pending_ms(&route).await, None, "nothing stored");
    for i in 0..3 {
        q.enqueue(&route, &stored_entry(i)).await.unwrap();
    }
    assert_eq!(q.oldest_pending_ms(&route).await, Some(1_700_000_000_000), "the first stored");
    let now = now_ms();
    let taken = q.take(&route, 2, &Default::default(), now).await.unwrap();
    assert_eq!(taken.entries.len(), 2);
    assert_eq!(q.oldest_pending_ms(&route).await, Some(1_700_000_000_002), "the first not handed out");
    q.take(&route, 1, &Default::default(), now).await.unwrap();
    assert_eq!(q.oldest_pending_ms(&route).await, None, "all handed out");
}

/// Cluster: the route's slot moves to another master (resharding) while its
/// deliveries wait, with no enqueue after the move to teach the client where
/// the slot went; the takes follow it and everything is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takes_follow_the_routes_slot_to_another_master() {
    let cluster = tokio::task::spawn_blocking(RedisCluster::start).await.unwrap();
    let nodes: Vec<String> = cluster.urls().iter().map(|u| format!("\"{u}\"")).collect();
    let mut up = spawn_upstream(ok_upstream()).await;
    let text = redis_queue_config(up.addr, &format!("cluster = [{}]", nodes.join(", ")), "concurrency = 2");
    let gw = spawn_gateway(&text).await;
    // One delivered first: the worker has its consumer group and the slot map.
    assert_eq!(deliver(&gw, "before").await.status, 202);
    up.next().await;
    gw.app.reload(config(&text.replace("concurrency = 2", "concurrency = 0"))).unwrap();
    for i in 0..4 {
        assert_eq!(deliver(&gw, &format!("moved-{i}")).await.status, 202);
    }
    // Move every slot of the route's master, its slot among them, to another one.
    let identity = route_state(&gw).await["route"].as_str().unwrap().to_owned();
    let slot = cluster.nodes[0].cli(&["CLUSTER", "KEYSLOT", &format!("{{tampa:{identity}}}")]).trim().to_owned();
    let owner = |slot: &str| {
        let nodes = cluster.nodes[0].cli(&["CLUSTER", "NODES"]);
        let slot: u32 = slot.parse().unwrap();
        nodes
            .lines()
            .find(|l| {
                l.split_whitespace().skip(8).any(|r| {
                    let (a, b) = r.split_once('-').unwrap_or((r, r));
                    matches!((a.parse::<u32>(), b.parse::<u32>()), (Ok(a), Ok(b)) if a <= slot && slot <= b)
                })
            })
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f[0].to_owned(), f[1].split('@').next().unwrap().to_owned())
            })
            .unwrap()
    };
    let (from_id, from_addr) = owner(&slot);
    let to = cluster.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).find(|a| *a != from_addr).unwrap();
    let to_id = cluster.nodes.iter().find(|n| format!("127.0.0.1:{}", n.port) == to).unwrap().cli(&["CLUSTER", "MYID"]);
    let out = std::process::Command::new("redis-cli")
        .args(["--cluster", "reshard", &from_addr, "--cluster-from", &from_id, "--cluster-to", to_id.trim()])
        .args(["--cluster-slots", "16384", "--cluster-yes"])
        .output()
        .unwrap();
    assert!(out.status.success(), "reshard: {}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(owner(&slot).1, to, "the route's slot moved");

    gw.app.reload(config(&text)).unwrap();
    let mut ids = std::collections::BTreeSet::new();
    while ids.len() < 4 {
        ids.insert(up.next().await.headers["x-hookgate-delivery-id"].to_str().unwrap().to_owned());
    }
    assert_eq!(ids.into_iter().collect::<Vec<_>>(), ["moved-0", "moved-1", "moved-2", "moved-3"]);
    assert!(
        eventually(Duration::from_secs(5), async || {
            let s = route_state(&gw).await;
            s["pending"] == 0 && s["in_flight"] == 0
        })
        .await
    );
    gw.shutdown().await;
}

/// SPEC §12 (Redis): a delivery answered 503 because Redis was paused
/// (SIGSTOP) is written when Redis resumes; the sender's retry must not store
/// a second copy. The app gets it once.
#[tokio::test]
async fn a_write_that_timed_out_but_landed_is_not_stored_twice() {
    let redis = RedisServer::start();
    let mut up = spawn_upstream(ok_upstream()).await;
    let text = redis_queue_config(up.addr, &url(&redis), "concurrency = 0");
    let gw = spawn_gateway(&text).await;
    assert_eq!(deliver(&gw, "warm").await.status, 202, "connections and scripts are ready");
    redis.pause();
    let r = deliver(&gw, "paused-1").await;
    redis.resume();
    assert_eq!(r.status, 503, "{}", r.text());
    // The timed-out write reached Redis after all; the sender retries.
    let stream = format!("hookgate:q:{{tampa:{}}}:s", route_state(&gw).await["route"].as_str().unwrap());
    assert!(eventually(Duration::from_secs(5), async || redis.cli(&["XLEN", &stream]) == "2").await);
    let r = deliver(&gw, "paused-1").await;
    assert_eq!(r.status, 202, "acknowledged: it is stored ({})", r.text());
    assert_eq!(redis.cli(&["XLEN", &stream]), "2", "not stored a second time");
    gw.app.reload(config(&text.replace("concurrency = 0", "concurrency = 4"))).unwrap();
    let mut ids = [up.next().await, up.next().await]
        .iter()
        .map(|r| r.headers["x-hookgate-delivery-id"].to_str().unwrap().to_owned())
        .collect::<Vec<_>>();
    ids.sort();
    assert_eq!(ids, ["paused-1", "warm"]);
    tokio::time::sleep(Duration::from_millis(300)).await; // a window in which a second copy would arrive
    assert_eq!(up.drain().len(), 0, "delivered once");
    gw.shutdown().await;
}

/// SPEC §12 (Redis): after a Redis restart the first request does not fail
/// once the server is back (the dropped connection is replaced and the
/// command sent again within the timeout).
#[tokio::test]
async fn the_first_request_after_a_redis_restart_succeeds() {
    let mut redis = RedisServer::start();
    let up = spawn_upstream(ok_upstream()).await;
    // The dedupe store on the same Redis: each delivery's first command is its claim.
    let text = redis_queue_config(up.addr, &url(&redis), "").replace(
        "[queue]",
        &format!("[dedupe]\nstore = \"redis\"\n[dedupe.redis]\nurl = \"{}\"\n\n[queue]", redis.url()),
    );
    let gw = spawn_gateway(&text).await;
    assert_eq!(deliver(&gw, "before").await.status, 202);
    for round in 0..3 {
        redis.restart();
        let r = deliver(&gw, &format!("after-{round}")).await;
        assert_eq!(r.status, 202, "the first request after restart {round}: {}", r.text());
    }
    gw.shutdown().await;
}

/// SPEC §12 (Redis): a lost stream or consumer group (FLUSHALL) is an ERROR
/// and counted in `hookgate_queue_store_resets_total`, and `/queue` says so
/// (the dashboard shows it as a banner); the route goes on with new deliveries.
#[tokio::test]
async fn a_flushed_stream_is_counted_and_shown() {
    let redis = RedisServer::start();
    let mut up = spawn_upstream(ok_upstream()).await;
    let gw = spawn_gateway(&redis_queue_config(up.addr, &url(&redis), "")).await;
    assert_eq!(deliver(&gw, "before-flush").await.status, 202);
    up.next().await;
    assert_eq!(redis.cli(&["FLUSHALL"]), "OK");
    assert!(
        eventually(Duration::from_secs(5), async || route_state(&gw).await["store_resets"] == 1).await,
        "{}",
        route_state(&gw).await
    );
    let route = route_state(&gw).await["route"].as_str().unwrap().to_owned();
    let metrics = gw.metrics().await;
    let line = format!("hookgate_queue_store_resets_total{{source=\"tampa\",route=\"{route}\"}} 1");
    assert!(metrics.contains(&line), "{metrics}");
    assert_eq!(deliver(&gw, "after-flush").await.status, 202);
    assert_eq!(up.next().await.headers["x-hookgate-delivery-id"], "after-flush");
    gw.shutdown().await;
}

/// The Redis queue store alone, on `redis`, keys under `t:`, with its own
/// `visibility_timeout`.
fn queue_with_visibility(redis: &RedisServer, visibility: Duration) -> hookgate::queue::redis::RedisQueue {
    let cfg = hookgate::config::RedisConfig {
        target: hookgate::config::RedisTarget::Single(redis.url()),
        key_prefix: "t:".into(),
        timeout: Duration::from_secs(2),
        roots: None,
    };
    hookgate::queue::redis::RedisQueue::new(&cfg, visibility).unwrap()
}

fn ordered_entry(i: usize) -> hookgate::queue::NewEntry {
    let mut e = stored_entry(i);
    e.meta.order_key = Some("k".into());
    e
}

/// Takes on `q` until something is taken (a claim waits for the entry to be
/// idle `visibility_timeout`), for at most 5 s.
async fn take_some(
    q: &hookgate::queue::redis::RedisQueue,
    route: &hookgate::queue::RouteKey,
) -> hookgate::queue::Taken {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let t = q.take(route, 10, &Default::default(), now_ms()).await.unwrap();
        if !t.entries.is_empty() || std::time::Instant::now() > deadline {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ids_of(t: &[hookgate::queue::TakenEntry]) -> Vec<String> {
    t.iter().map(|e| e.entry.meta.id.clone()).collect()
}

fn stream_id_of(t: &hookgate::queue::TakenEntry) -> String {
    match &t.handle {
        hookgate::queue::Handle::Redis { stream_id, .. } => stream_id.clone(),
        _ => unreachable!("a Redis entry"),
    }
}

/// A delivered head hands its key's next back to the replica that delivered
/// it, on the same stream entry (the key's lease): nothing goes through the
/// stream again. `/queue/waiting` shows the head it holds now. A replica
/// that dies holding it leaves the lease to be claimed, and the claim hands
/// out the key's head of now, not the delivery that was done.
#[tokio::test]
async fn a_delivered_heads_next_is_handed_on_by_lease_and_claimed_whole_when_its_replica_dies() {
    use hookgate::queue::{RouteKey, Transition};
    let redis = RedisServer::start();
    let a = queue_on(&redis);
    let route = RouteKey::new("tampa", "r");
    for i in 0..3 {
        a.enqueue(&route, &ordered_entry(i)).await.unwrap();
    }
    let head = a.take(&route, 10, &Default::default(), now_ms()).await.unwrap().entries.remove(0);
    assert_eq!(head.entry.meta.id, "batch-0");
    let next = a.finish_then(&head, &Transition::Done, true).await.unwrap().expect("the key's next, handed back");
    assert_eq!(next.entry.meta.id, "batch-1");
    assert_eq!(next.state.attempts, 0);
    assert_eq!(stream_id_of(&next), stream_id_of(&head), "on the head's lease");
    assert_eq!(redis.cli(&["XLEN", "t:{tampa:r}:s"]).trim(), "1", "nothing added to the stream");
    let listed: Vec<_> = a.waiting(&route, 10, None).await.unwrap().items.into_iter().map(|i| i.meta.id).collect();
    assert_eq!(listed, ["batch-1"], "the lease shows the head it holds now");

    // Replica A dies holding batch-1; replica B claims the lease.
    drop(next);
    let b = queue_with_visibility(&redis, Duration::from_millis(200));
    let claimed = take_some(&b, &route).await.entries;
    assert_eq!(ids_of(&claimed), ["batch-1"], "the key's head of now, not the delivery done");
    b.finish(&claimed[0], &Transition::Done).await.unwrap();
    let last = take_some(&b, &route).await.entries;
    assert_eq!(ids_of(&last), ["batch-2"], "handed on through the stream (not asked to go on)");
    assert_eq!(b.finish_then(&last[0], &Transition::Done, true).await.unwrap().map(|t| t.entry.meta.id), None);
    let left = redis.cli(&[
        "EXISTS",
        "t:{tampa:r}:oh",
        "t:{tampa:r}:ot",
        "t:{tampa:r}:on",
        "t:{tampa:r}:or",
        "t:{tampa:r}:h",
        "t:{tampa:r}:s",
    ]);
    assert_eq!(left.trim(), "1", "only the (empty) stream is left: {left}");
    assert_eq!(redis.cli(&["XLEN", "t:{tampa:r}:s"]).trim(), "0");
    assert_eq!(b.depth(&route).await.unwrap(), (Default::default(), 0), "nothing counted");
}

/// A stopping replica hands what it took and will not attempt to the other
/// replicas at once, not after `visibility_timeout`: a plain delivery, and
/// an ordering key's lease, which is claimed as the key's head of now. What
/// another replica claimed meanwhile is not handed back (nor stolen back).
#[tokio::test]
async fn a_stopping_replica_hands_back_what_it_took_and_the_keys_it_holds() {
    use hookgate::queue::{RouteKey, Transition};
    let redis = RedisServer::start();
    let a = queue_on(&redis);
    let route = RouteKey::new("tampa", "r");
    for i in 0..2 {
        a.enqueue(&route, &ordered_entry(i)).await.unwrap();
    }
    a.enqueue(&route, &stored_entry(2)).await.unwrap();
    let mut taken = a.take(&route, 10, &Default::default(), now_ms()).await.unwrap().entries;
    assert_eq!(ids_of(&taken), ["batch-0", "batch-2"], "batch-1 waits behind its key");
    let head = taken.remove(0);
    let next = a.finish_then(&head, &Transition::Done, true).await.unwrap().expect("the key's next, on its lease");
    let held = [next, taken.remove(0)];

    // Another replica with the same 30 s visibility finds nothing to claim until A hands them back.
    let early = queue_on(&redis);
    assert!(early.take(&route, 10, &Default::default(), now_ms()).await.unwrap().entries.is_empty());
    let b = queue_on(&redis);
    assert_eq!(a.hand_back(&held).await.unwrap(), 2);
    let claimed = b.take(&route, 10, &Default::default(), now_ms()).await.unwrap().entries;
    let mut ids = ids_of(&claimed);
    ids.sort();
    assert_eq!(ids, ["batch-1", "batch-2"], "the lease is claimed as the key's head of now");

    // A, handing back again what B holds now, changes nothing.
    assert_eq!(a.hand_back(&held).await.unwrap(), 0);
    let d = queue_on(&redis);
    assert!(d.take(&route, 10, &Default::default(), now_ms()).await.unwrap().entries.is_empty(), "B keeps them");
    for e in &claimed {
        b.finish(e, &Transition::Done).await.unwrap();
    }
    assert_eq!(b.depth(&route).await.unwrap(), (Default::default(), 0), "all delivered");
}

/// A replica that died (or stopped) holding many deliveries: another claims
/// them take after take while its claims come back full, not a take's worth
/// per quarter of `visibility_timeout`.
#[tokio::test]
async fn claims_go_on_while_they_come_back_full() {
    use hookgate::queue::{RouteKey, Transition};
    let redis = RedisServer::start();
    let a = queue_on(&redis);
    let route = RouteKey::new("tampa", "r");
    for i in 0..12 {
        a.enqueue(&route, &stored_entry(i)).await.unwrap();
    }
    let held = a.take(&route, 20, &Default::default(), now_ms()).await.unwrap().entries;
    assert_eq!(held.len(), 12);
    assert_eq!(a.hand_back(&held).await.unwrap(), 12);
    let b = queue_on(&redis);
    let mut got = Vec::new();
    for want in [5, 5, 2, 0] {
        let taken = b.take(&route, 5, &Default::default(), now_ms()).await.unwrap().entries;
        assert_eq!(taken.len(), want, "after {}", got.len());
        for e in &taken {
            b.finish(e, &Transition::Done).await.unwrap();
        }
        got.extend(ids_of(&taken));
    }
    got.sort_by_key(|id| id.trim_start_matches("batch-").parse::<u32>().unwrap());
    assert_eq!(got, (0..12).map(|i| format!("batch-{i}")).collect::<Vec<_>>());
}

/// Two replicas hold one head when one claimed it from the other (a slow
/// attempt outlived `visibility_timeout`). Whichever outcome comes first
/// counts; the other's changes nothing: a retry after the key was handed on
/// does not take the lease away from its new head, and a delivery after a
/// retry was scheduled does not hand the key on past the retry.
#[tokio::test]
async fn a_stale_replicas_outcome_of_a_head_changes_nothing() {
    use hookgate::queue::{RouteKey, State, Transition};
    let redis = RedisServer::start();
    let a = queue_on(&redis);
    let b = queue_with_visibility(&redis, Duration::from_millis(200));
    let route = RouteKey::new("tampa", "r");
    for i in 0..3 {
        a.enqueue(&route, &ordered_entry(i)).await.unwrap();
    }
    let retry = |attempts| Transition::Retry { due_ms: now_ms(), state: State { attempts, ..Default::default() } };

    // B delivers first and goes on; A's late retry changes nothing.
    let on_a = a.take(&route, 10, &Default::default(), now_ms()).await.unwrap().entries.remove(0);
    let on_b = take_some(&b, &route).await.entries.remove(0);
    assert_eq!((on_a.ident(), &on_b.entry.meta.id), (on_b.ident(), &"batch-0".to_owned()));
    let next = b.finish_then(&on_b, &Transition::Done, true).await.unwrap().expect("handed on");
    assert!(a.finish_then(&on_a, &retry(1), true).await.unwrap().is_none());
    assert_eq!(redis.cli(&["ZCARD", "t:{tampa:r}:d"]).trim(), "0", "no retry of batch-0 scheduled");
    assert!(a.finish_then(&on_a, &Transition::Done, true).await.unwrap().is_none(), "nor handed on twice");

    // Now A claims batch-1 from B and schedules a retry; B's late delivery
    // does not hand the key on to batch-2.
    let on_a = take_some(&queue_with_visibility(&redis, Duration::from_millis(200)), &route).await.entries.remove(0);
    assert_eq!(on_a.entry.meta.id, "batch-1");
    b.finish_then(&on_a, &retry(1), true).await.unwrap();
    assert_eq!(redis.cli(&["ZCARD", "t:{tampa:r}:d"]).trim(), "1", "batch-1's retry");
    assert!(b.finish_then(&next, &Transition::Done, true).await.unwrap().is_none(), "not handed on past the retry");
    assert_eq!(redis.cli(&["XLEN", "t:{tampa:r}:s"]).trim(), "0", "batch-2 still waits");

    // The retry comes back (its key's lease again), and the key goes on in order.
    let again = take_some(&a, &route).await.entries;
    assert_eq!(ids_of(&again), ["batch-1"]);
    assert_eq!(again[0].state.attempts, 1);
    let last = a.finish_then(&again[0], &Transition::Done, true).await.unwrap().expect("handed on");
    assert_eq!(last.entry.meta.id, "batch-2");
    assert!(a.finish_then(&last, &Transition::Done, true).await.unwrap().is_none());
    assert_eq!(a.depth(&route).await.unwrap(), (Default::default(), 0), "nothing left");
}

/// A key handed on from head to head keeps its lease alive: once held a
/// quarter of `visibility_timeout`, handing on claims it again, so no other
/// replica claims a key that is going on however long its chain.
#[tokio::test]
async fn a_lease_held_long_is_claimed_again_as_its_key_goes_on() {
    use hookgate::queue::{RouteKey, Transition};
    let redis = RedisServer::start();
    let a = queue_with_visibility(&redis, Duration::from_millis(800));
    let route = RouteKey::new("tampa", "r");
    for i in 0..2 {
        a.enqueue(&route, &ordered_entry(i)).await.unwrap();
    }
    let head = a.take(&route, 10, &Default::default(), now_ms()).await.unwrap().entries.remove(0);
    // Past a quarter of the timeout (200 ms), as an attempt would be.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let next = a.finish_then(&head, &Transition::Done, true).await.unwrap().expect("handed on");
    let pending = redis.cli(&["XPENDING", "t:{tampa:r}:s", "hookgate", "-", "+", "10"]);
    let idle: u64 = pending.lines().nth(2).and_then(|l| l.trim().parse().ok()).expect("an idle time");
    assert!(idle < 200, "the lease's idle time restarted: {pending}");
    assert!(next.leased().unwrap().elapsed() < Duration::from_millis(200), "and so did the handle's");
}

/// An orphan move and `hookgate queue move`'s export read a key's lease as
/// the head it holds now: the delivery handed on moves (with those waiting
/// behind it), the one that was done does not, and nothing is left.
#[tokio::test]
async fn a_held_lease_moves_and_exports_as_the_head_it_holds_now() {
    use hookgate::queue::{NewEntry, RouteKey, Transition};
    let redis = RedisServer::start();
    let q = queue_on(&redis);
    let held = |route: &RouteKey| {
        let (q, route) = (&q, route.clone());
        async move {
            for i in 0..3 {
                q.enqueue(&route, &ordered_entry(i)).await.unwrap();
            }
            let head = q.take(&route, 10, &Default::default(), now_ms()).await.unwrap().entries.remove(0);
            let next = q.finish_then(&head, &Transition::Done, true).await.unwrap().expect("handed on");
            assert_eq!(next.entry.meta.id, "batch-1");
        }
    };

    // An orphan moved to another route: batch-1 (held) and batch-2 (behind it).
    let (from, to) = (RouteKey::new("tampa", "old"), RouteKey::new("tampa", "new"));
    held(&from).await;
    assert_eq!(q.move_route(&from, &|_| to.clone()).await.unwrap(), 2);
    let mut moved = ids_of(&q.take(&to, 10, &Default::default(), now_ms()).await.unwrap().entries);
    moved.sort();
    assert_eq!(moved, ["batch-1", "batch-2"], "not batch-0, which was done");
    assert_eq!(q.depth(&from).await.unwrap(), (Default::default(), 0), "nothing left under the old route");

    // Exported for `hookgate queue move`, then removed: the same two.
    let route = RouteKey::new("tampa", "r");
    held(&route).await;
    let page = q.export(100).await.unwrap();
    let mut ids: Vec<_> = page
        .iter()
        .filter(|(item, _)| item.route == route)
        .map(|(item, _)| NewEntry::decode_meta(&item.entry).unwrap().id)
        .collect();
    ids.sort();
    assert_eq!(ids, ["batch-1", "batch-2"]);
    let locations: Vec<_> = page.into_iter().filter(|(item, _)| item.route == route).map(|(_, l)| l).collect();
    q.remove(&locations).await.unwrap();
    assert_eq!(q.depth(&route).await.unwrap(), (Default::default(), 0));
    let left = redis.cli(&["EXISTS", "t:{tampa:r}:oh", "t:{tampa:r}:ot", "t:{tampa:r}:on", "t:{tampa:r}:h"]);
    assert_eq!(left.trim(), "0", "no ordering state or record left: {left}");
}
