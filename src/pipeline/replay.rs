//! `POST /deliveries/{entry}/replay` (SPEC §17): a captured request sent to
//! its route(s) again, past dedupe, with `X-Hookgate-Replay: true`.
//!
//! The routes are chosen anew from the source's current routes (the event
//! type, headers and body decide, as for the sender's request). Sync routes
//! are forwarded at once and their answers reported; queue routes get a new
//! entry. The replay has delivery-log records of its own (`"replay": true`)
//! sharing the captured request. The captured headers' redacted values are
//! left out: the app gets what a sync forward sends, signatures included
//! only through the route's re-signing.

use std::sync::Arc;

use http::{HeaderName, HeaderValue, StatusCode};
use serde_json::{Value, json};

use super::fan_out::forward_all;
use super::{Payload, Record, store};
use crate::app::App;
use crate::delivery_log::{Capture, Text};
use crate::error::Rejection;
use crate::forward::{self, Peer};
use crate::route;

/// The header that marks a replayed request toward the app.
static X_REPLAY: HeaderName = HeaderName::from_static("x-hookgate-replay");

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("no delivery-log entry {0} (it left the log, or never was)")]
    NotFound(u64),
    #[error("entry {0} has no captured request: set [log] bodies, or it was dropped to stay within that size")]
    NoBody(u64),
    #[error("source {0:?} is no longer configured")]
    SourceGone(String),
    #[error("no route of source {0:?} takes this delivery now")]
    Unrouted(String),
}

impl ReplayError {
    pub fn status(&self) -> StatusCode {
        match self {
            ReplayError::NotFound(_) => StatusCode::NOT_FOUND,
            _ => StatusCode::CONFLICT,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ReplayError::NotFound(_) => "not_found",
            ReplayError::NoBody(_) => "no_body",
            ReplayError::SourceGone(_) => "source_gone",
            ReplayError::Unrouted(_) => "unrouted",
        }
    }
}

/// Sends log entry `entry`'s captured request again; the answer's body
/// (`ok`, and per route its status, `queued` or `error`) and whether every
/// route took it.
pub async fn replay(app: &Arc<App>, entry: u64) -> Result<(Value, bool), ReplayError> {
    let (item, _) = app.deliveries.get(entry).ok_or(ReplayError::NotFound(entry))?;
    let capture = item.capture.clone().ok_or(ReplayError::NoBody(entry))?;
    let loaded = app.current();
    let index = loaded
        .config
        .sources
        .iter()
        .position(|s| *s.name == *item.source)
        .ok_or_else(|| ReplayError::SourceGone(item.source.to_string()))?;
    let (source, state) = (&loaded.config.sources[index], &loaded.sources[index]);

    let (event_type, body) = (&*item.event_type, &capture.body);
    let chosen: Vec<usize> = if source.fan_out {
        let set = route::select_all(&source.routes, event_type, &capture.headers, body);
        (0..source.routes.len()).filter(|i| set >> i & 1 == 1).collect()
    } else {
        route::select(&source.routes, event_type, &capture.headers, body).map(|(i, _)| i).into_iter().collect()
    };
    let Some(&first) = chosen.first() else { return Err(ReplayError::Unrouted(source.name.to_string())) };

    let headers = replay_headers(&capture, &item.id, event_type, &source.path, item.client, &state.name_header);
    let mut record = Record {
        client: item.client,
        event_type: item.event_type.clone(),
        id: item.id.clone(),
        route: Some(Text::new(&source.routes[first].label)),
        capture: Some(capture.clone()),
        replay: true,
        ..Record::default()
    };
    let payload = Payload { id: &item.id, event_type, query: capture.query.as_deref(), body };

    let mut routes = Vec::with_capacity(chosen.len());
    let mut all_ok = true;
    let mut sync = Vec::new();
    for &i in &chosen {
        let route = &source.routes[i];
        let Some(q) = route.queue() else {
            sync.push((i, None));
            continue;
        };
        let mut stored_headers = headers.clone();
        stored_headers.remove(http::header::CONTENT_LENGTH);
        match store(app, source, state, i, q, &payload, stored_headers, &record).await {
            Ok(()) => routes.push(json!({ "route": &*route.label, "queued": true })),
            Err(e) => {
                all_ok = false;
                routes.push(json!({ "route": &*route.label, "error": e.code() }));
            }
        }
    }
    if !sync.is_empty() {
        let query = capture.query.as_deref().map(str::to_owned);
        let id: Arc<str> = (&*item.id).into();
        let results = forward_all(app.clone(), loaded.clone(), index, sync, headers, id, query, body.clone()).await;
        // The replay's own record: the first failure, else the first answer.
        let mut logged: Option<(&'static str, u16)> = None;
        for (i, result, elapsed) in results {
            let label = &*source.routes[i].label;
            record.upstream_ms = Some(record.upstream_ms.map_or(elapsed.as_millis(), |m| m.max(elapsed.as_millis())));
            let (outcome, status, shown) = match result {
                Ok(res) => {
                    let status = res.status().as_u16();
                    ("forwarded", status, json!({ "route": label, "status": status }))
                }
                Err(e) => {
                    tracing::warn!(source = %source.name, route = label, error = %e, "replay: upstream failed");
                    let r = Rejection::Upstream(e);
                    (r.code(), r.status().as_u16(), json!({ "route": label, "error": r.code() }))
                }
            };
            let ok = (200..300).contains(&status);
            all_ok &= ok;
            if logged.is_none() || !ok && logged.is_some_and(|(_, s)| (200..300).contains(&s)) {
                logged = Some((outcome, status));
            }
            routes.push(shown);
        }
        if let Some((outcome, status)) = logged {
            app.deliveries.push(record.into_item(state, outcome, status));
        }
    }
    tracing::info!(source = %source.name, delivery_id = %item.id, entry, ok = all_ok, "replayed a captured delivery");
    Ok((json!({ "ok": all_ok, "id": &*item.id, "routes": routes }), all_ok))
}

/// The headers a sync forward of the captured request sends, without the
/// redacted values, with `X-Hookgate-Replay: true`.
fn replay_headers(
    capture: &Capture,
    id: &str,
    event_type: &str,
    path: &str,
    client: Option<std::net::IpAddr>,
    name_header: &HeaderValue,
) -> http::HeaderMap {
    let mut headers = http::HeaderMap::with_capacity(capture.headers.len() + 8);
    for (name, value) in &capture.headers {
        if !Capture::redacted(value) {
            headers.append(name.clone(), value.clone());
        }
    }
    let uri: http::Uri = path.parse().unwrap_or_default();
    let peer = Peer { addr: client.unwrap_or(std::net::Ipv6Addr::LOCALHOST.into()), trusted: false, https: false };
    let ours = forward::Ours {
        id: HeaderValue::from_str(id).ok(),
        event_type: HeaderValue::from_str(event_type).ok().filter(|_| !event_type.is_empty()),
        body_len: None,
    };
    let mut headers = forward::upstream_headers(headers, &uri, peer, name_header, ours);
    headers.insert(X_REPLAY.clone(), HeaderValue::from_static("true"));
    headers
}
