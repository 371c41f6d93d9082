//! Memory used by the in-memory dedupe store for N remembered IDs.
//!
//!     cargo run --release --example store_footprint -- 1000000
//!     cargo run --release --example store_footprint -- 1000000 3000000   # past the bound
//!
//! Prints the process RSS before and after remembering N delivered IDs
//! (UUID-length IDs, claimed then committed, as the gateway does), and the
//! slowest single claim + commit on the way (a table resize happens inside one).

use std::time::Duration;

use hookgate::config::{DedupeConfig, OnStoreError, StoreConfig};
use hookgate::dedupe::{ClaimOutcome, Store};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    // How many deliveries to remember (default: exactly the bound); more evicts the oldest.
    let total: usize = std::env::args().nth(2).and_then(|a| a.parse().ok()).unwrap_or(n);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let cfg = DedupeConfig {
            store: StoreConfig::Memory { max_entries: n },
            ttl: Duration::from_secs(86_400),
            claim_ttl: Duration::from_secs(60),
            on_store_error: OnStoreError::Reject,
        };
        let store = Store::from_config(&cfg).expect("store");
        let before = rss_mb();
        let mut slowest = Duration::ZERO;
        for i in 0..total {
            let started = std::time::Instant::now();
            let id = format!("{i:08x}-1c2d-4e5f-8a9b-0c1d2e3f4a5b");
            match store.claim("tampa", &id, None, &cfg).await.expect("claim") {
                ClaimOutcome::Claimed(c) => c.commit().await.expect("commit"),
                other => panic!("{other:?}"),
            }
            slowest = slowest.max(started.elapsed());
        }
        let after = rss_mb();
        println!(
            "remembered {n} IDs ({total} delivered): RSS {before:.1} MB -> {after:.1} MB ({:.1} MB for the store, {:.0} bytes/ID); \
             slowest claim + commit {:.2} ms",
            after - before,
            (after - before) * 1_048_576.0 / n as f64,
            slowest.as_secs_f64() * 1000.0
        );
    });
}
