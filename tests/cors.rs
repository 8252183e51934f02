//! CORS at the gateway over raw HTTP on real sockets (Redis, the IdP, the gateway and a
//! backend that sets CORS headers of its own): preflights answered by the gateway without a
//! token and never sent upstream; answers to an allowed origin with exactly its origin,
//! credentials and exposed headers, `Vary: Origin`, the upstream's CORS headers gone; a cookie
//! route whose CORS lets an origin send credentials, and the CSRF check that agrees with it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, Method, Uri};
use axum::response::IntoResponse;
use support::{Reply, TestGateway, TestIdp, TestRedis, idp_config, send};

/// The README example's SPA.
const SPA: &str = "https://app.example.com";
/// A page on another port of the gateway's host (same site): the cookie route's SPA.
const COOKIE_SPA: &str = "http://127.0.0.1:3000";
const EVIL: &str = "https://evil.example";

/// A backend that records `METHOD path` and answers with CORS headers of its own.
struct Backend {
    addr: std::net::SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Backend {
    async fn start() -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let app = axum::Router::new().fallback(move |method: Method, uri: Uri, _: HeaderMap| {
            let log = log.clone();
            async move {
                log.lock().unwrap().push(format!("{method} {}", uri.path()));
                (
                    [
                        ("access-control-allow-origin", "*"),
                        ("access-control-expose-headers", "x-internal"),
                        ("access-control-allow-credentials", "true"),
                        ("x-internal", "1"),
                    ],
                    "{}",
                )
                    .into_response()
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Backend { addr, seen }
    }

    fn saw(&self, what: &str) -> bool {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .any(|s| s.starts_with(what))
    }
}

struct World {
    _redis: TestRedis,
    idp: TestIdp,
    backend: Backend,
    gateway: TestGateway,
}

/// The README's policy route (`/shop/`, CORS for a bearer SPA) and two cookie routes of
/// `[browser]`: `/app/api/` with CORS for `COOKIE_SPA` with credentials, `/app/` without CORS.
async fn world() -> World {
    let redis = TestRedis::start();
    let idp = TestIdp::spawn(idp_config(&redis.url())).await;
    let backend = Backend::start().await;
    let readme = include_str!("../README.md");
    let block = &readme[readme.find("<!-- policy-example").unwrap()..];
    let start = block.find("```toml\n").unwrap() + "```toml\n".len();
    let policy = block[start..start + block[start..].find("```").unwrap()]
        .replace("http://127.0.0.1:9001", &format!("http://{}", backend.addr));
    let listen = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let public = listen.local_addr().unwrap();
    drop(listen);
    let text = format!(
        r#"
[server]
listen = "{public}"
[admin]
listen = "127.0.0.1:0"
[store]
redis_url = "{redis}"
[idp]
jwks_url = "{jwks}"
[sync]
interval = "100ms"
[browser]
issuer = "{issuer}"
client_id = "gateway"
client_secret = "gateway-client-secret"
public_url = "http://{public}"
[[routes]]
path_prefix = "/app/api/"
upstream = "http://{backend}"
browser = true
cors = {{ allowed_origins = ["{COOKIE_SPA}"], allowed_methods = ["GET", "POST", "DELETE"], allowed_headers = ["content-type"], allow_credentials = true }}
[[routes]]
path_prefix = "/app/"
upstream = "http://{backend}"
browser = true
{policy}
"#,
        redis = redis.url(),
        jwks = idp.url("/.well-known/jwks.json"),
        issuer = idp.url(""),
        backend = backend.addr,
    );
    let config: tokengate_gateway::config::GatewayConfig = toml::from_str(&text).unwrap();
    config.validate(std::path::Path::new("cors.toml")).unwrap();
    let gateway = TestGateway::spawn(config).await;
    World {
        _redis: redis,
        idp,
        backend,
        gateway,
    }
}

impl World {
    async fn send(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
        let url = format!("http://{}{path}", self.gateway.public);
        send(method, &url, headers, String::new()).await
    }
}

fn cors_headers(r: &Reply) -> Vec<String> {
    r.headers
        .keys()
        .map(|k| k.as_str().to_owned())
        .filter(|k| k.starts_with("access-control-"))
        .collect()
}

fn varies_on_origin(r: &Reply) -> bool {
    r.headers.get_all("vary").iter().any(|v| {
        v.to_str()
            .unwrap()
            .split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("origin"))
    })
}

#[tokio::test]
async fn preflights_are_answered_by_the_gateway_without_a_token_and_never_upstream() {
    let w = world().await;
    let ok = w
        .send(
            "OPTIONS",
            "/shop/orders/7",
            &[
                ("origin", SPA),
                ("access-control-request-method", "PUT"),
                (
                    "access-control-request-headers",
                    "authorization,content-type",
                ),
            ],
        )
        .await;
    assert_eq!(ok.status, 204, "{}", ok.body);
    assert_eq!(ok.header("access-control-allow-origin"), Some(SPA));
    assert_eq!(
        ok.header("access-control-allow-methods"),
        Some("GET, POST, PUT, PATCH, DELETE")
    );
    assert_eq!(
        ok.header("access-control-allow-headers"),
        Some("authorization, content-type")
    );
    assert_eq!(ok.header("access-control-max-age"), Some("600"));
    assert_eq!(ok.header("access-control-allow-credentials"), None);
    assert!(varies_on_origin(&ok));

    let refused: &[&[(&str, &str)]] = &[
        &[("origin", EVIL), ("access-control-request-method", "GET")],
        &[
            ("origin", "https://app.example.com:8443"),
            ("access-control-request-method", "GET"),
        ],
        &[("origin", SPA), ("access-control-request-method", "TRACE")],
        &[
            ("origin", SPA),
            ("access-control-request-method", "GET"),
            ("access-control-request-headers", "authorization, x-debug"),
        ],
    ];
    for headers in refused {
        let r = w.send("OPTIONS", "/shop/orders/7", headers).await;
        assert_eq!(r.status, 403, "{headers:?}: {}", r.body);
        assert_eq!(r.json()["error"], "cors_refused");
        assert!(cors_headers(&r).is_empty(), "{headers:?}: {:?}", r.headers);
    }
    // On the cookie route: credentials allowed, and no sign-in redirect for a preflight.
    let r = w
        .send(
            "OPTIONS",
            "/app/api/cart",
            &[
                ("origin", COOKIE_SPA),
                ("access-control-request-method", "DELETE"),
                ("accept", "text/html"),
            ],
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(r.header("access-control-allow-origin"), Some(COOKIE_SPA));
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    // Not one preflight reached the backend; a plain OPTIONS (no Origin) is no preflight.
    assert!(!w.backend.saw("OPTIONS"));
    let plain = w.send("OPTIONS", "/shop/orders/7", &[]).await;
    assert_eq!(
        plain.status, 401,
        "a plain OPTIONS is a request like any other"
    );
}

#[tokio::test]
async fn answers_to_an_allowed_origin_carry_our_cors_headers_and_not_the_upstreams() {
    let w = world().await;
    let token = w.idp.login("alice").await;
    let auth = format!("Bearer {token}");

    let r = w
        .send(
            "GET",
            "/shop/orders/7",
            &[("authorization", &auth), ("origin", SPA)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("access-control-allow-origin"), Some(SPA));
    assert_eq!(
        r.header("access-control-expose-headers"),
        Some("x-request-id")
    );
    assert_eq!(r.header("access-control-allow-credentials"), None);
    assert_eq!(
        r.headers
            .get_all("access-control-allow-origin")
            .iter()
            .count(),
        1
    );
    assert!(varies_on_origin(&r));
    assert_eq!(
        r.header("x-internal"),
        Some("1"),
        "the upstream's answer, otherwise"
    );

    // Another origin: the request is served (the browser is what blocks the page), without a
    // CORS header of ours, and the upstream's `*` is gone too.
    let r = w
        .send(
            "GET",
            "/shop/orders/7",
            &[("authorization", &auth), ("origin", EVIL)],
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(cors_headers(&r).is_empty(), "{:?}", r.headers);
    assert!(varies_on_origin(&r));

    // The gateway's own refusals reach the page too: it can read a 401 and a rule's 403.
    let r = w.send("GET", "/shop/orders/7", &[("origin", SPA)]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("access-control-allow-origin"), Some(SPA));
    let r = w
        .send(
            "POST",
            "/shop/orders",
            &[("authorization", &auth), ("origin", SPA)],
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(
        r.json()["error_description"],
        "refused by rule 3 of the route"
    );
    assert_eq!(r.header("access-control-allow-origin"), Some(SPA));
}

#[tokio::test]
async fn a_cookie_route_trusts_the_origins_its_cors_lets_send_credentials_and_no_other() {
    let w = world().await;
    // The session cookie holds a reference token.
    let token = w.idp.login("alice").await;
    let cookie = format!("tokengate={token}");
    let post = |origin: &'static str, extra: Option<(&'static str, &'static str)>| {
        let cookie = cookie.clone();
        let w = &w;
        async move {
            let mut headers = vec![("cookie", cookie.as_str()), ("origin", origin)];
            headers.extend(extra);
            w.send("POST", "/app/api/cart", &headers).await
        }
    };
    let r = post(COOKIE_SPA, None).await;
    assert_eq!(
        r.status, 200,
        "what CORS allows, CSRF does not refuse: {}",
        r.body
    );
    assert_eq!(r.header("access-control-allow-origin"), Some(COOKIE_SPA));
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert!(w.backend.saw("POST /app/api/cart"));

    let r = post(EVIL, None).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"], "cross_site_request");
    assert!(cors_headers(&r).is_empty());
    // The browser says another site: refused, whatever the Origin.
    let r = post(COOKIE_SPA, Some(("sec-fetch-site", "cross-site"))).await;
    assert_eq!(r.status, 403);
    // The route without CORS keeps to [browser] allowed_origins.
    let r = w
        .send(
            "POST",
            "/app/form",
            &[("cookie", cookie.as_str()), ("origin", COOKIE_SPA)],
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"], "cross_site_request");
    assert!(cors_headers(&r).is_empty());
}
