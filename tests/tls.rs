//! SPEC §7 with real handshakes: the HTTPS listener (HTTP/1.1 and h2 by ALPN,
//! ECDSA and Ed25519 keys), mTLS accepted and refused, certificates swapped
//! by a reload, https upstreams with a private CA (and a wrong certificate:
//! 502, nothing forwarded), Unix-socket upstreams. Certificates are made in
//! the test with rcgen.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

mod common;

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use common::tls::{Ca, Leaf, client_config, request, server_config, write};
use common::*;
use http_body_util::Full;

fn tls_table(dir: &Path, leaf: &Leaf, client_ca: Option<&str>) -> String {
    let cert = write(dir, "cert.pem", &leaf.cert);
    let key = write(dir, "key.pem", &leaf.key);
    let ca = client_ca.map(|pem| write(dir, "clients.pem", pem));
    let mut t = format!("[server.tls]\ncert = \"{}\"\nkey = \"{}\"\n", cert.display(), key.display());
    if let Some(ca) = ca {
        t.push_str(&format!("client_ca = \"{}\"\n", ca.display()));
    }
    t
}

/// A signed tampa delivery as an HTTP request for `uri`.
fn delivery(gw: &Gateway, uri: &str, id: &str) -> http::Request<Full<Bytes>> {
    let body = tampa_body(id, "dev.tampa.event.created");
    let mut req = http::Request::builder().method("POST").uri(uri);
    for (k, v) in gw.sign("tampa", &body, Some(id), None) {
        req = req.header(k, v);
    }
    req.body(Full::new(Bytes::from(body))).unwrap()
}

#[tokio::test]
async fn the_listener_speaks_https_with_http1_and_h2() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("hookgate test CA");
    let leaf = ca.issue(&["localhost", "127.0.0.1"], "hooks.test");
    let mut up = spawn_upstream(ok_upstream()).await;
    let gw = spawn_gateway(&tampa_config(up.addr, "", &tls_table(dir.path(), &leaf, None))).await;
    let url = format!("https://localhost:{}/webhooks/tampa", gw.addr.port());
    for (alpn, id, version) in
        [(&b"http/1.1"[..], "tls-h1", http::Version::HTTP_11), (&b"h2"[..], "tls-h2", http::Version::HTTP_2)]
    {
        let client = client_config(&ca.pem(), &[alpn], None);
        let x = request(gw.addr, client, "localhost", delivery(&gw, &url, id)).await.unwrap();
        assert_eq!(x.status, 200, "{}", String::from_utf8_lossy(&x.body));
        assert_eq!(x.alpn.as_deref(), Some(alpn));
        assert_eq!(x.version, version);
        let got = up.next().await;
        assert_eq!(got.headers["x-hookgate-delivery-id"], id);
        assert_eq!(got.headers["x-forwarded-proto"], "https");
    }
    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = tokio::time::timeout(
        Duration::from_secs(5),
        client().request(
            http::Request::post(format!("http://{}/webhooks/tampa", gw.addr)).body(Full::new(Bytes::new())).unwrap(),
        ),
    )
    .await
    .expect("answered or closed in time");
    assert!(plain.is_err(), "cleartext HTTP is not served on an HTTPS listener");
    gw.shutdown().await;
}

#[tokio::test]
async fn ecdsa_p384_and_ed25519_keys_work() {
    let ca = Ca::new("keys CA");
    for (name, alg) in [("p384", &rcgen::PKCS_ECDSA_P384_SHA384), ("ed25519", &rcgen::PKCS_ED25519)] {
        let dir = tempfile::tempdir().unwrap();
        let leaf = ca.issue_with(&["localhost"], name, rcgen::KeyPair::generate_for(alg).unwrap());
        let up = spawn_upstream(ok_upstream()).await;
        let gw = spawn_gateway(&tampa_config(up.addr, "", &tls_table(dir.path(), &leaf, None))).await;
        let url = format!("https://localhost:{}/webhooks/tampa", gw.addr.port());
        let x =
            request(gw.addr, client_config(&ca.pem(), &[b"http/1.1"], None), "localhost", delivery(&gw, &url, name))
                .await
                .unwrap();
        assert_eq!(x.status, 200, "{name}");
        gw.shutdown().await;
    }
}

