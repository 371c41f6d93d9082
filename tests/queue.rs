//! SPEC §5 in process: queue routes acknowledge once stored, deliver with
//! retries, dead-letter what the app refuses, and answer 503 when the store
//! cannot be written. The store is the real disk store in a temp directory.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;

/// One tampa source whose only route is a queue route to `upstream`.
fn queue_config(upstream: SocketAddr, dir: &Path, route_extra: &str, top_extra: &str) -> String {
    let retry = if route_extra.contains("retry =") {
        ""
    } else {
        r#"retry = { attempts = 4, backoff = "50ms", max_backoff = "200ms" }"#
    };
    let top = format!("[server]\nshutdown_grace = \"2s\"\n{top_extra}\n\n[queue]\npath = \"{}\"", dir.display());
    one_route_config(
        &top,
        &format!("http://{upstream}/hooks"),
        &format!("timeout = \"1s\"\ndelivery = \"queue\"\n{retry}\n{route_extra}"),
    )
}

async fn deliver(gw: &Gateway, id: &str) -> Reply {
    gw.deliver("tampa", &tampa_body(id, "dev.tampa.event.created"), Some(id), None).await
}

async fn queue_route(gw: &Gateway) -> serde_json::Value {
    gw.admin_json("/queue").await["routes"][0].clone()
}

#[tokio::test]
async fn acks_once_stored_then_delivers_with_the_sync_headers() {
    let dir = tempfile::tempdir().unwrap();
    let mut up = spawn_upstream(ok_upstream()).await;
    let gw = spawn_gateway(&queue_config(up.addr, dir.path(), "", "")).await;
    let body = tampa_body("q-1", "dev.tampa.event.created");
    let mut headers = gw.sign("tampa", &body, None, None);
    headers.extend(h(&[("X-Hookgate-Attempt", "99"), ("X-Custom", "kept")]));
    let r = send(&gw.url("/webhooks/tampa?a=1"), "POST", &headers, body.clone()).await;
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(r.json(), serde_json::json!({"ok": true, "queued": true, "id": "q-1"}));

    let got = up.next().await;
    assert_eq!(got.method, "POST");
    assert_eq!(got.uri, "/hooks?a=1", "query appended as on sync routes");
    assert_eq!(got.body, Bytes::from(body.clone()), "body byte for byte");
    let hd = &got.headers;
    assert_eq!(hd["x-hookgate-attempt"], "1");
    assert_eq!(hd.get_all("x-hookgate-attempt").iter().count(), 1, "the sender's X-Hookgate-Attempt is dropped");
    assert_eq!(hd["x-hookgate-verified"], "true");
    assert_eq!(hd["x-hookgate-source"], "tampa");
    assert_eq!(hd["x-hookgate-delivery-id"], "q-1");
    assert_eq!(hd["x-hookgate-event-type"], "dev.tampa.event.created");
    assert_eq!(hd["x-forwarded-for"], "127.0.0.1");
    assert_eq!(hd["x-custom"], "kept");
    assert!(hd.contains_key("x-webhook-signature"));

    // The claim was committed at enqueue: a resend is a duplicate, not a second delivery.
    let again = send(&gw.url("/webhooks/tampa?a=1"), "POST", &headers, body).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.headers["x-hookgate-duplicate"], "true");
    assert!(
        eventually(Duration::from_secs(5), async || {
            let r = queue_route(&gw).await;
            r["pending"] == 0 && r["in_flight"] == 0 && r["scheduled"] == 0
        })
        .await
    );
    assert_eq!(up.hits(), 1);
    let metrics = gw.metrics().await;
    // Queue metrics name the route by its identity (unnamed: a fingerprint of its events), SPEC §12.
    let route = queue_route(&gw).await["route"].as_str().unwrap().to_owned();
    assert!(route.starts_with('~') && route.len() == 17, "{route}");
    let attempts = format!(r#"hookgate_queue_attempts_total{{source="tampa",route="{route}",result="ok"}} 1"#);
    assert!(metrics.contains(&attempts), "{metrics}");
    assert!(metrics.contains(r#"hookgate_requests_total{source="tampa",outcome="queued"} 1"#), "{metrics}");
    let depth = format!(r#"hookgate_queue_depth{{source="tampa",route="{route}",state="pending"}} 0"#);
    assert!(metrics.contains(&depth), "{metrics}");
    gw.shutdown().await;
}

#[tokio::test]
async fn ack_status_200_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let up = spawn_upstream(ok_upstream()).await;
    let gw = spawn_gateway(&queue_config(up.addr, dir.path(), "ack_status = 200", "")).await;
    let r = deliver(&gw, "q-200").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), serde_json::json!({ "ok": true, "queued": true, "id": "q-200" }));
    gw.shutdown().await;
}

