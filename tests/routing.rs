//! SPEC §14 end to end, with real upstreams: filters choose routes, fan-out
//! delivers to every route and a sender's retry reaches only the routes that
//! failed (memory and Redis dedupe, disk and Redis queues), transforms reshape
//! bodies (and are re-signed), route headers are set and removed.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use common::redis::RedisServer;
use common::*;

/// A tampa body (its ID and type are signed) with `data` as its data.
fn body(id: &str, event_type: &str, data: &str) -> String {
    format!(
        r#"{{"id":"{id}","type":"{event_type}","timestamp":"{}","data":{data}}}"#,
        humantime::format_rfc3339_seconds(SystemTime::now())
    )
}

/// `top`, then a tampa source with `source_extra` keys and `routes` (route tables).
fn tampa(top: &str, source_extra: &str, routes: &str) -> String {
    format!(
        r#"{top}

[sources.tampa]
path = "/webhooks/tampa"
provider = "tampa"
secrets = ["{SECRET}"]
{source_extra}
{routes}
"#
    )
}

fn route(name: &str, upstream: SocketAddr, extra: &str) -> String {
    format!(
        "[[sources.tampa.routes]]\nname = \"{name}\"\nupstream = \"http://{upstream}/{name}\"\ntimeout = \"2s\"\n{extra}\n"
    )
}

/// A signed delivery with `extra` request headers.
async fn deliver_with(gw: &Gateway, body: &str, extra: &[(&str, &str)]) -> Reply {
    let mut headers = gw.sign("tampa", body, None, None);
    headers.extend(h(extra));
    send(&gw.url("/webhooks/tampa"), "POST", &headers, body.to_owned()).await
}