#[tokio::test]
async fn mtls_accepts_certificates_from_client_ca_only() {
    let dir = tempfile::tempdir().unwrap();
    let server_ca = Ca::new("server CA");
    let sender_ca = Ca::new("senders CA");
    let other_ca = Ca::new("someone else");
    let leaf = server_ca.issue(&["localhost"], "hooks");
    let up = spawn_upstream(ok_upstream()).await;
    let gw = spawn_gateway(&tampa_config(up.addr, "", &tls_table(dir.path(), &leaf, Some(&sender_ca.pem())))).await;
    let url = format!("https://localhost:{}/webhooks/tampa", gw.addr.port());
    let sender = sender_ca.issue(&["sender.test"], "sender");
    let ok = request(
        gw.addr,
        client_config(&server_ca.pem(), &[b"http/1.1"], Some(&sender)),
        "localhost",
        delivery(&gw, &url, "m1"),
    )
    .await
    .unwrap();
    assert_eq!(ok.status, 200);
    let none =
        request(gw.addr, client_config(&server_ca.pem(), &[b"http/1.1"], None), "localhost", delivery(&gw, &url, "m2"))
            .await;
    assert!(none.is_err(), "no client certificate: refused");
    let stranger = other_ca.issue(&["x.test"], "stranger");
    let wrong = request(
        gw.addr,
        client_config(&server_ca.pem(), &[b"http/1.1"], Some(&stranger)),
        "localhost",
        delivery(&gw, &url, "m3"),
    )
    .await;
    assert!(wrong.is_err(), "a certificate from another CA: refused");
    assert_eq!(up.hits(), 1, "only the authenticated sender got through");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_reload_swaps_the_certificate_and_bad_files_keep_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("reload CA");
    let first = ca.issue(&["localhost"], "first");
    let up = spawn_upstream(ok_upstream()).await;
    let text = tampa_config(up.addr, "", &tls_table(dir.path(), &first, None));
    let gw = spawn_gateway(&text).await;
    let url = format!("https://localhost:{}/webhooks/tampa", gw.addr.port());
    let cert_der = |pem: &str| {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap().to_vec()
    };
    let client = || client_config(&ca.pem(), &[b"http/1.1"], None);
    let x = request(gw.addr, client(), "localhost", delivery(&gw, &url, "r1")).await.unwrap();
    assert_eq!(x.peer_cert, cert_der(&first.cert));

    // New files in place, then the reload (what SIGHUP does): new handshakes use them.
    let second = ca.issue(&["localhost"], "second");
    write(dir.path(), "cert.pem", &second.cert);
    write(dir.path(), "key.pem", &second.key);
    gw.app.reload(config(&text)).unwrap();
    let x = request(gw.addr, client(), "localhost", delivery(&gw, &url, "r2")).await.unwrap();
    assert_eq!(x.peer_cert, cert_der(&second.cert), "the new certificate is served");

    // A broken file makes the new config invalid (SIGHUP logs it and keeps the old one).
    write(dir.path(), "key.pem", "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n");
    let errs = hookgate::config::load_str(&text, &|_| None).unwrap_err().to_string();
    assert!(errs.contains("server.tls.key"), "{errs}");
    let x = request(gw.addr, client(), "localhost", delivery(&gw, &url, "r3")).await.unwrap();
    assert_eq!(x.peer_cert, cert_der(&second.cert), "still the last good one");
    gw.shutdown().await;
}

fn one_route(upstream: &str, extra: &str) -> String {
    one_route_config("", upstream, &format!("timeout = \"2s\"\n{extra}"))
}

