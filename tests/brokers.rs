//! SPEC §15 end to end, with real brokers: a `nats-server -js` of the test's
//! own (killed and restarted), the machine's RabbitMQ with a queue named for
//! the test, and a `redis-server` of the test's own. Each message is read back
//! with the broker's client: the body byte for byte, the delivery ID where the
//! broker dedupes by it, the headers a sync forward would send, no signature.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

mod common;

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::redis::{RedisServer, free_port};
use common::*;
use futures_util::StreamExt as _;

/// A `nats-server -js` on a free loopback port, with its store in a temp dir.
struct Nats {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// More `nats-server` arguments (e.g. `--user`, `--pass`).
    extra: Vec<String>,
}

impl Nats {
    fn start() -> Nats {
        Nats::start_with(&[])
    }

    fn start_with(extra: &[&str]) -> Nats {
        let extra = extra.iter().map(|a| (*a).to_owned()).collect();
        let mut n = Nats { port: free_port(), dir: tempfile::tempdir().unwrap(), child: None, extra };
        n.launch();
        n
    }

    fn launch(&mut self) {
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string(), "-sd"])
            .arg(self.dir.path())
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server must be installed (apt-get install nats-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    async fn jetstream(&self) -> async_nats::jetstream::Context {
        async_nats::jetstream::new(async_nats::connect(self.url()).await.unwrap())
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
    }
}

fn body(id: &str, event_type: &str) -> String {
    format!(
        r#"{{"id":"{id}","type":"{event_type}","timestamp":"{}","data":{{"amount":12,"note":"h\u00e9"}}}}"#,
        humantime::format_rfc3339_seconds(SystemTime::now())
    )
}

fn config(top: &str, upstream: &str, route_extra: &str) -> String {
    one_route_config(top, upstream, &format!("name = \"bus\"\ntimeout = \"2s\"\n{route_extra}"))
}

