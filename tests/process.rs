//! The real binary as users run it: CLI (`check`, `sign`, `--version`), JSON
//! logs, SIGHUP reload, SIGTERM drain.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_hookgate");

struct Proc {
    child: Child,
    addr: SocketAddr,
    admin: SocketAddr,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    config: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn with_listeners(text: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nshutdown_grace = \"10s\"\n[log]\nformat = \"json\"\n{text}"
    )
}

fn start(text: &str) -> Proc {
    let dir = tempfile::tempdir().unwrap();
    let mut p = start_in(dir.path(), text);
    p._dir = Some(dir);
    p
}

/// Starts the binary on `text`, written to `hookgate.toml` in `dir`.
fn start_in(dir: &Path, text: &str) -> Proc {
    let config = dir.join("hookgate.toml");
    std::fs::write(&config, text).unwrap();
    let mut child = Command::new(BIN)
        .args(["run", "-c"])
        .arg(&config)
        .env("HOOKGATE_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, lines) = mpsc::channel();
    for stream in [
        Box::new(child.stderr.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stdout.take().unwrap()),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    let mut p = Proc {
        child,
        addr: "0.0.0.0:0".parse().unwrap(),
        admin: "0.0.0.0:0".parse().unwrap(),
        lines,
        seen: vec![],
        config,
        _dir: None,
    };
    let line = p.wait_for("hookgate serving");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    p.addr = v["listen"].as_str().unwrap().parse().unwrap();
    p.admin = v["admin"].as_str().unwrap().parse().unwrap();
    p
}

impl Proc {
    /// The next output line containing `needle`, waiting up to 10 s.
    fn wait_for(&mut self, needle: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("no line with {needle:?}; saw {:#?}", self.seen));
            self.seen.push(line.clone());
            if line.contains(needle) {
                return line;
            }
        }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill").args([sig, &self.child.id().to_string()]).status().unwrap().success();
        assert!(ok);
    }

    fn wait_exit(&mut self) -> i32 {
        for _ in 0..500 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("process did not exit");
    }

    fn drain_lines(&mut self) -> Vec<String> {
        while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(200)) {
            self.seen.push(l);
        }
        self.seen.clone()
    }
}

/// A fresh tampa delivery for `cfg`, signed now: (headers, body).
fn signed(cfg: &hookgate::config::Config, id: &str, event_type: &str) -> (Vec<(String, String)>, String) {
    let body = tampa_body(id, event_type);
    (sign_with(cfg, "tampa", &body, None, None, std::time::SystemTime::now()), body)
}

fn run_cli(args: &[&str], cwd: Option<&Path>, env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    if let Some(d) = cwd {
        cmd.current_dir(d);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn version_prints_and_exits_zero() {
    let (code, out, _) = run_cli(&["--version"], None, &[]);
    assert_eq!(code, 0);
    assert!(out.starts_with("hookgate ") && out.contains(env!("CARGO_PKG_VERSION")), "{out}");
}

#[test]
fn check_lists_every_error_and_exits_one() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[server]\nlisten = \"x\"\nwat = 1\n[sources.a]\npath = \"/a\"\nprovider = \"github\"\nsecrets = [\"${HG_TEST_UNSET_VAR}\"]\n[[sources.a.routes]]\nevents = [\"*\"]\nupstream = \"http://127.0.0.1:1/\"\ntimeout = \"forever\"\n",
    )
    .unwrap();
    let (code, _, err) = run_cli(&["check", "-c", bad.to_str().unwrap()], None, &[]);
    assert_eq!(code, 1);
    for want in ["server.listen", "server.wat", "HG_TEST_UNSET_VAR", "sources.a.routes[0].timeout"] {
        assert!(err.contains(want), "missing {want} in {err}");
    }
    let (code, out, err) =
        run_cli(&["check", "-c", "config.example.toml"], Some(Path::new(env!("CARGO_MANIFEST_DIR"))), &[]);
    assert_eq!(code, 0, "{out}{err}");
}

/// SPEC §14: `hookgate transform` prints what a route would forward.
#[test]
fn transform_prints_what_the_route_would_forward() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("hookgate.toml");
    std::fs::write(
        &cfg,
        r#"[sources.stripe]
path = "/stripe"
provider = "stripe"
secrets = ["whsec_x"]

[[sources.stripe.routes]]
events = ["*"]
upstream = "http://127.0.0.1:3001/"

[[sources.stripe.routes]]
name = "slack"
events = ["invoice.payment_failed"]
upstream = "http://127.0.0.1:3002/"
transform = '{text: "Payment failed: \(.data.object.customer_email) \(.data.object.amount_due / 100) USD"}'
"#,
    )
    .unwrap();
    let body = dir.path().join("event.json");
    std::fs::write(&body, r#"{"data":{"object":{"customer_email":"jo@example.com","amount_due":1250}}}"#).unwrap();
    let c = cfg.to_str().unwrap();
    let b = body.to_str().unwrap();
    let (code, out, err) = run_cli(&["transform", "-c", c, "--source", "stripe", "--route", "slack", b], None, &[]);
    assert_eq!((code, out.as_str()), (0, "{\"text\":\"Payment failed: jo@example.com 12.5 USD\"}\n"), "{err}");
    // An unnamed route is addressed by its position, and forwards the body as it is.
    let (code, out, _) = run_cli(&["transform", "-c", c, "--source", "stripe", "--route", "0", b], None, &[]);
    assert_eq!((code, out.trim()), (0, std::fs::read_to_string(&body).unwrap().as_str()));
    let (code, _, err) = run_cli(&["transform", "-c", c, "--source", "stripe", "--route", "nope", b], None, &[]);
    assert!(code == 1 && err.contains("its routes: 0, slack"), "{err}");
    std::fs::write(&body, "not json").unwrap();
    let (code, _, err) = run_cli(&["transform", "-c", c, "--source", "stripe", "--route", "slack", b], None, &[]);
    assert!(code == 1 && err.contains("transform_failed") && err.contains("not JSON"), "{err}");
}

