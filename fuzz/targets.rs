//! The fuzz targets' bodies, shared by the libFuzzer binaries (`fuzz_targets/`)
//! and by `tests/fuzz_regressions.rs`, which replays every input kept under
//! `fuzz/regressions/TARGET/` in the normal test suite.
//!
//! Each function must not panic for any input; where a second implementation
//! exists (serde_json for JSON pointers), it also checks the two agree.

use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hookgate::config::load_str;
use hookgate::verify::json;
use hookgate::verify::template::{Input, Template};
use hookgate::verify::{Delivery, Locator, TimestampFormat, Verifier};

/// One verifier per preset (public-key ones with a fixed test key), and a
/// generic one, built once.
static VERIFIERS: LazyLock<Vec<Verifier>> = LazyLock::new(|| {
    let ed = "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c";
    let ec = {
        use base64::Engine as _;
        use p256::pkcs8::EncodePublicKey as _;
        let key = p256::ecdsa::SigningKey::from_slice(&[7; 32]).expect("scalar");
        let der = key.verifying_key().to_public_key_der().expect("der");
        base64::engine::general_purpose::STANDARD.encode(der.as_bytes())
    };
    let ec = ec.as_str();
    hookgate::config::presets::all()
        .iter()
        .filter_map(|p| {
            let secret = match p.scheme_label() {
                "ed25519" => ed,
                "ecdsa-p256" => ec,
                _ if p.name.contains("webhooks") || ["svix", "clerk", "resend"].contains(&p.name.as_str()) => {
                    "whsec_c2VjcmV0"
                }
                _ => "secret",
            };
            let extra = if p.spec.signature.is_empty() { "[sources.s.verify]\nsignature_header = \"X-Sig\"\n" } else { "" };
            let text = format!(
                "[sources.s]\npath = \"/s\"\nprovider = \"{}\"\nsecrets = [\"{secret}\"]\npublic_url = \"https://h.example/s\"\nverify_token = \"t\"\n{extra}",
                p.name
            );
            load_str(&text, &|_| None).ok().map(|mut c| c.sources.remove(0).verifier)
        })
        .collect()
});

/// How many presets the `verify` target covers (all of them; checked by the regression test).
pub fn verifier_count() -> usize {
    VERIFIERS.len()
}

/// Splits fuzz input into `n` parts at 0xff bytes (missing parts are empty).
fn parts(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut out: Vec<&[u8]> = data.splitn(n, |b| *b == 0xff).collect();
    out.resize(n, &[]);
    out
}

/// Signature and timestamp header parsing, and the whole check, for every preset:
/// input = signature header value 0xff timestamp value 0xff body.
pub fn verify(data: &[u8]) {
    let p = parts(data, 3);
    let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    for v in VERIFIERS.iter() {
        let mut req = http::Request::builder().method("POST").uri("/s?q=1");
        for loc in v.spec.signature.iter().chain(&v.spec.timestamp) {
            if let Locator::Header(name) = loc
                && let Ok(value) =
                    http::HeaderValue::from_bytes(if v.spec.signature.contains(loc) { p[0] } else { p[1] })
            {
                req = req.header(name, value);
            }
        }
        let Ok(r) = req.body(()) else { continue };
        let (head, ()) = r.into_parts();
        let _ = Delivery::new(head, bytes::Bytes::copy_from_slice(p[2])).verify(v, now);
    }
}

/// Timestamp parsing in every format, and the freshness check on what it gives.
pub fn timestamp(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for f in [TimestampFormat::Unix, TimestampFormat::UnixMs, TimestampFormat::Rfc3339] {
        if let Some(ms) = f.to_unix_ms(text) {
            let _ = hookgate::verify::timestamp::is_fresh(ms, SystemTime::now(), Duration::from_secs(300));
        }
    }
}

/// JSON pointer reads agree with serde_json's on every document it accepts:
/// input = pointer 0xff body.
pub fn json_pointer(data: &[u8]) {
    let p = parts(data, 2);
    let Ok(ptr) = std::str::from_utf8(p[0]) else { return };
    let body = p[1];
    let got = json::pointer_text(body, ptr);
    let _ = json::pointer_raw(body, ptr);
    // serde_json is the reference wherever it parses the whole body.
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        let want = match v.pointer(ptr) {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        // Numbers are returned verbatim (`1e3`), serde_json renders them (`1000.0`):
        // compare strings exactly and numbers by presence.
        match (&got, &want) {
            (Some(g), Some(w)) if v.pointer(ptr).is_some_and(serde_json::Value::is_number) => {
                assert!(!g.is_empty() && !w.is_empty());
            }
            _ => assert_eq!(got.as_deref(), want.as_deref(), "pointer {ptr:?}"),
        }
    }
}

/// Signed-payload templates and locators: parsing, and feeding a parsed template:
/// input = template 0xff body.
pub fn template(data: &[u8]) {
    let p = parts(data, 2);
    let Ok(text) = std::str::from_utf8(p[0]) else { return };
    let _ = Locator::parse(text);
    if let Ok(t) = Template::parse(text) {
        let input = Input { body: p[1], timestamp: b"1", id: b"i", public_url: "https://h/s", query: Some("a=b") };
        let mut n = 0usize;
        t.feed(&input, |part| n += part.len());
    }
}

/// Config loading: any text gives a config or a list of errors, never a panic.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = load_str(text, &|name| (name == "SET").then(|| "value".to_owned()));
}