#[tokio::test]
async fn nats_jetstream_gets_each_delivery_once_confirmed() {
    let nats = Nats::start();
    let js = nats.jetstream().await;
    let stream = js
        .create_stream(async_nats::jetstream::stream::Config {
            name: "HOOKS".into(),
            subjects: vec!["hooks.>".into()],
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .unwrap();
    let upstream = format!("{}/hooks.{{source}}.{{event_type}}", nats.url());
    let gw = spawn_gateway(&config("", &upstream, "")).await;
    let b = body("n-1", "invoice.paid");
    let r = gw.deliver("tampa", &b, None, None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["to"], "hooks.tampa.invoice.paid");

    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            durable_name: Some("t".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut msgs = consumer.fetch().max_messages(10).expires(Duration::from_millis(500)).messages().await.unwrap();
    let m = msgs.next().await.unwrap().unwrap();
    assert_eq!(m.subject.as_str(), "hooks.tampa.invoice.paid");
    assert_eq!(&m.payload[..], b.as_bytes(), "the body byte for byte");
    let h = m.headers.as_ref().unwrap();
    assert_eq!(h.get("Nats-Msg-Id").unwrap().as_str(), "n-1");
    assert_eq!(h.get("x-hookgate-source").unwrap().as_str(), "tampa");
    assert_eq!(h.get("x-hookgate-event-type").unwrap().as_str(), "invoice.paid");
    assert!(h.get("x-webhook-signature").is_none(), "the sender's signature is dropped");
    m.ack().await.unwrap();
    assert!(msgs.next().await.is_none(), "one message");

    // The stream dedupes by Nats-Msg-Id too: a second gateway (its own memory
    // dedupe) publishing the same delivery adds nothing.
    let gw2 = spawn_gateway(&config("", &upstream, "")).await;
    assert_eq!(gw2.deliver("tampa", &b, None, None).await.status, 200);
    let info = js.get_stream("HOOKS").await.unwrap().info().await.unwrap().clone();
    assert_eq!(info.state.messages, 1);

    // No stream for the subject: a failure the sender retries, never a drop.
    let gw3 = spawn_gateway(&config("", &format!("{}/nostream.{{event_type}}", nats.url()), "")).await;
    let r = gw3.deliver("tampa", &body("n-2", "x"), None, None).await;
    assert_eq!((r.status.as_u16(), r.error_code().as_str()), (503, "broker_unavailable"));
    assert!(r.headers.contains_key("retry-after"));
    for g in [gw, gw2, gw3] {
        g.shutdown().await;
    }
}

#[tokio::test]
async fn a_queue_route_keeps_deliveries_while_nats_is_down() {
    let mut nats = Nats::start();
    let js = nats.jetstream().await;
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "Q".into(),
        subjects: vec!["q.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    drop(js);
    let dir = tempfile::tempdir().unwrap();
    let top = format!("[server]\nshutdown_grace = \"1s\"\n[queue]\npath = \"{}\"", dir.path().display());
    let route = "delivery = \"queue\"\nretry = { backoff = \"50ms\", max_backoff = \"200ms\" }";
    let gw = spawn_gateway(&config(&top, &format!("{}/q.{{event_type}}", nats.url()), route)).await;
    // Sync routes aside, the sync answer waits for the confirm; a queue route acks once stored.
    nats.kill();
    for i in 0..5 {
        let r = gw.deliver("tampa", &body(&format!("qd-{i}"), "order.created"), None, None).await;
        assert_eq!(r.status, 202, "{}", r.text());
    }
    assert!(
        eventually(Duration::from_secs(5), async || {
            gw.admin_json("/queue").await["routes"][0]["scheduled"].as_u64().unwrap_or(0) > 0
        })
        .await,
        "attempts fail and are scheduled again while NATS is down"
    );
    let ready = send(&format!("http://{}/readyz", gw.admin), "GET", &[], "").await;
    assert_eq!(ready.status, 200, "a broker that is down does not make the gateway unready");
    nats.launch();
    let js = nats.jetstream().await;
    let delivered = async || js.get_stream("Q").await.unwrap().info().await.unwrap().state.messages == 5;
    assert!(eventually(Duration::from_secs(20), delivered).await, "all five arrive once NATS is back");
    let idle = async || {
        let r = &gw.admin_json("/queue").await["routes"][0];
        r["pending"] == 0 && r["scheduled"] == 0 && r["in_flight"] == 0
    };
    assert!(eventually(Duration::from_secs(10), idle).await);
    assert_eq!(js.get_stream("Q").await.unwrap().info().await.unwrap().state.messages, 5, "none twice");
    gw.shutdown().await;
}

/// A queue of the test's own on the machine's RabbitMQ (guest/guest on 5672).
async fn rabbit_queue(name: &str) -> lapin::Channel {
    let conn = lapin::Connection::connect("amqp://guest:guest@127.0.0.1:5672/%2f", Default::default())
        .await
        .expect("RabbitMQ on 127.0.0.1:5672 (guest/guest)");
    let ch = conn.create_channel().await.unwrap();
    let opts = lapin::options::QueueDeclareOptions { auto_delete: false, ..Default::default() };
    ch.queue_declare(name.into(), opts, Default::default()).await.unwrap();
    std::mem::forget(conn); // kept open for the test's life
    ch
}

#[tokio::test]
async fn rabbitmq_gets_a_persistent_confirmed_message_and_unroutable_is_a_failure() {
    let queue = format!("hookgate-test-{}-{}", std::process::id(), free_port());
    let ch = rabbit_queue(&queue).await;
    let upstream = format!("amqp://guest:guest@127.0.0.1:5672/%2f?routing_key={queue}");
    let gw = spawn_gateway(&config("", &upstream, "")).await;
    let b = body("r-1", "invoice.paid");
    let r = gw.deliver("tampa", &b, None, None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let got = ch.basic_get(queue.as_str().into(), Default::default()).await.unwrap().expect("a message");
    assert_eq!(got.delivery.data, b.as_bytes());
    let p = &got.delivery.properties;
    assert_eq!(p.message_id().as_ref().map(|s| s.as_str()), Some("r-1"));
    assert_eq!(*p.delivery_mode(), Some(2), "persistent");
    assert_eq!(p.content_type().as_ref().map(|s| s.as_str()), Some("application/json"));
    let headers = p.headers().as_ref().unwrap();
    let source = headers.inner().get("x-hookgate-source").unwrap();
    assert_eq!(format!("{source:?}"), format!("{:?}", lapin::types::AMQPValue::LongString("tampa".into())));
    assert!(!headers.inner().contains_key("x-webhook-signature"));
    ch.queue_delete(queue.as_str().into(), Default::default()).await.unwrap();

    // Nothing bound for the key: returned, so a failure (503), never dropped.
    let r = gw.deliver("tampa", &body("r-2", "x"), None, None).await;
    assert_eq!((r.status.as_u16(), r.error_code().as_str()), (503, "broker_unavailable"));
    gw.shutdown().await;

    // Wrong credentials: a failure whose text never carries the password.
    let dir = tempfile::tempdir().unwrap();
    let top = format!("[server]\nshutdown_grace = \"1s\"\n[queue]\npath = \"{}\"", dir.path().display());
    let bad = format!("amqp://guest:Wr0ngPassw0rd@127.0.0.1:5672/%2f?routing_key={queue}");
    let gw = spawn_gateway(&config(&top, &bad, "delivery = \"queue\"\nretry = { attempts = 1 }")).await;
    assert_eq!(gw.deliver("tampa", &body("r-3", "x"), None, None).await.status, 202);
    assert!(
        eventually(Duration::from_secs(10), async || gw.admin_json("/queue").await["routes"][0]["dead"] == 1).await
    );
    let queue_json = gw.admin_json("/queue").await.to_string();
    let dead = gw.admin_json("/queue/dead").await.to_string();
    assert!(queue_json.contains("guest:***@"), "{queue_json}");
    for text in [queue_json, dead, gw.metrics().await] {
        assert!(!text.contains("Wr0ngPassw0rd"), "{text}");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn redis_streams_get_an_entry_per_delivery() {
    let redis = RedisServer::start();
    let upstream = format!("{}?stream=hooks:{{source}}&maxlen=1000", redis.url());
    let gw = spawn_gateway(&config("", &upstream, "keep_signature = true")).await;
    let b = body("s-1", "invoice.paid");
    let r = gw.deliver("tampa", &b, None, None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let fields = redis.cli(&["XRANGE", "hooks:tampa", "-", "+"]);
    let lines: Vec<&str> = fields.lines().collect();
    let field = |name: &str| lines.iter().position(|l| *l == name).map(|i| lines[i + 1]);
    assert_eq!(field("id"), Some("s-1"), "{fields}");
    assert_eq!(field("body"), Some(b.as_str()), "{fields}");
    assert_eq!(field("x-hookgate-event-type"), Some("invoice.paid"), "{fields}");
    assert!(field("x-webhook-signature").is_some(), "keep_signature keeps it: {fields}");
    gw.shutdown().await;
}

/// A Redis that accepts connections and never answers: the delivery is a
/// failure (503) within the route's own `timeout`, also when another route
/// made the shared client for that URL with a longer one.
#[tokio::test]
async fn a_silent_redis_fails_each_route_within_its_own_timeout() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = format!("redis://{}/0?stream=hooks", silent.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((tcp, _)) = silent.accept().await {
            open.push(tcp);
        }
    });
    let slow = spawn_gateway(&config("", &upstream, "")).await;
    let started = Instant::now();
    let r = slow.deliver("tampa", &body("q-1", "invoice.paid"), None, None).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(started.elapsed() >= Duration::from_secs(2), "the 2 s route waited its timeout");
    let fast = spawn_gateway(&one_route_config("", &upstream, "name = \"bus\"\ntimeout = \"300ms\"")).await;
    let started = Instant::now();
    let r = fast.deliver("tampa", &body("q-2", "invoice.paid"), None, None).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(started.elapsed() < Duration::from_millis(1500), "took {:?}", started.elapsed());
    slow.shutdown().await;
    fast.shutdown().await;
    held.abort();
}

/// `rediss://`: the entry goes over TLS to a `redis-server` with a test CA's
/// certificate, trusted through the route's `ca`; without it the system's
/// roots do not know that CA and the delivery is a failure (503), never a
/// plain-text fallback.
#[tokio::test]
async fn redis_streams_over_tls_trust_the_routes_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (redis, tls_port, [_, _, ca_file]) = RedisServer::start_tls(dir.path());
    let upstream = format!("rediss://127.0.0.1:{tls_port}/0?stream=tls:{{source}}");
    let gw = spawn_gateway(&config("", &upstream, &format!("ca = \"{}\"", ca_file.display()))).await;
    let b = body("tls-1", "invoice.paid");
    let r = gw.deliver("tampa", &b, None, None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let fields = redis.cli(&["XRANGE", "tls:tampa", "-", "+"]);
    assert!(fields.lines().any(|l| l == "tls-1") && fields.contains(&b), "{fields}");
    gw.shutdown().await;

    let untrusted = format!("rediss://127.0.0.1:{tls_port}/0?stream=untrusted");
    let gw = spawn_gateway(&config("", &untrusted, "")).await;
    let r = gw.deliver("tampa", &body("tls-2", "invoice.paid"), None, None).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(redis.cli(&["XLEN", "untrusted"]), "0");
    gw.shutdown().await;
}

/// SPEC §15 as a user's consumers see it: one delivery fanned out to all three
/// brokers, read back with pika, nats-py and redis-py (`tests/brokers/read_back.py`).
/// RabbitMQ is named `localhost` here: broker clients are shared per process
/// and URL, and another test's client for `127.0.0.1` is driven by that test's
/// runtime, which ends with it (`hookgate run`'s runtimes live as long as the process).
#[tokio::test]
async fn the_brokers_own_python_clients_read_what_was_published() {
    let nats = Nats::start();
    let js = nats.jetstream().await;
    let stream = async_nats::jetstream::stream::Config {
        name: "PY".into(),
        subjects: vec!["py.>".into()],
        ..Default::default()
    };
    js.create_stream(stream).await.unwrap();
    let queue = format!("hookgate-py-{}-{}", std::process::id(), free_port());
    let ch = rabbit_queue(&queue).await;
    let redis = RedisServer::start();
    let routes = format!(
        r#"match = "all"

[[sources.tampa.routes]]
name = "nats"
events = ["*"]
upstream = "{nats}/py.{{source}}.{{event_type}}"

[[sources.tampa.routes]]
name = "rabbit"
events = ["*"]
upstream = "amqp://guest:guest@localhost:5672/%2f?routing_key={queue}"

[[sources.tampa.routes]]
name = "redis"
events = ["*"]
upstream = "{redis}?stream=py:{{source}}"
"#,
        nats = nats.url(),
        redis = redis.url()
    );
    let gw = spawn_gateway(&tampa_source(&routes)).await;
    let b = body("py-1", "invoice.paid");
    let r = gw.deliver("tampa", &b, None, None).await;
    assert_eq!(r.status, 200, "{}", r.text());

    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/brokers/read_back.py");
    let redis_port = redis.url().rsplit(':').next().unwrap().trim_end_matches("/0").to_owned();
    let out = tokio::process::Command::new("python3")
        .arg(&script)
        .env("NATS_URL", nats.url())
        .env("NATS_SUBJECT", "py.>")
        .env("AMQP_QUEUE", &queue)
        .env("REDIS_PORT", &redis_port)
        .env("REDIS_STREAM", "py:tampa")
        .output()
        .await
        .expect("python3 runs");
    let _ = ch.queue_delete(queue.as_str().into(), Default::default()).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    let amqp = &got["amqp"];
    assert_eq!(amqp["body"], b.as_str());
    assert_eq!((amqp["message_id"].as_str(), amqp["delivery_mode"].as_u64()), (Some("py-1"), Some(2)));
    assert_eq!(amqp["content_type"], "application/json");
    assert_eq!(amqp["headers"]["x-hookgate-source"], "tampa");
    assert_eq!(amqp["headers"]["x-hookgate-event-type"], "invoice.paid");
    let redis_entry = &got["redis"][0];
    assert_eq!((redis_entry["id"].as_str(), redis_entry["body"].as_str()), (Some("py-1"), Some(b.as_str())));
    assert_eq!(redis_entry["x-hookgate-delivery-id"], "py-1");
    let nats_msg = &got["nats"][0];
    assert_eq!(nats_msg["subject"], "py.tampa.invoice.paid");
    assert_eq!(nats_msg["body"], b.as_str());
    assert_eq!(nats_msg["headers"]["Nats-Msg-Id"], "py-1");
    for signature in ["x-webhook-signature", "X-Webhook-Signature"] {
        assert!(amqp["headers"].get(signature).is_none() && redis_entry.get(signature).is_none());
        assert!(nats_msg["headers"].get(signature).is_none());
    }
    gw.shutdown().await;
}

/// `nats://USER:PASS@...`: the credentials reach the server, and neither a
/// wrong password's failure nor the admin API ever shows them.
#[tokio::test]
async fn nats_credentials_in_the_url_are_used_and_never_shown() {
    let nats = Nats::start_with(&["--user", "hg", "--pass", "S3cretNats"]);
    let client = async_nats::ConnectOptions::with_user_and_password("hg".into(), "S3cretNats".into())
        .connect(nats.url())
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client);
    let auth = async_nats::jetstream::stream::Config {
        name: "AUTH".into(),
        subjects: vec!["auth.>".into()],
        ..Default::default()
    };
    let stream = js.create_stream(auth).await.unwrap();
    let good = format!("nats://hg:S3cretNats@127.0.0.1:{}/auth.{{event_type}}", nats.port);
    let gw = spawn_gateway(&config("", &good, "")).await;
    let r = gw.deliver("tampa", &body("a-1", "invoice.paid"), None, None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(stream.clone().info().await.unwrap().state.messages, 1);
    let queue_view = gw.admin_json("/deliveries").await.to_string() + &gw.metrics().await;
    assert!(!queue_view.contains("S3cretNats"), "{queue_view}");
    gw.shutdown().await;

    let bad = format!("nats://hg:Wr0ngNats@127.0.0.1:{}/auth.{{event_type}}", nats.port);
    let gw = spawn_gateway(&config("", &bad, "")).await;
    let r = gw.deliver("tampa", &body("a-2", "invoice.paid"), None, None).await;
    assert_eq!((r.status.as_u16(), r.error_code().as_str()), (503, "broker_unavailable"));
    assert!(!r.text().contains("Wr0ngNats"), "{}", r.text());
    assert_eq!(stream.clone().info().await.unwrap().state.messages, 1);
    gw.shutdown().await;
}
