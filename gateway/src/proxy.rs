//! One request, in order: strip client identity headers, route, authenticate, authorize,
//! forward with the value token and role headers, answer with the upstream's response.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use tracing::Instrument;

use crate::auth::{AuthError, TokenCache};
use crate::config::{RouteConfig, ServerConfig};
use crate::metrics::{Metrics, StatusCounters};

pub type Body = BoxBody<Bytes, hyper::Error>;

/// How long an upstream that refused a connection is passed over.
const UPSTREAM_PENALTY: Duration = Duration::from_secs(5);

/// One upstream of a route, parsed once.
#[derive(Debug)]
pub struct Upstream {
    /// Unique among all routes' upstreams (set by [`Proxy::new`]).
    id: usize,
    pub scheme: http::uri::Scheme,
    pub authority: http::uri::Authority,
    /// `Host` of requests sent to it on a connection of our own.
    host: HeaderValue,
    /// Milliseconds since `epoch()` before which this upstream is passed over.
    down_until: AtomicU64,
}

fn epoch_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// A route with its upstreams parsed once.
#[derive(Debug)]
pub struct Route {
    pub prefix: String,
    /// Lower-case host this route is limited to.
    pub host: Option<String>,
    pub upstreams: Vec<Upstream>,
    next: AtomicUsize,
    pub roles: Vec<String>,
    pub auth: bool,
    pub websocket: bool,
    /// Requests this route answered, by status.
    pub requests: StatusCounters,
}

impl Route {
    pub fn new(config: &RouteConfig) -> Option<Self> {
        let upstreams = config
            .upstream
            .iter()
            .map(|url| {
                let uri: Uri = url.parse().ok()?;
                Some(Upstream {
                    id: 0,
                    scheme: uri.scheme()?.clone(),
                    host: HeaderValue::from_str(uri.authority()?.as_str()).ok()?,
                    authority: uri.authority()?.clone(),
                    down_until: AtomicU64::new(0),
                })
            })
            .collect::<Option<Vec<_>>>()?;
        if upstreams.is_empty() {
            return None;
        }
        Some(Route {
            prefix: config.path_prefix.clone(),
            host: config.host.as_ref().map(|h| h.to_ascii_lowercase()),
            upstreams,
            next: AtomicUsize::new(0),
            roles: config.roles.clone(),
            auth: config.auth,
            websocket: config.websocket,
            requests: StatusCounters::default(),
        })
    }

    /// The next upstream in turn that is not passed over (or the next in turn if all are).
    fn pick(&self) -> &Upstream {
        let n = self.upstreams.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let now = epoch_ms();
        (0..n)
            .map(|i| &self.upstreams[(start + i) % n])
            .find(|u| u.down_until.load(Ordering::Relaxed) <= now)
            .unwrap_or(&self.upstreams[start % n])
    }
}

pub struct Proxy {
    /// Longest prefix first, so the first match is the most specific.
    routes: Vec<Route>,
    client: Client<HttpConnector, Limited<Incoming>>,
    max_body_bytes: u64,
    tokens: Arc<TokenCache>,
    metrics: Arc<Metrics>,
    upstream_timeout: Duration,
    connect_timeout: Duration,
    request_prefix: String,
    request_counter: AtomicU64,
    /// `X-Forwarded-Proto`: how clients reach this gateway.
    proto: HeaderValue,
}

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Hop-by-hop headers (RFC 9110 §7.6.1): they describe one connection, never forwarded.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

const BEARER: &str = r#"Bearer realm="tokengate""#;
const BEARER_INVALID: &str = r#"Bearer realm="tokengate", error="invalid_token""#;
const BEARER_SCOPE: &str = r#"Bearer realm="tokengate", error="insufficient_scope""#;

fn reply(
    status: StatusCode,
    challenge: Option<&'static str>,
    error: &'static str,
) -> Response<Body> {
    let body = format!("{{\"error\":\"{error}\"}}");
    let mut response = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(c) = challenge {
        h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(c));
    }
    response
}

/// The host a request is for, without the port: `:authority` (HTTP/2) or `Host`.
fn request_host<B>(req: &Request<B>) -> Option<&str> {
    let raw = match req.uri().authority() {
        Some(authority) => authority.host(),
        None => req.headers().get(header::HOST)?.to_str().ok()?,
    };
    // Strip a port, keeping IPv6 literals whole.
    Some(match raw.rfind(':') {
        Some(i) if !raw.ends_with(']') => &raw[..i],
        _ => raw,
    })
}

/// Removes every `X-Auth-*` header: identity headers are the gateway's alone.
fn strip_identity(headers: &mut HeaderMap) {
    let spoofed: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("x-auth-"))
        .cloned()
        .collect();
    for name in spoofed {
        headers.remove(name);
    }
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Headers named in `Connection` are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

