//! Config validation: defaults, every error reported with its key path.

use super::*;
use crate::verify::{Locator, SignatureFormat};

fn env(name: &str) -> Option<String> {
    match name {
        "TAMPA_SECRET" => Some("s3cret".into()),
        _ => None,
    }
}

const MINIMAL: &str = r#"
[sources.tampa]
path = "/webhooks/tampa"
provider = "tampa"
secrets = ["${TAMPA_SECRET}", "${TAMPA_SECRET_PREVIOUS:-}"]

[[sources.tampa.routes]]
events = ["*"]
upstream = "http://127.0.0.1:3002/hooks"
"#;

#[test]
fn minimal_config_gets_documented_defaults() {
    let cfg = load_str(MINIMAL, &env).unwrap();
    assert_eq!(cfg.server.listen.to_string(), "0.0.0.0:8080");
    assert_eq!(cfg.server.admin_listen, None);
    assert_eq!(cfg.server.max_body_bytes, 1_048_576);
    assert_eq!(cfg.server.request_timeout, Duration::from_secs(30));
    assert_eq!(cfg.server.shutdown_grace, Duration::from_secs(30));
    assert_eq!(cfg.dedupe.store, StoreConfig::Memory { max_entries: 1_000_000 });
    assert_eq!(cfg.dedupe.ttl, Duration::from_secs(86_400));
    assert_eq!(cfg.dedupe.claim_ttl, Duration::from_secs(60));
    assert_eq!(cfg.dedupe.on_store_error, OnStoreError::Reject);
    assert_eq!(cfg.log.format, LogFormat::Text);
    let s = &cfg.sources[0];
    assert_eq!(s.verifier.keys.len(), 1, "empty secrets are ignored");
    assert_eq!(s.verifier.spec.tolerance, Duration::from_secs(300));
    assert_eq!(s.unrouted, Unrouted::Ack);
    assert_eq!(s.routes[0].timeout, Duration::from_secs(10));
}

#[test]
fn memory_store_bound_is_checked() {
    for bad in ["0", "100000001"] {
        let errs = load_str(&format!("[dedupe]\nmax_entries = {bad}\n{MINIMAL}"), &env).unwrap_err().0;
        assert!(errs.iter().any(|e| e.starts_with("dedupe.max_entries: must be between 1 and 100000000")), "{errs:?}");
    }
    let cfg = load_str(&format!("[dedupe]\nmax_entries = 100000000\n{MINIMAL}"), &env).unwrap();
    assert_eq!(cfg.dedupe.store, StoreConfig::Memory { max_entries: 100_000_000 });
}

#[test]
fn log_bodies_is_a_byte_size() {
    assert_eq!(load_str(MINIMAL, &env).unwrap().log.bodies, 0, "capture is off by default");
    for (text, bytes) in [("\"64MB\"", 64_000_000), ("\"1 MiB\"", 1 << 20), ("4096", 4096), ("0", 0)] {
        let cfg = load_str(&format!("[log]\nbodies = {text}\n{MINIMAL}"), &env).unwrap();
        assert_eq!(cfg.log.bodies, bytes, "{text}");
    }
    let huge = format!("\"{}\"", "9".repeat(10_000));
    for bad in ["\"lots\"", "-1", "\"65GiB\"", "true", "\"\"", "\"12 parsecs\"", huge.as_str()] {
        let errs = load_str(&format!("[log]\nbodies = {bad}\n{MINIMAL}"), &env).unwrap_err().0;
        assert!(errs.iter().any(|e| e.starts_with("log.bodies: ")), "{bad}: {errs:?}");
    }
}

