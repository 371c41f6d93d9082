//! The Redis dedupe store against real `redis-server` processes (SPEC §3,
//! issue #3): replicas, restarts, failures, claim ownership, Redis Cluster.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

mod common;

use std::time::Duration;

use common::redis::{RedisCluster, RedisServer};
use common::*;
use hookgate::config::{RedisConfig, RedisTarget};
use hookgate::dedupe::redis::RedisStore;
use hookgate::dedupe::{DedupeStore, Seen};

fn redis_config(upstream: std::net::SocketAddr, redis_url: &str, extra: &str) -> String {
    tampa_config(
        upstream,
        "",
        &format!(
            "[dedupe]\nstore = \"redis\"\nclaim_ttl = \"2s\"\n{extra}\n[dedupe.redis]\nurl = \"{redis_url}\"\ntimeout = \"500ms\"\n"
        ),
    )
}

#[tokio::test]
async fn duplicate_detected_across_a_gateway_restart() {
    let redis = RedisServer::start();
    let up = spawn_upstream(ok_upstream()).await;
    let cfg = redis_config(up.addr, &redis.url(), "");
    let body = tampa_body("evt_restart", "x");
    let gw = spawn_gateway(&cfg).await;
    assert_eq!(gw.deliver("tampa", &body, None, None).await.status, 200);
    gw.shutdown().await;
    let gw = spawn_gateway(&cfg).await;
    let r = gw.deliver("tampa", &body, None, None).await;
    assert_eq!(r.headers["x-hookgate-duplicate"], "true");
    assert_eq!(up.hits(), 1);
    assert_eq!(redis.cli(&["GET", "hookgate:tampa:evt_restart"]), "d");
    let ttl: i64 = redis.cli(&["PTTL", "hookgate:tampa:evt_restart"]).parse().unwrap();
    assert!(ttl > 86_000_000 && ttl <= 86_400_000, "delivered TTL is dedupe.ttl: {ttl}");
    gw.shutdown().await;
}

