//! NATS JetStream: publish, then wait for the stream's PubAck. `Nats-Msg-Id`
//! is the delivery ID, so the stream's own duplicate window drops a delivery
//! published twice. No stream for the subject is a failure, never a drop.

use std::sync::OnceLock;

use bytes::Bytes;
use http::HeaderMap;
use tokio::sync::OnceCell;

/// One client per server URL, connected on first use; async-nats reconnects it.
struct Conn {
    js: OnceCell<async_nats::jetstream::Context>,
}

static CONNS: super::Clients<Conn> = OnceLock::new();

/// A subject token may not hold whitespace, `*` or `>`; tokens are not empty.
pub(super) fn clean(v: &str) -> String {
    let s: String =
        v.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') { c } else { '_' }).collect();
    let tokens: Vec<&str> = s.split('.').map(|t| if t.is_empty() { "_" } else { t }).collect();
    tokens.join(".")
}

pub(super) async fn publish(
    server: &str,
    subject: &str,
    id: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<(), String> {
    let conn = super::shared(&CONNS, server, || Conn { js: OnceCell::new() });
    let js = conn
        .js
        .get_or_try_init(|| async {
            // Returns at once and connects (and reconnects) in the background.
            let client = async_nats::ConnectOptions::new()
                .name("hookgate")
                .retry_on_initial_connect()
                .connect(server)
                .await
                .map_err(|e| format!("cannot connect to NATS: {e}"))?;
            Ok::<_, String>(async_nats::jetstream::new(client))
        })
        .await?;
    let mut h = async_nats::HeaderMap::new();
    for (k, v) in super::text_headers(headers) {
        h.insert(k, v);
    }
    h.insert("Nats-Msg-Id", id);
    let ack = js
        .publish_with_headers(subject.to_owned(), h, body)
        .await
        .map_err(|e| format!("NATS publish to {subject:?} failed: {e}"))?;
    ack.await.map_err(|e| format!("NATS JetStream did not confirm {subject:?}: {e}"))?;
    Ok(())
}