#[test]
fn alerts_tables_are_checked_with_their_paths_and_never_echo_the_url() {
    let ok = load_str(
        &format!("[[alerts]]\nurl = \"https://hooks.slack.com/services/T/B/s3cret\"\nformat = \"slack\"\nsignature_failures = \"20/m\"\nalert_every = \"5m\"\n{MINIMAL}"),
        &env,
    )
    .unwrap();
    let a = &ok.alerts[0];
    assert_eq!((a.endpoint.shown.as_str(), a.alert_every), ("https://hooks.slack.com", Duration::from_secs(300)));
    assert_eq!(a.signature_failures.map(|r| (r.per, r.period)), Some((20, Duration::from_secs(60))));
    assert!(load_str(MINIMAL, &env).unwrap().alerts.is_empty());
    let bad = [
        ("format = \"teams\"", "alerts[0].format"),
        ("signature_failures = \"many\"", "alerts[0].signature_failures"),
        ("alert_every = \"often\"", "alerts[0].alert_every"),
        ("colour = \"red\"", "alerts[0]"),
    ];
    for (line, path) in bad {
        let text = format!("[[alerts]]\nurl = \"http://127.0.0.1:9/s3cret\"\n{line}\n{MINIMAL}");
        let errs = load_str(&text, &env).unwrap_err().0;
        assert!(errs.iter().any(|e| e.starts_with(path)), "{line}: {errs:?}");
    }
    for url in ["ftp://host/s3cret", "not a url s3cret", "http://u:s3cret@host/"] {
        let errs = load_str(&format!("[[alerts]]\nurl = \"{url}\"\n{MINIMAL}"), &env).unwrap_err().0;
        assert!(errs.iter().any(|e| e.starts_with("alerts[0].url: ")), "{url}: {errs:?}");
        assert!(errs.iter().all(|e| !e.contains("s3cret")), "{url}: {errs:?}");
    }
    let errs = load_str(&format!("[[alerts]]\nformat = \"json\"\n{MINIMAL}"), &env).unwrap_err().0;
    assert!(errs.iter().any(|e| e.starts_with("alerts[0].url: required")), "{errs:?}");
    let errs = load_str(&format!("alerts = 3\n{MINIMAL}"), &env).unwrap_err().0;
    assert!(errs.iter().any(|e| e.starts_with("alerts")), "{errs:?}");
}

#[test]
fn otel_is_checked_with_its_paths() {
    let ok = load_str(&format!("[otel]\nendpoint = \"http://collector:4318\"\n{MINIMAL}"), &env).unwrap();
    assert_eq!(ok.otel.as_ref().map(|o| o.service_name.as_str()), Some("hookgate"));
    assert!(load_str(MINIMAL, &env).unwrap().otel.is_none(), "off by default");
    for (text, path) in [
        ("[otel]\nservice_name = \"x\"", "otel.endpoint: required"),
        ("[otel]\nendpoint = \"grpc://c:4317\"", "otel.endpoint: "),
        ("[otel]\nendpoint = \"http://c:4318\"\nservice_name = \"\"", "otel.service_name: "),
        ("[otel]\nendpoint = \"http://c:4318\"\ntimeout = \"soon\"", "otel.timeout: "),
        ("[otel]\nendpoint = \"http://c:4318\"\nsampler = 1", "otel.sampler: unknown key"),
    ] {
        let errs = load_str(&format!("{text}\n{MINIMAL}"), &env).unwrap_err().0;
        assert!(errs.iter().any(|e| e.starts_with(path)), "{text}: {errs:?}");
    }
}

#[test]
fn every_error_is_reported_with_its_path() {
    let text = r#"
bogus_top = 1
[server]
listen = "nowhere"
request_timeout = "5 parsecs"
colour = "blue"
[dedupe]
store = "postgres"
on_store_error = "maybe"
[log]
format = "xml"
[sources.a]
path = "relative"
provider = "nope"
secrets = ["${UNSET_ONE}"]
allow_ips = ["10.0.0.0/33"]
unrouted = "drop"
typo = true
[sources.a.verify]
signed_payload = "{nope}{body}"
timestamp = "cookie:x"
[[sources.a.routes]]
events = []
upstream = "ftp://x"
timeout = "soon"
[sources.b]
path = "/b"
provider = "tyk"
secrets = ["t"]
"#;
    let errs = load_str(text, &env).unwrap_err().0;
    let expect = [
        "bogus_top: unknown key",
        "server.listen:",
        "server.request_timeout:",
        "server.colour: unknown key",
        "dedupe.store:",
        "dedupe.on_store_error:",
        "log.format:",
        "sources.a.path:",
        "sources.a.provider:",
        "sources.a.secrets[0]: environment variable UNSET_ONE",
        "sources.a.allow_ips[0]:",
        "sources.a.unrouted:",
        "sources.a.typo: unknown key",
        "sources.a.verify.signed_payload:",
        "sources.a.verify.timestamp:",
        "sources.a.routes[0].events:",
        "sources.a.routes[0].upstream:",
        "sources.a.routes[0].timeout:",
        "sources.b.verify.signature_header: required",
    ];
    for e in expect {
        assert!(errs.iter().any(|got| got.starts_with(e)), "missing {e:?} in:\n{}", errs.join("\n"));
    }
}

