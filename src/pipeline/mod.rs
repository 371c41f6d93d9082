//! One request, stage by stage, in the order of SPEC §3 (see the chart in
//! `lib.rs`). Each stage is a call into the module named after it; this file
//! only sequences them, records the outcome and writes one log line. A source
//! with `match = "all"` dedupes and delivers per route: [`fan_out`].

mod fan_out;
mod replay;

pub use replay::{ReplayError, replay};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Limited;
use hyper::body::Incoming;
use serde_json::json;

use crate::app::{App, Loaded, SourceState};
use crate::config::{OnStoreError, Source, Unrouted};
use crate::dedupe::{Claim, ClaimOutcome};
use crate::delivery_log::{Capture, Item, Text};
use crate::error::{Rejection, json_response};
use crate::forward::{self, Peer, X_DUPLICATE};
use crate::queue::{Meta, NewEntry, QueueRoute, RouteKey, unix_ms};
use crate::telemetry::otel::SpanKind;
use crate::verify::{Delivery, Verified, VerifyError};
use crate::{ResBody, challenge, guard, route};

/// How long a sender should wait before retrying an in-flight delivery.
const IN_FLIGHT_RETRY: Duration = Duration::from_secs(1);
/// How long a sender should wait when the dedupe store is down.
const STORE_RETRY: Duration = Duration::from_secs(5);
/// How long a sender should wait when the queue store cannot be written.
const QUEUE_RETRY: Duration = Duration::from_secs(5);

/// What the log line, the delivery log and metrics say about one delivery.
#[derive(Default)]
struct Record {
    /// The client address (the peer, or the trusted proxies' X-Forwarded-For hop).
    client: Option<std::net::IpAddr>,
    event_type: Text,
    id: Text,
    upstream_ms: Option<u128>,
    /// The route's label (the first route, with fan-out).
    route: Option<Text>,
    /// The delivery log already has this request (queue routes record it before enqueueing).
    logged: bool,
    /// The request's headers and body, with `[log] bodies` set.
    capture: Option<Arc<Capture>>,
    /// Sent again by `POST /deliveries/{entry}/replay`.
    replay: bool,
    /// With `[otel]`: the delivery's span and its stages so far.
    trace: Option<Box<crate::telemetry::otel::Trace>>,
}

impl Record {
    /// Ends a traced stage (no-op without `[otel]`).
    fn stage(&mut self, name: &'static str, kind: SpanKind, error: Option<String>) {
        if let Some(t) = &mut self.trace {
            t.stage(name, kind, error);
        }
    }

    /// With `[otel]`: the coming stage's `traceparent` into `headers`.
    fn propagate(&self, headers: &mut http::HeaderMap) {
        if let Some(t) = &self.trace {
            headers.insert(TRACEPARENT.clone(), t.upstream().header());
        }
    }
}

/// The W3C trace context header.
static TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");

impl Record {
    fn item(&self, source: &SourceState, outcome: &'static str, status: u16) -> Item {
        Record {
            id: self.id.clone(),
            event_type: self.event_type.clone(),
            route: self.route.clone(),
            client: self.client,
            upstream_ms: self.upstream_ms,
            logged: self.logged,
            capture: self.capture.clone(),
            replay: self.replay,
            trace: None,
        }
        .into_item(source, outcome, status)
    }

    fn into_item(self, source: &SourceState, outcome: &'static str, status: u16) -> Item {
        Item {
            at: std::time::SystemTime::now(),
            source: Text::new(&source.name),
            id: self.id,
            event_type: self.event_type,
            outcome,
            status,
            route: self.route,
            upstream_ms: self.upstream_ms.map(|m| m as u64),
            client: self.client,
            attempts: None,
            queue_state: None,
            last_status: None,
            last_error: None,
            next_attempt_at: None,
            capture: self.capture,
            replay: self.replay,
        }
    }
}

/// What a stored delivery is made of (a verified request's, or a replay's).
struct Payload<'a> {
    id: &'a str,
    event_type: &'a str,
    query: Option<&'a str>,
    body: &'a Bytes,
}

impl<'a> Payload<'a> {
    fn of(d: &'a Delivery<Verified>) -> Self {
        Payload { id: d.id(), event_type: d.event_type(), query: d.head.uri.query(), body: &d.body }
    }
}

