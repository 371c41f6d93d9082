//! Event-type routing: `*` matches any run of characters (including none),
//! every other character matches itself. Patterns are split at `*` once, at
//! config load; matching allocates nothing.

use std::sync::Arc;
use std::time::Duration;

use crate::queue::QueueRoute;
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

/// One `[[sources.NAME.routes]]` entry.
#[derive(Debug, Clone)]
pub struct Route {
    pub patterns: Vec<Pattern>,
    pub timeout: Duration,
    /// The upstream URL (`http://host:port/path`) taken apart once at load, so
    /// forwarding builds no URL text per request: the pool key, the `Host`
    /// header and the path in origin form (the incoming query is appended).
    pub authority: http::uri::Authority,
    pub host: http::HeaderValue,
    pub path: http::uri::PathAndQuery,
    /// The upstream URL as configured, for the admin API and logs.
    pub upstream: Arc<str>,
    /// Forward while the sender waits, or store and deliver later.
    pub mode: Mode,
    /// `sign_upstream` (the route's, else the source's): re-sign toward the app.
    pub resign: Option<Arc<Resigner>>,
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
    /// A sync route without re-signing; `None` when `upstream` has no authority.
    pub fn new(patterns: Vec<Pattern>, upstream: &http::Uri, timeout: Duration) -> Option<Self> {
        let authority = upstream.authority()?.clone();
        let host = http::HeaderValue::from_str(authority.as_str()).ok()?;
        let path = upstream.path_and_query().cloned().unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        let shown = upstream.to_string().into();
        Some(Route { patterns, timeout, authority, host, path, upstream: shown, mode: Mode::Sync, resign: None })
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
}

/// The first route whose patterns match `event_type`, with its index.
pub fn select<'r>(routes: &'r [Route], event_type: &str) -> Option<(usize, &'r Route)> {
    routes.iter().enumerate().find(|(_, r)| r.matches(event_type))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
