//! OpenTelemetry traces (SPEC §17): with `[otel] endpoint`, one span per
//! delivery (`delivery`, with `verify`, `dedupe` and `forward` or `enqueue`
//! as children) and one per queue attempt (`attempt`, a child of and linked
//! to the delivery's `enqueue` span), exported over OTLP/HTTP in protobuf
//! (`POST {endpoint}/v1/traces`) with the official `opentelemetry-proto`
//! message types. The request to the upstream carries a W3C `traceparent`
//! naming its `forward` (or `attempt`) span; a sender's own `traceparent`
//! makes the delivery's span a child of the sender's, in the sender's trace.
//!
//! Without `[otel]` nothing here runs: the pipeline checks one `Option`.
//! With it, spans are queued to one exporter task (bounded; when it is full,
//! spans are dropped and counted in a WARN line), sent in batches every
//! [`FLUSH_EVERY`] or [`BATCH`] spans, each batch tried twice.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderValue};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span, status};
use prost::Message as _;
use tokio::sync::mpsc;

/// Spans sent in one request at most.
const BATCH: usize = 512;
/// How long a span waits for its batch at most.
const FLUSH_EVERY: Duration = Duration::from_millis(500);
/// Spans waiting for the exporter at most.
const QUEUE: usize = 16_384;

/// `[otel]`, compiled.
#[derive(Debug, Clone)]
pub struct OtelConfig {
    pub endpoint: super::Endpoint,
    pub service_name: String,
}

impl PartialEq for OtelConfig {
    fn eq(&self, other: &Self) -> bool {
        self.endpoint.target() == other.endpoint.target() && self.service_name == other.service_name
    }
}

impl OtelConfig {
    /// `endpoint` is the collector's base URL (`http://collector:4318`);
    /// spans go to its `/v1/traces` unless the URL names that path already.
    pub fn new(endpoint: &str, service_name: &str, timeout: Duration) -> Result<Self, String> {
        let usage = "use the collector's OTLP/HTTP base URL, e.g. http://collector:4318 (no query)";
        if endpoint.contains('?') {
            return Err(format!("a query in the endpoint; {usage}"));
        }
        let base = endpoint.trim_end_matches('/');
        let url = if base.ends_with("/v1/traces") { base.to_owned() } else { format!("{base}/v1/traces") };
        let endpoint = super::Endpoint::new(endpoint, &url, timeout, usage)?;
        Ok(OtelConfig { endpoint, service_name: service_name.to_owned() })
    }
}

pub use span::SpanKind;

pub type TraceId = [u8; 16];
pub type SpanId = [u8; 8];

/// A W3C trace context: `00-<trace id>-<parent id>-<flags>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    pub trace: TraceId,
    pub span: SpanId,
}

impl Context {
    /// Reads a `traceparent` value; `None` unless it is a valid version-00 one.
    pub fn parse(value: &[u8]) -> Option<Context> {
        let text = std::str::from_utf8(value).ok()?.trim();
        let mut parts = text.split('-');
        let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if version != "00" || parts.next().is_some() || flags.len() != 2 || hex::decode(flags).is_err() {
            return None;
        }
        let (mut t, mut s) = ([0u8; 16], [0u8; 8]);
        hex::decode_to_slice(trace, &mut t).ok()?;
        hex::decode_to_slice(span, &mut s).ok()?;
        // All-zero IDs are invalid (W3C Trace Context §3.2.2.3/4).
        (t != [0; 16] && s != [0; 8]).then_some(Context { trace: t, span: s })
    }

    /// The `traceparent` value naming this span (sampled).
    pub fn header(&self) -> HeaderValue {
        let text = format!("00-{}-{}-01", hex::encode(self.trace), hex::encode(self.span));
        HeaderValue::from_str(&text)
            .unwrap_or(HeaderValue::from_static("00-00000000000000000000000000000000-0000000000000000-00"))
    }
}

