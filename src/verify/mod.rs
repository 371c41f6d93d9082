//! Signature verification: one [`Verifier`] per source, compiled at config load
//! from a provider preset ([`presets`]) plus the source's `verify` overrides.
//!
//! A request enters as [`Delivery<Unverified>`]; only [`Delivery::verify`] can
//! turn it into a [`Delivery<Verified>`], which is the only kind the dedupe and
//! forward stages accept. The clock is an argument, never read here.
//!
//! Order of checks, matching SPEC §3: signature header present → header values
//! decodable (400) → MAC (or public-key signature) over the signed payload
//! matches some secret (401) → timestamp present and within tolerance (401).

pub mod json;
pub mod keys;
pub mod sign;
pub mod signed;
pub mod template;
pub mod timestamp;

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use sha2::{Digest, Sha256};

pub use keys::{Algorithm, Key, SecretFormat};
pub use template::{Locator, Template};
pub use timestamp::TimestampFormat;

/// How a delivery proves where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// An HMAC over the signed payload with a shared secret.
    Hmac,
    /// A shared secret sent as is.
    Token,
    /// An Ed25519 signature; the secret is the provider's public key (hex).
    Ed25519,
    /// An ECDSA P-256 / SHA-256 signature; the secret is the provider's public key (base64 DER).
    EcdsaP256,
    /// No signature: every item of the JSON body's `value` list carries
    /// `clientState`, which must equal the source's `verify_token` (Microsoft
    /// Graph change notifications). Needs no `secrets`.
    ClientState,
}

impl Scheme {
    /// Public-key schemes: only the provider holds the signing key.
    pub fn is_asymmetric(self) -> bool {
        matches!(self, Scheme::Ed25519 | Scheme::EcdsaP256)
    }
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
    /// `NAME=value` parameters split by [`Spec::param_separator`]; every
    /// [`Spec::signature_param`] is a candidate, others are ignored or read as
    /// `signature:NAME` locators. Stripe: `t=<unix>,v1=<sig>[,v1=..][,v0=..]`;
    /// Paddle: `ts=<unix>;h1=<sig>`; PagerDuty: `v1=<sig>,v1=<sig>`.
    Params,
}

/// Provider handshakes and test pings the gateway answers itself: POST ones
/// after verification, GET ones (Meta, Dropbox) in place of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    None,
    /// Event type equal to this answers `{"ok":true}`.
    Ping(String),
    SlackUrlVerification,
    TribeTest,
    ZoomUrlValidation,
    /// Discord Interactions: `{"type":1}` (PING) answers `{"type":1}`.
    DiscordPing,
    /// Discord Webhook Events: `{"type":0}` (PING) answers 204.
    DiscordEventsPing,
    /// Twitch EventSub `webhook_callback_verification`: the body's `challenge` as text.
    TwitchVerification,
    /// GET `hub.mode=subscribe&hub.verify_token=T&hub.challenge=C` (Facebook, Instagram, WhatsApp).
    MetaSubscribe,
    /// GET `?challenge=C` echoed as text.
    DropboxChallenge,
    /// Microsoft Graph: POST `?validationToken=T` answered `T` as text, before verification.
    MsGraphValidation,
}

impl Challenge {
    /// The names `challenge` takes in a config file (`ping:EVENT` besides these).
    pub const NAMES: &'static [(&'static str, Challenge)] = &[
        ("none", Challenge::None),
        ("slack", Challenge::SlackUrlVerification),
        ("tribe", Challenge::TribeTest),
        ("zoom", Challenge::ZoomUrlValidation),
        ("discord", Challenge::DiscordPing),
        ("discord-events", Challenge::DiscordEventsPing),
        ("twitch", Challenge::TwitchVerification),
        ("meta", Challenge::MetaSubscribe),
        ("dropbox", Challenge::DropboxChallenge),
        ("msgraph", Challenge::MsGraphValidation),
    ];

    pub fn parse(text: &str) -> Option<Challenge> {
        if let Some(event) = text.strip_prefix("ping:") {
            return (!event.is_empty()).then(|| Challenge::Ping(event.to_owned()));
        }
        Self::NAMES.iter().find(|(n, _)| *n == text).map(|(_, c)| c.clone())
    }

    /// Whether the source answers a GET handshake (other GETs stay 405).
    pub fn answers_get(&self) -> bool {
        matches!(self, Challenge::MetaSubscribe | Challenge::DropboxChallenge)
    }
}

