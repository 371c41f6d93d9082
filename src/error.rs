//! The one place where a rejection becomes an HTTP answer (SPEC §3).
//!
//! Every stage returns its own error type; they all convert into [`Rejection`],
//! and [`Rejection::status`], [`Rejection::code`] and [`Rejection::into_response`]
//! are the whole mapping. The unit tests pin every row.

use std::time::Duration;

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::{Either, Full};

use crate::ResBody;
use crate::forward::ForwardError;
use crate::verify::VerifyError;

/// Why the gateway answered a request itself with an error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("no webhook source is configured for this path")]
    UnknownPath,
    #[error("webhooks must be sent with POST")]
    MethodNotAllowed,
    #[error("the verification handshake was refused: wrong mode or verify token")]
    HandshakeRefused,
    #[error("the verification handshake has no challenge to answer")]
    BadHandshake,
    #[error("this client address may not send to this source")]
    Forbidden,
    #[error("too many deliveries for this source; retry later")]
    RateLimited { retry_after: Duration },
    #[error("the body is larger than the configured limit")]
    PayloadTooLarge,
    #[error("the request was not received in time")]
    RequestTimeout,
    #[error("the request body could not be read")]
    BadBody,
    #[error("the delivery could not be verified")]
    Verify(#[from] VerifyError),
    #[error("this delivery is being processed right now; retry later")]
    InFlight { retry_after: Duration },
    #[error("the deduplication store is unavailable; retry later")]
    StoreUnavailable { retry_after: Duration },
    #[error("no route matches this event type")]
    Unrouted,
    #[error("the delivery could not be stored for later delivery; retry later")]
    QueueUnavailable { retry_after: Duration },
    #[error("{0}")]
    Upstream(#[from] ForwardError),
}

/// How long a sender should wait when a broker did not confirm (SPEC §15).
const BROKER_RETRY: Duration = Duration::from_secs(5);

impl Rejection {
    pub fn status(&self) -> StatusCode {
        match self {
            Rejection::UnknownPath | Rejection::Unrouted => StatusCode::NOT_FOUND,
            Rejection::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Rejection::Forbidden | Rejection::HandshakeRefused => StatusCode::FORBIDDEN,
            Rejection::BadHandshake => StatusCode::BAD_REQUEST,
            Rejection::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Rejection::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Rejection::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Rejection::BadBody => StatusCode::BAD_REQUEST,
            Rejection::Verify(e) => match e {
                VerifyError::MalformedSignature | VerifyError::MalformedTimestamp | VerifyError::FieldTooLong => {
                    StatusCode::BAD_REQUEST
                }
                VerifyError::MissingSignature
                | VerifyError::InvalidSignature
                | VerifyError::UnsignedMismatch
                | VerifyError::MissingTimestamp
                | VerifyError::StaleTimestamp => StatusCode::UNAUTHORIZED,
            },
            Rejection::InFlight { .. } => StatusCode::CONFLICT,
            Rejection::StoreUnavailable { .. }
            | Rejection::QueueUnavailable { .. }
            | Rejection::Upstream(ForwardError::Broker(_)) => StatusCode::SERVICE_UNAVAILABLE,
            Rejection::Upstream(ForwardError::Timeout) => StatusCode::GATEWAY_TIMEOUT,
            Rejection::Upstream(ForwardError::Unreachable(_) | ForwardError::Transform(_)) => StatusCode::BAD_GATEWAY,
        }
    }

    /// The `error` field of the JSON body, and the `outcome` metric label.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::UnknownPath => "not_found",
            Rejection::MethodNotAllowed => "method_not_allowed",
            Rejection::Forbidden => "forbidden",
            Rejection::HandshakeRefused => "handshake_refused",
            Rejection::BadHandshake => "bad_handshake",
            Rejection::RateLimited { .. } => "rate_limited",
            Rejection::PayloadTooLarge => "payload_too_large",
            Rejection::RequestTimeout => "request_timeout",
            Rejection::BadBody => "bad_request",
            Rejection::Verify(e) => match e {
                VerifyError::MissingSignature => "missing_signature",
                VerifyError::MalformedSignature => "malformed_signature",
                VerifyError::InvalidSignature => "invalid_signature",
                VerifyError::MalformedTimestamp => "malformed_timestamp",
                VerifyError::MissingTimestamp => "missing_timestamp",
                VerifyError::StaleTimestamp => "stale_timestamp",
                VerifyError::UnsignedMismatch => "unsigned_mismatch",
                VerifyError::FieldTooLong => "field_too_long",
            },
            Rejection::InFlight { .. } => "in_flight",
            Rejection::StoreUnavailable { .. } => "store_unavailable",
            Rejection::Unrouted => "no_route",
            Rejection::QueueUnavailable { .. } => "queue_unavailable",
            Rejection::Upstream(ForwardError::Timeout) => "upstream_timeout",
            Rejection::Upstream(ForwardError::Unreachable(_)) => "upstream_unreachable",
            Rejection::Upstream(ForwardError::Transform(_)) => "transform_failed",
            Rejection::Upstream(ForwardError::Broker(_)) => "broker_unavailable",
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Rejection::RateLimited { retry_after }
            | Rejection::InFlight { retry_after }
            | Rejection::StoreUnavailable { retry_after }
            | Rejection::QueueUnavailable { retry_after } => Some(*retry_after),
            Rejection::Upstream(ForwardError::Broker(_)) => Some(BROKER_RETRY),
            _ => None,
        }
    }

    /// The answer to the sender: status, JSON body, and `Retry-After` where due.
    pub fn into_response(self) -> Response<ResBody> {
        let message = match &self {
            // Upstream details stay in the logs; the sender learns only the code.
            Rejection::Upstream(ForwardError::Unreachable(_)) => "the upstream could not be reached".to_owned(),
            // The program's error may quote the body; it stays in the logs.
            Rejection::Upstream(ForwardError::Transform(_)) => "the route's transform gave no body to send".to_owned(),
            Rejection::Upstream(ForwardError::Broker(_)) => {
                "the message broker did not confirm the delivery; retry later".to_owned()
            }
            other => other.to_string(),
        };
        let body = serde_json::json!({ "error": self.code(), "message": message });
        let mut res = json_response(self.status(), &body);
        if let Some(d) = self.retry_after() {
            // Whole seconds, rounded up, at least 1.
            let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
            res.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        if self == Rejection::MethodNotAllowed {
            // Sources with a GET handshake answer GET too; their 405s are for other methods.
            res.headers_mut().insert(ALLOW, HeaderValue::from_static("POST, HEAD"));
        }
        if self == Rejection::RequestTimeout {
            res.headers_mut().insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        res
    }
}

/// A JSON answer made by the gateway (errors, challenges, acks).
pub fn json_response(status: StatusCode, body: &impl serde::Serialize) -> Response<ResBody> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut res = Response::new(Either::Left(Full::new(Bytes::from(bytes))));
    *res.status_mut() = status;
    res.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn d(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// One row per SPEC §3 line the gateway answers itself.
    #[test]
    fn every_rejection_has_its_status_and_code() {
        let rows: Vec<(Rejection, u16, &str, bool)> = vec![
            (Rejection::UnknownPath, 404, "not_found", false),
            (Rejection::MethodNotAllowed, 405, "method_not_allowed", false),
            (Rejection::Forbidden, 403, "forbidden", false),
            (Rejection::HandshakeRefused, 403, "handshake_refused", false),
            (Rejection::BadHandshake, 400, "bad_handshake", false),
            (Rejection::RateLimited { retry_after: d(1) }, 429, "rate_limited", true),
            (Rejection::PayloadTooLarge, 413, "payload_too_large", false),
            (Rejection::RequestTimeout, 408, "request_timeout", false),
            (Rejection::Verify(VerifyError::MalformedSignature), 400, "malformed_signature", false),
            (Rejection::Verify(VerifyError::MalformedTimestamp), 400, "malformed_timestamp", false),
            (Rejection::Verify(VerifyError::MissingSignature), 401, "missing_signature", false),
            (Rejection::Verify(VerifyError::InvalidSignature), 401, "invalid_signature", false),
            (Rejection::Verify(VerifyError::MissingTimestamp), 401, "missing_timestamp", false),
            (Rejection::Verify(VerifyError::StaleTimestamp), 401, "stale_timestamp", false),
            (Rejection::InFlight { retry_after: d(2) }, 409, "in_flight", true),
            (Rejection::StoreUnavailable { retry_after: d(5) }, 503, "store_unavailable", true),
            (Rejection::Unrouted, 404, "no_route", false),
            (Rejection::QueueUnavailable { retry_after: d(5) }, 503, "queue_unavailable", true),
            (Rejection::Upstream(ForwardError::Unreachable("refused".into())), 502, "upstream_unreachable", false),
            (Rejection::Upstream(ForwardError::Timeout), 504, "upstream_timeout", false),
            (
                Rejection::Upstream(ForwardError::Transform(crate::route::transform::TransformError::Nothing)),
                502,
                "transform_failed",
                false,
            ),
            (Rejection::Upstream(ForwardError::Broker("down".into())), 503, "broker_unavailable", true),
        ];
        for (rej, status, code, retry) in rows {
            assert_eq!(rej.status().as_u16(), status, "{rej:?}");
            assert_eq!(rej.code(), code, "{rej:?}");
            let res = rej.clone().into_response();
            assert_eq!(res.headers().get(CONTENT_TYPE).unwrap(), "application/json");
            assert_eq!(res.headers().contains_key(RETRY_AFTER), retry, "{rej:?}");
        }
    }

    #[tokio::test]
    async fn body_is_json_with_code_and_message_and_no_detail() {
        let res = Rejection::Upstream(ForwardError::Unreachable("10.1.2.3 refused".into())).into_response();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"], "upstream_unreachable");
        assert!(v["message"].as_str().unwrap().len() > 5);
        assert!(!String::from_utf8_lossy(&body).contains("10.1.2.3"));
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let res = Rejection::RateLimited { retry_after: Duration::from_millis(1200) }.into_response();
        assert_eq!(res.headers()[RETRY_AFTER], "2");
        let res = Rejection::RateLimited { retry_after: Duration::from_millis(10) }.into_response();
        assert_eq!(res.headers()[RETRY_AFTER], "1");
    }
}
