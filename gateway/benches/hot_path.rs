//! Micro-benchmarks of what every request pays (`cargo bench -p tokengate-gateway`): the cache
//! hit (extract the bearer token, hash it to a session id, look it up, build the forwarded
//! headers), value-token verification per algorithm (what a miss pays on top of the store
//! read), reference-token generation and hashing (what a login pays), and the browser-session
//! cookie: finding the session cookie among a browser's cookies, and stripping it (with the
//! IdP's) before forwarding.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderName, header};
use tokengate_gateway::cache::TokenCache;
use tokengate_gateway::config::CacheConfig;
use tokengate_gateway::jwks::{Jwks, Keys};
use tokengate_gateway::metrics::Metrics;
use tokengate_idp::config::TokensConfig;
use tokengate_idp::keys::{KeySet, SigningKey};
use tokengate_idp::sessions::{Issuer, NewSession};
use tokengate_server::cookies::{self, IDP_COOKIES};
use tokengate_store::{AnyStore, Claims, MemoryStore, ReferenceToken, Verifier, now_unix};

/// Polls a future once: a cache hit must finish without waiting on anything.
fn ready<F: Future>(f: F) -> F::Output {
    match pin!(f).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("a cache hit waited"),
    }
}

fn cache_hit(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = AnyStore::Memory(MemoryStore::new());
    let keys = Arc::new(KeySet::ephemeral().unwrap());
    let issuer = Issuer::new(
        store.clone(),
        keys.clone(),
        "tokengate",
        &TokensConfig::default(),
    )
    .unwrap();
    let issued = rt
        .block_on(issuer.issue(NewSession::access(
            "alice",
            vec!["orders:read".to_owned()],
            "password",
        )))
        .unwrap();
    let jwks = Jwks::new("http://127.0.0.1:9/.well-known/jwks.json", "tokengate").unwrap();
    let verifier = Keys::new(jwks);
    verifier.set_verifier(Verifier::new(&keys.public_jwks().unwrap(), "tokengate"));
    let cache = TokenCache::new(
        store,
        &CacheConfig::default(),
        Arc::new(verifier),
        Arc::new(Metrics::default()),
    );
    let authorization = format!("Bearer {}", issued.token.expose());
    // The first request loads the session into the cache.
    rt.block_on(cache.authenticate(authorization.as_bytes()))
        .unwrap();
    let _guard = rt.enter();
    c.bench_function("cache hit: authenticate + forwarded headers", |b| {
        b.iter(|| {
            let identity = ready(cache.authenticate(black_box(authorization.as_bytes()))).unwrap();
            let mut headers = HeaderMap::with_capacity(8);
            headers.insert(header::AUTHORIZATION, identity.authorization.clone());
            headers.insert(
                HeaderName::from_static("x-auth-subject"),
                identity.subject.clone(),
            );
            headers.insert(
                HeaderName::from_static("x-auth-roles"),
                identity.roles_header.clone(),
            );
            headers.insert(
                HeaderName::from_static("x-auth-session"),
                identity.session_header.clone(),
            );
            headers
        })
    });
}

