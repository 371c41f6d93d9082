//! `GET /deliveries?source=S&outcome=O&id=I&limit=N&cursor=C` (SPEC §6).

use http::{Response, StatusCode};
use serde_json::json;

use super::{paging, param};
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
