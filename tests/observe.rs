//! SPEC §17 end to end: payload capture (`[log] bodies`), `GET
//! /deliveries/{entry}` and `POST /deliveries/{entry}/replay`, with real
//! upstreams (and a real redis-server for a queue route's replay).

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

mod common;

use std::time::Duration;

use common::redis::RedisServer;
use common::*;

fn fan_out(top: &str, billing: std::net::SocketAddr, analytics: std::net::SocketAddr) -> String {
    let routes = format!(
        r#"match = "all"

[[sources.tampa.routes]]
name = "billing"
events = ["invoice.*"]
upstream = "http://{billing}/billing"

[[sources.tampa.routes]]
name = "analytics"
events = ["*"]
upstream = "http://{analytics}/analytics"
"#
    );
    format!("{top}\n\n{}", tampa_source(&routes))
}

async fn admin(gw: &Gateway, method: &str, path: &str) -> Reply {
    send(&format!("http://{}{path}", gw.admin), method, &[], "").await
}

/// Delivers a signed tampa body with an `Authorization` and a custom header.
async fn deliver_with_extras(gw: &Gateway, body: &str) -> Reply {
    let mut headers = gw.sign("tampa", body, None, None);
    headers.push(("authorization".into(), "Bearer app-s3cret".into()));
    headers.push(("x-request-note".into(), "kept".into()));
    send(&gw.url("/webhooks/tampa"), "POST", &headers, body.to_owned()).await
}