#[tokio::test]
async fn https_upstream_with_a_private_ca_and_a_wrong_certificate_is_502() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("app CA");
    let ca_file = write(dir.path(), "app-ca.pem", &ca.pem());
    let leaf = ca.issue(&["localhost"], "app");
    let mut up = spawn_upstream_on(Listen::Tls(server_config(&leaf)), ok_upstream()).await;
    let upstream = format!("https://localhost:{}/secure", up.addr.port());
    let gw = spawn_gateway(&one_route(&upstream, &format!("ca = \"{}\"", ca_file.display()))).await;
    let r = gw.deliver("tampa", &tampa_body("https-1", "x"), None, None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let got = up.next().await;
    assert_eq!(got.uri, "/secure");
    assert_eq!(got.headers["host"], format!("localhost:{}", up.addr.port()).as_str());
    // A second delivery reuses the pooled TLS connection.
    assert_eq!(gw.deliver("tampa", &tampa_body("https-2", "x"), None, None).await.status, 200);
    assert_eq!(up.connections.load(std::sync::atomic::Ordering::SeqCst), 1, "kept alive and pooled");
    gw.shutdown().await;

    // The same upstream, trusted through another CA: the handshake fails, 502, nothing forwarded.
    let other = Ca::new("not the app's CA");
    let other_file = write(dir.path(), "other-ca.pem", &other.pem());
    let hits = up.hits();
    let gw = spawn_gateway(&one_route(&upstream, &format!("ca = \"{}\"", other_file.display()))).await;
    let r = gw.deliver("tampa", &tampa_body("https-3", "x"), None, None).await;
    assert_eq!((r.status.as_u16(), r.error_code().as_str()), (502, "upstream_unreachable"));
    assert_eq!(up.hits(), hits, "nothing reached the app");
    gw.shutdown().await;

    // The right CA but the wrong name (SNI and verification use the URL's host).
    let by_ip = format!("https://127.0.0.1:{}/secure", up.addr.port());
    let gw = spawn_gateway(&one_route(&by_ip, &format!("ca = \"{}\"", ca_file.display()))).await;
    let r = gw.deliver("tampa", &tampa_body("https-4", "x"), None, None).await;
    assert_eq!(r.status, 502, "the certificate does not name 127.0.0.1");
    assert_eq!(up.hits(), hits);
    gw.shutdown().await;
}

#[tokio::test]
async fn unix_socket_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("app.sock");
    let mut up = spawn_upstream_on(Listen::Unix(sock.clone()), ok_upstream()).await;
    let gw = spawn_gateway(&one_route(&format!("http://unix:{}:/hooks/in", sock.display()), "")).await;
    let r = gw.deliver("tampa", &tampa_body("unix-1", "x"), None, None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "upstream-ok");
    let got = up.next().await;
    assert_eq!(got.uri, "/hooks/in");
    assert_eq!(got.headers["host"], "localhost");
    assert_eq!(got.headers["x-hookgate-delivery-id"], "unix-1");
    assert_eq!(gw.deliver("tampa", &tampa_body("unix-2", "x"), None, None).await.status, 200);
    assert_eq!(up.connections.load(std::sync::atomic::Ordering::SeqCst), 1, "pooled like TCP");
    gw.shutdown().await;
}

