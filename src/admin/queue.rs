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

/// One route's line in `GET /queue`.
pub struct RouteDepth {
    pub source: String,
    /// The route's identity: its name, or `~` and a fingerprint (SPEC §12).
    pub route: String,
    /// The upstream, for routes in the config.
    pub upstream: Option<String>,
    pub depth: QueueDepth,
    /// Stored under a route the config no longer has.
    pub orphaned: bool,
    /// A route that stopped being a queue route and still delivers what it stored.
    pub draining: bool,
    /// Redis: how often the route's stream or group was found gone (data lost outside hookgate).
    pub store_resets: u64,
    /// Paused (SPEC §16).
    pub paused: Option<crate::queue::pause::Pause>,
    /// The route's label (name, else position) and `events`, for routes in the config.
    pub label: Option<String>,
    pub events: Vec<String>,
}

/// Every queue route of the config in force with its depth, then the routes
/// that still hold deliveries without being queue routes (draining) or
/// without being in the config (orphans); an error when the store does not
/// answer (so `/queue` says 503 rather than "nothing queued").
pub async fn depths(app: &App) -> Result<Vec<RouteDepth>, QueueError> {
    let Some(queue) = &app.queue else { return Ok(Vec::new()) };
    if let crate::queue::Store::Disk(d) = &queue.store
        && !d.opened()
    {
        // Zeros now would say "nothing queued" about a store not yet read.
        return Err(QueueError::Unavailable("the queue store is still opening".into()));
    }
    let loaded = app.current();
    let now = unix_ms(SystemTime::now());
    let mut keys = crate::queue::routes(&loaded.config);
    for k in queue.stored_routes().await? {
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    let mut out = Vec::new();
    for key in keys {
        let (counts, in_flight) = queue.depth(&key).await?;
        let oldest = match counts.pending + counts.scheduled {
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
        let route = crate::queue::locate(&loaded.config, &key).map(|(s, r)| &loaded.config.sources[s].routes[r]);
        out.push(RouteDepth {
            source: key.source().to_owned(),
            route: key.identity().into_owned(),
            upstream: route.map(|r| r.upstream.to_string()),
            depth,
            orphaned: route.is_none(),
            draining: route.is_some_and(|r| r.queue().is_none()) && counts.pending + counts.scheduled + in_flight > 0,
            store_resets: match &queue.store {
                crate::queue::Store::Redis(r) => r.resets(&key).map_or(0, |(n, _)| n),
                crate::queue::Store::Disk(_) => 0,
            },
            paused: queue.pauses.get(&key),
            label: route.map(|r| r.label.to_string()),
            events: route.map(|r| r.patterns.iter().map(|p| p.text()).collect()).unwrap_or_default(),
        });
    }
    Ok(out)
}

/// Deliveries the disk store found lost to damage: per route, and in all.
fn lost(app: &App) -> (Vec<(Option<RouteKey>, u64)>, u64) {
    match app.queue.as_ref().map(|q| &q.store) {
        Some(crate::queue::Store::Disk(d)) => {
            let l = d.lost();
            let total = l.iter().map(|(_, n)| n).sum();
            (l, total)
        }
        _ => (Vec::new(), 0),
    }
}

/// Sets the depth gauges before a scrape (left as they were while the store does not answer).
pub async fn refresh_gauges(app: &App) {
    for d in depths(app).await.unwrap_or_default() {
        app.metrics.set_queue_depth(&d.source, &d.route, &d.depth);
        app.metrics.set_queue_paused(&d.source, &d.route, d.paused.is_some());
    }
    for (route, n) in lost(app).0 {
        let (source, identity) = route
            .as_ref()
            .map_or((String::new(), String::new()), |r| (r.source().to_owned(), r.identity().into_owned()));
        app.metrics.set_queue_lost(&source, &identity, n);
    }
}

pub async fn overview(app: &App) -> Response<ResBody> {
    let depths = match depths(app).await {
        Ok(d) => d,
        Err(e) => return unavailable(&e),
    };
    let routes: Vec<Value> = depths
        .into_iter()
        .map(|r| {
            let d = r.depth;
            json!({
                "source": r.source,
                "route": r.route,
                "upstream": r.upstream,
                "pending": d.pending,
                "scheduled": d.scheduled,
                "in_flight": d.in_flight,
                "dead": d.dead,
                "oldest_pending_seconds": d.oldest_pending_seconds,
                "orphaned": r.orphaned,
                "draining": r.draining,
                "store_resets": r.store_resets,
                "paused": r.paused.as_ref().map(|p| json!({
                    "since": crate::delivery_log::rfc3339_ms(p.since),
                    "reason": p.reason.text(),
                })),
                "name": r.label,
                "events": r.events,
            })
        })
        .collect();
    // Deliveries lost to storage damage since start (the dashboard's banner).
    let lost = lost(app).1;
    json_response(StatusCode::OK, &json!({ "routes": routes, "lost": lost }))
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
        "route": d.route.identity(),
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
    let routes = queue.known_routes(&app.current().config).await;
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
    let routes = queue.known_routes(&app.current().config).await;
    match queue.store.dead_retry(&routes, Some(entry), None).await {
        Ok(0) => unknown_entry(),
        Ok(n) => {
            queue.wake_all();
            json_response(StatusCode::OK, &json!({ "retried": n }))
        }
        Err(e) => unavailable(&e),
    }
}

/// What `POST /queue/dead/retry` replays besides `source` (SPEC §16).
#[derive(Debug, Default, PartialEq)]
struct Replay {
    /// A route's identity, or its label (name or position) in the config.
    route: Option<String>,
    /// Received at or after / before, in unix ms.
    since_ms: Option<u64>,
    until_ms: Option<u64>,
    /// The last status: exact (`503`), a class (`5xx`), or `none` (no HTTP answer).
    status: Option<String>,
}

impl Replay {
    fn parse(query: &str) -> Result<Replay, String> {
        let time = |name: &str| -> Result<Option<u64>, String> {
            let Some(t) = param(query, name) else { return Ok(None) };
            let at = time::OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339)
                .map_err(|_| format!("{name}: expected an RFC 3339 time, e.g. 2026-12-03T10:00:00Z"))?;
            Ok(Some(u64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)))
        };
        let status = param(query, "status");
        if let Some(s) = &status {
            let ok = s == "none"
                || (s.len() == 3 && s.as_bytes()[0].is_ascii_digit() && (s[1..] == *"xx" || s.parse::<u16>().is_ok()));
            if !ok {
                return Err("status: expected a status (503), a class (5xx) or none".into());
            }
        }
        Ok(Replay { route: param(query, "route"), since_ms: time("since")?, until_ms: time("until")?, status })
    }

    fn is_empty(&self) -> bool {
        *self == Replay::default()
    }

    fn takes(&self, item: &crate::queue::DeadItem, labels: &[(RouteKey, String)]) -> bool {
        let route_ok = self
            .route
            .as_deref()
            .is_none_or(|r| item.route.identity() == r || labels.iter().any(|(k, l)| *k == item.route && l == r));
        let at = item.meta.received_ms;
        let status_ok = self.status.as_deref().is_none_or(|s| match (s, item.state.last_status) {
            ("none", st) => st.is_none(),
            (_, None) => false,
            (s, Some(st)) if s.ends_with("xx") => st / 100 == u16::from(s.as_bytes()[0] - b'0'),
            (s, Some(st)) => s.parse::<u16>() == Ok(st),
        });
        route_ok && self.since_ms.is_none_or(|t| at >= t) && self.until_ms.is_none_or(|t| at < t) && status_ok
    }
}

