//! Guards that run before the body is read: client address (allowlist, with
//! `X-Forwarded-For` believed only from trusted proxies) and per-source rate
//! limits (GCRA from `governor`; with `scope = "cluster"`, the same GCRA in
//! Redis, one script call per request, shared by every replica).

use std::net::IpAddr;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use http::HeaderMap;
use ipnet::IpNet;

use crate::config::RateLimit;

/// A per-source limiter.
pub type Limiter = DefaultDirectRateLimiter;

pub fn limiter(rl: &RateLimit) -> Limiter {
    RateLimiter::direct(Quota::per_second(rl.per_second).allow_burst(rl.burst))
}

/// `Err(wait)` when over the rate: how long until one more request would pass.
pub fn check_rate(limiter: &Limiter) -> Result<(), Duration> {
    limiter.check().map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
}

/// GCRA over the Redis server's clock. KEYS[1]: the limiter. ARGV: emission
/// interval and burst tolerance, microseconds. Returns 0 when allowed, else
/// the microseconds until one more request would pass.
const GCRA: &str = r"local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + tonumber(ARGV[1])
local allow_at = new_tat - tonumber(ARGV[2])
if allow_at > now then return allow_at - now end
redis.call('SET', KEYS[1], new_tat, 'PX', math.floor((new_tat - now) / 1000) + 1)
return 0";

/// One limit for every replica (`scope = "cluster"`), kept in the dedupe Redis.
pub struct ClusterLimiter {
    conn: std::sync::Arc<crate::redis_conn::RedisConn>,
    script: crate::redis_conn::Script,
    key: String,
    interval_us: String,
    tolerance_us: String,
    /// Redis is failing (the local limiter stands in); logged once per burst.
    failing: std::sync::atomic::AtomicBool,
}

impl ClusterLimiter {
    pub fn new(conn: std::sync::Arc<crate::redis_conn::RedisConn>, prefix: &str, source: &str, rl: &RateLimit) -> Self {
        let interval = 1_000_000 / u64::from(rl.per_second.get()).max(1);
        ClusterLimiter {
            conn,
            script: crate::redis_conn::Script::new(GCRA),
            key: format!("{prefix}rate:{source}"),
            interval_us: interval.max(1).to_string(),
            tolerance_us: (interval.max(1) * u64::from(rl.burst.get())).to_string(),
            failing: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Like [`check_rate`], against the shared limit; while Redis does not
    /// answer, `local` decides (with a warning when that starts).
    pub async fn check(&self, local: &Limiter) -> Result<(), Duration> {
        let args: [&[u8]; 2] = [self.interval_us.as_bytes(), self.tolerance_us.as_bytes()];
        match self.conn.eval(&self.script, &[&self.key], &args).await {
            Ok(Ok(redis::Value::Int(0))) => self.answered(Ok(())),
            Ok(Ok(redis::Value::Int(wait))) => self.answered(Err(Duration::from_micros(wait.max(1) as u64))),
            failed => {
                if !self.failing.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    let why = match failed {
                        Ok(Err(e)) => e.to_string(),
                        Ok(Ok(v)) => format!("unexpected reply {v:?}"),
                        Err(_) => "no answer in time".into(),
                    };
                    tracing::warn!(key = %self.key, error = %why, "cluster rate limit unavailable; each replica limits on its own until Redis answers");
                }
                check_rate(local)
            }
        }
    }

    fn answered(&self, r: Result<(), Duration>) -> Result<(), Duration> {
        if self.failing.swap(false, std::sync::atomic::Ordering::Relaxed) {
            tracing::info!(key = %self.key, "cluster rate limit answers again");
        }
        r
    }
}

fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    let ip = canonical(ip);
    trusted.iter().any(|n| n.contains(&ip))
}

/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) count as their IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The client address: the peer, unless the peer is a trusted proxy, in which
/// case the rightmost `X-Forwarded-For` hop that is not itself trusted.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer = canonical(peer);
    if trusted.is_empty() || !is_trusted(peer, trusted) {
        return peer;
    }
    let mut client = peer;
    let hops = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect::<Vec<_>>();
    for hop in hops.iter().rev() {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) => {
                client = canonical(ip);
                if !is_trusted(client, trusted) {
                    break;
                }
            }
            // Garbage in the chain: stop at the last hop we could read.
            Err(_) => break,
        }
    }
    client
}

/// True when `allow` is empty or contains `ip`.
pub fn ip_allowed(ip: IpAddr, allow: &[IpNet]) -> bool {
    allow.is_empty() || is_trusted(ip, allow)
}

/// Whether the direct peer is a trusted proxy.
pub fn peer_trusted(peer: IpAddr, trusted: &[IpNet]) -> bool {
    is_trusted(peer, trusted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn xff(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", v.parse().unwrap());
        h
    }

    #[test]
    fn xff_only_from_trusted_peers() {
        let trusted = nets(&["10.0.0.0/8"]);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(client_ip(ip("203.0.113.9"), &xff("1.2.3.4"), &trusted), ip("203.0.113.9"));
        assert_eq!(client_ip(ip("10.0.0.1"), &xff("1.2.3.4"), &trusted), ip("1.2.3.4"));
        assert_eq!(client_ip(ip("10.0.0.1"), &xff("6.6.6.6, 1.2.3.4, 10.0.0.2"), &trusted), ip("1.2.3.4"));
        assert_eq!(client_ip(ip("10.0.0.1"), &xff("10.0.0.3, 10.0.0.2"), &trusted), ip("10.0.0.3"));
        assert_eq!(client_ip(ip("10.0.0.1"), &xff("garbage, 10.0.0.2"), &trusted), ip("10.0.0.2"));
        assert_eq!(client_ip(ip("10.0.0.1"), &HeaderMap::new(), &trusted), ip("10.0.0.1"));
        assert_eq!(client_ip(ip("::ffff:10.0.0.1"), &xff("2001:db8::1"), &trusted), ip("2001:db8::1"));
        assert_eq!(client_ip(ip("10.0.0.1"), &xff("1.2.3.4"), &[]), ip("10.0.0.1"));
    }

    #[test]
    fn allowlists_v4_and_v6() {
        let allow = nets(&["10.0.0.0/8", "2001:db8::/32"]);
        assert!(ip_allowed("10.1.2.3".parse().unwrap(), &allow));
        assert!(ip_allowed("2001:db8::5".parse().unwrap(), &allow));
        assert!(!ip_allowed("11.0.0.1".parse().unwrap(), &allow));
        assert!(!ip_allowed("2001:db9::1".parse().unwrap(), &allow));
        assert!(ip_allowed("11.0.0.1".parse().unwrap(), &[]));
    }

    #[test]
    fn burst_then_wait() {
        let l = limiter(&RateLimit {
            per_second: NonZeroU32::new(1).unwrap(),
            burst: NonZeroU32::new(3).unwrap(),
            cluster: false,
        });
        for _ in 0..3 {
            assert!(check_rate(&l).is_ok());
        }
        let wait = check_rate(&l).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1), "{wait:?}");
    }
}
