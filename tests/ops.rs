//! Protection and operations in-process: rate limits, allowlists with trusted
//! proxies, slow clients, admin endpoints, reload.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn rate_limit_gives_429_with_retry_after_after_the_burst() {
    let up = spawn_upstream(ok_upstream()).await;
    let gw = spawn_gateway(&tampa_config(up.addr, "rate_limit = { per_second = 1, burst = 3 }", "")).await;
    let mut statuses = Vec::new();
    for i in 0..5 {
        let r = gw.deliver("tampa", &tampa_body(&format!("rl-{i}"), "x"), None, None).await;
        if r.status == 429 {
            assert_eq!(r.error_code(), "rate_limited");
            let secs: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
            assert!((1..=2).contains(&secs), "{secs}");
        }
        statuses.push(r.status.as_u16());
    }
    assert_eq!(&statuses[..3], &[200, 200, 200]);
    assert_eq!(statuses[4], 429, "{statuses:?}");
    // Checked before the body is read or verified: an unsigned request is also 429.
    let r = send(&gw.url("/webhooks/tampa"), "POST", &[], "x").await;
    assert_eq!(r.status, 429);
    assert!(gw.metrics().await.contains("hookgate_requests_total{source=\"tampa\",outcome=\"rate_limited\"}"));
    gw.shutdown().await;
}

#[tokio::test]
async fn allowlist_and_trusted_proxies() {
    let up = spawn_upstream(ok_upstream()).await;
    // Peer 127.0.0.1 is not in the allowlist.
    let gw = spawn_gateway(&tampa_config(up.addr, "allow_ips = [\"10.0.0.0/8\", \"2001:db8::/32\"]", "")).await;
    let r = gw.deliver("tampa", &tampa_body("ip-1", "x"), None, None).await;
    assert_eq!((r.status.as_u16(), r.error_code().as_str()), (403, "forbidden"));
    // An untrusted peer's X-Forwarded-For is ignored.
    let body = tampa_body("ip-2", "x");
    let mut headers = gw.sign("tampa", &body, None, None);
    headers.push(("X-Forwarded-For".into(), "10.1.2.3".into()));
    assert_eq!(send(&gw.url("/webhooks/tampa"), "POST", &headers, body.clone()).await.status, 403);
    gw.shutdown().await;

    // With loopback as a trusted proxy, the rightmost untrusted hop is the client.
    let gw = spawn_gateway(&tampa_config(
        up.addr,
        "allow_ips = [\"10.0.0.0/8\", \"2001:db8::/32\"]",
        "[server]\ntrusted_proxies = [\"127.0.0.1/32\", \"192.168.0.0/16\"]",
    ))
    .await;
    let url = gw.url("/webhooks/tampa");
    for (xff, want) in [
        ("10.1.2.3", 200),
        ("203.0.113.5, 10.1.2.3, 192.168.1.1", 200),
        ("10.1.2.3, 203.0.113.5", 403),
        ("2001:db8::7", 200),
    ] {
        let body = tampa_body(&format!("xff-{xff}"), "x");
        let mut headers = gw.sign("tampa", &body, None, None);
        headers.push(("X-Forwarded-For".into(), xff.into()));
        assert_eq!(send(&url, "POST", &headers, body).await.status, want, "{xff}");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn a_trickling_client_is_cut_off_while_others_are_served() {
    let up = spawn_upstream(ok_upstream()).await;
    let gw = spawn_gateway(&tampa_config(up.addr, "", "[server]\nrequest_timeout = \"1s\"")).await;

    // Body trickle: headers complete, then one byte every 200ms of a 100-byte body.
    let addr = gw.addr;
    let trickle = tokio::spawn(async move {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"POST /webhooks/tampa HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n").await.unwrap();
        let started = Instant::now();
        let mut buf = vec![0u8; 1024];
        for _ in 0..100 {
            if s.write_all(b"a").await.is_err() {
                break;
            }
            match tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return (started.elapsed(), String::new()),
                Ok(Ok(n)) => {
                    return (started.elapsed(), String::from_utf8_lossy(&buf[..n]).into_owned());
                }
                Err(_) => {}
            }
        }
        (started.elapsed(), "never cut off".into())
    });
    // Header trickle: never finishes the head.
    let header_trickle = tokio::spawn(async move {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let started = Instant::now();
        let mut buf = [0u8; 256];
        for b in b"POST /webhooks/tampa HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter() {
            if s.write_all(&[*b]).await.is_err() {
                break;
            }
            if tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await.is_ok() {
                return started.elapsed();
            }
        }
        Duration::MAX
    });
    // Meanwhile a well-behaved delivery succeeds.
    let r = gw.deliver("tampa", &tampa_body("good", "x"), None, None).await;
    assert_eq!(r.status, 200);

    let (elapsed, answer) = trickle.await.unwrap();
    assert!(elapsed < Duration::from_secs(3), "body trickle cut off after {elapsed:?}");
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "{answer}");
    let elapsed = header_trickle.await.unwrap();
    assert!(elapsed < Duration::from_secs(3), "header trickle cut off after {elapsed:?}");
    gw.shutdown().await;
}

