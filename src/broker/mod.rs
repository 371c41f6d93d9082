//! Event-bus upstreams (SPEC §15): a route whose `upstream` is a broker URL
//! publishes each delivery, and the delivery counts as delivered when the
//! broker confirmed it (a NATS JetStream PubAck, a RabbitMQ publisher confirm
//! without a return, the Redis server's reply to `XADD`).
//!
//! The forward stage and the queue worker do not know the difference: they
//! call [`crate::forward::send`], which hands a broker route's request here and
//! gets back an answer (200) or a [`ForwardError::Broker`] (503 to a sync
//! sender, a retry in queue mode).
//!
//! One connection (client) per broker per process, shared by every route that
//! names it, made on first use and kept across reloads; each client reconnects
//! by itself with backoff. Broker URLs are shown with their password replaced
//! by `***`, everywhere (logs, `/queue`, errors).

mod amqp;
mod nats;
mod redis_stream;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};

use crate::ResBody;
use crate::forward::{ForwardError, X_EVENT, X_ID, X_SOURCE};

/// Where a route publishes.
#[derive(Debug)]
pub struct Broker {
    kind: Kind,
    /// The URL with its password replaced by `***`.
    pub shown: Box<str>,
    /// The subject, routing key or stream key, with placeholders.
    target: Vec<Part>,
}

#[derive(Debug)]
enum Kind {
    Nats {
        server: Secretly,
    },
    Amqp {
        uri: Secretly,
        exchange: Box<str>,
    },
    /// `client` names the shared client: the URL, and the CA file when set;
    /// `conn` keeps it once looked up, so a publish takes no lock.
    Redis {
        url: Secretly,
        maxlen: Option<u64>,
        roots: Option<Roots>,
        client: Secretly,
        conn: redis_stream::Cached,
    },
}

/// The CA a `rediss://` server is verified against (the route's `ca`).
pub use crate::redis_conn::Roots;

/// A URL that may hold a password: never printed.
struct Secretly(Box<str>);

impl std::fmt::Debug for Secretly {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<broker url>")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(Box<str>),
    Source,
    Route,
    EventType,
}

/// Usage, for errors.
const FORMS: &str = "nats://HOST:PORT/SUBJECT, amqp://USER:PASS@HOST:PORT/VHOST?exchange=X&routing_key=K \
                     or redis[s]://HOST:PORT/DB?stream=KEY";

impl Broker {
    /// `None` when `url` is not a broker URL; else the broker or what is wrong
    /// (never quoting a password).
    pub fn parse(url: &str) -> Option<Result<Broker, String>> {
        let scheme = url.split_once("://")?.0;
        if !matches!(scheme, "nats" | "amqp" | "amqps" | "redis" | "rediss") {
            return None;
        }
        Some(Broker::parse_known(url))
    }

