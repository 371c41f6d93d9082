//! SPEC §17 alerts against a real HTTP receiver: a sync route failing and
//! recovering, signature failures over a threshold, a queue route's dead
//! letters and pause (Slack format), one alert per kind and route per
//! `alert_every`, and a receiver that fails first.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

mod common;

use std::time::Duration;

use common::*;

/// `[[alerts]]` to `receiver` with `extra` keys, then a tampa source with `routes`.
fn config(receiver: std::net::SocketAddr, extra: &str, top: &str, routes: &str) -> String {
    let alerts = format!("[[alerts]]\nurl = \"http://{receiver}/alerts/T000/B000/s3cret-path\"\n{extra}");
    format!("{top}\n\n{alerts}\n\n{}", tampa_source(routes))
}

async fn next_alert(receiver: &mut Upstream) -> serde_json::Value {
    let got = tokio::time::timeout(Duration::from_secs(10), receiver.next()).await.expect("an alert arrives");
    assert_eq!(got.method, "POST");
    assert_eq!(got.uri, "/alerts/T000/B000/s3cret-path");
    assert_eq!(got.headers["content-type"], "application/json");
    serde_json::from_slice(&got.body).unwrap()
}

#[tokio::test]
async fn json_alerts_when_a_route_fails_and_recovers_and_when_signatures_fail() {
    let mut receiver = spawn_upstream(ok_upstream()).await;
    let app = spawn_upstream(Behavior::Answer(503, "down", Duration::ZERO)).await;
    let routes = format!(
        r#"
[[sources.tampa.routes]]
name = "billing"
events = ["*"]
upstream = "http://{app}/billing"

[sources.other]
path = "/webhooks/other"
provider = "tampa"
secrets = ["{SECRET}"]

[[sources.other.routes]]
name = "billing"
events = ["*"]
upstream = "http://{app}/other"
"#,
        app = app.addr
    );
    let extra = "format = \"json\"\nsignature_failures = \"3/m\"\nalert_every = \"10m\"";
    let gw = spawn_gateway(&config(receiver.addr, extra, "", &routes)).await;

    for i in 0..3 {
        let r = gw.deliver("tampa", &tampa_body(&format!("f-{i}"), "invoice.paid"), None, None).await;
        assert_eq!(r.status, 503, "{}", r.text());
    }
    let failing = next_alert(&mut receiver).await;
    assert_eq!(failing["kind"], "route_failing");
    assert_eq!((failing["source"].as_str(), failing["route"].as_str()), (Some("tampa"), Some("billing")));
    assert!(failing["message"].as_str().unwrap().contains("503"), "{failing}");
    assert!(failing["at"].as_str().unwrap().ends_with('Z'));

    // Three failures sent one alert: the next one to arrive is the recovery.
    app.set(ok_upstream());
    let r = gw.deliver("tampa", &tampa_body("ok-1", "invoice.paid"), None, None).await;
    assert_eq!(r.status, 200);
    let recovered = next_alert(&mut receiver).await;
    assert_eq!((recovered["kind"].as_str(), recovered["route"].as_str()), (Some("route_recovered"), Some("billing")));

    // Two forged requests stay under "3/m"; the third reaches it; the
    // fourth and fifth are within the same alert_every.
    let forged = [("x-tampa-signature".to_owned(), "v1=00".to_owned())];
    for i in 0..5 {
        let r = send(&gw.url("/webhooks/tampa"), "POST", &forged, tampa_body(&format!("x-{i}"), "a")).await;
        assert!(r.status.is_client_error(), "{}", r.status);
    }
    let sig = next_alert(&mut receiver).await;
    assert_eq!(sig["kind"], "signature_failures");
    assert_eq!(sig["source"], "tampa");
    assert_eq!(sig["route"], serde_json::Value::Null);
    assert_eq!(sig["details"]["failures"], 3);

    // Nothing else is on its way: after a failure of tampa's route (within
    // its alert_every) and one of another source's, the next alert is the latter's.
    app.set(Behavior::Answer(500, "boom", Duration::ZERO));
    let r = gw.deliver("tampa", &tampa_body("f-9", "invoice.paid"), None, None).await;
    assert_eq!(r.status, 500);
    let r = gw.deliver("other", &tampa_body("f-10", "invoice.paid"), None, None).await;
    assert_eq!(r.status, 500);
    let last = next_alert(&mut receiver).await;
    assert_eq!((last["kind"].as_str(), last["source"].as_str()), (Some("route_failing"), Some("other")));
    assert!(receiver.drain().is_empty());
    gw.shutdown().await;
}

#[tokio::test]
async fn slack_alerts_for_a_queue_routes_dead_letter_and_pause() {
    let mut receiver = spawn_upstream(ok_upstream()).await;
    let app = spawn_upstream(Behavior::Answer(422, "no <thanks>", Duration::ZERO)).await;
    let dir = tempfile::tempdir().unwrap();
    let top = format!("[server]\nshutdown_grace = \"1s\"\n[queue]\npath = \"{}\"", dir.path().display());
    let routes = format!(
        r#"
[[sources.tampa.routes]]
name = "orders"
events = ["*"]
upstream = "http://{}/orders"
delivery = "queue"
retry = {{ attempts = 1 }}
"#,
        app.addr
    );
    let gw = spawn_gateway(&config(receiver.addr, "format = \"slack\"", &top, &routes)).await;
    let r = gw.deliver("tampa", &tampa_body("o-1", "order.created"), None, None).await;
    assert_eq!(r.status, 202, "{}", r.text());
    let dead = next_alert(&mut receiver).await;
    // What Slack's incoming webhooks take: an object with a non-empty "text"
    // whose &, < and > are escaped.
    let text = dead.as_object().filter(|o| o.len() == 1).and_then(|o| o["text"].as_str()).unwrap();
    assert!(text.contains("dead_letters") && text.contains("o-1") && text.contains("orders"), "{text}");
    assert!(!text.contains('<') && !text.contains('>'), "{text}");

    let r = send(&format!("http://{}/queue/routes/tampa/orders/pause", gw.admin), "POST", &[], "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let paused = next_alert(&mut receiver).await;
    let text = paused["text"].as_str().unwrap();
    assert!(text.contains("route_paused") && text.contains("orders"), "{text}");
    gw.shutdown().await;
}

#[tokio::test]
async fn an_alert_the_receiver_refuses_is_tried_again() {
    let mut receiver = spawn_upstream(Behavior::Answer(500, "busy", Duration::ZERO)).await;
    let app = spawn_upstream(Behavior::Answer(502, "down", Duration::ZERO)).await;
    let routes = format!("[[sources.tampa.routes]]\nevents = [\"*\"]\nupstream = \"http://{}/\"\n", app.addr);
    let gw = spawn_gateway(&config(receiver.addr, "", "", &routes)).await;
    let r = gw.deliver("tampa", &tampa_body("d-1", "a"), None, None).await;
    assert_eq!(r.status, 502);
    let first = next_alert(&mut receiver).await;
    receiver.set(ok_upstream());
    let second = next_alert(&mut receiver).await;
    assert_eq!(first, second, "the same alert, sent again");
    assert_eq!(second["kind"], "route_failing");
    assert_eq!(second["route"], "0");
    gw.shutdown().await;
}