/// Handles one request on the webhook listener (`https`: it came over TLS).
pub async fn handle(app: Arc<App>, req: Request<Incoming>, peer: SocketAddr, https: bool) -> Response<ResBody> {
    let app = &app;
    let started = Instant::now();
    let loaded = app.current();
    let Some(index) = loaded.config.sources.iter().position(|s| s.path == req.uri().path()) else {
        app.metrics.not_found.inc();
        tracing::debug!(path = req.uri().path(), "no source for path");
        return Rejection::UnknownPath.into_response();
    };
    let source = &loaded.config.sources[index];
    let state = &loaded.sources[index];
    let mut record = Record::default();
    if let Some(otel) = &app.otel {
        record.trace = Some(Box::new(otel.begin(req.headers())));
    }
    let (response, outcome) =
        // Boxed: the stage futures add up to ~1.7 KB, which hyper would
        // otherwise move around by value (memmove showed in the profile).
        match Box::pin(process(app, &loaded, index, req, peer, https, started, &mut record)).await {
            Ok(pair) => pair,
            Err(rejection) => {
                let code = rejection.code();
                match &rejection {
                    // The program's message (it may quote the body) goes to the log only.
                    Rejection::Upstream(e @ forward::ForwardError::Transform(_)) => {
                        let route = record.route.as_deref().unwrap_or_default();
                        tracing::warn!(source = %source.name, route, error = %e, "transform failed");
                    }
                    Rejection::Upstream(e) if !source.fan_out => {
                        let advice = crate::tls::upstream_advice(&e.to_string());
                        tracing::warn!(source = %source.name, error = %e, advice, "upstream failed");
                    }
                    Rejection::Verify(
                        VerifyError::MissingSignature | VerifyError::MalformedSignature | VerifyError::InvalidSignature,
                    ) => app.alerts.signature_failure(&source.name),
                    _ => {}
                }
                (rejection.into_response(), code)
            }
        };
    if let Some(i) = crate::metrics::outcome_index(outcome) {
        state.metrics.outcome_at(i);
        state.stats.outcome(i, std::time::SystemTime::now());
    }
    tracing::info!(
        source = %source.name,
        client = %record.client.unwrap_or(peer.ip()),
        event_type = %record.event_type,
        delivery_id = %record.id,
        outcome,
        status = response.status().as_u16(),
        upstream_ms = record.upstream_ms.map(|m| m as u64),
        "delivery"
    );
    if let (Some(otel), Some(trace)) = (&app.otel, record.trace.take()) {
        end_trace(otel, *trace, &source.name, &record, outcome, response.status());
    }
    if !record.logged {
        // Last, so the record's strings move into the log instead of being copied.
        app.deliveries.push(record.into_item(state, outcome, response.status().as_u16()));
    }
    response
}

/// Ends a delivery's trace: its `delivery` span with what the log line says.
fn end_trace(
    otel: &crate::telemetry::otel::Otel,
    trace: crate::telemetry::otel::Trace,
    source: &str,
    record: &Record,
    outcome: &'static str,
    status: StatusCode,
) {
    let mut attributes = vec![
        ("hookgate.source", source.to_owned()),
        ("hookgate.outcome", outcome.to_owned()),
        ("http.response.status_code", status.as_u16().to_string()),
    ];
    if !record.id.is_empty() {
        attributes.push(("hookgate.delivery_id", record.id.to_string()));
    }
    if !record.event_type.is_empty() {
        attributes.push(("hookgate.event_type", record.event_type.to_string()));
    }
    if let Some(r) = &record.route {
        attributes.push(("hookgate.route", r.to_string()));
    }
    let error = (status.is_server_error() || status.is_client_error()).then(|| outcome.to_owned());
    otel.finish(trace, attributes, error);
}

/// The request as `[log] bodies` keeps it (credentials redacted).
fn capture(delivery: &Delivery<Verified>, verifier: &crate::verify::Verifier) -> Capture {
    let signature_headers = verifier.spec.signature.iter().filter_map(|l| match l {
        crate::verify::Locator::Header(name) => Some(name),
        _ => None,
    });
    Capture::of(&delivery.head.headers, delivery.head.uri.query(), &delivery.body, signature_headers)
}

