//! Secrets, decoded and keyed once at config load.
//!
//! Each HMAC key is stored as a ready-keyed MAC state; a request clones the
//! state (a few hundred bytes on the stack) instead of re-hashing the key.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use subtle::ConstantTimeEq;

/// HMAC hash function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha1,
    Sha256,
    Sha512,
}

/// How a configured secret string becomes key bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretFormat {
    /// The UTF-8 bytes of the string.
    Raw,
    /// `whsec_<base64>` (Standard Webhooks, Svix): the decoded bytes; the prefix is optional.
    WhsecBase64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("secret is not base64 after the whsec_ prefix")]
    NotBase64,
}

/// One configured secret, ready to use.
#[derive(Clone)]
pub enum Key {
    Sha1(Hmac<sha1::Sha1>),
    Sha256(Hmac<sha2::Sha256>),
    Sha512(Hmac<sha2::Sha512>),
    /// `scheme = "token"`: the secret itself, compared in constant time.
    Token(Box<[u8]>),
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.write_str("Key(<redacted>)")
    }
}

/// A MAC output on the stack.
pub struct MacOutput {
    buf: [u8; 64],
    len: usize,
}

impl MacOutput {
    pub fn as_slice(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Decodes a secret's text into key bytes.
pub fn secret_bytes(secret: &str, format: SecretFormat) -> Result<Vec<u8>, KeyError> {
    match format {
        SecretFormat::Raw => Ok(secret.as_bytes().to_vec()),
        SecretFormat::WhsecBase64 => {
            let b64 = secret.strip_prefix("whsec_").unwrap_or(secret);
            base64::engine::general_purpose::STANDARD.decode(b64).map_err(|_| KeyError::NotBase64)
        }
    }
}

impl Key {
    pub fn hmac(algorithm: Algorithm, key: &[u8]) -> Self {
        // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
        match algorithm {
            Algorithm::Sha1 => Key::Sha1(<Hmac<sha1::Sha1> as Mac>::new_from_slice(key).expect("hmac takes any key")),
            Algorithm::Sha256 => {
                Key::Sha256(<Hmac<sha2::Sha256> as Mac>::new_from_slice(key).expect("hmac takes any key"))
            }
            Algorithm::Sha512 => {
                Key::Sha512(<Hmac<sha2::Sha512> as Mac>::new_from_slice(key).expect("hmac takes any key"))
            }
        }
    }

    /// The MAC of whatever `feed` writes. Token keys yield an empty output.
    pub fn mac(&self, feed: impl FnOnce(&mut dyn FnMut(&[u8]))) -> MacOutput {
        fn run<M: Mac + Clone>(m: &M, feed: impl FnOnce(&mut dyn FnMut(&[u8]))) -> MacOutput {
            let mut m = m.clone();
            feed(&mut |chunk| m.update(chunk));
            let out = m.finalize().into_bytes();
            let mut buf = [0u8; 64];
            buf[..out.len()].copy_from_slice(&out);
            MacOutput { buf, len: out.len() }
        }
        match self {
            Key::Sha1(m) => run(m, feed),
            Key::Sha256(m) => run(m, feed),
            Key::Sha512(m) => run(m, feed),
            Key::Token(_) => MacOutput { buf: [0; 64], len: 0 },
        }
    }

    /// `scheme = "token"`: the header value equals the secret (constant time).
    pub fn token_matches(&self, presented: &[u8]) -> bool {
        match self {
            Key::Token(t) => ct_eq(t, presented),
            _ => false,
        }
    }
}

/// Constant-time equality; lengths are not secret (digest sizes are public).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        let k = Key::hmac(Algorithm::Sha256, b"Jefe");
        let out = k.mac(|f| f(b"what do ya want for nothing?"));
        assert_eq!(hex::encode(out.as_slice()), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }

    #[test]
    fn secrets_decode_per_format() {
        assert_eq!(secret_bytes("abc", SecretFormat::Raw).unwrap(), b"abc");
        assert_eq!(secret_bytes("whsec_YWJj", SecretFormat::WhsecBase64).unwrap(), b"abc");
        assert_eq!(secret_bytes("YWJj", SecretFormat::WhsecBase64).unwrap(), b"abc");
        assert_eq!(secret_bytes("whsec_!!", SecretFormat::WhsecBase64), Err(KeyError::NotBase64));
    }

    #[test]
    fn token_compare() {
        let k = Key::Token(b"s3cret".to_vec().into_boxed_slice());
        assert!(k.token_matches(b"s3cret"));
        assert!(!k.token_matches(b"s3cres"));
        assert!(!k.token_matches(b"s3cret2"));
        assert!(format!("{k:?}").contains("redacted"));
    }
}
