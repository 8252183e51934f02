//! OTLP span export (`--features otel`): real `tokengate idp` and `tokengate gateway` processes,
//! pointed by `OTEL_EXPORTER_OTLP_ENDPOINT` at a small OTLP/HTTP receiver of the test's own,
//! export one span per request. The gateway's carries the request's W3C ids (the caller's trace
//! and span as parent when it sent a valid `traceparent`, else the trace its access log line
//! names; in both cases the span id the upstream saw as parent); the IdP's names the route
//! template, not the path; no exported byte holds a token or a secret. The log level stays `info`.
#![cfg(feature = "otel")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use prost::Message;
use support::{
    ADMIN_TOKEN, CLI_CLIENT, CLIENT_SECRET, PASSWORD, TestRedis, eventually, post_form, send,
};
use tokengate_store::testing::free_port;
use tokio_util::sync::CancellationToken;

const PARENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN: &str = "00f067aa0ba902b7";
const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const UNSAMPLED_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const UNSAMPLED: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
/// `SPAN_KIND_SERVER` in the OTLP protocol.
const SERVER: i32 = 2;

/// A span as the receiver got it, ids in hex, attribute values as text.
#[derive(Clone, Debug)]
struct Received {
    service: String,
    name: String,
    kind: i32,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    attributes: Vec<(String, String)>,
}