/// Reads the body within the size limit and the request deadline.
async fn read_body(body: Incoming, limit: usize, deadline: Instant) -> Result<Bytes, Rejection> {
    let remaining = deadline.saturating_duration_since(Instant::now());
    match tokio::time::timeout(remaining, crate::body::to_bytes(Limited::new(body, limit))).await {
        Err(_) => Err(Rejection::RequestTimeout),
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(Rejection::PayloadTooLarge),
        Ok(Err(_)) => Err(Rejection::BadBody),
    }
}

#[allow(clippy::too_many_arguments)]
async fn process(
    app: &Arc<App>,
    loaded: &Arc<Loaded>,
    index: usize,
    req: Request<Incoming>,
    peer: SocketAddr,
    https: bool,
    started: Instant,
    record: &mut Record,
) -> Result<(Response<ResBody>, &'static str), Rejection> {
    let server = &loaded.config.server;
    let (source, state) = (&loaded.config.sources[index], &loaded.sources[index]);

    // method: POST, GET for a provider's GET handshake, HEAD for a URL probe
    // (both answered after the guards)
    let handshake = (req.method() == Method::GET && source.verifier.spec.challenge.answers_get())
        || (req.method() == Method::POST && challenge::is_validation(req.uri(), &source.verifier));
    let probe = req.method() == Method::HEAD;
    if req.method() != Method::POST && !handshake && !probe {
        return Err(Rejection::MethodNotAllowed);
    }

    // client: allowlist, against the peer or the trusted proxies' X-Forwarded-For hop
    let client_ip = guard::client_ip(peer.ip(), req.headers(), &server.trusted_proxies);
    record.client = Some(client_ip);
    if !guard::ip_allowed(client_ip, &source.allow_ips) {
        return Err(Rejection::Forbidden);
    }

    // rate, before the body is read
    if let Some(limiter) = &state.limiter {
        let checked = match &state.cluster_limiter {
            // Boxed, like every rare or large await on this path: whatever is
            // awaited inline makes every request's future that much larger,
            // and futures are copied whole when moved (tests below).
            Some(shared) => Box::pin(shared.check(limiter)).await,
            None => guard::check_rate(limiter),
        };
        checked.map_err(|retry_after| Rejection::RateLimited { retry_after })?;
    }

    // HEAD: senders' portals (Tyk's) test a webhook URL with HEAD and none of
    // the configured headers; 200, no body, nothing forwarded (SPEC §13)
    if probe {
        return Ok((challenge::into_response(challenge::Answer::Empty), "challenge"));
    }

    // GET handshake (Meta's hub.challenge, Dropbox's challenge), Microsoft
    // Graph's validation POST: no body to verify, no signature
    if handshake {
        let answer = challenge::answer_get(req.uri(), &source.verifier)?;
        return Ok((challenge::into_response(answer), "challenge"));
    }

    // size: refuse a declared oversize body at once, then read at most the limit
    let declared = req.headers().get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > server.max_body_bytes as u64) {
        return Err(Rejection::PayloadTooLarge);
    }
    let (head, body) = req.into_parts();
    let body = read_body(body, server.max_body_bytes, started + server.request_timeout).await?;

    // parse + verify + fresh
    let mut delivery = Delivery::new(head, body).verify(&source.verifier, (app.clock)())?;
    state.metrics.secret(delivery.secret_index());
    // Kept for the log line and the delivery log only, so not copied when both are off.
    if tracing::enabled!(tracing::Level::INFO) || app.deliveries.enabled() {
        record.event_type = Text::new(delivery.event_type());
        record.id = Text::new(delivery.id());
    }
    if app.deliveries.capturing() {
        record.capture = Some(Arc::new(capture(&delivery, &source.verifier)));
    }
    record.stage("verify", SpanKind::Internal, None);

    // challenge
    if let Some(res) = challenge::answer(&mut delivery, &source.verifier) {
        return Ok((res, "challenge"));
    }

    let peer_info = Peer { addr: peer.ip(), trusted: guard::peer_trusted(peer.ip(), &server.trusted_proxies), https };

    // fan-out: dedupe, route and deliver per route
    if source.fan_out {
        return Box::pin(fan_out::deliver(app, loaded, index, delivery, peer_info, record)).await;
    }

    // dedupe
    let dedupe = &loaded.config.dedupe;
    // With an unsigned ID, the body's digest too (SPEC §10): a captured body
    // under a fresh ID is a duplicate.
    let digest = source.dedupe_body.then(|| crate::verify::body_hash(&delivery.body));
    let digest = digest.as_deref().filter(|d| *d != delivery.id());
    let claimed = loaded.store.claim(&source.name, delivery.id(), digest, dedupe).await;
    record.stage("dedupe", SpanKind::Internal, None);
    let claim = match seen(app, claimed, dedupe.on_store_error) {
        Seen::Go(claim) => claim,
        Seen::Delivered => {
            state.metrics.dedupe_hits.inc();
            return Ok(duplicate());
        }
        Seen::InFlight => return Err(Rejection::InFlight { retry_after: IN_FLIGHT_RETRY }),
        Seen::StoreDown => return Err(Rejection::StoreUnavailable { retry_after: STORE_RETRY }),
    };

    // route: the first whose events and filter match
    let routed = route::select(&source.routes, delivery.event_type(), &delivery.head.headers, &delivery.body);
    let Some((route_index, route)) = routed else {
        finish_claim(app, claim, false, dedupe.on_store_error).await;
        return unrouted(source.unrouted);
    };
    record.route = Some(Text::new(&route.label));

    record.propagate(&mut delivery.head.headers);
    // queue: store durably, then acknowledge (the worker forwards later)
    if let Some(q) = route.queue() {
        let policy = dedupe.on_store_error;
        return Box::pin(enqueue(app, source, state, route_index, q, &mut delivery, claim, peer_info, policy, record))
            .await;
    }

    // forward, then commit on 2xx or release. A sender that hangs up
    // mid-forward drops this future; the forward then goes on in a task of its
    // own (bounded by the route's timeout) so the request to the app is not
    // cut and the claim still says what happened: the sender's retry is a
    // duplicate if the app took it.
    // In a block: a `settle` binding in this scope would stay in this
    // function's future across the await below (2.9 KB more per request).
    let finish = {
        let settle = settle(app.clone(), loaded.clone(), index, route_index, delivery, claim, peer_info);
        FinishOnDrop(Some(Box::pin(settle)))
    };
    let (result, elapsed) = finish.await;
    record.upstream_ms = Some(elapsed.as_millis());
    if record.trace.is_some() {
        let error = match &result {
            Ok(res) if res.status().is_success() => None,
            Ok(res) => Some(format!("upstream answered {}", res.status())),
            Err(e) => Some(e.to_string()),
        };
        record.stage("forward", SpanKind::Client, error);
    }
    result.map(|res| (res, "forwarded")).map_err(Rejection::from)
}