    fn parse_known(url: &str) -> Result<Broker, String> {
        let shown = redact(url);
        let u = url::Url::parse(url).map_err(|e| format!("invalid URL {shown:?} ({e}); use {FORMS}"))?;
        if u.host_str().is_none_or(str::is_empty) {
            return Err(format!("{shown:?} names no host; use {FORMS}"));
        }
        let query: HashMap<String, String> = u.query_pairs().into_owned().collect();
        let allowed: &[&str] = match u.scheme() {
            "nats" => &[],
            "amqp" | "amqps" => &["exchange", "routing_key"],
            _ => &["stream", "maxlen"],
        };
        if let Some(k) = query.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(format!("unknown parameter {k:?} in {shown:?}; use {FORMS}"));
        }
        let base = |u: &url::Url| {
            let mut b = u.clone();
            b.set_query(None);
            b
        };
        let (kind, target) = match u.scheme() {
            "nats" => {
                // As written: the URL parser would percent-encode the braces.
                let after_host = url.split_once("://").map_or("", |(_, r)| r);
                let subject = after_host.split_once('/').map_or("", |(_, p)| p);
                // `nats://USER:PASS@HOST:PORT/...` (or `nats://TOKEN@...`): async-nats
                // takes the credentials from the server URL; shown as `***`.
                let mut b = base(&u);
                b.set_path("");
                (Kind::Nats { server: Secretly(b.as_str().into()) }, subject.to_owned())
            }
            "amqp" | "amqps" => {
                let Some(key) = query.get("routing_key") else {
                    return Err(format!(
                        "{shown:?} needs ?routing_key=K (and ?exchange=X, default the default exchange)"
                    ));
                };
                let exchange = query.get("exchange").cloned().unwrap_or_default();
                (Kind::Amqp { uri: Secretly(base(&u).as_str().into()), exchange: exchange.into() }, key.clone())
            }
            "redis" | "rediss" => {
                let Some(key) = query.get("stream") else {
                    return Err(format!("{shown:?} needs ?stream=KEY"));
                };
                let maxlen = match query.get("maxlen") {
                    None => None,
                    Some(n) => Some(
                        n.parse::<u64>()
                            .ok()
                            .filter(|n| *n > 0)
                            .ok_or_else(|| format!("maxlen in {shown:?} must be a positive whole number"))?,
                    ),
                };
                let url: Box<str> = base(&u).as_str().into();
                let client = Secretly(url.clone());
                (Kind::Redis { url: Secretly(url), maxlen, roots: None, client, conn: Default::default() }, key.clone())
            }
            _ => unreachable!("parse() passes known schemes only"),
        };
        let target = template(&target).map_err(|e| format!("{e} in {shown:?}"))?;
        if target.is_empty() {
            return Err(format!("{shown:?} names no subject, routing key or stream; use {FORMS}"));
        }
        Ok(Broker { kind, shown: shown.into(), target })
    }

    /// Verifies a `rediss://` server against `roots` instead of the system's
    /// roots; an error for any other broker URL.
    pub fn trust(&mut self, roots: Roots) -> Result<(), &'static str> {
        match &mut self.kind {
            Kind::Redis { url, roots: r, client, .. } if url.0.starts_with("rediss://") => {
                client.0 = format!("{} {}", url.0, roots.path).into();
                *r = Some(roots);
                Ok(())
            }
            _ => Err("ca applies to https:// and rediss:// upstreams only"),
        }
    }

    /// The subject, routing key or stream key for one delivery (borrowed
    /// when it has no placeholders).
    fn target(&self, headers: &HeaderMap, route: &str) -> std::borrow::Cow<'_, str> {
        if let [Part::Text(t)] = &self.target[..] {
            return std::borrow::Cow::Borrowed(t);
        }
        let value = |name: &http::HeaderName| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default();
        let clean: fn(&str) -> String = match self.kind {
            Kind::Nats { .. } => nats::clean,
            Kind::Amqp { .. } => amqp::clean,
            Kind::Redis { .. } => redis_stream::clean,
        };
        self.target
            .iter()
            .map(|p| match p {
                Part::Text(t) => t.to_string(),
                Part::Source => clean(value(&X_SOURCE)),
                Part::Route => clean(route),
                Part::EventType => clean(value(&X_EVENT)),
            })
            .collect()
    }

    /// Publishes one delivery and waits for the broker's confirmation, within `timeout`.
    pub async fn send(
        &self,
        route: &str,
        headers: HeaderMap,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Response<ResBody>, ForwardError> {
        let target = self.target(&headers, route);
        let id = headers.get(X_ID).and_then(|v| v.to_str().ok()).unwrap_or_default();
        let late = || format!("{} did not confirm within {timeout:?}", self.shown);
        let published = match &self.kind {
            Kind::Nats { server } => {
                let publish = nats::publish(&server.0, &target, id, &headers, body);
                tokio::time::timeout(timeout, publish).await.unwrap_or_else(|_| Err(late()))
            }
            Kind::Amqp { uri, exchange } => {
                let publish = amqp::publish(&uri.0, exchange, &target, id, &headers, &body);
                tokio::time::timeout(timeout, publish).await.unwrap_or_else(|_| Err(late()))
            }
            // Bounded by `timeout` inside (the Redis client's own deadline).
            Kind::Redis { url, maxlen, roots, client, conn } => {
                let to = redis_stream::Stream {
                    url: &url.0,
                    roots: roots.as_ref(),
                    client: &client.0,
                    conn,
                    maxlen: *maxlen,
                    key: &target,
                };
                redis_stream::publish(to, id, &headers, &body, timeout).await
            }
        };
        match published {
            Ok(()) => {
                let mut body = String::with_capacity(40 + target.len());
                body.push_str(r#"{"ok":true,"published":true,"to":"#);
                body.push_str(&serde_json::to_string(&*target).unwrap_or_default());
                body.push('}');
                let mut res = Response::new(http_body_util::Either::Left(http_body_util::Full::new(Bytes::from(body))));
                *res.status_mut() = StatusCode::OK;
                res.headers_mut()
                    .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
                Ok(res)
            }
            Err(e) => Err(ForwardError::Broker(scrub(&e, self))),
        }
    }
}

/// An error's text with anything that looks like this broker's URL or
/// password taken out (a safety net: the clients do not print them).
fn scrub(e: &str, b: &Broker) -> String {
    let url = match &b.kind {
        Kind::Nats { server } => &server.0,
        Kind::Amqp { uri, .. } => &uri.0,
        Kind::Redis { url, .. } => &url.0,
    };
    let mut out = e.replace(&**url, &b.shown);
    if let Ok(u) = url::Url::parse(url)
        && let Some(p) = u.password()
        && !p.is_empty()
    {
        out = out.replace(p, "***");
    }
    out
}

/// `url` with its password (if any) replaced by `***`.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        // Not parseable: keep the scheme only, the rest may hold anything.
        Err(_) => format!("{}://…", url.split_once("://").map_or("", |(s, _)| s)),
    }
}

