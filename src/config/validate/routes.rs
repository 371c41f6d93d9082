//! `[[sources.NAME.routes]]`: each route's keys (SPEC §2, §5, §12, §14), and
//! the checks that concern a source's routes together.

use std::time::Duration;

use super::{Errors, resigner};
use crate::config::file::{Keys as _, RetryFile, RouteFile};
use crate::resign::Resigner;
use crate::route::headers::RouteHeaders;
use crate::route::policy::{QueueRoute, RetryPolicy};
use crate::route::transform::Transform;
use crate::route::{MAX_ROUTES, Mode, Pattern, Route};

/// Upper bound of a queue route's `concurrency`.
const MAX_CONCURRENCY: u64 = 10_000;
/// Upper bound of `transform_budget`: a delivery's answer waits for it.
const MAX_TRANSFORM_BUDGET: Duration = Duration::from_secs(10);

/// A source's `routes` and `match`; `fan_out` is `match = "all"`.
pub(super) fn routes(
    errs: &mut Errors,
    path: &str,
    values: Vec<toml::Value>,
    resign: Option<&std::sync::Arc<Resigner>>,
    queue_table: bool,
    fan_out: bool,
    signature_headers: &[http::HeaderName],
) -> Vec<Route> {
    if fan_out && values.len() > MAX_ROUTES {
        errs.push(&format!("{path}.routes"), format!("match = \"all\" takes at most {MAX_ROUTES} routes"));
    }
    let mut routes: Vec<Route> = Vec::new();
    for (i, value) in values.into_iter().enumerate() {
        let rp = format!("{path}.routes[{i}]");
        let rf: RouteFile = errs.table(&rp, Some(value));
        let Some(r) = route(errs, &rp, i, rf, resign, queue_table, signature_headers) else { continue };
        // A route's queue (and, with fan-out, its dedupe) is found by its
        // identity: two routes with one would share it.
        let clash = routes.iter().position(|o| {
            o.identity == r.identity && (r.name.is_some() || o.queue().is_some() || r.queue().is_some() || fan_out)
        });
        if let Some(j) = clash {
            let what = match &r.name {
                Some(n) => format!("the name {n:?} is already used by routes[{j}]"),
                None => {
                    format!("routes[{j}] matches the same events; give one of them a `name` so their queues stay apart")
                }
            };
            errs.push(&format!("{rp}.name"), what);
        }
        routes.push(r);
    }
    routes
}

