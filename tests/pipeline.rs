//! SPEC §3 end to end: every row of the status table the core owns, the header
//! rules, claim release, and concurrent copies of one delivery.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

mod common;

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use common::*;

async fn setup(extra_source: &str, extra_top: &str) -> (Gateway, Upstream) {
    let up = spawn_upstream(ok_upstream()).await;
    let gw = spawn_gateway(&tampa_config(up.addr, extra_source, extra_top)).await;
    (gw, up)
}

#[tokio::test]
async fn forwards_a_verified_delivery_with_body_and_headers() {
    let (gw, mut up) = setup("", "").await;
    let body = tampa_body("del-1", "dev.tampa.event.created");
    let mut headers = gw.sign("tampa", &body, None, None);
    headers.extend(h(&[
        ("X-Hookgate-Verified", "forged"),
        ("X-Hookgate-Source", "evil"),
        ("Connection", "X-Secret-Hop"),
        ("X-Secret-Hop", "1"),
        ("X-Forwarded-For", "198.51.100.1"),
        ("Host", "hooks.example.com"),
        ("X-Custom", "kept"),
    ]));
    let r = send(&gw.url("/webhooks/tampa?a=1&b=two"), "POST", &headers, body.clone()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "upstream-ok", "upstream body relayed");
    assert_eq!(r.headers["x-upstream"], "yes", "upstream headers relayed");

    let got = up.next().await;
    assert_eq!(got.method, "POST");
    assert_eq!(got.uri, "/hooks/events?a=1&b=two", "first matching route, query appended");
    assert_eq!(got.body, Bytes::from(body), "body byte for byte");
    let hd = &got.headers;
    assert_eq!(hd["x-hookgate-verified"], "true");
    assert_eq!(hd["x-hookgate-source"], "tampa");
    assert_eq!(hd["x-hookgate-delivery-id"], "del-1");
    assert_eq!(hd["x-hookgate-event-type"], "dev.tampa.event.created");
    assert_eq!(hd.get_all("x-hookgate-verified").iter().count(), 1);
    assert!(!hd.contains_key("x-secret-hop"), "header named by Connection is hop-by-hop");
    assert_eq!(hd["x-forwarded-for"], "198.51.100.1, 127.0.0.1");
    assert_eq!(hd["x-forwarded-proto"], "http");
    assert_eq!(hd["x-forwarded-host"], "hooks.example.com");
    assert_eq!(hd["host"], up.addr.to_string().as_str(), "Host names the upstream");
    assert_eq!(hd["x-custom"], "kept");
    assert!(hd.contains_key("x-webhook-signature"), "end-to-end headers pass through");
    gw.shutdown().await;
}

#[tokio::test]
async fn status_table_rows_before_verification() {
    let (gw, up) = setup("", "[server]\nmax_body_bytes = 300").await;
    // route
    let r = send(&gw.url("/nowhere"), "POST", &[], "x").await;
    assert_eq!((r.status.as_u16(), r.error_code().as_str()), (404, "not_found"));
    // method
    let r = send(&gw.url("/webhooks/tampa"), "GET", &[], "").await;
    assert_eq!((r.status.as_u16(), r.error_code().as_str()), (405, "method_not_allowed"));
    // size: exactly the limit is accepted (then fails verification), one more byte is 413
    let exact = "x".repeat(300);
    let r = send(&gw.url("/webhooks/tampa"), "POST", &[], exact).await;
    assert_eq!(r.status, 401, "a body of exactly max_body_bytes is read: {}", r.text());
    let r = send(&gw.url("/webhooks/tampa"), "POST", &[], "x".repeat(301)).await;
    assert_eq!((r.status.as_u16(), r.error_code().as_str()), (413, "payload_too_large"));
    // chunked body (no Content-Length) over the limit
    let chunks = futures_stream(vec![Bytes::from("y".repeat(200)), Bytes::from("y".repeat(200))]);
    let r = send_stream(&gw.url("/webhooks/tampa"), &[], chunks).await;
    assert_eq!(r.0, 413, "the limit applies to chunked bodies too");
    assert_eq!(up.hits(), 0);
    gw.shutdown().await;
}