#[tokio::test]
async fn admin_endpoints_and_counters() {
    let up = spawn_upstream(ok_upstream()).await;
    let gw = spawn_gateway(&tampa_config(up.addr, "", "")).await;
    let admin = |p: &str| format!("http://{}{p}", gw.admin);
    assert_eq!(send(&admin("/healthz"), "GET", &[], "").await.status, 200);
    assert_eq!(send(&admin("/readyz"), "GET", &[], "").await.status, 200);
    assert_eq!(send(&admin("/nope"), "GET", &[], "").await.status, 404);

    let body = tampa_body("m-1", "dev.tampa.event.x");
    gw.deliver("tampa", &body, None, None).await;
    gw.deliver("tampa", &body, None, None).await;
    send(&gw.url("/webhooks/tampa"), "POST", &[], "x").await;
    send(&gw.url("/unknown"), "POST", &[], "x").await;
    let m = gw.metrics().await;
    for want in [
        "hookgate_requests_total{source=\"tampa\",outcome=\"forwarded\"} 1",
        "hookgate_requests_total{source=\"tampa\",outcome=\"duplicate\"} 1",
        "hookgate_requests_total{source=\"tampa\",outcome=\"missing_signature\"} 1",
        "hookgate_requests_total{source=\"\",outcome=\"not_found\"} 1",
        "hookgate_dedupe_hits_total{source=\"tampa\"} 1",
        "hookgate_store_errors_total 0",
        "hookgate_upstream_duration_seconds_bucket{le=\"+Inf\",source=\"tampa\",route=\"0\"} 1",
        "hookgate_upstream_duration_seconds_count{source=\"tampa\",route=\"0\"} 1",
        "# TYPE hookgate_upstream_duration_seconds histogram",
    ] {
        assert!(m.contains(want), "missing {want:?} in\n{m}");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn reload_swaps_routes_and_keeps_memory_dedupe() {
    let mut up = spawn_upstream(ok_upstream()).await;
    let text = tampa_config(up.addr, "", "");
    let gw = spawn_gateway(&text).await;
    let body = tampa_body("rl-1", "other");
    gw.deliver("tampa", &body, None, None).await;
    assert_eq!(up.next().await.uri, "/hooks");

    let new_text = text.replace("/hooks\"\n", "/v2\"\n");
    gw.app.reload(config(&new_text)).unwrap();
    gw.deliver("tampa", &tampa_body("rl-2", "other"), None, None).await;
    assert_eq!(up.next().await.uri, "/v2", "new route in force");
    let r = gw.deliver("tampa", &body, None, None).await;
    assert_eq!(r.headers["x-hookgate-duplicate"], "true", "memory store kept across reload");
    gw.shutdown().await;
}

#[tokio::test]
async fn http2_cleartext_works() {
    let mut up = spawn_upstream(ok_upstream()).await;
    let gw = spawn_gateway(&tampa_config(up.addr, "", "")).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let body = tampa_body("h2", "x");
    let headers = gw.sign("tampa", &body, None, None);
    let r = send_with(&client, &gw.url("/webhooks/tampa"), "POST", &headers, body.clone()).await;
    assert_eq!(r.status, 200);
    let got = up.next().await;
    assert_eq!(got.body, body.as_bytes());
    assert!(got.headers.contains_key("x-forwarded-host"));
    gw.shutdown().await;
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_for_a_free_slot() {
    let up = spawn_upstream(ok_upstream()).await;
    let gw = spawn_gateway(&tampa_config(up.addr, "", "[server]\nmax_connections = 1")).await;
    // One client holds the only slot with an open keep-alive connection.
    let client = client();
    let r = send_with(&client, &gw.url("/webhooks/tampa"), "GET", &[], "").await;
    assert_eq!(r.status, 405);
    let waiting = tokio::spawn({
        let url = gw.url("/webhooks/tampa");
        async move { send(&url, "GET", &[], "").await.status }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "a second connection is not served while the cap is reached");
    drop(client); // closes the pooled connection and frees the slot
    let status =
        tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("served once the slot frees").unwrap();
    assert_eq!(status, 405);
    gw.shutdown().await;
}
