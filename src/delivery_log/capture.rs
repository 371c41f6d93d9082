//! Payload capture (SPEC §17): with `[log] bodies = "64MB"`, the delivery
//! log keeps each verified request's headers and body beside its record, so
//! `GET /deliveries/{entry}` can show them and `POST …/replay` send them
//! again. Off by default: bodies may hold personal data.
//!
//! What is kept is redacted when it is made, not when it is shown: the
//! values of the source's signature headers and of every header whose name
//! says it carries a credential (`Authorization`, `Cookie`, `*-Token`,
//! `*Signature*`, `*Secret*`, …), and such query parameters, are replaced by
//! [`REDACTED`]. A captured request therefore cannot be replayed against
//! hookgate itself, and nothing secret sits in memory longer than the request.
//! The body is kept as received (a refcount on the request's buffer, no copy).

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};

/// What a redacted value reads.
pub const REDACTED: &str = "[redacted]";

/// Parts of header or parameter names that mark a credential (lowercase).
const SECRET_WORDS: &[&str] = &[
    "authorization",
    "cookie",
    "signature",
    "hmac",
    "token",
    "secret",
    "password",
    "passwd",
    "api-key",
    "apikey",
    "api_key",
    "credential",
    "client-state",
    "session",
];

/// One request as captured.
#[derive(Debug)]
pub struct Capture {
    /// The request's headers, credentials redacted, in received order.
    pub headers: HeaderMap,
    /// The query string, credentials redacted.
    pub query: Option<Box<str>>,
    pub body: Bytes,
    /// What it holds in bytes, counted once when made.
    size: usize,
}

/// Whether a header or parameter named `name` carries a credential.
pub fn is_secret(name: &str) -> bool {
    // One pass over the name for every word, any case, no copy.
    static WORDS: std::sync::LazyLock<Option<aho_corasick::AhoCorasick>> = std::sync::LazyLock::new(|| {
        aho_corasick::AhoCorasick::builder().ascii_case_insensitive(true).build(SECRET_WORDS).ok()
    });
    match &*WORDS {
        Some(words) => words.is_match(name),
        // Not reached (the words are fixed and valid); redact everything rather than nothing.
        None => true,
    }
}

impl Capture {
    /// Captures a request; `signature_headers` are the source's own (redacted
    /// whatever their name).
    pub fn of<'a>(
        headers: &HeaderMap,
        query: Option<&str>,
        body: &Bytes,
        signature_headers: impl Iterator<Item = &'a HeaderName> + Clone,
    ) -> Capture {
        let mut kept = HeaderMap::with_capacity(headers.len());
        for (name, value) in headers {
            let secret = is_secret(name.as_str()) || signature_headers.clone().any(|s| s == name);
            let value = if secret { HeaderValue::from_static(REDACTED) } else { value.clone() };
            kept.append(name.clone(), value);
        }
        let query = query.map(redact_query);
        let header_bytes: usize = kept.iter().map(|(n, v)| n.as_str().len() + v.len() + 32).sum();
        let size = body.len() + header_bytes + query.as_deref().map_or(0, str::len) + 64;
        Capture { headers: kept, query, body: body.clone(), size }
    }

    /// What it holds in bytes, as counted against `[log] bodies`.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Whether a captured header's value was redacted (replays leave it out).
    pub fn redacted(value: &HeaderValue) -> bool {
        value.as_bytes() == REDACTED.as_bytes()
    }

    /// `headers`, and `body` (UTF-8) or `body_base64`, for `GET /deliveries/{entry}`.
    pub fn fields(&self, out: &mut serde_json::Map<String, Value>) {
        let headers: Vec<Value> =
            self.headers.iter().map(|(n, v)| json!([n.as_str(), String::from_utf8_lossy(v.as_bytes())])).collect();
        out.insert("headers".into(), Value::Array(headers));
        out.insert("query".into(), self.query.as_deref().map_or(Value::Null, Value::from));
        match std::str::from_utf8(&self.body) {
            Ok(text) => out.insert("body".into(), Value::from(text)),
            Err(_) => {
                use base64::Engine as _;
                out.insert("body_base64".into(), base64::engine::general_purpose::STANDARD.encode(&self.body).into())
            }
        };
    }
}

/// `a=1&token=x` -> `a=1&token=[redacted]` (names kept, order kept).
fn redact_query(query: &str) -> Box<str> {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if is_secret(&percent_decoded(name)) => format!("{name}={REDACTED}"),
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
        .into_boxed_str()
}

fn percent_decoded(name: &str) -> String {
    form_urlencoded::parse(name.as_bytes()).next().map(|(k, _)| k.into_owned()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(HeaderName::from_bytes(n.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn credentials_are_redacted_and_the_rest_kept_in_order() {
        let h = headers(&[
            ("content-type", "application/json"),
            ("stripe-signature", "t=1,v1=abc"),
            ("authorization", "Bearer s3cret"),
            ("x-gitlab-token", "tok"),
            ("x-shopify-hmac-sha256", "b64"),
            ("x-custom-sig", "own"),
            ("cookie", "a=b"),
            ("x-request-id", "r1"),
            ("x-request-id", "r2"),
        ]);
        let own = [HeaderName::from_static("x-custom-sig")];
        let c = Capture::of(&h, Some("a=1&Token=t0k&api%5Fkey=k&b=2"), &Bytes::from_static(b"{}"), own.iter());
        let shown: Vec<(String, String)> =
            c.headers.iter().map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned())).collect();
        let r = REDACTED.to_owned();
        assert_eq!(
            shown,
            [
                ("content-type".into(), "application/json".into()),
                ("stripe-signature".into(), r.clone()),
                ("authorization".into(), r.clone()),
                ("x-gitlab-token".into(), r.clone()),
                ("x-shopify-hmac-sha256".into(), r.clone()),
                ("x-custom-sig".into(), r.clone()),
                ("cookie".into(), r.clone()),
                ("x-request-id".into(), "r1".into()),
                ("x-request-id".into(), "r2".into()),
            ]
        );
        assert_eq!(c.query.as_deref(), Some("a=1&Token=[redacted]&api%5Fkey=[redacted]&b=2"));
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn a_body_that_is_not_utf8_is_shown_in_base64() {
        let c = Capture::of(&HeaderMap::new(), None, &Bytes::from_static(&[0xff, 0x00, 0x41]), std::iter::empty());
        let mut out = serde_json::Map::new();
        c.fields(&mut out);
        assert_eq!(out["body_base64"], "/wBB");
        assert!(!out.contains_key("body"));
        let c = Capture::of(&HeaderMap::new(), None, &Bytes::from_static("é{}".as_bytes()), std::iter::empty());
        let mut out = serde_json::Map::new();
        c.fields(&mut out);
        assert_eq!(out["body"], "é{}");
    }
}