impl Proxy {
    pub fn new(
        routes: Vec<Route>,
        tokens: Arc<TokenCache>,
        metrics: Arc<Metrics>,
        server: &ServerConfig,
    ) -> Self {
        let mut routes = routes;
        // Longest prefix first; at equal length, a route for a named host before a catch-all.
        routes.sort_by_key(|r| std::cmp::Reverse((r.prefix.len(), r.host.is_some())));
        for (id, upstream) in routes
            .iter_mut()
            .flat_map(|r| r.upstreams.iter_mut())
            .enumerate()
        {
            upstream.id = id;
        }
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(server.connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        // 8 characters of a fresh session id: random, URL-safe, cheap to get.
        let random = tokengate_store::ReferenceToken::generate().session_id();
        Proxy {
            routes,
            client,
            max_body_bytes: server.max_body_bytes,
            tokens,
            metrics,
            upstream_timeout: server.upstream_timeout,
            connect_timeout: server.connect_timeout,
            request_prefix: random.as_str()[..8].to_owned(),
            request_counter: AtomicU64::new(0),
            proto: HeaderValue::from_static(if server.tls_cert.is_some() {
                "https"
            } else {
                "http"
            }),
        }
    }

    /// Answers one request. `pinned` holds the upstream connections of the downstream HTTP/1
    /// connection the request came on (`None`: use the shared pool).
    pub async fn handle(
        &self,
        mut req: Request<Incoming>,
        peer: SocketAddr,
        pinned: Option<&Pinned>,
    ) -> Response<Body> {
        let started = Instant::now();
        let id = self.request_id(req.headers());
        req.headers_mut().insert(X_REQUEST_ID, id.clone());
        let span = tracing::debug_span!("request", request_id = ?id);
        strip_identity(req.headers_mut());
        let route = self.select(&req);
        let mut response = match route {
            Some(route) => {
                self.serve(req, route, peer, pinned)
                    .instrument(span.clone())
                    .await
            }
            None => reply(StatusCode::NOT_FOUND, None, "not_found"),
        };
        let status = response.status().as_u16();
        if let Some(route) = route {
            route.requests.count(status);
        }
        span.in_scope(|| {
            tracing::debug!(
                status,
                elapsed_us = started.elapsed().as_micros() as u64,
                "request done"
            )
        });
        response.headers_mut().insert(X_REQUEST_ID, id);
        self.metrics.requests.count(status);
        self.metrics.request_duration.observe(started.elapsed());
        response
    }

    /// The client's `X-Request-Id` if it is sane, else a new one: a per-process random prefix
    /// and a counter (unique without a random draw per request).
    fn request_id(&self, headers: &HeaderMap) -> HeaderValue {
        if let Some(id) = headers.get(X_REQUEST_ID)
            && (1..=128).contains(&id.len())
            && id.as_bytes().iter().all(u8::is_ascii_graphic)
        {
            return id.clone();
        }
        let n = self.request_counter.fetch_add(1, Ordering::Relaxed);
        HeaderValue::from_str(&format!("{}-{n:x}", self.request_prefix))
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
    }

    /// The route for a request: the longest matching prefix, for its host if the route names one.
    fn select<B>(&self, req: &Request<B>) -> Option<&Route> {
        let path = req.uri().path();
        let host = request_host(req);
        self.routes.iter().find(|r| {
            path.starts_with(&r.prefix)
                && r.host
                    .as_ref()
                    .is_none_or(|h| host.is_some_and(|rh| rh.eq_ignore_ascii_case(h)))
        })
    }

    /// Requests by route and status, for `/metrics`.
    pub fn render_route_metrics(&self, out: &mut String) {
        out.push_str("# TYPE tokengate_route_requests_total counter\n");
        for route in &self.routes {
            let host = route.host.as_deref().unwrap_or("*");
            // Prefixes and hosts come from the config; escape what Prometheus labels need.
            let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
            let labels = format!("route=\"{}\",host=\"{}\",", esc(&route.prefix), esc(host));
            route
                .requests
                .render("tokengate_route_requests_total", &labels, out);
        }
    }

    async fn serve(
        &self,
        mut req: Request<Incoming>,
        route: &Route,
        peer: SocketAddr,
        pinned: Option<&Pinned>,
    ) -> Response<Body> {
        if route.auth {
            let mut values = req.headers().get_all(header::AUTHORIZATION).iter();
            let (first, second) = (values.next(), values.next());
            let Some(value) = first else {
                return reply(StatusCode::UNAUTHORIZED, Some(BEARER), "unauthorized");
            };
            if second.is_some() {
                return reply(
                    StatusCode::UNAUTHORIZED,
                    Some(BEARER_INVALID),
                    "invalid_token",
                );
            }
            let identity = match self.tokens.authenticate(value.as_bytes()).await {
                Ok(identity) => identity,
                Err(AuthError::Invalid) => {
                    return reply(
                        StatusCode::UNAUTHORIZED,
                        Some(BEARER_INVALID),
                        "invalid_token",
                    );
                }
                Err(e @ (AuthError::Unavailable(_) | AuthError::NoKeys)) => {
                    tracing::warn!(error = %e, "cannot validate a token now");
                    return reply(
                        StatusCode::SERVICE_UNAVAILABLE,
                        None,
                        "temporarily_unavailable",
                    );
                }
            };
            if !route.roles.is_empty() && !route.roles.iter().any(|r| identity.roles.contains(r)) {
                return reply(
                    StatusCode::FORBIDDEN,
                    Some(BEARER_SCOPE),
                    "insufficient_scope",
                );
            }
            let h = req.headers_mut();
            h.insert(header::AUTHORIZATION, identity.authorization.clone());
            h.insert("x-auth-subject", identity.subject.clone());
            h.insert("x-auth-roles", identity.roles_header.clone());
            h.insert("x-auth-session", identity.session_header.clone());
        }
        self.forward(req, route, peer, pinned).await
    }

    async fn forward(
        &self,
        req: Request<Incoming>,
        route: &Route,
        peer: SocketAddr,
        pinned: Option<&Pinned>,
    ) -> Response<Body> {
        // Only HTTP/1 requests come one at a time per connection.
        let pinned = pinned.filter(|_| req.version() <= http::Version::HTTP_11);
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_body_bytes) {
            return reply(StatusCode::PAYLOAD_TOO_LARGE, None, "body_too_large");
        }
        let limit = usize::try_from(self.max_body_bytes).unwrap_or(usize::MAX);
        let mut req = req.map(|body| Limited::new(body, limit));
        let host = req
            .headers()
            .get(header::HOST)
            .cloned()
            .or_else(|| HeaderValue::from_str(req.uri().authority()?.as_str()).ok());
        let path_and_query = req.uri().path_and_query().cloned();
        let upstream = route.pick();
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(upstream.scheme.clone());
        parts.authority = Some(upstream.authority.clone());
        parts.path_and_query = path_and_query;
        let Ok(uri) = Uri::from_parts(parts) else {
            return reply(StatusCode::BAD_REQUEST, None, "invalid_request");
        };
        *req.uri_mut() = uri;
        *req.version_mut() = http::Version::HTTP_11;
        let upgrade = route.websocket && req.headers().contains_key(header::UPGRADE);
        let downstream = upgrade.then(|| hyper::upgrade::on(&mut req));
        let kept_upgrade = upgrade
            .then(|| req.headers().get(header::UPGRADE).cloned())
            .flatten();
        let h = req.headers_mut();
        strip_hop_by_hop(h);
        match kept_upgrade {
            Some(protocol) => {
                h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                h.insert(header::UPGRADE, protocol);
            }
            None => {
                h.remove(header::UPGRADE);
            }
        }
        h.remove(header::HOST);
        let forwarded_for = match h.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(prior) => format!("{prior}, {}", peer.ip()),
            None => peer.ip().to_string(),
        };
        if let Ok(v) = HeaderValue::from_str(&forwarded_for) {
            h.insert("x-forwarded-for", v);
        }
        h.insert("x-forwarded-proto", self.proto.clone());
        if let Some(host) = host {
            h.insert("x-forwarded-host", host);
        }
        let sent = match pinned {
            Some(pinned) if downstream.is_none() => self.send_pinned(pinned, upstream, req).await,
            _ => self.send_pooled(req).await,
        };
        match sent {
            Ok(mut response) => {
                if let Some(downstream) = downstream
                    && response.status() == StatusCode::SWITCHING_PROTOCOLS
                {
                    let upstream = hyper::upgrade::on(&mut response);
                    tokio::spawn(splice(downstream, upstream));
                    let (parts, body) = response.into_parts();
                    return Response::from_parts(parts, body.boxed());
                }
                let (mut parts, body) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                parts.headers.remove(header::UPGRADE);
                Response::from_parts(parts, body.boxed())
            }
            Err(SendError::Failed { error, .. }) if cut_off(&*error) => {
                reply(StatusCode::PAYLOAD_TOO_LARGE, None, "body_too_large")
            }
            Err(SendError::Failed { error, connect }) => {
                self.metrics.upstream_errors.inc();
                if connect {
                    let until = epoch_ms() + UPSTREAM_PENALTY.as_millis() as u64;
                    upstream.down_until.store(until, Ordering::Relaxed);
                }
                tracing::warn!(error = %error, upstream = %upstream.authority, "upstream request failed");
                reply(StatusCode::BAD_GATEWAY, None, "bad_gateway")
            }
            Err(SendError::TimedOut) => {
                self.metrics.upstream_errors.inc();
                tracing::warn!(upstream = %upstream.authority, "upstream timed out");
                reply(StatusCode::GATEWAY_TIMEOUT, None, "gateway_timeout")
            }
        }
    }
}