fn verification(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("tokengate-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, pem) in [
        (
            "EdDSA (Ed25519)",
            SigningKey::generate_ed25519_pem().unwrap(),
        ),
        ("ES256 (P-256)", SigningKey::generate_p256_pem().unwrap()),
    ] {
        let file = dir.join("key.pem");
        std::fs::write(&file, pem).unwrap();
        let key = SigningKey::load(&file).unwrap();
        let now = now_unix();
        let token = key
            .sign_jwt(&Claims {
                iss: "tokengate".to_owned(),
                sub: "alice".to_owned(),
                sid: "AAAAAAAAAAAAAAAAAAAAAA".to_owned(),
                roles: vec!["orders:read".to_owned()],
                iat: now,
                exp: now + 3600,
                amr: Vec::new(),
            })
            .unwrap();
        let keys = KeySet::new(vec![key]).unwrap();
        let verifier = Verifier::new(&keys.public_jwks().unwrap(), "tokengate");
        c.bench_function(&format!("verify value token: {name}"), |b| {
            b.iter(|| verifier.verify(black_box(&token)).unwrap())
        });
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn reference_tokens(c: &mut Criterion) {
    c.bench_function("reference token: generate", |b| {
        b.iter(ReferenceToken::generate)
    });
    let token = ReferenceToken::generate();
    c.bench_function("reference token: hash to session id", |b| {
        b.iter(|| black_box(&token).session_id())
    });
    let text = format!("Bearer {}", token.expose());
    c.bench_function("reference token: parse from Authorization", |b| {
        b.iter(|| {
            tokengate_store::bearer_credentials(black_box(text.as_bytes()))
                .and_then(|t| ReferenceToken::parse(t).ok())
                .unwrap()
        })
    });
}

/// What every request pays in metrics: its status counted (overall and by route) and its
/// latency observed.
fn request_metrics(c: &mut Criterion) {
    let metrics = Metrics::default();
    let by_route = metrics.route_counters("/api/", None);
    c.bench_function("metrics: status counted twice + latency observed", |b| {
        b.iter(|| {
            metrics.requests.count(black_box(200));
            by_route.count(black_box(200));
            metrics.observe_duration(black_box(std::time::Duration::from_micros(180)));
        })
    });
}

/// What a cookie-authenticated request pays on top of a bearer one: finding its one session
/// cookie, and removing it from what is forwarded; and what a request without cookies pays on
/// every route (the IdP's cookie is stripped everywhere).
fn session_cookie(c: &mut Criterion) {
    let token = ReferenceToken::generate();
    let mut headers = HeaderMap::new();
    let cookie = format!(
        "theme=dark; tokengate={}; _ga=GA1.1.123456789.1700000000",
        token.expose()
    );
    headers.insert(header::COOKIE, cookie.parse().unwrap());
    let names = ["tokengate", "tokengate-login", "tokengate-id"]
        .into_iter()
        .chain(IDP_COOKIES)
        .collect::<Vec<_>>();
    c.bench_function("cookie: find the session cookie", |b| {
        b.iter(|| match cookies::find(black_box(&headers), "tokengate") {
            cookies::Found::One(t) => t.len(),
            _ => panic!("the session cookie"),
        })
    });
    c.bench_function("cookie: find + strip before forwarding", |b| {
        b.iter(|| {
            let mut h = headers.clone();
            let found = matches!(cookies::find(&h, "tokengate"), cookies::Found::One(_));
            cookies::strip(&mut h, &names);
            (found, h)
        })
    });
    let no_cookies = HeaderMap::new();
    c.bench_function("cookie: strip on a request without cookies", |b| {
        b.iter(|| {
            let mut h = black_box(&no_cookies).clone();
            cookies::strip(&mut h, &IDP_COOKIES);
            h
        })
    });
}

/// What reloadable configuration costs a request: one `ArcSwap::load_full` (and its drop),
/// beside the `Arc` clone it replaces the need for.
fn live_config(c: &mut Criterion) {
    let live = std::sync::Arc::new([0u64; 8]);
    let swap = arc_swap::ArcSwap::new(live.clone());
    c.bench_function(
        "reload: load the live configuration (ArcSwap::load_full)",
        |b| b.iter(|| black_box(swap.load_full())[0]),
    );
    c.bench_function("reload: baseline, clone an Arc", |b| {
        b.iter(|| black_box(live.clone())[0])
    });
}

/// W3C trace context on every request: joining the caller's `traceparent` (or starting a
/// trace) and setting the upstream's.
fn trace_context(c: &mut Criterion) {
    use tokengate_gateway::trace::{TRACEPARENT, TraceContext};
    let parent =
        http::HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    c.bench_function("trace: join a traceparent, set the upstream's", |b| {
        b.iter(|| {
            let mut h = http::HeaderMap::new();
            h.insert(TRACEPARENT, parent.clone());
            TraceContext::join(black_box(&mut h)).flags
        })
    });
    c.bench_function("trace: start a trace (no traceparent)", |b| {
        b.iter(|| {
            let mut h = http::HeaderMap::new();
            TraceContext::join(black_box(&mut h)).flags
        })
    });
}

/// The access log's share of a request: the record begun, filled and handed to the writer
/// thread (which formats and writes it to /dev/null here).
fn access_log(c: &mut Criterion) {
    use tokengate_gateway::access::{AccessLog, LogConfig};
    use tokengate_gateway::trace::TraceContext;
    let config = LogConfig {
        access: true,
        access_path: "/dev/null".into(),
        access_query: false,
    };
    let log = AccessLog::start(&config, Default::default())
        .unwrap()
        .unwrap();
    let req = http::Request::get("/api/orders?x=1")
        .header(header::USER_AGENT, "oha/1.4")
        .body(())
        .unwrap();
    let id = http::HeaderValue::from_static("0f3a9c2e-000001");
    let trace = TraceContext::join(&mut HeaderMap::new());
    let peer = std::net::IpAddr::from([127, 0, 0, 1]);
    let prefix: std::sync::Arc<str> = "/api/".into();
    c.bench_function(
        "access log: a request's record, handed to the writer",
        |b| {
            b.iter(|| {
                let mut entry = tokengate_gateway::access::begin(
                    &log,
                    black_box(&req),
                    std::time::Instant::now(),
                    &id,
                    &trace,
                    peer,
                );
                entry.route(&prefix);
                entry.answered(200, None);
            })
        },
    );
    log.close();
}

/// A route's rate limit that never triggers, per request: one hash and one short lock.
fn rate_limit(c: &mut Criterion) {
    use tokengate_gateway::ratelimit::{Per, RateLimitConfig, RateLimiter};
    let config = RateLimitConfig {
        rate: "1000000000/s".into(),
        burst: None,
        per: Per::ClientAddress,
        max_keys: 100_000,
    };
    let limiter = RateLimiter::new(&config, Default::default()).unwrap();
    let peer = std::net::IpAddr::from([10, 1, 2, 3]);
    c.bench_function("rate limit: check one client address", |b| {
        b.iter(|| limiter.check(None, black_box(peer)).is_ok())
    });
}

criterion_group!(
    benches,
    trace_context,
    access_log,
    rate_limit,
    live_config,
    cache_hit,
    session_cookie,
    request_metrics,
    verification,
    reference_tokens
);
criterion_main!(benches);
