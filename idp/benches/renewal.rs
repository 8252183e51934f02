//! What renewing value tokens costs (`cargo bench -p tokengate-idp`): one renewal's signing work
//! per algorithm (verify the token the session holds, sign the new one), signing alone, and
//! whole renewal rounds against a real `redis-server` (read the due sessions, sign, replace,
//! re-schedule), per session renewed. For the rounds, Redis's own CPU time, network bytes and
//! commands per renewal are read from `INFO` around the timed part and printed at the end
//! (`benches/results/notes.md` turns them into the cost of a million live sessions).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use tokengate_idp::config::TokensConfig;
use tokengate_idp::keys::{KeySet, SigningKey};
use tokengate_idp::metrics::Metrics;
use tokengate_idp::renewal::RenewalTask;
use tokengate_idp::sessions::{Issuer, NewSession};
use tokengate_store::testing::{TestCluster, TestRedis};
use tokengate_store::{AnyStore, Claims, MemoryStore, RedisOptions, RedisStore, now_unix};
use tokio_util::sync::CancellationToken;

/// A key set of one key of each algorithm the IdP signs with, by name.
fn key_sets() -> Vec<(&'static str, String)> {
    vec![
        ("EdDSA", SigningKey::generate_ed25519_pem().unwrap()),
        ("ES256", SigningKey::generate_p256_pem().unwrap()),
    ]
}

fn load(pem: &str, dir: &Path) -> KeySet {
    let file = dir.join("key.pem");
    std::fs::write(&file, pem).unwrap();
    KeySet::new(vec![SigningKey::load(&file).unwrap()]).unwrap()
}

fn roles() -> Vec<String> {
    vec!["orders:read".to_owned()]
}

fn tokens(ttl: u64) -> TokensConfig {
    TokensConfig {
        value_token_ttl: Duration::from_secs(ttl),
        ..TokensConfig::default()
    }
}