/// Splits a subject/key at its placeholders.
fn template(text: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find('{') {
        if i > 0 {
            parts.push(Part::Text(rest[..i].into()));
        }
        let Some(j) = rest[i..].find('}') else { return Err("an unclosed '{'".into()) };
        parts.push(match &rest[i + 1..i + j] {
            "source" => Part::Source,
            "route" => Part::Route,
            "event_type" => Part::EventType,
            other => {
                return Err(format!("unknown placeholder {{{other}}} (use {{source}}, {{route}}, {{event_type}})"));
            }
        });
        rest = &rest[i + j + 1..];
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest.into()));
    }
    Ok(parts)
}

/// The clients of one kind of broker, by URL.
type Clients<C> = OnceLock<Mutex<HashMap<Box<str>, Arc<C>>>>;

/// One client per broker per process: `make` runs once per key.
fn shared<C>(map: &'static Clients<C>, key: &str, make: impl FnOnce() -> C) -> Arc<C> {
    let mut m = map.get_or_init(Default::default).lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    m.entry(key.into()).or_insert_with(|| Arc::new(make())).clone()
}

/// The headers a message carries: what a sync forward would send, as text
/// (values that are not text are left out).
fn text_headers(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers.iter().filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Result<Broker, String> {
        Broker::parse(url).expect("a broker URL")
    }

    #[test]
    fn urls_and_their_errors() {
        assert!(Broker::parse("http://127.0.0.1/x").is_none());
        let b = parse("nats://127.0.0.1:4222/hooks.{source}.{event_type}").unwrap();
        assert_eq!(b.target, [Part::Text("hooks.".into()), Part::Source, Part::Text(".".into()), Part::EventType]);
        let b = parse("amqp://guest:s3cret@127.0.0.1:5672/%2f?exchange=hooks&routing_key={route}").unwrap();
        assert_eq!(&*b.shown, "amqp://guest:***@127.0.0.1:5672/%2f?exchange=hooks&routing_key={route}");
        assert!(!format!("{b:?}").contains("s3cret"), "{b:?}");
        let b = parse("redis://127.0.0.1:6379/0?stream=hooks:{source}&maxlen=1000").unwrap();
        assert!(matches!(b.kind, Kind::Redis { maxlen: Some(1000), .. }));
        let mut tls = parse("rediss://:pw-secret@127.0.0.1:6380/0?stream=s").unwrap();
        assert_eq!(&*tls.shown, "rediss://:***@127.0.0.1:6380/0?stream=s");
        let roots = Roots { path: "ca.pem".into(), pem: Arc::from(&b"pem"[..]) };
        assert!(tls.trust(roots.clone()).is_ok());
        assert!(parse("redis://127.0.0.1/0?stream=s").unwrap().trust(roots.clone()).is_err(), "plain redis://");
        assert!(parse("nats://127.0.0.1/s").unwrap().trust(roots).is_err());
        for (bad, words) in [
            ("nats://127.0.0.1:4222/", "names no subject"),
            ("nats://127.0.0.1:4222/a.{nope}", "unknown placeholder {nope}"),
            ("nats://127.0.0.1:4222/a.{source", "unclosed"),
            ("amqp://u:pw-secret@127.0.0.1/v?exchange=x", "routing_key"),
            ("amqp://u:pw-secret@127.0.0.1/v?routing_key=k&bogus=1", "unknown parameter \"bogus\""),
            ("redis://127.0.0.1/0", "stream=KEY"),
            ("redis://127.0.0.1/0?stream=s&maxlen=0", "maxlen"),
            ("redis://127.0.0.1/0?stream=s&maxlen=-1", "maxlen"),
            ("nats:///subject", "no host"),
            ("amqp://u:pw-secret@[::1/v?routing_key=k", "invalid URL"),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(words), "{bad}: {e}");
            assert!(!e.contains("pw-secret"), "{bad}: {e}");
        }
    }

    #[test]
    fn placeholders_are_cleaned_for_each_broker() {
        let mut h = HeaderMap::new();
        h.insert(X_SOURCE, "stripe".parse().unwrap());
        h.insert(X_EVENT, "invoice.paid now>*".parse().unwrap());
        let nats = parse("nats://h:1/hooks.{source}.{route}.{event_type}").unwrap();
        assert_eq!(nats.target(&h, "billing"), "hooks.stripe.billing.invoice.paid_now__");
        let amqp = parse("amqp://h/v?routing_key={source}.{event_type}").unwrap();
        assert_eq!(amqp.target(&h, "r"), "stripe.invoice.paid now>*");
        let redis = parse("redis://h/0?stream=hooks:{event_type}").unwrap();
        h.insert(X_EVENT, "a{b}c d".parse().unwrap());
        assert_eq!(redis.target(&h, "r"), "hooks:a_b_c_d");
        h.remove(X_EVENT);
        assert_eq!(nats.target(&h, "r"), "hooks.stripe.r._");
    }

    #[test]
    fn errors_never_carry_the_password() {
        let b = parse("amqp://guest:hunter2@127.0.0.1:5672/v?routing_key=k").unwrap();
        let e = scrub("connecting to amqp://guest:hunter2@127.0.0.1:5672/v failed: hunter2", &b);
        assert!(!e.contains("hunter2") && e.contains("***"), "{e}");
    }
}