/// What a dedupe claim's answer means for the delivery, with the store's
/// health and counters updated (one place for the first-match path and fan-out).
enum Seen {
    /// Go on: claimed (`None` when the store failed and `on_store_error = "allow"`).
    Go(Option<Claim>),
    Delivered,
    InFlight,
    /// The store failed and `on_store_error = "reject"`.
    StoreDown,
}

fn seen(app: &App, result: Result<ClaimOutcome, crate::dedupe::StoreError>, policy: OnStoreError) -> Seen {
    let outcome = match result {
        Ok(o) => o,
        Err(e) => {
            app.metrics.store_errors.inc();
            app.store_health.failed(&e, policy);
            return match policy {
                OnStoreError::Reject => Seen::StoreDown,
                OnStoreError::Allow => {
                    app.metrics.undeduped.inc();
                    Seen::Go(None)
                }
            };
        }
    };
    app.store_health.ok();
    match outcome {
        ClaimOutcome::Claimed(c) => Seen::Go(Some(c)),
        ClaimOutcome::Delivered => Seen::Delivered,
        ClaimOutcome::InFlight => Seen::InFlight,
    }
}

/// The answer when no route takes a delivery.
fn unrouted(unrouted: Unrouted) -> Result<(Response<ResBody>, &'static str), Rejection> {
    match unrouted {
        Unrouted::Ack => Ok((json_response(StatusCode::ACCEPTED, &json!({ "ok": true, "routed": false })), "unrouted")),
        Unrouted::Reject => Err(Rejection::Unrouted),
    }
}

/// The answer to a delivery every route already had.
fn duplicate() -> (Response<ResBody>, &'static str) {
    let mut res = json_response(StatusCode::OK, &json!({ "ok": true, "duplicate": true }));
    res.headers_mut().insert(X_DUPLICATE, HeaderValue::from_static("true"));
    (res, "duplicate")
}

