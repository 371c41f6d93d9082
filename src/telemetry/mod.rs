//! What hookgate tells about itself beyond the log line and `/metrics`
//! (SPEC §17): the in-process series behind `GET /stats` and the dashboard's
//! charts ([`stats`]), alerts to a chat or an HTTP endpoint ([`alerts`]), and
//! OpenTelemetry traces ([`otel`]).
//! The pipeline's `Record` stays the one place a delivery's facts are
//! gathered; these read what it and the queue worker report.

pub mod alerts;
pub mod otel;
pub mod stats;
