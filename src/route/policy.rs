//! What a queue route promises per delivery: how many tries, how far apart,
//! how many at once, and what the sender is told (SPEC §5). Pure functions of
//! their inputs (the random draw is passed in), so the schedule is tested exactly.

use std::time::Duration;

use http::StatusCode;

/// `retry = { for, attempts, backoff, max_backoff }` (SPEC §12): a delivery is
/// retried until `for` has passed since it was received, so an app down over
/// a weekend loses nothing; `attempts` may cap the tries as well.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// How long after its receipt a delivery is still tried.
    pub horizon: Duration,
    /// Every try counts, the first included; `None`: no cap but the horizon.
    pub attempts: Option<u32>,
    pub backoff: Duration,
    pub max_backoff: Duration,
}

/// `retry.for`'s default: three days.
pub const DEFAULT_HORIZON: Duration = Duration::from_secs(3 * 24 * 3600);

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            horizon: DEFAULT_HORIZON,
            attempts: None,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(3600),
        }
    }
}

/// A route's rate: `per` permits every `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per: u32,
    pub period: Duration,
}

impl Rate {
    /// `"50/s"`, `"600/m"`, `"3600/h"`.
    pub fn parse(text: &str) -> Result<Rate, String> {
        let usage = "use N/s, N/m or N/h, e.g. \"50/s\"";
        let (n, unit) = text.split_once('/').ok_or_else(|| format!("{text:?}: {usage}"))?;
        let per: u32 = n.trim().parse().ok().filter(|n| *n > 0).ok_or_else(|| format!("{text:?}: {usage}"))?;
        let period = match unit.trim() {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return Err(format!("{text:?}: {usage}")),
        };
        if per as f64 / period.as_secs_f64() > 100_000.0 {
            return Err(format!("{text:?}: at most 100000 per second"));
        }
        Ok(Rate { per, period })
    }

    /// Time between two permits.
    pub fn interval(&self) -> Duration {
        self.period / self.per
    }

    /// Permits that may go at once after a quiet spell: a tenth of a second's
    /// worth (at least one), so the rate holds over any window but the
    /// shortest.
    pub fn burst(&self) -> u32 {
        ((self.per as f64 / self.period.as_secs_f64()) / 10.0).floor().max(1.0) as u32
    }
}

/// A route with `delivery = "queue"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueRoute {
    pub retry: RetryPolicy,
    /// Attempts in flight to this route at once, per process; 0 holds every
    /// delivery stored (paused) until a reload raises it.
    pub concurrency: u32,
    /// 200 or 202: the sender's answer once the delivery is stored.
    pub ack_status: StatusCode,
    /// `pause_after`: failing continuously this long pauses the route (SPEC §16).
    pub pause_after: Option<Duration>,
    /// `probe_every`: one attempt this often while paused that way.
    pub probe_every: Duration,
    /// `rate`: at most this many attempts started (all replicas together with Redis).
    pub rate: Option<Rate>,
    /// `order_by`: same key, one at a time, in the order received (SPEC §16).
    pub order_by: Option<OrderBy>,
}

/// Where a queue route's ordering key is read: a header or a JSON pointer
/// into the body. Deliveries without it are not ordered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderBy {
    Header(http::HeaderName),
    Json(String),
}

impl OrderBy {
    pub fn parse(text: &str) -> Result<OrderBy, String> {
        match crate::verify::Locator::parse(text) {
            Ok(crate::verify::Locator::Header(h)) => Ok(OrderBy::Header(h)),
            Ok(crate::verify::Locator::Json(p)) if !p.is_empty() => Ok(OrderBy::Json(p)),
            _ => Err(format!("{text:?}: use \"header:NAME\" or \"json:/pointer\" (e.g. \"json:/data/customer\")")),
        }
    }

    /// The key of one delivery, as stored: the lowercase hex of the first 16
    /// bytes of the SHA-256 of its value (bounded in size whatever the
    /// sender puts there); `None` when the delivery has no such value.
    pub fn key(&self, headers: &http::HeaderMap, body: &[u8]) -> Option<String> {
        use sha2::Digest as _;
        let digest = match self {
            OrderBy::Header(h) => sha2::Sha256::digest(headers.get(h)?.as_bytes()),
            OrderBy::Json(p) => sha2::Sha256::digest(crate::verify::json::pointer_text(body, p)?.as_bytes()),
        };
        Some(hex::encode(&digest[..16]))
    }
}

