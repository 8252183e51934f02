//! Upstream resilience end to end (issue #29): a `tokengate gateway` process in front of
//! backends that die, come back, hang, answer slowly or fail: retries, ejection, health checks,
//! `max_requests`, timeouts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::stack::{Load, Options, Stack};
use support::*;
use tokengate_store::testing::free_port;
use tokio_util::sync::CancellationToken;

/// `tokengate echo` as a process of its own, so that killing it is a crash.
struct EchoProcess {
    addr: SocketAddr,
    child: Option<Child>,
}

impl EchoProcess {
    async fn start() -> Self {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut echo = EchoProcess { addr, child: None };
        echo.restart().await;
        echo
    }

    /// Starts it (again) on its port and waits until it answers.
    async fn restart(&mut self) {
        self.kill();
        let child = Command::new(env!("CARGO_BIN_EXE_tokengate"))
            .args(["echo", "--listen", &self.addr.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let url = format!("http://{}/", self.addr);
        assert!(
            eventually(Duration::from_secs(10), || async {
                support::stack::try_get(&url).await == Some(200)
            })
            .await,
            "echo on {} never answered",
            self.addr
        );
    }

    /// SIGKILL.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for EchoProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What a [`Scripted`] backend does with each request, once it has read the whole body.
#[derive(Clone, Copy)]
enum Script {
    /// Answers with this status.
    Status(u16),
    /// Closes the connection without an answer.
    HangUp,
    /// Answers 200 once the test releases it.
    Hold,
}

/// An in-process backend that counts what it received.
struct Scripted {
    addr: SocketAddr,
    /// Requests whose body arrived whole.
    received: Arc<AtomicUsize>,
    /// Requests read and not answered yet.
    in_flight: Arc<AtomicUsize>,
    release: CancellationToken,
    shutdown: CancellationToken,
}

impl Scripted {
    async fn start(script: Script) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (received, in_flight) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (release, shutdown) = (CancellationToken::new(), CancellationToken::new());
        let (r, f, rel, stop) = (
            received.clone(),
            in_flight.clone(),
            release.clone(),
            shutdown.clone(),
        );
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    _ = stop.cancelled() => break,
                    a = listener.accept() => match a { Ok((s, _)) => s, Err(_) => continue },
                };
                let (r, f, rel) = (r.clone(), f.clone(), rel.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: http::Request<Incoming>| {
                        let (r, f, rel) = (r.clone(), f.clone(), rel.clone());
                        async move {
                            if req.into_body().collect().await.is_ok() {
                                r.fetch_add(1, Ordering::SeqCst);
                            }
                            match script {
                                Script::Status(status) => {
                                    let mut response = http::Response::new(Full::new(Bytes::new()));
                                    *response.status_mut() = status.try_into().unwrap();
                                    Ok(response)
                                }
                                Script::HangUp => Err("hang up"),
                                Script::Hold => {
                                    f.fetch_add(1, Ordering::SeqCst);
                                    rel.cancelled().await;
                                    f.fetch_sub(1, Ordering::SeqCst);
                                    Ok::<_, &str>(http::Response::new(Full::new(Bytes::from(
                                        "released",
                                    ))))
                                }
                            }
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Scripted {
            addr,
            received,
            in_flight,
            release,
            shutdown,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn received(&self) -> usize {
        self.received.load(Ordering::SeqCst)
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.release.cancel();
        self.shutdown.cancel();
    }
}

/// A port nothing listens on.
fn dead_url() -> String {
    format!("http://127.0.0.1:{}", free_port())
}

/// One gateway process with these extra routes (and sections).
async fn stack(routes: String) -> Stack {
    Stack::start(Options {
        gateways: 1,
        gateway_extra: routes,
        ..Options::default()
    })
    .await
}

/// The gateway's `GET /admin/upstreams` entry for one upstream of one route.
async fn upstream_state(stack: &Stack, route: &str, upstream: SocketAddr) -> serde_json::Value {
    let r = get(&stack.gateways[0].admin_url("/admin/upstreams")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let all = r.json();
    let route = all["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["route"] == route)
        .unwrap_or_else(|| panic!("no route {route} in {all}"))
        .clone();
    let upstream = upstream.to_string();
    route["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["upstream"] == upstream.as_str())
        .cloned()
        .map(|mut u| {
            u["fail_open"] = route["fail_open"].clone();
            u
        })
        .unwrap_or_else(|| panic!("no upstream {upstream} in {route}"))
}

/// A counter or gauge of the gateway's `/metrics` (0 if absent).
async fn metric(stack: &Stack, series: &str) -> f64 {
    let text = get(&stack.gateways[0].admin_url("/metrics")).await.body;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

fn requests_to(route: &str, upstream: SocketAddr) -> String {
    format!(
        "tokengate_upstream_requests_total{{route=\"{route}\",host=\"*\",upstream=\"{upstream}\"}}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_killed_mid_stream_costs_no_request_and_returns_after_health_checks() {
    let (mut a, b) = (EchoProcess::start().await, EchoProcess::start().await);
    let stack = stack(format!(
        r#"[[routes]]
path_prefix = "/two/"
upstream = ["{a}", "{b}"]
auth = false
health_check = {{ path = "/healthz", interval = "100ms", timeout = "100ms", unhealthy_after = 2, healthy_after = 2 }}
"#,
        a = a.url(),
        b = b.url()
    ))
    .await;
    let load = Load::start(&[stack.gateways[0].url("/two/x")], None, 4);
    let (to_a, to_b) = (requests_to("/two/", a.addr), requests_to("/two/", b.addr));
    let both_busy = eventually(Duration::from_secs(20), || async {
        metric(&stack, &to_a).await >= 50.0 && metric(&stack, &to_b).await >= 50.0
    })
    .await;
    assert!(both_busy, "traffic did not reach both backends");

    a.kill();
    let down = eventually(Duration::from_secs(5), || async {
        upstream_state(&stack, "/two/", a.addr).await["healthy"] == false
    })
    .await;
    assert!(down, "{}", upstream_state(&stack, "/two/", a.addr).await);
    // The stream goes on, to b alone.
    let on_b = metric(&stack, &to_b).await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            metric(&stack, &to_b).await >= on_b + 100.0
        })
        .await
    );

    a.restart().await;
    let back = Instant::now();
    let healthy = eventually(Duration::from_secs(5), || async {
        upstream_state(&stack, "/two/", a.addr).await["healthy"] == true
    })
    .await;
    assert!(healthy, "{}", upstream_state(&stack, "/two/", a.addr).await);
    // healthy_after × interval is 200 ms; a loaded 2-core machine gets some slack.
    assert!(
        back.elapsed() < Duration::from_secs(2),
        "{:?}",
        back.elapsed()
    );
    let on_a = metric(&stack, &to_a).await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            metric(&stack, &to_a).await >= on_a + 50.0
        })
        .await,
        "the returned backend gets no traffic"
    );

    let tally = load.stop().await;
    assert!(tally.total() >= 200, "{tally:?}");
    assert_eq!(tally.count(Some(200)), tally.total(), "{tally:?}");
    stack.assert_logs_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_with_a_body_is_not_retried_once_its_bytes_went_out() {
    let (s1, s2) = (
        Scripted::start(Script::Status(503)).await,
        Scripted::start(Script::Status(503)).await,
    );
    let (h1, h2) = (
        Scripted::start(Script::HangUp).await,
        Scripted::start(Script::HangUp).await,
    );
    let stack = stack(format!(
        r#"[[routes]]
path_prefix = "/unavailable/"
upstream = ["{s1}", "{s2}"]
auth = false
[[routes]]
path_prefix = "/hangup/"
upstream = ["{h1}", "{h2}"]
auth = false
"#,
        s1 = s1.url(),
        s2 = s2.url(),
        h1 = h1.url(),
        h2 = h2.url()
    ))
    .await;
    let gw = &stack.gateways[0];
    let body = || "order=1".to_owned();
    let total = |a: &Scripted, b: &Scripted| a.received() + b.received();

    let r = send("POST", &gw.url("/unavailable/orders"), &[], body()).await;
    assert_eq!(r.status, 503);
    assert_eq!(total(&s1, &s2), 1, "a POST answered 503 was sent again");
    let r = send("POST", &gw.url("/hangup/orders"), &[], body()).await;
    assert_eq!(r.status, 502);
    assert_eq!(
        total(&h1, &h2),
        1,
        "a POST cut off mid-exchange was sent again"
    );

    // An idempotent request with a small body is held, and retried once, whole.
    let r = send("PUT", &gw.url("/unavailable/orders/1"), &[], body()).await;
    assert_eq!(r.status, 503);
    assert_eq!((s1.received(), s2.received()), (2, 1));
    let r = send("PUT", &gw.url("/hangup/orders/1"), &[], body()).await;
    assert_eq!(r.status, 502);
    assert_eq!((h1.received(), h2.received()), (2, 1));
    stack.assert_logs_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_never_answers_gets_504_after_the_route_timeout_and_gets_retries_taken_over()
{
    // Connections are accepted (by the kernel) and never answered.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let echo = EchoBackend::start().await;
    let stack = stack(format!(
        r#"[[routes]]
path_prefix = "/slow/"
upstream = ["http://{silent_addr}", "{echo}"]
auth = false
timeout = "300ms"
eject_after = 100
"#,
        echo = echo.url()
    ))
    .await;
    let gw = &stack.gateways[0];
    let timed = |method: &'static str| {
        let url = gw.url("/slow/x");
        async move {
            let started = Instant::now();
            let body = if method == "POST" { "payload" } else { "" };
            let r = send(method, &url, &[], body.to_owned()).await;
            (r, started.elapsed())
        }
    };
    // Round robin: one POST of two goes to the silent backend.
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let (r, took) = timed("POST").await;
        if r.status == 504 {
            assert!(took >= Duration::from_millis(300), "{took:?}");
            assert!(
                took < Duration::from_secs(1),
                "not the route's timeout: {took:?}"
            );
        }
        statuses.push(r.status);
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 504]);
    // GETs that go to the silent backend are taken over by the other after the timeout.
    let mut taken_over = 0;
    for _ in 0..4 {
        let (r, took) = timed("GET").await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["backend"], echo.addr.to_string());
        if took >= Duration::from_millis(300) {
            taken_over += 1;
        }
    }
    assert!(taken_over >= 1, "no GET went to the silent backend first");
    let retries = format!(
        "tokengate_upstream_retries_total{{route=\"/slow/\",host=\"*\",upstream=\"{silent_addr}\"}}"
    );
    assert!(metric(&stack, &retries).await >= 1.0);
    let timeouts = format!(
        "tokengate_upstream_failures_total{{route=\"/slow/\",host=\"*\",upstream=\"{silent_addr}\",kind=\"timeout\"}}"
    );
    assert!(metric(&stack, &timeouts).await >= 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_max_requests_the_next_request_gets_503_with_retry_after() {
    let slow = Scripted::start(Script::Hold).await;
    let log = std::env::temp_dir().join(format!("tokengate-resilience-{}.log", free_port()));
    let stack = stack(format!(
        r#"[[routes]]
path_prefix = "/busy/"
upstream = "{slow}"
auth = false
max_requests = 2
[log]
access = true
access_path = "{log}"
"#,
        slow = slow.url(),
        log = log.display()
    ))
    .await;
    let url = stack.gateways[0].url("/busy/x");
    let held: Vec<_> = (0..2)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { get(&url).await })
        })
        .collect();
    assert!(
        eventually(Duration::from_secs(10), || async {
            slow.in_flight.load(Ordering::SeqCst) == 2
        })
        .await
    );
    let third = get(&url).await;
    assert_eq!(third.status, 503, "{}", third.body);
    assert_eq!(third.header("retry-after"), Some("1"));
    assert_eq!(third.json()["error"], "upstream_overloaded");
    slow.release.cancel();
    for h in held {
        let r = h.await.unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "released"));
    }
    assert_eq!(slow.received(), 2);
    // The access log names the reason.
    let logged = eventually(Duration::from_secs(5), || async {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains(r#""reason":"upstream_overloaded""#)
    })
    .await;
    let _ = std::fs::remove_file(&log);
    assert!(logged, "no access log line with reason upstream_overloaded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_backend_down_answers_502_at_once_and_shows_fail_open() {
    let (dead1, dead2) = (dead_url(), dead_url());
    let stack = stack(format!(
        r#"[[routes]]
path_prefix = "/down/"
upstream = ["{dead1}", "{dead2}"]
auth = false
health_check = {{ path = "/healthz", interval = "100ms", timeout = "100ms", unhealthy_after = 1 }}
"#
    ))
    .await;
    let gw = &stack.gateways[0];
    let fail_open = r#"tokengate_upstream_fail_open{route="/down/",host="*"}"#;
    assert!(
        eventually(Duration::from_secs(5), || async {
            metric(&stack, fail_open).await == 1.0
        })
        .await,
        "fail-open never shown"
    );
    let addr = dead1.trim_start_matches("http://").parse().unwrap();
    let state = upstream_state(&stack, "/down/", addr).await;
    assert_eq!(state["healthy"], false, "{state}");
    assert_eq!(state["fail_open"], true, "{state}");
    for _ in 0..3 {
        let started = Instant::now();
        let r = get(&gw.url("/down/x")).await;
        assert_eq!(r.status, 502, "{}", r.body);
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "{:?}",
            started.elapsed()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_answering_5xx_is_ejected_after_eject_after_answers_and_gets_no_traffic() {
    let failing = Scripted::start(Script::Status(500)).await;
    let echo = EchoBackend::start().await;
    let stack = stack(format!(
        r#"[[routes]]
path_prefix = "/flaky/"
upstream = ["{failing}", "{echo}"]
auth = false
eject_after = 2
eject_for = "1m"
"#,
        failing = failing.url(),
        echo = echo.url()
    ))
    .await;
    let gw = &stack.gateways[0];
    // In turn: the failing backend's 500s reach the client (500 is not retried) until it has
    // answered `eject_after` of them in a row.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(get(&gw.url("/flaky/x")).await.status);
    }
    assert_eq!(statuses, [500, 200, 500, 200]);
    assert_eq!(failing.received(), 2);
    let state = upstream_state(&stack, "/flaky/", failing.addr).await;
    assert_eq!(state["ejected"], true, "{state}");
    assert_eq!(state["takes_traffic"], false, "{state}");
    assert!(
        state["ejected_for_ms"].as_u64().unwrap() > 50_000,
        "{state}"
    );
    // Ejected: everything goes to the other.
    for _ in 0..10 {
        let r = get(&gw.url("/flaky/x")).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["backend"], echo.addr.to_string());
    }
    assert_eq!(failing.received(), 2);
    let labels = format!(r#"route="/flaky/",host="*",upstream="{}""#, failing.addr);
    let ejections = format!("tokengate_upstream_ejections_total{{{labels}}}");
    assert_eq!(metric(&stack, &ejections).await, 1.0);
    let failures = format!("tokengate_upstream_failures_total{{{labels},kind=\"status_5xx\"}}");
    assert_eq!(metric(&stack, &failures).await, 2.0);
}
