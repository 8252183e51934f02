//! Memory of a route's rate limit under a flood of distinct keys: one million client addresses
//! through `per = "client_address"` with the default `rate_limit_max_keys` (100,000). The limit
//! is RSS growth under 64 MiB (issue #26); what it measures goes into benches/results/notes.md.
//!
//!     cargo bench -p tokengate-gateway --bench ratelimit_memory
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv6Addr};

use prometheus_client::metrics::counter::Counter;
use tokengate_gateway::config::{Per, RateLimitConfig, default_max_keys};
use tokengate_gateway::ratelimit::RateLimiter;

/// Resident memory of this process, in bytes (Linux: `/proc/self/statm`, in pages).
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

fn main() {
    // `cargo test --benches` runs this with `--bench` absent: a smaller pass keeps it quick.
    let full = std::env::args().any(|a| a == "--bench");
    let keys: u64 = if full { 1_000_000 } else { 10_000 };
    let config = RateLimitConfig {
        rate: "10/s".into(),
        burst: Some(10),
        per: Per::ClientAddress,
        max_keys: default_max_keys(),
    };
    let limiter = RateLimiter::new(&config, Counter::default()).unwrap();
    let before = rss();
    let started = std::time::Instant::now();
    for n in 0..keys {
        let address = IpAddr::V6(Ipv6Addr::from((0x2001_0db8u128 << 96) | u128::from(n)));
        let _ = limiter.check(None, address);
    }
    let took = started.elapsed();
    let grown = rss().saturating_sub(before);
    println!(
        "rate limit, {keys} distinct client addresses: {} keys kept (max {}), RSS +{:.1} MiB, {:.0} ns per check",
        limiter.keys(),
        default_max_keys(),
        grown as f64 / (1024.0 * 1024.0),
        took.as_nanos() as f64 / keys as f64
    );
    assert!(limiter.keys() <= default_max_keys());
    assert!(
        grown < 64 * 1024 * 1024,
        "RSS grew by {grown} bytes, more than 64 MiB"
    );
}
