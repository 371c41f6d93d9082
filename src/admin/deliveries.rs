//! `GET /deliveries?source=S&outcome=O&id=I&limit=N&cursor=C` (SPEC §6),
//! `GET /deliveries/{entry}` and `POST /deliveries/{entry}/replay` (SPEC §17).

use http::{Response, StatusCode};
use serde_json::json;

use super::{paging, param};
use std::sync::Arc;

use crate::ResBody;
use crate::app::App;
use crate::delivery_log::Filter;
use crate::error::json_response;

pub fn list(app: &App, query: &str) -> Response<ResBody> {
    let (limit, cursor) = match paging(query) {
        Ok(p) => p,
        Err(res) => return *res,
    };
    let cursor = match cursor.map(|c| c.parse::<u64>()).transpose() {
        Ok(c) => c,
        Err(_) => return super::error(StatusCode::BAD_REQUEST, "bad_request", "cursor must be a previous page's next"),
    };
    let (source, outcome, id) = (param(query, "source"), param(query, "outcome"), param(query, "id"));
    let filter = Filter { source: source.as_deref(), outcome: outcome.as_deref(), id: id.as_deref() };
    let (items, next) = app.deliveries.page(&filter, limit, cursor);
    json_response(StatusCode::OK, &json!({ "items": items, "next": next.map(|n| n.to_string()) }))
}

/// `{entry}` as the log numbers it.
fn entry_number(entry: &str) -> Result<u64, Box<Response<ResBody>>> {
    entry.parse::<u64>().map_err(|_| {
        Box::new(super::error(
            StatusCode::NOT_FOUND,
            "not_found",
            "an entry is the number a /deliveries item shows as `entry`",
        ))
    })
}

/// `GET /deliveries/{entry}`: the item, with `headers` and `body` (or
/// `body_base64`) when its request was captured.
pub fn one(app: &App, entry: &str) -> Response<ResBody> {
    let seq = match entry_number(entry) {
        Ok(n) => n,
        Err(res) => return *res,
    };
    match app.deliveries.get(seq) {
        Some((_, shown)) => json_response(StatusCode::OK, &shown),
        None => {
            super::error(StatusCode::NOT_FOUND, "not_found", "no such entry in the delivery log (it may have left it)")
        }
    }
}

/// `POST /deliveries/{entry}/replay`: 200 when every route took it, 502 when one did not.
pub async fn replay(app: &Arc<App>, entry: &str) -> Response<ResBody> {
    let seq = match entry_number(entry) {
        Ok(n) => n,
        Err(res) => return *res,
    };
    match crate::pipeline::replay(app, seq).await {
        Ok((body, true)) => json_response(StatusCode::OK, &body),
        Ok((body, false)) => json_response(StatusCode::BAD_GATEWAY, &body),
        Err(e) => super::error(e.status(), e.code(), &e.to_string()),
    }
}