#[test]
fn duplicate_paths_and_missing_secrets_are_errors() {
    let text = r#"
[sources.a]
path = "/same"
provider = "github"
secrets = ["x"]
[sources.b]
path = "/same"
provider = "github"
secrets = ["", "${NOPE:-}"]
"#;
    let errs = load_str(text, &env).unwrap_err().0;
    assert!(errs.iter().any(|e| e.starts_with("sources.b.secrets: no non-empty secret")), "{errs:?}");
    let text = text.replace("secrets = [\"\", \"${NOPE:-}\"]", "secrets = [\"y\"]");
    let errs = load_str(&text, &env).unwrap_err().0;
    assert!(errs.iter().any(|e| e.starts_with("sources.b.path:") && e.contains("sources.a")), "{errs:?}");
}

#[test]
fn redis_settings() {
    let text = format!(
        "[dedupe]\nstore = \"redis\"\n[dedupe.redis]\ncluster = [\"redis://127.0.0.1:7000\"]\nkey_prefix = \"x:\"\n{MINIMAL}"
    );
    let cfg = load_str(&text, &env).unwrap();
    match cfg.dedupe.store {
        StoreConfig::Redis(r) => {
            assert_eq!(r.target, RedisTarget::Cluster(vec!["redis://127.0.0.1:7000".into()]));
            assert_eq!(r.key_prefix, "x:");
        }
        other => panic!("{other:?}"),
    }
    let text = format!(
        "[dedupe]\nstore = \"redis\"\n[dedupe.redis]\nurl = \"http://x\"\ncluster = [\"redis://h:1\"]\n{MINIMAL}"
    );
    let errs = load_str(&text, &env).unwrap_err().0;
    assert!(errs.iter().any(|e| e.starts_with("dedupe.redis:")), "{errs:?}");
}

/// `[dedupe.redis] ca` / `[queue.redis] ca`: read and checked at load, for
/// `rediss://` only; the queue's Redis inherits the CA with the server.
#[test]
fn redis_ca_is_checked_and_goes_with_its_server() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    let cert = rcgen::generate_simple_self_signed(vec!["redis.internal".to_owned()]).unwrap();
    std::fs::write(&ca, cert.cert.pem()).unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    // Hostile files: 4 MB of noise, a certificate cut short, a directory.
    let huge = dir.path().join("huge.pem");
    std::fs::write(&huge, vec![b'A'; 4 << 20]).unwrap();
    let cut = dir.path().join("cut.pem");
    let pem = cert.cert.pem();
    std::fs::write(&cut, format!("{}\n-----END CERTIFICATE-----\n", &pem[..pem.len() / 2])).unwrap();
    let with = |url: &str, ca: &std::path::Path, queue: &str| {
        format!(
            "[dedupe]\nstore = \"redis\"\n[dedupe.redis]\nurl = \"{url}\"\nca = \"{}\"\n[queue]\nstore = \"redis\"\n{queue}\n{MINIMAL}",
            ca.display()
        )
    };
    let redis = |s: &StoreConfig| match s {
        StoreConfig::Redis(r) => r.clone(),
        other => panic!("{other:?}"),
    };
    let queue_redis = |q: &QueueStoreConfig| match q {
        QueueStoreConfig::Redis(r) => r.clone(),
        other => panic!("{other:?}"),
    };
    let cfg = load_str(&with("rediss://:pw@redis.internal:6380/0", &ca, ""), &env).unwrap();
    let roots = redis(&cfg.dedupe.store).roots.expect("the CA is kept");
    assert_eq!((&*roots.path, &*roots.pem), (ca.to_str().unwrap(), cert.cert.pem().as_bytes()));
    assert_eq!(queue_redis(&cfg.queue.as_ref().unwrap().store).roots, Some(roots), "inherited with the server");
    // The queue's own server: its own CA or none.
    let own = "[queue.redis]\nurl = \"rediss://queue.internal:6380/0\"";
    let cfg = load_str(&with("rediss://redis.internal:6380/0", &ca, own), &env).unwrap();
    assert_eq!(queue_redis(&cfg.queue.as_ref().unwrap().store).roots, None);

    for (url, file, want) in [
        (
            "redis://:pw@redis.internal:6379/0",
            ca.as_path(),
            "dedupe.redis.ca: ca applies to rediss:// (TLS) servers only",
        ),
        ("rediss://:pw@redis.internal:6380/0", junk.as_path(), "dedupe.redis.ca: "),
        ("rediss://:pw@redis.internal:6380/0", &dir.path().join("missing.pem"), "dedupe.redis.ca: "),
        ("rediss://:pw@redis.internal:6380/0", huge.as_path(), "dedupe.redis.ca: "),
        ("rediss://:pw@redis.internal:6380/0", cut.as_path(), "dedupe.redis.ca: "),
        ("rediss://:pw@redis.internal:6380/0", dir.path(), "dedupe.redis.ca: "),
    ] {
        let errs = load_str(&with(url, file, ""), &env).unwrap_err().0;
        assert!(errs.iter().any(|e| e.starts_with(want) && !e.contains("pw")), "{url} {file:?}: {errs:?}");
    }
    for file in [&junk, &huge, &cut] {
        let errs = load_str(&with("rediss://redis.internal:6380/0", file, ""), &env).unwrap_err().0;
        assert!(errs.iter().any(|e| e.contains(file.to_str().unwrap()) && e.len() < 500), "names the file: {errs:?}");
    }
    let cluster = format!(
        "[dedupe]\nstore = \"redis\"\n[dedupe.redis]\ncluster = [\"rediss://a:7000\", \"redis://b:7000\"]\nca = \"{}\"\n{MINIMAL}",
        ca.display()
    );
    let errs = load_str(&cluster, &env).unwrap_err().0;
    assert!(errs.iter().any(|e| e.starts_with("dedupe.redis.ca: ca applies to rediss://")), "{errs:?}");
}