#[test]
fn presets_lists_thirty_and_prints_one_as_a_verify_block() {
    let (code, out, _) = run_cli(&["presets"], None, &[]);
    assert_eq!(code, 0);
    assert!(out.lines().count() >= 30, "{out}");
    assert!(out.lines().any(|l| l.starts_with("discord ") && l.contains("Ed25519")), "{out}");
    let (code, out, _) = run_cli(&["presets", "paddle"], None, &[]);
    assert_eq!(code, 0);
    for want in ["[sources.paddle.verify]", "signature_header = \"Paddle-Signature\"", "param_separator = \";\""] {
        assert!(out.contains(want), "missing {want} in {out}");
    }
    let (code, _, err) = run_cli(&["presets", "nope"], None, &[]);
    assert_eq!(code, 1);
    assert!(err.contains("no preset named \"nope\"") && err.contains("github"), "{err}");
    let (code, out, _) = run_cli(&["presets", "--markdown"], None, &[]);
    assert_eq!(code, 0);
    assert!(
        include_str!("../docs/src/providers.md").contains(&out),
        "the guide's provider table is not `presets --markdown`"
    );
}

/// SPEC §10: `presets NAME` and `check` say which fields the signature does not cover.
#[test]
fn presets_and_check_name_the_unsigned_fields() {
    let (code, out, _) = run_cli(&["presets", "github"], None, &[]);
    assert_eq!(code, 0);
    assert!(out.contains("# unsigned: id (from header:x-github-delivery)"), "{out}");
    assert!(out.contains("# unsigned: event_type (from header:x-github-event)"), "{out}");
    assert!(out.contains("dedupe_body"), "{out}");
    let (_, out, _) = run_cli(&["presets", "tampa"], None, &[]);
    assert!(!out.contains("# unsigned:"), "{out}");
    assert!(out.contains("# checked: id in header:x-delivery-id must equal the signed value"), "{out}");
    assert!(out.contains("id = [\"json:/id\", \"header:X-Delivery-ID\"]"), "{out}");
    let (_, out, _) = run_cli(&["presets", "stripe"], None, &[]);
    assert!(!out.contains("unsigned") && !out.contains("dedupe_body"), "{out}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("h.toml");
    std::fs::write(
        &file,
        "[sources.gh]\npath = \"/gh\"\nprovider = \"github\"\nsecrets = [\"s\"]\n[sources.st]\npath = \"/st\"\nprovider = \"stripe\"\nsecrets = [\"s\"]\n",
    )
    .unwrap();
    let (code, out, err) = run_cli(&["check", "-c", file.to_str().unwrap()], None, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("sources.gh: id is unsigned (read from header:x-github-delivery)"), "{out}");
    assert!(out.contains("sources.gh: event_type is unsigned"), "{out}");
    assert!(out.contains("sources.gh: the body's SHA-256 is deduplicated too"), "{out}");
    assert!(!out.contains("sources.st:"), "stripe signs everything it locates: {out}");
}

#[test]
fn sign_explains_public_key_presets_and_signs_with_a_test_private_key() {
    let dir = tempfile::tempdir().unwrap();
    let seed = [3u8; 32];
    let public = hex::encode(ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key().as_bytes());
    let cfg = dir.path().join("d.toml");
    std::fs::write(&cfg, format!("[sources.d]\npath = \"/d\"\nprovider = \"discord\"\nsecrets = [\"{public}\"]\n"))
        .unwrap();
    let body = dir.path().join("b.json");
    std::fs::write(&body, r#"{"type":1}"#).unwrap();
    let (cfg, body) = (cfg.to_str().unwrap(), body.to_str().unwrap());
    let (code, _, err) = run_cli(&["sign", "-c", cfg, "--source", "d", body], None, &[]);
    assert_eq!(code, 1);
    assert!(err.contains("only the provider can sign"), "{err}");
    let (code, _, err) =
        run_cli(&["sign", "-c", cfg, "--source", "d", "--private-key", &"11".repeat(32), body], None, &[]);
    assert_eq!(code, 1, "a key that does not match the public key is refused");
    assert!(err.contains("does not match"), "{err}");
    let (code, out, err) =
        run_cli(&["sign", "-c", cfg, "--source", "d", "--private-key", &hex::encode(seed), body], None, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.to_lowercase().contains("x-signature-ed25519: "), "{out}");
}

#[test]
fn config_path_defaults_to_env_then_hookgate_toml() {
    let dir = tempfile::tempdir().unwrap();
    let good = "[sources.a]\npath = \"/a\"\nprovider = \"github\"\nsecrets = [\"s\"]\n";
    std::fs::write(dir.path().join("hookgate.toml"), good).unwrap();
    let mut cmd = Command::new(BIN);
    let out = cmd.arg("check").current_dir(dir.path()).env_remove("HOOKGATE_CONFIG").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::write(dir.path().join("other.toml"), "nonsense = [").unwrap();
    let (code, _, err) = run_cli(&["check"], Some(dir.path()), &[("HOOKGATE_CONFIG", "other.toml")]);
    assert_eq!(code, 1, "HOOKGATE_CONFIG wins over ./hookgate.toml: {err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sign_output_and_curl_command_are_accepted() {
    let mut up = spawn_upstream(ok_upstream()).await;
    let text = with_listeners(&tampa_config(up.addr, "", ""));
    let p = start(&text);
    let body = tampa_body("signed-by-cli", "order.created");
    let body_file = p.config.with_file_name("body.json");
    std::fs::write(&body_file, &body).unwrap();
    let cfg = p.config.to_str().unwrap().to_owned();

    let (code, out, err) = run_cli(&["sign", "-c", &cfg, "--source", "tampa", body_file.to_str().unwrap()], None, &[]);
    assert_eq!(code, 0, "{err}");
    let headers: Vec<(String, String)> = out
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(": ").map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect();
    assert!(headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("x-webhook-signature")), "{out}");
    let r = send(&format!("http://{}/webhooks/tampa", p.addr), "POST", &headers, body.clone()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.next().await.body, body.as_bytes());

    // --curl prints one command that works when pasted into bash.
    let body = "{\"id\":\"curl-1\",\"type\":\"x\",\"timestamp\":\"TS\",\"note\":\"it's quoted\"}"
        .replace("TS", &humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string());
    std::fs::write(&body_file, &body).unwrap();
    let url = format!("http://{}/webhooks/tampa", p.addr);
    let (code, out, err) =
        run_cli(&["sign", "-c", &cfg, "--source", "tampa", "--curl", &url, body_file.to_str().unwrap()], None, &[]);
    assert_eq!(code, 0, "{err}");
    let curl = tokio::task::spawn_blocking(move || Command::new("bash").arg("-c").arg(out.trim()).output().unwrap())
        .await
        .unwrap();
    let answer = String::from_utf8_lossy(&curl.stdout);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(up.next().await.body, body.as_bytes());
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_one_object_per_line_and_no_secrets() {
    let up = spawn_upstream(ok_upstream()).await;
    let mut p = start(&with_listeners(&tampa_config(up.addr, "", "")));
    let cfg = config(&std::fs::read_to_string(&p.config).unwrap());
    let (headers, body) = signed(&cfg, "log-1", "order.created");
    let sig = headers.iter().find(|(k, _)| k == "x-webhook-signature").unwrap().1.clone();
    assert_eq!(send(&format!("http://{}/webhooks/tampa", p.addr), "POST", &headers, body).await.status, 200);
    let line = p.wait_for("\"delivery\"");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["source"], "tampa");
    assert_eq!(v["delivery_id"], "log-1");
    assert_eq!(v["event_type"], "order.created");
    assert_eq!(v["outcome"], "forwarded");
    assert_eq!(v["status"], 200);
    assert!(v["upstream_ms"].is_number());
    p.signal("-TERM");
    assert_eq!(p.wait_exit(), 0);
    for line in p.drain_lines() {
        assert!(serde_json::from_str::<serde_json::Value>(&line).is_ok(), "not JSON: {line}");
        assert!(!line.contains(SECRET) && !line.contains(&sig), "secret logged: {line}");
    }
}

/// The server turns transparent huge pages off for itself (idle RSS; see README Performance).
#[tokio::test]
async fn transparent_huge_pages_are_off_for_the_server() {
    let up = spawn_upstream(ok_upstream()).await;
    let p = start(&with_listeners(&tampa_config(up.addr, "", "")));
    let status = std::fs::read_to_string(format!("/proc/{}/status", p.child.id())).unwrap();
    let thp = status.lines().find(|l| l.starts_with("THP_enabled:")).expect("kernel reports THP_enabled");
    assert_eq!(thp.split_whitespace().nth(1), Some("0"), "{thp}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_and_a_broken_file_keeps_the_old_config() {
    let mut up = spawn_upstream(ok_upstream()).await;
    let text = with_listeners(&tampa_config(up.addr, "", ""));
    let mut p = start(&text);
    let cfg = config(&text);
    let url = format!("http://{}/webhooks/tampa", p.addr);
    let deliver = |id: &str| signed(&cfg, id, "other");
    let (h1, b1) = deliver("hup-1");
    assert_eq!(send(&url, "POST", &h1, b1).await.status, 200);
    assert_eq!(up.next().await.uri, "/hooks");

    std::fs::write(&p.config, text.replace("/hooks\"\n", "/reloaded\"\n")).unwrap();
    p.signal("-HUP");
    p.wait_for("config reloaded");
    let (h2, b2) = deliver("hup-2");
    assert_eq!(send(&url, "POST", &h2, b2).await.status, 200);
    assert_eq!(up.next().await.uri, "/reloaded");

    std::fs::write(&p.config, "this is = not [valid").unwrap();
    p.signal("-HUP");
    p.wait_for("keeping the old config");
    let (h3, b3) = deliver("hup-3");
    assert_eq!(send(&url, "POST", &h3, b3).await.status, 200);
    assert_eq!(up.next().await.uri, "/reloaded");
    assert_eq!(send(&format!("http://{}/healthz", p.admin), "GET", &[], "").await.status, 200);
    let metrics = send(&format!("http://{}/metrics", p.admin), "GET", &[], "").await.text();
    assert!(metrics.contains("hookgate_config_reloads_total{result=\"ok\"} 1"), "{metrics}");
    assert!(metrics.contains("hookgate_config_reloads_total{result=\"invalid\"} 1"), "{metrics}");

    // A reload that replaces the dedupe store says so: what it remembered is gone.
    let bigger = text
        .replace("/hooks\"\n", "/reloaded\"\n")
        .replace("[sources.tampa]", "[dedupe]\nmax_entries = 5000\n\n[sources.tampa]");
    std::fs::write(&p.config, bigger).unwrap();
    p.signal("-HUP");
    p.wait_for("the dedupe store was replaced by the reload");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_a_slow_in_flight_delivery_then_exits_zero() {
    let mut up = spawn_upstream(Behavior::Answer(200, "slow-ok", Duration::from_millis(1500))).await;
    let text = with_listeners(&tampa_config(up.addr, "", ""));
    let mut p = start(&text);
    let cfg = config(&text);
    let (headers, body) = signed(&cfg, "drain-1", "x");
    let url = format!("http://{}/webhooks/tampa", p.addr);
    let in_flight = tokio::spawn(async move { send(&url, "POST", &headers, body).await });
    up.next().await; // the delivery is at the upstream now
    p.signal("-TERM");
    let r = in_flight.await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "slow-ok");
    assert_eq!(tokio::task::spawn_blocking(move || p.wait_exit()).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn store_failures_are_logged_once_per_burst() {
    let up = spawn_upstream(ok_upstream()).await;
    let dead = common::redis::free_port();
    let extra = format!(
        "[dedupe]\nstore = \"redis\"\non_store_error = \"allow\"\n[dedupe.redis]\nurl = \"redis://127.0.0.1:{dead}/0\"\ntimeout = \"300ms\"\n"
    );
    let mut p = start(&with_listeners(&tampa_config(up.addr, "", &extra)));
    let cfg = config(&std::fs::read_to_string(&p.config).unwrap());
    let url = format!("http://{}/webhooks/tampa", p.addr);
    for i in 0..3 {
        let (headers, body) = signed(&cfg, &format!("burst-{i}"), "x");
        assert_eq!(send(&url, "POST", &headers, body).await.status, 200, "allow: forwarded undeduped");
    }
    assert_eq!(up.hits(), 3);
    p.signal("-TERM");
    assert_eq!(p.wait_exit(), 0);
    let lines = p.drain_lines();
    let warnings = lines.iter().filter(|l| l.contains("dedupe store failed")).count();
    assert_eq!(warnings, 1, "{lines:#?}");
}

// === Queue mode across process deaths ===

/// A queue route on the store `queue` describes (the body of the `[queue]` table).
fn queue_text(upstream: SocketAddr, queue: &str) -> String {
    with_listeners(&one_route_config(
        &format!("[queue]\n{queue}"),
        &format!("http://{upstream}/hooks"),
        "timeout = \"2s\"\ndelivery = \"queue\"\nretry = { attempts = 1000, backoff = \"20ms\", max_backoff = \"100ms\" }",
    ))
}

fn disk_queue(dir: &Path, sync: &str) -> String {
    format!("path = \"{}\"\nsync = \"{sync}\"", dir.display())
}

/// Senders post unique deliveries while the app is down; the gateway is
/// SIGKILLed mid-stream; after a restart every acknowledged delivery reaches
/// the app: disk store with both `sync` settings (the data had reached the
/// OS), and the Redis store (the server had acknowledged the write).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_loses_no_acknowledged_delivery() {
    let redis = common::redis::RedisServer::start();
    for sync in ["always", "none", "redis"] {
        let qdir = tempfile::tempdir().unwrap();
        let mut up = spawn_upstream(Behavior::Answer(503, "app down", Duration::ZERO)).await;
        let store = match sync {
            // What the killed process had taken comes back after visibility_timeout.
            "redis" => {
                format!("store = \"redis\"\nvisibility_timeout = \"2s\"\n[queue.redis]\nurl = \"{}\"", redis.url())
            }
            _ => disk_queue(qdir.path(), sync),
        };
        let text = queue_text(up.addr, &store);
        let mut p = start(&text);
        let cfg = config(&text);
        let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let url = format!("http://{}/webhooks/tampa", p.addr);
        let mut senders = Vec::new();
        for s in 0..8 {
            let (acked, url, cfg) = (acked.clone(), url.clone(), cfg.clone());
            senders.push(tokio::spawn(async move {
                let client = client();
                for i in 0..2000 {
                    let id = format!("kill-{sync}-{s}-{i}");
                    let body = tampa_body(&id, "order.created");
                    let headers = sign_with(&cfg, "tampa", &body, Some(&id), None, std::time::SystemTime::now());
                    let mut req = http::Request::builder().method("POST").uri(&url);
                    for (k, v) in &headers {
                        req = req.header(k.as_str(), v.as_str());
                    }
                    let Ok(res) =
                        client.request(req.body(http_body_util::Full::new(bytes::Bytes::from(body))).unwrap()).await
                    else {
                        return; // the gateway is gone
                    };
                    if res.status() == 202 {
                        acked.lock().unwrap().push(id);
                    }
                }
            }));
        }
        assert!(
            eventually(Duration::from_secs(20), async || acked.lock().unwrap().len() >= 300).await,
            "deliveries are acknowledged"
        );
        p.signal("-KILL");
        p.wait_exit();
        for s in senders {
            let _ = s.await;
        }
        let acked: std::collections::BTreeSet<String> = acked.lock().unwrap().iter().cloned().collect();
        drop(p);

        up.drain();
        up.set(ok_upstream());
        let p2 = start(&text);
        let mut seen = std::collections::BTreeSet::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !acked.is_subset(&seen) && std::time::Instant::now() < deadline {
            if let Ok(Some(got)) = tokio::time::timeout(Duration::from_millis(500), up.rx.recv()).await
                && got.headers.get("x-hookgate-attempt").is_some()
            {
                seen.insert(got.headers["x-hookgate-delivery-id"].to_str().unwrap().to_owned());
            }
        }
        eprintln!(
            "sync = {sync}: {} acknowledged before SIGKILL, {} delivered after the restart",
            acked.len(),
            seen.len()
        );
        let lost: Vec<_> = acked.difference(&seen).take(5).collect();
        assert!(
            lost.is_empty(),
            "sync = {sync}: {} of {} acked deliveries lost, e.g. {lost:?}",
            acked.difference(&seen).count(),
            acked.len()
        );
        drop(p2);
    }
}

/// SPEC §16: SIGKILL while a paused route holds a backlog loses nothing.
/// Disk: a pause lives in the process, so the restarted gateway delivers the
/// backlog. Redis: the pause is in the store and holds across the restart
/// until it is resumed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_a_paused_backlog_loses_nothing() {
    let redis = common::redis::RedisServer::start();
    for store in ["disk", "redis"] {
        let qdir = tempfile::tempdir().unwrap();
        let mut up = spawn_upstream(ok_upstream()).await;
        let queue = match store {
            "redis" => format!("store = \"redis\"\n[queue.redis]\nurl = \"{}\"", redis.url()),
            _ => disk_queue(qdir.path(), "always"),
        };
        let text =
            queue_text(up.addr, &queue).replace("delivery = \"queue\"", "name = \"orders\"\ndelivery = \"queue\"");
        let mut p = start(&text);
        let admin = |p: &Proc, path: &str| format!("http://{}{path}", p.admin);
        assert_eq!(send(&admin(&p, "/queue/routes/tampa/orders/pause"), "POST", &[], "").await.status, 200);
        let cfg = config(&text);
        let url = format!("http://{}/webhooks/tampa", p.addr);
        for i in 0..40 {
            let id = format!("pk-{store}-{i}");
            let body = tampa_body(&id, "order.created");
            let headers = sign_with(&cfg, "tampa", &body, Some(&id), None, std::time::SystemTime::now());
            assert_eq!(send(&url, "POST", &headers, body).await.status, 202);
        }
        assert_eq!(up.hits(), 0, "{store}: paused");
        p.signal("-KILL");
        p.wait_exit();
        drop(p);

        let p2 = start(&text);
        // `/queue` answers 503 until the disk store has opened.
        let open = async || send(&admin(&p2, "/queue"), "GET", &[], "").await.status == 200;
        assert!(eventually(Duration::from_secs(10), open).await, "{store}: the store opens");
        let paused = send(&admin(&p2, "/queue"), "GET", &[], "").await.json()["routes"][0]["paused"].clone();
        // Kept in Redis, or in the disk store's pause file.
        assert_eq!(paused["reason"], "paused by the admin API", "{store}: the pause outlives the process: {paused}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(up.hits(), 0, "{store}: still paused after the restart");
        assert_eq!(send(&admin(&p2, "/queue/routes/tampa/orders/resume"), "POST", &[], "").await.status, 200);
        let mut seen = std::collections::BTreeSet::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while seen.len() < 40 && std::time::Instant::now() < deadline {
            if let Ok(Some(got)) = tokio::time::timeout(Duration::from_millis(500), up.rx.recv()).await {
                seen.insert(got.headers["x-hookgate-delivery-id"].to_str().unwrap().to_owned());
            }
        }
        assert_eq!(seen.len(), 40, "{store}: every acknowledged delivery arrives after the restart");
        drop(p2);
    }
}

/// SPEC §16 `order_by`: SIGKILL while an ordered backlog drains (disk and
/// Redis); after a restart every acknowledged delivery arrives and each key's
/// deliveries are first attempted in the order received (the head in flight
/// at the kill may come twice: at least once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_an_ordered_backlog_keeps_each_keys_order() {
    let redis = common::redis::RedisServer::start();
    for store in ["disk", "redis"] {
        let qdir = tempfile::tempdir().unwrap();
        let mut up = spawn_upstream(Behavior::Answer(200, "ok", Duration::from_millis(15))).await;
        let queue = match store {
            // The heads the killed process had taken wait for the visibility
            // timeout, and their keys with them.
            "redis" => {
                format!("store = \"redis\"\nvisibility_timeout = \"3s\"\n[queue.redis]\nurl = \"{}\"", redis.url())
            }
            _ => disk_queue(qdir.path(), "always"),
        };
        let text = queue_text(up.addr, &queue)
            .replace("delivery = \"queue\"", "delivery = \"queue\"\nconcurrency = 4\norder_by = \"header:X-Key\"");
        let mut p = start(&text);
        let cfg = config(&text);
        let url = format!("http://{}/webhooks/tampa", p.addr);
        let (keys, per_key) = (["a", "b", "c"], 15);
        for i in 0..per_key {
            for k in keys {
                let id = format!("ord-{store}-{k}-{i:02}");
                let body = tampa_body(&id, "order.created");
                let mut headers = sign_with(&cfg, "tampa", &body, Some(&id), None, std::time::SystemTime::now());
                headers.push(("X-Key".into(), k.into()));
                assert_eq!(send(&url, "POST", &headers, body).await.status, 202);
            }
        }
        let mut got = Vec::new();
        while got.len() < 9 {
            got.push(up.next().await);
        }
        p.signal("-KILL");
        p.wait_exit();
        drop(p);
        let _p2 = start(&text);
        let mut firsts: Vec<String> = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            for r in got.drain(..) {
                let id = r.headers["x-hookgate-delivery-id"].to_str().unwrap().to_owned();
                if !firsts.contains(&id) {
                    firsts.push(id);
                }
            }
            if firsts.len() == keys.len() * per_key || std::time::Instant::now() > deadline {
                break;
            }
            if let Ok(Some(r)) = tokio::time::timeout(Duration::from_millis(500), up.rx.recv()).await {
                got.push(r);
            }
        }
        assert_eq!(firsts.len(), keys.len() * per_key, "{store}: every acknowledged delivery arrives");
        for k in keys {
            let of_key: Vec<&String> = firsts.iter().filter(|i| i.contains(&format!("-{k}-"))).collect();
            let mut sorted = of_key.clone();
            sorted.sort();
            assert_eq!(of_key, sorted, "{store}: key {k} in the order received");
        }
    }
}

/// SIGTERM: attempts in flight finish within shutdown_grace, then exit 0;
/// what was not attempted stays stored for the next start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_queue_attempts_in_flight_finish() {
    let qdir = tempfile::tempdir().unwrap();
    let mut up = spawn_upstream(Behavior::Answer(200, "slow ok", Duration::from_millis(800))).await;
    let text = queue_text(up.addr, &disk_queue(qdir.path(), "always"))
        .replace("delivery = \"queue\"", "delivery = \"queue\"\nconcurrency = 1");
    let mut p = start(&text);
    let cfg = config(&text);
    for id in ["term-1", "term-2"] {
        let body = tampa_body(id, "order.created");
        let headers = sign_with(&cfg, "tampa", &body, Some(id), None, std::time::SystemTime::now());
        let r = send(&format!("http://{}/webhooks/tampa", p.addr), "POST", &headers, body).await;
        assert_eq!(r.status, 202);
    }
    let first = up.next().await; // term-1 is in flight (the upstream takes 800 ms)
    assert_eq!(first.headers["x-hookgate-delivery-id"], "term-1");
    p.signal("-TERM");
    assert_eq!(p.wait_exit(), 0);
    assert_eq!(up.hits(), 1, "nothing new is taken after SIGTERM");
    drop(p);
    up.set(ok_upstream());
    let _p2 = start(&text);
    let got = up.next().await;
    assert_eq!(got.headers["x-hookgate-delivery-id"], "term-2", "term-1 finished before the exit; term-2 waited");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(up.drain().is_empty(), "term-1 is not delivered again");
}

/// Everything `hookgate run` with text logs writes to stderr (a pipe) from
/// start to a SIGTERM once it serves; `HOOKGATE_LOG` as given, or unset.
fn text_log_lines(config_text: &str, log: Option<&str>) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hookgate.toml");
    std::fs::write(&config, config_text.replace("@DIR@", &dir.path().display().to_string())).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "-c"]).arg(&config).stderr(Stdio::piped()).stdout(Stdio::null());
    match log {
        Some(filter) => cmd.env("HOOKGATE_LOG", filter),
        None => cmd.env_remove("HOOKGATE_LOG"),
    };
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut lines = vec![];
    while !lines.iter().any(|l: &String| l.contains("hookgate serving")) {
        lines.push(rx.recv_timeout(Duration::from_secs(10)).unwrap_or_else(|_| panic!("no serving line: {lines:#?}")));
    }
    let ok = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success();
    assert!(ok);
    // Until the process has closed stderr.
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(10)) {
        lines.push(line);
    }
    let _ = child.kill();
    let _ = child.wait();
    lines
}