/// A body sent in chunks, without Content-Length.
fn futures_stream(parts: Vec<Bytes>) -> tokio::sync::mpsc::Receiver<Bytes> {
    let (tx, rx) = tokio::sync::mpsc::channel(parts.len().max(1));
    for p in parts {
        tx.try_send(p).unwrap();
    }
    rx
}

async fn send_stream(
    url: &str,
    headers: &[(String, String)],
    mut rx: tokio::sync::mpsc::Receiver<Bytes>,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let uri: http::Uri = url.parse().unwrap();
    let mut s = tokio::net::TcpStream::connect(uri.authority().unwrap().as_str()).await.unwrap();
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    let head = format!("POST {} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n{extra}\r\n", uri.path());
    s.write_all(head.as_bytes()).await.unwrap();
    while let Ok(chunk) = rx.try_recv() {
        let _ = s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()).await;
        let _ = s.write_all(&chunk).await;
        let _ = s.write_all(b"\r\n").await;
    }
    let _ = s.write_all(b"0\r\n\r\n").await;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, text)
}

#[tokio::test]
async fn a_chunked_delivery_is_verified_and_forwarded_byte_for_byte() {
    let (gw, mut up) = setup("", "").await;
    let body = tampa_body("evt_chunked", "a.b");
    let headers = gw.sign("tampa", &body, Some("evt_chunked"), Some("a.b"));
    let (a, rest) = body.split_at(7);
    let (b, c) = rest.split_at(rest.len() / 2);
    let chunks = futures_stream([a, b, c].iter().map(|p| Bytes::copy_from_slice(p.as_bytes())).collect());
    let (status, text) = send_stream(&gw.url("/webhooks/tampa"), &headers, chunks).await;
    assert_eq!(status, 200, "{text}");
    let got = up.rx.recv().await.unwrap();
    assert_eq!(got.body, body.as_bytes(), "the frames are joined in order, byte for byte");
    gw.shutdown().await;
}

#[tokio::test]
async fn verification_rows() {
    let (gw, up) = setup("", "").await;
    let body = tampa_body("evt_v", "a.b");
    let url = gw.url("/webhooks/tampa");
    // missing signature
    let r = send(&url, "POST", &[], body.clone()).await;
    assert_eq!((r.status.as_u16(), r.error_code().as_str()), (401, "missing_signature"));
    // undecodable signature
    let r = send(&url, "POST", &h(&[("X-Webhook-Signature", "sha256=zz-not-hex")]), body.clone()).await;
    assert_eq!((r.status.as_u16(), r.error_code().as_str()), (400, "malformed_signature"));
    // wrong signature
    let wrong = format!("sha256={}", "ab".repeat(32));
    let r = send(&url, "POST", &h(&[("X-Webhook-Signature", &wrong)]), body.clone()).await;
    assert_eq!((r.status.as_u16(), r.error_code().as_str()), (401, "invalid_signature"));
    // tampered body
    let headers = gw.sign("tampa", &body, None, None);
    let r = send(&url, "POST", &headers, body.replace("a.b", "a.c")).await;
    assert_eq!((r.status.as_u16(), r.error_code().as_str()), (401, "invalid_signature"));
    // stale and future timestamps
    for offset in [-301i64, 301] {
        let at = if offset < 0 {
            SystemTime::now() - Duration::from_secs(offset.unsigned_abs())
        } else {
            SystemTime::now() + Duration::from_secs(offset as u64)
        };
        let body = tampa_body_at("evt_s", "a.b", at);
        let headers = gw.sign("tampa", &body, None, None);
        let r = send(&url, "POST", &headers, body).await;
        assert_eq!((r.status.as_u16(), r.error_code().as_str()), (401, "stale_timestamp"), "offset {offset}");
    }
    // timestamp missing from a scheme that has one
    let body = r#"{"id":"x","type":"a.b"}"#;
    let headers = gw.sign("tampa", body, None, None);
    let r = send(&url, "POST", &headers, body).await;
    assert_eq!((r.status.as_u16(), r.error_code().as_str()), (401, "missing_timestamp"));
    assert_eq!(up.hits(), 0, "nothing unverified is forwarded");
    let text = r.text();
    assert!(!text.contains(SECRET));
    gw.shutdown().await;
}