#[test]
fn type_errors_name_their_table() {
    let text = format!("[server]\nmax_body_bytes = \"big\"\n{MINIMAL}");
    let errs = load_str(&text, &env).unwrap_err().0;
    assert!(errs.iter().any(|e| e.starts_with("server:") && e.contains("max_body_bytes")), "{errs:?}");
}

#[test]
fn the_shipped_example_config_is_valid() {
    let text = include_str!("../../../config.example.toml");
    let cfg = load_str(text, &|_| None).unwrap_or_else(|e| panic!("config.example.toml:\n{e}"));
    assert!(!cfg.sources.is_empty());
}

#[test]
fn the_shipped_example_configs_are_valid() {
    let env = |name: &str| Some(format!("test-{name}"));
    let compose = include_str!("../../../examples/compose/hookgate.toml");
    load_str(compose, &env).unwrap_or_else(|e| panic!("examples/compose/hookgate.toml:\n{e}"));
    // The Kubernetes manifest embeds its config in a ConfigMap: check that text too.
    let k8s = include_str!("../../../examples/kubernetes/sidecar.yaml");
    let start = k8s.find("hookgate.toml: |").expect("configmap entry") + "hookgate.toml: |".len();
    let end = k8s[start..].find("\n---").map_or(k8s.len(), |i| start + i);
    let embedded: String =
        k8s[start..end].lines().map(|l| l.strip_prefix("    ").unwrap_or(l)).collect::<Vec<_>>().join("\n");
    load_str(&embedded, &env).unwrap_or_else(|e| panic!("examples/kubernetes/sidecar.yaml:\n{e}"));
}

/// The Dockerfile serves config.example.toml with these variables set.
#[test]
fn the_example_config_listens_where_the_dockerfile_says() {
    let text = include_str!("../../../config.example.toml");
    let env = |name: &str| match name {
        "HOOKGATE_LISTEN" => Some("0.0.0.0:8080".to_owned()),
        "HOOKGATE_ADMIN_LISTEN" => Some("0.0.0.0:9090".to_owned()),
        _ => None,
    };
    let cfg = load_str(text, &env).unwrap();
    assert_eq!(cfg.server.listen.to_string(), "0.0.0.0:8080");
    assert_eq!(cfg.server.admin_listen.map(|a| a.to_string()).as_deref(), Some("0.0.0.0:9090"));
    let dockerfile = include_str!("../../../Dockerfile");
    assert!(dockerfile.contains("HOOKGATE_LISTEN=0.0.0.0:8080") && dockerfile.contains("EXPOSE 8080 9090"));
}

