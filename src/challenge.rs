//! Provider handshakes and test pings (SPEC §4, §9), answered by the gateway
//! and never forwarded.
//!
//! POST challenges are only looked at after verification: an unsigned one was
//! already refused with 401. GET handshakes (Meta, Dropbox) carry no signature;
//! Meta's is authenticated by the source's `verify_token`, Dropbox's only echoes
//! text back (as `text/plain` with `nosniff`, so it cannot be read as a page).

use bytes::Bytes;
use http::header::{CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};
use http::{HeaderValue, StatusCode, Uri};
use http_body_util::{Either, Full};
use serde_json::{Value, json};

use crate::ResBody;
use crate::error::{Rejection, json_response};
use crate::verify::{Challenge, Delivery, Key, Verified, Verifier, keys};

/// What a challenge is answered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 200 with a JSON body.
    Json(Value),
    /// 200 with a `text/plain` body.
    Text(String),
    /// 204, no body.
    NoContent,
    /// 200, empty body (Slack's `ssl_check`, HEAD probes).
    Empty,
}

/// The answer, if `delivery` is its provider's challenge or ping.
pub fn answer_for(delivery: &mut Delivery<Verified>, verifier: &Verifier) -> Option<Answer> {
    match &verifier.spec.challenge {
        Challenge::None | Challenge::MetaSubscribe | Challenge::DropboxChallenge | Challenge::MsGraphValidation => None,
        Challenge::Ping(event) => (delivery.event_type() == event).then(|| Answer::Json(json!({ "ok": true }))),
        Challenge::SlackUrlVerification => {
            // Slack checks the certificate with a signed form POST `ssl_check=1`;
            // Bolt answers it 200 with an empty body and tells the app nothing.
            if delivery.body.first() != Some(&b'{')
                && form_urlencoded::parse(&delivery.body).any(|(k, v)| k == "ssl_check" && v == "1")
            {
                return Some(Answer::Empty);
            }
            let v = delivery.json()?;
            (v.get("type")? == "url_verification")
                .then(|| Answer::Json(json!({ "challenge": v.get("challenge").cloned().unwrap_or(Value::Null) })))
        }
        Challenge::TribeTest => {
            let v = delivery.json()?;
            (v.get("type")? == "TEST").then(|| {
                Answer::Json(json!({
                    "type": "TEST",
                    "status": "SUCCEEDED",
                    "data": { "challenge": v.pointer("/data/challenge").cloned().unwrap_or(Value::Null) },
                }))
            })
        }
        Challenge::ZoomUrlValidation => {
            let index = delivery.secret_index();
            let v = delivery.json()?;
            if v.get("event")? != "endpoint.url_validation" {
                return None;
            }
            let plain = v.pointer("/payload/plainToken")?.as_str()?.to_owned();
            // Zoom's key is the secret token; HMAC-SHA256 with the secret that verified.
            let key = match verifier.keys.get(index)? {
                k @ Key::Sha256(_) => k,
                _ => return None,
            };
            let mac = key.mac(|feed| feed(plain.as_bytes()));
            Some(Answer::Json(json!({ "plainToken": plain, "encryptedToken": hex::encode(mac.as_slice()) })))
        }
        Challenge::DiscordPing => {
            (delivery.json()?.get("type")?.as_u64()? == 1).then(|| Answer::Json(json!({ "type": 1 })))
        }
        Challenge::DiscordEventsPing => (delivery.json()?.get("type")?.as_u64()? == 0).then_some(Answer::NoContent),
        Challenge::TwitchVerification => {
            let kind = delivery.head.headers.get("twitch-eventsub-message-type")?;
            if kind.as_bytes() != b"webhook_callback_verification" {
                return None;
            }
            Some(Answer::Text(delivery.json()?.get("challenge")?.as_str()?.to_owned()))
        }
    }
}

/// The answer for a POST challenge, if this is one.
pub fn answer(delivery: &mut Delivery<Verified>, verifier: &Verifier) -> Option<http::Response<ResBody>> {
    answer_for(delivery, verifier).map(into_response)
}

/// Microsoft Graph's subscription validation: a POST with `?validationToken=T`
/// (no body to verify), answered by [`answer_get`] before verification.
pub fn is_validation(uri: &Uri, verifier: &Verifier) -> bool {
    verifier.spec.challenge == Challenge::MsGraphValidation
        && uri.query().is_some_and(|q| form_urlencoded::parse(q.as_bytes()).any(|(k, _)| k == "validationToken"))
}

/// A GET handshake (only for sources whose challenge [`Challenge::answers_get`]),
/// or Microsoft Graph's validation POST ([`is_validation`]).
pub fn answer_get(uri: &Uri, verifier: &Verifier) -> Result<Answer, Rejection> {
    let query = uri.query().unwrap_or("");
    let param = |name: &str| form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v);
    match verifier.spec.challenge {
        Challenge::MetaSubscribe => {
            let mode_ok = param("hub.mode").is_some_and(|m| m == "subscribe");
            let token = param("hub.verify_token").unwrap_or_default();
            // Validation requires verify_token for this challenge, so it is never empty here.
            let token_ok =
                !verifier.verify_token.is_empty() && keys::ct_eq(token.as_bytes(), verifier.verify_token.as_bytes());
            if !(mode_ok && token_ok) {
                return Err(Rejection::HandshakeRefused);
            }
            param("hub.challenge").map(|c| Answer::Text(c.into_owned())).ok_or(Rejection::BadHandshake)
        }
        Challenge::DropboxChallenge => {
            param("challenge").map(|c| Answer::Text(c.into_owned())).ok_or(Rejection::BadHandshake)
        }
        // Echoed as `text/plain` with `nosniff`, so it cannot be read as a page.
        Challenge::MsGraphValidation => {
            param("validationToken").map(|c| Answer::Text(c.into_owned())).ok_or(Rejection::BadHandshake)
        }
        _ => Err(Rejection::MethodNotAllowed),
    }
}

pub fn into_response(answer: Answer) -> http::Response<ResBody> {
    match answer {
        Answer::Json(body) => json_response(StatusCode::OK, &body),
        Answer::Text(text) => {
            let mut res = http::Response::new(Either::Left(Full::new(Bytes::from(text))));
            res.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
            res.headers_mut().insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
            res
        }
        Answer::NoContent => {
            let mut res = http::Response::new(Either::Left(Full::new(Bytes::new())));
            *res.status_mut() = StatusCode::NO_CONTENT;
            res
        }
        Answer::Empty => http::Response::new(Either::Left(Full::new(Bytes::new()))),
    }
}
