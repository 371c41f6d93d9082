//! Signed-payload templates (`"{timestamp}.{body}"`) and field locators
//! (`header:NAME`, `json:/pointer`, `signature:t`, `digest:...`).
//!
//! Templates are compiled once at config load; at request time the MAC is fed
//! segment by segment, so the body is never copied into a joined buffer.

use bytes::Bytes;
use http::HeaderName;

/// One piece of a compiled signed-payload template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Literal(Bytes),
    Body,
    Timestamp,
    Id,
    /// The source's `public_url`, then `?` and the request's query if it has one.
    Url,
    /// A form-encoded body's fields, sorted by name then value (duplicates once),
    /// each as name then value, decoded (Twilio's scheme).
    Form,
    /// The text at a JSON pointer into the body, `""` if absent (Mailgun's token).
    Json(String),
}

/// What a template's placeholders stand for in one request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Input<'a> {
    pub body: &'a [u8],
    pub timestamp: &'a [u8],
    pub id: &'a [u8],
    pub public_url: &'a str,
    pub query: Option<&'a str>,
}

/// Compiled `signed_payload`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub segments: Vec<Segment>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    #[error(
        "unknown placeholder {{{0}}} (use {{body}}, {{timestamp}}, {{id}}, {{url}}, {{form}} or {{json:/pointer}})"
    )]
    UnknownPlaceholder(String),
    #[error("unclosed '{{'")]
    Unclosed,
    #[error("the template must cover the body: {{body}}, {{form}} or a {{json:/pointer}} field of it")]
    NoBody,
}

impl Template {
    /// Parses `"v0:{timestamp}:{body}"`. `{{` and `}}` are literal braces.
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let mut segments = Vec::new();
        let mut lit = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    lit.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    lit.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    let mut closed = false;
                    for c in chars.by_ref() {
                        if c == '}' {
                            closed = true;
                            break;
                        }
                        name.push(c);
                    }
                    if !closed {
                        return Err(TemplateError::Unclosed);
                    }
                    let seg = match name.as_str() {
                        "body" => Segment::Body,
                        "timestamp" => Segment::Timestamp,
                        "id" => Segment::Id,
                        "url" => Segment::Url,
                        "form" => Segment::Form,
                        _ => match name.strip_prefix("json:") {
                            Some(ptr) if ptr.is_empty() || ptr.starts_with('/') => Segment::Json(ptr.to_owned()),
                            _ => return Err(TemplateError::UnknownPlaceholder(name)),
                        },
                    };
                    if !lit.is_empty() {
                        segments.push(Segment::Literal(Bytes::from(std::mem::take(&mut lit))));
                    }
                    segments.push(seg);
                }
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            segments.push(Segment::Literal(Bytes::from(lit)));
        }
        if !segments.iter().any(|s| matches!(s, Segment::Body | Segment::Form | Segment::Json(_))) {
            return Err(TemplateError::NoBody);
        }
        Ok(Template { segments })
    }

    /// Whether `{url}` is used (the source must then set `public_url`).
    pub fn uses_url(&self) -> bool {
        self.segments.contains(&Segment::Url)
    }

    /// Feeds the payload to `sink` piece by piece.
    pub fn feed(&self, input: &Input<'_>, mut sink: impl FnMut(&[u8])) {
        for seg in &self.segments {
            match seg {
                Segment::Literal(b) => sink(b),
                Segment::Body => sink(input.body),
                Segment::Timestamp => sink(input.timestamp),
                Segment::Id => sink(input.id),
                Segment::Url => {
                    sink(input.public_url.as_bytes());
                    if let Some(q) = input.query {
                        sink(b"?");
                        sink(q.as_bytes());
                    }
                }
                Segment::Form => {
                    let mut fields: Vec<_> = form_urlencoded::parse(input.body).collect();
                    fields.sort_unstable();
                    fields.dedup();
                    for (name, value) in &fields {
                        sink(name.as_bytes());
                        sink(value.as_bytes());
                    }
                }
                Segment::Json(ptr) => {
                    if let Some(text) = super::json::pointer_text(input.body, ptr) {
                        sink(text.as_bytes());
                    }
                }
            }
        }
    }
}

/// The escapes HubSpot's docs tell receivers to decode in the URI before
/// checking a v3 signature.
const HUBSPOT_ESCAPES: [(&str, char); 12] = [
    ("%3A", ':'),
    ("%2F", '/'),
    ("%3F", '?'),
    ("%40", '@'),
    ("%21", '!'),
    ("%24", '$'),
    ("%27", '\''),
    ("%28", '('),
    ("%29", ')'),
    ("%2A", '*'),
    ("%2C", ','),
    ("%3B", ';'),
];

