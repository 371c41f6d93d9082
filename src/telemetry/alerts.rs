//! Alerts (SPEC §17): each `[[alerts]]` table gets a POST when
//!
//! | kind | when |
//! |---|---|
//! | `route_failing` | a route's forward or queue attempt fails (timeout, connection error, 5xx; a broker that does not confirm) |
//! | `route_recovered` | a route that was failing delivers again |
//! | `route_paused` | a queue route pauses (by itself, on 410 Gone, or by the API) |
//! | `dead_letters` | a queued delivery becomes a dead letter |
//! | `signature_failures` | a source's requests failing verification reach the table's `signature_failures` rate |
//! | `queue_lost` | the queue store lost acknowledged deliveries (damage, a flushed Redis) |
//!
//! At most one alert per table, kind and source/route per `alert_every`. The body is JSON
//! (`format = "json"`) or a Slack incoming-webhook message (`"slack"`). A
//! send that fails is tried twice more (1 s, then 2 s later), then logged;
//! alerts never hold up a delivery (each is a task of its own). Alert URLs
//! are shown as scheme and host only (a Slack URL's path is its secret),
//! and an alert names sources, routes, IDs and error texts, never a body or
//! a header value.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

use crate::route::policy::Rate;

/// `alert_every`'s default.
pub const ALERT_EVERY: Duration = Duration::from_secs(600);
/// Tries per alert, and the wait before the second (doubled for the third).
const TRIES: u32 = 3;
const RETRY_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertFormat {
    Json,
    Slack,
}

/// One `[[alerts]]` table, compiled.
#[derive(Debug, Clone)]
pub struct AlertConfig {
    pub endpoint: super::Endpoint,
    pub format: AlertFormat,
    pub signature_failures: Option<Rate>,
    pub alert_every: Duration,
}

impl AlertConfig {
    pub fn new(
        url: &str,
        format: AlertFormat,
        signature_failures: Option<Rate>,
        alert_every: Duration,
        timeout: Duration,
    ) -> Result<Self, String> {
        let usage = "use http://HOST:PORT/PATH or https://HOST/PATH (credentials go in its path or query)";
        let endpoint = super::Endpoint::new(url, url, timeout, usage)?;
        Ok(AlertConfig { endpoint, format, signature_failures, alert_every })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    RouteFailing,
    RouteRecovered,
    RoutePaused,
    DeadLetters,
    SignatureFailures,
    QueueLost,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::RouteFailing => "route_failing",
            Kind::RouteRecovered => "route_recovered",
            Kind::RoutePaused => "route_paused",
            Kind::DeadLetters => "dead_letters",
            Kind::SignatureFailures => "signature_failures",
            Kind::QueueLost => "queue_lost",
        }
    }
}

/// What happened, before it is formatted.
#[derive(Debug, Clone)]
pub struct Alert {
    pub kind: Kind,
    pub source: String,
    pub route: Option<String>,
    pub message: String,
    pub details: Value,
}

impl Alert {
    /// The POST body for `format`.
    pub fn body(&self, format: AlertFormat, at: SystemTime) -> Value {
        match format {
            AlertFormat::Json => json!({
                "kind": self.kind.name(),
                "source": self.source,
                "route": self.route,
                "message": self.message,
                "at": crate::delivery_log::rfc3339_ms(at),
                "details": self.details,
            }),
            // Slack incoming webhooks take {"text": ...} with &, < and >
            // escaped (they delimit links and mentions in Slack's markup).
            AlertFormat::Slack => {
                let mark = match self.kind {
                    Kind::RouteRecovered => ":white_check_mark:",
                    Kind::RoutePaused => ":double_vertical_bar:",
                    _ => ":rotating_light:",
                };
                let text = format!("{mark} *hookgate* `{}`: {}", self.kind.name(), slack_escape(&self.message));
                json!({ "text": text })
            }
        }
    }
}

fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

type Key = (usize, Kind, String, String);

/// The alert tables in force and what was sent when.
#[derive(Default)]
pub struct Alerts {
    tables: RwLock<Arc<[AlertConfig]>>,
    on: AtomicBool,
    last: Mutex<HashMap<Key, Instant>>,
    /// Per table and source: the signature-failure window's start and count.
    signature: Mutex<HashMap<(usize, String), (Instant, u32)>>,
    /// Routes (source, route) that failed since they last delivered.
    failing: Mutex<HashSet<(String, String)>>,
    any_failing: AtomicBool,
    /// The app's runtime, for alerts raised on threads of their own (the disk store's).
    runtime: Option<tokio::runtime::Handle>,
}