#[tokio::test]
async fn filters_choose_the_route_by_body_and_headers() {
    let (mut prod, mut big, mut rest) =
        (spawn_upstream(ok_upstream()).await, spawn_upstream(ok_upstream()).await, spawn_upstream(ok_upstream()).await);
    let routes = [
        route("prod", prod.addr, "events = [\"*\"]\nfilter = { \"header:X-Tenant\" = { prefix = \"acme-\" } }"),
        route(
            "big",
            big.addr,
            r#"events = ["invoice.*"]
filter = { "json:/data/currency" = "usd", "json:/data/amount" = { gt = 0 }, "json:/data/test" = { exists = false } }"#,
        ),
        route("rest", rest.addr, "events = [\"*\"]"),
    ]
    .concat();
    let gw = spawn_gateway(&tampa("", "", &routes)).await;

    let cases = [
        ("f1", "invoice.paid", r#"{"currency":"usd","amount":100}"#, "big"),
        ("f2", "invoice.paid", r#"{"currency":"eur","amount":100}"#, "rest"),
        ("f3", "invoice.paid", r#"{"currency":"usd","amount":0}"#, "rest"),
        ("f4", "invoice.paid", r#"{"amount":100}"#, "rest"),
        ("f5", "invoice.paid", r#"{"currency":"usd","amount":"100"}"#, "rest"),
        ("f6", "invoice.paid", r#"{"currency":"usd","amount":5,"test":true}"#, "rest"),
        ("f7", "customer.created", r#"{"currency":"usd","amount":100}"#, "rest"),
    ];
    for (id, ty, data, want) in cases {
        let r = deliver_with(&gw, &body(id, ty, data), &[]).await;
        assert_eq!(r.status, 200, "{id}: {}", r.text());
        let got = match want {
            "big" => big.next().await,
            _ => rest.next().await,
        };
        assert!(String::from_utf8_lossy(&got.body).contains(id), "{id} went to {want}");
    }
    let r = deliver_with(&gw, &body("f8", "invoice.paid", "{}"), &[("X-Tenant", "acme-7")]).await;
    assert_eq!(r.status, 200);
    assert!(String::from_utf8_lossy(&prod.next().await.body).contains("f8"));
    assert_eq!((prod.hits(), big.hits(), rest.hits()), (1, 1, 6));

    // Routes are called by their names in the log and the metrics.
    let log = gw.admin_json("/deliveries?id=f1").await;
    assert_eq!(log["items"][0]["route"], "big", "{log}");
    let metrics = gw.metrics().await;
    assert!(metrics.contains(r#"hookgate_upstream_duration_seconds_count{source="tampa",route="big"} 1"#), "{metrics}");
    gw.shutdown().await;
}

/// Two sync routes and one that matches nothing; returns the gateway's answer
/// to each step. `top` picks the dedupe store.
async fn fan_out_sync(top: &str) {
    let billing = spawn_upstream(Behavior::Answer(200, "billing-ok", Duration::ZERO)).await;
    let analytics = spawn_upstream(Behavior::Answer(500, "analytics-down", Duration::ZERO)).await;
    let other = spawn_upstream(ok_upstream()).await;
    let routes = [
        route("billing", billing.addr, "events = [\"invoice.*\"]"),
        route("other", other.addr, "events = [\"customer.*\"]"),
        route("analytics", analytics.addr, "events = [\"*\"]"),
    ]
    .concat();
    let gw = spawn_gateway(&tampa(top, "match = \"all\"", &routes)).await;
    let b = body("fan-1", "invoice.paid", "{}");
    let headers = gw.sign("tampa", &b, None, None);
    let url = gw.url("/webhooks/tampa");

    // One route fails: the sender gets its answer, so it retries.
    let r = send(&url, "POST", &headers, b.clone()).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (500, "analytics-down"));
    assert_eq!((billing.hits(), analytics.hits(), other.hits()), (1, 1, 0));

    // The retry (the same signed request) goes to the route that failed only.
    analytics.set(Behavior::Answer(200, "analytics-ok", Duration::ZERO));
    let r = send(&url, "POST", &headers, b.clone()).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "analytics-ok"));
    assert_eq!((billing.hits(), analytics.hits()), (1, 2));

    // Every route has it: a duplicate.
    let r = send(&url, "POST", &headers, b).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["x-hookgate-duplicate"], "true");
    assert_eq!((billing.hits(), analytics.hits()), (1, 2));

    // All answer 2xx: the first matching route's answer.
    let r = gw.deliver("tampa", &body("fan-2", "invoice.paid", "{}"), None, None).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "billing-ok"));
    assert_eq!((billing.hits(), analytics.hits(), other.hits()), (2, 3, 0));

    // Only analytics matches.
    let r = gw.deliver("tampa", &body("fan-3", "refund.made", "{}"), None, None).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "analytics-ok"));
    gw.shutdown().await;
}

#[tokio::test]
async fn fan_out_retries_reach_only_the_routes_that_failed_memory() {
    fan_out_sync("").await;
}

#[tokio::test]
async fn fan_out_retries_reach_only_the_routes_that_failed_redis() {
    let redis = RedisServer::start();
    fan_out_sync(&format!("[dedupe]\nstore = \"redis\"\n[dedupe.redis]\nurl = \"{}\"\n", redis.url())).await;
    // Dedupe keys are per (delivery, route).
    let keys = redis.cli(&["--scan", "--pattern", "hookgate:tampa/*"]);
    for route in ["billing", "analytics"] {
        assert!(keys.contains(&format!("hookgate:tampa/{route}:fan-1")), "{keys}");
    }
    assert!(!keys.contains("tampa/other"), "{keys}");
}

/// A queue route and a sync route that fails once; `queue` is the [queue] table.
async fn fan_out_with_a_queue(queue: &str) {
    let mut audit = spawn_upstream(ok_upstream()).await;
    let app = spawn_upstream(Behavior::Answer(503, "app-down", Duration::ZERO)).await;
    let routes = [
        route("audit", audit.addr, "events = [\"*\"]\ndelivery = \"queue\"\nack_status = 200"),
        route("app", app.addr, "events = [\"invoice.*\"]"),
    ]
    .concat();
    let top = format!("[server]\nshutdown_grace = \"1s\"\n{queue}");
    let gw = spawn_gateway(&tampa(&top, "match = \"all\"", &routes)).await;
    let b = body("fq-1", "invoice.paid", "{}");
    let headers = gw.sign("tampa", &b, None, None);
    let url = gw.url("/webhooks/tampa");

    let r = send(&url, "POST", &headers, b.clone()).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (503, "app-down"));
    assert!(String::from_utf8_lossy(&audit.next().await.body).contains("fq-1"));
    app.set(ok_upstream());
    let r = send(&url, "POST", &headers, b).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(app.hits(), 2);

    // No sync route takes it: the queue route's ack_status.
    let r = gw.deliver("tampa", &body("fq-2", "customer.created", "{}"), None, None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["queued"], true, "{}", r.text());
    assert!(String::from_utf8_lossy(&audit.next().await.body).contains("fq-2"));
    // fq-1 was stored once: after fq-2 arrived, nothing is left to deliver.
    let idle = async || {
        let r = &gw.admin_json("/queue").await["routes"][0];
        r["pending"] == 0 && r["scheduled"] == 0 && r["in_flight"] == 0
    };
    assert!(eventually(Duration::from_secs(5), idle).await);
    assert_eq!(audit.hits(), 2, "fq-1 was queued once, for all its sender's tries");
    assert!(audit.drain().is_empty());
    gw.shutdown().await;
}

#[tokio::test]
async fn fan_out_to_a_disk_queue_and_a_sync_route() {
    let dir = tempfile::tempdir().unwrap();
    fan_out_with_a_queue(&format!("[queue]\npath = \"{}\"", dir.path().display())).await;
}

#[tokio::test]
async fn fan_out_to_a_redis_queue_and_a_sync_route() {
    let redis = RedisServer::start();
    fan_out_with_a_queue(&format!("[queue]\nstore = \"redis\"\n[queue.redis]\nurl = \"{}\"", redis.url())).await;
}

const SLACK: &str =
    r#"transform = '{text: "Payment failed: \(.data.object.customer_email) \(.data.object.amount_due / 100) USD"}'"#;

