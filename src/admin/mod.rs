//! The admin listener (SPEC §3, §5, §6, §8).
//!
//! | path | what |
//! |---|---|
//! | `GET /healthz`, `GET /readyz` | always open |
//! | `GET /metrics` | Prometheus text; open unless `admin_token` is set |
//! | `GET /deliveries` | the delivery log ([`deliveries`]) |
//! | `GET /queue`, `/queue/dead…`, `/queue/orphans…` | queue depth, dead letters, orphans ([`queue`]) |
//! | `GET /ui` | the dashboard page ([`ui`]) |
//!
//! Access: with `server.admin_token`, everything but `/healthz` and `/readyz`
//! needs `Authorization: Bearer <token>` (constant-time compare; 401 otherwise).
//! Without it, the endpoints of sections 5 and 6 answer loopback clients only
//! (403 `admin_token_required` to others) that name a loopback host or
//! `localhost` in `Host` (403 `bad_host`: DNS rebinding). Token or not, a POST
//! or DELETE from a page of another origin (`Origin`, `Sec-Fetch-Site`) gets
//! 403 `cross_origin` (SPEC §11).

mod deliveries;
mod queue;
mod ui;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use serde_json::json;

use crate::ResBody;
use crate::app::App;
use crate::config::Secret;
use crate::error::json_response;

/// How long `/readyz` waits for the store.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn handle(app: &std::sync::Arc<App>, req: Request<Incoming>, peer: SocketAddr) -> Response<ResBody> {
    let path = req.uri().path();
    let read = req.method() == Method::GET || req.method() == Method::HEAD;
    match path {
        "/healthz" if read => return json_response(StatusCode::OK, &json!({ "status": "ok" })),
        "/readyz" if read => return ready(app).await,
        _ => {}
    }
    let token = app.current().config.server.admin_token.clone();
    if let Some(refused) = access(path, read, token.as_ref(), &req, peer.ip()) {
        return refused;
    }
    let method = req.method().clone();
    let query = req.uri().query().unwrap_or("").to_owned();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (read, &method, segments.as_slice()) {
        (true, _, ["metrics"]) => metrics(app, &req).await,
        (true, _, ["deliveries"]) => deliveries::list(app, &query),
        (true, _, ["stats"]) => stats(app, &query),
        (true, _, ["deliveries", entry]) => deliveries::one(app, entry),
        (_, &Method::POST, ["deliveries", entry, "replay"]) => deliveries::replay(app, entry).await,
        (true, _, ["ui"] | ["ui", ""]) => ui::page(StatusCode::OK),
        (true, _, ["queue"]) => queue::overview(app).await,
        (true, _, ["queue", "dead"]) => queue::dead_list(app, &query).await,
        (true, _, ["queue", "waiting"]) => queue::waiting(app, &query).await,
        (_, &Method::POST, ["queue", "dead", "retry"]) => queue::retry_all(app, &query).await,
        (_, &Method::POST, ["queue", "dead", entry, "retry"]) => queue::retry_one(app, entry).await,
        (_, &Method::DELETE, ["queue", "dead", entry]) => queue::delete(app, entry).await,
        (_, &Method::POST, ["queue", "orphans", source, route, "move"]) => {
            queue::move_orphans(app, source, route, &query).await
        }
        (_, &Method::DELETE, ["queue", "orphans", source, route]) => queue::delete_orphans(app, source, route).await,
        (_, &Method::POST, ["queue", "routes", source, route, action @ ("pause" | "resume")]) => {
            queue::pause_or_resume(app, source, route, *action == "pause").await
        }
        (
            _,
            _,
            ["metrics" | "deliveries" | "ui" | "queue" | "stats"]
            | ["queue", "dead" | "orphans" | "waiting" | "routes", ..]
            | ["deliveries", _]
            | ["deliveries", _, "replay"],
        ) => error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this method is not served here"),
        _ => error(
            StatusCode::NOT_FOUND,
            "not_found",
            "try /healthz, /readyz, /metrics, /deliveries, /queue, /queue/dead or /ui",
        ),
    }
}