impl Alerts {
    pub fn new(tables: &[AlertConfig]) -> Self {
        let a = Alerts { runtime: tokio::runtime::Handle::try_current().ok(), ..Alerts::default() };
        a.set(tables);
        a
    }

    /// The tables of a (re)loaded config.
    pub fn set(&self, tables: &[AlertConfig]) {
        *self.tables.write().unwrap_or_else(|p| p.into_inner()) = tables.into();
        self.on.store(!tables.is_empty(), Relaxed);
    }

    /// Whether any table is configured (the callers' fast path).
    pub fn enabled(&self) -> bool {
        self.on.load(Relaxed)
    }

    /// A forward or attempt to `route` failed with `error`.
    pub fn route_failed(&self, source: &str, route: &str, error: &str) {
        if !self.enabled() {
            return;
        }
        self.lock_failing().insert((source.to_owned(), route.to_owned()));
        self.any_failing.store(true, Relaxed);
        let message = format!("route {route} of source {source} is failing: {error}");
        self.notify(
            None,
            Alert {
                kind: Kind::RouteFailing,
                source: source.to_owned(),
                route: Some(route.to_owned()),
                message,
                details: json!({ "error": error }),
            },
        );
    }

    /// `route` delivered: a recovery alert if it was failing.
    pub fn route_ok(&self, source: &str, route: &str) {
        if !self.any_failing.load(Relaxed) {
            return;
        }
        let was = {
            let mut failing = self.lock_failing();
            let was = failing.remove(&(source.to_owned(), route.to_owned()));
            self.any_failing.store(!failing.is_empty(), Relaxed);
            was
        };
        if was && self.enabled() {
            let message = format!("route {route} of source {source} delivers again");
            let alert = Alert {
                kind: Kind::RouteRecovered,
                source: source.to_owned(),
                route: Some(route.to_owned()),
                message,
                details: json!({}),
            };
            self.notify(None, alert);
        }
    }

    pub fn paused(&self, source: &str, route: &str, reason: &str) {
        if !self.enabled() {
            return;
        }
        self.notify(
            None,
            Alert {
                kind: Kind::RoutePaused,
                source: source.to_owned(),
                route: Some(route.to_owned()),
                message: format!("queue route {route} of source {source} is paused: {reason}"),
                details: json!({ "reason": reason }),
            },
        );
    }

    pub fn dead_letter(&self, source: &str, route: &str, id: &str, attempts: u32, error: Option<&str>) {
        if !self.enabled() {
            return;
        }
        let why = error.unwrap_or("its last answer");
        self.notify(None, Alert {
            kind: Kind::DeadLetters,
            source: source.to_owned(),
            route: Some(route.to_owned()),
            message: format!(
                "queue route {route} of source {source} has a new dead letter: delivery {id} after {attempts} attempts ({why})"
            ),
            details: json!({ "id": id, "attempts": attempts, "error": error }),
        });
    }

    /// A request to `source` failed verification.
    pub fn signature_failure(&self, source: &str) {
        if !self.enabled() {
            return;
        }
        let tables = self.tables();
        let now = Instant::now();
        for (i, t) in tables.iter().enumerate() {
            let Some(rate) = t.signature_failures else { continue };
            let reached = {
                let mut windows = self.signature.lock().unwrap_or_else(|p| p.into_inner());
                let w = windows.entry((i, source.to_owned())).or_insert((now, 0));
                if now.duration_since(w.0) >= rate.period {
                    *w = (now, 0);
                }
                w.1 += 1;
                w.1 == rate.per
            };
            if reached {
                let period = humantime::format_duration(rate.period);
                self.notify(Some(i), Alert {
                    kind: Kind::SignatureFailures,
                    source: source.to_owned(),
                    route: None,
                    message: format!(
                        "source {source}: {} requests failed signature verification within {period} (a wrong secret, or an attack)",
                        rate.per
                    ),
                    details: json!({ "failures": rate.per, "within_seconds": rate.period.as_secs() }),
                });
            }
        }
    }

