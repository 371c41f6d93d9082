//! Signed-payload templates (`"{timestamp}.{body}"`) and field locators
//! (`header:NAME`, `json:/pointer`).
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
}

/// Compiled `signed_payload`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub segments: Vec<Segment>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    #[error("unknown placeholder {{{0}}} (use {{body}}, {{timestamp}} or {{id}})")]
    UnknownPlaceholder(String),
    #[error("unclosed '{{'")]
    Unclosed,
    #[error("the template must contain {{body}}")]
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
                        _ => return Err(TemplateError::UnknownPlaceholder(name)),
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
        if !segments.contains(&Segment::Body) {
            return Err(TemplateError::NoBody);
        }
        Ok(Template { segments })
    }

    /// Feeds the payload to `sink` piece by piece.
    pub fn feed(&self, body: &[u8], timestamp: &[u8], id: &[u8], mut sink: impl FnMut(&[u8])) {
        for seg in &self.segments {
            match seg {
                Segment::Literal(b) => sink(b),
                Segment::Body => sink(body),
                Segment::Timestamp => sink(timestamp),
                Segment::Id => sink(id),
            }
        }
    }
}

/// Where a field (timestamp, ID, event type) is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Locator {
    Header(HeaderName),
    /// RFC 6901 pointer into the JSON body.
    Json(String),
    /// The `t=` parameter of a Stripe-style signature header.
    SignatureParam,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LocatorError {
    #[error("expected \"header:NAME\", \"json:/pointer\" or \"signature:t\", got {0:?}")]
    Syntax(String),
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
        } else if text == "signature:t" {
            Ok(Locator::SignatureParam)
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
        t.feed(b"B", b"T", b"I", |p| out.extend_from_slice(p));
        assert_eq!(out, b"v0:T:B");
        assert_eq!(Template::parse("{{x}}{body}").unwrap().segments[0], Segment::Literal(Bytes::from_static(b"{x}")));
        assert_eq!(Template::parse("{nope}{body}"), Err(TemplateError::UnknownPlaceholder("nope".into())));
        assert_eq!(Template::parse("{body"), Err(TemplateError::Unclosed));
        assert_eq!(Template::parse("{id}"), Err(TemplateError::NoBody));
    }

    #[test]
    fn parses_locators() {
        assert_eq!(Locator::parse("header:X-Id").unwrap(), Locator::header("x-id"));
        assert_eq!(Locator::parse("json:/a/b").unwrap(), Locator::json("/a/b"));
        assert_eq!(Locator::parse("signature:t").unwrap(), Locator::SignatureParam);
        assert!(matches!(Locator::parse("json:a"), Err(LocatorError::Pointer(_))));
        assert!(matches!(Locator::parse("query:a"), Err(LocatorError::Syntax(_))));
        assert!(matches!(Locator::parse("header:bad name"), Err(LocatorError::HeaderName(_))));
    }
}