#[tokio::test]
async fn header_timestamp_that_is_not_a_number_is_400() {
    let up = spawn_upstream(ok_upstream()).await;
    let cfg = format!(
        r#"[sources.sw]
path = "/sw"
provider = "standard-webhooks"
secrets = ["whsec_c2VjcmV0"]
[[sources.sw.routes]]
events = ["*"]
upstream = "http://{}/"
"#,
        up.addr
    );
    let gw = spawn_gateway(&cfg).await;
    let body = r#"{"type":"x"}"#;
    let mut headers = gw.sign("sw", body, Some("msg_1"), None);
    for (k, v) in headers.iter_mut() {
        if k == "webhook-timestamp" {
            *v = "yesterday".into();
        }
    }
    let r = send(&gw.url("/sw"), "POST", &headers, body).await;
    assert_eq!((r.status.as_u16(), r.error_code().as_str()), (400, "malformed_timestamp"));
    gw.shutdown().await;
}

#[tokio::test]
async fn test_ping_is_answered_not_forwarded_and_must_be_signed() {
    let (gw, up) = setup("", "").await;
    let body = tampa_body("evt_ping", "test.ping");
    let r = gw.deliver("tampa", &body, None, None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), serde_json::json!({"ok": true}));
    let r = send(&gw.url("/webhooks/tampa"), "POST", &[], body).await;
    assert_eq!(r.status, 401, "an unsigned ping is refused");
    assert_eq!(up.hits(), 0);
    gw.shutdown().await;
}

#[tokio::test]
async fn duplicates_are_acknowledged_not_forwarded() {
    let (gw, up) = setup("", "").await;
    let body = tampa_body("evt_dup", "order.created");
    let r = gw.deliver("tampa", &body, None, None).await;
    assert_eq!(r.status, 200);
    assert!(!r.headers.contains_key("x-hookgate-duplicate"));
    let r = gw.deliver("tampa", &body, None, None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["x-hookgate-duplicate"], "true");
    assert_eq!(up.hits(), 1);
    // The ID is the signed body's: another ID in the unsigned header is refused (SPEC §10).
    let mut forged = gw.sign("tampa", &body, None, None);
    forged.retain(|(k, _)| !k.eq_ignore_ascii_case("x-delivery-id"));
    forged.push(("X-Delivery-ID".into(), "other-id".into()));
    let r = send(&gw.url("/webhooks/tampa"), "POST", &forged, body.clone()).await;
    assert_eq!(r.status, 401);
    assert_eq!(up.hits(), 1);
    assert!(gw.metrics().await.contains("hookgate_dedupe_hits_total{source=\"tampa\"} 1"));
    gw.shutdown().await;
}

#[tokio::test]
async fn in_flight_copy_gets_409_with_retry_after() {
    let up = spawn_upstream(Behavior::Answer(200, "slow", Duration::from_millis(600))).await;
    let gw = spawn_gateway(&tampa_config(up.addr, "", "")).await;
    let body = tampa_body("evt_flight", "x");
    let headers = gw.sign("tampa", &body, None, None);
    let url = gw.url("/webhooks/tampa");
    let first = tokio::spawn({
        let (url, headers, body) = (url.clone(), headers.clone(), body.clone());
        async move { send(&url, "POST", &headers, body).await }
    });
    let mut up = up;
    up.next().await; // the first copy reached the upstream and is in flight
    let r = send(&url, "POST", &headers, body).await;
    assert_eq!((r.status.as_u16(), r.error_code().as_str()), (409, "in_flight"));
    assert!(r.headers.contains_key("retry-after"));
    assert_eq!(first.await.unwrap().status, 200);
    gw.shutdown().await;
}

#[tokio::test]
async fn claim_is_released_after_upstream_failure_so_retries_go_through() {
    let up = spawn_upstream(Behavior::Answer(503, "down", Duration::ZERO)).await;
    let gw = spawn_gateway(&tampa_config(up.addr, "", "")).await;
    let body = tampa_body("evt_retry", "x");
    let r = gw.deliver("tampa", &body, None, None).await;
    assert_eq!(r.status, 503, "upstream status relayed");
    assert_eq!(r.text(), "down");
    up.set(Behavior::Answer(404, "nope", Duration::ZERO));
    let r = gw.deliver("tampa", &body, None, None).await;
    assert_eq!(r.status, 404, "upstream 4xx relayed and released too");
    up.set(ok_upstream());
    let r = gw.deliver("tampa", &body, None, None).await;
    assert_eq!(r.status, 200);
    assert!(!r.headers.contains_key("x-hookgate-duplicate"));
    let r = gw.deliver("tampa", &body, None, None).await;
    assert_eq!(r.headers["x-hookgate-duplicate"], "true");
    assert_eq!(up.hits(), 3);
    gw.shutdown().await;
}

