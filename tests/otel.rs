//! SPEC §17 traces against a real OTLP/HTTP receiver (an HTTP server on
//! loopback whose requests are decoded as OTLP protobuf): a delivery's span
//! with verify/dedupe/forward children in the sender's trace, `traceparent`
//! toward the app, and a queue attempt's span linked to the enqueue.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;

const SENDER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// Reads OTLP requests from `receiver` until spans named `names` all arrived.
async fn spans(receiver: &mut Upstream, names: &[&str]) -> HashMap<String, Span> {
    let mut got = HashMap::new();
    while !names.iter().all(|n| got.contains_key(*n)) {
        let r = tokio::time::timeout(Duration::from_secs(10), receiver.next()).await.expect("spans are exported");
        assert_eq!((r.method.as_str(), r.uri.as_str()), ("POST", "/v1/traces"));
        assert_eq!(r.headers["content-type"], "application/x-protobuf");
        let req = ExportTraceServiceRequest::decode(r.body.as_ref()).expect("OTLP protobuf");
        let rs = &req.resource_spans[0];
        let service = &rs.resource.as_ref().unwrap().attributes[0];
        assert_eq!(service.key, "service.name");
        assert_eq!(service.value.as_ref().unwrap().value, Some(any_value::Value::StringValue("edge".into())));
        for s in &rs.scope_spans[0].spans {
            got.insert(s.name.clone(), s.clone());
        }
    }
    got
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes.iter().find(|a| a.key == key).and_then(|a| match &a.value.as_ref()?.value {
        Some(any_value::Value::StringValue(s)) => Some(s.clone()),
        _ => None,
    })
}

/// `(trace id, span id)` in hex from a `traceparent` value.
fn parent_of(value: &str) -> (String, String) {
    let parts: Vec<&str> = value.split('-').collect();
    assert_eq!((parts.len(), parts[0], parts[3]), (4, "00", "01"), "{value}");
    (parts[1].to_owned(), parts[2].to_owned())
}

#[tokio::test]
async fn a_delivery_is_a_span_in_the_senders_trace_with_its_stages_and_the_app_gets_traceparent() {
    let mut receiver = spawn_upstream(ok_upstream()).await;
    let mut app = spawn_upstream(ok_upstream()).await;
    let top = format!("[otel]\nendpoint = \"http://{}\"\nservice_name = \"edge\"", receiver.addr);
    let gw = spawn_gateway(&one_route_config(&top, &format!("http://{}/in", app.addr), "")).await;
    let body = tampa_body("tr-1", "order.created");
    let mut headers = gw.sign("tampa", &body, None, None);
    headers.push(("traceparent".into(), SENDER.into()));
    let r = send(&gw.url("/webhooks/tampa"), "POST", &headers, body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let got = app.next().await;
    let (trace, forward_id) = parent_of(got.headers["traceparent"].to_str().unwrap());
    assert_eq!(trace, "4bf92f3577b34da6a3ce929d0e0e4736", "the sender's trace goes on");
    assert_ne!(forward_id, "00f067aa0ba902b7");

    let s = spans(&mut receiver, &["delivery", "verify", "dedupe", "forward"]).await;
    let root = &s["delivery"];
    for span in s.values() {
        assert_eq!(hex::encode(&span.trace_id), trace, "{}", span.name);
        assert!(span.end_time_unix_nano >= span.start_time_unix_nano, "{}", span.name);
    }
    assert_eq!(hex::encode(&root.parent_span_id), "00f067aa0ba902b7", "a child of the sender's span");
    assert_eq!(root.kind, 2, "server");
    for child in ["verify", "dedupe", "forward"] {
        assert_eq!(s[child].parent_span_id, root.span_id, "{child}");
    }
    assert_eq!(hex::encode(&s["forward"].span_id), forward_id, "the app's traceparent names the forward span");
    assert_eq!(s["forward"].kind, 3, "client");
    assert_eq!(attribute(root, "hookgate.delivery_id").as_deref(), Some("tr-1"));
    assert_eq!(attribute(root, "hookgate.outcome").as_deref(), Some("forwarded"));
    assert_eq!(attribute(root, "http.response.status_code").as_deref(), Some("200"));
    gw.shutdown().await;
}

#[tokio::test]
async fn a_queue_attempt_is_a_span_linked_to_the_delivery_and_a_bad_traceparent_starts_a_trace() {
    let mut receiver = spawn_upstream(ok_upstream()).await;
    let mut app = spawn_upstream(ok_upstream()).await;
    let dir = tempfile::tempdir().unwrap();
    let top = format!(
        "[server]\nshutdown_grace = \"1s\"\n[queue]\npath = \"{}\"\n[otel]\nendpoint = \"http://{}/\"\nservice_name = \"edge\"",
        dir.path().display(),
        receiver.addr
    );
    let gw = spawn_gateway(&one_route_config(&top, &format!("http://{}/in", app.addr), "delivery = \"queue\"")).await;
    let body = tampa_body("tr-q", "order.created");
    let mut headers = gw.sign("tampa", &body, None, None);
    headers.push(("traceparent".into(), "00-00000000000000000000000000000000-00f067aa0ba902b7-01".into()));
    let r = send(&gw.url("/webhooks/tampa"), "POST", &headers, body).await;
    assert_eq!(r.status, 202, "{}", r.text());
    let got = app.next().await;
    let (trace, attempt_id) = parent_of(got.headers["traceparent"].to_str().unwrap());
    assert_ne!(trace, "00000000000000000000000000000000", "an invalid traceparent is not continued");

    let s = spans(&mut receiver, &["delivery", "verify", "dedupe", "enqueue", "attempt"]).await;
    let (root, enqueue, attempt) = (&s["delivery"], &s["enqueue"], &s["attempt"]);
    assert!(root.parent_span_id.is_empty(), "a new trace's root");
    assert_eq!(hex::encode(&root.trace_id), trace);
    assert_eq!(enqueue.parent_span_id, root.span_id);
    assert_eq!(hex::encode(&attempt.span_id), attempt_id, "the app's traceparent names the attempt");
    assert_eq!(attempt.parent_span_id, enqueue.span_id);
    assert_eq!(attempt.links.len(), 1);
    assert_eq!((&attempt.links[0].trace_id, &attempt.links[0].span_id), (&enqueue.trace_id, &enqueue.span_id));
    assert_eq!(attribute(attempt, "hookgate.attempt").as_deref(), Some("1"));
    assert_eq!(attribute(attempt, "http.response.status_code").as_deref(), Some("200"));
    assert_eq!(attribute(root, "hookgate.outcome").as_deref(), Some("queued"));
    gw.shutdown().await;
}