fn mode(errs: &mut Errors, path: &str, f: &mut RouteFile, queue_table: bool) -> Mode {
    let queued =
        errs.choice(&format!("{path}.delivery"), f.delivery.as_deref(), false, &[("sync", false), ("queue", true)]);
    if queued && !queue_table {
        errs.push(
            &format!("{path}.delivery"),
            "\"queue\" needs a [queue] table (an empty one takes the defaults: a disk queue in ./hookgate-data/queue)",
        );
    }
    let queue_keys = [
        ("retry", f.retry.is_some()),
        ("concurrency", f.concurrency.is_some()),
        ("ack_status", f.ack_status.is_some()),
        ("pause_after", f.pause_after.is_some()),
        ("rate", f.rate.is_some()),
        ("probe_every", f.probe_every.is_some()),
        ("order_by", f.order_by.is_some()),
    ];
    if !queued {
        for (key, set) in queue_keys {
            if set {
                errs.push(&format!("{path}.{key}"), "applies to delivery = \"queue\" routes only");
            }
        }
        return Mode::Sync;
    }
    let mut q = QueueRoute::default();
    if let Some(r) = f.retry.take() {
        let rp = format!("{path}.retry");
        errs.unknown(&rp, &r.unknown, RetryFile::KEYS);
        let d = RetryPolicy::default();
        q.retry = RetryPolicy {
            horizon: errs.duration(&format!("{rp}.for"), r.horizon.as_deref(), d.horizon),
            attempts: match r.attempts {
                Some(n @ 1..=100_000) => Some(n as u32),
                Some(_) => {
                    errs.push(
                        &format!("{rp}.attempts"),
                        "must be between 1 and 100000 (every try counts, the first included)",
                    );
                    d.attempts
                }
                None => d.attempts,
            },
            backoff: errs.duration(&format!("{rp}.backoff"), r.backoff.as_deref(), d.backoff),
            max_backoff: errs.duration(&format!("{rp}.max_backoff"), r.max_backoff.as_deref(), d.max_backoff),
        };
        if q.retry.horizon.is_zero() {
            errs.push(&format!("{rp}.for"), "must be longer than 0s (how long a delivery is retried after it arrived)");
        }
        if q.retry.backoff > q.retry.max_backoff {
            errs.push(&format!("{rp}.backoff"), "must not be longer than max_backoff");
        }
    }
    if let Some(c) = f.concurrency {
        match c {
            0..=MAX_CONCURRENCY => q.concurrency = c as u32,
            _ => errs.push(&format!("{path}.concurrency"), format!("must be between 0 (paused) and {MAX_CONCURRENCY}")),
        }
    }
    if let Some(t) = f.rate.as_deref() {
        match crate::route::policy::Rate::parse(t) {
            Ok(r) => q.rate = Some(r),
            Err(e) => errs.push(&format!("{path}.rate"), e),
        }
    }
    if let Some(t) = f.order_by.as_deref() {
        match crate::route::policy::OrderBy::parse(t) {
            Ok(o) => q.order_by = Some(o),
            Err(e) => errs.push(&format!("{path}.order_by"), e),
        }
    }
    if let Some(t) = f.pause_after.as_deref() {
        let d = errs.duration(&format!("{path}.pause_after"), Some(t), Duration::ZERO);
        if d.is_zero() {
            errs.push(
                &format!("{path}.pause_after"),
                "must be longer than 0s (how long a route fails before it pauses)",
            );
        }
        q.pause_after = Some(d);
    }
    q.probe_every = errs.duration(&format!("{path}.probe_every"), f.probe_every.as_deref(), q.probe_every);
    if q.probe_every < Duration::from_millis(10) {
        errs.push(&format!("{path}.probe_every"), "must be at least 10ms");
    }
    if f.probe_every.is_some() && f.pause_after.is_none() {
        errs.push(
            &format!("{path}.probe_every"),
            "applies with pause_after (routes paused by the API or a 410 wait for resume)",
        );
    }
    match f.ack_status {
        None => {}
        Some(200) => q.ack_status = http::StatusCode::OK,
        Some(202) => q.ack_status = http::StatusCode::ACCEPTED,
        Some(_) => errs.push(&format!("{path}.ack_status"), "must be 200 or 202"),
    }
    Mode::Queue(q)
}