/// A queue route's acknowledgement. A struct, not `json!`: no map built per delivery.
fn queued(status: StatusCode, id: &str) -> (Response<ResBody>, &'static str) {
    #[derive(serde::Serialize)]
    struct Queued<'a> {
        ok: bool,
        queued: bool,
        id: &'a str,
    }
    (json_response(status, &Queued { ok: true, queued: true, id }), "queued")
}

/// Polls its future in place (no task per request); if dropped before the
/// future finished, hands the rest of it to a task of its own.
struct FinishOnDrop<F: Future + Send + 'static>(Option<std::pin::Pin<Box<F>>>)
where
    F::Output: Send;

impl<F: Future + Send + 'static> Future for FinishOnDrop<F>
where
    F::Output: Send,
{
    type Output = F::Output;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<F::Output> {
        let Some(fut) = self.0.as_mut() else { return std::task::Poll::Pending };
        let out = std::task::ready!(fut.as_mut().poll(cx));
        self.0 = None;
        std::task::Poll::Ready(out)
    }
}

impl<F: Future + Send + 'static> Drop for FinishOnDrop<F>
where
    F::Output: Send,
{
    fn drop(&mut self) {
        // No runtime (the process is ending): the claim guard inside releases the claim.
        if let (Some(rest), Ok(rt)) = (self.0.take(), tokio::runtime::Handle::try_current()) {
            rt.spawn(rest);
        }
    }
}

/// Forwards `delivery` to its route, then commits the claim on 2xx or releases it.
async fn settle(
    app: Arc<App>,
    loaded: Arc<Loaded>,
    index: usize,
    route_index: usize,
    mut delivery: Delivery<Verified>,
    claim: Option<Claim>,
    peer: Peer,
) -> (Result<Response<ResBody>, forward::ForwardError>, Duration) {
    let (state, route) = (&loaded.sources[index], &loaded.config.sources[index].routes[route_index]);
    let sent = Instant::now();
    let result = forward::forward(&mut delivery, route, peer, &state.name_header).await;
    let elapsed = sent.elapsed();
    state.metrics.upstream(route_index, elapsed.as_secs_f64());
    state.stats.latency(elapsed, std::time::SystemTime::now());
    let delivered = matches!(&result, Ok(res) if res.status().is_success());
    report(&app, &state.name, route, &result);
    finish_claim(&app, claim, delivered, loaded.config.dedupe.on_store_error).await;
    (result, elapsed)
}

/// Tells alerts (SPEC §17) how a sync forward to `route` went: a timeout,
/// connection error or 5xx is a failure, a 2xx a delivery, a 4xx neither.
fn report(app: &App, source: &str, route: &route::Route, result: &Result<Response<ResBody>, forward::ForwardError>) {
    let alerts = &app.alerts;
    if !alerts.enabled() {
        return;
    }
    match result {
        Ok(res) if res.status().is_success() => alerts.route_ok(source, &route.label),
        Ok(res) if res.status().is_server_error() => {
            alerts.route_failed(source, &route.label, &format!("upstream answered {}", res.status()))
        }
        Ok(_) => {}
        // Its message may quote the body.
        Err(forward::ForwardError::Transform(_)) => alerts.route_failed(source, &route.label, "transform failed"),
        Err(e) => alerts.route_failed(source, &route.label, &e.to_string()),
    }
}

/// A queue route's last stage: the delivery is stored with the headers a sync
/// route would forward, the claim committed and the sender acknowledged; or,
/// when the store cannot be written, the claim released and 503 answered.
#[allow(clippy::too_many_arguments)]
async fn enqueue(
    app: &App,
    source: &Source,
    state: &SourceState,
    route_index: usize,
    q: &QueueRoute,
    delivery: &mut Delivery<Verified>,
    claim: Option<Claim>,
    peer: Peer,
    policy: OnStoreError,
    record: &mut Record,
) -> Result<(Response<ResBody>, &'static str), Rejection> {
    let ours = forward::Ours::of(delivery, None);
    let headers = forward::upstream_headers(
        std::mem::take(&mut delivery.head.headers),
        &delivery.head.uri,
        peer,
        &state.name_header,
        ours,
    );
    let stored = store(app, source, state, route_index, q, &Payload::of(delivery), headers, record).await;
    record.stage("enqueue", SpanKind::Internal, stored.as_ref().err().map(|e| e.code().to_owned()));
    // `store` logged it (with the record its attempts update) if there is a queue.
    record.logged = app.queue.is_some();
    finish_claim(app, claim, stored.is_ok(), policy).await;
    stored?;
    Ok(queued(q.ack_status, delivery.id()))
}

