//! Signature verification: one [`Verifier`] per source, compiled at config load
//! from a provider preset ([`presets`]) plus the source's `verify` overrides.
//!
//! A request enters as [`Delivery<Unverified>`]; only [`Delivery::verify`] can
//! turn it into a [`Delivery<Verified>`], which is the only kind the dedupe and
//! forward stages accept. The clock is an argument, never read here.
//!
//! Order of checks, matching SPEC §3: signature header present → header values
//! decodable (400) → MAC over the signed payload matches some secret (401) →
//! timestamp present and within tolerance (401).

pub mod json;
pub mod keys;
pub mod presets;
pub mod sign;
pub mod template;
pub mod timestamp;

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderName};
use sha2::{Digest, Sha256};

pub use keys::{Algorithm, Key, SecretFormat};
pub use template::{Locator, Template};
pub use timestamp::TimestampFormat;

/// `hmac` (signature over a payload) or `token` (a shared secret sent as is).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Hmac,
    Token,
}

/// How signatures are written in their header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Hex,
    Base64,
}

/// How the signature header is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureFormat {
    /// One signature, after an optional prefix.
    Single,
    /// Standard Webhooks: space-separated `v1,<sig>` entries; other versions ignored.
    V1List,
    /// Stripe: comma-separated `t=<unix>,v1=<sig>[,v1=..][,v0=..]`.
    Stripe,
}

/// Provider handshakes and test pings the gateway answers itself (after verification).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    None,
    /// Event type equal to this answers `{"ok":true}`.
    Ping(&'static str),
    SlackUrlVerification,
    TribeTest,
    ZoomUrlValidation,
}

/// Everything a preset decides; `verify` overrides replace single fields.
#[derive(Debug, Clone)]
pub struct Spec {
    pub scheme: Scheme,
    /// First header present wins (both header eras, e.g. `svix-*` before `webhook-*`).
    pub signature_headers: Vec<HeaderName>,
    pub algorithm: Algorithm,
    pub encoding: Encoding,
    pub signature_prefix: String,
    pub signature_format: SignatureFormat,
    pub secret_format: SecretFormat,
    pub payload: Template,
    /// Empty: the scheme has no timestamp.
    pub timestamp: Vec<Locator>,
    pub timestamp_format: TimestampFormat,
    pub tolerance: Duration,
    /// Empty or not found: the lowercase hex SHA-256 of the body.
    pub id: Vec<Locator>,
    /// Empty or not found: `""`.
    pub event_type: Vec<Locator>,
    pub challenge: Challenge,
}

/// A compiled verifier: the spec plus decoded, pre-keyed secrets.
#[derive(Debug, Clone)]
pub struct Verifier {
    pub spec: Spec,
    /// In configured order; the index that matched is reported for rotation metrics.
    pub keys: Vec<Key>,
}

/// Why a delivery was not accepted as authentic and fresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("signature header missing")]
    MissingSignature,
    #[error("signature header cannot be decoded")]
    MalformedSignature,
    #[error("signature does not match")]
    InvalidSignature,
    #[error("timestamp cannot be decoded")]
    MalformedTimestamp,
    #[error("timestamp missing")]
    MissingTimestamp,
    #[error("timestamp outside the tolerance window")]
    StaleTimestamp,
}

/// Typestate marker: nothing has been checked.
#[derive(Debug)]
pub struct Unverified;

/// Typestate payload: what verification established. Fields are private so only
/// [`Delivery::verify`] can make one.
#[derive(Debug)]
pub struct Verified {
    secret_index: usize,
    id: String,
    event_type: String,
    json: Option<serde_json::Value>,
}

/// A webhook delivery: request head, complete body, and what is known about it.
#[derive(Debug)]
pub struct Delivery<S> {
    pub head: http::request::Parts,
    pub body: Bytes,
    state: S,
}

impl Delivery<Unverified> {
    pub fn new(head: http::request::Parts, body: Bytes) -> Self {
        Delivery { head, body, state: Unverified }
    }

    /// Checks signature and freshness against `now`.
    pub fn verify(self, verifier: &Verifier, now: SystemTime) -> Result<Delivery<Verified>, VerifyError> {
        let state = verifier.check(&self.head.headers, &self.body, now)?;
        Ok(Delivery { head: self.head, body: self.body, state })
    }
}

