//! Verification against the providers' published vectors, and per-preset
//! negative cases built with `sign` (so each case changes exactly one thing).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use proptest::prelude::*;

use super::sign::SignRequest;
use super::*;
use crate::config::load_str;

const VECTORS: &str = include_str!("../../tests/data/vectors.json");

pub(crate) fn verifier(provider: &str, secrets: &[&str], extra: &str) -> Verifier {
    let list: Vec<String> = secrets.iter().map(|s| format!("{s:?}")).collect();
    let text =
        format!("[sources.s]\npath = \"/s\"\nprovider = \"{provider}\"\nsecrets = [{}]\n{extra}\n", list.join(", "));
    match load_str(&text, &|_| None) {
        Ok(mut cfg) => cfg.sources.remove(0).verifier,
        Err(e) => panic!("{provider}: {e}"),
    }
}

fn delivery(headers: &[(String, String)], body: impl Into<Bytes>) -> Delivery<Unverified> {
    let mut req = http::Request::builder().method("POST").uri("/s");
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let (head, ()) = req.body(()).unwrap().into_parts();
    Delivery::new(head, body.into())
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// Every published vector verifies with the clock fixed at its timestamp.
#[test]
fn published_vectors_verify() {
    let doc: serde_json::Value = serde_json::from_str(VECTORS).unwrap();
    let vectors = doc["vectors"].as_array().unwrap();
    assert!(vectors.len() >= 10);
    for (i, v) in vectors.iter().enumerate() {
        let provider = v["provider"].as_str().unwrap();
        let secret = v["secret"].as_str().unwrap();
        let body = match (&v["body"], &v["body_repeat"]) {
            (serde_json::Value::String(s), _) => s.clone(),
            (_, r) => r["char"].as_str().unwrap().repeat(r["count"].as_u64().unwrap() as usize),
        };
        let headers_json = if v["headers"].is_object() { &v["headers"] } else { &v["derived_headers"] };
        let headers: Vec<(String, String)> = headers_json
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect();
        let ts: u64 = match &v["timestamp"] {
            serde_json::Value::String(t) if t.len() == 13 => t.parse::<u64>().unwrap() / 1000,
            serde_json::Value::String(t) => t.parse().unwrap(),
            _ => headers
                .iter()
                .find(|(k, _)| k.ends_with("timestamp"))
                .map_or(1_700_000_000, |(_, t)| t.parse().unwrap()),
        };
        let extra = match provider {
            "tyk" => "[sources.s.verify]\nsignature_header = \"x-tyk-token\"",
            _ => v["extra"].as_str().unwrap_or(""),
        };
        let ver = verifier(provider, &[secret], extra);
        let mut d = delivery(&headers, body.clone())
            .verify(&ver, at(ts))
            .unwrap_or_else(|e| panic!("vector {i} ({provider}): {e:?}"));
        if let Some(expected) = v.get("expected_response") {
            let got =
                crate::challenge::answer_for(&mut d, &ver).unwrap_or_else(|| panic!("vector {i}: no challenge answer"));
            assert_eq!(
                got,
                crate::challenge::Answer::Json(expected.clone()),
                "vector {i} ({provider}) challenge answer"
            );
        }
        // The same vector with one signed byte changed must fail (`tamper`: which
        // text to change where the first byte is not signed; null: nothing is).
        let tampered = match &v["tamper"] {
            serde_json::Value::Null if v.get("tamper").is_some() => continue,
            serde_json::Value::Array(pair) => {
                body.replacen(pair[0].as_str().unwrap(), pair[1].as_str().unwrap(), 1).into_bytes()
            }
            _ => {
                let mut b = body.into_bytes();
                b[0] ^= 1;
                b
            }
        };
        assert_eq!(
            delivery(&headers, tampered).verify(&ver, at(ts)).unwrap_err(),
            VerifyError::InvalidSignature,
            "vector {i} ({provider}) tampered"
        );
    }
}

#[test]
fn stripe_docs_header_with_v0_parses_and_any_v1_may_match() {
    let ver = verifier("stripe", &["whsec_test_secret"], "");
    let body = "{\n  \"id\": \"evt_test_webhook\",\n  \"object\": \"event\",\n  \"data\": { \"object\": { \"id\": \"rdr_123\", \"object\": \"terminal.reader\" } }\n}";
    let good = "d21d91b425674689e03346536b8fec6384a8721d43ebe269a1689a3ad22cba9c";
    let bad = "5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd";
    let h = |v: String| vec![("Stripe-Signature".to_owned(), v)];
    let ok = delivery(&h(format!("t=1492774577,v1={bad},v1={good},v0=6ffbb59b")), body).verify(&ver, at(1_492_774_577));
    assert_eq!(ok.unwrap().id(), "evt_test_webhook");
    let err = delivery(&h(format!("t=1492774577,v1={bad},v0={good}")), body).verify(&ver, at(1_492_774_577));
    assert_eq!(err.unwrap_err(), VerifyError::InvalidSignature, "v0 must never be accepted");
    // Without t= the signed payload cannot be rebuilt: 401 like any wrong signature.
    let err = delivery(&h(format!("v1={good}")), body).verify(&ver, at(1_492_774_577));
    assert_eq!(err.unwrap_err(), VerifyError::InvalidSignature);
    let err = delivery(&h(format!("t=abc,v1={good}")), body).verify(&ver, at(1_492_774_577));
    assert_eq!(err.unwrap_err(), VerifyError::MalformedTimestamp);
}

#[test]
fn standard_webhooks_list_ignores_other_versions() {
    let ver = verifier("standard-webhooks", &["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"], "");
    let base = [
        ("webhook-id".to_owned(), "msg_p5jXN8AQM9LWM0D4loKWxJek".to_owned()),
        ("webhook-timestamp".to_owned(), "1614265330".to_owned()),
    ];
    let with = |sig: &str| {
        let mut h = base.to_vec();
        h.push(("webhook-signature".into(), sig.into()));
        delivery(&h, "{\"test\": 2432232314}").verify(&ver, at(1_614_265_330))
    };
    let good = "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
    assert!(with(&format!("v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= v2,abc v1,{good}")).is_ok());
    assert_eq!(with(&format!("v2,{good}")).unwrap_err(), VerifyError::InvalidSignature);
    assert_eq!(with("v1,not*base64").unwrap_err(), VerifyError::MalformedSignature);
    assert_eq!(with("nocomma").unwrap_err(), VerifyError::MalformedSignature);
}

#[test]
fn svix_headers_win_over_webhook_headers() {
    let ver = verifier("svix", &["whsec_plJ3nmyCDGBKInavdOK15jsl"], "");
    let body = "{\"event_type\":\"ping\",\"data\":{\"success\":true}}";
    let h = vec![
        ("svix-id".to_owned(), "msg_loFOjxBNrRLzqYUf".to_owned()),
        ("svix-timestamp".to_owned(), "1731705121".to_owned()),
        ("svix-signature".to_owned(), "v1,rAvfW3dJ/X/qxhsaXPOyyCGmRKsaKWcsNccKXlIktD0=".to_owned()),
        ("webhook-id".to_owned(), "other".to_owned()),
        ("webhook-timestamp".to_owned(), "1".to_owned()),
    ];
    assert_eq!(delivery(&h, body).verify(&ver, at(1_731_705_121)).unwrap().id(), "msg_loFOjxBNrRLzqYUf");
    // The webhook-* names alone also work.
    let h: Vec<_> = h[..3].iter().map(|(k, v)| (k.replace("svix-", "webhook-"), v.clone())).collect();
    assert!(delivery(&h, body).verify(&ver, at(1_731_705_121)).is_ok());
}

#[test]
fn tribe_and_shopify_accept_both_header_eras() {
    let ver = verifier("tribe", &["9e2bb174144943d98df25f7fbd89753d"], "");
    let body = "{\"networkId\":\"jpLyIGaMxu\",\"context\":\"NETWORK\",\"currentSettings\":[],\"type\":\"TEST\",\"data\":{\"challenge\":\"22b4c546752f27207399d5f835a90808b3c6a34c\"}}";
    let h = vec![
        ("X-Bettermode-Request-Timestamp".to_owned(), "1649315900181".to_owned()),
        (
            "X-Bettermode-Signature".to_owned(),
            "b6544929f924aad3553f79a75a186162053da99b3215e75c5359a0a3d91fb285".to_owned(),
        ),
    ];
    assert!(delivery(&h, body).verify(&ver, at(1_649_315_900)).is_ok());
    // 15 minutes of tolerance, in milliseconds.
    assert!(delivery(&h, body).verify(&ver, at(1_649_315_900 + 15 * 60)).is_ok());
    assert_eq!(delivery(&h, body).verify(&ver, at(1_649_315_902 + 15 * 60)).unwrap_err(), VerifyError::StaleTimestamp);

    let ver = verifier("shopify", &["test_secret_key"], "");
    let h = vec![("shopify-hmac-sha256".to_owned(), "B23tXN681gZ0qIWNRrgtzBE9XSDo5yaUu6wfmhu3a7g=".to_owned())];
    assert!(delivery(&h, "{\"foo\": \"bar\"}").verify(&ver, at(1)).is_ok());
}

#[test]
fn non_json_bodies_fall_back_to_body_hash_and_empty_type() {
    let ver = verifier("slack", &["8f742231b10e8888abcd99yyyzzz85a5"], "");
    let signed = ver
        .sign(SignRequest {
            body: b"a=1&b=2",
            id: None,
            event_type: None,
            timestamp: None,
            now: SystemTime::now(),
            private_key: None,
        })
        .unwrap();
    let d = delivery(&signed.headers, "a=1&b=2").verify(&ver, SystemTime::now()).unwrap();
    assert_eq!(d.id(), body_hash(b"a=1&b=2"));
    assert_eq!(d.event_type(), "");
}

/// The ID and event type as header values for `X-Hookgate-*`: the request's own
/// values when headers gave them (the same bytes, shared), else made from the text.
#[test]
fn id_and_event_type_values_follow_where_they_were_found() {
    let ver = verifier("github", &["s"], "");
    let now = SystemTime::now();
    let body = r#"{"id":"from-json","type":"json.type"}"#;
    let s = ver
        .sign(SignRequest {
            body: body.as_bytes(),
            id: Some("hdr-id"),
            event_type: Some("hdr.type"),
            timestamp: None,
            now,
            private_key: None,
        })
        .unwrap();
    let d = delivery(&s.headers, body).verify(&ver, now).unwrap();
    assert_eq!((d.id(), d.event_type()), ("hdr-id", "hdr.type"));
    let id = d.id_value().unwrap();
    assert_eq!(id, "hdr-id");
    let shared = d.head.headers.get("x-github-delivery").unwrap();
    assert_eq!(id.as_bytes().as_ptr(), shared.as_bytes().as_ptr(), "the header's own bytes, not a copy");
    assert_eq!(d.event_type_value().unwrap(), "hdr.type");

    // tampa reads both from the signed body; its headers only have to agree.
    let ver = verifier("tampa", &["s"], "");
    let (headers, body) = tampa_signed(&ver, "from-json", "json.type", now);
    let d = delivery(&headers, body).verify(&ver, now).unwrap();
    assert_eq!(d.id_value().unwrap(), "from-json");
    assert_eq!(d.event_type_value().unwrap(), "json.type");
}

/// A tampa body with `id` and `type`, signed now as Tampa.dev's sender signs
/// it (with its header copies): (headers, body).
fn tampa_signed(ver: &Verifier, id: &str, event_type: &str, now: SystemTime) -> (Vec<(String, String)>, String) {
    let ts = time::OffsetDateTime::from(now).format(&time::format_description::well_known::Rfc3339).unwrap();
    let body = format!(r#"{{"id":"{id}","type":"{event_type}","timestamp":"{ts}"}}"#);
    let request =
        SignRequest { body: body.as_bytes(), id: None, event_type: None, timestamp: None, now, private_key: None };
    (ver.sign(request).unwrap().headers, body)
}

/// SPEC §10: tampa's X-Delivery-ID / X-Event-Type are not signed. The values
/// are read from the signed body; a header that repeats them is fine, one that
/// differs (a fresh ID to dodge dedupe, another type to reach another
/// upstream) is `UnsignedMismatch`, and the header alone never decides.
#[test]
fn unsigned_headers_that_disagree_with_the_signed_body_are_refused() {
    let ver = verifier("tampa", &["s"], "");
    let now = SystemTime::now();
    let (base, body) = tampa_signed(&ver, "evt_1", "order.created", now);
    let with = |extra: &[(&str, &str)]| {
        let mut h: Vec<_> =
            base.iter().filter(|(k, _)| !extra.iter().any(|(e, _)| k.eq_ignore_ascii_case(e))).cloned().collect();
        h.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        delivery(&h, body.clone()).verify(&ver, now).map(|d| (d.id().to_owned(), d.event_type().to_owned()))
    };
    let ok = Ok(("evt_1".to_owned(), "order.created".to_owned()));
    assert_eq!(with(&[]), ok);
    assert_eq!(with(&[("X-Delivery-ID", "evt_1"), ("X-Event-Type", "order.created")]), ok, "the real sender's copies");
    assert_eq!(with(&[("X-Delivery-ID", "fresh-id")]), Err(VerifyError::UnsignedMismatch));
    assert_eq!(with(&[("X-Event-Type", "billing.invoice.paid")]), Err(VerifyError::UnsignedMismatch));
    assert_eq!(with(&[("X-Delivery-ID", "")]), ok, "an empty header repeats nothing");
    // A second copy of the header (the app may read the last one) is checked too.
    assert_eq!(with(&[("X-Delivery-ID", "evt_1"), ("x-delivery-id", "fresh-id")]), Err(VerifyError::UnsignedMismatch));

    // A body without the field: the header cannot supply it.
    let body = body.replace(r#""id":"evt_1","#, "");
    let request =
        SignRequest { body: body.as_bytes(), id: None, event_type: None, timestamp: None, now, private_key: None };
    let mut h = ver.sign(request).unwrap().headers;
    h.retain(|(k, _)| !k.eq_ignore_ascii_case("x-delivery-id"));
    h.push(("X-Delivery-ID".into(), "chosen".into()));
    assert_eq!(delivery(&h, body).verify(&ver, now).err(), Some(VerifyError::UnsignedMismatch));
}

/// SPEC §10: which fields each kind of locator leaves unsigned, as `presets
/// NAME` and `check` report them.
#[test]
fn fields_are_classified_signed_or_unsigned_from_the_template() {
    let unsigned = |provider: &str, extra: &str| -> Vec<&'static str> {
        let v = verifier(provider, &["whsec_dGVzdA=="], extra);
        v.plan.unsigned().into_iter().map(|(f, _)| f.name()).collect()
    };
    assert!(unsigned("tampa", "").is_empty(), "json fields of a signed body");
    assert!(unsigned("stripe", "").is_empty(), "signature:t feeds {{timestamp}}");
    assert!(unsigned("svix", "").is_empty(), "svix-id feeds {{id}}");
    assert_eq!(unsigned("github", ""), ["id", "event_type"]);
    assert_eq!(unsigned("shopify", ""), ["id", "event_type"]);
    assert_eq!(unsigned("slack", ""), Vec::<&str>::new());
    assert!(unsigned("twitch", "").is_empty(), "the subscription type is read from the signed body");
    assert_eq!(unsigned("linear", ""), ["id", "event_type"], "Linear-Delivery and Linear-Event are headers");
    // A token proves nothing about the body.
    assert_eq!(
        unsigned("tyk", "[sources.s.verify]\nsignature_header = \"X-Token\"\nid = \"json:/id\""),
        ["id", "event_type", "timestamp"]
    );
    // Mailgun signs a timestamp and a token, not the body.
    assert_eq!(unsigned("mailgun", ""), ["event_type"]);
    // digest: IDs of signed JSON parts are signed; one header part makes them unsigned.
    assert!(
        unsigned("generic", "[sources.s.verify]\nsignature_header = \"X-S\"\nid = \"digest:json:/a,json:/b\"")
            .is_empty()
    );
    assert_eq!(
        unsigned("generic", "[sources.s.verify]\nsignature_header = \"X-S\"\nid = \"digest:json:/a,header:x-b\""),
        ["id"]
    );

    // dedupe_body's default: on exactly when the ID is located and unsigned.
    let src = |provider: &str, extra: &str| {
        let text =
            format!("[sources.s]\npath = \"/s\"\nprovider = \"{provider}\"\nsecrets = [\"whsec_dGVzdA==\"]\n{extra}\n");
        load_str(&text, &|_| None).unwrap().sources.remove(0)
    };
    assert!(src("github", "").dedupe_body);
    assert!(src("gitlab", "").dedupe_body);
    assert!(!src("github", "dedupe_body = false").dedupe_body);
    assert!(!src("tampa", "").dedupe_body);
    assert!(!src("stripe", "").dedupe_body);
    assert!(!src("zoom", "").dedupe_body, "the ID is the body digest already");
    assert!(src("tampa", "dedupe_body = true").dedupe_body);
}

/// SPEC §10: a located ID or event type over 256 bytes is refused (400) at
/// verification, before any store is touched.
#[test]
fn ids_and_event_types_over_256_bytes_are_refused() {
    let ver = verifier("github", &["s"], "");
    let now = SystemTime::now();
    let sign = |id: &str, et: &str| {
        let s = ver
            .sign(SignRequest {
                body: b"{}",
                id: Some(id),
                event_type: Some(et),
                timestamp: None,
                now,
                private_key: None,
            })
            .unwrap();
        delivery(&s.headers, &b"{}"[..]).verify(&ver, now).map(|d| d.id().len())
    };
    assert_eq!(sign(&"i".repeat(256), "push"), Ok(256));
    assert_eq!(sign(&"i".repeat(257), "push"), Err(VerifyError::FieldTooLong));
    assert_eq!(sign("id", &"e".repeat(257)), Err(VerifyError::FieldTooLong));
    assert_eq!(sign(&"i".repeat(30_000), "push"), Err(VerifyError::FieldTooLong));
}

/// Private keys of the two test key pairs of the public-key presets.
const SEEDS: [[u8; 32]; 2] = [[7; 32], [9; 32]];

fn public_key(scheme: Scheme, seed: &[u8; 32]) -> String {
    use p256::pkcs8::EncodePublicKey as _;
    match scheme {
        Scheme::Ed25519 => hex::encode(ed25519_dalek::SigningKey::from_bytes(seed).verifying_key().as_bytes()),
        _ => {
            let der = p256::ecdsa::SigningKey::from_slice(seed).unwrap().verifying_key().to_public_key_der().unwrap();
            base64::engine::general_purpose::STANDARD.encode(der.as_bytes())
        }
    }
}

/// Every preset with two secrets, in a form the negative cases can sign for.
fn signable() -> Vec<(&'static str, Verifier)> {
    crate::config::presets::all()
        .iter()
        // Nothing to sign: msgraph's body carries a shared clientState (tests/presets.rs).
        .filter(|p| p.spec.scheme != Scheme::ClientState)
        .map(|p| {
            let name = p.name.as_str();
            let secrets: Vec<String> = match p.spec.scheme {
                Scheme::Ed25519 | Scheme::EcdsaP256 => SEEDS.iter().map(|s| public_key(p.spec.scheme, s)).collect(),
                _ if p.spec.secret_format == SecretFormat::WhsecBase64 => {
                    vec!["whsec_c2VjcmV0LW9uZQ==".into(), "whsec_c2VjcmV0LXR3bw==".into()]
                }
                _ => vec!["secret-one".into(), "secret-two".into()],
            };
            let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
            let mut extra = "public_url = \"https://hooks.example/s\"\nverify_token = \"vt\"\n".to_owned();
            extra.push_str(match name {
                "tyk" => "[sources.s.verify]\nsignature_header = \"X-Tyk-Token\"",
                "generic" => "[sources.s.verify]\nsignature_header = \"X-Sig\"\nalgorithm = \"sha512\"\nencoding = \"base64\"\nsigned_payload = \"{id}|{timestamp}|{body}\"\ntimestamp = \"header:X-Ts\"\ntimestamp_format = \"unix_ms\"\nid = \"header:X-Id\"\nevent_type = \"json:/kind\"",
                _ => "",
            });
            (name, verifier(name, &secrets, &extra))
        })
        .collect()
}

const NOW: u64 = 1_700_000_000;

/// A body with the event type `order.created` wherever some preset reads it.
fn body_for(name: &str, now: SystemTime) -> String {
    let ts = humantime::format_rfc3339_seconds(now);
    let secs = now.duration_since(UNIX_EPOCH).unwrap().as_secs();
    match name {
        "pagerduty" => r#"{"event":{"id":"evt_1","event_type":"order.created"}}"#.to_owned(),
        "discord-events" => r#"{"version":1,"type":1,"event":{"type":"order.created"}}"#.to_owned(),
        "hubspot" => r#"[{"eventId":1,"subscriptionType":"order.created"}]"#.to_owned(),
        "mailgun" => format!(
            r#"{{"signature":{{"timestamp":"{secs}","token":"tok_1"}},"event-data":{{"event":"order.created"}}}}"#
        ),
        _ => format!(
            "{{\"id\":\"evt_1\",\"type\":\"order.created\",\"timestamp\":\"{ts}\",\"Timestamp\":\"{ts}\",\"Event\":\"order.created\",\"event\":\"order.created\",\"kind\":\"order.created\",\"object\":\"order.created\",\"topic\":\"order.created\",\"event_type\":\"order.created\",\"meta\":{{\"event_name\":\"order.created\"}},\"subscription\":{{\"type\":\"order.created\"}},\"webhookTimestamp\":{ms},\"data\":{{\"id\":\"d1\",\"name\":\"order.created\"}}}}",
            ms = secs * 1000
        ),
    }
}

fn signed_for(name: &str, v: &Verifier, key: usize, now: SystemTime) -> (Vec<(String, String)>, String) {
    let body = body_for(name, now);
    let mut v = v.clone();
    v.keys.rotate_left(key);
    let private = hex::encode(SEEDS[key]);
    let s = v
        .sign(SignRequest {
            body: body.as_bytes(),
            id: Some("evt_1"),
            event_type: Some("order.created"),
            timestamp: None,
            now,
            private_key: Some(&private),
        })
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let body = s.body.map_or(body, |b| String::from_utf8(b).unwrap());
    (s.headers, body)
}

/// The signature header's name, for presets that sign in a header.
fn sig_header(v: &Verifier) -> Option<&str> {
    match v.spec.signature.first()? {
        Locator::Header(h) => Some(h.as_str()),
        _ => None,
    }
}

#[test]
fn every_preset_accepts_its_own_signature_with_either_secret() {
    for (name, v) in signable() {
        for key in 0..2 {
            let (h, body) = signed_for(name, &v, key, at(NOW));
            let d = delivery(&h, body).verify(&v, at(NOW)).unwrap_or_else(|e| panic!("{name} key {key}: {e:?}"));
            assert_eq!(d.secret_index(), key, "{name}");
            if !v.spec.event_type.is_empty() {
                assert_eq!(d.event_type(), "order.created", "{name}");
            }
        }
    }
}

#[test]
fn every_preset_rejects_tampering_wrong_secrets_and_bad_headers() {
    for (name, v) in signable() {
        let (h, body) = signed_for(name, &v, 0, at(NOW));
        // Tampered body (a token scheme does not sign the body; Mailgun signs only timestamp and token).
        if v.spec.scheme != Scheme::Token && name != "mailgun" {
            let tampered = body.replace("order.created", "order.cancel");
            assert_eq!(
                delivery(&h, tampered).verify(&v, at(NOW)).unwrap_err(),
                VerifyError::InvalidSignature,
                "{name}"
            );
        }
        // Wrong secret only.
        let other = verifier_like(name, &v);
        assert_eq!(
            delivery(&h, body.clone()).verify(&other, at(NOW)).unwrap_err(),
            VerifyError::InvalidSignature,
            "{name}"
        );
        // Signature header missing.
        let Some(sig_name) = sig_header(&v) else { continue };
        let without: Vec<_> = h.iter().filter(|(k, _)| !k.eq_ignore_ascii_case(sig_name)).cloned().collect();
        assert_eq!(
            delivery(&without, body.clone()).verify(&v, at(NOW)).unwrap_err(),
            VerifyError::MissingSignature,
            "{name}"
        );
        // Undecodable signature (token schemes have nothing to decode).
        if v.spec.scheme != Scheme::Token {
            let garbled: Vec<_> =
                h.iter()
                    .map(|(k, val)| {
                        if k.eq_ignore_ascii_case(sig_name) {
                            (k.clone(), garble(&v))
                        } else {
                            (k.clone(), val.clone())
                        }
                    })
                    .collect();
            assert_eq!(
                delivery(&garbled, body.clone()).verify(&v, at(NOW)).unwrap_err(),
                VerifyError::MalformedSignature,
                "{name}"
            );
        }
    }
}

/// A signature header value of the right shape whose signature decodes in no encoding.
fn garble(v: &Verifier) -> String {
    match v.spec.signature_format {
        SignatureFormat::Single => format!("{}~~~~", v.spec.signature_prefix),
        SignatureFormat::V1List => "v1,~~~~".to_owned(),
        SignatureFormat::Params => match v.spec.timestamp.first() {
            Some(Locator::SignatureParam(t)) => {
                format!("{t}={NOW}{}{}=~~~~", v.spec.param_separator, v.spec.signature_param)
            }
            _ => format!("{}=~~~~", v.spec.signature_param),
        },
    }
}

/// The same spec with other secrets.
fn verifier_like(name: &str, v: &Verifier) -> Verifier {
    let mut o = signable().into_iter().find(|(n, _)| *n == name).unwrap().1;
    o.keys = match &v.keys[0] {
        Key::Token(_) => vec![Key::Token(b"another".to_vec().into_boxed_slice())],
        Key::Ed25519(_) => vec![Key::ed25519(&public_key(Scheme::Ed25519, &[3; 32])).unwrap()],
        Key::EcdsaP256(_) => vec![Key::ecdsa_p256(&public_key(Scheme::EcdsaP256, &[3; 32])).unwrap()],
        _ => vec![Key::hmac(v.spec.algorithm, b"another")],
    };
    o
}

#[test]
fn presets_with_timestamps_enforce_tolerance_both_ways() {
    for (name, v) in signable() {
        if v.spec.timestamp.is_empty() {
            continue;
        }
        let tol = v.spec.tolerance.as_secs();
        let (h, body) = signed_for(name, &v, 0, at(NOW));
        assert!(delivery(&h, body.clone()).verify(&v, at(NOW + tol)).is_ok(), "{name}: edge of window");
        assert_eq!(
            delivery(&h, body.clone()).verify(&v, at(NOW + tol + 1)).unwrap_err(),
            VerifyError::StaleTimestamp,
            "{name}: stale"
        );
        assert_eq!(
            delivery(&h, body.clone()).verify(&v, at(NOW - tol - 1)).unwrap_err(),
            VerifyError::StaleTimestamp,
            "{name}: future"
        );
    }
}

#[test]
fn header_timestamps_that_are_not_numbers_are_400() {
    for (name, v) in signable() {
        let Some(Locator::Header(ts_header)) = v.spec.timestamp.first() else {
            continue;
        };
        let (h, body) = signed_for(name, &v, 0, at(NOW));
        let bad: Vec<_> = h
            .iter()
            .map(|(k, val)| {
                if k.eq_ignore_ascii_case(ts_header.as_str()) {
                    (k.clone(), "soon".to_owned())
                } else {
                    (k.clone(), val.clone())
                }
            })
            .collect();
        assert_eq!(
            delivery(&bad, body.clone()).verify(&v, at(NOW)).unwrap_err(),
            VerifyError::MalformedTimestamp,
            "{name}"
        );
        let missing: Vec<_> = h.iter().filter(|(k, _)| !k.eq_ignore_ascii_case(ts_header.as_str())).cloned().collect();
        let err = delivery(&missing, body).verify(&v, at(NOW)).unwrap_err();
        // Without the timestamp the signed payload differs, so the signature fails first.
        assert!(matches!(err, VerifyError::InvalidSignature | VerifyError::MissingTimestamp), "{name}: {err:?}");
    }
}

#[test]
fn a_short_prefix_mismatch_is_malformed_not_a_panic() {
    let v = verifier("github", &["s"], "");
    let h = vec![("X-Hub-Signature-256".to_owned(), "md5=abcd".to_owned())];
    assert_eq!(delivery(&h, "x").verify(&v, at(NOW)).unwrap_err(), VerifyError::MalformedSignature);
    let h = vec![("X-Hub-Signature-256".to_owned(), format!("sha256={}", "ab".repeat(100)))];
    assert_eq!(delivery(&h, "x").verify(&v, at(NOW)).unwrap_err(), VerifyError::InvalidSignature);
    // Odd length, a non-hex digit, and too long with a non-hex digit: not hex at all.
    for sig in ["a".repeat(63), format!("{}g", "a".repeat(63)), format!("{}zz", "ab".repeat(100))] {
        let h = vec![("X-Hub-Signature-256".to_owned(), format!("sha256={sig}"))];
        assert_eq!(delivery(&h, "x").verify(&v, at(NOW)).unwrap_err(), VerifyError::MalformedSignature, "{sig}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Changing any one byte of the body, the timestamp or the ID fails verification.
    #[test]
    fn tampering_any_signed_byte_fails(which in 0usize..3, pos in any::<prop::sample::Index>(), flip in 1u8..=255) {
        let v = verifier("standard-webhooks", &["whsec_c2VjcmV0LW9uZQ=="], "");
        let now = at(NOW);
        let body = body_for("standard-webhooks", now);
        let signed = v.sign(SignRequest { body: body.as_bytes(), id: Some("msg_abc"), event_type: None, timestamp: None, now, private_key: None }).unwrap();
        let mut parts: Vec<(String, Vec<u8>)> = signed.headers.iter().map(|(k, v)| (k.clone(), v.clone().into_bytes())).collect();
        parts.push(("(body)".to_owned(), body.into_bytes()));
        let name = ["(body)", "webhook-timestamp", "webhook-id"][which];
        let target = &mut parts.iter_mut().find(|(k, _)| k == name).unwrap().1;
        let i = pos.index(target.len());
        target[i] ^= flip;
        let mut req = http::Request::builder().method("POST").uri("/s");
        let mut body = Vec::new();
        for (k, val) in parts {
            if k == "(body)" {
                body = val;
            } else {
                let hv = http::HeaderValue::from_bytes(&val);
                prop_assume!(hv.is_ok()); // a byte no HTTP header can carry
                req = req.header(k.as_str(), hv.unwrap());
            }
        }
        let (head, ()) = req.body(()).unwrap().into_parts();
        prop_assert!(Delivery::new(head, Bytes::from(body)).verify(&v, now).is_err());
    }

    /// Header parsers and the template engine never panic.
    #[test]
    fn parsers_never_panic(sig in "\\PC{0,80}", ts in "\\PC{0,20}", tpl in "\\PC{0,30}", body in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = Template::parse(&tpl);
        let _ = Locator::parse(&tpl);
        for (_, v) in signable() {
            let mut h = vec![];
            for loc in &v.spec.signature {
                if let Locator::Header(name) = loc {
                    h.push((name.to_string(), sig.clone()));
                }
            }
            for loc in &v.spec.timestamp {
                if let Locator::Header(n) = loc {
                    h.push((n.to_string(), ts.clone()));
                }
            }
            if h.iter().all(|(_, val)| http::HeaderValue::from_str(val).is_ok()) {
                let _ = delivery(&h, body.clone()).verify(&v, at(NOW));
            }
        }
    }
}

/// `generic` expresses the multi-signature presets by hand and passes their vectors.
#[test]
fn generic_expresses_stripe_and_standard_webhooks_by_hand() {
    let stripe = verifier(
        "generic",
        &["whsec_test_secret"],
        "[sources.s.verify]\nsignature_header = \"Stripe-Signature\"\nsignature_format = \"stripe\"\nsigned_payload = \"{timestamp}.{body}\"\ntimestamp = \"signature:t\"\ntimestamp_format = \"unix\"\nid = \"json:/id\"\nevent_type = \"json:/type\"",
    );
    let body = "{\n  \"id\": \"evt_test_webhook\",\n  \"object\": \"event\",\n  \"data\": { \"object\": { \"id\": \"rdr_123\", \"object\": \"terminal.reader\" } }\n}";
    let h = vec![(
        "Stripe-Signature".to_owned(),
        "t=1492774577,v1=d21d91b425674689e03346536b8fec6384a8721d43ebe269a1689a3ad22cba9c".to_owned(),
    )];
    assert_eq!(delivery(&h, body).verify(&stripe, at(1_492_774_577)).unwrap().id(), "evt_test_webhook");
    assert_eq!(delivery(&h, body).verify(&stripe, at(1_492_774_577 + 301)).unwrap_err(), VerifyError::StaleTimestamp);

    let sw = verifier(
        "generic",
        &["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
        "[sources.s.verify]\nsignature_header = \"webhook-signature\"\nsignature_format = \"v1-list\"\nencoding = \"base64\"\nsecret_format = \"whsec-base64\"\nsigned_payload = \"{id}.{timestamp}.{body}\"\ntimestamp = \"header:webhook-timestamp\"\nid = \"header:webhook-id\"",
    );
    let h = vec![
        ("webhook-id".to_owned(), "msg_p5jXN8AQM9LWM0D4loKWxJek".to_owned()),
        ("webhook-timestamp".to_owned(), "1614265330".to_owned()),
        ("webhook-signature".to_owned(), "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=".to_owned()),
    ];
    assert!(delivery(&h, "{\"test\": 2432232314}").verify(&sw, at(1_614_265_330)).is_ok());
}

/// `digest:` IDs (Tampa.dev re-sends an event under a fresh delivery ID): the
/// same located values give the same ID, any change gives another.
#[test]
fn digest_ids_are_stable_across_resends_and_follow_the_located_values() {
    let extra = "[sources.s.verify]\nid = \"digest:json:/type,json:/timestamp,json:/data\"";
    let v = verifier("tampa", &["s"], extra);
    let now = at(NOW);
    let ts = humantime::format_rfc3339_seconds(now);
    let body =
        |id: &str, data: &str| format!(r#"{{"id":"{id}","type":"member.joined","timestamp":"{ts}","data":{data}}}"#);
    let id_of = |b: String| {
        let h = v.sign(SignRequest {
            body: b.as_bytes(),
            id: None,
            event_type: None,
            timestamp: None,
            now,
            private_key: None,
        });
        delivery(&h.unwrap().headers, b).verify(&v, now).unwrap().id().to_owned()
    };
    let first = id_of(body("a1", r#"{"user":"u1"}"#));
    assert_eq!(first, id_of(body("b2", r#"{"user":"u1"}"#)), "a re-send with a new delivery ID is the same event");
    assert_ne!(first, id_of(body("a1", r#"{"user":"u2"}"#)));
    // The definition: SHA-256 over each value's exact bytes after its 8-byte big-endian length.
    let mut h = Sha256::new();
    for part in ["\"member.joined\"".to_owned(), format!("\"{ts}\""), r#"{"user":"u1"}"#.to_owned()] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    assert_eq!(first, hex::encode(h.finalize()));
    // An absent value differs from an empty one.
    let v2 =
        verifier("generic", &["s"], "[sources.s.verify]\nsignature_header = \"X-Sig\"\nid = \"digest:header:x-a\"");
    let ids: Vec<String> = [vec![], vec![("x-a".to_owned(), String::new())]]
        .into_iter()
        .map(|extra| {
            let mut hd = v2
                .sign(SignRequest { body: b"{}", id: None, event_type: None, timestamp: None, now, private_key: None })
                .unwrap()
                .headers;
            hd.extend(extra);
            delivery(&hd, "{}").verify(&v2, now).unwrap().id().to_owned()
        })
        .collect();
    assert_ne!(ids[0], ids[1]);
}

/// SPEC §13: an unreadable entry beside a valid one in a signature list does not
/// fail the delivery (the standardwebhooks, Stripe and PagerDuty libraries skip
/// it); a list with no readable entry is still malformed.
#[test]
fn signature_lists_skip_unreadable_entries_beside_a_valid_one() {
    let now = SystemTime::now();
    for (provider, header, junk, pattern) in [
        ("standard-webhooks", "webhook-signature", "v1,!!!not-base64 junk", "{junk} {sig}"),
        ("svix", "svix-signature", "v1,@@", "{sig} {junk}"),
        ("stripe", "stripe-signature", "v1=zz-not-hex,junk", "{sig},{junk}"),
        ("pagerduty", "x-pagerduty-signature", "v1=xyz", "{junk},{sig}"),
    ] {
        let ver = verifier(provider, &["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"], "");
        let body = r#"{"id":"evt_1","type":"t","event":{"id":"e1","event_type":"t"}}"#;
        let signed = ver
            .sign(SignRequest {
                body: body.as_bytes(),
                id: None,
                event_type: None,
                timestamp: None,
                now,
                private_key: None,
            })
            .unwrap();
        let valid = signed.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(header)).unwrap().1.clone();
        let with_sig = |value: String| {
            let mut h: Vec<_> =
                signed.headers.iter().filter(|(k, _)| !k.eq_ignore_ascii_case(header)).cloned().collect();
            h.push((header.to_owned(), value));
            delivery(&h, body).verify(&ver, now).map(|_| ())
        };
        assert_eq!(with_sig(pattern.replace("{junk}", junk).replace("{sig}", &valid)), Ok(()), "{provider}");
        assert_eq!(with_sig(junk.to_owned()), Err(VerifyError::MalformedSignature), "{provider}: junk alone");
    }
}

/// SPEC §13: HubSpot's docs sign the URI with some escapes decoded, its npm
/// SDK signs it as received: both are accepted, nothing else.
#[test]
fn hubspot_accepts_the_uri_as_received_or_with_its_escapes_decoded() {
    use hmac::Mac as _;
    let ver = verifier("hubspot", &["client-secret"], "public_url = \"https://hooks.example.com/hs\"");
    let now = SystemTime::now();
    let ts = now.duration_since(UNIX_EPOCH).unwrap().as_millis().to_string();
    let body = r#"[{"eventId":1,"subscriptionType":"contact.creation"}]"#;
    let sign = |url: &str| {
        let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"client-secret").unwrap();
        m.update(format!("POST{url}{body}{ts}").as_bytes());
        base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes())
    };
    let request = |sig: String| {
        let (head, ()) = http::Request::builder()
            .method("POST")
            .uri("/hs?email=jane%40example.com&ref=a%3Ab")
            .header("X-HubSpot-Signature-v3", sig)
            .header("X-HubSpot-Request-Timestamp", ts.as_str())
            .body(())
            .unwrap()
            .into_parts();
        Delivery::new(head, Bytes::from(body)).verify(&ver, now).map(|_| ())
    };
    assert_eq!(request(sign("https://hooks.example.com/hs?email=jane%40example.com&ref=a%3Ab")), Ok(()), "as received");
    assert_eq!(request(sign("https://hooks.example.com/hs?email=jane@example.com&ref=a:b")), Ok(()), "decoded");
    assert_eq!(
        request(sign("https://hooks.example.com/hs?email=jane@example.com&ref=a%3Ab")),
        Err(VerifyError::InvalidSignature),
        "half decoded is neither"
    );
    // Other presets do not try the decoded form.
    assert!(!verifier("square", &["k"], "public_url = \"https://h/s\"").spec.url_decoded_too);
}