/// `query` with HubSpot's escapes decoded (either case of the hex digits);
/// `None` when it has none of them (nothing else to try).
pub fn decode_hubspot_escapes(query: &str) -> Option<String> {
    if !query.contains('%') {
        return None;
    }
    let mut out = String::with_capacity(query.len());
    let mut rest = query;
    let mut changed = false;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let code = rest.get(i..i + 3);
        match code.and_then(|c| HUBSPOT_ESCAPES.iter().find(|(e, _)| e.eq_ignore_ascii_case(c))) {
            Some((_, ch)) => {
                out.push(*ch);
                changed = true;
                rest = &rest[i + 3..];
            }
            None => {
                out.push('%');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    changed.then_some(out)
}

/// Where a field (timestamp, ID, event type) is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Locator {
    Header(HeaderName),
    /// RFC 6901 pointer into the JSON body.
    Json(String),
    /// A `NAME=` parameter of a `params`-style signature header (Stripe's `t`, Paddle's `ts`).
    SignatureParam(String),
    /// `digest:LOC,LOC,...` (IDs only): the lowercase hex SHA-256 of the located
    /// values, each length-prefixed; for senders whose delivery ID changes per attempt.
    Digest(Vec<Locator>),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LocatorError {
    #[error("expected \"header:NAME\", \"json:/pointer\", \"signature:NAME\" or \"digest:LOC,LOC\", got {0:?}")]
    Syntax(String),
    #[error("a digest lists header:, json: or signature: locators, got {0:?}")]
    Digest(String),
    #[error("invalid header name {0:?}")]
    HeaderName(String),
    #[error("a JSON pointer must be empty or start with '/', got {0:?}")]
    Pointer(String),
}

impl Locator {
    pub fn parse(text: &str) -> Result<Self, LocatorError> {
        if let Some(name) = text.strip_prefix("header:") {
            HeaderName::from_bytes(name.trim().as_bytes())
                .map(Locator::Header)
                .map_err(|_| LocatorError::HeaderName(name.to_owned()))
        } else if let Some(name) = text.strip_prefix("signature:")
            && !name.is_empty()
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            Ok(Locator::SignatureParam(name.to_owned()))
        } else if let Some(list) = text.strip_prefix("digest:") {
            let parts = list
                .split(',')
                .map(|p| match Locator::parse(p.trim()) {
                    Ok(Locator::Digest(_)) | Err(_) => Err(LocatorError::Digest(p.trim().to_owned())),
                    Ok(l) => Ok(l),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Locator::Digest(parts))
        } else if let Some(ptr) = text.strip_prefix("json:") {
            if ptr.is_empty() || ptr.starts_with('/') {
                Ok(Locator::Json(ptr.to_owned()))
            } else {
                Err(LocatorError::Pointer(ptr.to_owned()))
            }
        } else {
            Err(LocatorError::Syntax(text.to_owned()))
        }
    }

    pub fn header(name: &'static str) -> Self {
        Locator::Header(HeaderName::from_static(name))
    }

    pub fn json(ptr: &str) -> Self {
        Locator::Json(ptr.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_templates() {
        let t = Template::parse("v0:{timestamp}:{body}").unwrap();
        assert_eq!(
            t.segments,
            vec![
                Segment::Literal(Bytes::from_static(b"v0:")),
                Segment::Timestamp,
                Segment::Literal(Bytes::from_static(b":")),
                Segment::Body
            ]
        );
        let mut out = Vec::new();
        let input = Input { body: b"B", timestamp: b"T", id: b"I", ..Input::default() };
        t.feed(&input, |p| out.extend_from_slice(p));
        assert_eq!(out, b"v0:T:B");
        let mut out = Vec::new();
        let t = Template::parse("POST{url}{json:/a}{form}").unwrap();
        let input = Input { body: b"b=2&a=x%20y&b=1&b=1", public_url: "https://h/p", query: Some("q=1"), ..input };
        t.feed(&input, |p| out.extend_from_slice(p));
        assert_eq!(out, b"POSThttps://h/p?q=1ax yb1b2", "form fields sorted, decoded, duplicates once");
        assert!(t.uses_url());
        assert_eq!(Template::parse("{timestamp}{json:/signature/token}").unwrap().segments.len(), 2);
        assert_eq!(Template::parse("{{x}}{body}").unwrap().segments[0], Segment::Literal(Bytes::from_static(b"{x}")));
        assert_eq!(Template::parse("{nope}{body}"), Err(TemplateError::UnknownPlaceholder("nope".into())));
        assert_eq!(Template::parse("{body"), Err(TemplateError::Unclosed));
        assert_eq!(Template::parse("{id}"), Err(TemplateError::NoBody));
    }

    #[test]
    fn hubspot_escapes_are_decoded_and_nothing_else() {
        assert_eq!(
            decode_hubspot_escapes("email=jane%40example.com&ref=a%3Ab").as_deref(),
            Some("email=jane@example.com&ref=a:b")
        );
        assert_eq!(decode_hubspot_escapes("a=%2f%2A%20").as_deref(), Some("a=/*%20"), "either case; %20 stays");
        assert_eq!(decode_hubspot_escapes("a=%20&b=%"), None, "none of the listed escapes");
        assert_eq!(decode_hubspot_escapes("plain"), None);
    }

    #[test]
    fn parses_locators() {
        assert_eq!(Locator::parse("header:X-Id").unwrap(), Locator::header("x-id"));
        assert_eq!(Locator::parse("json:/a/b").unwrap(), Locator::json("/a/b"));
        assert_eq!(Locator::parse("signature:t").unwrap(), Locator::SignatureParam("t".into()));
        assert_eq!(Locator::parse("signature:ts").unwrap(), Locator::SignatureParam("ts".into()));
        assert_eq!(
            Locator::parse("digest:json:/type, header:x-a").unwrap(),
            Locator::Digest(vec![Locator::json("/type"), Locator::header("x-a")])
        );
        assert!(matches!(Locator::parse("digest:json:/a,digest:json:/b"), Err(LocatorError::Digest(_))));
        assert!(matches!(Locator::parse("digest:nope"), Err(LocatorError::Digest(_))));
        assert!(matches!(Locator::parse("signature:"), Err(LocatorError::Syntax(_))));
        assert!(matches!(Locator::parse("json:a"), Err(LocatorError::Pointer(_))));
        assert!(matches!(Locator::parse("query:a"), Err(LocatorError::Syntax(_))));
        assert!(matches!(Locator::parse("header:bad name"), Err(LocatorError::HeaderName(_))));
    }
}