#[tokio::test]
async fn unreachable_timeout_and_hangup_upstreams() {
    // refused
    let dead = dead_addr().await;
    let gw = spawn_gateway(&tampa_config(dead, "", "")).await;
    let body = tampa_body("evt_dead", "x");
    let r = gw.deliver("tampa", &body, None, None).await;
    assert_eq!((r.status.as_u16(), r.error_code().as_str()), (502, "upstream_unreachable"));
    gw.shutdown().await;

    // timeout (route timeout is 2s), then the retry is forwarded again
    let up = spawn_upstream(Behavior::Answer(200, "late", Duration::from_secs(4))).await;
    let gw = spawn_gateway(&tampa_config(up.addr, "", "")).await;
    let started = std::time::Instant::now();
    let r = gw.deliver("tampa", &body, None, None).await;
    assert_eq!((r.status.as_u16(), r.error_code().as_str()), (504, "upstream_timeout"));
    assert!(started.elapsed() < Duration::from_secs(4));
    up.set(ok_upstream());
    let r = gw.deliver("tampa", &body, None, None).await;
    assert_eq!(r.status, 200, "claim released after timeout");
    gw.shutdown().await;

    // closes without answering
    let up = spawn_upstream(Behavior::Hangup).await;
    let gw = spawn_gateway(&tampa_config(up.addr, "", "")).await;
    let r = gw.deliver("tampa", &body, None, None).await;
    assert_eq!((r.status.as_u16(), r.error_code().as_str()), (502, "upstream_unreachable"));
    up.set(ok_upstream());
    let r = gw.deliver("tampa", &body, None, None).await;
    assert_eq!(r.status, 200, "claim released after hangup");
    gw.shutdown().await;
}

#[tokio::test]
async fn routing_first_match_ack_and_reject() {
    let mut up = spawn_upstream(ok_upstream()).await;
    let cfg = format!(
        r#"[sources.a]
path = "/a"
provider = "tampa"
secrets = ["{SECRET}"]
[[sources.a.routes]]
events = ["order.*", "user.signup"]
upstream = "http://{0}/orders"
[[sources.a.routes]]
events = ["order.created"]
upstream = "http://{0}/never"
[sources.b]
path = "/b"
provider = "tampa"
secrets = ["{SECRET}"]
unrouted = "reject"
[[sources.b.routes]]
events = ["only.this"]
upstream = "http://{0}/b"
"#,
        up.addr
    );
    let gw = spawn_gateway(&cfg).await;
    let r = gw.deliver("a", &tampa_body("1", "order.created"), None, None).await;
    assert_eq!(r.status, 200);
    assert_eq!(up.next().await.uri, "/orders");
    let r = gw.deliver("a", &tampa_body("2", "user.signup"), None, None).await;
    assert_eq!(r.status, 200);
    assert_eq!(up.next().await.uri, "/orders");
    let r = gw.deliver("a", &tampa_body("3", "invoice.paid"), None, None).await;
    assert_eq!(r.status, 202, "unrouted = ack");
    let r = gw.deliver("b", &tampa_body("4", "other"), None, None).await;
    assert_eq!((r.status.as_u16(), r.error_code().as_str()), (404, "no_route"));
    assert_eq!(up.hits(), 2);
    gw.shutdown().await;
}

#[tokio::test]
async fn fifty_concurrent_copies_reach_the_upstream_once() {
    let up = spawn_upstream(Behavior::Answer(200, "ok", Duration::from_millis(200))).await;
    let gw = spawn_gateway(&tampa_config(up.addr, "", "")).await;
    let body = tampa_body("evt_storm", "x");
    let headers = gw.sign("tampa", &body, None, None);
    let url = gw.url("/webhooks/tampa");
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (url, headers, body) = (url.clone(), headers.clone(), body.clone());
            tokio::spawn(async move { send(&url, "POST", &headers, body).await.status.as_u16() })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    assert_eq!(up.hits(), 1, "statuses: {statuses:?}");
    assert!(statuses.iter().all(|s| *s == 200 || *s == 409), "{statuses:?}");
    assert!(statuses.contains(&200));
    gw.shutdown().await;
}

