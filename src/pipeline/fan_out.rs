//! `match = "all"` (SPEC §14): every route that takes a delivery gets it, and
//! each remembers it on its own. Dedupe is per (delivery, route), so a
//! sender's retry reaches only the routes that did not take it yet.
//!
//! Order of work: choose the routes, claim the delivery for each (all claims
//! at once: one round trip's wait with Redis), store it for the queue routes,
//! forward it to the sync routes concurrently; then answer (in this order of
//! precedence):
//! 1. any store failed: 503 (the sender retries; routes that have it are skipped);
//! 2. a sync route did not answer 2xx: the first such answer;
//! 3. a route had it in flight: 409 (retry later);
//! 4. the first sync route's 2xx answer;
//! 5. no sync route sent to: the first queue route's `ack_status`;
//! 6. every route had it already: the duplicate answer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Response};

use super::{
    FinishOnDrop, IN_FLIGHT_RETRY, Payload, Record, STORE_RETRY, Seen, duplicate, finish_claim, queued, seen, store,
    unrouted,
};
use crate::ResBody;
use crate::app::{App, Loaded};
use crate::dedupe::Claim;
use crate::delivery_log::Text;
use crate::error::Rejection;
use crate::forward::{self, ForwardError, Peer};
use crate::route;
use crate::telemetry::otel::SpanKind;
use crate::verify::{Delivery, Verified};

