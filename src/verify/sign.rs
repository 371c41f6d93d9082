//! Producing the headers a real sender would send (`hookgate sign`). Used by the
//! CLI and by tests; it shares the template and key code with verification, so
//! what it signs is exactly what the gateway checks.

use std::time::SystemTime;

use super::{Key, Locator, Scheme, SignatureFormat, Verifier, body_hash};

/// What to sign.
#[derive(Debug, Clone, Copy)]
pub struct SignRequest<'a> {
    pub body: &'a [u8],
    /// Delivery ID for header-borne IDs; a random one when `None`.
    pub id: Option<&'a str>,
    /// Event type for header-borne types; omitted when `None`.
    pub event_type: Option<&'a str>,
    /// Exact timestamp text for header-borne timestamps; `now` rendered when `None`.
    pub timestamp: Option<&'a str>,
    pub now: SystemTime,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignError {
    #[error("the source has no usable secret")]
    NoSecret,
    #[error("the source has no signature header configured")]
    NoSignatureHeader,
    #[error("token secrets must be valid header text")]
    TokenNotText,
}

/// A header line to send, plus notes for the human (printed as comments).
#[derive(Debug, Default)]
pub struct Signed {
    pub headers: Vec<(String, String)>,
    pub notes: Vec<String>,
}

/// The text at `ptr` in a JSON body, as the verifier reads it.
fn json_text(body: &[u8], ptr: &str) -> Option<String> {
    super::json::pointer_text(body, ptr).map(std::borrow::Cow::into_owned)
}

fn random_id() -> String {
    let mut b = [0u8; 12];
    // An OS RNG failure only makes the ID less unique; fall back to the clock.
    if getrandom::fill(&mut b).is_err() {
        let ns = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_nanos();
        b[..12].copy_from_slice(&ns.to_le_bytes()[..12]);
    }
    format!("msg_{}", hex::encode(b))
}

impl Verifier {
    /// Signs `req` with the first secret, as the configured sender would.
    pub fn sign(&self, req: SignRequest<'_>) -> Result<Signed, SignError> {
        let spec = &self.spec;
        let key = self.keys.first().ok_or(SignError::NoSecret)?;
        let sig_header = spec.signature_headers.first().ok_or(SignError::NoSignatureHeader)?;
        let mut out = Signed::default();
        if serde_json::from_slice::<serde::de::IgnoredAny>(req.body).is_ok() {
            out.headers.push(("content-type".into(), "application/json".into()));
        }

        let mut ts = String::new();
        match spec.timestamp.first() {
            Some(Locator::Header(name)) => {
                ts = req.timestamp.map_or_else(|| spec.timestamp_format.render(req.now), str::to_owned);
                out.headers.push((name.to_string(), ts.clone()));
            }
            Some(Locator::SignatureParam) => {
                ts = req.timestamp.map_or_else(|| spec.timestamp_format.render(req.now), str::to_owned);
            }
            Some(Locator::Json(ptr)) => {
                ts = json_text(req.body, ptr).unwrap_or_default();
                out.notes.push(format!(
                    "the timestamp is read from the body at {ptr}; it must be within the tolerance when sent"
                ));
            }
            None => {}
        }

        // A body that carries its own ID (e.g. tampa's json:/id fallback) needs no header.
        let body_id = spec.id.iter().find_map(|l| match l {
            Locator::Json(ptr) => json_text(req.body, ptr),
            _ => None,
        });
        let id = match (spec.id.first(), req.id, body_id) {
            (Some(Locator::Header(_)), None, Some(body_id)) => body_id,
            (Some(Locator::Header(name)), id, _) => {
                let id = id.map_or_else(random_id, str::to_owned);
                out.headers.push((name.to_string(), id.clone()));
                id
            }
            (_, _, Some(body_id)) => body_id,
            _ => body_hash(req.body),
        };

        if let (Some(Locator::Header(name)), Some(et)) = (spec.event_type.first(), req.event_type) {
            out.headers.push((name.to_string(), et.to_owned()));
        }

        let value = match (spec.scheme, key) {
            (Scheme::Token, Key::Token(t)) => std::str::from_utf8(t).map_err(|_| SignError::TokenNotText)?.to_owned(),
            _ => {
                let mac = key.mac(|feed| spec.payload.feed(req.body, ts.as_bytes(), id.as_bytes(), feed));
                let sig = spec.encoding.encode(mac.as_slice());
                match spec.signature_format {
                    SignatureFormat::Single => format!("{}{sig}", spec.signature_prefix),
                    SignatureFormat::V1List => format!("v1,{sig}"),
                    SignatureFormat::Stripe => format!("t={ts},v1={sig}"),
                }
            }
        };
        out.headers.push((sig_header.to_string(), value));
        Ok(out)
    }
}
