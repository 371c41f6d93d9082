//! Forwarding a verified delivery to its route's upstream (over the per-thread
//! connection pool in [`crate::upstream`]), with the header rules of SPEC §3:
//!
//! - the body is passed on byte for byte (a refcounted `Bytes`, never copied);
//! - hop-by-hop headers (RFC 9110 §7.6.1) and every header the sender's
//!   `Connection` names are dropped, as are `Host` and `Content-Length` (both
//!   are set for the upstream request; a `Content-Length` that already is the
//!   body's length is kept as it is);
//! - any incoming `X-Hookgate-*` is dropped, then ours are added;
//! - `X-Forwarded-For` gets the peer appended; `X-Forwarded-Proto` and
//!   `X-Forwarded-Host` are set;
//! - the incoming query string is appended to the upstream URL.

use std::net::IpAddr;

use http::header::{CONNECTION, CONTENT_LENGTH, HOST};
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, Uri};
use http_body_util::{Either, Full};
use hyper::body::Body as _;
use smallvec::SmallVec;

use crate::ResBody;
use crate::route::Route;
use crate::upstream;
use crate::verify::{Delivery, Verified};

/// Why the upstream gave no answer. Both allow the sender to retry (the claim is released).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForwardError {
    /// Refused, reset, or closed without an answer: 502.
    #[error("upstream unreachable: {0}")]
    Unreachable(String),
    /// No answer within the route's timeout: 504.
    #[error("the upstream did not answer in time")]
    Timeout,
    /// An event-bus upstream did not confirm the message: 503 (SPEC §15).
    #[error("{0}")]
    Broker(String),
    /// The route's `transform` gave no body to send: 502 (SPEC §14).
    #[error("transform failed: {0}")]
    Transform(#[from] crate::route::transform::TransformError),
}

/// Upstream answers up to this size are buffered rather than streamed.
const BUFFER_LIMIT: u64 = 64 * 1024;

const HOP_BY_HOP: [HeaderName; 8] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    http::header::PROXY_AUTHENTICATE,
    http::header::PROXY_AUTHORIZATION,
    http::header::TE,
    http::header::TRAILER,
    http::header::TRANSFER_ENCODING,
];

fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name) || name == http::header::UPGRADE || name.as_str().starts_with("proxy-")
}

/// Removes hop-by-hop headers, including those the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    strip(headers, false);
}

/// One pass over the names, without allocating in the common cases (no
/// `Connection` header, or `Connection: keep-alive` as most apps answer).
fn strip(headers: &mut HeaderMap, ours_too: bool) {
    let mut gone: SmallVec<[HeaderName; 4]> = SmallVec::new();
    for v in headers.get_all(CONNECTION) {
        let Ok(v) = v.to_str() else { continue };
        gone.extend(
            v.split(',')
                .map(str::trim)
                // `keep-alive` is hop-by-hop, found by the pass below if present
                // (parsing it here would allocate: it is not a standard name).
                .filter(|t| !t.eq_ignore_ascii_case("keep-alive"))
                .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok()),
        );
    }
    gone.extend(
        headers.keys().filter(|n| is_hop_by_hop(n) || (ours_too && n.as_str().starts_with("x-hookgate-"))).cloned(),
    );
    for name in gone {
        headers.remove(name);
    }
}

/// What the upstream needs to know about the sender.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub addr: IpAddr,
    /// The peer is a trusted proxy: its `X-Forwarded-Proto` is kept.
    pub trusted: bool,
    /// The request came over TLS to hookgate.
    pub https: bool,
}

const XFF: HeaderName = HeaderName::from_static("x-forwarded-for");
const XFP: HeaderName = HeaderName::from_static("x-forwarded-proto");
const XFH: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const X_SOURCE: HeaderName = HeaderName::from_static("x-hookgate-source");
pub const X_ID: HeaderName = HeaderName::from_static("x-hookgate-delivery-id");
pub const X_EVENT: HeaderName = HeaderName::from_static("x-hookgate-event-type");
pub const X_VERIFIED: HeaderName = HeaderName::from_static("x-hookgate-verified");
pub const X_DUPLICATE: HeaderName = HeaderName::from_static("x-hookgate-duplicate");

