//! Re-signing toward the app (SPEC §8): with `sign_upstream` set, every
//! forwarded request (sync, and every queue attempt) carries Standard Webhooks
//! headers made with the app's own secret, so the app can check with any
//! Standard Webhooks library that the request passed through hookgate.
//!
//! `webhook-signature: v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`,
//! where the key is the base64-decoded part of `whsec_<base64>`.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderName, HeaderValue};
use sha2::Sha256;

use crate::verify::SecretFormat;
use crate::verify::keys::{KeyError, secret_bytes};

pub const WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
pub const WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
pub const WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");

/// The app's secret, keyed once at config load.
#[derive(Clone)]
pub struct Resigner {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for Resigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Resigner(<redacted>)")
    }
}

impl Resigner {
    /// `secret` is `whsec_<base64>` (the prefix is optional, as in the libraries).
    pub fn new(secret: &str) -> Result<Self, KeyError> {
        let key = secret_bytes(secret, SecretFormat::WhsecBase64)?;
        // HMAC takes keys of any length.
        let mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|_| KeyError::NotBase64)?;
        Ok(Resigner { mac })
    }

    /// `v1,<base64>` over `{id}.{timestamp}.{body}`.
    pub fn signature(&self, id: &str, timestamp: u64, body: &[u8]) -> String {
        let mut mac = self.mac.clone();
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        let tag = mac.finalize().into_bytes();
        let mut out = String::with_capacity(48);
        out.push_str("v1,");
        base64::engine::general_purpose::STANDARD.encode_string(tag, &mut out);
        out
    }

    /// Replaces every `webhook-*` header in `headers` with freshly signed ones.
    /// An ID that cannot be a header value (control characters) leaves the
    /// request unsigned, so the app rejects it rather than trusting it.
    pub fn apply(&self, headers: &mut HeaderMap, id: &str, now_unix: u64, body: &[u8]) {
        let theirs: Vec<HeaderName> = headers.keys().filter(|n| n.as_str().starts_with("webhook-")).cloned().collect();
        for name in theirs {
            headers.remove(name);
        }
        let Ok(id_value) = HeaderValue::from_str(id) else { return };
        let sig = self.signature(id, now_unix, body);
        headers.insert(WEBHOOK_ID, id_value);
        headers.insert(WEBHOOK_TIMESTAMP, HeaderValue::from(now_unix));
        if let Ok(v) = HeaderValue::from_str(&sig) {
            headers.insert(WEBHOOK_SIGNATURE, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Standard Webhooks libraries' own vector (python/tests/test_webhooks.py,
    /// test_sign_function; the same in the Go, JS, C#, Java and PHP suites).
    #[test]
    fn matches_the_standard_webhooks_vector() {
        let r = Resigner::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = r.signature("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn replaces_the_senders_webhook_headers() {
        let r = Resigner::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let mut h = HeaderMap::new();
        h.insert("webhook-id", HeaderValue::from_static("theirs"));
        h.insert("webhook-signature", HeaderValue::from_static("v1,forged"));
        h.insert("webhook-extra", HeaderValue::from_static("x"));
        h.insert("x-other", HeaderValue::from_static("kept"));
        r.apply(&mut h, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#);
        assert_eq!(h["webhook-id"], "msg_p5jXN8AQM9LWM0D4loKWxJek");
        assert_eq!(h["webhook-timestamp"], "1614265330");
        assert_eq!(h["webhook-signature"], "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert_eq!(h.get_all("webhook-signature").iter().count(), 1);
        assert!(!h.contains_key("webhook-extra"));
        assert_eq!(h["x-other"], "kept");
    }

    #[test]
    fn a_bad_secret_is_refused() {
        assert!(Resigner::new("whsec_***").is_err());
    }
}
