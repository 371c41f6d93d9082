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

/// `nats://USER:PASS@host` or `nats://TOKEN@host`: connect options carrying
/// the (percent-decoded) credentials, and the address without them.
fn credentials(server: &str) -> (async_nats::ConnectOptions, String) {
    let Ok(mut u) = url::Url::parse(server) else { return (async_nats::ConnectOptions::new(), server.to_owned()) };
    let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
    let (user, pass) = (decode(u.username()), u.password().map(decode));
    let options = match (user.is_empty(), pass) {
        (true, _) => return (async_nats::ConnectOptions::new(), server.to_owned()),
        (false, Some(pass)) => async_nats::ConnectOptions::with_user_and_password(user, pass),
        (false, None) => async_nats::ConnectOptions::with_token(user),
    };
    let _ = u.set_username("");
    let _ = u.set_password(None);
    (options, u.as_str().trim_end_matches('/').to_owned())
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
            let (options, address) = credentials(server);
            let client = options
                .name("hookgate")
                .retry_on_initial_connect()
                .connect(address)
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
