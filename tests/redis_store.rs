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
    })
    .unwrap()
}

#[tokio::test]
async fn commit_and_release_never_touch_a_claim_that_is_not_ours() {
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
    // The slow one finishes late: neither release nor commit may touch the new claim.
    slow.release(&key, &slow_token).await.unwrap();
    assert_eq!(redis.cli(&["GET", "t:src:id1"]), fast_token);
    slow.commit(&key, &slow_token, Duration::from_secs(60)).await.unwrap();
    assert_eq!(redis.cli(&["GET", "t:src:id1"]), fast_token);
    // The owner's commit works and sets the delivered TTL.
    fast.commit(&key, &fast_token, Duration::from_secs(3600)).await.unwrap();
    assert_eq!(redis.cli(&["GET", "t:src:id1"]), "d");
    let ttl: i64 = redis.cli(&["PTTL", "t:src:id1"]).parse().unwrap();
    assert!(ttl > 3_500_000, "{ttl}");
    assert_eq!(slow.claim(&key, Duration::from_secs(1)).await.unwrap(), Err(Seen::Delivered));
    // Release of our own claim frees the ID.
    let k2 = fast.key("src", "id2");
    let t2 = fast.claim(&k2, Duration::from_secs(60)).await.unwrap().unwrap();
    fast.release(&k2, &t2).await.unwrap();
    assert_eq!(redis.cli(&["EXISTS", "t:src:id2"]), "0");
}

/// Top-level calls of `command` since the last `CONFIG RESETSTAT` (INFO commandstats).
fn calls(redis: &RedisServer, command: &str) -> u64 {
    redis
        .cli(&["INFO", "commandstats"])
        .lines()
        .find(|l| l.starts_with(&format!("cmdstat_{command}:")))
        .and_then(|l| l.split("calls=").nth(1))
        .and_then(|s| s.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn round_trips_per_delivery() {
    let redis = RedisServer::start();
    let up = spawn_upstream(ok_upstream()).await;
    let gw = spawn_gateway(&redis_config(up.addr, &redis.url(), "")).await;
    // Warm up: loads the scripts into the server's cache.
    gw.deliver("tampa", &tampa_body("warm", "x"), None, None).await;
    redis.cli(&["CONFIG", "RESETSTAT"]);
    let body = tampa_body("evt_rt", "x");
    assert_eq!(gw.deliver("tampa", &body, None, None).await.status, 200);
    assert_eq!(calls(&redis, "evalsha"), 2, "fresh delivery: claim + commit");
    redis.cli(&["CONFIG", "RESETSTAT"]);
    assert_eq!(gw.deliver("tampa", &body, None, None).await.headers["x-hookgate-duplicate"], "true");
    assert_eq!(calls(&redis, "evalsha"), 1, "duplicate: one round trip");
    assert_eq!(calls(&redis, "eval"), 0, "no script reloads once cached");
    gw.shutdown().await;
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
