//! SPEC §6 and §8 in process: the delivery log and its filters and paging,
//! the admin token, the UI page's access rule, and re-signing toward the app
//! checked with the Standard Webhooks library itself (PyPI `standardwebhooks`).

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

mod common;

use std::time::Duration;

use common::*;

const APP_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

async fn get(gw: &Gateway, path: &str, headers: &[(String, String)]) -> Reply {
    send(&format!("http://{}{}", gw.admin, path), "GET", headers, "").await
}

fn ids(v: &serde_json::Value) -> Vec<String> {
    v["items"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn delivery_log_records_every_request_newest_first_with_filters_and_paging() {
    let up = spawn_upstream(ok_upstream()).await;
    let gw = spawn_gateway(&tampa_config(up.addr, "", "")).await;
    for i in 0..5 {
        let r = gw.deliver("tampa", &tampa_body(&format!("d{i}"), "dev.tampa.event.x"), None, None).await;
        assert_eq!(r.status, 200);
    }
    // A duplicate and a bad signature are recorded too.
    gw.deliver("tampa", &tampa_body("d0", "dev.tampa.event.x"), None, None).await;
    let bad = send(&gw.url("/webhooks/tampa"), "POST", &h(&[("X-Webhook-Signature", "sha256=00")]), "{}").await;
    assert_eq!(bad.status, 401);

    let all = gw.admin_json("/deliveries").await;
    let items = all["items"].as_array().unwrap();
    assert_eq!(items.len(), 7);
    assert_eq!(items[0]["outcome"], "invalid_signature");
    assert_eq!(items[0]["status"], 401);
    assert_eq!(items[1]["outcome"], "duplicate");
    let fwd = &items[2];
    assert_eq!(fwd["source"], "tampa");
    assert_eq!(fwd["id"], "d4");
    assert_eq!(fwd["event_type"], "dev.tampa.event.x");
    assert_eq!(fwd["outcome"], "forwarded");
    assert_eq!(fwd["status"], 200);
    assert_eq!(fwd["route"], 0);
    assert!(fwd["upstream_ms"].is_u64());
    assert_eq!(fwd["client"], "127.0.0.1");
    assert_eq!(fwd["attempts"], serde_json::Value::Null, "sync routes have no attempts");
    let at = fwd["at"].as_str().unwrap();
    assert!(at.ends_with('Z') && at.len() == "2026-11-24T17:49:39.120Z".len(), "RFC 3339 with ms: {at}");
    assert_eq!(all["next"], serde_json::Value::Null);

    let f = gw.admin_json("/deliveries?outcome=forwarded&limit=2").await;
    assert_eq!(ids(&f), ["d4", "d3"]);
    let next = f["next"].as_str().unwrap();
    let f2 = gw.admin_json(&format!("/deliveries?outcome=forwarded&limit=2&cursor={next}")).await;
    assert_eq!(ids(&f2), ["d2", "d1"]);
    let f3 =
        gw.admin_json(&format!("/deliveries?outcome=forwarded&limit=2&cursor={}", f2["next"].as_str().unwrap())).await;
    assert_eq!(ids(&f3), ["d0"]);
    assert_eq!(f3["next"], serde_json::Value::Null);
    assert_eq!(ids(&gw.admin_json("/deliveries?id=d2").await), ["d2"]);
    assert_eq!(gw.admin_json("/deliveries?source=other").await["items"].as_array().unwrap().len(), 0);
    for bad in ["limit=0", "limit=501", "limit=x", "cursor=abc"] {
        let r = get(&gw, &format!("/deliveries?{bad}"), &[]).await;
        assert_eq!((r.status.as_u16(), r.error_code().as_str()), (400, "bad_request"), "{bad}");
    }
    assert_eq!(gw.admin_json("/deliveries?limit=500").await["items"].as_array().unwrap().len(), 7);
    gw.shutdown().await;
}

#[tokio::test]
async fn the_log_keeps_only_the_configured_number_and_zero_turns_it_off() {
    let up = spawn_upstream(ok_upstream()).await;
    let gw = spawn_gateway(&tampa_config(up.addr, "", "[log]\ndeliveries = 3")).await;
    for i in 0..5 {
        gw.deliver("tampa", &tampa_body(&format!("k{i}"), "x"), None, None).await;
    }
    assert_eq!(ids(&gw.admin_json("/deliveries").await), ["k4", "k3", "k2"]);
    gw.shutdown().await;

    let gw = spawn_gateway(&tampa_config(up.addr, "", "[log]\ndeliveries = 0")).await;
    gw.deliver("tampa", &tampa_body("e", "x"), Some("z"), None).await;
    assert_eq!(gw.admin_json("/deliveries").await["items"].as_array().unwrap().len(), 0);
    gw.shutdown().await;
}

#[tokio::test]
async fn no_body_header_value_or_secret_is_ever_recorded() {
    let up = spawn_upstream(ok_upstream()).await;
    let gw = spawn_gateway(&tampa_config(up.addr, "", "")).await;
    let body = tampa_body("body-marker-7731", "x").replace("\"n\":1", "\"n\":\"payload-marker-4410\"");
    let mut headers = gw.sign("tampa", &body, None, None);
    let signature = headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("x-webhook-signature")).unwrap().1.clone();
    headers.push(("X-Private".into(), "header-marker-9920".into()));
    assert_eq!(send(&gw.url("/webhooks/tampa"), "POST", &headers, body).await.status, 200);
    let text = get(&gw, "/deliveries", &[]).await.text();
    assert!(text.contains("body-marker-7731"), "{text}");
    for secret in ["payload-marker-4410", "header-marker-9920", SECRET, signature.as_str()] {
        assert!(!text.contains(secret), "{secret:?} leaked into {text}");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn admin_token_guards_everything_but_health() {
    let up = spawn_upstream(ok_upstream()).await;
    let gw = spawn_gateway(&tampa_config(up.addr, "", "[server]\nadmin_token = \"t0ken-abc\"")).await;
    let good = h(&[("Authorization", "Bearer t0ken-abc")]);
    let wrong = h(&[("Authorization", "Bearer t0ken-abd")]);
    for path in ["/healthz", "/readyz"] {
        assert_eq!(get(&gw, path, &[]).await.status, 200, "{path} stays open");
    }
    for path in ["/metrics", "/deliveries", "/queue", "/queue/dead"] {
        let r = get(&gw, path, &[]).await;
        assert_eq!((r.status.as_u16(), r.error_code().as_str()), (401, "unauthorized"), "{path} without a token");
        assert_eq!(r.headers["www-authenticate"], "Bearer");
        assert_eq!(get(&gw, path, &wrong).await.status, 401, "{path} with a wrong token");
        assert_eq!(get(&gw, path, &good).await.status, 200, "{path} with the token");
    }
    let r = send(&format!("http://{}/queue/dead/retry", gw.admin), "POST", &[], "").await;
    assert_eq!(r.status, 401);
    // The page answers 401 with itself: it asks for the token and sends it with each call.
    let page = get(&gw, "/ui", &[]).await;
    assert_eq!(page.status, 401);
    assert!(page.headers["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(page.text().contains("Authorization"));
    assert_eq!(get(&gw, "/ui", &good).await.status, 200);
    gw.shutdown().await;
}

#[tokio::test]
async fn without_a_token_loopback_clients_get_the_api() {
    let up = spawn_upstream(ok_upstream()).await;
    let gw = spawn_gateway(&tampa_config(up.addr, "", "")).await;
    for path in ["/metrics", "/deliveries", "/queue", "/queue/dead", "/ui"] {
        assert_eq!(get(&gw, path, &[]).await.status, 200, "{path}");
    }
    assert_eq!(gw.admin_json("/queue").await, serde_json::json!({"routes": [], "lost": 0}), "no queue routes");
    // (Non-loopback clients get 403 admin_token_required: pinned by the unit test
    // `admin::tests::without_a_token_only_loopback_clients_reach_the_api`, since
    // tests only use loopback addresses.)
    gw.shutdown().await;
}

/// Verifies a request with the Standard Webhooks Python library; `Ok` or its error.
/// SPEC §11: without a token, a Host other than a loopback name is DNS
/// rebinding (403 bad_host); token or not, a POST or DELETE from another
/// origin is refused (403 cross_origin). curl and the page's own calls work.
#[tokio::test]
async fn the_admin_listener_refuses_other_hosts_and_cross_origin_writes() {
    let up = spawn_upstream(ok_upstream()).await;
    let gw = spawn_gateway(&tampa_config(up.addr, "", "")).await;
    let port = gw.admin.port();
    let host = |name: &str| h(&[("Host", name)]);
    for ok in [format!("localhost:{port}"), "127.0.0.1".into(), format!("[::1]:{port}"), "app.localhost".into()] {
        assert_eq!(get(&gw, "/deliveries", &host(&ok)).await.status, 200, "{ok}");
    }
    for bad in [format!("evil.example:{port}"), "192.168.1.10".into(), "localhost.evil.example".into()] {
        let r = get(&gw, "/deliveries", &host(&bad)).await;
        assert_eq!((r.status.as_u16(), r.error_code().as_str()), (403, "bad_host"), "{bad}");
    }
    for open in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(get(&gw, open, &host("evil.example")).await.status, 200, "{open} is not loopback-only");
    }

    let retry = format!("http://{}/queue/dead/retry", gw.admin);
    let own = format!("http://127.0.0.1:{port}");
    for (name, value) in [
        ("Origin", "http://evil.example"),
        ("Origin", "null"),
        ("Origin", "http://127.0.0.1:1"),
        ("Sec-Fetch-Site", "cross-site"),
        ("Sec-Fetch-Site", "same-site"),
    ] {
        let r = send(&retry, "POST", &h(&[(name, value)]), "").await;
        assert_eq!((r.status.as_u16(), r.error_code().as_str()), (403, "cross_origin"), "{name}: {value}");
        let r = send(&format!("http://{}/queue/dead/x", gw.admin), "DELETE", &h(&[(name, value)]), "").await;
        assert_eq!(r.status, 403, "DELETE {name}: {value}");
    }
    // The page's own calls, and curl's (no Origin), go through (503: no queue here).
    let r = send(&retry, "POST", &h(&[("Origin", &own), ("Sec-Fetch-Site", "same-origin")]), "").await;
    assert_ne!(r.status, 403, "{}", r.text());
    assert_ne!(send(&retry, "POST", &[], "").await.status, 403);
    // A GET from another origin reads nothing it could not already (CORS hides it); allowed.
    assert_eq!(get(&gw, "/queue", &h(&[("Origin", "http://evil.example")])).await.status, 200);
    gw.shutdown().await;

    // With a token: the Host is free (the token is the guard), cross-origin writes are not.
    let gw = spawn_gateway(&tampa_config(up.addr, "", "[server]\nadmin_token = \"t0ken-abc\"")).await;
    let auth = ("Authorization", "Bearer t0ken-abc");
    assert_eq!(get(&gw, "/deliveries", &h(&[auth, ("Host", "hooks.example.com")])).await.status, 200);
    let r = send(
        &format!("http://{}/queue/dead/retry", gw.admin),
        "POST",
        &h(&[auth, ("Origin", "http://evil.example")]),
        "",
    )
    .await;
    assert_eq!((r.status.as_u16(), r.error_code().as_str()), (403, "cross_origin"));
    gw.shutdown().await;
}

#[tokio::test]
async fn re_signed_requests_verify_with_the_standard_webhooks_library() {
    let dir = tempfile::tempdir().unwrap();
    let mut up = spawn_upstream(ok_upstream()).await;
    let text = format!(
        r#"
[queue]
path = "{dir}"

[sources.tampa]
path = "/webhooks/tampa"
provider = "tampa"
secrets = ["{SECRET}"]
sign_upstream = "{APP_SECRET}"

[[sources.tampa.routes]]
events = ["queued.*"]
upstream = "http://{up}/q"
delivery = "queue"

[[sources.tampa.routes]]
events = ["plain.*"]
upstream = "http://{up}/plain"
sign_upstream = ""

[[sources.tampa.routes]]
events = ["*"]
upstream = "http://{up}/sync"
"#,
        dir = dir.path().display(),
        up = up.addr
    );
    let gw = spawn_gateway(&text).await;

    // Sync route: the sender's own webhook-* headers are replaced.
    let body = tampa_body("sync-1", "sync.created");
    let mut headers = gw.sign("tampa", &body, None, None);
    headers.extend(h(&[("webhook-id", "forged"), ("webhook-signature", "v1,forged")]));
    assert_eq!(send(&gw.url("/webhooks/tampa"), "POST", &headers, body.clone()).await.status, 200);
    let got = up.next().await;
    assert_eq!(got.uri, "/sync");
    assert_eq!(got.headers["webhook-id"], "sync-1");
    assert_eq!(got.headers.get_all("webhook-signature").iter().count(), 1);
    verify_with_library(APP_SECRET, &got.body, &got.headers).expect("sync request verifies");
    let mut tampered = got.body.to_vec();
    tampered[0] = b' ';
    assert!(verify_with_library(APP_SECRET, &tampered, &got.headers).is_err(), "a tampered body fails");
    assert!(
        verify_with_library("whsec_plJ3nmyCDGBKInavdOK15jsl", &got.body, &got.headers).is_err(),
        "another secret fails"
    );

    // Queue route: every attempt is signed.
    let body = tampa_body("queued-1", "queued.created");
    assert_eq!(gw.deliver("tampa", &body, None, None).await.status, 202);
    let got = up.next().await;
    assert_eq!(got.uri, "/q");
    assert_eq!(got.headers["webhook-id"], "queued-1");
    verify_with_library(APP_SECRET, &got.body, &got.headers).expect("queued request verifies");

    // A route that turns it off.
    let body = tampa_body("plain-1", "plain.created");
    assert_eq!(gw.deliver("tampa", &body, None, None).await.status, 200);
    let got = up.next().await;
    assert_eq!(got.uri, "/plain");
    assert!(!got.headers.contains_key("webhook-signature"));
    tokio::time::sleep(Duration::from_millis(10)).await;
    gw.shutdown().await;
}

#[test]
fn a_bad_sign_upstream_secret_is_a_config_error_that_does_not_echo_it() {
    let text = r#"
[sources.a]
path = "/a"
provider = "github"
secrets = ["s"]
sign_upstream = "whsec_!!not-base64-secret!!"
[[sources.a.routes]]
events = ["*"]
upstream = "http://127.0.0.1:1/x"
"#;
    let errs = hookgate::config::load_str(text, &|_| None).unwrap_err().to_string();
    assert!(errs.contains("sources.a.sign_upstream: secret is not base64"), "{errs}");
    assert!(!errs.contains("not-base64-secret"), "{errs}");
}
