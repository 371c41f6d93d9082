//! The admin listener: `/healthz` (the process serves), `/readyz` (config
//! loaded and the dedupe store answers), `/metrics` (Prometheus text).

use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use serde_json::json;

use crate::ResBody;
use crate::app::App;
use crate::error::json_response;

/// How long `/readyz` waits for the store.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn handle(app: &App, req: Request<Incoming>) -> Response<ResBody> {
    if req.method() != http::Method::GET && req.method() != http::Method::HEAD {
        return json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({"error": "method_not_allowed", "message": "use GET"}),
        );
    }
    match req.uri().path() {
        "/healthz" => json_response(StatusCode::OK, &json!({ "status": "ok" })),
        "/readyz" => {
            let store = app.current().store.clone();
            match tokio::time::timeout(READY_TIMEOUT, store.ping()).await {
                Ok(Ok(())) => json_response(StatusCode::OK, &json!({ "status": "ready" })),
                Ok(Err(e)) => not_ready(&e.to_string()),
                Err(_) => not_ready("dedupe store did not answer in time"),
            }
        }
        "/metrics" => {
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
        _ => json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": "not_found", "message": "try /healthz, /readyz or /metrics"}),
        ),
    }
}

fn not_ready(why: &str) -> Response<ResBody> {
    json_response(StatusCode::SERVICE_UNAVAILABLE, &json!({ "error": "not_ready", "message": why }))
}
