//! The floor for hookgate's event-bus upstreams (SPEC §15): an HTTP server
//! built from the same parts (hyper 1.x, tokio, mimalloc) that reads each
//! request's body and publishes it with the same client crate and the same
//! settings hookgate uses, answering 200 once the broker confirmed:
//!
//! - `nats://HOST:PORT/SUBJECT`: async-nats JetStream publish (to a stream
//!   BENCH on SUBJECT, made if missing, keeping the newest 200k) with
//!   `Nats-Msg-Id` (the request's `X-Delivery-ID`), waiting for the PubAck;
//! - `amqp://USER:PASS@HOST:PORT/VHOST?routing_key=Q`: lapin, one channel in
//!   confirm mode, persistent + mandatory + `message_id`, waiting for the
//!   confirm (declares the durable queue Q on the default exchange first);
//! - `redis://HOST:PORT/DB?stream=KEY`: `XADD KEY * id ID body BODY` on a
//!   redis-rs connection manager, waiting for the reply.
//!
//! Each message carries the request's headers as the broker's headers (Redis:
//! fields), as hookgate's do, so both publish the same bytes. No verification,
//! no dedupe: `bench/brokers.sh` runs it next to hookgate so the broker's own
//! cost and hookgate's are apart.
//!
//!   cargo run --release --example bare_publish -- 127.0.0.1:8081 nats://127.0.0.1:4222/hooks.bench

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

enum Client {
    Nats(async_nats::jetstream::Context, String),
    Amqp(lapin::Channel, String),
    Redis(redis::aio::ConnectionManager, String),
}

impl Client {
    async fn open(url: &str) -> Client {
        let (scheme, rest) = url.split_once("://").expect("a broker URL");
        match scheme {
            "nats" => {
                let (server, subject) = rest.split_once('/').expect("nats://HOST:PORT/SUBJECT");
                let client = async_nats::connect(format!("nats://{server}")).await.expect("NATS");
                let js = async_nats::jetstream::new(client);
                let stream = async_nats::jetstream::stream::Config {
                    name: "BENCH".into(),
                    subjects: vec![subject.to_owned()],
                    // bounded, so a long benchmark does not slow itself down
                    // by filling the disk (old messages go first)
                    max_messages: 200_000,
                    ..Default::default()
                };
                js.get_or_create_stream(stream).await.expect("stream");
                Client::Nats(js, subject.to_owned())
            }
            "amqp" => {
                let (base, query) = url.split_once('?').expect("?routing_key=Q");
                let queue = query.strip_prefix("routing_key=").expect("?routing_key=Q").to_owned();
                let conn = lapin::Connection::connect(base, Default::default()).await.expect("RabbitMQ");
                let ch = conn.create_channel().await.expect("channel");
                let durable = lapin::options::QueueDeclareOptions { durable: true, ..Default::default() };
                ch.queue_declare(queue.as_str().into(), durable, Default::default()).await.expect("declare");
                ch.confirm_select(Default::default()).await.expect("confirms");
                std::mem::forget(conn);
                Client::Amqp(ch, queue)
            }
            "redis" => {
                let (base, query) = url.split_once('?').expect("?stream=KEY");
                let key = query.strip_prefix("stream=").expect("?stream=KEY").to_owned();
                let client = redis::Client::open(base).expect("redis URL");
                Client::Redis(client.get_connection_manager().await.expect("Redis"), key)
            }
            other => panic!("unknown scheme {other}"),
        }
    }

    async fn publish(&self, id: &str, headers: &http::HeaderMap, body: Bytes) -> Result<(), String> {
        let text = || headers.iter().filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)));
        match self {
            Client::Nats(js, subject) => {
                let mut h = async_nats::HeaderMap::new();
                for (k, v) in text() {
                    h.insert(k, v);
                }
                h.insert("Nats-Msg-Id", id);
                let ack = js.publish_with_headers(subject.clone(), h, body).await.map_err(|e| e.to_string())?;
                ack.await.map(drop).map_err(|e| e.to_string())
            }
            Client::Amqp(ch, queue) => {
                let mut table = lapin::types::FieldTable::default();
                for (k, v) in text() {
                    table.insert(k.into(), lapin::types::AMQPValue::LongString(v.into()));
                }
                let props = lapin::BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_message_id(id.into())
                    .with_content_type("application/json".into())
                    .with_headers(table);
                let opts = lapin::options::BasicPublishOptions { mandatory: true, ..Default::default() };
                let confirm = ch
                    .basic_publish("".into(), queue.as_str().into(), opts, &body, props)
                    .await
                    .map_err(|e| e.to_string())?
                    .await
                    .map_err(|e| e.to_string())?;
                if confirm.is_ack() { Ok(()) } else { Err("nack".into()) }
            }
            Client::Redis(conn, key) => {
                let mut conn = conn.clone();
                let mut cmd = redis::cmd("XADD");
                cmd.arg(key).arg("*").arg("id").arg(id).arg("body").arg(&body[..]);
                for (k, v) in headers {
                    cmd.arg(k.as_str()).arg(v.as_bytes());
                }
                cmd.query_async::<String>(&mut conn).await.map(drop).map_err(|e| e.to_string())
            }
        }
    }
}

async fn handle(client: Arc<Client>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let id = req.headers().get("x-delivery-id").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let (parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes();
    let (status, text) = match client.publish(&id, &parts.headers, body).await {
        Ok(()) => (StatusCode::OK, "published"),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "not confirmed"),
    };
    let mut res = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *res.status_mut() = status;
    Ok(res)
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let usage = "usage: bare_publish LISTEN_ADDR BROKER_URL";
    let listen: SocketAddr = args.next().expect(usage).parse().expect(usage);
    let client = Arc::new(Client::open(&args.next().expect(usage)).await);
    let listener = tokio::net::TcpListener::bind(listen).await.expect("bind");
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        let client = client.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(client.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}