#[tokio::test]
async fn a_captured_delivery_shows_its_redacted_headers_and_body_and_replays_past_dedupe() {
    let mut billing = spawn_upstream(ok_upstream()).await;
    let mut analytics = spawn_upstream(ok_upstream()).await;
    let gw = spawn_gateway(&fan_out("[log]\nbodies = \"1MB\"", billing.addr, analytics.addr)).await;
    let body = tampa_body("inv-1", "invoice.paid");
    let r = deliver_with_extras(&gw, &body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let (first_b, first_a) = (billing.next().await, analytics.next().await);
    assert_eq!(first_b.body, body.as_bytes());
    assert!(first_a.headers.get("x-hookgate-replay").is_none());

    let items = gw.admin_json("/deliveries").await["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(items[0]["has_body"], true);
    assert_eq!(items[0]["replay"], false);
    let entry = items[0]["entry"].as_u64().unwrap();

    let shown = gw.admin_json(&format!("/deliveries/{entry}")).await;
    assert_eq!(shown["id"], "inv-1");
    assert_eq!(shown["body"], body.as_str());
    let headers: Vec<(String, String)> = shown["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_str().unwrap().to_owned(), p[1].as_str().unwrap().to_owned()))
        .collect();
    let value = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    assert_eq!(value("authorization"), Some("[redacted]"));
    assert_eq!(value("x-request-note"), Some("kept"));
    let signature_header = gw.sign("tampa", &body, None, None).into_iter().find(|(n, _)| n.contains("signature"));
    let (sig_name, sig_value) = signature_header.expect("tampa signs with a *signature* header");
    assert_eq!(value(&sig_name.to_ascii_lowercase()), Some("[redacted]"));
    let text = shown.to_string();
    assert!(!text.contains("app-s3cret") && !text.contains(&sig_value), "{text}");

    // The sender's retry is a duplicate; a replay is not.
    let again = deliver_with_extras(&gw, &body).await;
    assert_eq!(again.headers.get("x-hookgate-duplicate").map(|v| v.to_str().unwrap()), Some("true"));
    for round in 0..2 {
        let r = admin(&gw, "POST", &format!("/deliveries/{entry}/replay")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let answer = r.json();
        assert_eq!(answer["ok"], true);
        let routes: Vec<&str> =
            answer["routes"].as_array().unwrap().iter().map(|r| r["route"].as_str().unwrap()).collect();
        assert_eq!(routes, ["billing", "analytics"], "round {round}");
        for up in [&mut billing, &mut analytics] {
            let got = up.next().await;
            assert_eq!(got.body, body.as_bytes());
            assert_eq!(got.headers["x-hookgate-replay"], "true");
            assert_eq!(got.headers["x-hookgate-delivery-id"], "inv-1");
            assert_eq!(got.headers["x-request-note"], "kept");
            assert!(got.headers.get("authorization").is_none(), "a redacted value is not sent: {:?}", got.headers);
            assert!(got.headers.get(sig_name.as_str()).is_none());
        }
    }
    let items = gw.admin_json("/deliveries").await["items"].as_array().unwrap().clone();
    assert_eq!(items[0]["replay"], true);
    assert_eq!(items[0]["outcome"], "forwarded");
    assert_eq!(items[0]["has_body"], true);
    assert_ne!(items[0]["entry"], entry);

    // Entries that are not there, or not numbers.
    for path in ["/deliveries/99999", "/deliveries/abc", "/deliveries/99999/replay"] {
        let method = if path.ends_with("replay") { "POST" } else { "GET" };
        let r = admin(&gw, method, path).await;
        assert_eq!((r.status.as_u16(), r.error_code().as_str()), (404, "not_found"), "{path}");
    }
    assert_eq!(admin(&gw, "DELETE", &format!("/deliveries/{entry}")).await.status, 405);
    gw.shutdown().await;
}

#[tokio::test]
async fn without_bodies_nothing_is_captured_and_a_replay_says_why() {
    let mut up = spawn_upstream(ok_upstream()).await;
    let gw = spawn_gateway(&fan_out("", up.addr, up.addr)).await;
    let r = deliver_with_extras(&gw, &tampa_body("u-1", "user.created")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    up.next().await;
    let item = gw.admin_json("/deliveries").await["items"][0].clone();
    assert_eq!(item["has_body"], false);
    let entry = item["entry"].as_u64().unwrap();
    let shown = gw.admin_json(&format!("/deliveries/{entry}")).await;
    assert!(shown.get("body").is_none() && shown.get("headers").is_none(), "{shown}");
    let r = admin(&gw, "POST", &format!("/deliveries/{entry}/replay")).await;
    assert_eq!((r.status.as_u16(), r.error_code().as_str()), (409, "no_body"));
    assert_eq!(up.hits(), 1);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_body_larger_than_the_budget_is_not_kept_and_older_ones_go_first() {
    let up = spawn_upstream(ok_upstream()).await;
    let gw = spawn_gateway(&fan_out("[log]\nbodies = \"6KB\"", up.addr, up.addr)).await;
    let padded = |id: &str, n: usize| {
        format!(r#"{{"id":"{id}","type":"user.x","timestamp":"{}","pad":"{}"}}"#, now_rfc3339(), "x".repeat(n))
    };
    for (id, n) in [("a", 2000), ("b", 2000), ("c", 2000), ("huge", 8000)] {
        let r = deliver_with_extras(&gw, &padded(id, n)).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let items = gw.admin_json("/deliveries").await["items"].as_array().unwrap().clone();
    let has: Vec<(String, bool)> =
        items.iter().map(|i| (i["id"].as_str().unwrap().to_owned(), i["has_body"].as_bool().unwrap())).collect();
    assert_eq!(has, [("huge".into(), false), ("c".into(), true), ("b".into(), true), ("a".into(), false)]);
    gw.shutdown().await;
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

#[tokio::test]
async fn a_replay_to_a_queue_route_on_redis_is_a_new_entry_within_the_enqueue_window() {
    let redis = RedisServer::start();
    let mut up = spawn_upstream(ok_upstream()).await;
    let top = format!("[log]\nbodies = \"1MB\"\n[queue]\nstore = \"redis\"\n[queue.redis]\nurl = \"{}\"", redis.url());
    let gw = spawn_gateway(&one_route_config(&top, &format!("http://{}/q", up.addr), "delivery = \"queue\"")).await;
    let body = tampa_body("q-1", "order.created");
    let r = gw.deliver("tampa", &body, None, None).await;
    assert_eq!(r.status, 202, "{}", r.text());
    assert!(up.next().await.headers.get("x-hookgate-replay").is_none());
    let entry = gw.admin_json("/deliveries?id=q-1").await["items"][0]["entry"].as_u64().unwrap();
    let r = admin(&gw, "POST", &format!("/deliveries/{entry}/replay")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["routes"][0]["queued"], true);
    let again = tokio::time::timeout(Duration::from_secs(10), up.next()).await.expect("the replay is delivered");
    assert_eq!(again.headers["x-hookgate-replay"], "true");
    assert_eq!(again.body, body.as_bytes());
    let delivered = async || {
        let replayed = gw.admin_json("/deliveries?id=q-1").await["items"][0].clone();
        replayed["replay"] == true && replayed["queue_state"] == "delivered"
    };
    assert!(eventually(Duration::from_secs(5), delivered).await);
    gw.shutdown().await;
}

#[tokio::test]
async fn stats_count_outcomes_and_upstream_latency_per_source_and_minute() {
    let mut up = spawn_upstream(Behavior::Answer(200, "ok", Duration::from_millis(30))).await;
    let gw = spawn_gateway(&fan_out("", up.addr, up.addr)).await;
    for i in 0..3 {
        let r = gw.deliver("tampa", &tampa_body(&format!("s-{i}"), "user.created"), None, None).await;
        assert_eq!(r.status, 200, "{}", r.text());
        up.next().await;
    }
    let forged = [("x-tampa-signature".to_owned(), "v1=00".to_owned())];
    let r = send(&gw.url("/webhooks/tampa"), "POST", &forged, tampa_body("s-x", "user.created")).await;
    assert!(r.status.is_client_error());
    let forged_outcome = gw.admin_json("/deliveries?id=").await["items"][0]["outcome"].as_str().unwrap().to_owned();

    let stats = gw.admin_json("/stats?window=5m").await;
    assert_eq!(stats["window_seconds"], 300);
    let source = &stats["sources"][0];
    assert_eq!(source["source"], "tampa");
    let minutes = source["minutes"].as_array().unwrap();
    assert_eq!(minutes.len(), 5);
    // The requests may straddle a minute's edge: add the minutes up.
    let sum = |f: &dyn Fn(&serde_json::Value) -> u64| minutes.iter().map(f).sum::<u64>();
    assert_eq!(sum(&|m| m["outcomes"]["forwarded"].as_u64().unwrap_or(0)), 3);
    assert_eq!(sum(&|m| m["outcomes"][forged_outcome.as_str()].as_u64().unwrap_or(0)), 1, "{forged_outcome}");
    assert_eq!(sum(&|m| m["upstream"].as_u64().unwrap()), 3);
    let p50 = minutes.iter().rev().find_map(|m| m["p50_ms"].as_f64()).unwrap();
    assert!((20.0..=500.0).contains(&p50), "an upstream taking 30 ms: p50 {p50}");
    assert!(minutes.iter().all(|m| m["at"].as_str().unwrap().ends_with(":00.000Z")));

    assert_eq!(gw.admin_json("/stats").await["window_seconds"], 3600);
    for bad in ["window=2h", "window=5s", "window=soon"] {
        let r = admin(&gw, "GET", &format!("/stats?{bad}")).await;
        assert_eq!((r.status.as_u16(), r.error_code().as_str()), (400, "bad_request"), "{bad}");
    }
    gw.shutdown().await;
}