/// Everything a preset decides; `verify` overrides replace single fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub scheme: Scheme,
    /// Where the signature is: headers (first present wins, for both header eras,
    /// e.g. `svix-*` before `webhook-*`), or a JSON field of the body (Mailgun).
    pub signature: Vec<Locator>,
    pub algorithm: Algorithm,
    pub encoding: Encoding,
    pub signature_prefix: String,
    pub signature_format: SignatureFormat,
    /// [`SignatureFormat::Params`]: what separates the parameters.
    pub param_separator: char,
    /// [`SignatureFormat::Params`]: the parameter that carries a signature.
    pub signature_param: String,
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
    /// `signed_url = "as-received-or-decoded"`: a `{url}` signature made over
    /// the URL with HubSpot's listed escapes decoded is accepted too
    /// ([`template::decode_hubspot_escapes`]).
    pub url_decoded_too: bool,
}

impl Default for Spec {
    /// The `generic` preset: what every field is until a preset or `verify` sets it.
    fn default() -> Self {
        Spec {
            scheme: Scheme::Hmac,
            signature: Vec::new(),
            algorithm: Algorithm::Sha256,
            encoding: Encoding::Hex,
            signature_prefix: String::new(),
            signature_format: SignatureFormat::Single,
            param_separator: ',',
            signature_param: "v1".to_owned(),
            secret_format: SecretFormat::Raw,
            payload: Template { segments: vec![template::Segment::Body] },
            timestamp: Vec::new(),
            timestamp_format: TimestampFormat::Unix,
            tolerance: Duration::from_secs(300),
            id: Vec::new(),
            event_type: Vec::new(),
            challenge: Challenge::None,
            url_decoded_too: false,
        }
    }
}

/// A compiled verifier: the spec plus decoded, pre-keyed secrets.
#[derive(Debug, Clone)]
pub struct Verifier {
    pub spec: Spec,
    /// In configured order; the index that matched is reported for rotation metrics.
    pub keys: Vec<Key>,
    /// The source's `public_url` (`{url}` in signed payloads); empty when unset.
    pub public_url: String,
    /// The source's `verify_token` (Meta's GET handshake); empty when unset.
    pub verify_token: String,
    /// The spec's locators as read: signed ones first, unsigned ones as
    /// cross-checks ([`signed`]). Derived from `spec` by [`Verifier::new`].
    pub plan: signed::Plan,
    /// Per key, a short fingerprint of its secret ([`key_id`]): how metrics
    /// name a secret so the name stays with it when the list is rotated.
    pub key_ids: Vec<String>,
}

/// A secret's fingerprint for metrics: `k` and 6 hex digits of a SHA-256 of
/// it under a fixed label. 24 bits say which configured secret matched
/// without standing in for it (a whole secret is never derived from them).
pub fn key_id(secret: &str) -> String {
    let digest = Sha256::new().chain_update(b"hookgate key id\0").chain_update(secret.as_bytes()).finalize();
    format!("k{}", hex::encode(&digest[..3]))
}