const TEXT_LOG_CONFIG: &str = "[server]\nlisten = \"127.0.0.1:0\"\n[log]\nformat = \"text\"\n[sources.a]\npath = \"/a\"\nprovider = \"github\"\nsecrets = [\"s\"]\n";

/// Text logs written to a pipe carry no ANSI colour codes.
#[test]
fn text_logs_to_a_pipe_have_no_escape_codes() {
    let lines = text_log_lines(TEXT_LOG_CONFIG, Some("info"));
    let line = lines.iter().find(|l| l.contains("hookgate serving")).unwrap();
    assert!(line.contains("INFO"), "{line:?}");
    assert!(lines.iter().all(|l| !l.contains('\u{1b}')), "no escape codes in {lines:#?}");
}

/// Without `HOOKGATE_LOG` hookgate logs its own `info` lines but not the
/// storage engine's (a disk queue opened in a fresh directory: fjall logs
/// "Creating database" and its flushes at `info`); `HOOKGATE_LOG=info` still
/// shows every crate's.
#[test]
fn the_default_log_level_keeps_other_crates_info_lines_out() {
    let text = format!(
        "{TEXT_LOG_CONFIG}[[sources.a.routes]]\nevents = [\"*\"]\nupstream = \"http://127.0.0.1:9/\"\ndelivery = \"queue\"\n[queue]\npath = \"@DIR@/queue\"\n"
    );
    let default = text_log_lines(&text, None);
    assert!(default.iter().any(|l| l.contains("INFO") && l.contains("hookgate serving")), "{default:#?}");
    assert!(!default.iter().any(|l| l.contains("fjall") || l.contains("lsm_tree")), "{default:#?}");
    let all = text_log_lines(&text, Some("info"));
    assert!(all.iter().any(|l| l.contains("fjall")), "the engine's lines are there to hide: {all:#?}");
}