#[test]
fn check_names_bad_tls_files_and_upstreams() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("c");
    let leaf = ca.issue(&["localhost"], "l");
    let cert = write(dir.path(), "c.pem", &leaf.cert);
    let junk = write(dir.path(), "junk.pem", "hello");
    let text = format!(
        r#"
[server.tls]
cert = "{missing}"
key = "{junk}"

[sources.a]
path = "/a"
provider = "github"
secrets = ["s"]
[[sources.a.routes]]
events = ["*"]
upstream = "ftp://127.0.0.1/x"
[[sources.a.routes]]
events = ["*"]
upstream = "http://127.0.0.1:1/x"
ca = "{cert}"
[[sources.a.routes]]
events = ["*"]
upstream = "https://localhost:1/x"
ca = "{junk}"
[[sources.a.routes]]
events = ["*"]
upstream = "redis://127.0.0.1:1/0?stream=s"
ca = "{cert}"
[[sources.a.routes]]
events = ["*"]
upstream = "rediss://127.0.0.1:1/0?stream=s"
ca = "{junk}"
"#,
        missing = dir.path().join("missing.pem").display(),
        junk = junk.display(),
        cert = cert.display()
    );
    let errs = hookgate::config::load_str(&text, &|_| None).unwrap_err().to_string();
    for want in [
        "server.tls.cert:",
        "missing.pem",
        "sources.a.routes[0].upstream: invalid URL \"ftp://127.0.0.1/x\": unknown scheme",
        "sources.a.routes[1].ca: ca applies to https:// and rediss:// upstreams only",
        "sources.a.routes[2].ca:",
        "sources.a.routes[3].ca: ca applies to https:// and rediss:// upstreams only",
        "sources.a.routes[4].ca:",
    ] {
        assert!(errs.contains(want), "missing {want:?} in\n{errs}");
    }
    let good = format!("[server.tls]\ncert = \"{}\"\nkey = \"{}\"\n", cert.display(), junk.display());
    let errs = hookgate::config::load_str(
        &(good + &text[text.find("[sources.a]").unwrap()..].replace("ftp://", "http://")),
        &|_| None,
    )
    .unwrap_err()
    .to_string();
    assert!(errs.contains("server.tls.key:"), "{errs}");
}

/// Runs openssl in `dir` (keys in the formats rcgen does not write: RSA, PKCS#1, SEC1).
fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (.ci/run installs it)");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn rsa_pkcs1_and_sec1_keys_made_by_openssl_work() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("san.ext"), "subjectAltName=DNS:localhost\n").unwrap();
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-subj",
            "/CN=rsa test CA",
            "-days",
            "2",
        ],
    );
    let ca_pem = std::fs::read_to_string(d.join("ca.pem")).unwrap();
    // RSA leaf with a PKCS#1 key ("BEGIN RSA PRIVATE KEY"), EC leaf with a SEC1 key ("BEGIN EC PRIVATE KEY").
    openssl(d, &["genrsa", "-traditional", "-out", "rsa.key", "2048"]);
    openssl(d, &["ecparam", "-genkey", "-name", "prime256v1", "-noout", "-out", "ec.key"]);
    for (name, marker) in [("rsa", "BEGIN RSA PRIVATE KEY"), ("ec", "BEGIN EC PRIVATE KEY")] {
        let key = format!("{name}.key");
        assert!(std::fs::read_to_string(d.join(&key)).unwrap().contains(marker));
        openssl(d, &["req", "-new", "-key", &key, "-out", &format!("{name}.csr"), "-subj", "/CN=localhost"]);
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{name}.pem"),
                "-days",
                "1",
                "-extfile",
                "san.ext",
            ],
        );
        let up = spawn_upstream(ok_upstream()).await;
        let tls = format!(
            "[server.tls]\ncert = \"{}\"\nkey = \"{}\"\n",
            d.join(format!("{name}.pem")).display(),
            d.join(&key).display()
        );
        let gw = spawn_gateway(&tampa_config(up.addr, "", &tls)).await;
        let url = format!("https://localhost:{}/webhooks/tampa", gw.addr.port());
        let x = request(gw.addr, client_config(&ca_pem, &[b"http/1.1"], None), "localhost", delivery(&gw, &url, name))
            .await
            .unwrap();
        assert_eq!(x.status, 200, "{name}");
        gw.shutdown().await;
    }
}

