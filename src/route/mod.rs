//! Routes, compiled at config load: which deliveries a route takes (event-type
//! patterns and a [`filter`]), what it sends ([`transform`], [`headers`]) and
//! how ([`policy`] for queue routes), and the order routes are matched in
//! (first match, or every match for fan-out: SPEC §14).
//!
//! Event-type patterns: `*` matches any run of characters (including none),
//! every other character matches itself. Patterns are split at `*` once, at
//! config load; matching allocates nothing.

pub mod fast;
pub mod filter;
pub mod headers;
pub mod policy;
pub mod transform;

use std::sync::Arc;
use std::time::Duration;

pub use policy::QueueRoute;

use crate::resign::Resigner;

/// A compiled event-type pattern: the literal pieces between stars. With one
/// piece there is no star; otherwise the first piece is a required prefix, the
/// last a required suffix, and the middle ones must appear in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    parts: Vec<String>,
}

impl Pattern {
    pub fn new(text: &str) -> Self {
        Pattern { parts: text.split('*').map(str::to_owned).collect() }
    }

    /// The pattern as written.
    pub fn text(&self) -> String {
        self.parts.join("*")
    }

    pub fn matches(&self, s: &str) -> bool {
        let parts = &self.parts;
        if parts.len() == 1 {
            return parts[0] == s;
        }
        let (first, rest) = (&parts[0], &parts[1..]);
        let Some(mut s) = s.strip_prefix(first.as_str()) else {
            return false;
        };
        let (last, middle) = rest.split_last().expect("two or more parts");
        for piece in middle {
            match s.find(piece.as_str()) {
                Some(i) => s = &s[i + piece.len()..],
                None => return false,
            }
        }
        s.len() >= last.len() && s.ends_with(last.as_str())
    }
}

/// An unnamed route's identity: `~` and 16 hex digits of the SHA-256 of what
/// it matches: its event patterns in order, one per line, then (when it has
/// one) `filter ` and its filter table as TOML with sorted keys, so routes told
/// apart by their filters only have queues of their own, and a route without
/// a filter keeps the identity it had before filters existed. Names cannot
/// start with `~`.
pub fn fingerprint(patterns: &[Pattern], filter: Option<&toml::Table>) -> String {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    for p in patterns {
        h.update(p.text().as_bytes());
        h.update(b"\n");
    }
    if let Some(f) = filter.filter(|f| !f.is_empty()) {
        h.update(b"filter ");
        h.update(toml::Value::Table(f.clone()).to_string().as_bytes());
    }
    format!("~{}", hex::encode(&h.finalize()[..8]))
}

/// Whether `name` may name a route: 1-64 of `A-Z a-z 0-9 _ - .`, not all
/// digits (a bare number reads as a position), not starting with `~` or `@`
/// (fingerprints and orphaned positions).
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        && !name.bytes().all(|b| b.is_ascii_digit())
}

