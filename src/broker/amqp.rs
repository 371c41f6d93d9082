//! RabbitMQ (AMQP 0-9-1): a persistent message published `mandatory` on a
//! channel in confirm mode; delivered when the broker acks it without
//! returning it (a return means no queue is bound: a failure, never a drop).
//! `message_id` is the delivery ID.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use http::HeaderMap;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

/// Waits between two connection attempts after a failure.
const BACKOFF: [Duration; 4] =
    [Duration::from_millis(200), Duration::from_secs(1), Duration::from_secs(5), Duration::from_secs(15)];

/// One connection and confirm-mode channel per broker URI, made on first use
/// and again (with backoff) after it broke.
#[derive(Default)]
struct Conn {
    state: tokio::sync::Mutex<State>,
}

#[derive(Default)]
struct State {
    open: Option<(Connection, Channel)>,
    failures: usize,
    last_try: Option<Instant>,
}

static CONNS: super::Clients<Conn> = OnceLock::new();

/// Routing keys are at most 255 bytes; control characters are replaced.
pub(super) fn clean(v: &str) -> String {
    let mut s: String = v.chars().map(|c| if c.is_control() { '_' } else { c }).collect();
    while s.len() > 255 {
        s.pop();
    }
    s
}

async fn channel(uri: &str) -> Result<Channel, String> {
    let conn = super::shared(&CONNS, uri, Conn::default);
    let mut st = conn.state.lock().await;
    if let Some((c, ch)) = &st.open
        && c.status().connected()
        && ch.status().connected()
    {
        return Ok(ch.clone());
    }
    st.open = None;
    let wait = BACKOFF[st.failures.min(BACKOFF.len() - 1)];
    if st.failures > 0
        && let Some(t) = st.last_try
        && t.elapsed() < wait
    {
        return Err(format!("not connected to RabbitMQ (next try in {:?})", wait - t.elapsed()));
    }
    st.last_try = Some(Instant::now());
    let opened = async {
        let c = Connection::connect(uri, ConnectionProperties::default().with_connection_name("hookgate".into()))
            .await
            .map_err(|e| format!("cannot connect to RabbitMQ: {e}"))?;
        let ch = c.create_channel().await.map_err(|e| format!("cannot open a RabbitMQ channel: {e}"))?;
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| format!("RabbitMQ refused publisher confirms: {e}"))?;
        Ok::<_, String>((c, ch))
    };
    match opened.await {
        Ok((c, ch)) => {
            st.failures = 0;
            st.open = Some((c, ch.clone()));
            Ok(ch)
        }
        Err(e) => {
            st.failures += 1;
            Err(e)
        }
    }
}

pub(super) async fn publish(
    uri: &str,
    exchange: &str,
    routing_key: &str,
    id: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), String> {
    let ch = channel(uri).await?;
    let mut table = FieldTable::default();
    let mut content_type = None;
    for (k, v) in super::text_headers(headers) {
        if k == "content-type" {
            content_type = Some(v);
        }
        table.insert(ShortString::from(k), AMQPValue::LongString(LongString::from(v)));
    }
    let mut props =
        BasicProperties::default().with_delivery_mode(2).with_message_id(ShortString::from(id)).with_headers(table);
    if let Some(ct) = content_type {
        props = props.with_content_type(ShortString::from(ct));
    }
    let options = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
    let confirm = ch
        .basic_publish(ShortString::from(exchange), ShortString::from(routing_key), options, body, props)
        .await
        .map_err(|e| format!("RabbitMQ publish failed: {e}"))?
        .await
        .map_err(|e| format!("RabbitMQ did not confirm: {e}"))?;
    match confirm {
        lapin::Confirmation::Ack(None) => Ok(()),
        lapin::Confirmation::Ack(Some(_)) => Err(format!(
            "RabbitMQ returned the message: no queue is bound to exchange {exchange:?} for routing key {routing_key:?}"
        )),
        lapin::Confirmation::Nack(_) => Err("RabbitMQ refused the message (nack)".into()),
        lapin::Confirmation::NotRequested => Err("RabbitMQ did not confirm".into()),
    }
}