/// A queue config in `dir` (queue at `store`: `disk:PATH` or a Redis URL) with
/// one named queue route to `app`.
fn queue_move_config(store: &str, app: SocketAddr) -> String {
    let queue = match store.strip_prefix("disk:") {
        Some(path) => format!("[queue]\npath = \"{path}\""),
        None => format!("[queue]\nstore = \"redis\"\n[queue.redis]\nurl = \"{store}\""),
    };
    with_listeners(&format!(
        "{queue}\n[sources.tampa]\npath = \"/webhooks/tampa\"\nprovider = \"tampa\"\nsecrets = [\"{SECRET}\"]\n[[sources.tampa.routes]]\nname = \"orders\"\nevents = [\"*\"]\nupstream = \"http://{app}/in\"\ndelivery = \"queue\"\nretry = {{ backoff = \"20ms\", max_backoff = \"50ms\" }}\n"
    ))
}

fn queue_move(config: &Path, from: &str) -> (i32, String, String) {
    run_cli(&["-c", config.to_str().unwrap(), "queue", "move", "--from", from], None, &[])
}

/// Stores `ids` while the app is down (each tried at least once), then stops the process.
async fn store_while_down(p: &mut Proc, app: &Upstream, ids: &[&str]) {
    let cfg = config(&std::fs::read_to_string(&p.config).unwrap());
    let url = format!("http://{}/webhooks/tampa", p.addr);
    for id in ids {
        let (h, b) = signed(&cfg, id, "order.created");
        assert_eq!(send(&url, "POST", &h, b).await.status, 202);
    }
    let tried = ids.len();
    assert!(eventually(Duration::from_secs(5), async || app.hits() >= tried).await);
    p.signal("-TERM");
    assert_eq!(p.wait_exit(), 0);
}