#[test]
fn errors_never_echo_secrets_or_redis_passwords() {
    let text = r#"
[dedupe]
store = "redis"
[dedupe.redis]
url = "http://user:hunter2-redis@h:1/0"
[sources.a]
path = "/a"
provider = "standard-webhooks"
secrets = ["whsec_hunter2!!notbase64"]
[sources.b]
path = "/b"
provider = "github"
secrets = 12345
"#;
    let errs = load_str(text, &env).unwrap_err().0;
    assert!(errs.iter().any(|e| e.starts_with("dedupe.redis.url:")), "{errs:?}");
    assert!(errs.iter().any(|e| e.starts_with("sources.a.secrets[0]:")), "{errs:?}");
    assert!(errs.iter().any(|e| e.starts_with("sources.b:")), "{errs:?}");
    let all = errs.join("\n");
    assert!(!all.contains("hunter2") && !all.contains("12345"), "{all}");
    // A single string is accepted as one secret.
    let one = MINIMAL.replace(r#"["${TAMPA_SECRET}", "${TAMPA_SECRET_PREVIOUS:-}"]"#, r#""${TAMPA_SECRET}""#);
    assert_eq!(load_str(&one, &env).unwrap().sources[0].verifier.keys.len(), 1);
}

mod never_panics {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever the file holds, loading it answers Ok or a list of errors.
        #[test]
        fn arbitrary_text(text in "\\PC{0,200}") {
            let _ = load_str(&text, &env);
        }

        /// Well-formed TOML with arbitrary values in every known place.
        #[test]
        fn arbitrary_values(v in "[a-z0-9 ${}:/.*_-]{0,20}", n in any::<i64>()) {
            let text = format!(
                "[server]\nlisten = \"{v}\"\nmax_body_bytes = {n}\n[dedupe]\nttl = \"{v}\"\n[sources.a]\npath = \"{v}\"\nprovider = \"{v}\"\nsecrets = [\"{v}\"]\ntolerance = \"{v}\"\nallow_ips = [\"{v}\"]\nrate_limit = {{ per_second = {n}, burst = {n} }}\n[sources.a.verify]\nsigned_payload = \"{v}\"\ntimestamp = \"{v}\"\n[[sources.a.routes]]\nevents = [\"{v}\"]\nupstream = \"{v}\"\n"
            );
            let _ = load_str(&text, &env);
        }
    }
}

/// The round-2 verify fields: each bad value is an error at its key path, and
/// good ones land in the spec.
#[test]
fn round_two_verify_fields_are_validated_with_their_paths() {
    let bad = r#"
[sources.s]
path = "/s"
provider = "generic"
secrets = ["x"]
[sources.s.verify]
scheme = "rsa"
signature_header = ["X-Sig", "json:nope", "bad header"]
signature_format = "params"
param_separator = ";;"
signature_param = "a=b"
signed_payload = "{timestamp}{header:x}"
timestamp = "digest:json:/a"
id = ["digest:json:/a,digest:json:/b"]
challenge = "knock"
"#;
    let errs = load_str(bad, &env).unwrap_err().0;
    for want in [
        "sources.s.verify.scheme: invalid value \"rsa\"",
        "sources.s.verify.signature_header: invalid header name \"json:nope\"",
        "sources.s.verify.signature_header: invalid header name \"bad header\"",
        "sources.s.verify.param_separator: must be one character",
        "sources.s.verify.signature_param: must be a parameter name",
        "sources.s.verify.signed_payload: unknown placeholder {header:x}",
        "sources.s.verify.timestamp: digest: is for IDs only",
        "sources.s.verify.id: a digest lists",
        "sources.s.verify.challenge: unknown challenge \"knock\"",
    ] {
        assert!(errs.iter().any(|e| e.starts_with(want)), "missing {want:?} in {errs:#?}");
    }
    let errs =
        load_str(&bad.replace("signed_payload = \"{timestamp}{header:x}\"", "signed_payload = \"{timestamp}\""), &env)
            .unwrap_err()
            .0;
    assert!(
        errs.iter().any(|e| e.starts_with("sources.s.verify.signed_payload: the template must cover the body")),
        "{errs:#?}"
    );

    let good = r#"
[sources.s]
path = "/s"
provider = "generic"
secrets = ["x"]
[sources.s.verify]
signature_header = ["X-Sig", "json:/sig"]
signature_format = "params"
param_separator = ";"
signature_param = "h1"
timestamp = ["signature:ts", "header:X-Ts"]
id = "digest:json:/type,header:x-a"
event_type = []
challenge = "ping:hello"
"#;
    let spec = &load_str(good, &env).unwrap().sources[0].verifier.spec;
    assert_eq!(spec.signature, vec![Locator::header("x-sig"), Locator::json("/sig")]);
    assert_eq!(
        (spec.signature_format, spec.param_separator, spec.signature_param.as_str()),
        (SignatureFormat::Params, ';', "h1")
    );
    assert_eq!(spec.timestamp, vec![Locator::SignatureParam("ts".into()), Locator::header("x-ts")]);
    assert!(matches!(&spec.id[..], [Locator::Digest(parts)] if parts.len() == 2));
    assert!(spec.event_type.is_empty());
    assert_eq!(spec.challenge, Challenge::Ping("hello".into()));
}