/// `peer` as header text. The usual case is the peer of the previous request
/// on this thread (a keep-alive connection, a sender's few addresses): then it
/// is a refcount increment instead of formatting and allocating (~1.5k
/// instructions per delivery, bench/instructions.sh).
fn peer_header(peer: IpAddr) -> HeaderValue {
    thread_local!(static LAST: std::cell::RefCell<Option<(IpAddr, HeaderValue)>> = const { std::cell::RefCell::new(None) });
    LAST.with_borrow_mut(|last| match last {
        Some((ip, v)) if *ip == peer => v.clone(),
        _ => {
            // An address's text is always a valid header value.
            let v = HeaderValue::try_from(peer.to_string()).unwrap_or(HeaderValue::from_static(""));
            *last = Some((peer, v.clone()));
            v
        }
    })
}

/// `X-Forwarded-For`: the sender's list with `peer` appended.
fn forwarded_for(prior: http::header::GetAll<'_, HeaderValue>, peer: IpAddr) -> Option<HeaderValue> {
    let mut prior = prior.iter().filter_map(|v| v.to_str().ok()).peekable();
    if prior.peek().is_none() {
        return Some(peer_header(peer));
    }
    let mut s = prior.collect::<Vec<_>>().join(", ");
    s.push_str(", ");
    s.push_str(&peer.to_string());
    HeaderValue::from_maybe_shared(bytes::Bytes::from(s)).ok()
}

/// What hookgate adds to the upstream request: the values of
/// `X-Hookgate-Delivery-Id` and `X-Hookgate-Event-Type`, and the body's length
/// when the request goes out now (an incoming `Content-Length` equal to it is
/// kept, sparing hyper a formatted copy; queued requests drop it).
pub struct Ours {
    pub id: Option<HeaderValue>,
    pub event_type: Option<HeaderValue>,
    pub body_len: Option<usize>,
}

impl Ours {
    pub fn of(delivery: &Delivery<Verified>, body_len: Option<usize>) -> Ours {
        Ours { id: delivery.id_value(), event_type: delivery.event_type_value(), body_len }
    }
}

/// A single `Content-Length` of exactly `len` (digits only).
fn length_is(headers: &HeaderMap, len: usize) -> bool {
    let mut all = headers.get_all(CONTENT_LENGTH).iter();
    match (all.next(), all.next()) {
        (Some(v), None) => {
            let digits = v.to_str().ok().filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()));
            digits.and_then(|s| s.parse::<usize>().ok()) == Some(len)
        }
        _ => false,
    }
}

/// The headers sent upstream for `incoming` (see the module docs).
pub fn upstream_headers(mut headers: HeaderMap, uri: &Uri, peer: Peer, source: &HeaderValue, ours: Ours) -> HeaderMap {
    // Room for the headers added below, so the map does not grow on the way.
    headers.reserve(8);
    let host = headers.remove(HOST).or_else(|| uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()));
    let proto = if peer.trusted { headers.remove(&XFP) } else { None };
    if !ours.body_len.is_some_and(|n| length_is(&headers, n)) {
        headers.remove(CONTENT_LENGTH);
    }
    strip(&mut headers, true);
    if let Some(v) = forwarded_for(headers.get_all(&XFF), peer.addr) {
        headers.insert(XFF, v);
    }
    let scheme = if peer.https { "https" } else { "http" };
    headers.insert(XFP, proto.unwrap_or(HeaderValue::from_static(scheme)));
    match host {
        Some(h) => headers.insert(XFH, h),
        None => headers.remove(XFH),
    };
    headers.insert(X_SOURCE, source.clone());
    if let Some(v) = ours.id {
        headers.insert(X_ID, v);
    }
    if let Some(v) = ours.event_type {
        headers.insert(X_EVENT, v);
    }
    headers.insert(X_VERIFIED, HeaderValue::from_static("true"));
    headers
}

/// The upstream path (origin form) with the incoming query appended.
pub fn upstream_path(base: &PathAndQuery, incoming: &Uri) -> PathAndQuery {
    upstream_path_with(base, incoming.query())
}

