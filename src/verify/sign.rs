//! Producing the headers a real sender would send (`hookgate sign`). Used by the
//! CLI and by tests; it shares the template and key code with verification, so
//! what it signs is exactly what the gateway checks.

use std::time::SystemTime;

use super::{Key, Locator, Scheme, SignatureFormat, Verifier, body_hash, template};

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
    /// Public-key schemes, for testing: the private key (64 hex digits: the
    /// Ed25519 seed or the P-256 scalar) matching the configured public key.
    pub private_key: Option<&'a str>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignError {
    #[error("the source has no usable secret")]
    NoSecret,
    #[error("the source has no signature header configured")]
    NoSignatureHeader,
    #[error("token secrets must be valid header text")]
    TokenNotText,
    #[error(
        "only the provider can sign: the source's secret is its public key; to test, pass the matching private key (--private-key HEX)"
    )]
    ProviderSigns,
    #[error("the private key is not 64 hex digits, or does not match the source's public key")]
    WrongPrivateKey,
    #[error("the signature goes into the body at {0}, but the body is not a JSON object there")]
    NoPlaceInBody(String),
}

/// A header line to send, plus notes for the human (printed as comments).
#[derive(Debug, Default)]
pub struct Signed {
    pub headers: Vec<(String, String)>,
    pub notes: Vec<String>,
    /// The body to send when the signature is carried inside it (Mailgun).
    pub body: Option<Vec<u8>>,
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
        if spec.scheme == Scheme::ClientState {
            // Nothing is signed: the body carries the shared clientState.
            let mut out = Signed::default();
            out.headers.push(("content-type".into(), "application/json".into()));
            out.notes.push("nothing to sign: every item of the body's \"value\" list must carry \"clientState\" equal to the source's verify_token".into());
            return Ok(out);
        }
        let key = self.keys.first().ok_or(SignError::NoSecret)?;
        let sig_at = spec.signature.first().ok_or(SignError::NoSignatureHeader)?;
        let mut out = Signed::default();
        if serde_json::from_slice::<serde::de::IgnoredAny>(req.body).is_ok() {
            out.headers.push(("content-type".into(), "application/json".into()));
        } else if spec.payload.segments.contains(&template::Segment::Form) {
            out.headers.push(("content-type".into(), "application/x-www-form-urlencoded".into()));
        }

        let mut ts = String::new();
        match spec.timestamp.first() {
            Some(Locator::Header(name)) => {
                ts = req.timestamp.map_or_else(|| spec.timestamp_format.render(req.now), str::to_owned);
                out.headers.push((name.to_string(), ts.clone()));
            }
            Some(Locator::SignatureParam(_)) => {
                ts = req.timestamp.map_or_else(|| spec.timestamp_format.render(req.now), str::to_owned);
            }
            Some(Locator::Json(ptr)) => {
                ts = json_text(req.body, ptr).unwrap_or_default();
                out.notes.push(format!(
                    "the timestamp is read from the body at {ptr}; it must be within the tolerance when sent"
                ));
            }
            Some(Locator::Digest(_)) | None => {}
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
        // A sender that repeats signed body fields in headers (Tampa.dev): the
        // copies carry the body's values, which is what they must agree with.
        for (locators, value) in [
            (&spec.id, Some(id.clone())),
            (
                &spec.event_type,
                spec.event_type.iter().find_map(|l| match l {
                    Locator::Json(ptr) => json_text(req.body, ptr),
                    _ => None,
                }),
            ),
        ] {
            if let (Some(Locator::Json(_)), Some(value)) = (locators.first(), value) {
                for l in locators {
                    if let Locator::Header(name) = l {
                        out.headers.push((name.to_string(), value.clone()));
                    }
                }
            }
        }

        let input = template::Input {
            body: req.body,
            timestamp: ts.as_bytes(),
            id: id.as_bytes(),
            public_url: &self.public_url,
            query: None,
        };
        let value = match (spec.scheme, key) {
            (Scheme::Token, Key::Token(t)) => std::str::from_utf8(t).map_err(|_| SignError::TokenNotText)?.to_owned(),
            (Scheme::Ed25519 | Scheme::EcdsaP256, _) => {
                let private = req.private_key.ok_or(SignError::ProviderSigns)?;
                let mut msg = Vec::new();
                spec.payload.feed(&input, |p| msg.extend_from_slice(p));
                self.layout(&spec.encoding.encode(&sign_with_private(key, private, &msg)?), &ts)
            }
            _ => {
                let mac = key.mac(|feed| spec.payload.feed(&input, feed));
                self.layout(&spec.encoding.encode(mac.as_slice()), &ts)
            }
        };
        match sig_at {
            Locator::Json(ptr) => {
                out.body = Some(put_in_body(req.body, ptr, value)?);
                out.notes.push(format!("the signature is written into the body at {ptr}"));
            }
            Locator::Header(name) => out.headers.push((name.to_string(), value)),
            // Validation only puts headers and JSON fields here.
            _ => return Err(SignError::NoSignatureHeader),
        }
        if self.spec.payload.uses_url() {
            out.notes.push(format!("signed for the URL {} (public_url)", self.public_url));
        }
        Ok(out)
    }