/// Round 3's keys: every bad value is a `check` error with its key path, and a
/// huge or hostile value is refused with a clear message.
#[test]
fn round_three_keys_are_validated_with_their_paths() {
    let text = format!(
        r#"
[queue]
[sources.tampa]
path = "/webhooks/tampa"
provider = "tampa"
secrets = ["s"]
[sources.tampa.verify]
signed_url = "sometimes"
scheme = "client-state-ish"

[[sources.tampa.routes]]
name = "{long}"
events = ["*"]
upstream = "http://127.0.0.1:3002/hooks"
delivery = "queue"
retry = {{ for = "forever", attempts = 0 }}

[[sources.tampa.routes]]
name = "ok"
events = ["a"]
upstream = "http://127.0.0.1:3002/hooks"
delivery = "queue"
retry = {{ for = "0s" }}

[sources.graph]
path = "/graph"
provider = "msgraph"

[sources.typed]
path = "/typed"
provider = "github"
secrets = ["s"]
dedupe_body = "yes"
"#,
        long = "n".repeat(65)
    );
    let errs = load_str(&text, &env).unwrap_err().to_string();
    for want in [
        "sources.typed: invalid type: string \"yes\", expected a boolean\nin `dedupe_body`",
        "sources.tampa.verify.signed_url",
        "sources.tampa.verify.scheme",
        "sources.tampa.routes[0].name",
        "sources.tampa.routes[0].retry.for",
        "sources.tampa.routes[0].retry.attempts",
        "sources.tampa.routes[1].retry.for: must be longer than 0s",
        "sources.graph.verify_token: required",
    ] {
        assert!(errs.contains(want), "missing {want} in:\n{errs}");
    }
    assert!(errs.contains("use 1-64 letters"), "{errs}");
}