/// SPEC §13: a route's `ca` holding the upstream's own self-signed
/// certificate, as `openssl req -x509` makes it (basicConstraints CA:TRUE,
/// which webpki refuses as an end entity), is trusted for that very
/// certificate, and only for the name it carries; another self-signed
/// certificate for the same name is still refused.
#[tokio::test]
async fn an_upstream_ca_file_holding_its_own_self_signed_certificate_is_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let make = |name: &str| {
        openssl(
            dir.path(),
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=DNS:localhost",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.pem"),
            ],
        );
        let cert = std::fs::read_to_string(dir.path().join(format!("{name}.pem"))).unwrap();
        let key = std::fs::read_to_string(dir.path().join(format!("{name}.key"))).unwrap();
        assert!(
            std::process::Command::new("openssl")
                .args(["x509", "-noout", "-text", "-in"])
                .arg(dir.path().join(format!("{name}.pem")))
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).contains("CA:TRUE"))
                .unwrap(),
            "openssl req -x509 makes a CA:TRUE certificate"
        );
        Leaf { cert, key }
    };
    let own = make("app");
    let other = make("other");
    let mut up = spawn_upstream_on(Listen::Tls(server_config(&own)), ok_upstream()).await;
    let ca = format!("ca = \"{}\"", dir.path().join("app.pem").display());
    let gw = spawn_gateway(&one_route(&format!("https://localhost:{}/secure", up.addr.port()), &ca)).await;
    let r = gw.deliver("tampa", &tampa_body("self-1", "x"), None, None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.next().await.uri, "/secure");
    // By IP, the certificate does not name the host: refused.
    let by_ip = spawn_gateway(&one_route(&format!("https://127.0.0.1:{}/secure", up.addr.port()), &ca)).await;
    assert_eq!(by_ip.deliver("tampa", &tampa_body("self-2", "x"), None, None).await.status, 502);
    gw.shutdown().await;
    by_ip.shutdown().await;

    // An app presenting another self-signed certificate: refused, nothing forwarded.
    let impostor = spawn_upstream_on(Listen::Tls(server_config(&other)), ok_upstream()).await;
    let gw = spawn_gateway(&one_route(&format!("https://localhost:{}/secure", impostor.addr.port()), &ca)).await;
    assert_eq!(gw.deliver("tampa", &tampa_body("self-3", "x"), None, None).await.status, 502);
    assert_eq!(impostor.hits(), 0);
    gw.shutdown().await;
}

/// A raw upstream that answers HTTP/1.0 style: no Content-Length, no chunks,
/// the body ends when the connection closes; over TLS, closed without
/// `close_notify` (as Python's `http.server` over ssl does).
async fn close_delimited_upstream(
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    body: Vec<u8>,
) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    async fn answer<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(s: &mut S, body: &[u8]) -> Option<()> {
        let mut buf = vec![0u8; 65536];
        let mut got = Vec::new();
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).await.ok().filter(|n| *n > 0)?;
            got.extend_from_slice(&buf[..n]);
        }
        s.write_all(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n").await.ok()?;
        s.write_all(body).await.ok()?;
        s.flush().await.ok()
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let (tls, body) = (tls.clone(), body.clone());
            tokio::spawn(async move {
                match tls {
                    // Plain: closing the socket ends the body.
                    None => drop(answer(&mut tcp, &body).await),
                    Some(c) => {
                        let Ok(mut stream) = tokio_rustls::TlsAcceptor::from(c).accept(tcp).await else { return };
                        if answer(&mut stream, &body).await.is_some() {
                            // Drop the TCP socket itself: no close_notify.
                            drop(stream.into_inner().0);
                        }
                    }
                }
            });
        }
    });
    addr
}

/// SPEC §13: an answer whose body ends when the upstream closes the
/// connection (no length, no chunks; over TLS without close_notify too)
/// reaches the sender whole.
#[tokio::test]
async fn a_close_delimited_answer_reaches_the_sender_whole_over_tcp_and_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("app CA");
    let ca_file = write(dir.path(), "app-ca.pem", &ca.pem());
    let leaf = ca.issue(&["localhost"], "app");
    let body: Vec<u8> = (0..200_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    for tls in [false, true] {
        let addr = close_delimited_upstream(tls.then(|| server_config(&leaf)), body.clone()).await;
        let (url, extra) = if tls {
            (format!("https://localhost:{}/in", addr.port()), format!("ca = \"{}\"", ca_file.display()))
        } else {
            (format!("http://{addr}/in"), String::new())
        };
        let gw = spawn_gateway(&one_route(&url, &extra)).await;
        let r = gw.deliver("tampa", &tampa_body(&format!("close-{tls}"), "x"), None, None).await;
        assert_eq!(r.status, 200, "tls={tls}");
        assert_eq!(r.body.len(), body.len(), "tls={tls}: the whole body");
        assert_eq!(&r.body[..], &body[..]);
        gw.shutdown().await;
    }
}

