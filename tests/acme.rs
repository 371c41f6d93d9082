//! SPEC §7 `[server.tls.acme]` end to end against Debian's `pebble` (the ACME
//! test CA), started here on loopback ports: the gateway gets a certificate
//! over TLS-ALPN-01 on its own listen port, serves it, and after a restart
//! serves it again from its cache while the CA is gone; with pebble issuing
//! short-lived certificates, it renews before expiry and serves the new one.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use common::redis::free_port;
use common::tls::{Ca, client_config, request, write};
use common::*;
use http_body_util::Full;

struct Pebble {
    child: Child,
    directory: String,
    management: std::net::SocketAddr,
    ca_pem: String,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Pebble with its HTTPS certificate from a CA made here, validating
/// TLS-ALPN-01 on `tls_port` of `localhost`.
fn start_pebble(dir: &Path, tls_port: u16, validity_secs: Option<u64>) -> Pebble {
    let ca = Ca::new("pebble front CA");
    let leaf = ca.issue(&["localhost", "127.0.0.1"], "pebble");
    let (cert, key) = (write(dir, "pebble.pem", &leaf.cert), write(dir, "pebble.key", &leaf.key));
    let (port, management) = (free_port(), free_port());
    let mut config = serde_json::json!({"pebble": {
        "listenAddress": format!("127.0.0.1:{port}"),
        "managementListenAddress": format!("127.0.0.1:{management}"),
        "certificate": cert, "privateKey": key,
        "httpPort": free_port(), "tlsPort": tls_port,
        "ocspResponderURL": "", "externalAccountBindingRequired": false
    }});
    if let Some(secs) = validity_secs {
        // Pebble's own knob (seconds); rustls-acme renews at 2/3 of the validity.
        config["pebble"]["certificateValidityPeriod"] = secs.into();
    }
    let file = write(dir, "pebble.json", &config.to_string());
    let child = Command::new("pebble")
        .arg("-config")
        .arg(&file)
        .env("PEBBLE_VA_NOSLEEP", "1")
        .env("PEBBLE_WFE_NONCEREJECT", "0")
        .env("PEBBLE_AUTHZREUSE", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("pebble (apt-get install pebble; .ci/run does)");
    Pebble {
        child,
        directory: format!("https://localhost:{port}/dir"),
        management: format!("127.0.0.1:{management}").parse().unwrap(),
        ca_pem: ca.pem(),
    }
}

/// The root pebble signs with (made at its start), from its management API.
async fn pebble_root(p: &Pebble) -> String {
    let client = client_config(&p.ca_pem, &[b"http/1.1"], None);
    for _ in 0..100 {
        let req = http::Request::get("/roots/0").header("host", "localhost").body(Full::new(Bytes::new())).unwrap();
        if let Ok(x) = request(p.management, client.clone(), "localhost", req).await
            && x.status == 200
        {
            return String::from_utf8(x.body.to_vec()).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("pebble's management API did not answer");
}

fn acme_config(upstream: std::net::SocketAddr, directory: &str, directory_ca: &Path, cache: &Path) -> String {
    let top = format!(
        "[server.tls.acme]\ndomains = [\"localhost\"]\ncontact = \"mailto:ops@example.com\"\n\
         directory = \"{directory}\"\ndirectory_ca = \"{}\"\ncache = \"{}\"\n",
        directory_ca.display(),
        cache.display()
    );
    one_route_config(&top, &format!("http://{upstream}/hooks"), "")
}

/// Serves `text` on `listener` (bound by the caller, so pebble knows the port).
async fn serve_on(listener: tokio::net::TcpListener, text: &str) -> (Gateway, tokio::sync::watch::Sender<bool>) {
    let cfg = config(text);
    let app = hookgate::App::new(cfg.clone()).unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, rx) = tokio::sync::watch::channel(false);
    let mut rx2 = rx.clone();
    tokio::spawn(hookgate::server::serve(app.clone(), listener, async move {
        let _ = rx2.wait_for(|s| *s).await;
    }));
    // The usual helper for everything else (its own listener goes unused here).
    let mut gw = spawn_app(app, cfg).await;
    gw.addr = addr;
    (gw, stop)
}

async fn deliver_https(gw: &Gateway, root: &str, id: &str) -> Result<u16, String> {
    let body = tampa_body(id, "x");
    let mut req = http::Request::post(format!("https://localhost:{}/webhooks/tampa", gw.addr.port()));
    for (k, v) in gw.sign("tampa", &body, Some(id), None) {
        req = req.header(k, v);
    }
    let x = request(
        gw.addr,
        client_config(root, &[b"http/1.1"], None),
        "localhost",
        req.body(Full::new(Bytes::from(body))).unwrap(),
    )
    .await?;
    Ok(x.status)
}

/// A gateway on an ACME config, pebble (certificates valid `validity_secs`, or
/// its default) validating on the gateway's port, an upstream, and pebble's root.
struct Setup {
    dir: tempfile::TempDir,
    up: Upstream,
    pebble: Pebble,
    root: String,
    text: String,
    gw: Gateway,
    stop: tokio::sync::watch::Sender<bool>,
}

async fn setup(validity_secs: Option<u64>) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("acme-cache");
    let up = spawn_upstream(ok_upstream()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let pebble = start_pebble(dir.path(), listener.local_addr().unwrap().port(), validity_secs);
    let front_ca = write(dir.path(), "front-ca.pem", &pebble.ca_pem);
    let root = pebble_root(&pebble).await;
    let text = acme_config(up.addr, &pebble.directory, &front_ca, &cache);
    let (gw, stop) = serve_on(listener, &text).await;
    Setup { dir, up, pebble, root, text, gw, stop }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_from_pebble_over_tls_alpn_01_and_from_the_cache_after_a_restart() {
    let Setup { dir: _dir, up, pebble, root, text, gw, stop } = setup(None).await;

    // Handshakes fail until the certificate is there, then succeed with pebble's chain.
    let mut issued = false;
    for _ in 0..300 {
        if let Ok(status) = deliver_https(&gw, &root, "acme-1").await {
            assert_eq!(status, 200);
            issued = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(issued, "a certificate was issued by pebble and served");
    assert_eq!(up.hits(), 1);
    let _ = stop.send(true);
    gw.shutdown().await;
    drop(pebble); // the CA is gone

    // Restart on the same cache: the cached certificate is served at once.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (gw, stop) = serve_on(listener, &text).await;
    let mut served = false;
    for _ in 0..50 {
        if deliver_https(&gw, &root, "acme-2").await == Ok(200) {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served, "the cached certificate is reused without the CA");
    let _ = stop.send(true);
    gw.shutdown().await;
}

/// The certificate the gateway serves now, if a handshake succeeds.
async fn served_cert(gw: &Gateway, root: &str) -> Option<Vec<u8>> {
    let req = http::Request::get("/healthz").header("host", "localhost").body(Full::new(Bytes::new())).unwrap();
    request(gw.addr, client_config(root, &[b"http/1.1"], None), "localhost", req).await.ok().map(|x| x.peer_cert)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_lived_certificate_is_renewed_before_it_expires() {
    let Setup { dir: _dir, up: _up, pebble: _pebble, root, text: _, gw, stop } = setup(Some(15)).await;

    let started = std::time::Instant::now();
    let mut first = None;
    while first.is_none() && started.elapsed() < Duration::from_secs(30) {
        first = served_cert(&gw, &root).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first = first.expect("a first certificate was issued");
    let issued = std::time::Instant::now();
    // Valid for 15 s: the renewal is due after ~10 s; every handshake until then
    // and after it succeeds (no gap while the order runs).
    let mut renewed = None;
    while renewed.is_none() && issued.elapsed() < Duration::from_secs(60) {
        let cert = served_cert(&gw, &root).await.expect("handshakes keep succeeding during the renewal");
        if cert != first {
            renewed = Some(issued.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = renewed.expect("the certificate was renewed");
    assert!(after < Duration::from_secs(15), "renewed before the first one expired (after {after:?})");
    assert_eq!(deliver_https(&gw, &root, "renewed-1").await, Ok(200));
    let _ = stop.send(true);
    gw.shutdown().await;
}

#[test]
fn acme_keys_are_checked() {
    let text = "[server.tls]\ncert = \"/x.pem\"\n[server.tls.acme]\ndomains = []\ncontact = \"ops@example.com\"\ndirectory = \"http://ca\"\nbogus = 1\n\
                [sources.a]\npath = \"/a\"\nprovider = \"github\"\nsecrets = [\"s\"]\n";
    let errs = hookgate::config::load_str(text, &|_| None).unwrap_err().to_string();
    for want in [
        "server.tls: set either cert and key, or [server.tls.acme], not both",
        "server.tls.acme.domains:",
        "server.tls.acme.directory: must be an https:// URL",
        "server.tls.acme.contact[0]: use mailto:ADDRESS",
        "server.tls.acme.bogus: unknown key",
    ] {
        assert!(errs.contains(want), "missing {want:?} in\n{errs}");
    }
}
