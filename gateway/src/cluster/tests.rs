use std::path::Path;

use super::*;
use crate::config::GatewayConfig;

fn cluster(extra: &str) -> Arc<Cluster> {
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:8080"
[admin]
listen = "127.0.0.1:9090"
[idp]
jwks_url = "http://127.0.0.1:7000/.well-known/jwks.json"
[[routes]]
path_prefix = "/api/"
upstream = ["http://a:1", "http://b:1", "http://c:1", "http://d:1"]
{extra}
"#
    );
    let config = GatewayConfig::parse(&text, Path::new("g.toml")).unwrap();
    config.validate(Path::new("g.toml")).unwrap();
    Cluster::new(&config.routes[0], &config.server, &Metrics::new(), None).unwrap()
}

fn host(in_flight: &InFlight) -> &str {
    in_flight.upstream().authority.host()
}

fn picks(c: &Cluster, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| host(&c.pick(0).unwrap()).to_owned())
        .collect()
}

#[test]
fn round_robin_passes_over_unhealthy_and_ejected_upstreams() {
    let c = cluster("");
    assert_eq!(picks(&c, 5), ["a", "b", "c", "d", "a"]);
    c.list[1].eject(epoch_ms(), Duration::from_secs(10));
    c.list[2].checked(false, 1, 1);
    assert_eq!(picks(&c, 4), ["d", "d", "d", "a"]);
    // Tried ones are skipped too.
    let next = c.pick(bit(3)).unwrap();
    assert_eq!(host(&next), "a");
}

#[test]
fn all_unhealthy_fails_open() {
    let c = cluster("");
    for u in &c.list {
        u.checked(false, 1, 1);
    }
    assert!(c.failing_open());
    assert_eq!(picks(&c, 4).len(), 4);
    assert_eq!(c.pick(0b1111).unwrap_err(), NoPick::Exhausted);
}

#[test]
fn at_most_half_the_list_is_ejected() {
    let c = cluster("eject_after = 2");
    for u in &c.list {
        for _ in 0..2 {
            c.failed(u, Failure::Connect);
        }
    }
    let now = epoch_ms();
    assert_eq!(c.list.iter().filter(|u| u.ejected(now)).count(), 2);
    // One failure short: no ejection; a success resets the run.
    let c = cluster("eject_after = 3");
    c.failed(&c.list[0], Failure::Status);
    c.failed(&c.list[0], Failure::Status);
    c.list[0].succeeded();
    c.failed(&c.list[0], Failure::Status);
    assert!(!c.list[0].ejected(epoch_ms()));
}

#[test]
fn max_requests_overloads_only_when_every_candidate_is_full() {
    let c = cluster("max_requests = 1");
    let held: Vec<InFlight> = (0..4).map(|_| c.pick(0).unwrap()).collect();
    assert_eq!(c.pick(0).unwrap_err(), NoPick::Overloaded);
    drop(held);
    assert!(c.pick(0).is_ok());
}

#[test]
fn least_requests_prefers_the_less_busy_of_two() {
    let c = cluster("balance = \"least_requests\"\nmax_requests = 1000");
    // a, b and c busy: d wins whenever it is one of the two, and it is often enough.
    let busy: Vec<InFlight> = (0..3)
        .flat_map(|i| (0..10).map(move |_| i))
        .map(|i| c.list[i].acquire(i, 1000).unwrap())
        .collect();
    let to_d = picks(&c, 100).iter().filter(|h| *h == "d").count();
    assert!(to_d >= 40, "{to_d}");
    drop(busy);
}

#[test]
fn the_retry_budget_allows_a_burst_then_a_fifth_of_requests() {
    let b = Budget(AtomicI64::new(BUDGET_CAP));
    let burst = (0..100).filter(|_| b.withdraw()).count();
    assert_eq!(burst as i64, RETRY_BURST);
    assert!(!b.has_room());
    for _ in 0..50 {
        b.deposit();
    }
    assert_eq!((0..100).filter(|_| b.withdraw()).count(), 10);
    for _ in 0..10_000 {
        b.deposit();
    }
    assert_eq!(b.0.load(Ordering::Relaxed), BUDGET_CAP);
}

#[test]
fn idempotent_methods_are_rfc_9110s() {
    for m in [
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::PUT,
        Method::DELETE,
    ] {
        assert!(idempotent(&m), "{m}");
    }
    for m in [Method::POST, Method::PATCH, Method::CONNECT] {
        assert!(!idempotent(&m), "{m}");
    }
}

#[tokio::test]
async fn a_small_body_is_held_and_replayed_a_large_one_is_not() {
    let held = |body: &'static str, length: Option<u64>| {
        let mut req = Request::put("/x").body(UpstreamBody::Held(Some(Bytes::from(body))));
        if let Some(n) = length {
            req.as_mut()
                .unwrap()
                .headers_mut()
                .insert(header::CONTENT_LENGTH, n.into());
        }
        req.unwrap()
    };
    let mut req = held("hello", Some(5));
    let replay = Replay::of(&mut req, false).await.unwrap().unwrap();
    let again = replay.request().unwrap();
    assert_eq!(again.method(), Method::PUT);
    assert_eq!(again.uri(), "/x");
    let bytes = again.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(bytes, "hello");
    let first = req.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(first, "hello");
    // Unsized or too large: left as it is.
    assert!(
        Replay::of(&mut held("x", None), false)
            .await
            .unwrap()
            .is_none()
    );
    let mut large = held("x", Some(MAX_HELD_BODY + 1));
    assert!(Replay::of(&mut large, false).await.unwrap().is_none());
    // No body at all: replayable.
    let mut empty = Request::get("/").body(UpstreamBody::Held(None)).unwrap();
    assert!(Replay::of(&mut empty, false).await.unwrap().is_some());
}