/// Dead letters matching `filter`, read page by page, retried one by one.
async fn retry_matching(
    app: &App,
    queue: &crate::queue::Queue,
    routes: &[RouteKey],
    source: Option<String>,
    filter: &Replay,
) -> Result<usize, crate::queue::QueueError> {
    let labels: Vec<(RouteKey, String)> = app
        .current()
        .config
        .sources
        .iter()
        .flat_map(|s| s.routes.iter().map(|r| (RouteKey::new(&s.name, &r.identity), r.label.to_string())))
        .collect();
    let mut chosen = Vec::new();
    let mut cursor = None;
    loop {
        let page = queue.store.dead_list(routes, source.clone(), 500, cursor).await?;
        chosen.extend(page.items.into_iter().filter(|i| filter.takes(i, &labels)).map(|i| i.entry));
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let mut n = 0;
    for entry in chosen {
        n += queue.store.dead_retry(routes, Some(&entry), None).await?;
    }
    Ok(n)
}

pub async fn retry_all(app: &App, query: &str) -> Response<ResBody> {
    let filter = match Replay::parse(query) {
        Ok(f) => f,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", &e),
    };
    let Some(queue) = &app.queue else {
        return json_response(StatusCode::OK, &json!({ "retried": 0 }));
    };
    let routes = queue.known_routes(&app.current().config).await;
    let retried = if filter.is_empty() {
        queue.store.dead_retry(&routes, None, param(query, "source")).await
    } else {
        retry_matching(app, queue, &routes, param(query, "source"), &filter).await
    };
    match retried {
        Ok(n) => {
            queue.wake_all();
            json_response(StatusCode::OK, &json!({ "retried": n }))
        }
        Err(e) => unavailable(&e),
    }
}

/// `POST /queue/routes/{source}/{route}/pause|resume` (SPEC §16): `route` is
/// the route's identity, name or position.
pub async fn pause_or_resume(app: &App, source: &str, route: &str, pause: bool) -> Response<ResBody> {
    let Some(queue) = &app.queue else {
        return error(StatusCode::NOT_FOUND, "not_found", "no queue is configured");
    };
    let loaded = app.current();
    let by_label = loaded.config.sources.iter().filter(|s| s.name == source).find_map(|s| {
        s.routes.iter().find(|r| &*r.label == route && r.queue().is_some()).map(|r| RouteKey::new(&s.name, &r.identity))
    });
    let key = by_label.unwrap_or_else(|| RouteKey::new(source, route));
    let known = queue.known_routes(&loaded.config).await;
    if !known.contains(&key) {
        return error(StatusCode::NOT_FOUND, "not_found", "no queue route with this source and name");
    }
    let done = if pause { queue.pause(&key, crate::queue::pause::Reason::Api).await } else { queue.resume(&key).await };
    match done {
        Ok(_) => {
            app.metrics.set_queue_paused(key.source(), &key.identity(), queue.pauses.get(&key).is_some());
            let paused = queue
                .pauses
                .get(&key)
                .map(|p| json!({ "since": crate::delivery_log::rfc3339_ms(p.since), "reason": p.reason.text() }));
            json_response(StatusCode::OK, &json!({ "source": key.source(), "route": key.identity(), "paused": paused }))
        }
        Err(e) => unavailable(&e),
    }
}

pub async fn delete(app: &App, entry: &str) -> Response<ResBody> {
    let Some(queue) = &app.queue else { return unknown_entry() };
    match queue.store.dead_delete(entry).await {
        Ok(Some(meta)) => {
            // The delivery log's record says so (it said "dead").
            if let Some((epoch, seq)) = meta.and_then(|m| m.log)
                && epoch == app.deliveries.epoch
            {
                app.deliveries.update(seq, |i| {
                    i.queue_state = Some("deleted");
                    i.next_attempt_at = None;
                });
            }
            let mut res = Response::new(http_body_util::Either::Left(http_body_util::Full::new(bytes::Bytes::new())));
            *res.status_mut() = StatusCode::NO_CONTENT;
            res
        }
        Ok(None) => unknown_entry(),
        Err(e) => unavailable(&e),
    }
}

/// A path segment as sent (percent-decoded: `@3` may arrive as `%403`).
fn segment(text: &str) -> String {
    form_urlencoded::parse(format!("x={}", text.replace('+', "%2B")).as_bytes())
        .next()
        .map_or_else(String::new, |(_, v)| v.into_owned())
}

/// The orphan `{source}/{route}` names: stored, and not a route of the config in force.
async fn orphan(app: &App, source: &str, route: &str) -> Result<RouteKey, Response<ResBody>> {
    let Some(queue) = &app.queue else {
        return Err(error(StatusCode::NOT_FOUND, "not_found", "no queue is configured"));
    };
    let key = RouteKey::new(&segment(source), &segment(route));
    if crate::queue::locate(&app.current().config, &key).is_some() {
        return Err(error(
            StatusCode::CONFLICT,
            "not_orphaned",
            "this route is in the config: its worker delivers what it stored",
        ));
    }
    match queue.stored_routes().await {
        Ok(stored) if stored.contains(&key) => Ok(key),
        Ok(_) => Err(error(StatusCode::NOT_FOUND, "not_found", "no orphaned deliveries under this source and route")),
        Err(e) => Err(unavailable(&e)),
    }
}

/// Disk: an attempt started before the orphan's route went away records its
/// outcome under it; moved or dropped meanwhile, a retry or dead letter would
/// be written back beside the delivery. (Redis stores an outcome only for an
/// entry still pending in its stream.) The 409 answer while they are.
fn unsettled(queue: &crate::queue::Queue, key: &RouteKey) -> Option<Response<ResBody>> {
    match &queue.store {
        crate::queue::Store::Disk(d) if d.counts(key).1 > 0 => Some(error(
            StatusCode::CONFLICT,
            "attempts_in_flight",
            "attempts started before this route was removed are still under way (at most its timeout); try again in a moment",
        )),
        _ => None,
    }
}

/// `POST /queue/orphans/{source}/{route}/move?to=NAME` (SPEC §12): an
/// orphan's deliveries handed to a route of the same source, named by its
/// `name` (or, unnamed, the identity `GET /queue` shows).
pub async fn move_orphans(app: &App, source: &str, route: &str, query: &str) -> Response<ResBody> {
    let from = match orphan(app, source, route).await {
        Ok(k) => k,
        Err(res) => return res,
    };
    let Some(to) = param(query, "to") else {
        return error(StatusCode::BAD_REQUEST, "bad_request", "name the route to move to: ?to=NAME");
    };
    let target = RouteKey::new(from.source(), &to);
    if crate::queue::locate(&app.current().config, &target).is_none() {
        return error(
            StatusCode::NOT_FOUND,
            "unknown_route",
            "`to` names no route of this source in the config (GET /queue shows the routes)",
        );
    }
    let Some(queue) = &app.queue else { return unavailable(&QueueError::Closed) };
    if let Some(res) = unsettled(queue, &from) {
        return res;
    }
    match queue.move_route(&from, &target).await {
        Ok(n) => {
            tracing::info!(source = from.source(), from = %from.identity(), to = %to, moved = n, "orphaned queued deliveries moved");
            json_response(StatusCode::OK, &json!({ "moved": n, "to": to }))
        }
        Err(e) => unavailable(&e),
    }
}

/// `DELETE /queue/orphans/{source}/{route}`: an orphan's deliveries dropped.
pub async fn delete_orphans(app: &App, source: &str, route: &str) -> Response<ResBody> {
    let key = match orphan(app, source, route).await {
        Ok(k) => k,
        Err(res) => return res,
    };
    let Some(queue) = &app.queue else { return unavailable(&QueueError::Closed) };
    if let Some(res) = unsettled(queue, &key) {
        return res;
    }
    match queue.purge(&key).await {
        Ok(n) => {
            tracing::warn!(source = key.source(), route = %key.identity(), deleted = n, "orphaned queued deliveries deleted");
            json_response(StatusCode::OK, &json!({ "deleted": n }))
        }
        Err(e) => unavailable(&e),
    }
}

/// `GET /queue/waiting?source=S&route=R&limit=N&cursor=C` (SPEC §12): stored
/// deliveries that are neither done nor dead, route by route (never attempted
/// first, then those waiting for a retry), from the store, so a restart does
/// not hide a backlog. The cursor is `<route's position in the list>.<the
/// store's cursor within it>`.
pub async fn waiting(app: &App, query: &str) -> Response<ResBody> {
    let (limit, cursor) = match paging(query) {
        Ok(p) => p,
        Err(res) => return *res,
    };
    let Some(queue) = &app.queue else {
        return json_response(StatusCode::OK, &json!({ "items": [], "next": null }));
    };
    let (source, route) = (param(query, "source"), param(query, "route"));
    let mut routes: Vec<RouteKey> = queue
        .known_routes(&app.current().config)
        .await
        .into_iter()
        .filter(|k| source.as_deref().is_none_or(|s| s == k.source()))
        .filter(|k| route.as_deref().is_none_or(|r| *r == *k.identity()))
        .collect();
    routes.sort();
    let (mut at, mut inner) = match cursor.as_deref().map(|c| c.split_once('.')) {
        None => (0, None),
        Some(Some((n, rest))) if n.parse::<usize>().is_ok() => {
            (n.parse().unwrap_or(0), Some(rest.to_owned()).filter(|r| !r.is_empty()))
        }
        Some(_) => return error(StatusCode::BAD_REQUEST, "bad_request", "unknown cursor"),
    };
    let mut items = Vec::new();
    let mut next = None;
    while at < routes.len() && items.len() < limit {
        let page = match queue.store.waiting(&routes[at], limit - items.len(), inner.as_deref()).await {
            Ok(p) => p,
            Err(e) => return unavailable(&e),
        };
        items.extend(page.items.iter().map(|w| {
            json!({
                "entry": w.entry,
                "source": w.route.source(),
                "route": w.route.identity(),
                "id": w.meta.id,
                "event_type": w.meta.event_type,
                "attempts": w.state.attempts,
                "last_status": w.state.last_status,
                "last_error": w.state.last_error,
                "received_at": time_ms(w.meta.received_ms),
                "next_attempt_at": w.next_attempt_ms.map(time_ms),
            })
        }));
        match page.next {
            Some(n) => {
                next = Some(format!("{at}.{n}"));
                break;
            }
            None => {
                at += 1;
                inner = None;
            }
        }
    }
    if next.is_none() && items.len() >= limit && at < routes.len() {
        // The page ended with a route: the next starts with the following one.
        next = Some(format!("{at}."));
    }
    json_response(StatusCode::OK, &json!({ "items": items, "next": next }))
}