    /// The queue store lost `lost` acknowledged deliveries of `route` (`None`: not known).
    pub fn queue_lost(&self, source: Option<&str>, route: Option<&str>, lost: Option<u64>, what: &str) {
        if !self.enabled() {
            return;
        }
        let (s, r) = (source.unwrap_or(""), route.unwrap_or(""));
        let count = lost.map_or_else(|| "deliveries".to_owned(), |n| format!("{n} deliveries"));
        self.notify(
            None,
            Alert {
                kind: Kind::QueueLost,
                source: s.to_owned(),
                route: route.map(str::to_owned),
                message: format!(
                    "the queue store lost {count} of {}: {what}",
                    if r.is_empty() { "unknown routes".to_owned() } else { format!("route {r} of source {s}") }
                ),
                details: json!({ "lost": lost }),
            },
        );
    }

    fn tables(&self) -> Arc<[AlertConfig]> {
        self.tables.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn lock_failing(&self) -> std::sync::MutexGuard<'_, HashSet<(String, String)>> {
        self.failing.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends `alert` to every table (or only table `only`) that did not get
    /// one of its kind for its source/route within its `alert_every`.
    fn notify(&self, only: Option<usize>, alert: Alert) {
        let tables = self.tables();
        let now = Instant::now();
        let route = alert.route.clone().unwrap_or_default();
        for (i, table) in tables.iter().enumerate() {
            if only.is_some_and(|o| o != i) {
                continue;
            }
            let due = {
                let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
                let key = (i, alert.kind, alert.source.clone(), route.clone());
                match last.get(&key) {
                    Some(t) if now.duration_since(*t) < table.alert_every => false,
                    _ => {
                        last.insert(key, now);
                        true
                    }
                }
            };
            if !due {
                continue;
            }
            let body = alert.body(table.format, SystemTime::now());
            let (table, kind) = (table.clone(), alert.kind);
            match tokio::runtime::Handle::try_current().ok().or_else(|| self.runtime.clone()) {
                Some(rt) => drop(rt.spawn(send(table, kind, body))),
                None => {
                    tracing::warn!(alert = %table.endpoint.shown, kind = kind.name(), "no runtime to send an alert")
                }
            }
        }
    }
}

/// POSTs `body`, up to [`TRIES`] times.
async fn send(table: AlertConfig, kind: Kind, body: Value) {
    let bytes = bytes::Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
    let shown = &table.endpoint.shown;
    let mut wait = RETRY_AFTER;
    let mut last_error = String::new();
    for attempt in 1..=TRIES {
        match table.endpoint.post("application/json", bytes.clone()).await {
            Ok(()) => {
                tracing::debug!(alert = %shown, kind = kind.name(), "alert sent");
                return;
            }
            Err(e) => last_error = e,
        }
        if attempt < TRIES {
            tokio::time::sleep(wait).await;
            wait *= 2;
        }
    }
    tracing::warn!(alert = %shown, kind = kind.name(), tries = TRIES, error = %last_error, "an alert could not be sent");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slack_messages_are_text_with_markup_escaped() {
        let a = Alert {
            kind: Kind::RouteFailing,
            source: "s".into(),
            route: Some("r".into()),
            message: "route r of source s is failing: answered 503 <Service Unavailable> & more".into(),
            details: json!({}),
        };
        let body = a.body(AlertFormat::Slack, SystemTime::now());
        let obj = body.as_object().unwrap();
        assert_eq!(obj.len(), 1, "{body}");
        let text = obj["text"].as_str().unwrap();
        assert!(text.contains("&lt;Service Unavailable&gt; &amp; more"), "{text}");
        assert!(!text.contains('<') && !text.contains('>'));
        let json = a.body(AlertFormat::Json, SystemTime::UNIX_EPOCH);
        assert_eq!(json["kind"], "route_failing");
        assert_eq!(json["route"], "r");
        assert_eq!(json["at"], "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn urls_are_checked_without_echoing_them() {
        let ok = AlertConfig::new(
            "https://hooks.slack.com/services/T0/B0/s3cret",
            AlertFormat::Slack,
            None,
            ALERT_EVERY,
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(ok.endpoint.shown, "https://hooks.slack.com");
        for bad in ["ftp://x/s3cret", "s3cret", "http://user:s3cret@host/", "http:///s3cret", "unix:/s3cret"] {
            let e = AlertConfig::new(bad, AlertFormat::Json, None, ALERT_EVERY, Duration::from_secs(5)).unwrap_err();
            assert!(!e.contains("s3cret"), "{bad}: {e}");
        }
    }

    #[test]
    fn nothing_is_tracked_without_tables() {
        let a = Alerts::new(&[]);
        a.route_failed("s", "r", "boom");
        assert!(!a.any_failing.load(Relaxed));
        a.signature_failure("s");
        assert!(a.signature.lock().unwrap().is_empty());
    }
}