/// SPEC §12: a start with another `[queue] path` while the old store holds
/// deliveries names it at ERROR (with the command); `hookgate queue move`
/// moves them (dead letters too) and the next start delivers them.
#[tokio::test(flavor = "multi_thread")]
async fn a_moved_queue_path_is_named_and_queue_move_brings_its_deliveries() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let mut app = spawn_upstream(Behavior::Answer(503, "down", Duration::ZERO)).await;
    let conf = tempfile::tempdir().unwrap();
    let mut p = start_in(conf.path(), &queue_move_config(&format!("disk:{}", a.display()), app.addr));
    store_while_down(&mut p, &app, &["m-1", "m-2"]).await;
    let config_path = conf.path().join("hookgate.toml");

    // Started on another path: the old one is named, nothing is delivered from it.
    std::fs::write(&config_path, queue_move_config(&format!("disk:{}", b.display()), app.addr)).unwrap();
    let mut p = start_in(conf.path(), &std::fs::read_to_string(&config_path).unwrap());
    // Logged before "hookgate serving" (which start_in waited for).
    let line = p.seen.iter().find(|l| l.contains("still holds deliveries")).cloned().unwrap_or_default();
    assert!(line.contains("\"level\":\"ERROR\"") && line.contains(&format!("disk:{}", a.display())), "{line}");
    assert!(line.contains("\"deliveries\":2") && line.contains("queue move --from"), "{line}");
    p.signal("-TERM");
    assert_eq!(p.wait_exit(), 0);

    // The move, then a start on the new path delivers them.
    let (code, out, err) = queue_move(&config_path, &format!("disk:{}", a.display()));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("moved 2 deliveries"), "{out}");
    let (code, _, err) = queue_move(&config_path, &format!("disk:{}", b.display()));
    assert_eq!(code, 1, "the config's own store: {err}");
    app.drain();
    app.set(ok_upstream());
    let mut p = start_in(conf.path(), &std::fs::read_to_string(&config_path).unwrap());
    let mut got: Vec<String> = [app.next().await, app.next().await]
        .iter()
        .map(|r| r.headers["x-hookgate-delivery-id"].to_str().unwrap().to_owned())
        .collect();
    got.sort();
    assert_eq!(got, ["m-1", "m-2"]);
    let lines = p.drain_lines();
    assert!(!lines.iter().any(|l| l.contains("still holds deliveries")), "the old store is empty now");
}