/// SPEC §14's keys: `match`, `filter`, `transform`, `transform_budget`,
/// `headers`, `remove_headers`; each bad value is an error at its key path.
#[test]
fn routing_keys_are_validated_with_their_paths() {
    let text = r#"
[sources.s]
path = "/s"
provider = "github"
secrets = ["s"]
match = "some"

[[sources.s.routes]]
events = ["*"]
upstream = "http://127.0.0.1:3002/a"
filter = { "json:/a" = { between = 1 }, "body:/x" = 1, "json:/n" = { gt = "1" } }
transform = '{a: .b'
headers = { Connection = "close", "X-Hookgate-Source" = "x", Authorization = "Bearer t" }
remove_headers = ["bad name"]

[[sources.s.routes]]
events = ["*"]
upstream = "http://127.0.0.1:3002/b"
transform_budget = "1ms"
filter = { "header:X-Env" = "prod" }

[[sources.s.routes]]
name = "jq"
events = ["x"]
upstream = "http://127.0.0.1:3002/c"
transform = 'env.SECRET'
transform_budget = "1h"

[sources.all]
path = "/all"
provider = "github"
secrets = ["s"]
match = "all"

[[sources.all.routes]]
events = ["*"]
upstream = "http://127.0.0.1:3002/a"

[[sources.all.routes]]
events = ["*"]
upstream = "http://127.0.0.1:3002/b"

[[sources.all.routes]]
events = ["*"]
upstream = "http://127.0.0.1:3002/c"
filter = { "json:/a" = 2 }
"#;
    let errs = load_str(text, &env).unwrap_err().to_string();
    for want in [
        "sources.s.match:",
        "sources.s.routes[0].filter.\"json:/a\".between: unknown operator",
        "sources.s.routes[0].filter.\"body:/x\": unknown locator",
        "sources.s.routes[0].filter.\"json:/n\".gt: expects a number",
        "sources.s.routes[0].transform: syntax error at byte",
        "sources.s.routes[0].headers.\"Connection\": cannot be set: a hop-by-hop header",
        "sources.s.routes[0].headers.\"X-Hookgate-Source\": cannot be set: hookgate's own header",
        "sources.s.routes[0].remove_headers[0]:",
        "sources.s.routes[1].transform_budget: applies to routes with a `transform`",
        "sources.s.routes[2].transform: undefined filter `env`",
        "sources.s.routes[2].transform_budget: must be between 1ms and 10s",
        // Fan-out dedupes per route: unnamed routes with the same events need names.
        "sources.all.routes[1].name: routes[0] matches the same events",
    ] {
        assert!(errs.contains(want), "missing {want} in:\n{errs}");
    }
    assert!(!errs.contains("Bearer t"), "header values are never echoed:\n{errs}");
    assert!(!errs.contains("sources.s.routes[1].name"), "{errs}");
    // A filter is part of an unnamed route's identity (SPEC §12): no clash.
    assert!(!errs.contains("sources.all.routes[2].name"), "{errs}");
}

/// SPEC §16's keys on queue routes, each bad value at its key path.
#[test]
fn queue_operation_keys_are_validated_with_their_paths() {
    let text = r#"
[queue]
[sources.s]
path = "/s"
provider = "github"
secrets = ["s"]

[[sources.s.routes]]
name = "a"
events = ["a"]
upstream = "http://127.0.0.1:3002/a"
delivery = "queue"
rate = "fast"
pause_after = "0s"
probe_every = "1ms"
order_by = "data.customer"

[[sources.s.routes]]
name = "b"
events = ["b"]
upstream = "http://127.0.0.1:3002/b"
delivery = "queue"
probe_every = "1m"
order_by = "signature:t"

[[sources.s.routes]]
name = "c"
events = ["c"]
upstream = "http://127.0.0.1:3002/c"
rate = "5/s"
pause_after = "1m"
order_by = "json:/id"

[[sources.s.routes]]
name = "d"
events = ["d"]
upstream = "http://127.0.0.1:3002/d"
delivery = "queue"
order_by = "json:"
"#;
    let errs = load_str(text, &env).unwrap_err().to_string();
    for want in [
        "sources.s.routes[0].rate: \"fast\": use N/s, N/m or N/h",
        "sources.s.routes[0].pause_after: must be longer than 0s",
        "sources.s.routes[0].probe_every: must be at least 10ms",
        "sources.s.routes[1].probe_every: applies with pause_after",
        "sources.s.routes[2].rate: applies to delivery = \"queue\" routes only",
        "sources.s.routes[2].pause_after: applies to delivery = \"queue\" routes only",
        "sources.s.routes[0].order_by: \"data.customer\": use \"header:NAME\" or \"json:/pointer\"",
        "sources.s.routes[1].order_by: \"signature:t\": use",
        "sources.s.routes[2].order_by: applies to delivery = \"queue\" routes only",
        "sources.s.routes[3].order_by: \"json:\": use",
    ] {
        assert!(errs.contains(want), "missing {want} in:\n{errs}");
    }
}

