//! Provider challenges and test pings end to end (SPEC §4): answered by the
//! gateway after verification, never forwarded; an unsigned one gets 401.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

mod common;

use common::*;
use serde_json::json;

fn source(name: &str, provider: &str, secret: &str, upstream: std::net::SocketAddr, extra: &str) -> String {
    format!(
        "[sources.{name}]\npath = \"/{name}\"\nprovider = \"{provider}\"\nsecrets = [\"{secret}\"]\n{extra}\n[[sources.{name}.routes]]\nevents = [\"*\"]\nupstream = \"http://{upstream}/{name}\"\n"
    )
}

#[tokio::test]
async fn every_challenge_is_answered_after_verification() {
    let up = spawn_upstream(ok_upstream()).await;
    let a = up.addr;
    let cfg = [
        source("slack", "slack", "slack-secret", a, ""),
        source("tribe", "tribe", "tribe-secret", a, ""),
        source("zoom", "zoom", "secretValueTest", a, ""),
        source("github", "github", "gh-secret", a, ""),
        source("tampa", "tampa", "tampa-secret", a, ""),
    ]
    .concat();
    let gw = spawn_gateway(&cfg).await;

    let cases: Vec<(&str, String, Option<&str>, serde_json::Value)> = vec![
        (
            "slack",
            r#"{"token":"t","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#.into(),
            None,
            json!({"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"}),
        ),
        (
            "tribe",
            r#"{"networkId":"n","context":"NETWORK","currentSettings":[],"type":"TEST","data":{"challenge":"22b4c546"}}"#.into(),
            None,
            json!({"type": "TEST", "status": "SUCCEEDED", "data": {"challenge": "22b4c546"}}),
        ),
        (
            "zoom",
            r#"{"payload":{"plainToken":"qgg8vlvZRS6UYooatFL8Aw"},"event_ts":1654503849680,"event":"endpoint.url_validation"}"#.into(),
            None,
            json!({"plainToken": "qgg8vlvZRS6UYooatFL8Aw", "encryptedToken": "70c1f2e2e6ca2d39297490d1f9142c7d701415ea8e6151f6562a08fa657a40ff"}),
        ),
        ("github", r#"{"zen":"Keep it logically awesome.","hook_id":1}"#.into(), Some("ping"), json!({"ok": true})),
        ("tampa", tampa_body("evt_ping", "test.ping"), None, json!({"ok": true})),
    ];
    for (src, body, event, want) in cases {
        let r = gw.deliver(src, &body, None, event).await;
        assert_eq!(r.status, 200, "{src}: {}", r.text());
        assert_eq!(r.headers["content-type"], "application/json", "{src}");
        assert_eq!(r.json(), want, "{src}");
        // Unsigned: refused before any challenge logic.
        let r = send(&gw.url(&format!("/{src}")), "POST", &[], body.clone()).await;
        assert_eq!(r.status, 401, "{src} unsigned");
        // Wrongly signed: refused too.
        let mut headers = gw.sign(src, &body, None, event);
        let mut tampered = body.clone().into_bytes();
        tampered[2] ^= 1;
        headers.retain(|(k, _)| k != "content-type");
        let r = send(&gw.url(&format!("/{src}")), "POST", &headers, tampered).await;
        assert_eq!(r.status, 401, "{src} wrongly signed");
    }
    assert_eq!(up.hits(), 0, "challenges are never forwarded");
    gw.shutdown().await;
}

#[tokio::test]
async fn ordinary_events_of_challenge_providers_are_forwarded() {
    let mut up = spawn_upstream(ok_upstream()).await;
    let a = up.addr;
    let cfg = [
        source("slack", "slack", "s", a, ""),
        source("github", "github", "g", a, ""),
        source("stripe", "stripe", "whsec_test_secret", a, ""),
        source("shopify", "shopify", "sh", a, ""),
        source("svix", "svix", "whsec_plJ3nmyCDGBKInavdOK15jsl", a, ""),
        source("tyk", "tyk", "tyk-token", a, "[sources.tyk.verify]\nsignature_header = \"X-Tyk-Secret\""),
    ]
    .concat();
    let gw = spawn_gateway(&cfg).await;
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
    let cases: Vec<(&str, String, Option<&str>, &str)> = vec![
        (
            "slack",
            r#"{"type":"event_callback","event_id":"Ev1","event":{"type":"app_mention"}}"#.into(),
            None,
            "app_mention",
        ),
        ("github", r#"{"action":"opened"}"#.into(), Some("pull_request"), "pull_request"),
        ("stripe", r#"{"id":"evt_1","type":"invoice.paid"}"#.into(), None, "invoice.paid"),
        ("shopify", r#"{"id":1}"#.into(), Some("orders/create"), "orders/create"),
        ("svix", r#"{"type":"user.created"}"#.into(), None, "user.created"),
        ("tyk", format!(r#"{{"Event":"QuotaExceeded","Timestamp":"{now}"}}"#), None, "QuotaExceeded"),
    ];
    for (src, body, event, want_type) in cases {
        let r = gw.deliver(src, &body, None, event).await;
        assert_eq!(r.status, 200, "{src}: {}", r.text());
        let got = up.next().await;
        assert_eq!(got.uri, format!("/{src}"));
        assert_eq!(got.headers["x-hookgate-event-type"], want_type, "{src}");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn slack_slash_commands_are_form_encoded_and_still_forwarded() {
    let mut up = spawn_upstream(ok_upstream()).await;
    let gw = spawn_gateway(&source("slack", "slack", "s", up.addr, "")).await;
    let body = "token=x&team_id=T1&command=%2Fdeploy&text=now";
    let r = gw.deliver("slack", body, None, None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let got = up.next().await;
    assert_eq!(got.headers["x-hookgate-event-type"], "");
    assert_eq!(got.headers["x-hookgate-delivery-id"], hookgate::verify::body_hash(body.as_bytes()).as_str());
    gw.shutdown().await;
}

#[tokio::test]
async fn rotation_accepts_either_secret_and_metrics_show_which() {
    let up = spawn_upstream(ok_upstream()).await;
    let cfg = format!(
        "[sources.gh]\npath = \"/gh\"\nprovider = \"github\"\nsecrets = [\"new-secret\", \"old-secret\"]\n[[sources.gh.routes]]\nevents = [\"*\"]\nupstream = \"http://{}/\"\n",
        up.addr
    );
    let gw = spawn_gateway(&cfg).await;
    // Sign with the old secret only.
    let old = common::config(&cfg.replace("[\"new-secret\", \"old-secret\"]", "[\"old-secret\"]"));
    let body = r#"{"action":"x"}"#;
    let headers = sign_with(&old, "gh", body, Some("d-1"), Some("push"), std::time::SystemTime::now());
    let r = send(&gw.url("/gh"), "POST", &headers, body).await;
    assert_eq!(r.status, 200);
    let m = gw.metrics().await;
    let old_id = hookgate::verify::key_id("old-secret");
    let line = format!("hookgate_secret_matches_total{{source=\"gh\",index=\"1\",id=\"{old_id}\"}} 1");
    assert!(m.contains(&line), "{m}");
    assert!(!m.contains("old-secret") && !m.contains("new-secret"), "no secret in the metrics");
    gw.shutdown().await;

    // Rotated: the old secret moved to position 0; its id stays with it.
    let rotated = cfg.replace("[\"new-secret\", \"old-secret\"]", "[\"old-secret\", \"newer-secret\"]");
    let gw = spawn_gateway(&rotated).await;
    assert_eq!(send(&gw.url("/gh"), "POST", &headers, body).await.status, 200);
    let m = gw.metrics().await;
    let line = format!("hookgate_secret_matches_total{{source=\"gh\",index=\"0\",id=\"{old_id}\"}} 1");
    assert!(m.contains(&line), "{m}");
    gw.shutdown().await;
}

/// Private key (Ed25519 seed) of the Discord test application.
const DISCORD_SEED: [u8; 32] = [5; 32];

fn signed(gw: &Gateway, source: &str, body: &str, headers: &[(&str, &str)]) -> Vec<(String, String)> {
    let src = gw.config.sources.iter().find(|s| s.name == source).unwrap();
    let private = hex::encode(DISCORD_SEED);
    let mut out = src
        .verifier
        .sign(hookgate::verify::sign::SignRequest {
            body: body.as_bytes(),
            id: None,
            event_type: None,
            timestamp: None,
            now: std::time::SystemTime::now(),
            private_key: Some(&private),
        })
        .unwrap()
        .headers;
    out.extend(h(headers));
    out
}

#[tokio::test]
async fn round_two_challenges_are_answered_and_events_forwarded() {
    let mut up = spawn_upstream(ok_upstream()).await;
    let a = up.addr;
    let discord_key = hex::encode(ed25519_dalek::SigningKey::from_bytes(&DISCORD_SEED).verifying_key().as_bytes());
    let cfg = [
        source("discord", "discord", &discord_key, a, ""),
        source("discord_events", "discord-events", &discord_key, a, ""),
        source("twitch", "twitch", "twitch-secret", a, ""),
    ]
    .concat();
    let gw = spawn_gateway(&cfg).await;

    // Discord Interactions PING -> {"type":1}; an unsigned PING -> 401 (Discord checks this).
    let ping = r#"{"id":"i_1","application_id":"1","type":1,"version":1}"#;
    let r = send(&gw.url("/discord"), "POST", &signed(&gw, "discord", ping, &[]), ping).await;
    assert_eq!((r.status.as_u16(), r.json()), (200, json!({"type": 1})));
    let r = send(
        &gw.url("/discord"),
        "POST",
        &h(&[("X-Signature-Ed25519", &"00".repeat(64)), ("X-Signature-Timestamp", "1")]),
        ping,
    )
    .await;
    assert_eq!(r.status, 401);
    // Webhook Events PING (type 0) -> 204 and no body.
    let ping0 = r#"{"version":1,"application_id":"1","type":0}"#;
    let r = send(&gw.url("/discord_events"), "POST", &signed(&gw, "discord_events", ping0, &[]), ping0).await;
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
    // Twitch webhook_callback_verification -> the challenge as text.
    let body = r#"{"challenge":"pogchamp-kappa-360noscope-vohiyo","subscription":{"type":"channel.follow"}}"#;
    let headers = gw.sign("twitch", body, Some("msg-1"), None);
    let mut headers_v = headers.clone();
    headers_v.extend(h(&[("Twitch-Eventsub-Message-Type", "webhook_callback_verification")]));
    let r = send(&gw.url("/twitch"), "POST", &headers_v, body).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "pogchamp-kappa-360noscope-vohiyo"));
    assert!(r.headers["content-type"].to_str().unwrap().starts_with("text/plain"));
    assert_eq!(up.hits(), 0, "challenges are never forwarded");

    // Ordinary events are forwarded.
    let cmd = r#"{"id":"i_2","type":2,"data":{"name":"hi"}}"#;
    let r = send(&gw.url("/discord"), "POST", &signed(&gw, "discord", cmd, &[]), cmd).await;
    assert_eq!(r.status, 200);
    assert_eq!(up.next().await.body, cmd.as_bytes());
    let note = r#"{"subscription":{"type":"channel.follow"},"event":{"user_id":"1"}}"#;
    let mut headers_n = gw.sign("twitch", note, Some("msg-2"), None);
    headers_n.extend(h(&[
        ("Twitch-Eventsub-Message-Type", "notification"),
        ("Twitch-Eventsub-Subscription-Type", "channel.follow"),
    ]));
    let r = send(&gw.url("/twitch"), "POST", &headers_n, note).await;
    assert_eq!(r.status, 200);
    assert_eq!(up.next().await.headers["x-hookgate-event-type"], "channel.follow");
    gw.shutdown().await;
}

#[tokio::test]
async fn get_handshakes_for_meta_and_dropbox_only() {
    let mut up = spawn_upstream(ok_upstream()).await;
    let a = up.addr;
    let cfg = [
        source("meta", "meta", "app-secret", a, "verify_token = \"my-verify-token\""),
        source("dropbox", "dropbox", "dbx-secret", a, ""),
        source("github", "github", "gh", a, ""),
    ]
    .concat();
    let gw = spawn_gateway(&cfg).await;
    let get = async |path: &str| send(&gw.url(path), "GET", &[], "").await;

    let r = get("/meta?hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=my-verify-token").await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "1158201444"));
    assert!(r.headers["content-type"].to_str().unwrap().starts_with("text/plain"));
    let r = get("/meta?hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=wrong").await;
    assert_eq!((r.status.as_u16(), r.error_code().as_str()), (403, "handshake_refused"));
    let r = get("/meta?hub.mode=unsubscribe&hub.challenge=1&hub.verify_token=my-verify-token").await;
    assert_eq!(r.status, 403);
    let r = get("/meta?hub.mode=subscribe&hub.verify_token=my-verify-token").await;
    assert_eq!((r.status.as_u16(), r.error_code().as_str()), (400, "bad_handshake"));

    let r = get("/dropbox?challenge=abc%3Cscript%3E").await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "abc<script>"));
    assert_eq!(r.headers["x-content-type-options"], "nosniff");
    assert!(r.headers["content-type"].to_str().unwrap().starts_with("text/plain"));
    assert_eq!(get("/dropbox").await.status, 400);

    // Other sources keep GET 405, and other methods stay 405 on handshake sources.
    assert_eq!(get("/github").await.status, 405);
    assert_eq!(send(&gw.url("/meta"), "PUT", &[], "").await.status, 405);
    assert_eq!(up.hits(), 0);

    // Meta's and Dropbox's signed POSTs are forwarded.
    for src in ["meta", "dropbox"] {
        let body = r#"{"object":"page","entry":[]}"#;
        let r = gw.deliver(src, body, None, None).await;
        assert_eq!(r.status, 200, "{src}: {}", r.text());
        assert_eq!(up.next().await.body, body.as_bytes());
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn url_signing_presets_need_public_url_and_meta_needs_verify_token() {
    let a = "127.0.0.1:9".parse().unwrap();
    for (provider, key) in
        [("twilio", "public_url"), ("hubspot", "public_url"), ("square", "public_url"), ("meta", "verify_token")]
    {
        let err = hookgate::config::load_str(&source("s", provider, "x", a, ""), &|_| None).unwrap_err();
        assert!(err.0.iter().any(|e| e.starts_with(&format!("sources.s.{key}: required"))), "{provider}: {err}");
    }
    let err = hookgate::config::load_str(&source("s", "square", "x", a, "public_url = \"/relative\""), &|_| None)
        .unwrap_err();
    assert!(err.0[0].starts_with("sources.s.public_url: \"/relative\" is not an absolute"), "{err}");
    let err = hookgate::config::load_str(&source("s", "discord", "not-a-key", a, ""), &|_| None).unwrap_err();
    assert!(err.0[0].starts_with("sources.s.secrets[0]: not an Ed25519 public key"), "{err}");
    assert!(!err.0[0].contains("not-a-key"), "the message never echoes the secret");
    let err = hookgate::config::load_str(&source("s", "sendgrid", "bm9wZQ==", a, ""), &|_| None).unwrap_err();
    assert!(err.0[0].starts_with("sources.s.secrets[0]: not an ECDSA P-256 public key"), "{err}");
}

/// SPEC §13: Slack's signed `ssl_check=1` form POST is answered 200 with an
/// empty body (as Bolt does) and not forwarded; unsigned, it is refused.
#[tokio::test]
async fn slack_ssl_check_is_answered_and_not_forwarded() {
    let up = spawn_upstream(ok_upstream()).await;
    let gw = spawn_gateway(&source("slack", "slack", "s", up.addr, "")).await;
    let body = "ssl_check=1&token=legacy-verification-token";
    let r = gw.deliver("slack", body, None, None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.body.is_empty(), "{}", r.text());
    let r = send(&gw.url("/slack"), "POST", &h(&[("X-Slack-Signature", "v0=00")]), body).await;
    assert_eq!(r.status, 401);
    // A slash command that merely mentions ssl_check is still forwarded.
    assert_eq!(gw.deliver("slack", "command=%2Fx&text=ssl_check%3D1", None, None).await.text(), "upstream-ok");
    assert_eq!(up.hits(), 1);
    assert!(gw.metrics().await.contains("hookgate_requests_total{source=\"slack\",outcome=\"challenge\"} 1"));
    gw.shutdown().await;
}

/// SPEC §13: HEAD on a source's path (Tyk's portal probe, no configured
/// headers) answers 200 with no body, forwards nothing, counts as a challenge;
/// other methods stay 405 and say which are allowed.
#[tokio::test]
async fn head_probes_are_answered_without_forwarding() {
    let up = spawn_upstream(ok_upstream()).await;
    let gw = spawn_gateway(&source(
        "tyk",
        "tyk",
        "tok",
        up.addr,
        "[sources.tyk.verify]\nsignature_header = \"X-Tyk-Token\"",
    ))
    .await;
    let r = send(&gw.url("/tyk"), "HEAD", &[], "").await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    let r = send(&gw.url("/tyk"), "PUT", &[], "").await;
    assert_eq!(r.status, 405);
    assert_eq!(r.headers["allow"], "POST, HEAD");
    assert_eq!(send(&gw.url("/nope"), "HEAD", &[], "").await.status, 404, "unknown paths stay 404");
    assert_eq!(up.hits(), 0);
    assert!(gw.metrics().await.contains("hookgate_requests_total{source=\"tyk\",outcome=\"challenge\"} 1"));
    gw.shutdown().await;
}

/// SPEC §13: Shopify's "Events" deliveries name their headers without `X-`:
/// the ID and topic are still read, so topic routes match.
#[tokio::test]
async fn shopify_event_headers_without_the_x_prefix_keep_id_and_topic() {
    let mut up = spawn_upstream(ok_upstream()).await;
    let cfg = format!(
        "[sources.shop]\npath = \"/shop\"\nprovider = \"shopify\"\nsecrets = [\"s\"]\nunrouted = \"reject\"\n[[sources.shop.routes]]\nevents = [\"orders/*\"]\nupstream = \"http://{}/orders\"\n",
        up.addr
    );
    let gw = spawn_gateway(&cfg).await;
    let body = r#"{"id":820982911946154508}"#;
    let mac = {
        use hmac::Mac as _;
        let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"s").unwrap();
        m.update(body.as_bytes());
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, m.finalize().into_bytes())
    };
    let headers = h(&[
        ("shopify-hmac-sha256", &mac),
        ("shopify-topic", "orders/create"),
        ("shopify-webhook-id", "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043"),
        ("shopify-event-id", "98880550-7158-44d4-b7cd-2c97c8a091b5"),
        ("shopify-api-version", "2025-01"),
    ]);
    let r = send(&gw.url("/shop"), "POST", &headers, body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let got = up.next().await;
    assert_eq!(got.uri, "/orders");
    assert_eq!(got.headers["x-hookgate-event-type"], "orders/create");
    assert_eq!(got.headers["x-hookgate-delivery-id"], "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043");
    gw.shutdown().await;
}

/// SPEC §13 `msgraph`: Microsoft Graph's validation POST (`?validationToken=`)
/// is echoed as text/plain before anything else; notifications pass when every
/// item's `clientState` is the source's `verify_token` (no `secrets` needed).
/// Request shapes from Microsoft's "Set up notifications for changes in
/// resource data" docs.
#[tokio::test]
async fn msgraph_validation_and_client_state() {
    let mut up = spawn_upstream(ok_upstream()).await;
    let cfg = format!(
        "[sources.graph]\npath = \"/graph\"\nprovider = \"msgraph\"\nverify_token = \"SecretClientState\"\n[[sources.graph.routes]]\nevents = [\"created\", \"updated\"]\nupstream = \"http://{}/graph\"\n",
        up.addr
    );
    let gw = spawn_gateway(&cfg).await;
    let r =
        send(&gw.url("/graph?validationToken=Validation%3A%20Testing%20client%20application"), "POST", &[], "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "Validation: Testing client application");
    assert!(r.headers["content-type"].to_str().unwrap().starts_with("text/plain"));
    assert_eq!(r.headers["x-content-type-options"], "nosniff");

    let note = |state: &str, change: &str| {
        format!(
            r#"{{"value":[{{"subscriptionId":"7f105c7d-2dc5-4530-97cd-4e7ae6534c07","subscriptionExpirationDateTime":"2026-12-04T11:00:00.0000000Z","changeType":"{change}","resource":"Users/1/Messages/2","clientState":"{state}","tenantId":"84bd8158-6d4d-4958-8b9f-9d6445542f95"}}]}}"#
        )
    };
    let json = h(&[("Content-Type", "application/json")]);
    let r = send(&gw.url("/graph"), "POST", &json, note("SecretClientState", "created")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let got = up.next().await;
    assert_eq!(got.headers["x-hookgate-event-type"], "created");
    assert_eq!(got.headers["x-hookgate-verified"], "true");

    // Another clientState, none, one bad item among good ones, no items, not JSON: 401.
    let two = r#"{"value":[{"changeType":"updated","clientState":"SecretClientState"},{"changeType":"updated","clientState":"forged"}]}"#;
    for body in [
        note("forged", "updated"),
        r#"{"value":[{"changeType":"updated"}]}"#.into(),
        two.into(),
        r#"{"value":[]}"#.into(),
        "x".into(),
    ] {
        let r = send(&gw.url("/graph"), "POST", &json, body.clone()).await;
        assert_eq!((r.status.as_u16(), r.error_code()), (401, "invalid_signature".to_owned()), "{body}");
    }
    assert_eq!(up.hits(), 1);
    gw.shutdown().await;

    // verify_token is required; secrets are not.
    let bad = "[sources.graph]\npath = \"/graph\"\nprovider = \"msgraph\"\n";
    let e = hookgate::config::load_str(bad, &|_| None).unwrap_err().to_string();
    assert!(e.contains("sources.graph.verify_token") && !e.contains("secrets"), "{e}");
}