impl Default for QueueRoute {
    fn default() -> Self {
        QueueRoute {
            retry: RetryPolicy::default(),
            concurrency: 16,
            ack_status: StatusCode::ACCEPTED,
            pause_after: None,
            probe_every: Duration::from_secs(60),
            rate: None,
            order_by: None,
        }
    }
}

/// What one attempt's outcome means for the delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Done,
    /// Try again after this long.
    Retry(Duration),
    Dead,
}

impl RetryPolicy {
    /// The ceiling of the wait after attempt `n` (1-based) failed:
    /// `min(max_backoff, backoff * 2^(n-1))`.
    pub fn ceiling(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX);
        self.backoff.checked_mul(factor).unwrap_or(self.max_backoff).min(self.max_backoff)
    }

    /// The verdict after attempt `n` ended with `status` (`None`: no HTTP
    /// answer: refused, reset or timed out). `retry_after` is the upstream's
    /// `Retry-After` (honoured on 429 and 503, capped by `max_backoff`);
    /// `unit` is a uniform draw in `[0, 1)` for the full jitter.
    pub fn verdict(&self, n: u32, status: Option<StatusCode>, retry_after: Option<Duration>, unit: f64) -> Verdict {
        let retryable = match status {
            None => true,
            Some(s) if s.is_success() => return Verdict::Done,
            Some(s) => s == StatusCode::REQUEST_TIMEOUT || s == StatusCode::TOO_MANY_REQUESTS || s.is_server_error(),
        };
        if !retryable || self.attempts.is_some_and(|a| n >= a) {
            return Verdict::Dead;
        }
        let jittered = self.ceiling(n).mul_f64(unit.clamp(0.0, 1.0));
        let honoured = match status {
            Some(StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE) => retry_after,
            _ => None,
        };
        Verdict::Retry(match honoured {
            Some(d) => d.min(self.max_backoff).max(jittered),
            None => jittered,
        })
    }
}

impl RetryPolicy {
    /// `verdict` within the horizon, for a delivery received `age` ago: past
    /// it, a retry becomes dead; before it, no wait reaches beyond it, so the
    /// last try falls on the horizon itself (jitter never shortens it).
    pub fn within_horizon(&self, verdict: Verdict, age: Duration) -> Verdict {
        match verdict {
            Verdict::Retry(_) if age >= self.horizon => Verdict::Dead,
            Verdict::Retry(d) => Verdict::Retry(d.min(self.horizon - age)),
            other => other,
        }
    }
}