/// Where an upstream is and how to reach it (SPEC §7).
#[derive(Debug, Clone)]
pub enum Connect {
    /// `http://host:port`.
    Tcp { host: String, port: u16 },
    /// `https://host:port`: TLS with SNI `name`, verified by `config`'s roots.
    Tls { host: String, port: u16, name: rustls::pki_types::ServerName<'static>, config: Arc<rustls::ClientConfig> },
    /// `http://unix:/path.sock:/url-path` (nginx's form).
    Unix { path: std::path::PathBuf },
}

/// An upstream as the connection pool sees it.
#[derive(Debug)]
pub struct Target {
    /// Pool key: scheme and authority, or the socket path.
    pub key: Box<str>,
    pub connect: Connect,
}

/// One `[[sources.NAME.routes]]` entry.
#[derive(Debug, Clone)]
pub struct Route {
    /// `name`, if set: unique in its source.
    pub name: Option<Arc<str>>,
    /// What a queued delivery belongs to (SPEC §12): the `name`, else a
    /// fingerprint of what the route matches ([`fingerprint`]); never its
    /// position or its upstream, so reordering routes or moving the app to
    /// another URL keeps its queue.
    pub identity: Arc<str>,
    pub patterns: Vec<Pattern>,
    pub timeout: Duration,
    /// The upstream URL taken apart once at load, so forwarding builds no URL
    /// text per request: where to connect, the `Host` header and the path in
    /// origin form (the incoming query is appended).
    pub target: Arc<Target>,
    pub host: http::HeaderValue,
    pub path: http::uri::PathAndQuery,
    /// The upstream URL as configured, for the admin API and logs.
    pub upstream: Arc<str>,
    /// Forward while the sender waits, or store and deliver later.
    pub mode: Mode,
    /// `sign_upstream` (the route's, else the source's): re-sign toward the app.
    pub resign: Option<Arc<Resigner>>,
    /// What the admin API, metrics, logs and `/ui` call it: its `name`, else
    /// its position ("0", "1", ...).
    pub label: Arc<str>,
    /// `filter`: conditions on the body and headers, besides the event type.
    pub filter: filter::Filter,
    /// `transform`: a jq program whose output is the forwarded body.
    pub transform: Option<Arc<transform::Transform>>,
    /// `headers` / `remove_headers` toward the upstream.
    pub headers: headers::RouteHeaders,
    /// An event-bus upstream (SPEC §15): published to instead of sent over HTTP.
    pub broker: Option<Arc<crate::broker::Broker>>,
}

/// How a route delivers (SPEC §5).
#[derive(Debug, Clone)]
pub enum Mode {
    /// Forward now; the sender gets the upstream's answer.
    Sync,
    /// Store durably, acknowledge, deliver with retries.
    Queue(QueueRoute),
}

impl Route {
    /// A sync route without re-signing to `upstream`: `http://host:port/path`,
    /// `https://host:port/path` (trusting `ca`, else the system's roots) or
    /// `http://unix:/path.sock:/url-path`. The error says what is wrong.
    pub fn new(
        patterns: Vec<Pattern>,
        upstream: &str,
        timeout: Duration,
        ca: Option<&std::path::Path>,
    ) -> Result<Self, String> {
        let usage = "use http://HOST:PORT/PATH, https://HOST:PORT/PATH or http://unix:/PATH.sock:/PATH";
        let (target, host, path) = if let Some(rest) = upstream.strip_prefix("http://unix:") {
            let (socket, path) = match rest.get(1..).and_then(|r| r.find(":/")) {
                Some(i) => (&rest[..i + 1], &rest[i + 2..]),
                None => (rest, "/"),
            };
            if !socket.starts_with('/') {
                return Err(format!("invalid URL {upstream:?}: the socket path must be absolute; {usage}"));
            }
            let path = path.parse::<http::uri::PathAndQuery>().map_err(|_| format!("invalid path in {upstream:?}"))?;
            let target =
                Target { key: format!("unix:{socket}").into(), connect: Connect::Unix { path: socket.into() } };
            (target, http::HeaderValue::from_static("localhost"), path)
        } else {
            let uri = upstream.parse::<http::Uri>().map_err(|_| format!("invalid URL {upstream:?}; {usage}"))?;
            let authority = uri.authority().ok_or_else(|| format!("invalid URL {upstream:?}; {usage}"))?.clone();
            let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_owned();
            let (tls, default_port) = match uri.scheme_str() {
                Some("http") => (false, 80),
                Some("https") => (true, 443),
                _ => return Err(format!("invalid URL {upstream:?}: unknown scheme; {usage}")),
            };
            if ca.is_some() && !tls {
                return Err("ca applies to https:// and rediss:// upstreams only".into());
            }
            let port = authority.port_u16().unwrap_or(default_port);
            let connect = if tls {
                let name = rustls::pki_types::ServerName::try_from(host.clone())
                    .map_err(|_| format!("invalid host name in {upstream:?}"))?;
                let config = crate::tls::upstream_client(ca).map_err(|e| e.to_string())?;
                Connect::Tls { host, port, name, config }
            } else {
                Connect::Tcp { host, port }
            };
            // Connections verified with one `ca` are not reused for a route that trusts another.
            let key = match ca {
                Some(ca) => format!("https://{}#ca={}", authority.as_str(), ca.display()),
                None => format!("{}://{}", if tls { "https" } else { "http" }, authority.as_str()),
            }
            .into();
            let header =
                http::HeaderValue::from_str(authority.as_str()).map_err(|_| format!("invalid host in {upstream:?}"))?;
            let path = uri.path_and_query().cloned().unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
            (Target { key, connect }, header, path)
        };
        Ok(Route {
            name: None,
            identity: fingerprint(&patterns, None).into(),
            patterns,
            timeout,
            target: Arc::new(target),
            host,
            path,
            upstream: upstream.into(),
            mode: Mode::Sync,
            resign: None,
            label: "0".into(),
            filter: filter::Filter::default(),
            transform: None,
            headers: headers::RouteHeaders::default(),
            broker: None,
        })
    }

    /// A route publishing to `broker`; its HTTP target is never used.
    pub fn to_broker(patterns: Vec<Pattern>, broker: crate::broker::Broker, timeout: Duration) -> Self {
        let shown: Arc<str> = broker.shown.clone().into();
        let mut r = Route::new(patterns, "http://127.0.0.1:9/", timeout, None).unwrap_or_else(|_| unreachable!());
        r.upstream = shown;
        r.broker = Some(Arc::new(broker));
        r
    }

    pub fn queue(&self) -> Option<&QueueRoute> {
        match &self.mode {
            Mode::Queue(q) => Some(q),
            Mode::Sync => None,
        }
    }

    pub fn matches(&self, event_type: &str) -> bool {
        self.patterns.iter().any(|p| p.matches(event_type))
    }

    /// Whether this route takes the delivery: its events and its filter match.
    pub fn takes(&self, event_type: &str, headers: &http::HeaderMap, body: &[u8]) -> bool {
        self.matches(event_type) && self.filter.matches(headers, body)
    }