#[tokio::test]
async fn two_instances_dedupe_each_other_and_fifty_copies_reach_upstream_once() {
    let redis = RedisServer::start();
    let up = spawn_upstream(Behavior::Answer(200, "ok", Duration::from_millis(200))).await;
    let cfg = redis_config(up.addr, &redis.url(), "");
    let (a, b) = (spawn_gateway(&cfg).await, spawn_gateway(&cfg).await);

    let body = tampa_body("evt_shared", "x");
    assert_eq!(a.deliver("tampa", &body, None, None).await.status, 200);
    assert_eq!(b.deliver("tampa", &body, None, None).await.headers["x-hookgate-duplicate"], "true");

    let body = tampa_body("evt_storm", "x");
    let headers = a.sign("tampa", &body, None, None);
    let urls = [a.url("/webhooks/tampa"), b.url("/webhooks/tampa")];
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let (url, headers, body) = (urls[i % 2].clone(), headers.clone(), body.clone());
            tokio::spawn(async move { send(&url, "POST", &headers, body).await.status.as_u16() })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    assert_eq!(up.hits(), 2, "one per delivery ID: {statuses:?}");
    assert!(statuses.iter().all(|s| *s == 200 || *s == 409), "{statuses:?}");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn redis_down_rejects_then_recovers_without_restart() {
    let mut redis = RedisServer::start();
    let up = spawn_upstream(ok_upstream()).await;
    let gw = spawn_gateway(&redis_config(up.addr, &redis.url(), "on_store_error = \"reject\"")).await;
    assert_eq!(gw.deliver("tampa", &tampa_body("before", "x"), None, None).await.status, 200);
    let ready = format!("http://{}/readyz", gw.admin);
    assert_eq!(send(&ready, "GET", &[], "").await.status, 200);

    redis.kill();
    let r = gw.deliver("tampa", &tampa_body("during", "x"), None, None).await;
    assert_eq!((r.status.as_u16(), r.error_code().as_str()), (503, "store_unavailable"));
    assert!(r.headers.contains_key("retry-after"));
    assert_eq!(up.hits(), 1, "not forwarded while the store is down");
    assert_eq!(send(&ready, "GET", &[], "").await.status, 503);
    assert!(gw.metrics().await.contains("hookgate_store_errors_total 1"));

    redis.restart();
    let recovered = eventually(Duration::from_secs(15), async || {
        gw.deliver("tampa", &tampa_body("after", "x"), None, None).await.status == 200
    })
    .await;
    assert!(recovered, "gateway reconnects to Redis by itself");
    assert_eq!(send(&ready, "GET", &[], "").await.status, 200);
    let r = gw.deliver("tampa", &tampa_body("after", "x"), None, None).await;
    assert_eq!(r.headers["x-hookgate-duplicate"], "true");
    gw.shutdown().await;
}

#[tokio::test]
async fn redis_down_with_allow_forwards_undeduped() {
    let mut redis = RedisServer::start();
    let up = spawn_upstream(ok_upstream()).await;
    let gw = spawn_gateway(&redis_config(up.addr, &redis.url(), "on_store_error = \"allow\"")).await;
    redis.kill();
    let body = tampa_body("allowed", "x");
    assert_eq!(gw.deliver("tampa", &body, None, None).await.status, 200);
    assert_eq!(gw.deliver("tampa", &body, None, None).await.status, 200);
    assert_eq!(up.hits(), 2, "forwarded without dedupe");
    let m = gw.metrics().await;
    assert!(m.contains("hookgate_undeduped_forwards_total 2"), "{m}");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_crashed_replicas_claim_expires_and_the_retry_goes_through() {
    let redis = RedisServer::start();
    let up = spawn_upstream(ok_upstream()).await;
    let gw = spawn_gateway(&redis_config(up.addr, &redis.url(), "")).await;
    // A replica claimed this ID and died before finishing.
    assert_eq!(redis.cli(&["SET", "hookgate:tampa:evt_crash", "c:dead:1", "PX", "700"]), "OK");
    let body = tampa_body("evt_crash", "x");
    assert_eq!(gw.deliver("tampa", &body, None, None).await.status, 409);
    let through =
        eventually(Duration::from_secs(5), async || gw.deliver("tampa", &body, None, None).await.status == 200).await;
    assert!(through);
    assert_eq!(up.hits(), 1);
    gw.shutdown().await;
}

fn store(url: &str) -> RedisStore {
    RedisStore::new(&RedisConfig {
        target: RedisTarget::Single(url.to_owned()),
        key_prefix: "t:".into(),
        timeout: Duration::from_secs(1),
        roots: None,
    })
    .unwrap()
}

#[tokio::test]
async fn release_never_touches_a_claim_that_is_not_ours_and_commit_always_marks_delivered() {
    let redis = RedisServer::start();
    let (slow, fast) = (store(&redis.url()), store(&redis.url()));
    let key = slow.key("src", "id1");
    assert_eq!(key, "t:src:id1");
    let slow_token = slow.claim(&key, Duration::from_millis(100)).await.unwrap().unwrap();
    assert_eq!(fast.claim(&key, Duration::from_secs(60)).await.unwrap(), Err(Seen::InFlight));
    // The slow replica's claim expires; another replica claims the ID.
    let expired = eventually(Duration::from_secs(3), async || redis.cli(&["EXISTS", "t:src:id1"]) == "0").await;
    assert!(expired);
    let fast_token = fast.claim(&key, Duration::from_secs(60)).await.unwrap().unwrap();
    assert_ne!(slow_token, fast_token);
    // The slow one fails late: its release must not touch the new claim.
    slow.release(&key, &slow_token).await.unwrap();
    assert_eq!(redis.cli(&["GET", "t:src:id1"]), fast_token);
    // The new owner's upstream fails: its release frees the ID again.
    fast.release(&key, &fast_token).await.unwrap();
    assert_eq!(redis.cli(&["EXISTS", "t:src:id1"]), "0");
    // A late commit marks the ID delivered whoever holds it, with the delivered TTL,
    // and a newer claim's release after that leaves the delivery in place.
    let newer = fast.claim(&key, Duration::from_secs(60)).await.unwrap().unwrap();
    slow.commit(&key, &slow_token, Duration::from_secs(3600)).await.unwrap();
    assert_eq!(redis.cli(&["GET", "t:src:id1"]), "d");
    let ttl: i64 = redis.cli(&["PTTL", "t:src:id1"]).parse().unwrap();
    assert!(ttl > 3_500_000, "{ttl}");
    fast.release(&key, &newer).await.unwrap();
    assert_eq!(slow.claim(&key, Duration::from_secs(1)).await.unwrap(), Err(Seen::Delivered));
    // Release of our own claim frees the ID.
    let k2 = fast.key("src", "id2");
    let t2 = fast.claim(&k2, Duration::from_secs(60)).await.unwrap().unwrap();
    fast.release(&k2, &t2).await.unwrap();
    assert_eq!(redis.cli(&["EXISTS", "t:src:id2"]), "0");
}

/// Watches `MONITOR` and counts the commands clients send for `key`: one per
/// round trip (commands a script runs inside Redis are marked `lua]` and skipped).
struct Monitor {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Monitor {
    fn start(redis: &RedisServer) -> Self {
        use std::io::BufRead;
        let mut child = std::process::Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &redis.port.to_string(), "monitor"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        // MONITOR answers OK first.
        assert_eq!(lines.recv_timeout(Duration::from_secs(5)).unwrap(), "OK");
        Monitor { child, lines }
    }

    /// Top-level commands on `key` seen until `PING` marks the end.
    fn commands_until_ping(&self, redis: &RedisServer, key: &str) -> Vec<String> {
        redis.cli(&["PING"]);
        let mut seen = Vec::new();
        loop {
            let line = self.lines.recv_timeout(Duration::from_secs(5)).expect("monitor line");
            if line.contains("\"PING\"") {
                return seen;
            }
            if line.contains(key) && !line.contains("lua]") {
                seen.push(line);
            }
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn round_trips_per_delivery() {
    let redis = RedisServer::start();
    let up = spawn_upstream(ok_upstream()).await;
    let gw = spawn_gateway(&redis_config(up.addr, &redis.url(), "")).await;
    // Warm up: connects, so the count below holds only this delivery's commands.
    gw.deliver("tampa", &tampa_body("warm", "x"), None, None).await;
    let monitor = Monitor::start(&redis);
    let body = tampa_body("evt_rt", "x");
    assert_eq!(gw.deliver("tampa", &body, None, None).await.status, 200);
    let fresh = monitor.commands_until_ping(&redis, "hookgate:tampa:evt_rt");
    assert_eq!(fresh.len(), 2, "fresh delivery: claim + commit: {fresh:#?}");
    assert!(fresh[0].contains("\"SET\"") && fresh[0].contains("\"NX\"") && fresh[0].contains("\"GET\""), "{fresh:#?}");
    assert!(fresh[1].contains("\"SET\"") && fresh[1].contains("\"d\"") && !fresh[1].contains("\"NX\""), "{fresh:#?}");
    assert_eq!(gw.deliver("tampa", &body, None, None).await.headers["x-hookgate-duplicate"], "true");
    let dup = monitor.commands_until_ping(&redis, "hookgate:tampa:evt_rt");
    assert_eq!(dup.len(), 1, "duplicate: one round trip: {dup:#?}");
    gw.shutdown().await;
}

/// The claim script (used when a server refuses `SET NX GET`, Redis < 7) keeps
/// the same semantics as the plain command.
#[tokio::test]
async fn script_claims_behave_like_set_nx_get() {
    let redis = RedisServer::start();
    let s = store(&redis.url());
    s.use_script_claims();
    let monitor = Monitor::start(&redis);
    let key = s.key("src", "fb");
    let t = s.claim(&key, Duration::from_secs(60)).await.unwrap().unwrap();
    assert_eq!(redis.cli(&["GET", "t:src:fb"]), t);
    assert_eq!(s.claim(&key, Duration::from_secs(60)).await.unwrap(), Err(Seen::InFlight));
    s.commit(&key, &t, Duration::from_secs(60)).await.unwrap();
    assert_eq!(s.claim(&key, Duration::from_secs(60)).await.unwrap(), Err(Seen::Delivered));
    let sent = monitor.commands_until_ping(&redis, "t:src:fb");
    // Claims went by script only; the one plain SET is the commit.
    let (sets, scripts): (Vec<_>, Vec<_>) = sent.iter().partition(|l| l.contains("\"SET\""));
    assert_eq!(sets.len(), 1, "{sent:#?}");
    assert!(!sets[0].contains("\"NX\""), "{sent:#?}");
    // (The one plain GET is this test's own `redis-cli GET` above.)
    let claims = scripts.iter().filter(|l| l.contains("\"EVAL")).count();
    assert!(claims >= 3 && scripts.len() == claims + 1, "{sent:#?}");
}

#[tokio::test]
async fn redis_cluster_dedupes_across_slots() {
    let cluster = RedisCluster::start();
    let up = spawn_upstream(ok_upstream()).await;
    let nodes: Vec<String> = cluster.urls().iter().map(|u| format!("\"{u}\"")).collect();
    let cfg = tampa_config(
        up.addr,
        "",
        &format!("[dedupe]\nstore = \"redis\"\n[dedupe.redis]\ncluster = [{}]\ntimeout = \"2s\"\n", nodes.join(", ")),
    );
    let (a, b) = (spawn_gateway(&cfg).await, spawn_gateway(&cfg).await);
    for i in 0..20 {
        let body = tampa_body(&format!("cl-{i}"), "x");
        let r = a.deliver("tampa", &body, None, None).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(b.deliver("tampa", &body, None, None).await.headers["x-hookgate-duplicate"], "true");
    }
    assert_eq!(up.hits(), 20);
    // Keys are spread over the masters, each on the node that owns its slot.
    let counts: Vec<u64> = cluster.nodes.iter().map(|n| n.cli(&["DBSIZE"]).parse().unwrap()).collect();
    assert_eq!(counts.iter().sum::<u64>(), 20, "{counts:?}");
    assert!(counts.iter().filter(|c| **c > 0).count() >= 2, "{counts:?}");
    a.shutdown().await;
    b.shutdown().await;
}

/// `rate_limit.scope = "cluster"`: two replicas on one Redis share one limit;
/// with Redis gone, each falls back to its own limiter (429, not 503).
#[tokio::test]
async fn cluster_wide_rate_limit_is_shared_by_replicas() {
    let mut redis = RedisServer::start();
    let up = spawn_upstream(ok_upstream()).await;
    let top = format!("[dedupe]\nstore = \"redis\"\n[dedupe.redis]\nurl = \"{}\"\ntimeout = \"300ms\"\n", redis.url());
    let limit = "rate_limit = { per_second = 2, burst = 4, scope = \"cluster\" }";
    let text = tampa_config(up.addr, limit, &top);
    let a = spawn_gateway(&text).await;
    let b = spawn_gateway(&text).await;
    let started = std::time::Instant::now();
    let mut passed = 0;
    let mut limited = [0, 0];
    for i in 0..16 {
        let (gw, which) = if i % 2 == 0 { (&a, 0) } else { (&b, 1) };
        let r = gw.deliver("tampa", &tampa_body(&format!("rl-{i}"), "x"), Some(&format!("rl-{i}")), None).await;
        match r.status.as_u16() {
            200 => passed += 1,
            429 => {
                assert!(r.headers.contains_key("retry-after"));
                limited[which] += 1;
            }
            other => panic!("unexpected {other}: {}", r.text()),
        }
    }
    let allowed = 4 + (started.elapsed().as_secs_f64() * 2.0).ceil() as usize;
    assert!(
        passed <= allowed,
        "{passed} passed, the shared limit allows {allowed} (each replica alone would pass 4 more)"
    );
    assert!(limited[0] > 0 && limited[1] > 0, "both replicas enforce it: {limited:?}");

    // Redis gone: the local limiter stands in (burst 4 per replica). The
    // deliveries it lets through then meet the dedupe store, also in Redis: 503.
    redis.kill();
    let mut statuses = Vec::new();
    for i in 0..6 {
        let r =
            a.deliver("tampa", &tampa_body(&format!("rl-down-{i}"), "x"), Some(&format!("rl-down-{i}")), None).await;
        statuses.push(r.status.as_u16());
    }
    assert!(statuses.contains(&429), "still limited without Redis: {statuses:?}");
    assert!(statuses.iter().all(|s| *s == 429 || *s == 503), "{statuses:?}");
    assert!(statuses.iter().filter(|s| **s == 503).count() >= 3, "the local burst let some through: {statuses:?}");
    a.shutdown().await;
    b.shutdown().await;
}

#[test]
fn cluster_scope_needs_the_redis_dedupe_store() {
    let text = "[sources.a]\npath = \"/a\"\nprovider = \"github\"\nsecrets = [\"s\"]\nrate_limit = { per_second = 1, scope = \"cluster\" }\n";
    let errs = hookgate::config::load_str(text, &|_| None).unwrap_err().to_string();
    assert!(errs.contains("sources.a.rate_limit.scope: \"cluster\" keeps the limit in the dedupe Redis"), "{errs}");
    let bad = text.replace("\"cluster\"", "\"galaxy\"");
    let errs = hookgate::config::load_str(&bad, &|_| None).unwrap_err().to_string();
    assert!(errs.contains("sources.a.rate_limit.scope: invalid value \"galaxy\""), "{errs}");
}
