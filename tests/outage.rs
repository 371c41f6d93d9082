//! SPEC §12 "Seeing a down app": while a queue route's app is down, `/queue`
//! counts the age of deliveries waiting for a retry, `GET /queue/waiting`
//! lists them from the store (so a restart does not hide them), and the
//! delivery log says why the last attempt failed and when the next one is.
//! Disk and Redis.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

mod common;

use std::time::Duration;

use common::redis::RedisServer;
use common::*;

/// Retries 30 s apart: the waiting list does not change order while the test pages through it
/// (a retry moves an entry to a later due time, which could show it on two pages).
fn outage_config(queue: &str, app: std::net::SocketAddr) -> String {
    format!(
        "[server]\nshutdown_grace = \"1s\"\n{queue}\n[sources.tampa]\npath = \"/webhooks/tampa\"\nprovider = \"tampa\"\nsecrets = [\"{SECRET}\"]\n[[sources.tampa.routes]]\nname = \"orders\"\nevents = [\"*\"]\nupstream = \"http://{app}/in\"\ndelivery = \"queue\"\nretry = {{ backoff = \"30s\", max_backoff = \"60s\" }}\n"
    )
}

async fn a_down_app_is_visible(queue: &str) {
    let app = spawn_upstream(Behavior::Answer(503, "down", Duration::ZERO)).await;
    let text = outage_config(queue, app.addr);
    let gw = spawn_gateway(&text).await;
    for id in ["w-1", "w-2", "w-3"] {
        assert_eq!(gw.deliver("tampa", &tampa_body(id, "order.created"), None, None).await.status, 202);
    }
    let route = async || gw.admin_json("/queue").await["routes"][0].clone();
    assert!(
        eventually(Duration::from_secs(5), async || {
            let r = route().await;
            r["scheduled"] == 3 && r["pending"] == 0
        })
        .await,
        "{}",
        route().await
    );
    // All three wait for a retry, none is "pending": their age still counts.
    assert!(
        eventually(Duration::from_secs(5), async || route().await["oldest_pending_seconds"].as_f64().unwrap() >= 0.2)
            .await,
        "{}",
        route().await
    );

    // The waiting list, page by page.
    let first = gw.admin_json("/queue/waiting?limit=2").await;
    let items = first["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{first}");
    let next = first["next"].as_str().unwrap().to_owned();
    let second = gw.admin_json(&format!("/queue/waiting?limit=2&cursor={next}")).await;
    let mut ids: Vec<String> =
        items.iter().chain(second["items"].as_array().unwrap()).map(|i| i["id"].as_str().unwrap().to_owned()).collect();
    ids.sort();
    assert_eq!(ids, ["w-1", "w-2", "w-3"], "{second}");
    let item = &items[0];
    assert_eq!((item["source"].as_str(), item["route"].as_str()), (Some("tampa"), Some("orders")));
    assert!(item["attempts"].as_u64().unwrap() >= 1);
    assert_eq!(item["last_status"], 503);
    assert!(item["last_error"].as_str().unwrap().contains("503"), "{item}");
    assert!(item["received_at"].as_str().unwrap().ends_with('Z'));
    assert!(item["next_attempt_at"].as_str().unwrap().ends_with('Z'), "{item}");
    assert_eq!(gw.admin_json("/queue/waiting?route=nope").await["items"], serde_json::json!([]));
    assert_eq!(
        gw.admin_json("/queue/waiting?source=tampa&route=orders&limit=10").await["items"].as_array().unwrap().len(),
        3
    );
    let bad = send(&format!("http://{}/queue/waiting?cursor=zz", gw.admin), "GET", &[], "").await;
    assert_eq!(bad.status, 400);

    // The delivery log says why and when.
    let log = gw.admin_json("/deliveries?id=w-1").await;
    let entry = &log["items"][0];
    assert_eq!(entry["queue_state"], "scheduled", "{entry}");
    assert!(entry["last_error"].as_str().unwrap().contains("503"), "{entry}");
    assert!(entry["next_attempt_at"].as_str().unwrap().ends_with('Z'), "{entry}");
    gw.shutdown().await;

    // After a restart the backlog is still listed (from the store).
    let gw = spawn_gateway(&text).await;
    let again = gw.admin_json("/queue/waiting").await;
    assert_eq!(again["items"].as_array().unwrap().len(), 3, "{again}");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_down_app_is_visible_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    a_down_app_is_visible(&format!("[queue]\npath = \"{}\"", dir.path().display())).await;
}

#[tokio::test]
async fn a_down_app_is_visible_on_redis() {
    let redis = RedisServer::start();
    a_down_app_is_visible(&format!("[queue]\nstore = \"redis\"\n[queue.redis]\nurl = \"{}\"", redis.url())).await;
}