/// Longest delivery ID or event type accepted (SPEC §10): longer ones are
/// refused before any store is touched.
pub const MAX_FIELD_LEN: usize = 256;

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
    #[error("an unsigned header disagrees with the signed value it repeats")]
    UnsignedMismatch,
    #[error("the delivery ID or event type is longer than 256 bytes")]
    FieldTooLong,
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
    /// The request's header values that `id` and `event_type` are, if each
    /// came from a header.
    id_value: Option<HeaderValue>,
    event_type_value: Option<HeaderValue>,
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
        let state = verifier.check(&self.head, &self.body, now)?;
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
    /// The ID as a header value: the request's own when it came from a header
    /// (a refcount, not a copy), `None` if it cannot be one.
    pub fn id_value(&self) -> Option<HeaderValue> {
        shared_or_made(&self.state.id_value, &self.state.id)
    }
    /// The event type as a header value, like [`Self::id_value`].
    pub fn event_type_value(&self) -> Option<HeaderValue> {
        shared_or_made(&self.state.event_type_value, &self.state.event_type)
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

/// The request's own header value if there is one, else one made from `text`.
fn shared_or_made(shared: &Option<HeaderValue>, text: &str) -> Option<HeaderValue> {
    shared.clone().or_else(|| HeaderValue::from_bytes(text.as_bytes()).ok())
}

// === impl Verifier ===

/// Up to this many signatures per header are considered; more are ignored.
const MAX_CANDIDATES: usize = 8;
/// Longest signature: a DER-encoded ECDSA P-256 signature (digests are at most 64).
const MAX_SIG: usize = 72;

#[derive(Clone, Copy)]
struct Candidate {
    buf: [u8; MAX_SIG],
    len: usize,
}

struct Candidates<'a> {
    items: [Candidate; MAX_CANDIDATES],
    len: usize,
    /// [`SignatureFormat::Params`]: the header text, for `signature:NAME` locators.
    params: Option<&'a str>,
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
                let n = text.len() / 2;
                if n > MAX_SIG {
                    // Longer than any digest: hex that cannot match, or not hex.
                    let hex = text.len().is_multiple_of(2) && text.bytes().all(|b| b.is_ascii_hexdigit());
                    return if hex { Ok(None) } else { Err(()) };
                }
                // Checks the length is even and every digit (one pass).
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

/// The value of parameter `name` in a `params`-style signature header.
fn param<'a>(params: Option<&'a str>, separator: char, name: &str) -> Option<&'a str> {
    params?.split(separator).find_map(|item| {
        let (k, v) = item.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

/// What a locator found: its text and, from a header, the header's value (shared
/// with the request, so it can be passed on without a copy).
struct Found<'a, 'l> {
    locator: &'l Locator,
    text: Cow<'a, str>,
    value: Option<&'a HeaderValue>,
}

/// The text of the first locator that finds one.
fn locate<'a, 'l>(
    locators: &'l [Locator],
    headers: &'a HeaderMap,
    body: &'a Body<'a>,
    params: Option<&'a str>,
    separator: char,
) -> Option<Found<'a, 'l>> {
    locators.iter().find_map(|locator| {
        let (text, value) = match locator {
            Locator::Header(name) => {
                let v = headers.get(name)?;
                (Cow::Borrowed(std::str::from_utf8(v.as_bytes()).ok()?), Some(v))
            }
            Locator::SignatureParam(name) => (Cow::Borrowed(param(params, separator, name)?), None),
            Locator::Json(ptr) => (json::pointer_text(body.bytes, ptr)?, None),
            Locator::Digest(parts) => (Cow::Owned(digest(parts, headers, body, params, separator)), None),
        };
        Some(Found { locator, text, value })
    })
}

/// `digest:` IDs: SHA-256 over each located value's exact bytes (a JSON value
/// as it stands in the body, quotes included), each after its length as 8
/// big-endian bytes; an absent value is 8 bytes of 0xff, so absent and empty differ.
fn digest(parts: &[Locator], headers: &HeaderMap, body: &Body<'_>, params: Option<&str>, separator: char) -> String {
    let mut h = Sha256::new();
    for part in parts {
        let bytes = match part {
            Locator::Header(name) => headers.get(name).map(|v| v.as_bytes()),
            Locator::Json(ptr) => json::pointer_raw(body.bytes, ptr).map(str::as_bytes),
            Locator::SignatureParam(name) => param(params, separator, name).map(str::as_bytes),
            Locator::Digest(_) => None, // not accepted by the parser
        };
        match bytes {
            Some(b) => {
                h.update((b.len() as u64).to_be_bytes());
                h.update(b);
            }
            None => h.update([0xff; 8]),
        }
    }
    hex::encode(h.finalize())
}

/// Lowercase hex SHA-256 of the body: the delivery ID when the sender gives none.
pub fn body_hash(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

impl Verifier {
    /// A verifier for `spec`, with its reading plan compiled.
    pub fn new(spec: Spec, keys: Vec<Key>, public_url: String, verify_token: String) -> Self {
        let plan = signed::Plan::new(&spec);
        Verifier { spec, keys, public_url, verify_token, plan, key_ids: Vec::new() }
    }

    /// The signature's raw text: the first configured header present, or the JSON field.
    fn signature_value<'a>(&self, headers: &'a HeaderMap, body: &'a [u8]) -> Result<Cow<'a, [u8]>, VerifyError> {
        self.spec
            .signature
            .iter()
            .find_map(|loc| match loc {
                Locator::Header(h) => headers.get(h).map(|v| Cow::Borrowed(v.as_bytes())),
                Locator::Json(ptr) => json::pointer_text(body, ptr).map(|t| match t {
                    Cow::Borrowed(t) => Cow::Borrowed(t.as_bytes()),
                    Cow::Owned(t) => Cow::Owned(t.into_bytes()),
                }),
                _ => None,
            })
            .ok_or(VerifyError::MissingSignature)
    }

    fn candidates<'r>(&self, raw: &'r [u8]) -> Result<Candidates<'r>, VerifyError> {
        let spec = &self.spec;
        let mut c =
            Candidates { items: [Candidate { buf: [0; MAX_SIG], len: 0 }; MAX_CANDIDATES], len: 0, params: None };
        if spec.scheme == Scheme::Token {
            return Ok(c);
        }
        let text = std::str::from_utf8(raw).map_err(|_| VerifyError::MalformedSignature)?;
        // Whether an entry was unreadable; in a list that is only fatal when no
        // entry is readable (SPEC §13: the providers' libraries skip bad entries).
        let mut bad = false;
        // Adds a candidate; false if `sig` cannot be decoded.
        let push = |sig: &str, c: &mut Candidates<'r>| -> bool {
            if c.len == MAX_CANDIDATES {
                return true;
            }
            let slot = &mut c.items[c.len];
            match spec.encoding.decode(sig, &mut slot.buf) {
                Err(()) => false,
                Ok(None) => true, // decodable but longer than any signature: cannot match
                Ok(Some(n)) => {
                    slot.len = n;
                    c.len += 1;
                    true
                }
            }
        };
        match spec.signature_format {
            SignatureFormat::Single => {
                let sig =
                    text.trim().strip_prefix(spec.signature_prefix.as_str()).ok_or(VerifyError::MalformedSignature)?;
                bad |= !push(sig, &mut c);
            }
            SignatureFormat::V1List => {
                for entry in text.split_ascii_whitespace() {
                    match entry.split_once(',') {
                        Some(("v1", sig)) => bad |= !push(sig, &mut c),
                        Some(_) => {} // other versions are ignored
                        None => bad = true,
                    }
                }
            }
            SignatureFormat::Params => {
                c.params = Some(text);
                for item in text.split(spec.param_separator) {
                    match item.trim().split_once('=') {
                        Some((k, v)) if k == spec.signature_param => bad |= !push(v, &mut c),
                        Some(_) => {}
                        None => bad = true,
                    }
                }
            }
        }
        if c.len == 0 && bad {
            return Err(VerifyError::MalformedSignature);
        }
        Ok(c)
    }

    /// [`Scheme::ClientState`]: a JSON body `{"value":[...]}` whose every item
    /// has `clientState` equal to `verify_token` (constant time). The ID is the
    /// body's digest; the event type as located.
    fn check_client_state(&self, head: &http::request::Parts, body: &[u8]) -> Result<Verified, VerifyError> {
        #[derive(serde::Deserialize)]
        struct Notification<'a> {
            #[serde(borrow, rename = "clientState")]
            client_state: Option<Cow<'a, str>>,
        }
        #[derive(serde::Deserialize)]
        struct Notifications<'a> {
            #[serde(borrow)]
            value: Vec<Notification<'a>>,
        }
        let parsed: Notifications<'_> = serde_json::from_slice(body).map_err(|_| VerifyError::InvalidSignature)?;
        let expected = self.verify_token.as_bytes();
        let all = !parsed.value.is_empty()
            && parsed.value.iter().fold(true, |ok, n| {
                ok & n.client_state.as_deref().is_some_and(|c| keys::ct_eq(c.as_bytes(), expected))
            });
        if expected.is_empty() || !all {
            return Err(VerifyError::InvalidSignature);
        }
        let body_ref = Body { bytes: body };
        let (event_type, event_type_value) =
            match locate(&self.plan.event_type.read, &head.headers, &body_ref, None, ',') {
                Some(f) => (f.text.into_owned(), f.value.cloned()),
                None => (String::new(), None),
            };
        if event_type.len() > MAX_FIELD_LEN {
            return Err(VerifyError::FieldTooLong);
        }
        Ok(Verified { secret_index: 0, id: body_hash(body), event_type, id_value: None, event_type_value, json: None })
    }

    /// Runs every check; see the module docs for the order.
    fn check(&self, head: &http::request::Parts, body: &[u8], now: SystemTime) -> Result<Verified, VerifyError> {
        let spec = &self.spec;
        if spec.scheme == Scheme::ClientState {
            return self.check_client_state(head, body);
        }
        let headers = &head.headers;
        let raw = self.signature_value(headers, body)?;
        let cands = self.candidates(&raw)?;
        let (params, sep) = (cands.params, spec.param_separator);
        let body = Body { bytes: body };

        // Timestamps sent in headers are parsed before the signature is checked (400 first).
        let plan = &self.plan;
        let ts = locate(&plan.timestamp.read, headers, &body, params, sep);
        let ts_ms = ts.as_ref().and_then(|f| spec.timestamp_format.to_unix_ms(&f.text));
        if let (Some(f), None) = (&ts, ts_ms)
            && !matches!(f.locator, Locator::Json(_))
        {
            return Err(VerifyError::MalformedTimestamp);
        }
        let ts_text = ts.map(|f| f.text);
        let id = locate(&plan.id.read, headers, &body, params, sep);

        let input = template::Input {
            body: body.bytes,
            timestamp: ts_text.as_deref().unwrap_or("").as_bytes(),
            id: id.as_ref().map_or(&b""[..], |f| f.text.as_bytes()),
            public_url: &self.public_url,
            query: head.uri.query(),
        };
        let sigs = &cands.items[..cands.len];
        let hmac_match = |input: &template::Input<'_>| {
            self.keys.iter().position(|k| {
                let mac = k.mac(|feed| spec.payload.feed(input, feed));
                // Every candidate is compared, in constant time, to avoid early exits.
                sigs.iter().fold(false, |hit, s| hit | keys::ct_eq(&s.buf[..s.len], mac.as_slice()))
            })
        };
        let secret_index = match spec.scheme {
            Scheme::Token => self.keys.iter().position(|k| k.token_matches(&raw)),
            // HubSpot's docs sign the URL with some escapes decoded, its SDK as received: either.
            Scheme::Hmac => hmac_match(&input).or_else(|| {
                let decoded = spec.url_decoded_too.then(|| template::decode_hubspot_escapes(input.query?))??;
                hmac_match(&template::Input { query: Some(&decoded), ..input })
            }),
            Scheme::ClientState => None, // checked in `check_client_state`
            Scheme::Ed25519 | Scheme::EcdsaP256 => {
                // Public-key verification needs the message whole (one copy, these schemes only).
                let mut msg = Vec::with_capacity(body.bytes.len() + 64);
                spec.payload.feed(&input, |part| msg.extend_from_slice(part));
                self.keys.iter().position(|k| sigs.iter().any(|s| k.verifies(&msg, &s.buf[..s.len])))
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

        let (id, id_value) = match id {
            Some(f) if !f.text.is_empty() => (f.text.into_owned(), f.value.cloned()),
            _ => (body_hash(body.bytes), None),
        };
        let (event_type, event_type_value) = match locate(&plan.event_type.read, headers, &body, params, sep) {
            Some(f) => (f.text.into_owned(), f.value.cloned()),
            None => (String::new(), None),
        };
        if id.len() > MAX_FIELD_LEN || event_type.len() > MAX_FIELD_LEN {
            return Err(VerifyError::FieldTooLong);
        }
        // Unsigned copies of signed values (SPEC §10): present and different is a forgery.
        // Every copy of a repeated header counts: the app may read any of them.
        let differs = |checks: &[Locator], value: &str| {
            checks.iter().any(|loc| match loc {
                Locator::Header(name) => {
                    headers.get_all(name).iter().any(|v| !v.is_empty() && v.as_bytes() != value.as_bytes())
                }
                _ => locate(std::slice::from_ref(loc), headers, &body, params, sep)
                    .is_some_and(|f| !f.text.is_empty() && f.text != value),
            })
        };
        if differs(&plan.id.check, &id)
            || differs(&plan.event_type.check, &event_type)
            || differs(&plan.timestamp.check, ts_text.as_deref().unwrap_or(""))
        {
            return Err(VerifyError::UnsignedMismatch);
        }
        Ok(Verified { secret_index, id, event_type, id_value, event_type_value, json: None })
    }
}

#[cfg(test)]
mod tests;
