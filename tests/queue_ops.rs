//! SPEC §16 end to end, on the disk store and on Redis: bulk replay of dead
//! letters by route, time range and status.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

mod common;

use std::time::{Duration, SystemTime};

use common::redis::RedisServer;
use common::*;

fn config(queue: &str, refuse: std::net::SocketAddr, gone: std::net::SocketAddr) -> String {
    format!(
        r#"[server]
shutdown_grace = "1s"
{queue}

[sources.tampa]
path = "/webhooks/tampa"
provider = "tampa"
secrets = ["{SECRET}"]

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