    /// The body this route sends: the transform's output, or `body` as it is.
    pub fn body(&self, body: &bytes::Bytes) -> Result<bytes::Bytes, transform::TransformError> {
        match &self.transform {
            Some(t) => t.apply(body).map(bytes::Bytes::from),
            None => Ok(body.clone()),
        }
    }
}

/// The first route that takes the delivery, with its index.
pub fn select<'r>(
    routes: &'r [Route],
    event_type: &str,
    headers: &http::HeaderMap,
    body: &[u8],
) -> Option<(usize, &'r Route)> {
    routes.iter().enumerate().find(|(_, r)| r.takes(event_type, headers, body))
}

/// Most routes a source may have: route positions are kept in a `u64` set
/// per delivery during fan-out.
pub const MAX_ROUTES: usize = 64;

/// Every route that takes the delivery (`match = "all"`), as a bit set of positions.
pub fn select_all(routes: &[Route], event_type: &str, headers: &http::HeaderMap, body: &[u8]) -> u64 {
    routes
        .iter()
        .take(MAX_ROUTES)
        .enumerate()
        .filter(|(_, r)| r.takes(event_type, headers, body))
        .fold(0u64, |set, (i, _)| set | (1 << i))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn route(u: &str) -> Result<Route, String> {
        Route::new(vec![Pattern::new("*")], u, Duration::from_secs(1), None)
    }

    #[test]
    fn upstream_forms() {
        let r = route("http://127.0.0.1:3001/hooks?x=1").unwrap();
        assert_eq!(
            (&*r.target.key, r.host.to_str().unwrap(), r.path.as_str()),
            ("http://127.0.0.1:3001", "127.0.0.1:3001", "/hooks?x=1")
        );
        assert!(matches!(&r.target.connect, Connect::Tcp { host, port: 3001 } if host == "127.0.0.1"));
        let r = route("http://[::1]/").unwrap();
        assert!(matches!(&r.target.connect, Connect::Tcp { host, port: 80 } if host == "::1"));
        let r = route("http://unix:/run/app.sock:/hooks/in").unwrap();
        assert_eq!(
            (&*r.target.key, r.host.to_str().unwrap(), r.path.as_str()),
            ("unix:/run/app.sock", "localhost", "/hooks/in")
        );
        assert!(matches!(&r.target.connect, Connect::Unix { path } if path == std::path::Path::new("/run/app.sock")));
        assert_eq!(route("http://unix:/run/app.sock").unwrap().path.as_str(), "/");
        for bad in ["ftp://x/", "http://unix:relative.sock:/x", "not a url", "/just/a/path"] {
            assert!(route(bad).is_err(), "{bad}");
        }
        let ca_on_http =
            Route::new(vec![], "http://h:1/", Duration::from_secs(1), Some(std::path::Path::new("/ca.pem")));
        assert!(ca_on_http.unwrap_err().contains("https"));
    }

    #[test]
    fn a_filter_is_part_of_an_unnamed_routes_identity() {
        let p = vec![Pattern::new("invoice.*")];
        let t = |s: &str| toml::from_str::<toml::Table>(s).unwrap();
        let plain = fingerprint(&p, None);
        assert_eq!(plain, fingerprint(&p, Some(&toml::Table::new())), "no filter, no change");
        let a = fingerprint(
            &p,
            Some(&t(r#""json:/a" = 1
"json:/b" = { gt = 2 }"#)),
        );
        let same = fingerprint(
            &p,
            Some(&t(r#""json:/b" = { gt = 2 }
"json:/a" = 1"#)),
        );
        let other = fingerprint(&p, Some(&t(r#""json:/a" = 2"#)));
        assert!(a != plain && a != other && a.starts_with('~') && a.len() == 17);
        assert_eq!(a, same, "key order does not matter");
    }

    #[test]
    fn literal_and_star_patterns() {
        let cases = [
            ("*", "", true),
            ("*", "anything.at.all", true),
            ("a.b", "a.b", true),
            ("a.b", "a.bc", false),
            ("dev.tampa.event.*", "dev.tampa.event.created", true),
            ("dev.tampa.event.*", "dev.tampa.event.", true),
            ("dev.tampa.event.*", "dev.tampa.group.x", false),
            ("dev.tampa.group.member_*", "dev.tampa.group.member_added", true),
            ("*.created", "user.created", true),
            ("*.created", "user.created.not", false),
            ("a*b*c", "abc", true),
            ("a*b*c", "a-x-b-y-c", true),
            ("a*b*c", "acb", false),
            ("ab*ba", "aba", false),
            ("**", "x", true),
        ];
        for (p, s, want) in cases {
            assert_eq!(Pattern::new(p).matches(s), want, "{p} vs {s}");
        }
    }

    fn naive(p: &[u8], s: &[u8]) -> bool {
        match (p.first(), s.first()) {
            (None, _) => s.is_empty(),
            (Some(b'*'), _) => naive(&p[1..], s) || (!s.is_empty() && naive(p, &s[1..])),
            (Some(c), Some(d)) => c == d && naive(&p[1..], &s[1..]),
            (Some(_), None) => false,
        }
    }

    proptest! {
        #[test]
        fn agrees_with_a_naive_matcher(p in "[ab*.]{0,8}", s in "[ab.]{0,10}") {
            prop_assert_eq!(Pattern::new(&p).matches(&s), naive(p.as_bytes(), s.as_bytes()));
        }
    }
}
