//! Prometheus metrics (SPEC §3 admin listener).
//!
//! Counter and histogram handles for every source, outcome and route are
//! created once per config load and kept next to the source, so recording on
//! the hot path is one atomic add: no label allocation, no map lookup.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Every value of the `outcome` label.
pub const OUTCOMES: &[&str] = &[
    "forwarded",
    "duplicate",
    "challenge",
    "unrouted",
    "not_found",
    "method_not_allowed",
    "forbidden",
    "rate_limited",
    "payload_too_large",
    "request_timeout",
    "bad_request",
    "missing_signature",
    "malformed_signature",
    "invalid_signature",
    "malformed_timestamp",
    "missing_timestamp",
    "stale_timestamp",
    "unsigned_mismatch",
    "field_too_long",
    "in_flight",
    "store_unavailable",
    "no_route",
    "upstream_timeout",
    "upstream_unreachable",
    "transform_failed",
    "broker_unavailable",
    "queued",
    "queue_unavailable",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    source: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    source: String,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueResultLabels {
    source: String,
    route: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueDepthLabels {
    source: String,
    route: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SecretLabels {
    source: String,
    index: String,
    id: String,
}

fn upstream_histogram() -> Histogram {
    Histogram::new([0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
}

/// The process-wide registry. Families survive config reloads.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    upstream: Family<RouteLabels, Histogram, fn() -> Histogram>,
    dedupe_hits: Family<SourceLabels, Counter>,
    secret_matches: Family<SecretLabels, Counter>,
    /// Store failures of any kind (claim, commit, release).
    pub store_errors: Counter,
    /// `hookgate_config_reloads_total{result}`: `ok`, `invalid`, `failed`.
    reloads: Family<ReloadLabels, Counter>,
    /// Deliveries forwarded without dedupe because `on_store_error = "allow"`.
    pub undeduped: Counter,
    /// Requests to paths no source owns.
    pub not_found: Counter,
    queue_attempts: Family<QueueResultLabels, Counter>,
    queue_depth: Family<QueueDepthLabels, Gauge>,
    queue_oldest: Family<RouteLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// `hookgate_queue_store_resets_total{source,route}`: a Redis stream or
    /// consumer group found gone (FLUSHALL, a restart without persistence).
    queue_resets: Family<RouteLabels, Counter>,
    /// `hookgate_queue_lost_total{source,route}`: deliveries lost to storage
    /// damage (disk store; empty labels when the route is not known).
    queue_lost: Family<RouteLabels, Counter>,
    /// `hookgate_queue_paused{source,route}`: 1 while a queue route is paused (SPEC §16).
    queue_paused: Family<RouteLabels, Gauge>,
}

/// A queue route's attempt counters, made once per worker.
#[derive(Clone)]
pub struct QueueRouteMetrics {
    pub ok: Counter,
    pub retry: Counter,
    pub dead: Counter,
}

/// One queue route's depth, as `/queue` reports it.
#[derive(Debug, Clone, Copy, Default)]
pub struct QueueDepth {
    pub pending: u64,
    pub scheduled: u64,
    pub in_flight: u64,
    pub dead: u64,
    pub oldest_pending_seconds: f64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let upstream = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(upstream_histogram);
        let dedupe_hits = Family::<SourceLabels, Counter>::default();
        let secret_matches = Family::<SecretLabels, Counter>::default();
        let store_errors = Counter::default();
        let reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "hookgate_config_reloads",
            "Config reloads (SIGHUP) by result: ok, invalid, failed",
            reloads.clone(),
        );
        for result in ["ok", "invalid", "failed"] {
            let _ = reloads.get_or_create(&ReloadLabels { result });
        }
        let undeduped = Counter::default();
        registry.register("hookgate_requests", "Webhook requests by source and outcome", requests.clone());
        registry.register(
            "hookgate_upstream_duration_seconds",
            "Time until the upstream answered, by source and route",
            upstream.clone(),
        );
        registry.register("hookgate_dedupe_hits", "Deliveries dropped as duplicates", dedupe_hits.clone());
        registry.register(
            "hookgate_secret_matches",
            "Verified deliveries by the secret that matched: its position (index) and a fingerprint that stays with it across rotations (id)",
            secret_matches.clone(),
        );
        registry.register("hookgate_store_errors", "Dedupe store errors", store_errors.clone());
        registry.register(
            "hookgate_undeduped_forwards",
            "Deliveries forwarded without dedupe because the store failed and on_store_error = \"allow\"",
            undeduped.clone(),
        );
        let queue_attempts = Family::<QueueResultLabels, Counter>::default();
        let queue_depth = Family::<QueueDepthLabels, Gauge>::default();
        let queue_oldest = Family::<RouteLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(
            "hookgate_queue_attempts",
            "Queue delivery attempts by result (ok, retry, dead)",
            queue_attempts.clone(),
        );
        registry.register(
            "hookgate_queue_depth",
            "Stored queue deliveries by state (pending, scheduled, in_flight, dead)",
            queue_depth.clone(),
        );
        registry.register(
            "hookgate_queue_oldest_pending_seconds",
            "Age of the oldest queued delivery that is neither done nor dead",
            queue_oldest.clone(),
        );
        let queue_lost = Family::<RouteLabels, Counter>::default();
        registry.register(
            "hookgate_queue_lost",
            "Acknowledged queued deliveries found lost to storage damage (empty labels: route not known)",
            queue_lost.clone(),
        );
        let queue_resets = Family::<RouteLabels, Counter>::default();
        registry.register(
            "hookgate_queue_store_resets",
            "Times a route's Redis stream or consumer group was found gone (data lost outside hookgate)",
            queue_resets.clone(),
        );
        let queue_paused = Family::<RouteLabels, Gauge>::default();
        registry.register("hookgate_queue_paused", "1 while a queue route is paused", queue_paused.clone());
        let not_found = requests.get_or_create(&RequestLabels { source: String::new(), outcome: "not_found" }).clone();
        Metrics {
            registry,
            requests,
            upstream,
            dedupe_hits,
            secret_matches,
            store_errors,
            reloads,
            undeduped,
            not_found,
            queue_attempts,
            queue_depth,
            queue_oldest,
            queue_resets,
            queue_lost,
            queue_paused,
        }
    }

    pub fn set_queue_paused(&self, source: &str, route: &str, paused: bool) {
        let labels = RouteLabels { source: source.to_owned(), route: route.to_owned() };
        self.queue_paused.get_or_create(&labels).set(i64::from(paused));
    }

    /// Brings `hookgate_queue_lost_total` up to `total` for a route (the store
    /// keeps the count; this is read at scrape time).
    pub fn set_queue_lost(&self, source: &str, route: &str, total: u64) {
        let c = self.queue_lost.get_or_create(&RouteLabels { source: source.to_owned(), route: route.to_owned() });
        c.inc_by(total.saturating_sub(c.get()));
    }

    /// Counts a lost Redis stream or consumer group of a queue route.
    pub fn queue_store_reset(&self, source: &str, route: &str) {
        self.queue_resets.get_or_create(&RouteLabels { source: source.to_owned(), route: route.to_owned() }).inc();
    }

    /// The attempt counters of one queue route.
    pub fn queue_route(&self, source: &str, route: &str) -> QueueRouteMetrics {
        let c = |result| {
            self.queue_attempts
                .get_or_create(&QueueResultLabels { source: source.to_owned(), route: route.to_owned(), result })
                .clone()
        };
        QueueRouteMetrics { ok: c("ok"), retry: c("retry"), dead: c("dead") }
    }

    /// Sets the depth gauges of one queue route (done at scrape time).
    pub fn set_queue_depth(&self, source: &str, route: &str, d: &QueueDepth) {
        for (state, v) in
            [("pending", d.pending), ("scheduled", d.scheduled), ("in_flight", d.in_flight), ("dead", d.dead)]
        {
            let labels = QueueDepthLabels { source: source.to_owned(), route: route.to_owned(), state };
            self.queue_depth.get_or_create(&labels).set(v as i64);
        }
        let labels = RouteLabels { source: source.to_owned(), route: route.to_owned() };
        self.queue_oldest.get_or_create(&labels).set(d.oldest_pending_seconds);
    }

    /// OpenMetrics text exposition.
    pub fn encode_openmetrics(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        sort_series(&out)
    }

    /// Prometheus text format 0.0.4 (what `/metrics` serves unless the
    /// scraper asks for OpenMetrics).
    pub fn encode(&self) -> String {
        openmetrics_to_prometheus(&self.encode_openmetrics())
    }

    /// Counts a reload by its result (`ok`, `invalid`, `failed`).
    pub fn reloaded(&self, result: &'static str) {
        self.reloads.get_or_create(&ReloadLabels { result }).inc();
    }

    /// Handles for one source, created eagerly so every series exists from the start.
    /// `key_ids`: each secret's fingerprint ([`crate::verify::key_id`]), in order.
    /// `routes`: each route's label (its name, else its position), in order.
    pub fn for_source(&self, source: &str, routes: &[&str], key_ids: &[String]) -> SourceMetrics {
        let outcomes = OUTCOMES
            .iter()
            .map(|o| self.requests.get_or_create(&RequestLabels { source: source.to_owned(), outcome: o }).clone())
            .collect();
        let routes = routes
            .iter()
            .map(|r| {
                self.upstream.get_or_create(&RouteLabels { source: source.to_owned(), route: (*r).to_owned() }).clone()
            })
            .collect();
        let secrets = key_ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let labels = SecretLabels { source: source.to_owned(), index: i.to_string(), id: id.clone() };
                self.secret_matches.get_or_create(&labels).clone()
            })
            .collect();
        SourceMetrics {
            outcomes,
            routes,
            secrets,
            dedupe_hits: self.dedupe_hits.get_or_create(&SourceLabels { source: source.to_owned() }).clone(),
        }
    }
}

