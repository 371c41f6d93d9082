//! Provider challenges and test pings end to end (SPEC §4): answered by the
//! gateway after verification, never forwarded; an unsigned one gets 401.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

mod common;

use common::*;
use serde_json::json;

fn source(name: &str, provider: &str, secret: &str, upstream: std::net::SocketAddr, extra: &str) -> String {
    format!(
        "[sources.{name}]\npath = \"/{name}\"\nprovider = \"{provider}\"\nsecrets = [\"{secret}\"]\n{extra}\n[[sources.{name}.routes]]\nevents = [\"*\"]\nupstream = \"http://{upstream}/{name}\"\n"
    )
}

#[tokio::test]
async fn every_challenge_is_answered_after_verification() {
    let up = spawn_upstream(ok_upstream()).await;
    let a = up.addr;
    let cfg = [
        source("slack", "slack", "slack-secret", a, ""),
        source("tribe", "tribe", "tribe-secret", a, ""),
        source("zoom", "zoom", "secretValueTest", a, ""),
        source("github", "github", "gh-secret", a, ""),
        source("tampa", "tampa", "tampa-secret", a, ""),
    ]
    .concat();
    let gw = spawn_gateway(&cfg).await;

    let cases: Vec<(&str, String, Option<&str>, serde_json::Value)> = vec![
        (
            "slack",
            r#"{"token":"t","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#.into(),
            None,
            json!({"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"}),
        ),
        (
            "tribe",
            r#"{"networkId":"n","context":"NETWORK","currentSettings":[],"type":"TEST","data":{"challenge":"22b4c546"}}"#.into(),
            None,
            json!({"type": "TEST", "status": "SUCCEEDED", "data": {"challenge": "22b4c546"}}),
        ),
        (
            "zoom",
            r#"{"payload":{"plainToken":"qgg8vlvZRS6UYooatFL8Aw"},"event_ts":1654503849680,"event":"endpoint.url_validation"}"#.into(),
            None,
            json!({"plainToken": "qgg8vlvZRS6UYooatFL8Aw", "encryptedToken": "70c1f2e2e6ca2d39297490d1f9142c7d701415ea8e6151f6562a08fa657a40ff"}),
        ),
        ("github", r#"{"zen":"Keep it logically awesome.","hook_id":1}"#.into(), Some("ping"), json!({"ok": true})),
        ("tampa", tampa_body("evt_ping", "test.ping"), None, json!({"ok": true})),
    ];
    for (src, body, event, want) in cases {
        let r = gw.deliver(src, &body, None, event).await;
        assert_eq!(r.status, 200, "{src}: {}", r.text());
        assert_eq!(r.headers["content-type"], "application/json", "{src}");
        assert_eq!(r.json(), want, "{src}");
        // Unsigned: refused before any challenge logic.
        let r = send(&gw.url(&format!("/{src}")), "POST", &[], body.clone()).await;
        assert_eq!(r.status, 401, "{src} unsigned");
        // Wrongly signed: refused too.
        let mut headers = gw.sign(src, &body, None, event);
        let mut tampered = body.clone().into_bytes();
        tampered[2] ^= 1;
        headers.retain(|(k, _)| k != "content-type");
        let r = send(&gw.url(&format!("/{src}")), "POST", &headers, tampered).await;
        assert_eq!(r.status, 401, "{src} wrongly signed");
    }
    assert_eq!(up.hits(), 0, "challenges are never forwarded");
    gw.shutdown().await;
}

#[tokio::test]
async fn ordinary_events_of_challenge_providers_are_forwarded() {
    let mut up = spawn_upstream(ok_upstream()).await;
    let a = up.addr;
    let cfg = [
        source("slack", "slack", "s", a, ""),
        source("github", "github", "g", a, ""),
        source("stripe", "stripe", "whsec_test_secret", a, ""),
        source("shopify", "shopify", "sh", a, ""),
        source("svix", "svix", "whsec_plJ3nmyCDGBKInavdOK15jsl", a, ""),
        source("tyk", "tyk", "tyk-token", a, "[sources.tyk.verify]\nsignature_header = \"X-Tyk-Secret\""),
    ]
    .concat();
    let gw = spawn_gateway(&cfg).await;
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
    let cases: Vec<(&str, String, Option<&str>, &str)> = vec![
        (
            "slack",
            r#"{"type":"event_callback","event_id":"Ev1","event":{"type":"app_mention"}}"#.into(),
            None,
            "app_mention",
        ),
        ("github", r#"{"action":"opened"}"#.into(), Some("pull_request"), "pull_request"),
        ("stripe", r#"{"id":"evt_1","type":"invoice.paid"}"#.into(), None, "invoice.paid"),
        ("shopify", r#"{"id":1}"#.into(), Some("orders/create"), "orders/create"),
        ("svix", r#"{"type":"user.created"}"#.into(), None, "user.created"),
        ("tyk", format!(r#"{{"Event":"QuotaExceeded","Timestamp":"{now}"}}"#), None, "QuotaExceeded"),
    ];
    for (src, body, event, want_type) in cases {
        let r = gw.deliver(src, &body, None, event).await;
        assert_eq!(r.status, 200, "{src}: {}", r.text());
        let got = up.next().await;
        assert_eq!(got.uri, format!("/{src}"));
        assert_eq!(got.headers["x-hookgate-event-type"], want_type, "{src}");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn slack_slash_commands_are_form_encoded_and_still_forwarded() {
    let mut up = spawn_upstream(ok_upstream()).await;
    let gw = spawn_gateway(&source("slack", "slack", "s", up.addr, "")).await;
    let body = "token=x&team_id=T1&command=%2Fdeploy&text=now";
    let r = gw.deliver("slack", body, None, None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let got = up.next().await;
    assert_eq!(got.headers["x-hookgate-event-type"], "");
    assert_eq!(got.headers["x-hookgate-delivery-id"], hookgate::verify::body_hash(body.as_bytes()).as_str());
    gw.shutdown().await;
}

#[tokio::test]
async fn rotation_accepts_either_secret_and_metrics_show_which() {
    let up = spawn_upstream(ok_upstream()).await;
    let cfg = format!(
        "[sources.gh]\npath = \"/gh\"\nprovider = \"github\"\nsecrets = [\"new-secret\", \"old-secret\"]\n[[sources.gh.routes]]\nevents = [\"*\"]\nupstream = \"http://{}/\"\n",
        up.addr
    );
    let gw = spawn_gateway(&cfg).await;
    // Sign with the old secret only.
    let old = common::config(&cfg.replace("[\"new-secret\", \"old-secret\"]", "[\"old-secret\"]"));
    let body = r#"{"action":"x"}"#;
    let headers = sign_with(&old, "gh", body, Some("d-1"), Some("push"), std::time::SystemTime::now());
    let r = send(&gw.url("/gh"), "POST", &headers, body).await;
    assert_eq!(r.status, 200);
    let m = gw.metrics().await;
    assert!(m.contains("hookgate_secret_matches_total{source=\"gh\",index=\"1\"} 1"), "{m}");
    gw.shutdown().await;
}