/// SPEC §12 and §16: `hookgate queue move` also moves the deliveries waiting
/// behind their `order_by` key (as plain waiting ones: a key's order does
/// not follow a move), disk to Redis and back, and leaves no ordering state
/// behind in Redis; the next start delivers them all.
#[tokio::test(flavor = "multi_thread")]
async fn queue_move_brings_deliveries_waiting_behind_their_order_by_key() {
    let redis = common::redis::RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let disk = format!("disk:{}", dir.path().join("q").display());
    let mut app = spawn_upstream(Behavior::Answer(503, "down", Duration::ZERO)).await;
    let ordered = |store: &str| {
        queue_move_config(store, app.addr)
            .replace("delivery = \"queue\"", "delivery = \"queue\"\norder_by = \"header:X-Key\"")
    };
    let conf = tempfile::tempdir().unwrap();
    let config_path = conf.path().join("hookgate.toml");
    let mut p = start_in(conf.path(), &ordered(&disk));
    let cfg = config(&std::fs::read_to_string(&p.config).unwrap());
    let ids = ["ord-1", "ord-2", "ord-3"];
    for id in ids {
        let (mut h, b) = signed(&cfg, id, "order.created");
        h.push(("X-Key".into(), "k".into()));
        assert_eq!(send(&format!("http://{}/webhooks/tampa", p.addr), "POST", &h, b).await.status, 202);
    }
    // The key's head was tried (and waits for a retry); the other two wait behind it.
    assert!(eventually(Duration::from_secs(5), async || app.hits() >= 1).await);
    p.signal("-TERM");
    assert_eq!(p.wait_exit(), 0);

    std::fs::write(&config_path, ordered(&redis.url())).unwrap();
    let (code, out, err) = queue_move(&config_path, &disk);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("moved 3 deliveries (2 waiting, 1 retrying"), "{out}");

    let disk2 = format!("disk:{}", dir.path().join("q2").display());
    std::fs::write(&config_path, ordered(&disk2)).unwrap();
    let (code, out, err) = queue_move(&config_path, &format!("redis:{}", redis.url()));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("moved 3 deliveries"), "{out}");
    let left = redis.cli(&["KEYS", "hookgate:q:{tampa:orders}:*"]);
    assert_eq!(left.trim(), "hookgate:q:{tampa:orders}:s", "no ordering state is left in Redis");
    assert_eq!(redis.cli(&["XLEN", "hookgate:q:{tampa:orders}:s"]), "0", "and nothing waits there");

    app.drain();
    app.set(ok_upstream());
    let _p = start_in(conf.path(), &std::fs::read_to_string(&config_path).unwrap());
    let mut got = Vec::new();
    for _ in ids {
        got.push(app.next().await.headers["x-hookgate-delivery-id"].to_str().unwrap().to_owned());
    }
    got.sort();
    assert_eq!(got, ids);
}