    /// The signature header's text around an encoded signature.
    fn layout(&self, sig: &str, ts: &str) -> String {
        let spec = &self.spec;
        match spec.signature_format {
            SignatureFormat::Single => format!("{}{sig}", spec.signature_prefix),
            SignatureFormat::V1List => format!("v1,{sig}"),
            SignatureFormat::Params => {
                let (sep, param) = (spec.param_separator, &spec.signature_param);
                match spec.timestamp.first() {
                    Some(Locator::SignatureParam(t)) => format!("{t}={ts}{sep}{param}={sig}"),
                    _ => format!("{param}={sig}"),
                }
            }
        }
    }
}

/// Signs `msg` with a private key that must match the configured public `key`.
fn sign_with_private(key: &Key, private_hex: &str, msg: &[u8]) -> Result<Vec<u8>, SignError> {
    let mut seed = [0u8; 32];
    hex::decode_to_slice(private_hex.trim(), &mut seed).map_err(|_| SignError::WrongPrivateKey)?;
    match key {
        Key::Ed25519(public) => {
            use ed25519_dalek::Signer as _;
            let sk = ed25519_dalek::SigningKey::from_bytes(&seed);
            if sk.verifying_key() != *public {
                return Err(SignError::WrongPrivateKey);
            }
            Ok(sk.sign(msg).to_bytes().to_vec())
        }
        Key::EcdsaP256(public) => {
            use p256::ecdsa::signature::Signer as _;
            let sk = p256::ecdsa::SigningKey::from_slice(&seed).map_err(|_| SignError::WrongPrivateKey)?;
            if sk.verifying_key() != public {
                return Err(SignError::WrongPrivateKey);
            }
            let sig: p256::ecdsa::Signature = sk.sign(msg);
            Ok(sig.to_der().as_bytes().to_vec())
        }
        _ => Err(SignError::ProviderSigns),
    }
}

/// The body with `value` set at `ptr` (the parent must be an object).
fn put_in_body(body: &[u8], ptr: &str, value: String) -> Result<Vec<u8>, SignError> {
    let no_place = || SignError::NoPlaceInBody(ptr.to_owned());
    let mut doc: serde_json::Value = serde_json::from_slice(body).map_err(|_| no_place())?;
    let (parent, last) = ptr.rsplit_once('/').ok_or_else(no_place)?;
    let obj = doc.pointer_mut(parent).and_then(serde_json::Value::as_object_mut).ok_or_else(no_place)?;
    obj.insert(last.replace("~1", "/").replace("~0", "~"), serde_json::Value::String(value));
    serde_json::to_vec(&doc).map_err(|_| no_place())
}