/// Sends `delivery` to `route` and waits for the response head. The delivery's
/// headers are moved into the upstream request, not copied.
pub async fn forward(
    delivery: &mut Delivery<Verified>,
    route: &Route,
    peer: Peer,
    source: &HeaderValue,
) -> Result<Response<ResBody>, ForwardError> {
    let ours = Ours::of(delivery, Some(delivery.body.len()));
    let headers = upstream_headers(std::mem::take(&mut delivery.head.headers), &delivery.head.uri, peer, source, ours);
    let query = delivery.head.uri.query();
    let (path, headers, body) = prepare(route, headers, query, delivery.id(), &delivery.body)?;
    send(route, path, headers, body).await
}

/// What a route adds to a request it sends (sync or queued): the body its
/// `transform` makes (`application/json`, its own length), its `headers` and
/// `remove_headers`, then its re-signing over the body it sends (SPEC §8,
/// §14). `headers` are the request's after [`upstream_headers`].
pub fn prepare(
    route: &Route,
    mut headers: HeaderMap,
    query: Option<&str>,
    id: &str,
    body: &bytes::Bytes,
) -> Result<(PathAndQuery, HeaderMap, bytes::Bytes), ForwardError> {
    let body = match &route.transform {
        None => body.clone(),
        Some(t) => {
            let out = bytes::Bytes::from(t.apply(body)?);
            headers.remove(CONTENT_LENGTH);
            headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            out
        }
    };
    if !route.headers.is_empty() {
        route.headers.apply(&mut headers);
    }
    if let Some(r) = &route.resign {
        r.apply(&mut headers, id, unix_now(), &body);
    }
    Ok((upstream_path_with(&route.path, query), headers, body))
}

