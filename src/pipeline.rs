//! One request, stage by stage, in the order of SPEC §3 (see the chart in
//! `lib.rs`). Each stage is a call into the module named after it; this file
//! only sequences them, records the outcome and writes one log line.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Limited;
use hyper::body::Incoming;
use serde_json::json;

use crate::app::{App, Loaded, SourceState};
use crate::config::{OnStoreError, Source, Unrouted};
use crate::dedupe::ClaimOutcome;
use crate::error::{Rejection, json_response};
use crate::forward::{self, Peer, X_DUPLICATE};
use crate::verify::Delivery;
use crate::{ResBody, challenge, guard, route};

/// How long a sender should wait before retrying an in-flight delivery.
const IN_FLIGHT_RETRY: Duration = Duration::from_secs(1);
/// How long a sender should wait when the dedupe store is down.
const STORE_RETRY: Duration = Duration::from_secs(5);

/// What the log line and metrics say about one delivery.
#[derive(Default)]
struct Record {
    /// The client address (the peer, or the trusted proxies' X-Forwarded-For hop).
    client: Option<std::net::IpAddr>,
    event_type: String,
    id: String,
    upstream_ms: Option<u128>,
}

/// Handles one request on the webhook listener.
pub async fn handle(app: &App, req: Request<Incoming>, peer: SocketAddr) -> Response<ResBody> {
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
    let (response, outcome) =
        // Boxed: the stage futures add up to ~3 KB, which hyper would otherwise
        // move around by value (memmove showed in the profile).
        match Box::pin(process(app, &loaded, source, state, req, peer, started, &mut record)).await {
            Ok(pair) => pair,
            Err(rejection) => {
                let code = rejection.code();
                if let Rejection::Upstream(e) = &rejection {
                    tracing::warn!(source = %source.name, error = %e, "upstream failed");
                }
                (rejection.into_response(), code)
            }
        };
    state.metrics.outcome(outcome);
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
    response
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
    app: &App,
    loaded: &Loaded,
    source: &Source,
    state: &SourceState,
    req: Request<Incoming>,
    peer: SocketAddr,
    started: Instant,
    record: &mut Record,
) -> Result<(Response<ResBody>, &'static str), Rejection> {
    let server = &loaded.config.server;

    // method
    if req.method() != Method::POST {
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
        guard::check_rate(limiter).map_err(|retry_after| Rejection::RateLimited { retry_after })?;
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
    // Kept for the log line only, so not copied when that line is off.
    if tracing::enabled!(tracing::Level::INFO) {
        record.event_type.push_str(delivery.event_type());
        record.id.push_str(delivery.id());
    }

    // challenge
    if let Some(res) = challenge::answer(&mut delivery, &source.verifier) {
        return Ok((res, "challenge"));
    }

    // dedupe
    let dedupe = &loaded.config.dedupe;
    let claim = match loaded.store.claim(&source.name, delivery.id(), dedupe).await {
        Ok(ClaimOutcome::Claimed(claim)) => {
            app.store_health.ok();
            Some(claim)
        }
        Ok(ClaimOutcome::Delivered) => {
            app.store_health.ok();
            state.metrics.dedupe_hits.inc();
            let mut res = json_response(StatusCode::OK, &json!({ "ok": true, "duplicate": true }));
            res.headers_mut().insert(X_DUPLICATE, HeaderValue::from_static("true"));
            return Ok((res, "duplicate"));
        }
        Ok(ClaimOutcome::InFlight) => {
            app.store_health.ok();
            return Err(Rejection::InFlight { retry_after: IN_FLIGHT_RETRY });
        }
        Err(e) => {
            app.metrics.store_errors.inc();
            app.store_health.failed(&e, dedupe.on_store_error);
            match dedupe.on_store_error {
                OnStoreError::Reject => return Err(Rejection::StoreUnavailable { retry_after: STORE_RETRY }),
                OnStoreError::Allow => {
                    app.metrics.undeduped.inc();
                    None
                }
            }
        }
    };

    // route
    let Some((route_index, route)) = route::select(&source.routes, delivery.event_type()) else {
        if let Some(c) = claim {
            let _ = c.release().await;
        }
        return match source.unrouted {
            Unrouted::Ack => {
                Ok((json_response(StatusCode::ACCEPTED, &json!({ "ok": true, "routed": false })), "unrouted"))
            }
            Unrouted::Reject => Err(Rejection::Unrouted),
        };
    };

    // forward, then commit on 2xx or release
    let peer_info = Peer { addr: peer.ip(), trusted: guard::peer_trusted(peer.ip(), &server.trusted_proxies) };
    let sent = Instant::now();
    let result = forward::forward(&mut delivery, route, peer_info, &state.name_header).await;
    let elapsed = sent.elapsed();
    state.metrics.upstream(route_index, elapsed.as_secs_f64());
    record.upstream_ms = Some(elapsed.as_millis());
    match result {
        Ok(res) => {
            if let Some(c) = claim {
                let finished = if res.status().is_success() { c.commit().await } else { c.release().await };
                if let Err(e) = finished {
                    app.metrics.store_errors.inc();
                    app.store_health.failed(&e, dedupe.on_store_error);
                }
            }
            Ok((res, "forwarded"))
        }
        Err(e) => {
            if let Some(c) = claim {
                let _ = c.release().await;
            }
            Err(e.into())
        }
    }
}