fn signing(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("tokengate-bench-renewal-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for (alg, pem) in key_sets() {
        let keys = Arc::new(load(&pem, &dir));
        let store = AnyStore::Memory(MemoryStore::new());
        let issuer = Issuer::new(store, keys.clone(), "tokengate", &tokens(300)).unwrap();
        let issued = rt
            .block_on(issuer.issue(NewSession::access("alice", roles(), "password")))
            .unwrap();
        let now = now_unix();
        eprintln!(
            "{alg}: value token of {} bytes",
            issued.session.value_token.expose().len()
        );
        c.bench_function(&format!("renew value token (verify + sign): {alg}"), |b| {
            b.iter(|| issuer.renewed(black_box(&issued.session), now).unwrap())
        });
        let claims = Claims {
            iss: "tokengate".to_owned(),
            sub: "alice".to_owned(),
            sid: issued.session.id.to_string(),
            roles: vec!["orders:read".to_owned()],
            iat: now,
            exp: now + 300,
            amr: Vec::new(),
        };
        c.bench_function(&format!("sign value token: {alg}"), |b| {
            b.iter(|| keys.current().sign_jwt(black_box(&claims)).unwrap())
        });
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Nanoseconds this thread has run on a CPU: the IdP's side of a round, which runs on this
/// thread alone (single-threaded runtime; `redis-server` is a process of its own).
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Counters of Redis servers that a renewal round moves, summed over the servers.
#[derive(Clone, Copy, Debug, Default)]
struct RedisCounters {
    cpu_seconds: f64,
    bytes_in: u64,
    bytes_out: u64,
    commands: u64,
}

impl RedisCounters {
    fn read(servers: &[&TestRedis]) -> Self {
        let mut sum = RedisCounters::default();
        for redis in servers {
            let info: String =
                redis::from_redis_value(redis.query(&["INFO", "all"]).unwrap()).unwrap();
            let field = |name: &str| -> f64 {
                info.lines()
                    .find_map(|l| l.strip_prefix(&format!("{name}:"))?.trim().parse().ok())
                    .unwrap_or(0.0)
            };
            sum.cpu_seconds += field("used_cpu_sys") + field("used_cpu_user");
            sum.bytes_in += field("total_net_input_bytes") as u64;
            sum.bytes_out += field("total_net_output_bytes") as u64;
            sum.commands += info
                .lines()
                .filter(|l| l.starts_with("cmdstat_"))
                .filter_map(|l| {
                    l.split("calls=")
                        .nth(1)?
                        .split(',')
                        .next()?
                        .parse::<u64>()
                        .ok()
                })
                .sum::<u64>();
        }
        sum
    }

    fn add_since(&mut self, before: &Self, after: &Self) {
        self.cpu_seconds += after.cpu_seconds - before.cpu_seconds;
        self.bytes_in += after.bytes_in - before.bytes_in;
        self.bytes_out += after.bytes_out - before.bytes_out;
        self.commands += after.commands - before.commands;
    }
}

/// Renewal rounds of `store` (on `servers`) with keys `pem`, timed per session renewed; prints
/// the IdP's CPU time and Redis's counters per renewal.
fn bench_rounds(
    c: &mut Criterion,
    name: &str,
    store: AnyStore,
    servers: &[&TestRedis],
    pem: &str,
    rt: &tokio::runtime::Runtime,
) {
    let dir = std::env::temp_dir().join(format!("tokengate-bench-rounds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let keys = Arc::new(load(pem, &dir));
    let _ = std::fs::remove_dir_all(&dir);
    // Sessions are issued with tokens that are due at once, and renewed for an hour: each
    // leaves the schedule's due range, so every round renews exactly the sessions it is given.
    let short = Issuer::new(store.clone(), keys.clone(), "tokengate", &tokens(60)).unwrap();
    let long = Arc::new(Issuer::new(store.clone(), keys, "tokengate", &tokens(3600)).unwrap());
    let metrics = Metrics::new();
    let task = RenewalTask::new(store, long, &metrics);
    let mut counters = RedisCounters::default();
    let mut idp_cpu_ns = 0u64;
    let mut renewed = 0u64;
    c.bench_function(&format!("renewal round, per session: {name}"), |b| {
        b.iter_custom(|sessions| {
            rt.block_on(async {
                for _ in 0..sessions {
                    let new = NewSession::access("alice", roles(), "password");
                    short.issue(new).await.unwrap();
                }
            });
            let before = RedisCounters::read(servers);
            let done = metrics.value_tokens_resigned.get();
            let (started, cpu) = (Instant::now(), thread_cpu_ns());
            rt.block_on(task.round(&CancellationToken::new())).unwrap();
            let elapsed = started.elapsed();
            idp_cpu_ns += thread_cpu_ns() - cpu;
            counters.add_since(&before, &RedisCounters::read(servers));
            let this = metrics.value_tokens_resigned.get() - done;
            assert_eq!(this, sessions, "every due session renewed once");
            renewed += this;
            elapsed
        })
    });
    let int = |redis: &TestRedis, args: &[&str]| -> Option<u64> {
        redis::from_redis_value(redis.query(args).ok()?).ok()
    };
    // The schedule is one key, on one of the servers.
    let (scheduled, bytes) = servers
        .iter()
        .find_map(|r| {
            let n = int(r, &["ZCARD", "tg:{renewal}"]).filter(|n| *n > 0)?;
            Some((
                n,
                int(r, &["MEMORY", "USAGE", "tg:{renewal}", "SAMPLES", "0"])?,
            ))
        })
        .unwrap_or((1, 0));
    if renewed == 0 {
        return; // filtered out
    }
    let per = |x: f64| x / renewed as f64;
    eprintln!(
        "renewal rounds ({name}): {renewed} sessions renewed; IdP CPU per renewal {:.1} µs; \
         Redis per renewal: {:.1} µs CPU, {:.0} bytes in, {:.0} bytes out, {:.3} commands \
         executed (those inside scripts included); the schedule holds {} bytes per session",
        per(idp_cpu_ns as f64 / 1e3),
        per(counters.cpu_seconds * 1e6),
        per(counters.bytes_in as f64),
        per(counters.bytes_out as f64),
        per(counters.commands as f64),
        bytes / scheduled,
    );
}

fn rounds(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _runtime = rt.enter();
    for (alg, pem) in key_sets() {
        let redis = TestRedis::start();
        let store =
            AnyStore::Redis(RedisStore::connect(&redis.url(), RedisOptions::default()).unwrap());
        bench_rounds(c, &format!("Redis, {alg}"), store, &[&redis], &pem, &rt);
    }
    let cluster = TestCluster::start();
    let store = RedisStore::connect_cluster(&cluster.urls(), RedisOptions::default()).unwrap();
    let nodes: Vec<&TestRedis> = cluster.nodes().iter().collect();
    let (alg, pem) = &key_sets()[0];
    let name = format!("Redis Cluster of 3, {alg}");
    bench_rounds(c, &name, AnyStore::Redis(store), &nodes, pem, &rt);
}

criterion_group!(benches, signing, rounds);
criterion_main!(benches);
