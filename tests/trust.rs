//! SPEC §10 end to end: only what the signature covers decides where a
//! delivery goes and whether it is new. Each test replays a captured, validly
//! signed delivery the way an attacker who saw one would.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

mod common;

use std::time::Duration;

use common::redis::RedisServer;
use common::*;

/// Two tampa routes: orders and billing, on two upstreams.
fn two_apps(orders: std::net::SocketAddr, billing: std::net::SocketAddr, top: &str) -> String {
    format!(
        r#"{top}
[sources.tampa]
path = "/webhooks/tampa"
provider = "tampa"
secrets = ["{SECRET}"]

[[sources.tampa.routes]]
events = ["billing.*"]
upstream = "http://{billing}/billing"

[[sources.tampa.routes]]
events = ["*"]
upstream = "http://{orders}/orders"
"#
    )
}

fn with(headers: &[(String, String)], name: &str, value: &str) -> Vec<(String, String)> {
    let mut out: Vec<_> = headers.iter().filter(|(k, _)| !k.eq_ignore_ascii_case(name)).cloned().collect();
    out.push((name.to_owned(), value.to_owned()));
    out
}

/// The reproduction from issue #25: a fresh X-Delivery-ID must not dodge
/// dedupe, and X-Event-Type must not reroute a signed delivery to billing.
#[tokio::test]
async fn a_captured_tampa_delivery_cannot_be_replayed_under_a_fresh_id_or_rerouted() {
    let orders = spawn_upstream(ok_upstream()).await;
    let billing = spawn_upstream(ok_upstream()).await;
    let gw = spawn_gateway(&two_apps(orders.addr, billing.addr, "")).await;
    let body = tampa_body("evt_1", "dev.tampa.event.created");
    let captured = gw.sign("tampa", &body, None, None);
    // What Tampa.dev's sender sends: the body's ID and type in headers too.
    assert!(captured.iter().any(|(k, v)| k.eq_ignore_ascii_case("x-delivery-id") && v == "evt_1"), "{captured:?}");
    assert!(captured.iter().any(|(k, v)| k.eq_ignore_ascii_case("x-event-type") && v == "dev.tampa.event.created"));
    let url = gw.url("/webhooks/tampa");

    let r = send(&url, "POST", &captured, body.clone()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(orders.hits(), 1);

    let fresh_id = with(&captured, "X-Delivery-ID", "a-fresh-id");
    let r = send(&url, "POST", &fresh_id, body.clone()).await;
    assert_eq!((r.status.as_u16(), r.error_code()), (401, "unsigned_mismatch".to_owned()));

    let rerouted = with(&captured, "X-Event-Type", "billing.invoice.paid");
    let r = send(&url, "POST", &rerouted, body.clone()).await;
    assert_eq!((r.status.as_u16(), r.error_code()), (401, "unsigned_mismatch".to_owned()));
    // A fresh delivery (new signed ID) with a forged type is refused the same way.
    let body2 = tampa_body("evt_2", "dev.tampa.event.created");
    let r = send(&url, "POST", &with(&gw.sign("tampa", &body2, None, None), "X-Event-Type", "billing.x"), body2).await;
    assert_eq!(r.status, 401);

    let r = send(&url, "POST", &captured, body).await;
    assert_eq!(r.headers["x-hookgate-duplicate"], "true", "the captured copy itself is a duplicate");
    assert_eq!((orders.hits(), billing.hits()), (1, 0), "nothing more reached either app");
    assert!(gw.metrics().await.contains("hookgate_requests_total{source=\"tampa\",outcome=\"unsigned_mismatch\"} 3"));
    gw.shutdown().await;
}

/// A github-style source (ID in an unsigned header), memory or Redis.
fn github(upstream: std::net::SocketAddr, extra_source: &str, top: &str) -> String {
    format!(
        r#"{top}
[sources.github]
path = "/gh"
provider = "github"
secrets = ["{SECRET}"]
{extra_source}

[[sources.github.routes]]
events = ["*"]
upstream = "http://{upstream}/gh"
"#
    )
}

async fn body_digest_is_deduplicated(top: &str) -> Gateway {
    let mut up = spawn_upstream(ok_upstream()).await;
    let gw = spawn_gateway(&github(up.addr, "", top)).await;
    let body = r#"{"action":"opened","number":7}"#;

    let r = gw.deliver("github", body, Some("guid-1"), Some("pull_request")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.next().await.headers["x-hookgate-delivery-id"], "guid-1");
    let r = gw.deliver("github", body, Some("guid-2"), Some("pull_request")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.headers["x-hookgate-duplicate"], "true", "captured body under a fresh ID");
    assert_eq!(up.hits(), 1);

    // A failed forward releases both claims: the sender's retry, under any ID, goes through.
    let body = r#"{"action":"closed","number":7}"#;
    up.set(Behavior::Answer(500, "down", Duration::ZERO));
    assert_eq!(gw.deliver("github", body, Some("guid-3"), Some("pull_request")).await.status, 500);
    up.set(ok_upstream());
    assert_eq!(gw.deliver("github", body, Some("guid-4"), Some("pull_request")).await.status, 200);
    assert_eq!(
        gw.deliver("github", body, Some("guid-3"), Some("pull_request")).await.headers["x-hookgate-duplicate"],
        "true"
    );
    assert_eq!(up.hits(), 3);
    gw
}

#[tokio::test]
async fn a_captured_body_under_a_fresh_unsigned_id_is_a_duplicate_in_memory() {
    body_digest_is_deduplicated("").await.shutdown().await;
}

#[tokio::test]
async fn a_captured_body_under_a_fresh_unsigned_id_is_a_duplicate_in_redis() {
    let redis = RedisServer::start();
    let top = format!("[dedupe]\nstore = \"redis\"\n[dedupe.redis]\nurl = \"{}\"\n", redis.url());
    let gw = body_digest_is_deduplicated(&top).await;
    let digest = hookgate::verify::body_hash(br#"{"action":"opened","number":7}"#);
    assert_eq!(redis.cli(&["GET", &format!("hookgate:github:body:{digest}")]), "d");
    assert_eq!(redis.cli(&["GET", "hookgate:github:guid-1"]), "d");
    assert_eq!(redis.cli(&["GET", "hookgate:github:guid-2"]), "", "the refused copy's claim was released");
    gw.shutdown().await;
}

/// `dedupe_body = false`: for senders that send byte-identical bodies for distinct events.
#[tokio::test]
async fn dedupe_body_false_forwards_identical_bodies_under_distinct_ids() {
    let up = spawn_upstream(ok_upstream()).await;
    let gw = spawn_gateway(&github(up.addr, "dedupe_body = false", "")).await;
    for id in ["a", "b"] {
        let r = gw.deliver("github", "{}", Some(id), Some("push")).await;
        assert!(!r.headers.contains_key("x-hookgate-duplicate"), "{id}");
    }
    assert_eq!(up.hits(), 2);
    gw.shutdown().await;
}

/// Many concurrent copies of one body under distinct IDs reach the app once.
#[tokio::test]
async fn concurrent_copies_of_one_body_under_distinct_ids_reach_the_app_once() {
    let up = spawn_upstream(Behavior::Answer(200, "ok", Duration::from_millis(150))).await;
    let gw = spawn_gateway(&github(up.addr, "", "")).await;
    let body = r#"{"n":1}"#;
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let headers = gw.sign("github", body, Some(&format!("id-{i}")), Some("push"));
            let url = gw.url("/gh");
            tokio::spawn(async move { send(&url, "POST", &headers, body).await.status.as_u16() })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    assert!(statuses.contains(&200), "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == 200 || *s == 409), "{statuses:?}");
    assert_eq!(up.hits(), 1, "{statuses:?}");
    gw.shutdown().await;
}

/// 30 KB IDs and event types are refused before any store is touched.
#[tokio::test]
async fn over_long_ids_and_event_types_are_refused_before_the_store() {
    let redis = RedisServer::start();
    let up = spawn_upstream(ok_upstream()).await;
    let top = format!("[dedupe]\nstore = \"redis\"\n[dedupe.redis]\nurl = \"{}\"\n", redis.url());
    let gw = spawn_gateway(&github(up.addr, "", &top)).await;
    let long = "x".repeat(30_000);
    for (id, et) in [(long.as_str(), "push"), ("ok-id", long.as_str()), (&long[..257], "push")] {
        let r = gw.deliver("github", "{}", Some(id), Some(et)).await;
        assert_eq!((r.status.as_u16(), r.error_code()), (400, "field_too_long".to_owned()));
    }
    assert_eq!(redis.cli(&["DBSIZE"]), "0", "nothing was claimed");
    assert_eq!(up.hits(), 0);
    let r = gw.deliver("github", "{}", Some(&long[..256]), Some("push")).await;
    assert_eq!(r.status, 200, "256 bytes is allowed");
    gw.shutdown().await;
}