/// One finished span.
#[derive(Debug, Clone)]
pub struct Finished {
    pub trace: TraceId,
    pub id: SpanId,
    pub parent: Option<SpanId>,
    pub name: &'static str,
    /// Server (the delivery), client (forward, attempt) or internal.
    pub kind: span::SpanKind,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Vec<(&'static str, String)>,
    pub links: Vec<Context>,
    pub error: Option<String>,
}

/// A delivery's trace while it is handled: its root span's context and
/// start, and its children so far (sequential stages).
#[derive(Debug)]
pub struct Trace {
    pub root: Context,
    /// The sender's span, when it sent a `traceparent`.
    pub parent: Option<SpanId>,
    pub start: SystemTime,
    /// Where the next stage starts.
    mark: SystemTime,
    pub children: Vec<Finished>,
    /// The `forward`/`enqueue` span's ID, made before it runs (it goes upstream in `traceparent`).
    pub next_child: SpanId,
}

impl Trace {
    /// A stage that ended now, started where the last one ended.
    pub fn stage(&mut self, name: &'static str, kind: span::SpanKind, error: Option<String>) -> SpanId {
        let now = SystemTime::now();
        let id = std::mem::replace(&mut self.next_child, new_span_id());
        self.children.push(Finished {
            trace: self.root.trace,
            id,
            parent: Some(self.root.span),
            name,
            kind,
            start: self.mark,
            end: now,
            attributes: Vec::new(),
            links: Vec::new(),
            error,
        });
        self.mark = now;
        id
    }

    /// The context the upstream request carries: the coming stage's span.
    pub fn upstream(&self) -> Context {
        Context { trace: self.root.trace, span: self.next_child }
    }
}

/// The exporter's handle: where finished spans go.
pub struct Otel {
    tx: mpsc::Sender<Finished>,
    dropped: AtomicU64,
}

impl Otel {
    /// Starts the exporter task on the current runtime.
    pub fn start(config: &OtelConfig) -> Arc<Otel> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let otel = Arc::new(Otel { tx, dropped: AtomicU64::new(0) });
        tokio::spawn(export(config.clone(), rx, otel.clone()));
        otel
    }

    /// A new delivery's trace: in the sender's trace when `headers` carry a valid `traceparent`.
    pub fn begin(&self, headers: &HeaderMap) -> Trace {
        let sender = headers.get("traceparent").and_then(|v| Context::parse(v.as_bytes()));
        let trace = sender.map_or_else(new_trace_id, |c| c.trace);
        let now = SystemTime::now();
        Trace {
            root: Context { trace, span: new_span_id() },
            parent: sender.map(|c| c.span),
            start: now,
            mark: now,
            children: Vec::new(),
            next_child: new_span_id(),
        }
    }

    /// Ends `trace`'s root span (`delivery`) with `attributes` and queues it with its children.
    pub fn finish(&self, mut trace: Trace, attributes: Vec<(&'static str, String)>, error: Option<String>) {
        let root = Finished {
            trace: trace.root.trace,
            id: trace.root.span,
            parent: trace.parent,
            name: "delivery",
            kind: span::SpanKind::Server,
            start: trace.start,
            end: SystemTime::now(),
            attributes,
            links: Vec::new(),
            error,
        };
        self.send(root);
        for child in trace.children.drain(..) {
            self.send(child);
        }
    }

    /// Queues one finished span (dropped, and counted, when the exporter is behind).
    pub fn send(&self, span: Finished) {
        if self.tx.try_send(span).is_err() {
            self.dropped.fetch_add(1, Relaxed);
        }
    }
}

/// A random trace ID (never all zero).
pub fn new_trace_id() -> TraceId {
    let mut t = [0u8; 16];
    let _ = getrandom::fill(&mut t);
    t[0] |= 1;
    t
}

/// A random span ID (never all zero).
pub fn new_span_id() -> SpanId {
    let mut s = [0u8; 8];
    let _ = getrandom::fill(&mut s);
    s[7] |= 1;
    s
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

fn kv(key: &str, value: String) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value)) }),
        ..KeyValue::default()
    }
}

