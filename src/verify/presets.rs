//! Provider presets (SPEC §4): each fills a [`Spec`]; a source's `verify` table
//! then overrides single fields. Adding a provider means adding one arm here.

use std::time::Duration;

use http::HeaderName;

use super::{
    Algorithm, Challenge, Encoding, Locator, Scheme, SecretFormat, SignatureFormat, Spec, Template, TimestampFormat,
};

/// Every preset name `provider` accepts.
pub const NAMES: &[&str] =
    &["tampa", "standard-webhooks", "svix", "github", "stripe", "slack", "shopify", "tribe", "zoom", "tyk", "generic"];

const FIVE_MIN: Duration = Duration::from_secs(300);

fn tpl(text: &str) -> Template {
    Template::parse(text).expect("preset templates are valid")
}

fn headers(names: &[&'static str]) -> Vec<HeaderName> {
    names.iter().map(|n| HeaderName::from_static(n)).collect()
}

fn base() -> Spec {
    Spec {
        scheme: Scheme::Hmac,
        signature_headers: Vec::new(),
        algorithm: Algorithm::Sha256,
        encoding: Encoding::Hex,
        signature_prefix: String::new(),
        signature_format: SignatureFormat::Single,
        secret_format: SecretFormat::Raw,
        payload: tpl("{body}"),
        timestamp: Vec::new(),
        timestamp_format: TimestampFormat::Unix,
        tolerance: FIVE_MIN,
        id: Vec::new(),
        event_type: Vec::new(),
        challenge: Challenge::None,
    }
}

/// Standard Webhooks with the given header names, in order of preference.
fn standard_webhooks(sig: &[&'static str], ts: &[&'static str], id: &[&'static str]) -> Spec {
    Spec {
        signature_headers: headers(sig),
        encoding: Encoding::Base64,
        signature_format: SignatureFormat::V1List,
        secret_format: SecretFormat::WhsecBase64,
        payload: tpl("{id}.{timestamp}.{body}"),
        timestamp: headers(ts).into_iter().map(Locator::Header).collect(),
        id: headers(id).into_iter().map(Locator::Header).collect(),
        event_type: vec![Locator::json("/type")],
        ..base()
    }
}

/// The preset called `name`, or `None` if there is no such provider.
pub fn preset(name: &str) -> Option<Spec> {
    Some(match name {
        "generic" => base(),
        "tampa" => Spec {
            signature_headers: headers(&["x-webhook-signature"]),
            signature_prefix: "sha256=".into(),
            timestamp: vec![Locator::json("/timestamp")],
            timestamp_format: TimestampFormat::Rfc3339,
            id: vec![Locator::header("x-delivery-id"), Locator::json("/id")],
            event_type: vec![Locator::header("x-event-type"), Locator::json("/type")],
            challenge: Challenge::Ping("test.ping"),
            ..base()
        },
        "standard-webhooks" => standard_webhooks(&["webhook-signature"], &["webhook-timestamp"], &["webhook-id"]),
        "svix" => standard_webhooks(
            &["svix-signature", "webhook-signature"],
            &["svix-timestamp", "webhook-timestamp"],
            &["svix-id", "webhook-id"],
        ),
        "github" => Spec {
            signature_headers: headers(&["x-hub-signature-256"]),
            signature_prefix: "sha256=".into(),
            id: vec![Locator::header("x-github-delivery")],
            event_type: vec![Locator::header("x-github-event")],
            challenge: Challenge::Ping("ping"),
            ..base()
        },
        "stripe" => Spec {
            signature_headers: headers(&["stripe-signature"]),
            signature_format: SignatureFormat::Stripe,
            payload: tpl("{timestamp}.{body}"),
            timestamp: vec![Locator::SignatureParam],
            id: vec![Locator::json("/id")],
            event_type: vec![Locator::json("/type")],
            ..base()
        },
        "slack" => Spec {
            signature_headers: headers(&["x-slack-signature"]),
            signature_prefix: "v0=".into(),
            payload: tpl("v0:{timestamp}:{body}"),
            timestamp: vec![Locator::header("x-slack-request-timestamp")],
            id: vec![Locator::json("/event_id")],
            event_type: vec![Locator::json("/event/type"), Locator::json("/type")],
            challenge: Challenge::SlackUrlVerification,
            ..base()
        },
        "shopify" => Spec {
            signature_headers: headers(&["x-shopify-hmac-sha256", "shopify-hmac-sha256"]),
            encoding: Encoding::Base64,
            id: vec![Locator::header("x-shopify-webhook-id"), Locator::header("x-shopify-event-id")],
            event_type: vec![Locator::header("x-shopify-topic")],
            ..base()
        },
        "tribe" => Spec {
            signature_headers: headers(&["x-tribe-signature", "x-bettermode-signature"]),
            payload: tpl("{timestamp}:{body}"),
            timestamp: vec![
                Locator::header("x-tribe-request-timestamp"),
                Locator::header("x-bettermode-request-timestamp"),
            ],
            timestamp_format: TimestampFormat::UnixMs,
            tolerance: Duration::from_secs(15 * 60),
            id: vec![Locator::json("/data/id")],
            event_type: vec![Locator::json("/data/name")],
            challenge: Challenge::TribeTest,
            ..base()
        },
        "zoom" => Spec {
            signature_headers: headers(&["x-zm-signature"]),
            signature_prefix: "v0=".into(),
            payload: tpl("v0:{timestamp}:{body}"),
            timestamp: vec![Locator::header("x-zm-request-timestamp")],
            event_type: vec![Locator::json("/event")],
            challenge: Challenge::ZoomUrlValidation,
            ..base()
        },
        "tyk" => Spec {
            scheme: Scheme::Token,
            timestamp: vec![Locator::json("/Timestamp")],
            timestamp_format: TimestampFormat::Rfc3339,
            event_type: vec![Locator::json("/Event")],
            ..base()
        },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_name_has_a_preset() {
        for name in NAMES {
            assert!(preset(name).is_some(), "{name}");
        }
        assert!(preset("nope").is_none());
    }

    #[test]
    fn only_generic_and_tyk_need_a_signature_header() {
        for name in NAMES {
            let spec = preset(name).unwrap();
            assert_eq!(spec.signature_headers.is_empty(), matches!(*name, "generic" | "tyk"), "{name}");
        }
    }
}
