//! Back-channel logout, sent (OpenID Connect Back-Channel Logout 1.0): an application registered
//! with a `backchannel_logout_uri` hears of its sessions' end, with a logout token it verifies
//! against the IdP's JWKS; deliveries wait in the store for an application that is down, across
//! an IdP restart. A real IdP, a real Redis, the application a real HTTP server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use support::*;
use tokengate_idp::config::{ClientConfig, Grant, IdpConfig};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const APP: &str = "orders-app";
const EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// The application: takes logout tokens POSTed to `/logout` and hands them over.
struct App {
    addr: SocketAddr,
    tokens: mpsc::UnboundedReceiver<String>,
    stop: CancellationToken,
}

impl App {
    /// Serves on `addr` (which must be free).
    async fn serve(addr: SocketAddr) -> App {
        let listener = TcpListener::bind(addr).await.unwrap();
        let (send, tokens) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    _ = stopped.cancelled() => return,
                    accepted = listener.accept() => accepted.unwrap(),
                };
                let send = send.clone();
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let send = send.clone();
                    async move {
                        let form = req.into_body().collect().await.unwrap().to_bytes();
                        let pairs: Vec<(String, String)> =
                            serde_urlencoded::from_bytes(&form).unwrap();
                        for (name, value) in pairs {
                            if name == "logout_token" {
                                let _ = send.send(value);
                            }
                        }
                        Ok::<_, hyper::Error>(hyper::Response::new(Full::new(Bytes::new())))
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        App { addr, tokens, stop }
    }

    /// The next logout token, within `limit`.
    async fn next(&mut self, limit: Duration) -> Option<String> {
        tokio::time::timeout(limit, self.tokens.recv())
            .await
            .ok()
            .flatten()
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A loopback address nothing listens on (yet).
async fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
}

/// The test config, with the application registered for back-channel logout at `app` (a
/// public client allowed the password grant, so that a test signs in with one request).
fn config(redis: &TestRedis, app: SocketAddr) -> IdpConfig {
    let mut config = idp_config(&redis.url());
    config.clients.push(ClientConfig {
        backchannel_logout_uri: Some(format!("http://{app}/logout")),
        ..ClientConfig::public(APP, &[Grant::Password], &[])
    });
    config
}

/// Signs `user` in through the application; the session's id (the `sid` its ID token names).
async fn sign_in(idp: &TestIdp, user: &str) -> String {
    let r = post_form(
        &idp.url("/oauth2/token"),
        &[],
        &format!("grant_type=password&client_id={APP}&username={user}&password={PASSWORD}"),
    )
    .await;
    assert_eq!(r.status, 200, "sign-in: {}", r.body);
    let token = r.json()["access_token"].as_str().unwrap().to_owned();
    tokengate_store::ReferenceToken::parse(&token)
        .unwrap()
        .session_id()
        .to_string()
}

/// The claims of `token`, verified as the application would: the IdP's JWKS, `iss`, `aud`,
/// `typ`.
async fn verified(idp: &TestIdp, token: &str) -> serde_json::Value {
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.typ.as_deref(), Some("logout+jwt"));
    let jwks: JwkSet = serde_json::from_value(idp.jwks().await).unwrap();
    let jwk = jwks
        .find(header.kid.as_deref().unwrap())
        .expect("the key in the JWKS");
    let mut validation = Validation::new(header.alg);
    validation.set_audience(&[APP]);
    validation.set_issuer(&[idp.url("").trim_end_matches('/')]);
    validation.set_required_spec_claims(&["iss", "aud", "iat", "exp"]);
    jsonwebtoken::decode::<serde_json::Value>(
        token,
        &DecodingKey::from_jwk(jwk).unwrap(),
        &validation,
    )
    .expect("a logout token that verifies")
    .claims
}