impl Delivery<Verified> {
    pub fn id(&self) -> &str {
        &self.state.id
    }
    pub fn event_type(&self) -> &str {
        &self.state.event_type
    }
    pub fn secret_index(&self) -> usize {
        self.state.secret_index
    }
    /// The body as JSON, if it was parsed during verification or parses now.
    pub fn json(&mut self) -> Option<&serde_json::Value> {
        if self.state.json.is_none() {
            self.state.json = serde_json::from_slice(&self.body).ok();
        }
        self.state.json.as_ref()
    }
}

// === impl Verifier ===

/// Up to this many signatures per header are considered; more are ignored.
const MAX_CANDIDATES: usize = 8;
/// Longest digest (SHA-512).
const MAX_SIG: usize = 64;

#[derive(Clone, Copy)]
struct Candidate {
    buf: [u8; MAX_SIG],
    len: usize,
}

struct Candidates<'a> {
    items: [Candidate; MAX_CANDIDATES],
    len: usize,
    /// Token scheme: the raw header value.
    raw: &'a [u8],
    /// Stripe: the `t=` parameter.
    stripe_t: Option<&'a str>,
}

/// The raw body; JSON fields are looked up with [`json::pointer_text`].
struct Body<'a> {
    bytes: &'a [u8],
}

static B64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

impl Encoding {
    /// Decodes into `out`; `Err` if not decodable, `Ok(None)` if longer than any digest.
    fn decode(self, text: &str, out: &mut [u8; MAX_SIG]) -> Result<Option<usize>, ()> {
        let text = text.trim();
        match self {
            Encoding::Hex => {
                if !text.len().is_multiple_of(2) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(());
                }
                let n = text.len() / 2;
                if n > MAX_SIG {
                    return Ok(None);
                }
                hex::decode_to_slice(text, &mut out[..n]).map_err(|_| ())?;
                Ok(Some(n))
            }
            Encoding::Base64 => match B64.decode_slice(text, out) {
                Ok(n) => Ok(Some(n)),
                Err(base64::DecodeSliceError::OutputSliceTooSmall) => B64.decode(text).map(|_| None).map_err(|_| ()),
                Err(base64::DecodeSliceError::DecodeError(_)) => Err(()),
            },
        }
    }

    pub fn encode(self, bytes: &[u8]) -> String {
        match self {
            Encoding::Hex => hex::encode(bytes),
            Encoding::Base64 => base64::engine::general_purpose::STANDARD.encode(bytes),
        }
    }
}

fn header_str<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Option<&'h str> {
    headers.get(name).and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
}

/// The text of the first locator that finds one.
fn locate<'a>(
    locators: &[Locator],
    headers: &'a HeaderMap,
    body: &'a Body<'a>,
    stripe_t: Option<&'a str>,
) -> Option<Cow<'a, str>> {
    locate_with(locators, headers, body, stripe_t).map(|(_, t)| t)
}

/// Like [`locate`], also saying which locator found the text.
fn locate_with<'a, 'l>(
    locators: &'l [Locator],
    headers: &'a HeaderMap,
    body: &'a Body<'a>,
    stripe_t: Option<&'a str>,
) -> Option<(&'l Locator, Cow<'a, str>)> {
    locators.iter().find_map(|loc| {
        let text = match loc {
            Locator::Header(name) => header_str(headers, name).map(Cow::Borrowed),
            Locator::SignatureParam => stripe_t.map(Cow::Borrowed),
            Locator::Json(ptr) => json::pointer_text(body.bytes, ptr),
        }?;
        Some((loc, text))
    })
}