/// SPEC §12: from the disk store to Redis and back with `hookgate queue move`:
/// waiting deliveries, retries and dead letters keep their route and state.
#[tokio::test(flavor = "multi_thread")]
async fn queue_move_between_disk_and_redis_both_ways() {
    let redis = common::redis::RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let disk = format!("disk:{}", dir.path().join("q").display());
    let mut app = spawn_upstream(Behavior::Answer(503, "down", Duration::ZERO)).await;

    // Disk: one dead letter (the app refused it), then two waiting for a retry.
    app.set(Behavior::Answer(422, "refused", Duration::ZERO));
    let conf = tempfile::tempdir().unwrap();
    let config_path = conf.path().join("hookgate.toml");
    let mut p = start_in(conf.path(), &queue_move_config(&disk, app.addr));
    let cfg = config(&std::fs::read_to_string(&p.config).unwrap());
    let (h, b) = signed(&cfg, "dr-dead", "order.created");
    assert_eq!(send(&format!("http://{}/webhooks/tampa", p.addr), "POST", &h, b).await.status, 202);
    let dead = async || {
        send(&format!("http://{}/queue/dead", p.admin), "GET", &[], "").await.json()["items"].as_array().unwrap().len()
    };
    assert!(eventually(Duration::from_secs(5), async || dead().await == 1).await);
    app.set(Behavior::Answer(503, "down", Duration::ZERO));
    app.hits.store(0, std::sync::atomic::Ordering::SeqCst);
    store_while_down(&mut p, &app, &["dr-1", "dr-2"]).await;

    // The config now names Redis: a start says where the three still are.
    std::fs::write(&config_path, queue_move_config(&redis.url(), app.addr)).unwrap();
    let mut p = start_in(conf.path(), &std::fs::read_to_string(&config_path).unwrap());
    let named = p.seen.iter().find(|l| l.contains("still holds deliveries")).cloned().unwrap_or_default();
    assert!(named.contains(&disk) && named.contains("\"deliveries\":3") && named.contains("\"dead\":1"), "{named}");
    p.signal("-TERM");
    let code = p.wait_exit();
    assert_eq!(code, 0, "{:#?}", p.drain_lines());

    // The move brings all three into Redis.
    let (code, out, err) = queue_move(&config_path, &disk);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("moved 3 deliveries") && out.contains("1 dead"), "{out}");
    assert_eq!(redis.cli(&["ZCARD", "hookgate:q:{tampa:orders}:x"]), "1", "the dead letter is a dead letter there");

    // And back to disk (another directory): then delivered from there.
    let disk2 = format!("disk:{}", dir.path().join("q2").display());
    std::fs::write(&config_path, queue_move_config(&disk2, app.addr)).unwrap();
    let (code, out, err) = queue_move(&config_path, &format!("redis:{}", redis.url()));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("moved 3 deliveries"), "{out}");
    assert_eq!(redis.cli(&["XLEN", "hookgate:q:{tampa:orders}:s"]), "0");
    app.drain();
    app.set(ok_upstream());
    let mut p = start_in(conf.path(), &std::fs::read_to_string(&config_path).unwrap());
    let mut got: Vec<String> = [app.next().await, app.next().await]
        .iter()
        .map(|r| r.headers["x-hookgate-delivery-id"].to_str().unwrap().to_owned())
        .collect();
    got.sort();
    assert_eq!(got, ["dr-1", "dr-2"], "the dead letter stays dead");
    let dead = send(&format!("http://{}/queue/dead", p.admin), "GET", &[], "").await.json();
    assert_eq!(dead["items"][0]["id"], "dr-dead");
    assert_eq!(dead["items"][0]["route"], "orders");
    assert_eq!(dead["items"][0]["last_status"], 422, "its state came along");
    p.signal("-TERM");
    assert_eq!(p.wait_exit(), 0);
}