impl Received {
    fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// An OTLP/HTTP receiver: `POST /v1/traces` with an `ExportTraceServiceRequest` (protobuf).
/// Keeps the decoded spans and every body as it came, for the search for secrets.
struct Receiver {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<Received>>>,
    bodies: Arc<Mutex<Vec<Bytes>>>,
    shutdown: CancellationToken,
}

impl Receiver {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let shutdown = CancellationToken::new();
        let (all, raw, stop) = (spans.clone(), bodies.clone(), shutdown.clone());
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    _ = stop.cancelled() => break,
                    a = listener.accept() => match a { Ok((s, _)) => s, Err(_) => continue },
                };
                let (all, raw) = (all.clone(), raw.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: http::Request<Incoming>| {
                        let (all, raw) = (all.clone(), raw.clone());
                        async move { Ok::<_, std::convert::Infallible>(receive(req, &all, &raw).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver {
            addr,
            spans,
            bodies,
            shutdown,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The spans named `request` that `service` exported so far.
    fn requests(&self, service: &str) -> Vec<Received> {
        let spans = self.spans.lock().unwrap();
        spans
            .iter()
            .filter(|s| s.name == "request" && s.service == service)
            .cloned()
            .collect()
    }

    /// Whether any byte received holds `needle`.
    fn saw(&self, needle: &str) -> bool {
        let bodies = self.bodies.lock().unwrap();
        bodies
            .iter()
            .any(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn receive(
    req: http::Request<Incoming>,
    spans: &Mutex<Vec<Received>>,
    bodies: &Mutex<Vec<Bytes>>,
) -> http::Response<Full<Bytes>> {
    let status = |code: u16| {
        http::Response::builder()
            .status(code)
            .header("content-type", "application/x-protobuf")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    if req.method() != http::Method::POST || req.uri().path() != "/v1/traces" {
        return status(404);
    }
    if req.headers().get("content-type").map(|v| v.as_bytes()) != Some(b"application/x-protobuf") {
        return status(415);
    }
    let body = req.into_body().collect().await.unwrap().to_bytes();
    bodies.lock().unwrap().push(body.clone());
    let Ok(export) = ExportTraceServiceRequest::decode(body) else {
        return status(400);
    };
    let mut received = spans.lock().unwrap();
    for resource_spans in export.resource_spans {
        let resource = resource_spans
            .resource
            .map(|r| texts(&r.attributes))
            .unwrap_or_default();
        let service = resource
            .iter()
            .find(|(k, _)| k == "service.name")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
            received.push(Received {
                service: service.clone(),
                name: span.name,
                kind: span.kind,
                trace_id: hex(&span.trace_id),
                span_id: hex(&span.span_id),
                parent_span_id: hex(&span.parent_span_id),
                attributes: texts(&span.attributes),
            });
        }
    }
    // An empty `ExportTraceServiceResponse`: everything accepted.
    status(200)
}

fn texts(attributes: &[KeyValue]) -> Vec<(String, String)> {
    attributes
        .iter()
        .map(|a| {
            (
                a.key.clone(),
                a.value.as_ref().map(text).unwrap_or_default(),
            )
        })
        .collect()
}

fn text(value: &AnyValue) -> String {
    match &value.value {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One `tokengate` process exporting to the receiver, logging at `info` to a file; killed
/// when dropped.
struct Service {
    public: SocketAddr,
    admin: SocketAddr,
    child: Child,
    log: PathBuf,
}

impl Service {
    /// Starts `tokengate {name} --config {config}` (its listeners `public` and `admin`) with
    /// the OTLP settings `otel`, and waits until its admin `/readyz` answers 200.
    async fn start(
        name: &'static str,
        dir: &Path,
        config: String,
        (public, admin): (SocketAddr, SocketAddr),
        otel: &[(&str, &str)],
    ) -> Self {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, config).unwrap();
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_tokengate"))
            .arg(name)
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "info")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_PROTOCOL")
            .env_remove("OTEL_SERVICE_NAME")
            .env_remove("OTEL_SDK_DISABLED")
            .env_remove("OTEL_TRACES_SAMPLER")
            .env_remove("TOKENGATE_ADMIN_TOKEN")
            .envs(otel.iter().copied())
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        let mut service = Service {
            public,
            admin,
            child,
            log,
        };
        let ready = eventually(Duration::from_secs(20), || async {
            support::try_send("GET", &service.admin_url("/readyz"), &[], String::new())
                .await
                .is_ok_and(|r| r.status == 200)
        })
        .await;
        assert!(ready, "{name} never became ready:\n{}", service.log_text());
        assert!(service.child.try_wait().unwrap().is_none());
        service
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.public)
    }

    fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh folder for one test's files (removed when it passes).
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tokengate-otel-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn addrs() -> (SocketAddr, SocketAddr) {
    let addr = || SocketAddr::from(([127, 0, 0, 1], free_port()));
    (addr(), addr())
}

async fn start_idp(dir: &Path, redis: &str, otel: &[(&str, &str)]) -> Service {
    let made = Command::new(env!("CARGO_BIN_EXE_tokengate"))
        .args(["gen-key", "--out"])
        .arg(dir.join("signing.pem"))
        .output()
        .unwrap();
    assert!(made.status.success(), "gen-key: {made:?}");
    let hash = tokengate_idp::password::hash_password(PASSWORD).unwrap();
    let client_hash = tokengate_idp::password::hash_password(CLIENT_SECRET).unwrap();
    let (public, admin) = addrs();
    let config = format!(
        r#"[server]
listen = "{public}"
[admin]
listen = "{admin}"
token = "{ADMIN_TOKEN}"
[store]
redis_url = "{redis}"
[tokens]
signing_keys = ["signing.pem"]
[[users]]
username = "alice"
password_hash = "{hash}"
roles = ["orders:read"]
[[clients]]
client_id = "reports"
client_secret_hash = "{client_hash}"
roles = ["reports:write"]
[[clients]]
client_id = "{CLI_CLIENT}"
type = "public"
grants = ["password"]
"#
    );
    Service::start("idp", dir, config, (public, admin), otel).await
}

async fn start_gateway(
    dir: &Path,
    idp: &Service,
    redis: &str,
    backend: &str,
    otel: &[(&str, &str)],
) -> Service {
    let (public, admin) = addrs();
    let config = format!(
        r#"[server]
listen = "{public}"
[admin]
listen = "{admin}"
[store]
redis_url = "{redis}"
[idp]
jwks_url = "{jwks}"
[log]
access = true
access_path = "{access}"
{routes}
"#,
        jwks = idp.url("/.well-known/jwks.json"),
        access = dir.join("access.log").display(),
        routes = support::backend_routes(backend),
    );
    Service::start("gateway", dir, config, (public, admin), otel).await
}

/// A header the backend got (it echoes them back in the body).
fn upstream_header(reply: &support::Reply, name: &str) -> String {
    let echoed = reply.json();
    echoed["headers"][name]
        .as_str()
        .unwrap_or_else(|| panic!("no {name} upstream: {echoed}"))
        .to_owned()
}

#[tokio::test]
async fn request_spans_reach_an_otlp_receiver_with_the_request_trace_and_no_secret() {
    let redis = TestRedis::start();
    let backend = support::EchoBackend::start().await;
    let receiver = Receiver::start().await;
    let dir = temp_dir("spans");
    let endpoint = receiver.url();
    let otel = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        // Batches every 100 ms instead of 5 s: the test waits less.
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let idp = start_idp(&dir, &redis.url(), &otel).await;
    let gateway = start_gateway(&dir, &idp, &redis.url(), &backend.url(), &otel).await;

    // The IdP: a sign-in (password and reference token on the wire) and an admin call whose
    // path names a user.
    let login = post_form(
        &idp.url("/oauth2/token"),
        &[],
        &format!("grant_type=password&client_id={CLI_CLIENT}&username=alice&password={PASSWORD}"),
    )
    .await;
    assert_eq!(login.status, 200, "{}", login.body);
    let token = login.json()["access_token"].as_str().unwrap().to_owned();
    let sessions = send(
        "GET",
        &idp.admin_url("/admin/users/alice/sessions"),
        &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
        String::new(),
    )
    .await;
    assert_eq!(sessions.status, 200, "{}", sessions.body);

    // The gateway: a request whose caller does not sample (sent first: once the later spans
    // are in, its own would be too), a bearer request in the caller's trace, and a public one
    // that starts a trace.
    let unsampled = send(
        "GET",
        &gateway.url("/public/unsampled"),
        &[("traceparent", UNSAMPLED)],
        String::new(),
    )
    .await;
    assert_eq!(unsampled.status, 200, "{}", unsampled.body);
    assert_eq!(
        upstream_header(&unsampled, "traceparent")[..36],
        UNSAMPLED[..36],
        "the caller's trace goes on upstream"
    );
    let joined = send(
        "GET",
        &gateway.url("/api/joined"),
        &[
            ("traceparent", PARENT),
            ("authorization", &format!("Bearer {token}")),
        ],
        String::new(),
    )
    .await;
    assert_eq!(joined.status, 200, "{}", joined.body);
    let joined_upstream = upstream_header(&joined, "traceparent");
    let value_token = upstream_header(&joined, "authorization")
        .trim_start_matches("Bearer ")
        .to_owned();
    assert!(value_token.len() > 20, "{value_token}");
    let started = send(
        "GET",
        &gateway.url("/public/started?key=query-secret"),
        &[],
        String::new(),
    )
    .await;
    assert_eq!(started.status, 200, "{}", started.body);
    let started_upstream = upstream_header(&started, "traceparent");

    let arrived = eventually(Duration::from_secs(15), || async {
        receiver.requests("tokengate-gateway").len() >= 2
            && receiver
                .requests("tokengate-idp")
                .iter()
                .any(|s| s.attribute("route") == Some("/admin/users/{username}/sessions"))
    })
    .await;
    let spans = receiver.requests("tokengate-gateway");
    let idp_spans = receiver.requests("tokengate-idp");
    assert!(
        arrived,
        "gateway spans: {spans:?}\nidp spans: {idp_spans:?}\ngateway log:\n{}\nidp log:\n{}",
        gateway.log_text(),
        idp.log_text()
    );
    // Not the one whose caller does not sample.
    assert_eq!(spans.len(), 2, "{spans:?}");
    assert!(
        spans.iter().all(|s| s.trace_id != UNSAMPLED_TRACE),
        "{spans:?}"
    );
    for span in &spans {
        assert_eq!(span.kind, SERVER, "{span:?}");
        assert_eq!(
            span.attribute("http.request.method"),
            Some("GET"),
            "{span:?}"
        );
    }

    // A valid `traceparent`: the caller's trace, its span as parent, and the span id the
    // upstream was told is its parent.
    let span = spans
        .iter()
        .find(|s| s.trace_id == PARENT_TRACE)
        .unwrap_or_else(|| panic!("no span in the caller's trace: {spans:?}"));
    assert_eq!(span.parent_span_id, PARENT_SPAN, "{span:?}");
    assert_eq!(
        joined_upstream,
        format!("00-{PARENT_TRACE}-{}-01", span.span_id)
    );

    // None: the trace the gateway started, as its access log line and the upstream have it.
    let log = dir.join("access.log");
    let logged = eventually(Duration::from_secs(5), || async {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("/public/started"))
    })
    .await;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(logged, "no access log line:\n{text}");
    let line: serde_json::Value = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|l| l["path"] == "/public/started")
        .unwrap();
    let trace_id = line["trace_id"].as_str().unwrap();
    assert_ne!(trace_id, PARENT_TRACE);
    let span = spans
        .iter()
        .find(|s| s.trace_id == trace_id)
        .unwrap_or_else(|| panic!("no span in trace {trace_id}: {spans:?}"));
    assert_eq!(
        span.parent_span_id, "",
        "a new trace's span is a root: {span:?}"
    );
    assert_eq!(
        started_upstream,
        format!("00-{trace_id}-{}-01", span.span_id)
    );

    // The IdP's spans name the route template, never the path as sent.
    let token_span = idp_spans
        .iter()
        .find(|s| s.attribute("route") == Some("/oauth2/token"))
        .unwrap_or_else(|| panic!("no span for /oauth2/token: {idp_spans:?}"));
    assert_eq!(
        token_span.attribute("method"),
        Some("POST"),
        "{token_span:?}"
    );
    assert!(
        idp_spans
            .iter()
            .flat_map(|s| &s.attributes)
            .all(|(_, v)| !v.contains("/admin/users/alice")),
        "a raw path exported: {idp_spans:?}"
    );

    // Not one exported byte holds a token, a secret or a query.
    for secret in [
        token.as_str(),
        value_token.as_str(),
        ADMIN_TOKEN,
        PASSWORD,
        CLIENT_SECRET,
        "query-secret",
    ] {
        assert!(!receiver.saw(secret), "exported: {secret}");
    }

    // The gateway's request span is at `debug`: exported, it still never reaches the `info` log.
    let output = gateway.log_text();
    assert!(output.contains("exporting spans over OTLP"), "{output}");
    assert!(!output.contains("DEBUG"), "{output}");
    drop(gateway);
    drop(idp);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A collector that accepts connections and never answers: the export thread waits on it, its
/// queue fills, spans are dropped (and that logged), and requests go on as fast as before.
#[tokio::test]
async fn a_collector_that_never_answers_costs_requests_nothing() {
    let redis = TestRedis::start();
    let backend = support::EchoBackend::start().await;
    // Never accepted: the kernel completes the connections, nobody reads them.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", silent.local_addr().unwrap());
    let dir = temp_dir("silent");
    let otel = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "30000"),
        ("OTEL_BSP_SCHEDULE_DELAY", "10"),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "4"),
        ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "1"),
    ];
    let idp = start_idp(&dir, &redis.url(), &otel).await;
    let gateway = start_gateway(&dir, &idp, &redis.url(), &backend.url(), &otel).await;

    // Far more requests than the queue holds, each answered well inside the export timeout.
    for i in 0..40 {
        let started = std::time::Instant::now();
        let reply = send(
            "GET",
            &gateway.url(&format!("/public/{i}")),
            &[],
            String::new(),
        )
        .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(5),
            "request {i} took {took:?}:\n{}",
            gateway.log_text()
        );
    }
    let logged = eventually(Duration::from_secs(10), || async {
        gateway.log_text().contains("queue full")
    })
    .await;
    assert!(logged, "no drop logged:\n{}", gateway.log_text());
    drop(gateway);
    drop(idp);
    let _ = std::fs::remove_dir_all(&dir);
}
