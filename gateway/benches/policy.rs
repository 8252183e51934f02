//! What per-route rules cost a request (`cargo bench -p tokengate-gateway --bench policy`):
//! deciding `GET /api/orders/7` for a token on a route without rules, and on a route with ten
//! rules of which none matches (every rule tried, then the route's roles: the worst case) or
//! the last one does. Issue #30 asks for ten rules within 0.3 µs of none. On the shared 2-core
//! machine (load average near 4): 13 ns without rules, 77 ns with ten none of which matches,
//! 90 ns when the tenth does (about 250 instructions, by callgrind).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use http::Method;
use tokengate_gateway::config::GatewayConfig;
use tokengate_gateway::metrics::Metrics;
use tokengate_gateway::policy::Who;
use tokengate_gateway::routes::Route;

const BASE: &str = r#"
[server]
listen = "127.0.0.1:1"
[admin]
listen = "127.0.0.1:2"
[idp]
jwks_url = "http://127.0.0.1:3/.well-known/jwks.json"
[[routes]]
path_prefix = "/api/"
upstream = "http://127.0.0.1:4"
roles = ["orders:read"]
"#;

/// Ten rules of every kind, none of which is for `GET orders/7`; `last` makes the tenth one
/// match it.
fn ten_rules(last: bool) -> String {
    let mut rules = String::new();
    for (i, rule) in [
        "path = \"admin/**\"\nroles_any = [\"admin\"]",
        "methods = [\"POST\"]\npath = \"orders/*/refunds\"\nroles_all = [\"orders:write\", \"orders:read\"]\nclients = [\"backoffice\"]",
        "path = \"internal/**\"\nallow = false",
        "methods = [\"POST\", \"PUT\", \"PATCH\", \"DELETE\"]\nroles_any = [\"orders:write\"]",
        "methods = [\"GET\"]\npath = \"reports/**/export\"\nroles_any = [\"reports:read\"]",
        "path = \"**/audit\"\nsubjects = [\"auditor\"]",
        "methods = [\"GET\"]\npath = \"customers/*\"\nroles_any = [\"customers:read\"]",
        "methods = [\"GET\"]\npath = \"orders/*/items/*\"\nroles_any = [\"orders:read\"]",
        "path = \"debug/**\"\nallow = false",
    ]
    .iter()
    .enumerate()
    {
        rules.push_str(&format!("[[routes.rules]] # {i}\n{rule}\n"));
    }
    let tenth = if last { "orders/*" } else { "invoices/*" };
    rules.push_str(&format!(
        "[[routes.rules]] # 9\nmethods = [\"GET\", \"HEAD\"]\npath = \"{tenth}\"\nroles_any = [\"orders:read\", \"orders:admin\"]\n"
    ));
    rules
}

fn route(rules: &str) -> Route {
    let config = GatewayConfig::parse(&format!("{BASE}{rules}"), Path::new("bench.toml")).unwrap();
    config.validate(Path::new("bench.toml")).unwrap();
    Route::new(&config.routes[0], &config.server, &Metrics::new(), None).unwrap()
}

fn policy(c: &mut Criterion) {
    let roles = vec!["orders:read".to_owned(), "customers:read".to_owned()];
    let who = Who {
        roles: &roles,
        client: Some("web"),
        subject: b"alice",
    };
    let mut group = c.benchmark_group("policy");
    for (name, rules) in [
        ("no rules", String::new()),
        ("ten rules, none matches", ten_rules(false)),
        ("ten rules, the tenth matches", ten_rules(true)),
    ] {
        let route = route(&rules);
        assert!(
            route
                .authorize(&Method::GET, "/api/orders/7", Some(who))
                .is_ok()
        );
        group.bench_function(name, |b| {
            b.iter(|| {
                route.authorize(
                    black_box(&Method::GET),
                    black_box("/api/orders/7"),
                    black_box(Some(who)),
                )
            })
        });
    }
    group.finish();
}

criterion_group!(benches, policy);
criterion_main!(benches);