#[tokio::test]
async fn memory_store_evicts_the_oldest_id_first() {
    let up = spawn_upstream(ok_upstream()).await;
    let gw = spawn_gateway(&tampa_config(up.addr, "", "[dedupe]\nmax_entries = 2")).await;
    for id in ["a", "b", "c"] {
        assert_eq!(gw.deliver("tampa", &tampa_body(id, "x"), None, None).await.status, 200);
    }
    // "a" was remembered longest ago and is gone; "c" is remembered.
    let r = gw.deliver("tampa", &tampa_body("c", "x"), None, None).await;
    assert_eq!(r.headers["x-hookgate-duplicate"], "true");
    let r = gw.deliver("tampa", &tampa_body("a", "x"), None, None).await;
    assert!(!r.headers.contains_key("x-hookgate-duplicate"));
    assert_eq!(up.hits(), 4);
    gw.shutdown().await;
}

#[tokio::test]
async fn generic_source_with_hand_set_fields() {
    let mut up = spawn_upstream(ok_upstream()).await;
    let cfg = format!(
        r#"[sources.g]
path = "/g"
provider = "generic"
secrets = ["k1"]
tolerance = "1m"
[sources.g.verify]
signature_header = "X-Sig"
algorithm = "sha1"
encoding = "base64"
signature_prefix = "sha1="
signed_payload = "{{timestamp}}.{{body}}"
timestamp = "header:X-Ts"
timestamp_format = "unix"
id = "json:/uid"
event_type = "header:X-Kind"
[[sources.g.routes]]
events = ["*"]
upstream = "http://{}/g"
"#,
        up.addr
    );
    let gw = spawn_gateway(&cfg).await;
    let body = r#"{"uid": 42}"#;
    let r = gw.deliver("g", body, None, Some("thing.done")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let got = up.next().await;
    assert_eq!(got.headers["x-hookgate-delivery-id"], "42");
    assert_eq!(got.headers["x-hookgate-event-type"], "thing.done");
    gw.shutdown().await;
}

#[tokio::test]
async fn body_hash_is_the_id_when_none_is_sent() {
    let mut up = spawn_upstream(ok_upstream()).await;
    let cfg = format!(
        "[sources.z]\npath = \"/z\"\nprovider = \"zoom\"\nsecrets = [\"zs\"]\n[[sources.z.routes]]\nevents = [\"*\"]\nupstream = \"http://{}/z\"\n",
        up.addr
    );
    let gw = spawn_gateway(&cfg).await;
    let body = r#"{"event":"meeting.started","payload":{}}"#;
    assert_eq!(gw.deliver("z", body, None, None).await.status, 200);
    let got = up.next().await;
    let want = hookgate::verify::body_hash(body.as_bytes());
    assert_eq!(got.headers["x-hookgate-delivery-id"], want.as_str());
    assert_eq!(gw.deliver("z", body, None, None).await.headers["x-hookgate-duplicate"], "true");
    gw.shutdown().await;
}

/// Runs on one thread (the default test runtime), like one gateway worker.
#[tokio::test]
async fn upstream_connections_are_reused_and_closed_ones_replaced() {
    let up = spawn_upstream(ok_upstream()).await;
    let gw = spawn_gateway(&tampa_config(up.addr, "", "")).await;
    for i in 0..5 {
        assert_eq!(gw.deliver("tampa", &tampa_body(&format!("reuse-{i}"), "x"), None, None).await.status, 200);
    }
    assert_eq!(up.hits(), 5);
    assert_eq!(up.connections.load(std::sync::atomic::Ordering::SeqCst), 1, "one pooled connection");

    // An upstream that closes after each answer: every delivery still succeeds.
    up.set(Behavior::AnswerAndClose);
    for i in 0..3 {
        let r = gw.deliver("tampa", &tampa_body(&format!("close-{i}"), "x"), None, None).await;
        assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "closing"));
    }
    assert_eq!(up.hits(), 8);
    gw.shutdown().await;
}

