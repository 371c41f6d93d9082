//! A `verify` table applied to a provider's [`Spec`]: a user's overrides in
//! `[sources.NAME.verify]`, and the presets themselves (`presets.toml` is
//! written in the same fields). Shared by [`super::validate`] and
//! [`super::presets`], so neither imports the other for it.

use http::HeaderName;

use super::errors::Errors;
use super::file::{Keys as _, VerifyFile};
use crate::verify::{
    Algorithm, Challenge, Encoding, Locator, Scheme, SecretFormat, SignatureFormat, Spec, Template, TimestampFormat,
};

/// Applies a `verify` table (a user's overrides, or a preset's fields) to `spec`.
pub(super) fn apply_overrides(errs: &mut Errors, path: &str, spec: &mut Spec, v: VerifyFile) {
    errs.unknown(path, &v.unknown, VerifyFile::KEYS);
    let p = |k: &str| format!("{path}.{k}");
    spec.scheme = errs.choice(
        &p("scheme"),
        v.scheme.as_deref(),
        spec.scheme,
        &[
            ("hmac", Scheme::Hmac),
            ("token", Scheme::Token),
            ("ed25519", Scheme::Ed25519),
            ("ecdsa-p256", Scheme::EcdsaP256),
            ("client-state", Scheme::ClientState),
        ],
    );
    if let Some(list) = v.signature_header {
        let mut found = Vec::new();
        for h in list.into_vec() {
            let loc = if h.contains(':') {
                Locator::parse(&h).ok().filter(|l| matches!(l, Locator::Header(_) | Locator::Json(_)))
            } else {
                HeaderName::from_bytes(h.trim().as_bytes()).ok().map(Locator::Header)
            };
            match loc {
                Some(l) => found.push(l),
                None => errs.push(&p("signature_header"), format!("invalid header name {h:?} (or json:/pointer)")),
            }
        }
        spec.signature = found;
    }
    spec.algorithm = errs.choice(
        &p("algorithm"),
        v.algorithm.as_deref(),
        spec.algorithm,
        &[("sha256", Algorithm::Sha256), ("sha1", Algorithm::Sha1), ("sha512", Algorithm::Sha512)],
    );
    spec.encoding = errs.choice(
        &p("encoding"),
        v.encoding.as_deref(),
        spec.encoding,
        &[("hex", Encoding::Hex), ("base64", Encoding::Base64)],
    );
    if let Some(prefix) = v.signature_prefix {
        spec.signature_prefix = prefix;
    }
    if v.signature_format.as_deref() == Some("stripe") {
        // Stripe's layout: `t=<unix>,v1=<sig>`.
        (spec.param_separator, spec.signature_param) = (',', "v1".to_owned());
    }
    spec.signature_format = errs.choice(
        &p("signature_format"),
        v.signature_format.as_deref(),
        spec.signature_format,
        &[
            ("single", SignatureFormat::Single),
            ("v1-list", SignatureFormat::V1List),
            ("params", SignatureFormat::Params),
            ("stripe", SignatureFormat::Params),
        ],
    );
    if let Some(sep) = v.param_separator.as_deref() {
        let mut chars = sep.chars();
        match (chars.next(), chars.next()) {
            (Some(c), None) if c != '=' => spec.param_separator = c,
            _ => errs.push(&p("param_separator"), format!("must be one character other than '=', got {sep:?}")),
        }
    }
    if let Some(name) = v.signature_param {
        if name.is_empty() || name.contains('=') {
            errs.push(&p("signature_param"), "must be a parameter name, e.g. \"v1\"");
        } else {
            spec.signature_param = name;
        }
    }
    spec.secret_format = errs.choice(
        &p("secret_format"),
        v.secret_format.as_deref(),
        spec.secret_format,
        &[("raw", SecretFormat::Raw), ("whsec-base64", SecretFormat::WhsecBase64)],
    );
    if let Some(t) = v.signed_payload.as_deref() {
        match Template::parse(t) {
            Ok(tpl) => spec.payload = tpl,
            Err(e) => errs.push(&p("signed_payload"), e),
        }
    }
    // A locator, or a list where the first found wins; "" or [] clears the field.
    let locators = |errs: &mut Errors, key: &str, list: Option<super::file::OneOrMany>, slot: &mut Vec<Locator>| {
        let Some(list) = list else { return };
        let mut found = Vec::new();
        for t in list.into_vec().iter().filter(|t| !t.is_empty()) {
            match Locator::parse(t) {
                Ok(Locator::Digest(_)) if key != "id" => errs.push(&p(key), "digest: is for IDs only"),
                Ok(l) => found.push(l),
                Err(e) => errs.push(&p(key), e),
            }
        }
        *slot = found;
    };
    locators(errs, "timestamp", v.timestamp, &mut spec.timestamp);
    locators(errs, "id", v.id, &mut spec.id);
    locators(errs, "event_type", v.event_type, &mut spec.event_type);
    spec.timestamp_format = errs.choice(
        &p("timestamp_format"),
        v.timestamp_format.as_deref(),
        spec.timestamp_format,
        &[("unix", TimestampFormat::Unix), ("unix_ms", TimestampFormat::UnixMs), ("rfc3339", TimestampFormat::Rfc3339)],
    );
    spec.url_decoded_too = errs.choice(
        &p("signed_url"),
        v.signed_url.as_deref(),
        spec.url_decoded_too,
        &[("as-received", false), ("as-received-or-decoded", true)],
    );
    if let Some(c) = v.challenge.as_deref() {
        match Challenge::parse(c) {
            Some(c) => spec.challenge = c,
            None => {
                let names: Vec<&str> = Challenge::NAMES.iter().map(|(n, _)| *n).collect();
                errs.push(
                    &p("challenge"),
                    format!("unknown challenge {c:?}; expected ping:EVENT, {}", names.join(", ")),
                );
            }
        }
    }
}
