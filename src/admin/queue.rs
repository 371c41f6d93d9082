//! Queue endpoints (SPEC §5): depth per route, dead letters, retry and delete.

use std::time::{Duration, SystemTime};

use http::{Response, StatusCode};
use serde_json::{Value, json};

use super::{error, paging, param};
use crate::ResBody;
use crate::app::App;
use crate::delivery_log::rfc3339_ms;
use crate::error::json_response;
use crate::metrics::QueueDepth;
use crate::queue::{DeadItem, QueueError, RouteKey, unix_ms};

/// Every queue route of the config in force, with its depth; an error when the
/// store does not answer (so `/queue` says 503 rather than "nothing queued").
pub async fn depths(app: &App) -> Result<Vec<(String, usize, String, QueueDepth)>, QueueError> {
    let Some(queue) = &app.queue else { return Ok(Vec::new()) };
    let loaded = app.current();
    let now = unix_ms(SystemTime::now());
    let mut out = Vec::new();
    for source in &loaded.config.sources {
        for (i, route) in source.routes.iter().enumerate() {
            if route.queue().is_none() {
                continue;
            }
            let key = RouteKey::new(&source.name, i);
            let (counts, in_flight) = queue.depth(&key).await?;
            let oldest = match counts.pending {
                0 => None,
                _ => queue.store.oldest_pending_ms(&key).await,
            };
            let depth = QueueDepth {
                pending: counts.pending,
                scheduled: counts.scheduled,
                in_flight,
                dead: counts.dead,
                oldest_pending_seconds: oldest.map_or(0.0, |at| now.saturating_sub(at) as f64 / 1000.0),
            };
            out.push((source.name.clone(), i, route.upstream.to_string(), depth));
        }
    }
    Ok(out)
}

/// Sets the depth gauges before a scrape (left as they were while the store does not answer).
pub async fn refresh_gauges(app: &App) {
    for (source, route, _, depth) in depths(app).await.unwrap_or_default() {
        app.metrics.set_queue_depth(&source, route, &depth);
    }
}

pub async fn overview(app: &App) -> Response<ResBody> {
    let depths = match depths(app).await {
        Ok(d) => d,
        Err(e) => return unavailable(&e),
    };
    let routes: Vec<Value> = depths
        .into_iter()
        .map(|(source, route, upstream, d)| {
            json!({
                "source": source,
                "route": route,
                "upstream": upstream,
                "pending": d.pending,
                "scheduled": d.scheduled,
                "in_flight": d.in_flight,
                "dead": d.dead,
                "oldest_pending_seconds": d.oldest_pending_seconds,
            })
        })
        .collect();
    json_response(StatusCode::OK, &json!({ "routes": routes }))
}

fn unavailable(e: &QueueError) -> Response<ResBody> {
    match e {
        QueueError::BadInput(m) => error(StatusCode::BAD_REQUEST, "bad_request", m),
        _ => error(StatusCode::SERVICE_UNAVAILABLE, "queue_unavailable", &e.to_string()),
    }
}

fn time_ms(ms: u64) -> String {
    rfc3339_ms(SystemTime::UNIX_EPOCH + Duration::from_millis(ms))
}

fn dead_json(d: &DeadItem) -> Value {
    json!({
        "entry": d.entry,
        "source": d.meta.source,
        "route": d.meta.route,
        "id": d.meta.id,
        "event_type": d.meta.event_type,
        "attempts": d.state.attempts,
        "last_status": d.state.last_status,
        "last_error": d.state.last_error,
        "received_at": time_ms(d.meta.received_ms),
        "dead_at": d.state.dead_ms.map(time_ms),
    })
}

pub async fn dead_list(app: &App, query: &str) -> Response<ResBody> {
    let (limit, cursor) = match paging(query) {
        Ok(p) => p,
        Err(res) => return *res,
    };
    let Some(queue) = &app.queue else {
        return json_response(StatusCode::OK, &json!({ "items": [], "next": null }));
    };
    let routes = crate::queue::routes(&app.current().config);
    match queue.store.dead_list(&routes, param(query, "source"), limit, cursor).await {
        Ok(page) => {
            let items: Vec<Value> = page.items.iter().map(dead_json).collect();
            json_response(StatusCode::OK, &json!({ "items": items, "next": page.next.map(|n| n.to_string()) }))
        }
        Err(e) => unavailable(&e),
    }
}

fn unknown_entry() -> Response<ResBody> {
    error(StatusCode::NOT_FOUND, "not_found", "no dead letter with this entry")
}

pub async fn retry_one(app: &App, entry: &str) -> Response<ResBody> {
    let Some(queue) = &app.queue else { return unknown_entry() };
    let routes = crate::queue::routes(&app.current().config);
    match queue.store.dead_retry(&routes, Some(entry), None).await {
        Ok(0) => unknown_entry(),
        Ok(n) => {
            queue.wake_all();
            json_response(StatusCode::OK, &json!({ "retried": n }))
        }
        Err(e) => unavailable(&e),
    }
}

pub async fn retry_all(app: &App, query: &str) -> Response<ResBody> {
    let Some(queue) = &app.queue else {
        return json_response(StatusCode::OK, &json!({ "retried": 0 }));
    };
    let routes = crate::queue::routes(&app.current().config);
    match queue.store.dead_retry(&routes, None, param(query, "source")).await {
        Ok(n) => {
            queue.wake_all();
            json_response(StatusCode::OK, &json!({ "retried": n }))
        }
        Err(e) => unavailable(&e),
    }
}

pub async fn delete(app: &App, entry: &str) -> Response<ResBody> {
    let Some(queue) = &app.queue else { return unknown_entry() };
    match queue.store.dead_delete(entry).await {
        Ok(true) => {
            let mut res = Response::new(http_body_util::Either::Left(http_body_util::Full::new(bytes::Bytes::new())));
            *res.status_mut() = StatusCode::NO_CONTENT;
            res
        }
        Ok(false) => unknown_entry(),
        Err(e) => unavailable(&e),
    }
}
