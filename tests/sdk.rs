//! Presets against the providers' own SDKs (npm packages in tests/sdk, run by
//! `tests/sdk/sdk.mjs`): deliveries signed by the SDKs (or, where an SDK only
//! verifies, by Node's crypto the way the provider documents) pass the real
//! gateway, and deliveries signed by `hookgate sign`'s code pass the SDKs'
//! verifiers. `.ci/run` installs Node and `npm ci`s tests/sdk.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

mod common;

use std::path::Path;
use std::time::SystemTime;

use base64::Engine as _;
use common::*;
use hookgate::verify::sign::SignRequest;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};

const SVIX_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const PUBLIC_URL: &str = "https://hooks.example.com/webhooks";
/// Private keys (Ed25519 seed, P-256 scalar) of the public-key presets' test keys.
const SEED: [u8; 32] = [42; 32];

/// `sdk.mjs` started and past its imports (loading a dozen SDKs took over
/// 30 s on a slow CI machine): it has written `ready` and waits for its request.
struct Node {
    child: tokio::process::Child,
    stdout: tokio::io::BufReader<tokio::process::ChildStdout>,
}

async fn start_node() -> Node {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk");
    assert!(dir.join("node_modules/svix").exists(), "run `npm ci` in tests/sdk (bash .ci/run does)");
    let mut child = tokio::process::Command::new("node")
        .arg("sdk.mjs")
        .current_dir(&dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs");
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    tokio::time::timeout(std::time::Duration::from_secs(120), stdout.read_line(&mut line)).await.unwrap().unwrap();
    assert_eq!(line, "ready\n", "sdk.mjs did not start (its stderr is above)");
    Node { child, stdout }
}

impl Node {
    async fn ask(mut self, request: Value) -> Value {
        let mut stdin = self.child.stdin.take().unwrap();
        stdin.write_all(request.to_string().as_bytes()).await.unwrap();
        drop(stdin);
        let mut out = Vec::new();
        let read = async {
            self.stdout.read_to_end(&mut out).await.unwrap();
            self.child.wait().await.unwrap()
        };
        let status = tokio::time::timeout(std::time::Duration::from_secs(60), read).await.unwrap();
        assert!(status.success(), "sdk.mjs failed (its stderr is above)");
        serde_json::from_slice(&out).unwrap()
    }
}

/// One source per provider at `/webhooks/PROVIDER`, all routed to `upstream`.
fn config(sources: &[(String, String)], upstream: std::net::SocketAddr) -> String {
    let mut text = String::new();
    for (provider, secret) in sources {
        text.push_str(&format!(
            "[sources.{provider}]\npath = \"/webhooks/{provider}\"\nprovider = \"{provider}\"\nsecrets = [\"{secret}\"]\npublic_url = \"{PUBLIC_URL}/{provider}\"\n[[sources.{provider}.routes]]\nevents = [\"*\"]\nupstream = \"http://{upstream}/{provider}\"\n\n"
        ));
    }
    text
}

fn headers_of(v: &Value) -> Vec<(String, String)> {
    v.as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_signed_by_the_providers_sdks_pass_the_gateway() {
    let cases = start_node().await.ask(json!({ "op": "sign" })).await;
    let cases = cases.as_array().unwrap();
    let mut up = spawn_upstream(ok_upstream()).await;
    let sources: Vec<(String, String)> = cases
        .iter()
        .map(|c| (c["provider"].as_str().unwrap().to_owned(), c["secret"].as_str().unwrap().to_owned()))
        .collect();
    let gw = spawn_gateway(&config(&sources, up.addr)).await;
    for c in cases {
        let provider = c["provider"].as_str().unwrap();
        assert_eq!(
            c["url"].as_str().unwrap_or(&format!("{PUBLIC_URL}/{provider}")),
            format!("{PUBLIC_URL}/{provider}")
        );
        let body = c["body"].as_str().unwrap();
        let headers = headers_of(&c["headers"]);
        let r = send(&gw.url(&format!("/webhooks/{provider}")), "POST", &headers, body.to_owned()).await;
        assert_eq!(r.status, 200, "{provider}: {}", r.text());
        let got = up.next().await;
        assert_eq!(got.uri, format!("/{provider}"), "{provider}");
        assert_eq!(got.body, body.as_bytes(), "{provider}: forwarded as received");
        // Where the SDK says what the ID and event type are, the gateway reads the same.
        if let Some(expect) = c.get("expect") {
            assert_eq!(got.headers["x-hookgate-delivery-id"], expect["id"].as_str().unwrap(), "{provider}");
            assert_eq!(got.headers["x-hookgate-event-type"], expect["event_type"].as_str().unwrap(), "{provider}");
        }
        // The same delivery with one body byte changed is refused.
        let mut tampered = body.as_bytes().to_vec();
        let last = tampered.len() - 2;
        tampered[last] ^= 1;
        let r = send(&gw.url(&format!("/webhooks/{provider}")), "POST", &headers, tampered).await;
        assert_eq!(r.status, 401, "{provider} tampered: {}", r.text());
    }
    assert_eq!(cases.len(), 10, "every SDK signed a case");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_signed_by_hookgate_pass_the_providers_sdks() {
    // Node first: Paddle's SDK refuses a `ts` more than 5 s in its past, so
    // the signing (and Linear's `webhookTimestamp`) waits until the SDKs are loaded.
    let sdks = start_node().await;
    let ed = hex::encode(ed25519_dalek::SigningKey::from_bytes(&SEED).verifying_key().as_bytes());
    let ec = {
        use p256::pkcs8::EncodePublicKey as _;
        let der = p256::ecdsa::SigningKey::from_slice(&SEED).unwrap().verifying_key().to_public_key_der().unwrap();
        base64::engine::general_purpose::STANDARD.encode(der.as_bytes())
    };
    let now_ms = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis();
    let json_body = json!({ "type": "order.created", "event_type": "transaction.completed", "notification_id": "ntf_1", "data": { "id": "d1" } }).to_string();
    let cases: Vec<(&str, String, String)> = vec![
        ("svix", SVIX_SECRET.into(), json_body.clone()),
        ("clerk", SVIX_SECRET.into(), json_body.clone()),
        ("resend", SVIX_SECRET.into(), json_body.clone()),
        ("github", "gh-secret".into(), json_body.clone()),
        ("discord", ed.clone(), r#"{"id":"i_1","type":2}"#.into()),
        ("discord-events", ed, r#"{"version":1,"type":1,"event":{"type":"ENTITLEMENT_CREATE"}}"#.into()),
        ("sendgrid", ec, "[{\"event\":\"delivered\"}]\r\n".into()),
        (
            "twilio",
            "auth-token".into(),
            "To=%2B1800&From=%2B1234&Body=hello+world&Body=again&MediaUrl0=https%3A%2F%2Fx".into(),
        ),
        (
            "linear",
            "lin_wh_secret".into(),
            format!(r#"{{"action":"create","type":"Issue","webhookTimestamp":{now_ms}}}"#),
        ),
        ("paddle", "pdl_ntfset_secret".into(), json_body.clone()),
        ("hubspot", "hs-client-secret".into(), r#"[{"subscriptionType":"contact.creation"}]"#.into()),
        ("square", "sq-signature-key".into(), r#"{"event_id":"e1","type":"payment.created"}"#.into()),
    ];
    let mut up = spawn_upstream(ok_upstream()).await;
    let sources: Vec<(String, String)> = cases.iter().map(|(p, s, _)| (p.to_string(), s.clone())).collect();
    let text = config(&sources, up.addr);
    let cfg = common::config(&text);
    let gw = spawn_gateway(&text).await;
    let private = hex::encode(SEED);
    let (mut sdk_cases, mut signed_cases) = (Vec::new(), Vec::new());
    for (provider, secret, body) in &cases {
        let src = cfg.sources.iter().find(|s| s.name == *provider).unwrap();
        let signed = src
            .verifier
            .sign(SignRequest {
                body: body.as_bytes(),
                id: None,
                event_type: Some("order.created"),
                timestamp: None,
                now: SystemTime::now(),
                private_key: Some(&private),
            })
            .unwrap_or_else(|e| panic!("{provider}: {e}"));
        let headers: serde_json::Map<String, Value> =
            signed.headers.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
        let url = format!("{PUBLIC_URL}/{provider}");
        sdk_cases.push(json!({ "provider": provider, "secret": secret, "body": body, "headers": headers, "url": url }));
        let mut tampered = body.clone();
        tampered.insert(body.len() - 1, ' ');
        sdk_cases.push(json!({ "provider": provider, "tag": "-tampered", "secret": secret, "body": tampered, "headers": headers, "url": url }));
        signed_cases.push((provider, signed.headers, body));
    }
    // The SDKs first, straight after signing (Paddle's 5 s, above).
    let verdicts = sdks.ask(json!({ "op": "verify", "cases": sdk_cases })).await;
    // And the gateway takes what it signed.
    for (provider, headers, body) in signed_cases {
        let r = send(&gw.url(&format!("/webhooks/{provider}")), "POST", &headers, body.clone()).await;
        assert_eq!(r.status, 200, "{provider}: {}", r.text());
        assert_eq!(up.next().await.body, body.as_bytes(), "{provider}");
    }
    for (provider, _, _) in &cases {
        assert_eq!(verdicts[*provider], json!(true), "{provider}'s SDK refused hookgate's signature");
        assert_ne!(verdicts[format!("{provider}-tampered")], json!(true), "{provider}'s SDK accepted a tampered body");
    }
    gw.shutdown().await;
}