/// The IdP's count of deliveries to the application with `result`.
async fn deliveries(idp: &TestIdp, result: &str) -> u64 {
    let metrics = get(&idp.url("/metrics")).await.body;
    let line = format!(
        "tokengate_idp_backchannel_logout_deliveries_total{{client=\"{APP}\",result=\"{result}\"}} "
    );
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&line))
        .map_or(0, |n| n.trim().parse().unwrap())
}

#[tokio::test]
async fn a_forced_logout_reaches_the_application_with_a_token_it_verifies() {
    let redis = TestRedis::start();
    let mut app = App::serve(free_addr().await).await;
    let addr = app.addr;
    let idp = TestIdp::spawn(config(&redis, addr)).await;
    let discovery = get(&idp.url("/.well-known/openid-configuration"))
        .await
        .json();
    assert_eq!(discovery["backchannel_logout_supported"], true);
    assert_eq!(discovery["backchannel_logout_session_supported"], true);

    let first = sign_in(&idp, "alice").await;
    let second = sign_in(&idp, "alice").await;
    // A session of another client (no URI registered) is ended too, and told to nobody.
    idp.login("alice").await;
    let started = Instant::now();
    let r = idp
        .admin("DELETE", "/admin/users/alice/sessions", None)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["revoked"], 3);

    let mut sids = Vec::new();
    let mut jtis = Vec::new();
    for _ in 0..2 {
        let token = app
            .next(Duration::from_secs(1))
            .await
            .expect("a logout token within 1 s");
        let claims = verified(&idp, &token).await;
        assert_eq!(claims["sub"], "alice");
        assert!(claims["events"][EVENT].is_object(), "{claims}");
        assert!(claims.get("nonce").is_none());
        sids.push(claims["sid"].as_str().unwrap().to_owned());
        jtis.push(claims["jti"].as_str().unwrap().to_owned());
    }
    assert!(started.elapsed() < Duration::from_secs(1));
    sids.sort();
    let mut expected = vec![first, second];
    expected.sort();
    assert_eq!(sids, expected, "one token per session, naming it");
    assert_ne!(jtis[0], jtis[1]);
    assert!(
        app.next(Duration::from_millis(300)).await.is_none(),
        "nothing more"
    );
    assert_eq!(deliveries(&idp, "delivered").await, 2);

    // A revocation by the application's own token is told as well.
    let r = post_form(
        &idp.url("/oauth2/token"),
        &[],
        &format!("grant_type=password&client_id={APP}&username=bob&password={PASSWORD}"),
    )
    .await;
    let token = r.json()["access_token"].as_str().unwrap().to_owned();
    let r = post_form(
        &idp.url("/oauth2/revoke"),
        &[],
        &format!("client_id={APP}&token={token}"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let told = app
        .next(Duration::from_secs(1))
        .await
        .expect("a logout token");
    assert_eq!(verified(&idp, &told).await["sub"], "bob");
}

#[tokio::test]
async fn an_application_that_is_down_gets_its_logout_when_it_is_back_even_after_an_idp_restart() {
    let redis = TestRedis::start();
    let addr = free_addr().await;
    let idp = TestIdp::spawn(config(&redis, addr)).await;
    let sid = sign_in(&idp, "alice").await;
    let r = idp
        .admin("DELETE", "/admin/users/alice/sessions", None)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        eventually(Duration::from_secs(5), || async {
            deliveries(&idp, "failed").await >= 1
        })
        .await,
        "the first attempt fails while the application is down"
    );
    // The IdP stops with the delivery queued, and another takes over.
    drop(idp);
    let idp = TestIdp::spawn(config(&redis, addr)).await;
    let mut app = App::serve(addr).await;
    // Retries back off (1 s, 2 s, 4 s, ...); the delivery the first IdP held comes due within
    // its hold.
    let token = app
        .next(Duration::from_secs(70))
        .await
        .expect("the logout token, once the application is back");
    let claims = verified(&idp, &token).await;
    assert_eq!(claims["sid"], sid.as_str());
    assert_eq!(claims["sub"], "alice");
}