#[tokio::test]
async fn a_transform_makes_the_body_and_re_signing_signs_it() {
    const APP_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let mut slack = spawn_upstream(ok_upstream()).await;
    let extra = format!("events = [\"invoice.payment_failed\"]\n{SLACK}\nsign_upstream = \"{APP_SECRET}\"");
    let gw = spawn_gateway(&tampa("", "", &route("slack", slack.addr, &extra))).await;
    let data = r#"{"object":{"customer_email":"jo@example.com","amount_due":1250}}"#;
    let r = gw.deliver("tampa", &body("tr-1", "invoice.payment_failed", data), None, None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let got = slack.next().await;
    assert_eq!(String::from_utf8_lossy(&got.body), r#"{"text":"Payment failed: jo@example.com 12.5 USD"}"#);
    assert_eq!(got.headers["content-type"], "application/json");
    assert_eq!(got.headers["content-length"], got.body.len().to_string());
    verify_with_library(APP_SECRET, &got.body, &got.headers).expect("the transformed body verifies");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_failing_transform_is_502_on_a_sync_route_and_a_dead_letter_on_a_queue_route() {
    let dir = tempfile::tempdir().unwrap();
    let up = spawn_upstream(ok_upstream()).await;
    let routes = [
        route("errors", up.addr, "events = [\"error.*\"]\ntransform = 'error(\"no such customer\")'"),
        route("empty", up.addr, "events = [\"empty.*\"]\ntransform = 'empty'"),
        route("loops", up.addr, "events = [\"loop.*\"]\ntransform = 'def f: f; f'\ntransform_budget = \"50ms\""),
        route("queued", up.addr, "events = [\"queue.*\"]\ndelivery = \"queue\"\ntransform = '.data.n + \"x\"'"),
    ]
    .concat();
    let top = format!("[server]\nshutdown_grace = \"1s\"\n[queue]\npath = \"{}\"", dir.path().display());
    let gw = spawn_gateway(&tampa(&top, "", &routes)).await;
    for (id, ty) in [("t-err", "error.x"), ("t-empty", "empty.x"), ("t-loop", "loop.x")] {
        let started = Instant::now();
        let r = gw.deliver("tampa", &body(id, ty, r#"{"n":1}"#), None, None).await;
        assert_eq!((r.status.as_u16(), r.error_code().as_str()), (502, "transform_failed"), "{id}");
        assert!(!r.text().contains("no such customer"), "the program's error stays in the logs");
        assert!(started.elapsed() < Duration::from_secs(2), "{id}: {:?}", started.elapsed());
    }
    let log = gw.admin_json("/deliveries?id=t-loop").await;
    assert_eq!(log["items"][0]["outcome"], "transform_failed", "{log}");

    // Queued: dead at once, with the error, never sent.
    assert_eq!(gw.deliver("tampa", &body("t-q", "queue.x", r#"{"n":1}"#), None, None).await.status, 202);
    let queued = async || gw.admin_json("/queue").await["routes"].as_array().unwrap().iter().any(|r| r["dead"] == 1);
    assert!(eventually(Duration::from_secs(5), queued).await);
    let dead = gw.admin_json("/queue/dead").await;
    let item = &dead["items"][0];
    assert_eq!((item["id"].as_str(), item["attempts"].as_u64()), (Some("t-q"), Some(1)), "{dead}");
    assert!(item["last_error"].as_str().unwrap().contains("transform"), "{item}");
    assert_eq!(up.hits(), 0);
    assert!(gw.metrics().await.contains(r#"hookgate_requests_total{source="tampa",outcome="transform_failed"} 3"#));
    gw.shutdown().await;
}

#[tokio::test]
async fn route_headers_are_set_and_removed() {
    let mut up = spawn_upstream(ok_upstream()).await;
    let extra = r#"events = ["*"]
headers = { Authorization = "Bearer ${APP_TOKEN:-t0k-123}", "X-Team" = "billing" }
remove_headers = ["X-Webhook-Signature", "User-Agent"]"#;
    let gw = spawn_gateway(&tampa("", "", &route("app", up.addr, extra))).await;
    let r = deliver_with(
        &gw,
        &body("hd-1", "invoice.paid", "{}"),
        &[("Authorization", "Basic c2VuZGVy"), ("User-Agent", "Tampa/1"), ("X-Team", "a"), ("X-Kept", "yes")],
    )
    .await;
    assert_eq!(r.status, 200);
    let got = up.next().await;
    assert_eq!(got.headers["authorization"], "Bearer t0k-123");
    assert_eq!(got.headers.get_all("x-team").iter().collect::<Vec<_>>(), ["billing"]);
    assert!(got.headers.get("x-webhook-signature").is_none());
    assert!(got.headers.get("user-agent").is_none());
    assert_eq!(got.headers["x-kept"], "yes");
    assert_eq!(got.headers["x-hookgate-verified"], "true");
    gw.shutdown().await;
}