/// `[dedupe.redis]` over `rediss://` with the server's CA in `ca`: a
/// duplicate is caught and a queued delivery stored and delivered, all
/// through TLS (the queue's Redis inherits the server and its CA). Without
/// `ca` the system's roots refuse the test CA: the delivery is refused (503),
/// never sent in plain text. `target` is the `[dedupe.redis]` line naming the
/// server(s); `keys` lists what is stored, read over the plain port(s).
async fn dedupe_and_queue_over_tls(target: &str, ca_file: &Path, keys: impl Fn() -> String) {
    let mut app = spawn_upstream(ok_upstream()).await;
    let app_addr = app.addr;
    let config = |ca_line: &str| {
        format!(
            "[dedupe]\nstore = \"redis\"\n[dedupe.redis]\n{target}\ntimeout = \"1s\"\n{ca_line}\n\
             [queue]\nstore = \"redis\"\n\n\
             [sources.tampa]\npath = \"/webhooks/tampa\"\nprovider = \"tampa\"\nsecrets = [\"{SECRET}\"]\n\
             [[sources.tampa.routes]]\nevents = [\"*\"]\nupstream = \"http://{app_addr}/in\"\ndelivery = \"queue\"\n"
        )
    };
    let gw = spawn_gateway(&config(&format!("ca = \"{}\"", ca_file.display()))).await;
    let body = tampa_body("tls-1", "order.created");
    let r = gw.deliver("tampa", &body, None, None).await;
    assert_eq!(r.status, 202, "{}", r.text());
    let again = gw.deliver("tampa", &body, None, None).await;
    assert_eq!(again.headers.get("x-hookgate-duplicate").map(|v| v.to_str().unwrap()), Some("true"));
    assert!(eventually(Duration::from_secs(10), async || app.hits() >= 1).await, "delivered from the TLS queue");
    let got = app.drain();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].headers["x-hookgate-delivery-id"], "tls-1");
    // Both stores wrote to the server(s).
    let keys = keys();
    assert!(keys.lines().any(|k| k.starts_with("hookgate:q:")), "queue keys: {keys}");
    assert!(keys.lines().any(|k| k.starts_with("hookgate:") && !k.starts_with("hookgate:q:")), "dedupe keys: {keys}");
    gw.shutdown().await;

    let gw = spawn_gateway(&config("")).await;
    let r = gw.deliver("tampa", &tampa_body("tls-2", "order.created"), None, None).await;
    assert_eq!(r.status, 503, "{}", r.text());
    gw.shutdown().await;
    assert!(app.drain().is_empty());
}

#[tokio::test]
async fn dedupe_and_queue_on_redis_over_tls_trust_their_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (redis, tls_port, [_, _, ca]) = common::redis::RedisServer::start_tls(dir.path());
    let target = format!("url = \"rediss://127.0.0.1:{tls_port}/0\"");
    dedupe_and_queue_over_tls(&target, &ca, || redis.cli(&["KEYS", "hookgate:*"])).await;
}

#[tokio::test]
async fn dedupe_and_queue_on_a_redis_cluster_over_tls_trust_their_ca() {
    let dir = tempfile::tempdir().unwrap();
    let [cert, key, ca] = common::redis::tls_files(dir.path());
    let (cluster, urls) = {
        let (cert, key, ca) = (cert.clone(), key.clone(), ca.clone());
        tokio::task::spawn_blocking(move || common::redis::RedisCluster::start_tls(&cert, &key, &ca)).await.unwrap()
    };
    let target = format!("cluster = [{}]", urls.iter().map(|u| format!("\"{u}\"")).collect::<Vec<_>>().join(", "));
    let keys = || cluster.nodes.iter().map(|n| n.cli(&["KEYS", "hookgate:*"])).collect::<Vec<_>>().join("\n");
    dedupe_and_queue_over_tls(&target, &ca, keys).await;
}
