//! What hookgate tells about itself beyond the log line and `/metrics`
//! (SPEC §17): the in-process series behind `GET /stats` and the dashboard's
//! charts ([`stats`]), alerts to a chat or an HTTP endpoint ([`alerts`]), and
//! OpenTelemetry traces ([`otel`]).
//! The pipeline's `Record` stays the one place a delivery's facts are
//! gathered; these read what it and the queue worker report.

pub mod alerts;
pub mod otel;
pub mod stats;

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue};

use crate::route::Route;

/// An http(s) URL hookgate POSTs its own messages to (an alert destination,
/// the OTLP collector), sent through the upstream pool like a route.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Scheme and host: what logs and errors show (a URL's path or query can
    /// be its secret, as a Slack webhook's is).
    pub shown: String,
    route: Arc<Route>,
}

impl Endpoint {
    /// Checks `url` (http or https, a host, no credentials) and sends to
    /// `target` (`url` itself, or a URL made from it). Errors quote neither.
    pub fn new(url: &str, target: &str, timeout: Duration, usage: &str) -> Result<Endpoint, String> {
        let parsed = url::Url::parse(url).map_err(|e| format!("not a URL ({e}); {usage}"))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none_or(str::is_empty) {
            return Err(format!("scheme {:?} with host {:?}: {usage}", parsed.scheme(), parsed.host_str()));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(format!("credentials in the URL are not sent; {usage}"));
        }
        let route = Route::new(Vec::new(), target, timeout, None).map_err(|_| format!("invalid URL; {usage}"))?;
        let shown = format!("{}://{}", parsed.scheme(), parsed.host_str().unwrap_or_default());
        Ok(Endpoint { shown, route: Arc::new(route) })
    }

    /// The URL it sends to, as configured (for comparing configs).
    pub fn target(&self) -> &str {
        &self.route.upstream
    }

    /// One POST of `body`; `Err` says why it was not taken (a non-2xx answer or the transport's error).
    pub async fn post(&self, content_type: &'static str, body: bytes::Bytes) -> Result<(), String> {
        let mut headers = HeaderMap::with_capacity(2);
        headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers.insert(http::header::USER_AGENT, HeaderValue::from_static("hookgate"));
        match crate::forward::send(&self.route, self.route.path.clone(), headers, body).await {
            Ok(res) if res.status().is_success() => Ok(()),
            Ok(res) => Err(format!("answered {}", res.status())),
            Err(e) => Err(e.to_string()),
        }
    }
}