/// SPEC §12: while a queue route's attempts fail, one WARN per route at most
/// every 30 s (how many wait, the last error, the next attempt); one INFO when
/// it delivers again.
#[tokio::test(flavor = "multi_thread")]
async fn a_failing_queue_route_warns_once_per_interval_and_says_when_it_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_upstream(Behavior::Answer(503, "down", Duration::ZERO)).await;
    let mut p = start(&queue_move_config(&format!("disk:{}", dir.path().join("q").display()), app.addr));
    let cfg = config(&std::fs::read_to_string(&p.config).unwrap());
    let url = format!("http://{}/webhooks/tampa", p.addr);
    for id in ["warn-1", "warn-2"] {
        let (h, b) = signed(&cfg, id, "order.created");
        assert_eq!(send(&url, "POST", &h, b).await.status, 202);
    }
    let warn = p.wait_for("queue route's app is failing");
    let v: serde_json::Value = serde_json::from_str(&warn).unwrap();
    assert_eq!(v["level"], "WARN");
    assert_eq!(v["route"], "orders");
    assert!(v["last_error"].as_str().unwrap().contains("503"), "{warn}");
    assert!(v["waiting"].as_u64().unwrap() >= 1, "{warn}");
    assert!(v.get("next_attempt_in_ms").is_some(), "{warn}");
    // Many more failed attempts (backoff 20-50 ms) within the 30 s: no second WARN.
    assert!(eventually(Duration::from_secs(5), async || app.hits() >= 12).await);
    app.set(ok_upstream());
    let info = p.wait_for("delivers again");
    assert!(info.contains("\"level\":\"INFO\"") && info.contains("\"failed_attempts\""), "{info}");
    let warns = p.seen.iter().filter(|l| l.contains("queue route's app is failing")).count();
    assert_eq!(warns, 1, "one WARN per route per 30 s");
}