/// Seconds since the epoch, for re-signing.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Sends one request to `route`'s upstream (the part sync routes and queue
/// attempts share): `headers` are final but for `Host`; `path` is in origin form.
pub async fn send(
    route: &Route,
    path: PathAndQuery,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> Result<Response<ResBody>, ForwardError> {
    if let Some(b) = &route.broker {
        // Boxed: the broker clients' futures are large, and inline they would
        // make every HTTP forward's future (moved by value) that much larger
        // (+9k instructions of memcpy per delivery, bench/instructions.sh).
        return Box::pin(b.send(&route.label, headers, body, route.timeout)).await;
    }
    let mut req = Request::new(Full::new(body));
    *req.method_mut() = http::Method::POST;
    *req.uri_mut() = Uri::from(path);
    *req.headers_mut() = headers;
    // One timer for the whole exchange (response head, then a small body):
    // a second `timeout` around the body read registered a second timer per
    // delivery (~1k instructions, bench/instructions.sh).
    match tokio::time::timeout(route.timeout, exchange(route, req)).await {
        Err(_) => Err(ForwardError::Timeout),
        Ok(result) => result,
    }
}

/// [`send`] without its deadline.
async fn exchange(route: &Route, req: Request<Full<bytes::Bytes>>) -> Result<Response<ResBody>, ForwardError> {
    let (mut res, lease) = upstream::send(&route.target, &route.host, req).await.map_err(ForwardError::Unreachable)?;
    strip_hop_by_hop(res.headers_mut());
    // The sender is answered in its own protocol version, not the app's (an
    // HTTP/1.0 app would otherwise make hookgate answer HTTP/1.0 and close
    // the sender's keep-alive connection).
    *res.version_mut() = http::Version::default();
    // Small bodies are read here (within the route timeout), so the answer goes
    // out in one write and the connection returns to the pool at once; larger
    // or unsized ones are streamed through (and that connection is not reused).
    // The size hint is exact for Content-Length bodies and for bodiless
    // answers (204, 304), so those are buffered and their connection reused.
    let small = res.body().size_hint().exact().is_some_and(|n| n <= BUFFER_LIMIT);
    if !small {
        let status = res.status().as_u16();
        return Ok(res.map(|inner| Either::Right(Streamed { inner, status, sent: 0 })));
    }
    let (parts, body) = res.into_parts();
    let bytes = crate::body::to_bytes(body).await.map_err(|e| ForwardError::Unreachable(error_chain(&e)))?;
    lease.release();
    Ok(Response::from_parts(parts, Either::Left(Full::new(bytes))))
}

/// The upstream path for a stored query string (queue attempts).
pub fn upstream_path_with(base: &PathAndQuery, query: Option<&str>) -> PathAndQuery {
    let Some(query) = query else {
        return base.clone();
    };
    let joined = match base.query() {
        Some(_) => format!("{base}&{query}"),
        None => format!("{base}?{query}"),
    };
    joined.parse().unwrap_or_else(|_| base.clone())
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// An upstream body streamed through to the sender. Its head (status) has
/// gone out already when the body breaks off, so the sender then gets a
/// truncated answer: that is logged with what it got (SPEC §13), since the
/// delivery's log line was written with the status alone.
pub struct Streamed {
    inner: hyper::body::Incoming,
    status: u16,
    sent: u64,
}

impl hyper::body::Body for Streamed {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let polled = std::task::ready!(std::pin::Pin::new(&mut self.inner).poll_frame(cx));
        match &polled {
            Some(Ok(frame)) => self.sent += frame.data_ref().map_or(0, |d| d.len() as u64),
            Some(Err(e)) => tracing::warn!(
                status = self.status,
                bytes_sent = self.sent,
                error = %e,
                "the upstream's answer broke off mid-body: the sender got the status and a truncated body"
            ),
            None => {}
        }
        std::task::Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> Peer {
        Peer { addr: "192.0.2.7".parse().unwrap(), trusted: false, https: false }
    }

    fn ours(id: &'static str, event_type: &'static str, body_len: Option<usize>) -> Ours {
        Ours {
            id: Some(HeaderValue::from_static(id)),
            event_type: Some(HeaderValue::from_static(event_type)),
            body_len,
        }
    }

    #[test]
    fn header_rules() {
        let mut h = HeaderMap::new();
        h.insert(HOST, HeaderValue::from_static("hooks.example.com"));
        h.insert(CONNECTION, HeaderValue::from_static("Keep-Alive, X-Custom-Hop"));
        h.insert("x-custom-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("trailer", HeaderValue::from_static("x"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("proxy-authorization", HeaderValue::from_static("x"));
        h.insert("x-hookgate-verified", HeaderValue::from_static("forged"));
        h.insert("x-hookgate-anything", HeaderValue::from_static("forged"));
        h.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.1"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        h.insert("x-webhook-signature", HeaderValue::from_static("sha256=ab"));
        h.insert("content-length", HeaderValue::from_static("3"));
        let uri: Uri = "/webhooks/tampa?a=1".parse().unwrap();
        let out = upstream_headers(h, &uri, peer(), &HeaderValue::from_static("tampa"), ours("id-1", "a.b", None));
        for gone in [
            "connection",
            "x-custom-hop",
            "keep-alive",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "proxy-authorization",
            "x-hookgate-anything",
            "host",
            "content-length",
        ] {
            assert!(!out.contains_key(gone), "{gone} must be removed");
        }
        assert_eq!(out["x-hookgate-verified"], "true");
        assert_eq!(out["x-hookgate-source"], "tampa");
        assert_eq!(out["x-hookgate-delivery-id"], "id-1");
        assert_eq!(out["x-hookgate-event-type"], "a.b");
        assert_eq!(out["x-forwarded-for"], "203.0.113.1, 192.0.2.7");
        assert_eq!(out["x-forwarded-proto"], "http", "an untrusted peer's proto is not believed");
        assert_eq!(out["x-forwarded-host"], "hooks.example.com");
        assert_eq!(out["x-webhook-signature"], "sha256=ab", "end-to-end headers pass");
    }

    #[test]
    fn a_content_length_is_kept_only_when_it_is_the_bodys_exact_length() {
        let with = |values: &[&'static str], body_len| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(CONTENT_LENGTH, HeaderValue::from_static(v));
            }
            let out = upstream_headers(
                h,
                &"/w".parse().unwrap(),
                peer(),
                &HeaderValue::from_static("s"),
                ours("i", "", body_len),
            );
            out.get_all(CONTENT_LENGTH).iter().map(|v| v.to_str().unwrap().to_owned()).collect::<Vec<_>>()
        };
        assert_eq!(with(&["3"], Some(3)), ["3"]);
        assert_eq!(with(&["3"], None), Vec::<String>::new(), "a queued request is sent later: hyper sets it then");
        for wrong in [&["4"][..], &["+3"], &[" 3"], &[""], &["3", "3"], &["0x3"]] {
            assert_eq!(with(wrong, Some(3)), Vec::<String>::new(), "{wrong:?} is dropped (hyper sets the length)");
        }
    }

    #[test]
    fn connection_options_are_dropped_in_any_case() {
        let mut h = HeaderMap::new();
        h.append(CONNECTION, HeaderValue::from_static("close"));
        h.append(CONNECTION, HeaderValue::from_static("KEEP-ALIVE , x-a,,X-B"));
        for n in ["close", "keep-alive", "x-a", "x-b", "x-c"] {
            h.insert(n, HeaderValue::from_static("1"));
        }
        strip_hop_by_hop(&mut h);
        let left: Vec<_> = h.keys().map(|n| n.as_str()).collect();
        assert_eq!(left, ["x-c"]);
    }

    #[test]
    fn a_trusted_proxy_keeps_its_forwarded_proto() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        let trusted = Peer { addr: "10.0.0.1".parse().unwrap(), trusted: true, https: false };
        let out =
            upstream_headers(h, &"/w".parse().unwrap(), trusted, &HeaderValue::from_static("s"), ours("i", "", None));
        assert_eq!(out["x-forwarded-proto"], "https");
        assert_eq!(out["x-forwarded-for"], "10.0.0.1");
        assert!(!out.contains_key("x-forwarded-host"), "no Host, no authority: nothing to forward");
    }

    #[test]
    fn tls_to_hookgate_says_https() {
        let tls = Peer { addr: "192.0.2.7".parse().unwrap(), trusted: false, https: true };
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-proto", HeaderValue::from_static("http"));
        let out = upstream_headers(h, &"/w".parse().unwrap(), tls, &HeaderValue::from_static("s"), ours("i", "", None));
        assert_eq!(out["x-forwarded-proto"], "https", "an untrusted sender's value is replaced");
    }

    #[test]
    fn query_is_appended() {
        let base = PathAndQuery::from_static("/hooks");
        assert_eq!(upstream_path(&base, &"/w?a=1&b=2".parse().unwrap()), "/hooks?a=1&b=2");
        assert_eq!(upstream_path(&base, &"/w".parse().unwrap()), base);
        let base = PathAndQuery::from_static("/hooks?k=v");
        assert_eq!(upstream_path(&base, &"/w?a=1".parse().unwrap()), "/hooks?k=v&a=1");
    }

    #[test]
    fn forwarded_for_appends_the_peer() {
        let mut h = HeaderMap::new();
        assert_eq!(forwarded_for(h.get_all(&XFF), "2001:db8::1".parse().unwrap()).unwrap(), "2001:db8::1");
        h.append(XFF, HeaderValue::from_static("203.0.113.1"));
        h.append(XFF, HeaderValue::from_static("198.51.100.2, 10.0.0.3"));
        let v = forwarded_for(h.get_all(&XFF), "192.0.2.7".parse().unwrap()).unwrap();
        assert_eq!(v, "203.0.113.1, 198.51.100.2, 10.0.0.3, 192.0.2.7");
        let longest: IpAddr = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255".parse().unwrap();
        assert_eq!(forwarded_for(HeaderMap::new().get_all(&XFF), longest).unwrap(), longest.to_string().as_str());
        // The thread's last peer is reused only for that same peer.
        for ip in ["192.0.2.1", "192.0.2.1", "198.51.100.9", "192.0.2.1"] {
            let v = forwarded_for(HeaderMap::new().get_all(&XFF), ip.parse().unwrap()).unwrap();
            assert_eq!(v, ip);
        }
    }
}
