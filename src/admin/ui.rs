//! `GET /ui`: one self-contained page (HTML, CSS and JS in one file, embedded
//! in the binary; no external assets) that reads the admin API.

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::{Either, Full};

use crate::ResBody;

const PAGE: &str = include_str!("ui/index.html");

pub fn page(status: StatusCode) -> Response<ResBody> {
    let mut res = Response::new(Either::Left(Full::new(Bytes::from_static(PAGE.as_bytes()))));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:",
        ),
    );
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    res
}