/// Upstream connections of one downstream HTTP/1 connection. Requests on it come one at a time,
/// so each upstream needs at most one connection, reused without the shared pool's locking and
/// bookkeeping; they close with the downstream connection.
#[derive(Default)]
pub struct Pinned(Mutex<Vec<(usize, http1::SendRequest<UpstreamBody>)>>);

impl Pinned {
    fn take(&self, upstream: usize) -> Option<http1::SendRequest<UpstreamBody>> {
        let mut list = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let at = list.iter().position(|(id, _)| *id == upstream)?;
        Some(list.swap_remove(at).1)
    }

    fn put(&self, upstream: usize, sender: http1::SendRequest<UpstreamBody>) {
        let mut list = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if !list.iter().any(|(id, _)| *id == upstream) {
            list.push((upstream, sender));
        }
    }
}

type UpstreamBody = Limited<Incoming>;

/// Why no upstream response came.
enum SendError {
    /// No response head within `upstream_timeout`.
    TimedOut,
    Failed {
        error: Box<dyn std::error::Error + Send + Sync>,
        /// The connection itself could not be made (the upstream is passed over for a while).
        connect: bool,
    },
}

impl Proxy {
    /// Through the shared pool (HTTP/2 clients, upgrades).
    async fn send_pooled(
        &self,
        req: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, SendError> {
        match tokio::time::timeout(self.upstream_timeout, self.client.request(req)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => Err(SendError::Failed {
                connect: e.is_connect(),
                error: Box::new(e),
            }),
            Err(_) => Err(SendError::TimedOut),
        }
    }

    /// Through the downstream connection's own connection to `upstream`, made on first use and
    /// again if the upstream closed it.
    async fn send_pinned(
        &self,
        pinned: &Pinned,
        upstream: &Upstream,
        mut req: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, SendError> {
        // What the pool does for its requests: origin-form target, `Host` of the upstream.
        if let Some(target) = req.uri().path_and_query().cloned() {
            *req.uri_mut() = Uri::from(target);
        }
        req.headers_mut()
            .insert(header::HOST, upstream.host.clone());
        let exchange = async {
            let mut sender = match pinned.take(upstream.id) {
                Some(sender) => sender,
                None => self.connect(upstream).await?,
            };
            if sender.ready().await.is_err() {
                sender = self.connect(upstream).await?;
            }
            let response = match sender.try_send_request(req).await {
                Ok(response) => response,
                Err(mut e) => match e.take_message() {
                    // Closed under us before the request went out: once more, on a new one.
                    Some(req) => {
                        sender = self.connect(upstream).await?;
                        sender.send_request(req).await.map_err(failed)?
                    }
                    None => return Err(failed(e.into_error())),
                },
            };
            pinned.put(upstream.id, sender);
            Ok(response)
        };
        tokio::time::timeout(self.upstream_timeout, exchange)
            .await
            .unwrap_or(Err(SendError::TimedOut))
    }

    async fn connect(
        &self,
        upstream: &Upstream,
    ) -> Result<http1::SendRequest<UpstreamBody>, SendError> {
        let refused = |error: Box<dyn std::error::Error + Send + Sync>| SendError::Failed {
            error,
            connect: true,
        };
        let addr = (
            upstream.authority.host(),
            upstream.authority.port_u16().unwrap_or(80),
        );
        let stream =
            tokio::time::timeout(self.connect_timeout, tokio::net::TcpStream::connect(addr))
                .await
                .map_err(|_| refused("connect timed out".into()))?
                .map_err(|e| refused(Box::new(e)))?;
        let _ = stream.set_nodelay(true);
        let (mut sender, connection) = http1::Builder::new()
            .handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| refused(Box::new(e)))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        sender.ready().await.map_err(failed)?;
        Ok(sender)
    }
}

fn failed(e: hyper::Error) -> SendError {
    SendError::Failed {
        error: Box::new(e),
        connect: false,
    }
}

/// Whether an upstream request failed because the client's body passed `max_body_bytes`.
fn cut_off(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(e) = source {
        if e.is::<LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// Joins an upgraded client connection to the upgraded upstream connection.
async fn splice(downstream: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    let (client, server) = match tokio::try_join!(downstream, upstream) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed");
            return;
        }
    };
    let mut client = hyper_util::rt::TokioIo::new(client);
    let mut server = hyper_util::rt::TokioIo::new(server);
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut server).await {
        tracing::debug!(error = %e, "upgraded connection ended with an error");
    }
}

/// Answers of the admin listener.
pub fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut response = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