#[tokio::test]
async fn app_down_then_back_every_acked_delivery_arrives_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut up = spawn_upstream(Behavior::Answer(503, "down", Duration::ZERO)).await;
    let gw = spawn_gateway(&queue_config(
        up.addr,
        dir.path(),
        r#"retry = { attempts = 100, backoff = "20ms", max_backoff = "100ms" }"#,
        "",
    ))
    .await;
    let ids: Vec<String> = (0..20).map(|i| format!("down-{i}")).collect();
    for id in &ids {
        assert_eq!(deliver(&gw, id).await.status, 202);
    }
    // Failing attempts happen and are retried, none is dead.
    assert!(eventually(Duration::from_secs(5), async || up.hits() >= 40).await, "retries while down");
    let r = queue_route(&gw).await;
    assert_eq!(r["dead"], 0, "{r}");
    assert_eq!(
        r["pending"].as_u64().unwrap() + r["scheduled"].as_u64().unwrap() + r["in_flight"].as_u64().unwrap(),
        20,
        "{r}"
    );
    up.drain();
    up.set(ok_upstream());
    let mut delivered = std::collections::HashMap::<String, Vec<String>>::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while delivered.len() < ids.len() && Instant::now() < deadline {
        if let Ok(Some(got)) = tokio::time::timeout(Duration::from_millis(200), up.rx.recv()).await {
            let id = got.headers["x-hookgate-delivery-id"].to_str().unwrap().to_owned();
            let attempt = got.headers["x-hookgate-attempt"].to_str().unwrap().to_owned();
            delivered.entry(id).or_default().push(attempt);
        }
    }
    assert_eq!(delivered.len(), ids.len(), "every acked delivery arrives");
    // Requests sent while the upstream was switching may still have been answered 503;
    // what matters is that each ID got exactly one 2xx: the queue is then empty.
    assert!(
        eventually(Duration::from_secs(5), async || {
            let r = queue_route(&gw).await;
            r["pending"] == 0 && r["scheduled"] == 0 && r["in_flight"] == 0
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let late = up.drain();
    assert!(late.is_empty(), "nothing is delivered again after its 2xx: {late:?}");
    for attempts in delivered.values() {
        let n: u32 = attempts.last().unwrap().parse().unwrap();
        assert!(n >= 2, "delivered on a later attempt after failures: {attempts:?}");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn refused_is_dead_at_once_then_retried_from_the_admin_api() {
    let dir = tempfile::tempdir().unwrap();
    let mut up = spawn_upstream(Behavior::Answer(422, "no", Duration::ZERO)).await;
    let gw = spawn_gateway(&queue_config(up.addr, dir.path(), "", "")).await;
    assert_eq!(deliver(&gw, "bad-1").await.status, 202);
    assert!(eventually(Duration::from_secs(5), async || queue_route(&gw).await["dead"] == 1).await);
    assert_eq!(up.hits(), 1, "a 4xx is not retried");
    let dead = gw.admin_json("/queue/dead").await;
    let item = &dead["items"][0];
    assert_eq!(item["source"], "tampa");
    assert_eq!(item["route"], queue_route(&gw).await["route"]);
    assert!(item["route"].as_str().unwrap().starts_with('~'));
    assert_eq!(item["id"], "bad-1");
    assert_eq!(item["event_type"], "dev.tampa.event.created");
    assert_eq!(item["attempts"], 1);
    assert_eq!(item["last_status"], 422);
    assert!(item["last_error"].as_str().unwrap().contains("422"));
    assert!(item["received_at"].as_str().unwrap().ends_with('Z'));
    assert!(item["dead_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(dead["next"], serde_json::Value::Null);
    let entry = item["entry"].as_str().unwrap().to_owned();
    up.next().await;

    // Unknown entries are 404.
    let admin = |p: &str| format!("http://{}{p}", gw.admin);
    assert_eq!(send(&admin("/queue/dead/999999/retry"), "POST", &[], "").await.status, 404);
    assert_eq!(send(&admin("/queue/dead/nope"), "DELETE", &[], "").await.status, 404);

    // Retry: pending again with attempts reset, then delivered.
    up.set(ok_upstream());
    let r = send(&admin(&format!("/queue/dead/{entry}/retry")), "POST", &[], "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let got = up.next().await;
    assert_eq!(got.headers["x-hookgate-delivery-id"], "bad-1");
    assert_eq!(got.headers["x-hookgate-attempt"], "1", "attempts reset");
    assert!(eventually(Duration::from_secs(5), async || queue_route(&gw).await["dead"] == 0).await);
    assert_eq!(gw.admin_json("/queue/dead").await["items"].as_array().unwrap().len(), 0);
    gw.shutdown().await;
}

#[tokio::test]
async fn attempts_used_up_is_dead_and_retry_all_and_delete_work() {
    let dir = tempfile::tempdir().unwrap();
    let mut up = spawn_upstream(Behavior::Answer(500, "broken", Duration::ZERO)).await;
    let gw = spawn_gateway(&queue_config(
        up.addr,
        dir.path(),
        r#"retry = { attempts = 3, backoff = "10ms", max_backoff = "20ms" }"#,
        "",
    ))
    .await;
    for i in 0..3 {
        assert_eq!(deliver(&gw, &format!("used-{i}")).await.status, 202);
    }
    assert!(eventually(Duration::from_secs(5), async || queue_route(&gw).await["dead"] == 3).await);
    assert_eq!(up.hits(), 9, "3 attempts each, the first included");
    let dead = gw.admin_json("/queue/dead?limit=2").await;
    let page1: Vec<_> = dead["items"].as_array().unwrap().iter().map(|i| i["attempts"].clone()).collect();
    assert_eq!(page1, [3, 3]);
    let next = dead["next"].as_str().unwrap().to_owned();
    let dead2 = gw.admin_json(&format!("/queue/dead?limit=2&cursor={next}")).await;
    assert_eq!(dead2["items"].as_array().unwrap().len(), 1);
    assert_eq!(dead2["next"], serde_json::Value::Null);
    assert_eq!(gw.admin_json("/queue/dead?source=other").await["items"].as_array().unwrap().len(), 0);

    // Delete one; retry the rest.
    let entry = dead["items"][0]["entry"].as_str().unwrap().to_owned();
    let deleted_id = dead["items"][0]["id"].as_str().unwrap().to_owned();
    let admin = |p: &str| format!("http://{}{p}", gw.admin);
    assert_eq!(send(&admin(&format!("/queue/dead/{entry}")), "DELETE", &[], "").await.status, 204);
    // The delivery log no longer calls it dead (SPEC §17, the dashboard's list).
    let logged = gw.admin_json(&format!("/deliveries?id={deleted_id}")).await["items"][0].clone();
    assert_eq!(logged["queue_state"], "deleted", "{logged}");
    up.drain();
    up.set(ok_upstream());
    let r = send(&admin("/queue/dead/retry?source=tampa"), "POST", &[], "").await;
    assert_eq!(r.json(), serde_json::json!({"retried": 2}));
    assert!(eventually(Duration::from_secs(5), async || up.hits() == 11).await, "the two retried are delivered");
    assert!(eventually(Duration::from_secs(5), async || queue_route(&gw).await["dead"] == 0).await);
    gw.shutdown().await;
}

/// A retry due at once (no backoff) is attempted at once. The take that
/// follows an attempt's freed slot can run after the attempt recorded the
/// retry but before the worker reaped it: it skips the entry as in flight and
/// comes back short, and the worker used to sleep until the store's idle
/// check (5 s on disk) before looking again.
#[tokio::test]
async fn a_retry_due_at_once_is_not_left_for_the_idle_check() {
    let dir = tempfile::tempdir().unwrap();
    let up = spawn_upstream(Behavior::Answer(500, "broken", Duration::ZERO)).await;
    let gw = spawn_gateway(&queue_config(
        up.addr,
        dir.path(),
        "retry = { attempts = 4, backoff = \"0ms\", max_backoff = \"0ms\" }\nconcurrency = 1",
        "",
    ))
    .await;
    let started = std::time::Instant::now();
    assert_eq!(deliver(&gw, "now-1").await.status, 202);
    assert!(eventually(Duration::from_secs(10), async || queue_route(&gw).await["dead"] == 1).await);
    assert_eq!(up.hits(), 4);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "4 attempts without backoff took {took:?}");
    gw.shutdown().await;
}

#[tokio::test]
async fn retry_after_on_429_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let mut up = spawn_upstream(Behavior::AnswerWith(429, "slow down", &[("retry-after", "1")])).await;
    let gw = spawn_gateway(&queue_config(
        up.addr,
        dir.path(),
        r#"retry = { attempts = 5, backoff = "10ms", max_backoff = "10s" }"#,
        "",
    ))
    .await;
    assert_eq!(deliver(&gw, "ra-1").await.status, 202);
    up.next().await;
    let first = Instant::now();
    up.set(ok_upstream());
    let second = up.next().await;
    assert_eq!(second.headers["x-hookgate-attempt"], "2");
    assert!(first.elapsed() >= Duration::from_millis(900), "waited {:?}, Retry-After says 1 s", first.elapsed());
    gw.shutdown().await;
}

#[tokio::test]
async fn concurrency_bounds_attempts_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let up = spawn_upstream(Behavior::Answer(200, "ok", Duration::from_millis(100))).await;
    let gw = spawn_gateway(&queue_config(up.addr, dir.path(), "concurrency = 2", "")).await;
    for i in 0..8 {
        assert_eq!(deliver(&gw, &format!("c-{i}")).await.status, 202);
    }
    assert!(eventually(Duration::from_secs(10), async || up.hits() == 8).await);
    assert_eq!(up.max_concurrent(), 2, "at most `concurrency` attempts at once");
    gw.shutdown().await;
}

#[tokio::test]
async fn unwritable_store_answers_503_and_releases_the_claim() {
    // A directory that cannot be created: its parent is a regular file (root ignores modes).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let up = spawn_upstream(ok_upstream()).await;
    let gw = spawn_gateway(&queue_config(up.addr, &file.join("queue"), "", "")).await;
    let r = deliver(&gw, "nowhere-1").await;
    assert_eq!((r.status.as_u16(), r.error_code().as_str()), (503, "queue_unavailable"));
    assert!(r.headers.contains_key("retry-after"));
    let ready = send(&format!("http://{}/readyz", gw.admin), "GET", &[], "").await;
    assert_eq!(ready.status, 503, "{}", ready.text());
    // A store that never opened has no counts to show: /queue says so instead of zeros.
    let queue = send(&format!("http://{}/queue", gw.admin), "GET", &[], "").await;
    assert_eq!((queue.status.as_u16(), queue.error_code().as_str()), (503, "queue_unavailable"), "{}", queue.text());
    // The claim was released: the same delivery is not a duplicate or in flight.
    let r = deliver(&gw, "nowhere-1").await;
    assert_eq!(r.status, 503);
    assert_eq!(up.hits(), 0);
    gw.shutdown().await;
}

#[tokio::test]
async fn stored_deliveries_survive_a_restart_of_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    // Paused (concurrency = 0): everything stays stored, none is attempted.
    let dead = dead_addr().await;
    let gw = spawn_gateway(&queue_config(dead, dir.path(), "concurrency = 0", "")).await;
    for i in 0..5 {
        assert_eq!(deliver(&gw, &format!("keep-{i}")).await.status, 202);
    }
    gw.shutdown().await;
    // Give the store thread of the first gateway time to close its database.
    let mut up = spawn_upstream(ok_upstream()).await;
    let text = queue_config(up.addr, dir.path(), "", "");
    let mut gw2 = None;
    for _ in 0..50 {
        let g = spawn_gateway(&text).await;
        if eventually(Duration::from_secs(1), async || g.app.queue.as_ref().unwrap().store.ready().await).await {
            gw2 = Some(g);
            break;
        }
        g.shutdown().await;
    }
    let gw2 = gw2.expect("the store opens again");
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 5 {
        let got = up.next().await;
        seen.insert(got.headers["x-hookgate-delivery-id"].to_str().unwrap().to_owned());
    }
    assert_eq!(seen.len(), 5);
    gw2.shutdown().await;
}

#[test]
fn queue_routes_need_a_queue_table_and_valid_keys() {
    let text = r#"
[sources.a]
path = "/a"
provider = "github"
secrets = ["s"]
[[sources.a.routes]]
events = ["*"]
upstream = "http://127.0.0.1:1/x"
delivery = "queue"
ack_status = 201
concurrency = 10001
retry = { attempts = 0, backoff = "1m", max_backoff = "1s", bogus = 1 }
[[sources.a.routes]]
events = ["*"]
upstream = "http://127.0.0.1:1/y"
ack_status = 200
"#;
    let errs = hookgate::config::load_str(text, &|_| None).unwrap_err().to_string();
    for want in [
        "sources.a.routes[0].delivery: \"queue\" needs a [queue] table",
        "sources.a.routes[0].ack_status: must be 200 or 202",
        "sources.a.routes[0].concurrency: must be between 0 (paused) and",
        "sources.a.routes[0].retry.attempts: must be between 1 and 1000",
        "sources.a.routes[0].retry.backoff: must not be longer than max_backoff",
        "sources.a.routes[0].retry.bogus: unknown key",
        "sources.a.routes[1].ack_status: applies to delivery = \"queue\" routes only",
    ] {
        assert!(errs.contains(want), "missing {want:?} in\n{errs}");
    }
    let bad_queue = "[queue]\nstore = \"tape\"\nsync = \"sometimes\"\nvisibility_timeout = \"0s\"\n".to_owned()
        + &text.replace("ack_status = 201\nconcurrency = 10001\n", "").replace(", bogus = 1", "");
    let errs = hookgate::config::load_str(&bad_queue, &|_| None).unwrap_err().to_string();
    for want in ["queue.store: invalid value \"tape\"", "queue.visibility_timeout: must be more than 0"] {
        assert!(errs.contains(want), "missing {want:?} in\n{errs}");
    }
}

#[tokio::test]
async fn concurrency_zero_holds_deliveries_until_a_reload_raises_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut up = spawn_upstream(ok_upstream()).await;
    let paused = queue_config(up.addr, dir.path(), "concurrency = 0", "");
    let gw = spawn_gateway(&paused).await;
    for i in 0..3 {
        assert_eq!(deliver(&gw, &format!("held-{i}")).await.status, 202);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(up.hits(), 0, "paused: nothing is attempted");
    assert_eq!(queue_route(&gw).await["pending"], 3);
    gw.app.reload(config(&paused.replace("concurrency = 0", "concurrency = 4"))).unwrap();
    for _ in 0..3 {
        up.next().await;
    }
    assert!(eventually(Duration::from_secs(5), async || queue_route(&gw).await["pending"] == 0).await);
    gw.shutdown().await;
}