#[tokio::test]
async fn bodiless_upstream_answers_keep_the_connection() {
    let up = spawn_upstream(Behavior::Answer(204, "", Duration::ZERO)).await;
    let gw = spawn_gateway(&tampa_config(up.addr, "", "")).await;
    for i in 0..4 {
        let r = gw.deliver("tampa", &tampa_body(&format!("nc-{i}"), "x"), None, None).await;
        assert_eq!(r.status, 204);
        assert!(r.body.is_empty());
    }
    assert_eq!(up.connections.load(std::sync::atomic::Ordering::SeqCst), 1);
    // 204 is a 2xx: committed.
    let r = gw.deliver("tampa", &tampa_body("nc-0", "x"), None, None).await;
    assert_eq!(r.headers["x-hookgate-duplicate"], "true");
    gw.shutdown().await;
}

/// An app answering HTTP/1.0 does not make hookgate answer the sender in HTTP/1.0.
#[tokio::test]
async fn the_sender_is_answered_in_its_own_http_version() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app_addr = app.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = app.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
            });
        }
    });
    let gw = spawn_gateway(&tampa_config(app_addr, "", "")).await;
    let mut conn = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    for id in ["v-1", "v-2"] {
        let body = tampa_body(id, "x");
        let mut req = format!("POST /webhooks/tampa HTTP/1.1\r\nHost: hooks\r\nContent-Length: {}\r\n", body.len());
        for (k, v) in gw.sign("tampa", &body, Some(id), None) {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(&body);
        conn.write_all(req.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\nok") {
            let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut byte)).await.unwrap().unwrap();
            assert_eq!(n, 1, "the connection stays open for the next request: {}", String::from_utf8_lossy(&head));
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head);
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    }
    gw.shutdown().await;
}

/// A sender that hangs up while the app is still working: the forward is
/// finished anyway (bounded by the route timeout) and the claim committed, so
/// the sender's retry is a duplicate and the app sees the delivery once.
#[tokio::test]
async fn a_sender_hanging_up_mid_forward_does_not_cause_a_second_delivery() {
    use tokio::io::AsyncWriteExt;
    let up = spawn_upstream(Behavior::Answer(200, "slow", Duration::from_millis(600))).await;
    let gw = spawn_gateway(&tampa_config(up.addr, "", "")).await;
    let body = tampa_body("hang-1", "x");
    let mut req = format!("POST /webhooks/tampa HTTP/1.1\r\nHost: hooks\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in gw.sign("tampa", &body, Some("hang-1"), None) {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(&body);
    let mut conn = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    conn.write_all(req.as_bytes()).await.unwrap();
    assert!(eventually(Duration::from_secs(5), async || up.hits() == 1).await, "the app has it");
    drop(conn); // the sender gives up while the app is still answering
    let retried = eventually(Duration::from_secs(5), async || {
        let r = gw.deliver("tampa", &body, Some("hang-1"), None).await;
        r.status == 200 && r.headers.get("x-hookgate-duplicate").is_some_and(|v| v == "true")
    })
    .await;
    assert!(retried, "the retry is answered as a duplicate once the app's 2xx was recorded");
    assert_eq!(up.hits(), 1, "the app saw the delivery once");
    gw.shutdown().await;
}

/// A body with a duplicated key is read as the app reads it (the last one wins):
/// routing, the ID and the event type agree with what serde_json or JSON.parse see.
#[tokio::test]
async fn duplicated_json_keys_are_read_as_the_app_reads_them() {
    let (gw, mut up) = setup("", "").await;
    let ts = humantime::format_rfc3339_seconds(SystemTime::now());
    let body = format!(
        r#"{{"id":"dup-first","type":"other.kind","timestamp":"{ts}","id":"dup-last","type":"dev.tampa.event.created"}}"#
    );
    let headers: Vec<(String, String)> = gw
        .sign("tampa", &body, None, None)
        .into_iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("x-delivery-id") && !k.eq_ignore_ascii_case("x-event-type"))
        .collect();
    let r = send(&gw.url("/webhooks/tampa"), "POST", &headers, body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let got = up.next().await;
    assert_eq!(got.uri, "/hooks/events", "routed by the last \"type\"");
    assert_eq!(got.headers["x-hookgate-event-type"], "dev.tampa.event.created");
    assert_eq!(got.headers["x-hookgate-delivery-id"], "dup-last");
    gw.shutdown().await;
}