/// Stores `delivery` for queue route `route_index` with `headers` (final but
/// for what the route adds at each attempt), with a delivery-log record of its
/// own that the attempts update.
#[allow(clippy::too_many_arguments)]
async fn store(
    app: &App,
    source: &Source,
    state: &SourceState,
    route_index: usize,
    q: &QueueRoute,
    delivery: &Payload<'_>,
    headers: http::HeaderMap,
    record: &Record,
) -> Result<(), Rejection> {
    let unavailable = Rejection::QueueUnavailable { retry_after: QUEUE_RETRY };
    let Some(queue) = &app.queue else {
        // [queue] was added by a reload; it takes a restart.
        return Err(unavailable);
    };
    let route = &source.routes[route_index];
    let log_seq = app.deliveries.push(Item {
        attempts: Some(0),
        queue_state: Some("pending"),
        route: Some(Text::new(&route.label)),
        ..record.item(state, "queued", q.ack_status.as_u16())
    });
    let meta = Meta {
        source: source.name.clone(),
        route: route_index,
        id: delivery.id.to_owned(),
        event_type: delivery.event_type.to_owned(),
        query: delivery.query.map(str::to_owned),
        received_ms: unix_ms(std::time::SystemTime::now()),
        log: log_seq.map(|s| (app.deliveries.epoch, s)),
        replay: record.replay,
        order_key: q.order_by.as_ref().and_then(|o| o.key(&headers, delivery.body)),
    };
    let entry = NewEntry { meta, headers, body: delivery.body.clone() };
    match queue.enqueue(RouteKey::new(&source.name, &route.identity), entry).await {
        Ok(_) => Ok(()),
        Err(e) => {
            tracing::warn!(source = %source.name, route = %route.label, error = %e, "cannot store a queued delivery");
            if let Some(seq) = log_seq {
                app.deliveries.update(seq, |i| {
                    i.outcome = unavailable.code();
                    i.status = unavailable.status().as_u16();
                    i.attempts = None;
                    i.queue_state = None;
                });
            }
            Err(unavailable)
        }
    }
}

/// Marks the claim delivered (`delivered`) or releases it; a store failure is
/// counted and reported once per burst, never turned into the sender's answer.
async fn finish_claim(app: &App, claim: Option<Claim>, delivered: bool, policy: OnStoreError) {
    let Some(c) = claim else { return };
    let finished = if delivered { c.commit().await } else { c.release().await };
    if let Err(e) = finished {
        app.metrics.store_errors.inc();
        app.store_health.failed(&e, policy);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The size of the future an async fn returns, read off its type (no call).
    fn size4<A, B, C, D, F: Future>(_: fn(A, B, C, D) -> F) -> usize {
        std::mem::size_of::<F>()
    }
    fn size7<A, B, C, D, E, G, H, F: Future>(_: fn(A, B, C, D, E, G, H) -> F) -> usize {
        std::mem::size_of::<F>()
    }
    fn size8<A, B, C, D, E, G, H, I, F: Future>(_: fn(A, B, C, D, E, G, H, I) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Every request's futures are moved by value (into hyper's dispatcher,
    /// into their boxes), so their size is copied per request. Rare, large
    /// futures (a Redis command, a TLS connect, the cluster rate limit, an
    /// enqueue) are boxed where they are awaited to keep these small; before
    /// that they were 1088 + 1088 (the service wrapper), 6256 and 5168 bytes,
    /// and memmove was 5.4% of the sync path's CPU (perf) against 4.2% after.
    #[test]
    fn the_request_futures_stay_small() {
        let handle = size4(handle);
        let process = size8(process);
        let settle = size7(settle);
        let send = size4(forward::send);
        assert!(send <= 2048, "forward::send's future is {send} bytes");
        assert!(handle <= 1024, "handle's future is {handle} bytes");
        assert!(process <= 2048, "process's future is {process} bytes");
        assert!(settle <= 3584, "settle's future is {settle} bytes");
    }
}