/// The OTLP message for `spans`.
pub fn request(service_name: &str, spans: Vec<Finished>) -> ExportTraceServiceRequest {
    let spans = spans
        .into_iter()
        .map(|s| Span {
            trace_id: s.trace.to_vec(),
            span_id: s.id.to_vec(),
            parent_span_id: s.parent.map(|p| p.to_vec()).unwrap_or_default(),
            flags: 1,
            name: s.name.to_owned(),
            kind: s.kind as i32,
            start_time_unix_nano: nanos(s.start),
            end_time_unix_nano: nanos(s.end),
            attributes: s.attributes.into_iter().map(|(k, v)| kv(k, v)).collect(),
            links: s
                .links
                .iter()
                .map(|l| span::Link {
                    trace_id: l.trace.to_vec(),
                    span_id: l.span.to_vec(),
                    flags: 1,
                    ..Default::default()
                })
                .collect(),
            status: Some(match s.error {
                Some(message) => Status { message, code: status::StatusCode::Error as i32 },
                None => Status { message: String::new(), code: status::StatusCode::Unset as i32 },
            }),
            ..Span::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", service_name.to_owned())],
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "hookgate".to_owned(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    ..InstrumentationScope::default()
                }),
                spans,
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    }
}

/// The exporter task: batches, encodes and POSTs until every sender is gone.
async fn export(config: OtelConfig, mut rx: mpsc::Receiver<Finished>, otel: Arc<Otel>) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let first = match rx.recv().await {
            Some(s) => s,
            None => return,
        };
        batch.push(first);
        let deadline = tokio::time::Instant::now() + FLUSH_EVERY;
        while batch.len() < BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(s)) => batch.push(s),
                Ok(None) | Err(_) => break,
            }
        }
        let n = batch.len();
        let body = bytes::Bytes::from(request(&config.service_name, std::mem::take(&mut batch)).encode_to_vec());
        let shown = &config.endpoint.shown;
        // Tried twice: a pooled connection the collector closed fails the first.
        let mut sent = config.endpoint.post("application/x-protobuf", body.clone()).await;
        if sent.is_err() {
            sent = config.endpoint.post("application/x-protobuf", body).await;
        }
        if let Err(e) = sent {
            tracing::warn!(collector = %shown, spans = n, error = %e, "OpenTelemetry spans could not be exported");
        }
        let dropped = otel.dropped.swap(0, Relaxed);
        if dropped > 0 {
            tracing::warn!(collector = %shown, dropped, "OpenTelemetry spans dropped: the exporter is behind");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_read_and_written_as_w3c_says() {
        let v = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let c = Context::parse(v).unwrap();
        assert_eq!(hex::encode(c.trace), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(c.header(), HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
        for bad in [
            &b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"[..],
            b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-zz",
            b"garbage",
            &[0xff, 0xfe][..],
        ] {
            assert_eq!(Context::parse(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn spans_encode_as_otlp_and_decode_back() {
        let mut t = Trace {
            root: Context { trace: new_trace_id(), span: new_span_id() },
            parent: None,
            start: SystemTime::now(),
            mark: SystemTime::now(),
            children: Vec::new(),
            next_child: new_span_id(),
        };
        let planned = t.upstream();
        let id = t.stage("forward", span::SpanKind::Client, Some("upstream answered 503".into()));
        assert_eq!(id, planned.span);
        let req = request("hookgate-test", t.children);
        let back = ExportTraceServiceRequest::decode(req.encode_to_vec().as_slice()).unwrap();
        let span = &back.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(span.name, "forward");
        assert_eq!(span.span_id, planned.span.to_vec());
        assert_eq!(span.parent_span_id, t.root.span.to_vec());
        assert_eq!(span.status.as_ref().unwrap().code, status::StatusCode::Error as i32);
        let service = &back.resource_spans[0].resource.as_ref().unwrap().attributes[0];
        assert_eq!(service.key, "service.name");
    }

    #[test]
    fn endpoints_are_checked() {
        let c = OtelConfig::new("http://collector:4318", "hookgate", Duration::from_secs(5)).unwrap();
        assert_eq!(c.endpoint.target(), "http://collector:4318/v1/traces");
        let c = OtelConfig::new("https://otel.example/v1/traces/", "hookgate", Duration::from_secs(5)).unwrap();
        assert_eq!(c.endpoint.target(), "https://otel.example/v1/traces");
        for bad in ["collector:4318", "grpc://c:4317", "http://u:p@c:4318", "http://c:4318/?k=v"] {
            assert!(OtelConfig::new(bad, "hookgate", Duration::from_secs(5)).is_err(), "{bad}");
        }
    }
}