/// Lowercase hex SHA-256 of the body: the delivery ID when the sender gives none.
pub fn body_hash(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

impl Verifier {
    fn candidates<'h>(&self, headers: &'h HeaderMap) -> Result<Candidates<'h>, VerifyError> {
        let spec = &self.spec;
        let raw =
            spec.signature_headers.iter().find_map(|h| headers.get(h)).ok_or(VerifyError::MissingSignature)?.as_bytes();
        let mut c = Candidates {
            items: [Candidate { buf: [0; MAX_SIG], len: 0 }; MAX_CANDIDATES],
            len: 0,
            raw,
            stripe_t: None,
        };
        if spec.scheme == Scheme::Token {
            return Ok(c);
        }
        let text = std::str::from_utf8(raw).map_err(|_| VerifyError::MalformedSignature)?;
        let push = |sig: &str, c: &mut Candidates<'h>| -> Result<(), VerifyError> {
            if c.len == MAX_CANDIDATES {
                return Ok(());
            }
            let slot = &mut c.items[c.len];
            match spec.encoding.decode(sig, &mut slot.buf) {
                Err(()) => Err(VerifyError::MalformedSignature),
                Ok(None) => Ok(()), // decodable but longer than any digest: cannot match
                Ok(Some(n)) => {
                    slot.len = n;
                    c.len += 1;
                    Ok(())
                }
            }
        };
        match spec.signature_format {
            SignatureFormat::Single => {
                let sig =
                    text.trim().strip_prefix(spec.signature_prefix.as_str()).ok_or(VerifyError::MalformedSignature)?;
                push(sig, &mut c)?;
            }
            SignatureFormat::V1List => {
                for entry in text.split_ascii_whitespace() {
                    let (version, sig) = entry.split_once(',').ok_or(VerifyError::MalformedSignature)?;
                    if version == "v1" {
                        push(sig, &mut c)?;
                    }
                }
            }
            SignatureFormat::Stripe => {
                for item in text.split(',') {
                    let (k, v) = item.trim().split_once('=').ok_or(VerifyError::MalformedSignature)?;
                    match k {
                        "t" => c.stripe_t = Some(v),
                        "v1" => push(v, &mut c)?,
                        _ => {}
                    }
                }
            }
        }
        Ok(c)
    }

    /// Runs every check; see the module docs for the order.
    fn check(&self, headers: &HeaderMap, body: &[u8], now: SystemTime) -> Result<Verified, VerifyError> {
        let spec = &self.spec;
        let cands = self.candidates(headers)?;
        let body = Body { bytes: body };

        // Timestamps sent in headers are parsed before the signature is checked (400 first).
        let ts = locate_with(&spec.timestamp, headers, &body, cands.stripe_t);
        let ts_ms = ts.as_ref().and_then(|(_, t)| spec.timestamp_format.to_unix_ms(t));
        if let (Some((loc, _)), None) = (&ts, ts_ms)
            && !matches!(loc, Locator::Json(_))
        {
            return Err(VerifyError::MalformedTimestamp);
        }
        let ts_text = ts.map(|(_, t)| t);
        let id = locate(&spec.id, headers, &body, cands.stripe_t);

        let secret_index = match spec.scheme {
            Scheme::Token => self.keys.iter().position(|k| k.token_matches(cands.raw)),
            Scheme::Hmac => {
                let ts = ts_text.as_deref().unwrap_or("").as_bytes();
                let id_bytes = id.as_deref().unwrap_or("").as_bytes();
                let sigs = &cands.items[..cands.len];
                self.keys.iter().position(|k| {
                    let mac = k.mac(|feed| spec.payload.feed(body.bytes, ts, id_bytes, feed));
                    // Every candidate is compared, in constant time, to avoid early exits.
                    sigs.iter().fold(false, |hit, s| hit | keys::ct_eq(&s.buf[..s.len], mac.as_slice()))
                })
            }
        }
        .ok_or(VerifyError::InvalidSignature)?;

        if !spec.timestamp.is_empty() {
            let ms = match (ts_text.is_some(), ts_ms) {
                (false, _) => return Err(VerifyError::MissingTimestamp),
                (true, None) => return Err(VerifyError::MalformedTimestamp),
                (true, Some(ms)) => ms,
            };
            if !timestamp::is_fresh(ms, now, spec.tolerance) {
                return Err(VerifyError::StaleTimestamp);
            }
        }

        let id = match id {
            Some(id) if !id.is_empty() => id.into_owned(),
            _ => body_hash(body.bytes),
        };
        let event_type =
            locate(&spec.event_type, headers, &body, cands.stripe_t).map(Cow::into_owned).unwrap_or_default();
        Ok(Verified { secret_index, id, event_type, json: None })
    }
}

#[cfg(test)]
mod tests;