/// A port nothing listens on (bound, then let go).
fn refusing() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", listener.local_addr().unwrap())
}

/// A route's cluster whose first upstream refuses connections and whose second is `live`.
fn refusing_then(live: std::net::SocketAddr) -> Arc<Cluster> {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:1\"\n[admin]\nlisten = \"127.0.0.1:2\"\n\
         [idp]\njwks_url = \"http://i:1/\"\n[[routes]]\npath_prefix = \"/api/\"\n\
         upstream = [\"{}\", \"http://{live}\"]\n",
        refusing()
    );
    let config = GatewayConfig::parse(&text, Path::new("g.toml")).unwrap();
    Cluster::new(&config.routes[0], &config.server, &Metrics::new(), None).unwrap()
}

#[tokio::test]
async fn a_refused_connection_is_retried_on_another_for_any_method() {
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let live = echo.local_addr().unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    tokio::spawn(crate::echo::serve(echo, shutdown.clone()));
    let c = refusing_then(live);
    let post = || {
        Request::post("/api/orders")
            .header(header::CONTENT_LENGTH, 5)
            .body(UpstreamBody::Held(Some(Bytes::from("hello"))))
            .unwrap()
    };
    // Through the pool (an HTTP/2 client's request): the refused one goes to the other, whole.
    let mut req = post();
    let replay = Replay::of(&mut req, true).await.unwrap();
    let (answer, in_flight) = c.send(req, None, replay).await;
    let answer = answer.unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(
        in_flight.unwrap().upstream().authority.as_str(),
        live.to_string()
    );
    let echoed = answer.into_body().collect().await.unwrap().to_bytes();
    let echoed: serde_json::Value = serde_json::from_slice(&echoed).unwrap();
    assert_eq!(echoed["method"], "POST", "{echoed}");
    assert_eq!(c.list[0].metrics.failure(Failure::Connect).get(), 1);
    assert_eq!(c.list[0].metrics.retries.get(), 1);
    // Without a copy, the pool cannot send it again.
    let (answer, _) = c.send(post(), None, None).await;
    assert_eq!(answer.unwrap_err(), Reject::UpstreamFailed);
    // A connection of our own hands the request back untouched: retried without a copy.
    let pinned = Pinned::default();
    for _ in 0..2 {
        let (answer, _) = c.send(post(), Some(&pinned), None).await;
        assert_eq!(answer.unwrap().status(), 200);
    }
    // Taken in turn, one of the two met the refusing upstream first.
    assert_eq!(c.list[0].metrics.retries.get(), 2);
    shutdown.cancel();
}

async fn collect(req: Request<UpstreamBody>) -> Result<Bytes, BoxError> {
    Ok(req.into_body().collect().await?.to_bytes())
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::test]
async fn a_body_too_large_to_hold_is_lent_and_goes_to_the_next_try_only_if_unsent() {
    let unsized_body = || {
        Request::post("/x")
            .body(UpstreamBody::Held(Some(Bytes::from("a large body"))))
            .unwrap()
    };
    // The first try was dropped unsent (a refused connection): the next one gets it whole.
    let mut req = unsized_body();
    let replay = Replay::of(&mut req, true).await.unwrap().unwrap();
    assert_eq!(req.body().size_hint().exact(), Some(12));
    drop(req);
    let again = replay.request().unwrap();
    assert_eq!(again.method(), Method::POST);
    assert_eq!(collect(again).await.unwrap(), "a large body");
    // Once a try has polled it, it is gone: no other try.
    assert!(replay.request().is_none());

    // Only the latest try may take it: one handed over earlier gets an error, not the body.
    let mut req = unsized_body();
    let replay = Replay::of(&mut req, true).await.unwrap().unwrap();
    let second = replay.request().unwrap();
    assert!(collect(req).await.is_err());
    assert_eq!(collect(second).await.unwrap(), "a large body");
}

/// A backend that answers with the number of body bytes it received.
async fn counting_backend(shutdown: tokio_util::sync::CancellationToken) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                _ = shutdown.cancelled() => break,
                a = listener.accept() => a.unwrap().0,
            };
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                        let n = req.into_body().collect().await?.to_bytes().len();
                        Ok::<_, hyper::Error>(Response::new(http_body_util::Full::new(
                            Bytes::from(n.to_string()),
                        )))
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn through_the_pool_a_refused_request_with_a_body_too_large_to_hold_goes_to_another() {
    let shutdown = tokio_util::sync::CancellationToken::new();
    let live = counting_backend(shutdown.clone()).await;
    let c = refusing_then(live);
    let large = Bytes::from(vec![b'x'; MAX_HELD_BODY as usize + 1]);
    // Twice, so that round robin puts the refusing upstream first at least once.
    for _ in 0..2 {
        let mut req = Request::post("/api/upload")
            .header(header::CONTENT_LENGTH, large.len())
            .body(UpstreamBody::Held(Some(large.clone())))
            .unwrap();
        let replay = Replay::of(&mut req, true).await.unwrap();
        let (answer, _) = c.send(req, None, replay).await;
        let answer = answer.unwrap();
        assert_eq!(answer.status(), 200);
        let received = answer.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(received, large.len().to_string());
    }
    // Every refusal was retried, and there was one.
    let refused = c.list[0].metrics.failure(Failure::Connect).get();
    assert!(refused >= 1);
    assert_eq!(c.list[0].metrics.retries.get(), refused);
    shutdown.cancel();
}