fn route(
    errs: &mut Errors,
    path: &str,
    index: usize,
    mut f: RouteFile,
    source_resign: Option<&std::sync::Arc<Resigner>>,
    queue_table: bool,
    signature_headers: &[http::HeaderName],
) -> Option<Route> {
    errs.unknown(path, &f.unknown, RouteFile::KEYS);
    let mut remove = f.remove_headers.take().unwrap_or_default();
    let mode = mode(errs, path, &mut f, queue_table);
    let resign = match f.sign_upstream.as_deref() {
        Some(s) => resigner(errs, &format!("{path}.sign_upstream"), s),
        None => source_resign.cloned(),
    };
    let events = f.events.unwrap_or_default();
    if events.is_empty() {
        errs.push(&format!("{path}.events"), "list at least one event-type pattern (\"*\" matches all)");
    }
    let timeout = errs.duration(&format!("{path}.timeout"), f.timeout.as_deref(), Duration::from_secs(10));
    let key = format!("{path}.upstream");
    let Some(u) = f.upstream.as_deref() else {
        errs.push(&key, "missing");
        return None;
    };
    let ca = f.ca.as_deref().filter(|c| !c.is_empty()).map(std::path::Path::new);
    let patterns = || events.iter().map(|e| Pattern::new(e)).collect::<Vec<_>>();
    let broker = crate::broker::Broker::parse(u);
    let keep_signature = f.keep_signature.unwrap_or(false);
    if f.keep_signature.is_some() && broker.is_none() {
        errs.push(&format!("{path}.keep_signature"), "applies to event-bus upstreams (nats://, amqp://, redis://)");
    }
    let route = match broker {
        Some(Ok(mut b)) => {
            if let Some(ca) = ca {
                let roots = crate::tls::ca_pem(ca).map_err(|e| e.to_string()).and_then(|pem| {
                    let path = ca.display().to_string().into();
                    b.trust(crate::broker::Roots { path, pem: pem.into() }).map_err(str::to_owned)
                });
                if let Err(e) = roots {
                    errs.push(&format!("{path}.ca"), e);
                }
            }
            // Messages carry the sender's headers less its signatures (they
            // sign the sender's request, not the message) unless asked.
            if !keep_signature {
                remove.extend(signature_headers.iter().map(|h| h.as_str().to_owned()));
            }
            Some(Route::to_broker(patterns(), b, timeout))
        }
        Some(Err(e)) => {
            errs.push(&key, e);
            None
        }
        None => match Route::new(patterns(), u, timeout, ca) {
            Ok(r) => Some(r),
            Err(e) => {
                let at = if e.contains("ca") && ca.is_some() { format!("{path}.ca") } else { key };
                errs.push(&at, e);
                None
            }
        },
    };
    let name = f.name.map(|n| {
        if !crate::route::valid_name(&n) {
            errs.push(
                &format!("{path}.name"),
                format!("{n:?}: use 1-64 letters, digits, '_', '-' or '.', not only digits (e.g. \"orders\")"),
            );
        }
        std::sync::Arc::<str>::from(n)
    });
    let filter = f.filter.as_ref().and_then(|t| {
        crate::route::filter::Filter::compile(t)
            .map_err(|e| e.into_iter().for_each(|(k, m)| errs.push(&format!("{path}.filter.{k}"), m)))
            .ok()
    });
    let budget = errs.duration(
        &format!("{path}.transform_budget"),
        f.transform_budget.as_deref(),
        crate::route::transform::DEFAULT_BUDGET,
    );
    if f.transform_budget.is_some() && f.transform.is_none() {
        errs.push(&format!("{path}.transform_budget"), "applies to routes with a `transform`");
    }
    if budget.is_zero() || budget > MAX_TRANSFORM_BUDGET {
        errs.push(&format!("{path}.transform_budget"), "must be between 1ms and 10s");
    }
    let transform = f.transform.as_deref().and_then(|code| match Transform::compile(code, budget) {
        Ok(t) => Some(std::sync::Arc::new(t)),
        Err(e) => {
            errs.push(&format!("{path}.transform"), e);
            None
        }
    });
    let headers = RouteHeaders::compile(&f.headers.take().unwrap_or_default(), &remove)
        .map_err(|e| e.into_iter().for_each(|(k, m)| errs.push(&format!("{path}.{k}"), m)))
        .unwrap_or_default();
    let label: std::sync::Arc<str> = name.clone().unwrap_or_else(|| index.to_string().into());
    let identity = name.clone().unwrap_or_else(|| {
        let fingerprint =
            crate::route::fingerprint(&events.iter().map(|e| Pattern::new(e)).collect::<Vec<_>>(), f.filter.as_ref());
        fingerprint.into()
    });
    route.map(|r| Route {
        identity,
        name,
        mode,
        resign,
        label,
        filter: filter.unwrap_or_default(),
        transform,
        headers,
        ..r
    })
}
