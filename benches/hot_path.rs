//! Micro-benchmarks of the hot stages: verification per preset, route
//! matching, memory-store claim + commit.
//!
//!     cargo bench --bench hot_path

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use hookgate::config::{DedupeConfig, OnStoreError, StoreConfig, load_str};
use hookgate::dedupe::{ClaimOutcome, Store};
use hookgate::route;
use hookgate::verify::sign::SignRequest;
use hookgate::verify::{Delivery, Verifier};

fn verifier(provider: &str, secret: &str, extra: &str) -> Verifier {
    let text = format!("[sources.s]\npath = \"/s\"\nprovider = \"{provider}\"\nsecrets = [\"{secret}\"]\n{extra}\n");
    load_str(&text, &|_| None).expect("bench config").sources.remove(0).verifier
}

fn body(now: SystemTime) -> String {
    let ts = humantime::format_rfc3339_seconds(now);
    format!(
        r#"{{"id":"evt_1","type":"order.created","event":"order.created","timestamp":"{ts}","Timestamp":"{ts}","Event":"order.created","data":{{"id":"d1","name":"order.created","order":{{"id":"ord_123","amount":4200,"currency":"eur","items":[{{"sku":"a-1","qty":2}},{{"sku":"b-7","qty":1}}]}}}}}}"#
    )
}

/// The private key of the public-key presets' bench key pair.
const SEED: [u8; 32] = [11; 32];

fn ed25519_public() -> String {
    hex::encode(ed25519_dalek::SigningKey::from_bytes(&SEED).verifying_key().as_bytes())
}

fn p256_public() -> String {
    use base64::Engine as _;
    use p256::pkcs8::EncodePublicKey as _;
    let key = p256::ecdsa::SigningKey::from_slice(&SEED).expect("scalar");
    let der = key.verifying_key().to_public_key_der().expect("der");
    base64::engine::general_purpose::STANDARD.encode(der.as_bytes())
}

fn verification(c: &mut Criterion) {
    let now = SystemTime::now();
    let body = body(now);
    let presets = [
        ("tampa", verifier("tampa", "s", "")),
        ("standard-webhooks", verifier("standard-webhooks", "whsec_c2VjcmV0", "")),
        ("svix", verifier("svix", "whsec_c2VjcmV0", "")),
        ("github", verifier("github", "s", "")),
        ("stripe", verifier("stripe", "whsec_s", "")),
        ("slack", verifier("slack", "s", "")),
        ("shopify", verifier("shopify", "s", "")),
        ("tribe", verifier("tribe", "s", "")),
        ("zoom", verifier("zoom", "s", "")),
        ("tyk", verifier("tyk", "s", "[sources.s.verify]\nsignature_header = \"X-Tyk\"")),
        ("discord (ed25519)", verifier("discord", &ed25519_public(), "")),
        ("sendgrid (ecdsa-p256)", verifier("sendgrid", &p256_public(), "")),
    ];
    let private = hex::encode(SEED);
    let mut group = c.benchmark_group("verify");
    for (name, v) in &presets {
        let signed = v
            .sign(SignRequest {
                body: body.as_bytes(),
                id: Some("evt_1"),
                event_type: Some("order.created"),
                timestamp: None,
                now,
                private_key: Some(&private),
            })
            .expect("sign");
        let mut req = http::Request::builder().method("POST").uri("/s");
        for (k, val) in &signed.headers {
            req = req.header(k.as_str(), val.as_str());
        }
        let (head, ()) = req.body(()).expect("request").into_parts();
        let bytes = bytes::Bytes::from(body.clone());
        group.bench_function(*name, |b| {
            b.iter(|| {
                let d = Delivery::new(head.clone(), bytes.clone()).verify(v, now).expect("verifies");
                black_box(d.id().len())
            })
        });
    }
    group.finish();
}

fn routing(c: &mut Criterion) {
    let text = r#"
[sources.s]
path = "/s"
provider = "github"
secrets = ["s"]
[[sources.s.routes]]
events = ["dev.tampa.event.*", "dev.tampa.group.member_*"]
upstream = "http://127.0.0.1:1/a"
[[sources.s.routes]]
events = ["billing.*.created", "billing.invoice.*"]
upstream = "http://127.0.0.1:1/b"
[[sources.s.routes]]
events = ["*"]
upstream = "http://127.0.0.1:1/c"
"#;
    let routes = load_str(text, &|_| None).expect("config").sources.remove(0).routes;
    let headers = http::HeaderMap::new();
    let body = br#"{"id":"1","data":{"currency":"usd","amount":250}}"#;
    c.bench_function("route/first", |b| {
        b.iter(|| route::select(&routes, black_box("dev.tampa.event.created"), &headers, body).map(|r| r.0))
    });
    c.bench_function("route/fallthrough", |b| {
        b.iter(|| route::select(&routes, black_box("user.signup.completed"), &headers, body).map(|r| r.0))
    });
    let filtered =
        format!("{text}filter = {{ \"json:/data/currency\" = \"usd\", \"json:/data/amount\" = {{ gt = 0 }} }}\n");
    let routes = load_str(&filtered, &|_| None).expect("config").sources.remove(0).routes;
    c.bench_function("route/filter_two_fields", |b| {
        b.iter(|| route::select(&routes, black_box("user.signup.completed"), &headers, black_box(body)).map(|r| r.0))
    });
}

fn memory_store(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let cfg = DedupeConfig {
        store: StoreConfig::Memory { max_entries: 1_000_000 },
        ttl: Duration::from_secs(86_400),
        claim_ttl: Duration::from_secs(60),
        on_store_error: OnStoreError::Reject,
    };
    let store = rt.block_on(async { Store::from_config(&cfg) }).expect("store");
    let mut n = 0u64;
    c.bench_function("memory_store/claim+commit", |b| {
        b.iter(|| {
            n += 1;
            let id = n.to_string();
            rt.block_on(async {
                match store.claim("src", &id, None, &cfg).await.expect("claim") {
                    ClaimOutcome::Claimed(claim) => claim.commit().await.expect("commit"),
                    other => panic!("{other:?}"),
                }
            })
        })
    });
    c.bench_function("memory_store/duplicate", |b| {
        b.iter(|| {
            rt.block_on(async { matches!(store.claim("src", "1", None, &cfg).await, Ok(ClaimOutcome::Delivered)) })
        })
    });
}

criterion_group!(benches, verification, routing, memory_store);
criterion_main!(benches);
