//! Provider handshakes and test pings (SPEC §4), answered by the gateway and
//! never forwarded. Only verified deliveries get here: an unsigned challenge
//! was already refused with 401.

use http::StatusCode;
use serde_json::{Value, json};

use crate::ResBody;
use crate::error::json_response;
use crate::verify::{Challenge, Delivery, Key, Verified, Verifier};

/// The body to answer with, if `delivery` is its provider's challenge or ping.
pub fn answer_body(delivery: &mut Delivery<Verified>, verifier: &Verifier) -> Option<Value> {
    match verifier.spec.challenge {
        Challenge::None => None,
        Challenge::Ping(event) => (delivery.event_type() == event).then(|| json!({ "ok": true })),
        Challenge::SlackUrlVerification => {
            let v = delivery.json()?;
            (v.get("type")? == "url_verification")
                .then(|| json!({ "challenge": v.get("challenge").cloned().unwrap_or(Value::Null) }))
        }
        Challenge::TribeTest => {
            let v = delivery.json()?;
            (v.get("type")? == "TEST").then(|| {
                json!({
                    "type": "TEST",
                    "status": "SUCCEEDED",
                    "data": { "challenge": v.pointer("/data/challenge").cloned().unwrap_or(Value::Null) },
                })
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
            Some(json!({ "plainToken": plain, "encryptedToken": hex::encode(mac.as_slice()) }))
        }
    }
}

/// The 200 answer for a challenge, if this is one.
pub fn answer(delivery: &mut Delivery<Verified>, verifier: &Verifier) -> Option<http::Response<ResBody>> {
    answer_body(delivery, verifier).map(|body| json_response(StatusCode::OK, &body))
}
