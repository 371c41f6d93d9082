//! Secrets, decoded and keyed once at config load.
//!
//! Each HMAC key is stored as a ready-keyed MAC state; a request clones the
//! state (a few hundred bytes on the stack) instead of re-hashing the key.
//! Public keys (`ed25519`, `ecdsa-p256`) are parsed into curve points once,
//! so a bad key is a `check` error and a request only runs the verification.

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
    #[error("not an Ed25519 public key: expected 64 hex digits (32 bytes) of a valid curve point")]
    Ed25519,
    #[error("not an ECDSA P-256 public key: expected base64 DER (SubjectPublicKeyInfo), as the provider shows it")]
    EcdsaP256,
}

/// One configured secret, ready to use.
#[derive(Clone)]
pub enum Key {
    Sha1(Hmac<sha1::Sha1>),
    Sha256(Hmac<sha2::Sha256>),
    Sha512(Hmac<sha2::Sha512>),
    /// `scheme = "token"`: the secret itself, compared in constant time.
    Token(Box<[u8]>),
    /// `scheme = "ed25519"`: the provider's public key (Discord).
    Ed25519(ed25519_dalek::VerifyingKey),
    /// `scheme = "ecdsa-p256"`: the provider's public key, SHA-256 digests (SendGrid).
    EcdsaP256(p256::ecdsa::VerifyingKey),
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
            Key::Token(_) | Key::Ed25519(_) | Key::EcdsaP256(_) => MacOutput { buf: [0; 64], len: 0 },
        }
    }

    /// An Ed25519 public key from 64 hex digits.
    pub fn ed25519(text: &str) -> Result<Self, KeyError> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut bytes).map_err(|_| KeyError::Ed25519)?;
        ed25519_dalek::VerifyingKey::from_bytes(&bytes).map(Key::Ed25519).map_err(|_| KeyError::Ed25519)
    }

    /// An ECDSA P-256 public key from base64 DER (SubjectPublicKeyInfo), or a PEM block of it.
    pub fn ecdsa_p256(text: &str) -> Result<Self, KeyError> {
        use p256::pkcs8::DecodePublicKey as _;
        let b64: String = text
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .flat_map(|l| l.chars().filter(|c| !c.is_whitespace()))
            .collect();
        let der = base64::engine::general_purpose::STANDARD.decode(b64).map_err(|_| KeyError::EcdsaP256)?;
        p256::ecdsa::VerifyingKey::from_public_key_der(&der).map(Key::EcdsaP256).map_err(|_| KeyError::EcdsaP256)
    }

    /// Public-key schemes: whether `sig` signs `msg`. Ed25519 signatures are the
    /// 64 raw bytes; ECDSA signatures are DER, or the 64 bytes of `r || s`.
    pub fn verifies(&self, msg: &[u8], sig: &[u8]) -> bool {
        use ed25519_dalek::Verifier as _;
        match self {
            Key::Ed25519(k) => {
                ed25519_dalek::Signature::from_slice(sig).is_ok_and(|s| k.verify_strict(msg, &s).is_ok())
            }
            Key::EcdsaP256(k) => {
                let parsed = if sig.len() == 64 {
                    p256::ecdsa::Signature::from_slice(sig)
                } else {
                    p256::ecdsa::Signature::from_der(sig)
                };
                // Signers need not normalise s: accept high-s forms as the providers' own verifiers do.
                parsed.is_ok_and(|s| {
                    let s = s.normalize_s().unwrap_or(s);
                    k.verify(msg, &s).is_ok()
                })
            }
            _ => false,
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

    /// RFC 8032 section 7.1, test 2 (one-byte message).
    #[test]
    fn ed25519_rfc8032_test_2() {
        let k = Key::ed25519("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c").unwrap();
        let sig = hex::decode(
            "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
        )
        .unwrap();
        assert!(k.verifies(&[0x72], &sig));
        assert!(!k.verifies(&[0x73], &sig));
        assert!(!k.verifies(&[0x72], &sig[..63]));
        assert_eq!(Key::ed25519("zz").unwrap_err(), KeyError::Ed25519);
        assert_eq!(Key::ed25519(&"00".repeat(31)).unwrap_err(), KeyError::Ed25519);
    }

    #[test]
    fn ecdsa_keys_parse_from_base64_der_or_pem_only() {
        use p256::ecdsa::signature::Signer as _;
        use p256::pkcs8::EncodePublicKey as _;
        let sk = p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap();
        let der = sk.verifying_key().to_public_key_der().unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_bytes());
        let k = Key::ecdsa_p256(&b64).unwrap();
        let pem = format!("-----BEGIN PUBLIC KEY-----\n{}\n{}\n-----END PUBLIC KEY-----\n", &b64[..64], &b64[64..]);
        assert!(matches!(Key::ecdsa_p256(&pem), Ok(Key::EcdsaP256(_))));
        let sig: p256::ecdsa::Signature = sk.sign(b"msg");
        assert!(k.verifies(b"msg", sig.to_der().as_bytes()));
        assert!(k.verifies(b"msg", &sig.to_bytes()));
        assert!(!k.verifies(b"msh", sig.to_der().as_bytes()));
        assert_eq!(Key::ecdsa_p256("bm90IGEga2V5").unwrap_err(), KeyError::EcdsaP256);
        assert_eq!(Key::ecdsa_p256("!!").unwrap_err(), KeyError::EcdsaP256);
    }
}