/// SPEC §2 (round 3): a misspelt key or provider gets the closest known name.
#[test]
fn misspelt_keys_and_providers_get_a_suggestion() {
    let text = r#"
[server]
lisen = "127.0.0.1:8080"
[dedupe]
stroe = "memory"
[sources.s]
path = "/s"
provder = "stripe"
secrets = ["whsec_x"]
[[sources.s.routes]]
evnts = ["*"]
upstrem = "http://127.0.0.1:1/"
retry = { atempts = 3 }
[sources.t]
path = "/t"
provider = "stirpe"
secrets = ["whsec_x"]
[sources.t.verify]
signature_headr = "X-Sig"
"#;
    let errs = load_str(text, &env).unwrap_err().to_string();
    for want in [
        "server.lisen: unknown key; did you mean \"listen\"?",
        "dedupe.stroe: unknown key; did you mean \"store\"?",
        "sources.s.provder: unknown key; did you mean \"provider\"?",
        "sources.s.routes[0].evnts: unknown key; did you mean \"events\"?",
        "sources.s.routes[0].upstrem: unknown key; did you mean \"upstream\"?",
        "sources.t.provider: unknown provider \"stirpe\"; did you mean \"stripe\"?",
        "sources.t.verify.signature_headr: unknown key; did you mean \"signature_header\"?",
    ] {
        assert!(errs.contains(want), "missing {want} in:\n{errs}");
    }
    let far = load_str("[server]\nzzzzzz = 1\n", &env).unwrap_err().to_string();
    assert!(far.contains("server.zzzzzz: unknown key") && !far.contains("did you mean"), "{far}");
}

/// Every name a table's `Keys` lists is one of its fields: set alone it is
/// never reported unknown.
#[test]
fn the_suggested_keys_are_the_tables_fields() {
    use crate::config::file::*;
    fn check<T: serde::de::DeserializeOwned + Keys>(get_unknown: fn(&T) -> &Unknown) {
        for key in T::KEYS {
            let mut t = toml::Table::new();
            t.insert((*key).to_owned(), toml::Value::Boolean(true));
            // A type error means serde took the key as a field; success must leave nothing unknown.
            if let Ok(v) = toml::Value::Table(t).try_into::<T>() {
                assert!(get_unknown(&v).is_empty(), "{key} is not a field of {}", std::any::type_name::<T>());
            }
        }
    }
    check::<FileConfig>(|v| &v.unknown);
    check::<ServerFile>(|v| &v.unknown);
    check::<AcmeFile>(|v| &v.unknown);
    check::<TlsFile>(|v| &v.unknown);
    check::<DedupeFile>(|v| &v.unknown);
    check::<RedisFile>(|v| &v.unknown);
    check::<LogFile>(|v| &v.unknown);
    check::<SourceFile>(|v| &v.unknown);
    check::<RateLimitFile>(|v| &v.unknown);
    check::<VerifyFile>(|v| &v.unknown);
    check::<RouteFile>(|v| &v.unknown);
    check::<RetryFile>(|v| &v.unknown);
    check::<QueueFile>(|v| &v.unknown);
}

/// SPEC §15's keys: a bad broker URL or `keep_signature` off a broker route
/// is an error at its key path, and a password never shows.
#[test]
fn broker_upstreams_are_validated_with_their_paths() {
    let huge = "x".repeat(100_000);
    let text = format!(
        r#"
[sources.s]
path = "/s"
provider = "github"
secrets = ["s"]

[[sources.s.routes]]
name = "a"
events = ["a"]
upstream = "amqp://guest:pw-s3cret@127.0.0.1:5672/%2f?exchange=x"

[[sources.s.routes]]
name = "b"
events = ["b"]
upstream = "http://127.0.0.1:3002/b"
keep_signature = true

[[sources.s.routes]]
name = "c"
events = ["c"]
upstream = "nats://127.0.0.1:4222/hooks.{{nope}}"

[[sources.s.routes]]
name = "d"
events = ["d"]
upstream = "redis://127.0.0.1/0?stream={huge}&maxlen=many"
"#
    );
    let errs = load_str(&text, &env).unwrap_err().to_string();
    for want in [
        "sources.s.routes[0].upstream:",
        "routing_key",
        "sources.s.routes[1].keep_signature: applies to event-bus upstreams",
        "sources.s.routes[2].upstream:",
        "unknown placeholder {nope}",
        "sources.s.routes[3].upstream:",
        "maxlen",
    ] {
        assert!(errs.contains(want), "missing {want} in:\n{errs}");
    }
    assert!(!errs.contains("pw-s3cret"), "{errs}");
    assert!(errs.len() < 250_000, "the huge key is not echoed over and over");
}