/// Families come out in registration order but their series in hash order;
/// this sorts each family's samples by their labels (without `le`, and
/// stably, so a histogram's buckets, sum and count stay in their order), so
/// a person can read the page and two scrapes diff cleanly.
fn sort_series(text: &str) -> String {
    fn key(line: &str) -> String {
        let labels = line.split_once('{').and_then(|(_, rest)| rest.split_once('}')).map_or("", |(l, _)| l);
        labels.split(',').filter(|kv| !kv.starts_with("le=")).collect::<Vec<_>>().join(",")
    }
    let mut out = String::with_capacity(text.len());
    let mut samples: Vec<&str> = Vec::new();
    let flush = |samples: &mut Vec<&str>, out: &mut String| {
        samples.sort_by_cached_key(|l| key(l));
        for l in samples.drain(..) {
            out.push_str(l);
            out.push('\n');
        }
    };
    for line in text.lines() {
        if line.starts_with('#') {
            flush(&mut samples, &mut out);
            out.push_str(line);
            out.push('\n');
        } else {
            samples.push(line);
        }
    }
    flush(&mut samples, &mut out);
    out
}

/// Rewrites OpenMetrics text as Prometheus text 0.0.4: counter families are
/// named with their `_total` suffix in `# HELP`/`# TYPE`, and the `# EOF` and
/// `# UNIT` lines go. Samples are already identical in both formats.
pub fn openmetrics_to_prometheus(text: &str) -> String {
    let counters: Vec<&str> =
        text.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter")).collect();
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "].iter().find_map(|p| Some((*p, line.strip_prefix(p)?)));
        match meta {
            Some((prefix, rest)) => {
                let name = rest.split(' ').next().unwrap_or("");
                out.push_str(prefix);
                out.push_str(name);
                if counters.contains(&name) && !name.ends_with("_total") {
                    out.push_str("_total");
                }
                out.push_str(&rest[name.len()..]);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Pre-made handles for one source.
#[derive(Clone)]
pub struct SourceMetrics {
    /// Indexed like [`OUTCOMES`].
    outcomes: Vec<Counter>,
    /// Indexed by route.
    routes: Vec<Histogram>,
    /// Indexed by secret.
    secrets: Vec<Counter>,
    pub dedupe_hits: Counter,
}

/// `outcome`'s place in [`OUTCOMES`].
pub fn outcome_index(outcome: &str) -> Option<usize> {
    OUTCOMES.iter().position(|o| *o == outcome)
}

impl SourceMetrics {
    pub fn outcome(&self, outcome: &str) {
        if let Some(i) = outcome_index(outcome) {
            self.outcome_at(i);
        }
    }

    /// The outcome at `OUTCOMES[i]`.
    pub fn outcome_at(&self, i: usize) {
        if let Some(c) = self.outcomes.get(i) {
            c.inc();
        }
    }

    pub fn upstream(&self, route: usize, seconds: f64) {
        if let Some(h) = self.routes.get(route) {
            h.observe(seconds);
        }
    }

    pub fn secret(&self, index: usize) {
        if let Some(c) = self.secrets.get(index) {
            c.inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_names_counters_with_total() {
        let m = Metrics::new();
        let s = m.for_source("tampa", &["0"], &["k000000".to_owned()]);
        s.outcome("forwarded");
        s.upstream(0, 0.003);
        m.store_errors.inc();
        let text = m.encode();
        for want in [
            "# TYPE hookgate_requests_total counter",
            "hookgate_requests_total{source=\"tampa\",outcome=\"forwarded\"} 1",
            "# TYPE hookgate_store_errors_total counter",
            "hookgate_store_errors_total 1",
            "# TYPE hookgate_upstream_duration_seconds histogram",
            "hookgate_upstream_duration_seconds_bucket{le=\"0.005\",source=\"tampa\",route=\"0\"} 1",
            "hookgate_upstream_duration_seconds_count{source=\"tampa\",route=\"0\"} 1",
            "# TYPE hookgate_dedupe_hits_total counter",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        assert!(!text.contains("# EOF"));
        assert!(m.encode_openmetrics().ends_with("# EOF\n"));
    }

    #[test]
    fn series_are_sorted_by_labels_and_histograms_stay_whole() {
        let m = Metrics::new();
        for name in ["zeta", "alpha", "mid", "beta"] {
            m.for_source(name, &["0", "1"], &["k000000".to_owned()]).upstream(1, 0.002);
        }
        let text = m.encode();
        let outcomes: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("hookgate_requests_total{") && l.contains("outcome=\"forwarded\""))
            .collect();
        let mut sorted = outcomes.clone();
        sorted.sort();
        assert_eq!(outcomes, sorted, "series in label order");
        assert!(outcomes[0].contains("source=\"alpha\""), "{outcomes:?}");
        // One histogram series: its buckets ascend and stay together with its sum and count.
        let series: Vec<&str> = text
            .lines()
            .filter(|l| {
                l.starts_with("hookgate_upstream_duration_seconds") && l.contains("source=\"beta\",route=\"1\"")
            })
            .collect();
        let les: Vec<f64> = series
            .iter()
            .filter_map(|l| l.split("le=\"").nth(1)?.split('"').next()?.replace("+Inf", "inf").parse().ok())
            .collect();
        assert!(les.len() > 5 && les.windows(2).all(|w| w[0] < w[1]), "{les:?}");
        let first = text.lines().position(|l| l == series[0]).unwrap();
        assert_eq!(&text.lines().skip(first).take(series.len()).collect::<Vec<_>>(), &series, "contiguous");
    }
}