type Answer = Result<(Response<ResBody>, &'static str), Rejection>;

pub(super) async fn deliver(
    app: &Arc<App>,
    loaded: &Arc<Loaded>,
    index: usize,
    mut delivery: Delivery<Verified>,
    peer: Peer,
    record: &mut Record,
) -> Answer {
    let (source, state) = (&loaded.config.sources[index], &loaded.sources[index]);
    let set = route::select_all(&source.routes, delivery.event_type(), &delivery.head.headers, &delivery.body);
    let chosen: Vec<usize> = (0..source.routes.len()).filter(|i| set >> i & 1 == 1).collect();
    let Some(&first) = chosen.first() else { return unrouted(source.unrouted) };
    record.route = Some(Text::new(&source.routes[first].label));

    // dedupe, per route
    let dedupe = &loaded.config.dedupe;
    let policy = dedupe.on_store_error;
    let digest = source.dedupe_body.then(|| crate::verify::body_hash(&delivery.body));
    let digest = digest.as_deref().filter(|d| *d != delivery.id());
    let scopes: Vec<String> =
        chosen.iter().map(|&i| format!("{}/{}", source.name, source.routes[i].identity)).collect();
    let outcomes =
        futures_util::future::join_all(scopes.iter().map(|s| loaded.store.claim(s, delivery.id(), digest, dedupe)))
            .await;
    record.stage("dedupe", SpanKind::Internal, None);
    let mut claimed: Vec<(usize, Option<Claim>)> = Vec::with_capacity(chosen.len());
    let (mut in_flight, mut store_down) = (false, false);
    for (&i, outcome) in chosen.iter().zip(outcomes) {
        match seen(app, outcome, policy) {
            Seen::Go(claim) => claimed.push((i, claim)),
            Seen::Delivered => {}
            Seen::InFlight => in_flight = true,
            Seen::StoreDown => store_down = true,
        }
    }
    if store_down {
        for (_, claim) in claimed {
            finish_claim(app, claim, false, policy).await;
        }
        return Err(Rejection::StoreUnavailable { retry_after: STORE_RETRY });
    }
    if claimed.is_empty() {
        if in_flight {
            return Err(Rejection::InFlight { retry_after: IN_FLIGHT_RETRY });
        }
        state.metrics.dedupe_hits.inc();
        return Ok(duplicate());
    }

    // The headers every route starts from (SPEC §3), made once.
    record.propagate(&mut delivery.head.headers);
    let ours = forward::Ours::of(&delivery, Some(delivery.body.len()));
    let headers = forward::upstream_headers(
        std::mem::take(&mut delivery.head.headers),
        &delivery.head.uri,
        peer,
        &state.name_header,
        ours,
    );

    // queue routes: stored one after the other
    let mut store_failed = None;
    let mut sync = Vec::new();
    for (i, claim) in claimed {
        let Some(q) = source.routes[i].queue() else {
            sync.push((i, claim));
            continue;
        };
        let mut stored_headers = headers.clone();
        stored_headers.remove(http::header::CONTENT_LENGTH);
        let stored = store(app, source, state, i, q, &Payload::of(&delivery), stored_headers, record).await;
        finish_claim(app, claim, stored.is_ok(), policy).await;
        if let Err(e) = stored {
            store_failed.get_or_insert(e);
        }
    }
    // Each queue route has a log record of its own; the request has one too
    // when it was forwarded somewhere now.
    record.logged = sync.is_empty() && app.queue.is_some();

    // sync routes: forwarded at once. If the sender hangs up, the forwards go
    // on in a task of their own, so each claim still says what happened.
    let mut ok = None;
    let mut failed: Option<Answer> = None;
    let forwarded = !sync.is_empty();
    if forwarded {
        let query = delivery.head.uri.query().map(str::to_owned);
        let id: Arc<str> = delivery.id().into();
        let forwards = forward_all(app.clone(), loaded.clone(), index, sync, headers, id, query, delivery.body.clone());
        let results = FinishOnDrop(Some(Box::pin(forwards))).await;
        for (i, result, elapsed) in results {
            let ms = elapsed.as_millis();
            record.upstream_ms = Some(record.upstream_ms.map_or(ms, |m| m.max(ms)));
            match result {
                Ok(res) if res.status().is_success() => {
                    ok.get_or_insert(res);
                }
                Ok(res) => {
                    failed.get_or_insert(Ok((res, "forwarded")));
                }
                Err(e) => {
                    let advice = crate::tls::upstream_advice(&e.to_string());
                    let label = &source.routes[i].label;
                    tracing::warn!(source = %source.name, route = %label, error = %e, advice, "upstream failed");
                    failed.get_or_insert(Err(Rejection::Upstream(e)));
                }
            }
        }
    }

    if record.trace.is_some() {
        let error = store_failed.as_ref().map(|e| e.code().to_owned()).or_else(|| match &failed {
            Some(Ok((res, _))) => Some(format!("upstream answered {}", res.status())),
            Some(Err(e)) => Some(e.code().to_owned()),
            None => None,
        });
        record.stage(if forwarded { "forward" } else { "enqueue" }, SpanKind::Client, error);
    }
    if let Some(e) = store_failed {
        return Err(e);
    }
    if let Some(answer) = failed {
        return answer;
    }
    if in_flight {
        return Err(Rejection::InFlight { retry_after: IN_FLIGHT_RETRY });
    }
    if let Some(res) = ok {
        return Ok((res, "forwarded"));
    }
    let first_queue = chosen.iter().find_map(|&i| source.routes[i].queue());
    match first_queue {
        Some(q) => Ok(queued(q.ack_status, delivery.id())),
        None => Ok(duplicate()),
    }
}

/// Forwards to each sync route at once; commits or releases each claim.
/// Results in route order.
#[allow(clippy::too_many_arguments)]
pub(super) async fn forward_all(
    app: Arc<App>,
    loaded: Arc<Loaded>,
    index: usize,
    sync: Vec<(usize, Option<Claim>)>,
    headers: HeaderMap,
    id: Arc<str>,
    query: Option<String>,
    body: Bytes,
) -> Vec<(usize, Result<Response<ResBody>, ForwardError>, Duration)> {
    let (source, state) = (&loaded.config.sources[index], &loaded.sources[index]);
    let policy = loaded.config.dedupe.on_store_error;
    let (app, id, query, body) = (&app, &id, &query, &body);
    futures_util::future::join_all(sync.into_iter().map(|(i, claim)| {
        let headers = headers.clone();
        async move {
            let route = &source.routes[i];
            let sent = Instant::now();
            let result = match forward::prepare(route, headers, query.as_deref(), id, body) {
                Ok((path, headers, body)) => forward::send(route, path, headers, body).await,
                Err(e) => Err(e),
            };
            let elapsed = sent.elapsed();
            state.metrics.upstream(i, elapsed.as_secs_f64());
            state.stats.latency(elapsed, std::time::SystemTime::now());
            let delivered = matches!(&result, Ok(res) if res.status().is_success());
            super::report(app, &state.name, route, &result);
            finish_claim(app, claim, delivered, policy).await;
            (i, result, elapsed)
        }
    }))
    .await
}
