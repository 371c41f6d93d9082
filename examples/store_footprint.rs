//! Memory used by the in-memory dedupe store for N remembered IDs.
//!
//!     cargo run --release --example store_footprint -- 1000000
//!
//! Prints the process RSS before and after remembering N delivered IDs
//! (UUID-length IDs, claimed then committed, as the gateway does).

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
        for i in 0..n {
            let id = format!("{i:08x}-1c2d-4e5f-8a9b-0c1d2e3f4a5b");
            match store.claim("tampa", &id, &cfg).await.expect("claim") {
                ClaimOutcome::Claimed(c) => c.commit().await.expect("commit"),
                other => panic!("{other:?}"),
            }
        }
        let after = rss_mb();
        println!(
            "remembered {n} IDs: RSS {before:.1} MB -> {after:.1} MB ({:.1} MB for the store, {:.0} bytes/ID)",
            after - before,
            (after - before) * 1_048_576.0 / n as f64
        );
    });
}