/// A uniform draw in `[0, 1)` for the jitter.
pub fn unit_random() -> f64 {
    let mut b = [0u8; 8];
    // Jitter needs no cryptographic quality; a failed draw means no jitter.
    if getrandom::fill(&mut b).is_err() {
        return 1.0;
    }
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

/// `Retry-After` as delay-seconds or an HTTP-date, relative to `now`.
pub fn parse_retry_after(value: &[u8], now: std::time::SystemTime) -> Option<Duration> {
    let text = std::str::from_utf8(value).ok()?.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(text).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            attempts: Some(4),
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(5),
            ..Default::default()
        }
    }

    /// SPEC §12: retried until `for` has passed since receipt (default three
    /// days, no attempts cap), the last wait ending on the horizon itself.
    #[test]
    fn the_horizon_decides_when_a_delivery_is_dead() {
        let p = RetryPolicy::default();
        assert_eq!((p.horizon, p.attempts), (Duration::from_secs(259_200), None));
        let hour = Duration::from_secs(3600);
        // An app down for an hour: attempt 40 still gets a retry.
        assert!(matches!(p.within_horizon(p.verdict(40, None, None, 0.9), hour), Verdict::Retry(_)));
        // A wait that would overshoot the horizon is cut to end on it.
        let near = p.horizon - Duration::from_secs(10);
        assert_eq!(p.within_horizon(Verdict::Retry(hour), near), Verdict::Retry(Duration::from_secs(10)));
        assert_eq!(p.within_horizon(Verdict::Retry(hour), p.horizon), Verdict::Dead);
        assert_eq!(p.within_horizon(Verdict::Done, p.horizon * 2), Verdict::Done);
        // The whole horizon is used whatever the jitter draws.
        for unit in [0.0, 0.5, 0.999] {
            let short = RetryPolicy { horizon: Duration::from_secs(60), ..p };
            let (mut age, mut n) = (Duration::ZERO, 1);
            while let Verdict::Retry(d) = short.within_horizon(short.verdict(n, None, None, unit), age) {
                age += d.max(Duration::from_millis(50));
                n += 1;
                assert!(n < 10_000, "bounded");
            }
            assert!(age >= short.horizon, "dead after {age:?} with jitter {unit}");
        }
    }

    #[test]
    fn exponential_ceiling_capped_by_max_backoff() {
        let p = policy();
        let got: Vec<_> = (1..=5).map(|n| p.ceiling(n).as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 5, 5]);
        assert_eq!(RetryPolicy::default().ceiling(200), Duration::from_secs(3600), "no overflow");
    }

    #[test]
    fn verdict_per_outcome() {
        let p = policy();
        let s = |c: u16| Some(StatusCode::from_u16(c).unwrap());
        assert_eq!(p.verdict(1, s(200), None, 0.5), Verdict::Done);
        assert_eq!(p.verdict(1, s(204), None, 0.5), Verdict::Done);
        for retryable in [408, 429, 500, 502, 503, 504] {
            assert_eq!(p.verdict(3, s(retryable), None, 0.5), Verdict::Retry(Duration::from_secs(2)), "{retryable}");
        }
        assert_eq!(p.verdict(1, None, None, 0.25), Verdict::Retry(Duration::from_millis(250)), "network error");
        for refused in [400, 401, 403, 404, 409, 410, 422] {
            assert_eq!(p.verdict(1, s(refused), None, 0.5), Verdict::Dead, "{refused}");
        }
        assert_eq!(p.verdict(4, s(500), None, 0.5), Verdict::Dead, "attempts used up");
        assert_eq!(p.verdict(4, None, None, 0.5), Verdict::Dead);
    }

    #[test]
    fn full_jitter_spans_zero_to_the_ceiling() {
        let p = policy();
        assert_eq!(p.verdict(2, None, None, 0.0), Verdict::Retry(Duration::ZERO));
        assert_eq!(p.verdict(2, None, None, 0.999_999), Verdict::Retry(Duration::from_secs(2).mul_f64(0.999_999)));
        for _ in 0..100 {
            let u = unit_random();
            assert!((0.0..1.0).contains(&u));
        }
    }

    #[test]
    fn retry_after_is_honoured_on_429_and_503_only_and_capped() {
        let p = policy();
        let s = |c: u16| Some(StatusCode::from_u16(c).unwrap());
        let three = Some(Duration::from_secs(3));
        assert_eq!(p.verdict(1, s(429), three, 0.0), Verdict::Retry(Duration::from_secs(3)));
        assert_eq!(p.verdict(1, s(503), three, 0.0), Verdict::Retry(Duration::from_secs(3)));
        assert_eq!(p.verdict(1, s(500), three, 0.0), Verdict::Retry(Duration::ZERO), "not on 500");
        let long = Some(Duration::from_secs(600));
        assert_eq!(p.verdict(1, s(429), long, 0.0), Verdict::Retry(Duration::from_secs(5)), "capped");
    }

    #[test]
    fn retry_after_forms() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(parse_retry_after(b"120", now), Some(Duration::from_secs(120)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(parse_retry_after(later.as_bytes(), now), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after(b"soon", now), None);
    }

    #[test]
    fn order_keys_are_bounded_hashes_of_the_value() {
        let by_json = OrderBy::parse("json:/data/customer").unwrap();
        let by_header = OrderBy::parse("header:X-Customer").unwrap();
        let h = http::HeaderMap::new();
        let a = by_json.key(&h, br#"{"data":{"customer":"cus_1"}}"#).unwrap();
        assert_eq!(a.len(), 32);
        assert_eq!(Some(a.clone()), by_json.key(&h, br#"{"data":{"customer":"cus_1","x":1}}"#));
        assert_ne!(Some(a), by_json.key(&h, br#"{"data":{"customer":"cus_2"}}"#));
        // Missing, not JSON, or hostile: no key (not ordered), never a panic.
        for body in [&b"{}"[..], b"not json", b"", &[b'['; 100_000][..], b"{\"data\":{\"customer\":"] {
            assert_eq!(by_json.key(&h, body), None);
        }
        let mut h = http::HeaderMap::new();
        assert_eq!(by_header.key(&h, b""), None);
        h.insert("x-customer", http::HeaderValue::from_str(&"v".repeat(64 * 1024)).unwrap());
        assert_eq!(by_header.key(&h, b"").map(|k| k.len()), Some(32), "a huge value is hashed");
        for bad in ["", "data", "json:", "json:data", "signature:t", "digest:json:/a", "header:bad name"] {
            assert!(OrderBy::parse(bad).is_err(), "{bad}");
        }
    }
}