/// `GET /stats?window=1h` (SPEC §17): per source, a minute at a time, the
/// requests by outcome and the upstream's p50/p99; `window` 1m to 1h (default 1h).
fn stats(app: &App, query: &str) -> Response<ResBody> {
    let window = match param(query, "window").as_deref().map(humantime::parse_duration) {
        None => Duration::from_secs(3600),
        Some(Ok(w)) if (Duration::from_secs(60)..=Duration::from_secs(3600)).contains(&w) => w,
        Some(_) => return error(StatusCode::BAD_REQUEST, "bad_request", "window is a duration from 1m to 1h"),
    };
    let loaded = app.current();
    let names: Vec<&str> = loaded.config.sources.iter().map(|s| s.name.as_str()).collect();
    json_response(StatusCode::OK, &app.stats.to_json(&names, window, std::time::SystemTime::now()))
}

/// The answer refusing this request (SPEC §8, §11), or `None` when it may go on.
fn access<B>(
    path: &str,
    read: bool,
    token: Option<&Secret>,
    req: &Request<B>,
    peer: IpAddr,
) -> Option<Response<ResBody>> {
    let headers = req.headers();
    // A page of another site must not change state here, token or not: a
    // no-cors POST from it carries its Origin, or at least Sec-Fetch-Site.
    if !read && !same_origin(req) {
        return Some(error(
            StatusCode::FORBIDDEN,
            "cross_origin",
            "state-changing admin requests are not accepted from pages of other origins",
        ));
    }
    match token {
        Some(t) if !bearer_matches(headers, t) => {
            if read && (path == "/ui" || path == "/ui/") {
                // The page itself asks for the token, then sends it with every call.
                return Some(ui::page(StatusCode::UNAUTHORIZED));
            }
            let mut res =
                error(StatusCode::UNAUTHORIZED, "unauthorized", "send Authorization: Bearer <server.admin_token>");
            res.headers_mut().insert(http::header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            Some(res)
        }
        None if path != "/metrics" && !is_loopback(peer) => Some(error(
            StatusCode::FORBIDDEN,
            "admin_token_required",
            "set server.admin_token to use this endpoint from another host",
        )),
        // DNS rebinding: a page whose host name now resolves to 127.0.0.1 is
        // still another site; its requests name it in Host.
        None if path != "/metrics" && !host_is_loopback(req) => Some(error(
            StatusCode::FORBIDDEN,
            "bad_host",
            "without server.admin_token, use a loopback address or localhost in the URL",
        )),
        _ => None,
    }
}

/// The host the request names: HTTP/2's authority, else the `Host` header.
fn request_host<B>(req: &Request<B>) -> Option<&str> {
    match req.uri().authority() {
        Some(a) => Some(a.as_str()),
        None => req.headers().get(http::header::HOST)?.to_str().ok(),
    }
}

/// `Host` names `localhost` (or a name under it) or a loopback address, any
/// port. No Host at all (HTTP/1.0 tools) is not a browser's request: allowed.
fn host_is_loopback<B>(req: &Request<B>) -> bool {
    let Some(host) = request_host(req) else {
        return req.headers().get(http::header::HOST).is_none();
    };
    let Ok(authority) = host.parse::<http::uri::Authority>() else { return false };
    let name = authority.host().trim_start_matches('[').trim_end_matches(']');
    let lower = name.to_ascii_lowercase();
    lower == "localhost" || lower.ends_with(".localhost") || name.parse::<IpAddr>().is_ok_and(is_loopback)
}

/// Whether a request comes from the admin listener's own pages (or from no
/// page at all, as curl's): an `Origin` must name the request's own host, and
/// `Sec-Fetch-Site` must not say `cross-site` or `same-site`.
fn same_origin<B>(req: &Request<B>) -> bool {
    let headers = req.headers();
    if let Some(site) = headers.get("sec-fetch-site")
        && (site == "cross-site" || site == "same-site")
    {
        return false;
    }
    let Some(origin) = headers.get(http::header::ORIGIN) else { return true };
    let Ok(origin) = origin.to_str() else { return false };
    let own = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://"));
    match (own, request_host(req)) {
        (Some(o), Some(host)) => o.eq_ignore_ascii_case(host),
        _ => false,
    }
}

async fn ready(app: &App) -> Response<ResBody> {
    let store = app.current().store.clone();
    if let Some(q) = &app.queue
        && !tokio::time::timeout(READY_TIMEOUT, q.store.ready()).await.unwrap_or(false)
    {
        return not_ready("queue store cannot be written");
    }
    match tokio::time::timeout(READY_TIMEOUT, store.ping()).await {
        Ok(Ok(())) => json_response(StatusCode::OK, &json!({ "status": "ready" })),
        Ok(Err(e)) => not_ready(&e.to_string()),
        Err(_) => not_ready("dedupe store did not answer in time"),
    }
}

async fn metrics(app: &App, req: &Request<Incoming>) -> Response<ResBody> {
    queue::refresh_gauges(app).await;
    let openmetrics = req
        .headers()
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    let (body, content_type) = if openmetrics {
        (app.metrics.encode_openmetrics(), "application/openmetrics-text; version=1.0.0; charset=utf-8")
    } else {
        (app.metrics.encode(), "text/plain; version=0.0.4; charset=utf-8")
    };
    let mut res = Response::new(Either::Left(Full::new(Bytes::from(body))));
    res.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    res
}

fn bearer_matches(headers: &http::HeaderMap, token: &Secret) -> bool {
    let Some(v) = headers.get(http::header::AUTHORIZATION) else { return false };
    let v = v.as_bytes();
    let scheme = b"bearer ";
    v.len() > scheme.len() && v[..scheme.len()].eq_ignore_ascii_case(scheme) && token.matches(&v[scheme.len()..])
}

fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

fn not_ready(why: &str) -> Response<ResBody> {
    json_response(StatusCode::SERVICE_UNAVAILABLE, &json!({ "error": "not_ready", "message": why }))
}

fn error(status: StatusCode, code: &str, message: &str) -> Response<ResBody> {
    json_response(status, &json!({ "error": code, "message": message }))
}

/// The value of query parameter `name`, percent-decoded.
fn param(query: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

/// `limit` (default 50, at most 500) and `cursor` (a previous page's `next`,
/// opaque); a bad limit is answered 400.
fn paging(query: &str) -> Result<(usize, Option<String>), Box<Response<ResBody>>> {
    const MAX: usize = 500;
    let bad = |m: &str| Box::new(error(StatusCode::BAD_REQUEST, "bad_request", m));
    let limit = match param(query, "limit") {
        None => 50,
        Some(t) => match t.parse::<usize>() {
            Ok(n) if (1..=MAX).contains(&n) => n,
            _ => return Err(bad("limit must be between 1 and 500")),
        },
    };
    Ok((limit, param(query, "cursor").filter(|c| !c.is_empty())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_token_rules() {
        let t = Secret::new("s3cret");
        let h = |v: &str| {
            let mut m = http::HeaderMap::new();
            m.insert(http::header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
            m
        };
        assert!(bearer_matches(&h("Bearer s3cret"), &t));
        assert!(bearer_matches(&h("bearer s3cret"), &t));
        assert!(!bearer_matches(&h("Bearer s3cre"), &t));
        assert!(!bearer_matches(&h("Bearer s3crett"), &t));
        assert!(!bearer_matches(&h("Basic s3cret"), &t));
        assert!(!bearer_matches(&h("Bearer "), &t));
        assert!(!bearer_matches(&http::HeaderMap::new(), &t));
    }

    #[test]
    fn without_a_token_only_loopback_clients_reach_the_api() {
        let req = |auth: Option<&'static str>| {
            let mut r = Request::builder().uri("/x").header(http::header::HOST, "127.0.0.1:9090");
            if let Some(a) = auth {
                r = r.header(http::header::AUTHORIZATION, a);
            }
            r.body(()).unwrap()
        };
        let none = req(None);
        let far: IpAddr = "192.0.2.1".parse().unwrap();
        let near: IpAddr = "127.0.0.1".parse().unwrap();
        for path in ["/deliveries", "/queue", "/queue/dead", "/ui"] {
            let refused = access(path, true, None, &none, far).unwrap();
            assert_eq!(refused.status(), StatusCode::FORBIDDEN, "{path}");
            assert!(access(path, true, None, &none, near).is_none(), "{path}");
        }
        assert!(access("/metrics", true, None, &none, far).is_none(), "metrics stay open as in section 3");
        let t = Secret::new("tok");
        let refused = access("/metrics", true, Some(&t), &none, near).unwrap();
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED, "a token closes /metrics too, loopback or not");
        assert!(
            access("/queue", true, Some(&t), &req(Some("Bearer tok")), far).is_none(),
            "with the token any client may"
        );
    }

    #[test]
    fn loopback_includes_mapped_v4() {
        assert!(is_loopback("127.0.0.1".parse().unwrap()));
        assert!(is_loopback("::1".parse().unwrap()));
        assert!(is_loopback("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!is_loopback("192.0.2.1".parse().unwrap()));
    }
}
