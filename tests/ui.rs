//! SPEC §6 `/ui` in a real browser: Debian's headless chromium, driven by
//! playwright-core (`tests/ui/ui.mjs`), against a running gateway with the
//! admin token set: login, deliveries appearing by themselves, filters, the
//! queue table, and the retry button of a dead letter (which then delivers).
//! `.ci/run` installs chromium and `npm ci`s tests/ui.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

/// `[server]` with `server` keys, `top` (tables), a queue in `dir`, and source `name` (token `{name}-secret` in
/// `X-Token`, ID in `X-Id`, type in `X-Event`) with a queue route `orders`
/// (`order.*`) to `refuse` and a sync route `app` for the rest to `ok`.
fn dashboard_config(
    server: &str,
    top: &str,
    name: &str,
    dir: &Path,
    refuse: std::net::SocketAddr,
    ok: std::net::SocketAddr,
) -> String {
    format!(
        r#"[server]
shutdown_grace = "1s"
{server}

{top}

[queue]
path = "{dir}"

[sources.{name}]
path = "/webhooks/{name}"
provider = "generic"
secrets = ["{name}-secret"]

[sources.{name}.verify]
scheme = "token"
signature_header = "X-Token"
id = "header:X-Id"
event_type = "header:X-Event"

[[sources.{name}.routes]]
name = "orders"
events = ["order.*"]
upstream = "http://{refuse}/orders"
delivery = "queue"

[[sources.{name}.routes]]
name = "app"
events = ["*"]
upstream = "http://{ok}/hooks"
"#,
        dir = dir.display()
    )
}

/// Runs one of tests/ui's node scripts (headless chromium) with `env`; it must
/// end with "all steps passed" within two minutes.
async fn run_browser(ui_dir: &Path, script: &str, env: &[(&str, &str)]) {
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(script).current_dir(ui_dir).kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("the browser test finishes within 2 minutes")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stdout.contains("all steps passed"), "{script}: {stdout}\n{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_headless_chromium() {
    let ui_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui");
    assert!(
        ui_dir.join("node_modules/playwright-core").exists(),
        "run `npm ci` in tests/ui (bash .ci/run does) and install chromium"
    );
    let dir = tempfile::tempdir().unwrap();
    let ok = spawn_upstream(ok_upstream()).await;
    let mut refuse = spawn_upstream(Behavior::Answer(422, "refused", Duration::ZERO)).await;
    let text = dashboard_config("admin_token = \"ui-token\"", "", "ui", dir.path(), refuse.addr, ok.addr);
    let gw = spawn_gateway(&text).await;
    let post = async |id: &str, event: &str, token: &str| {
        let headers = h(&[("X-Token", token), ("X-Id", id), ("X-Event", event)]);
        // Distinct bodies: a token source also deduplicates by body (SPEC §10).
        send(&gw.url("/webhooks/ui"), "POST", &headers, format!("{{\"n\":\"{id}\"}}")).await.status.as_u16()
    };
    assert_eq!(post("ui-sync-1", "user.created", "ui-secret").await, 200);
    assert_eq!(post("ui-sync-2", "user.created", "ui-secret").await, 200);
    assert_eq!(post("ui-bad-1", "user.created", "wrong").await, 401);
    assert_eq!(post("ui-order-1", "order.created", "ui-secret").await, 202);
    refuse.next().await;
    let auth = h(&[("Authorization", "Bearer ui-token")]);
    let dead_count = async || {
        let r = send(&format!("http://{}/queue/dead", gw.admin), "GET", &auth, "").await;
        r.json()["items"].as_array().unwrap().len()
    };
    assert!(eventually(Duration::from_secs(5), async || dead_count().await == 1).await, "one dead letter");
    refuse.set(ok_upstream());

    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui.png");
    let screenshot_env = screenshot.display().to_string();
    run_browser(
        &ui_dir,
        "ui.mjs",
        &[
            ("ADMIN", &format!("http://{}", gw.admin)),
            ("WEBHOOK", &gw.url("/webhooks/ui")),
            ("TOKEN", "ui-token"),
            ("SCREENSHOT", &screenshot_env),
        ],
    )
    .await;
    assert!(std::fs::metadata(&screenshot).unwrap().len() > 10_000, "a real screenshot");

    // The retry button made the dead letter pending again, and it was delivered.
    let again = refuse.next().await;
    assert_eq!(again.headers["x-hookgate-delivery-id"], "ui-order-1");
    assert_eq!(again.headers["x-hookgate-attempt"], "1");
    assert!(eventually(Duration::from_secs(5), async || dead_count().await == 0).await);
    gw.shutdown().await;
}

/// SPEC §11 in headless chromium: with no admin token, a page of another
/// origin cannot retry dead letters (its no-cors POST gets 403 cross_origin,
/// and the dead letter stays dead), and a DNS-rebinding host name cannot read
/// the delivery log (403 bad_host). `tests/ui/cross_origin.mjs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_origins_cannot_use_the_admin_listener_from_a_browser() {
    let ui_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui");
    assert!(ui_dir.join("node_modules/playwright-core").exists(), "run `npm ci` in tests/ui (bash .ci/run does)");
    let dir = tempfile::tempdir().unwrap();
    let mut refuse = spawn_upstream(Behavior::Answer(422, "refused", Duration::ZERO)).await;
    let text = format!(
        "[server]\nshutdown_grace = \"1s\"\n[queue]\npath = \"{}\"\n[sources.x]\npath = \"/x\"\nprovider = \"generic\"\nsecrets = [\"s\"]\n[sources.x.verify]\nscheme = \"token\"\nsignature_header = \"X-Token\"\n[[sources.x.routes]]\nevents = [\"*\"]\nupstream = \"http://{}/\"\ndelivery = \"queue\"\n",
        dir.path().display(),
        refuse.addr
    );
    let gw = spawn_gateway(&text).await;
    assert_eq!(send(&gw.url("/x"), "POST", &h(&[("X-Token", "s")]), "{}").await.status, 202);
    refuse.next().await;
    let dead = async || gw.admin_json("/queue/dead").await["items"].as_array().unwrap().len();
    assert!(eventually(Duration::from_secs(5), async || dead().await == 1).await, "one dead letter");
    refuse.set(ok_upstream());

    let admin = format!("http://{}", gw.admin);
    run_browser(&ui_dir, "cross_origin.mjs", &[("ADMIN", &admin), ("ADMIN_PORT", &gw.admin.port().to_string())]).await;
    assert_eq!(dead().await, 1, "the dead letter was not retried");
    assert_eq!(refuse.hits(), 1, "nothing was sent again");
    gw.shutdown().await;
}

/// SPEC §12 in headless chromium: deliveries of a route removed by a reload
/// show in `/ui` as an orphan with Move/Delete buttons; Delete drops them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_are_shown_and_deleted_in_the_dashboard() {
    let ui_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui");
    assert!(ui_dir.join("node_modules/playwright-core").exists(), "run `npm ci` in tests/ui (bash .ci/run does)");
    let dir = tempfile::tempdir().unwrap();
    let down = spawn_upstream(Behavior::Answer(503, "down", Duration::ZERO)).await;
    let with = |route: &str| {
        format!(
            "[server]\nshutdown_grace = \"1s\"\n[queue]\npath = \"{}\"\n[sources.x]\npath = \"/x\"\nprovider = \"generic\"\nsecrets = [\"s\"]\n[sources.x.verify]\nscheme = \"token\"\nsignature_header = \"X-Token\"\n{route}",
            dir.path().display()
        )
    };
    let orders = format!(
        "[[sources.x.routes]]\nname = \"orders\"\nevents = [\"*\"]\nupstream = \"http://{}/\"\ndelivery = \"queue\"\nretry = {{ backoff = \"5s\" }}\n",
        down.addr
    );
    let gw = spawn_gateway(&with(&orders)).await;
    assert_eq!(send(&gw.url("/x"), "POST", &h(&[("X-Token", "s")]), "{\"n\":1}").await.status, 202);
    assert!(eventually(Duration::from_secs(5), async || down.hits() >= 1).await);
    gw.app.reload(config(&with(""))).unwrap();
    let orphaned =
        async || gw.admin_json("/queue").await["routes"].as_array().unwrap().iter().any(|r| r["orphaned"] == true);
    assert!(eventually(Duration::from_secs(5), orphaned).await);
    run_browser(&ui_dir, "orphans.mjs", &[("ADMIN", &format!("http://{}", gw.admin))]).await;
    assert!(!orphaned().await, "deleted");
    gw.shutdown().await;
}

/// SPEC §17 in headless chromium (`tests/ui/observe.mjs`): the charts from
/// `/stats`, search by delivery ID, a captured delivery's detail view with
/// its Replay button, and Retry all for dead letters. The screenshot it
/// takes is the one in docs/dashboard.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_charts_replay_and_retry_all_in_the_dashboard() {
    let ui_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui");
    assert!(ui_dir.join("node_modules/playwright-core").exists(), "run `npm ci` in tests/ui (bash .ci/run does)");
    let dir = tempfile::tempdir().unwrap();
    let mut ok = spawn_upstream(Behavior::Answer(200, "ok", Duration::from_millis(5))).await;
    let mut refuse = spawn_upstream(Behavior::Answer(422, "refused", Duration::ZERO)).await;
    let text = dashboard_config("", "[log]\nbodies = \"1MB\"", "obs", dir.path(), refuse.addr, ok.addr);
    let gw = spawn_gateway(&text).await;
    let post = async |id: &str, event: &str, token: &str| {
        let headers = h(&[("X-Token", token), ("X-Id", id), ("X-Event", event)]);
        let body = format!("{{\"order\":\"{id}\",\"n\":1}}");
        send(&gw.url("/webhooks/obs"), "POST", &headers, body).await.status.as_u16()
    };
    assert_eq!(post("obs-1", "user.created", "obs-secret").await, 200);
    assert_eq!(post("obs-2", "user.created", "obs-secret").await, 200);
    assert_eq!(post("obs-bad", "user.created", "wrong").await, 401);
    assert_eq!(post("obs-order", "order.created", "obs-secret").await, 202);
    ok.next().await;
    ok.next().await;
    refuse.next().await;
    let dead = async || gw.admin_json("/queue/dead").await["items"].as_array().unwrap().len() == 1;
    assert!(eventually(Duration::from_secs(5), dead).await, "one dead letter");

    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let screenshot_env = screenshot.display().to_string();
    let admin = format!("http://{}", gw.admin);
    run_browser(&ui_dir, "observe.mjs", &[("ADMIN", &admin), ("SCREENSHOT", &screenshot_env)]).await;
    assert!(std::fs::metadata(&screenshot).unwrap().len() > 10_000, "a real screenshot");

    let replayed = ok.next().await;
    assert_eq!(replayed.headers["x-hookgate-replay"], "true");
    assert_eq!(replayed.headers["x-hookgate-delivery-id"], "obs-2");
    assert!(replayed.headers.get("x-token").is_none(), "the redacted token is not sent");
    let retried = refuse.next().await;
    assert_eq!(retried.headers["x-hookgate-delivery-id"], "obs-order");
    gw.shutdown().await;
}
