//! One request in named phases, in this order:
//!
//! 1. strip identity headers (on every route, so no backend ever sees a client's `X-Auth-*`);
//!    with `[browser]`, the gateway's own paths (`/.tokengate/`) are answered here;
//! 2. route (longest prefix, host); a CORS preflight on a route with `cors` is answered here;
//! 3. authenticate (reference token → cached identity; a cache hit never waits): the bearer
//!    header, or on a `browser` route the session cookie; a navigation without a session is
//!    sent to sign in;
//! 4. check the origin of cookie-authenticated unsafe requests (CSRF), and authorize (the
//!    route's rules, first match decides, else any of its roles);
//! 5. build the upstream request (body limit, target, hop-by-hop, forwarded and identity
//!    headers; the session cookie and the IdP's sign-in cookie removed);
//! 6. send it: pick an upstream (balance, health, ejection, `max_requests`), and retry on
//!    another where that is safe (`cluster`);
//! 7. finish the response (upgrade or hop-by-hop removal, request id, metrics; on a route
//!    with `cors`, the CORS headers in place of the upstream's).
//!
//! A failing phase returns a [`Reject`]; [`Reject::into_response`] is the one place that
//! turns it into an answer.

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use http::header;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use tracing::{Instrument, Span};

use crate::access::{self, AccessLog, Counted, Entry, Logged};
use crate::browser::{self, Admission, Browser};
use crate::cache::{Identity, TokenCache};
use crate::cluster::Replay;
use crate::config::ServerConfig;
use crate::cors;
use crate::headers::{
    Peer, RequestIds, X_REQUEST_ID, add_forwarded, add_identity, authorization, strip_hop_by_hop,
    strip_identity,
};
use crate::metrics::Metrics;
use crate::policy::{self, Who};
use crate::ratelimit::RateLimiter;
use crate::reject::{Body, RATELIMIT, RATELIMIT_POLICY, Reject};
use crate::routes::{Route, Routes};
use crate::trace::TraceContext;
use crate::upstream::{Answer, InFlight, Pinned, Tracked, UpstreamBody, idempotent, splice};
use tokengate_server::cookies::{self, IDP_COOKIES};

/// The public listener's request handler, shared by every connection; a reload swaps its
/// [`Live`] part, nothing else.
pub struct Proxy {
    /// What a reload replaces: one atomic load per request, and a request in flight keeps
    /// the one it started with.
    live: ArcSwap<Live>,
    tokens: Arc<TokenCache>,
    metrics: Arc<Metrics>,
    ids: RequestIds,
    max_body_bytes: u64,
    /// `X-Forwarded-Proto`: how clients reach this gateway.
    proto: HeaderValue,
    /// `[log] access = true`; `None` costs the request path nothing.
    access: Option<Arc<AccessLog>>,
    /// `[protection] invalid_token_rate`: answers of `invalid_token` per client address.
    brake: Option<RateLimiter>,
}

/// The part of the request path that a configuration reload replaces whole.
pub struct Live {
    routes: Routes,
    /// Browser sessions (`[browser]`); `None` costs the request path nothing.
    browser: Option<Arc<Browser>>,
    /// Cookies never forwarded: on an `idp = true` route, and on every other route.
    strip_cookies_idp: Vec<String>,
    strip_cookies: Vec<String>,
}

impl Live {
    /// Works out the cookies to strip once, here, not per request.
    pub fn new(routes: Routes, browser: Option<Arc<Browser>>) -> Self {
        let own: Vec<String> = browser
            .iter()
            .flat_map(|b| b.own_cookies())
            .map(str::to_owned)
            .collect();
        let mut strip_cookies = own.clone();
        strip_cookies.extend(IDP_COOKIES.map(str::to_owned));
        Live {
            routes,
            browser,
            strip_cookies_idp: own,
            strip_cookies,
        }
    }

    /// `None` without `[browser]`.
    pub fn browser(&self) -> Option<&Arc<Browser>> {
        self.browser.as_ref()
    }

    /// The route table in effect.
    pub fn routes(&self) -> &Routes {
        &self.routes
    }
}

/// A request ready for its upstreams, with what sending and the response phase need to know.
struct Outgoing {
    req: Request<UpstreamBody>,
    /// The client's side of an upgrade this route lets through.
    upgrade: Option<OnUpgrade>,
    /// Came over HTTP/1 (one request at a time): may use the connection's own upstream
    /// connections.
    http1: bool,
}

impl Proxy {
    /// `brake` is the `[protection]` limit on `401 invalid_token` answers, `None` when it is off.
    pub fn new(
        live: Live,
        tokens: Arc<TokenCache>,
        metrics: Arc<Metrics>,
        server: &ServerConfig,
        access: Option<Arc<AccessLog>>,
        brake: Option<RateLimiter>,
    ) -> Self {
        Proxy {
            access,
            brake,
            live: ArcSwap::from_pointee(live),
            tokens,
            metrics,
            ids: RequestIds::new(),
            max_body_bytes: server.max_body_bytes,
            proto: HeaderValue::from_static(if server.tls_cert.is_some() {
                "https"
            } else {
                "http"
            }),
        }
    }

    /// What requests use now.
    pub fn live(&self) -> Arc<Live> {
        self.live.load_full()
    }

    /// From now on, new requests use `live`; those in flight finish with what they had.
    pub fn replace(&self, live: Live) {
        self.live.store(Arc::new(live));
    }

    /// Answers one request from `peer`. `pinned` holds the upstream connections of the
    /// downstream HTTP/1 connection the request came on (`None`: use the shared pool).
    pub async fn handle(
        &self,
        mut req: Request<Incoming>,
        peer: &Peer,
        pinned: Option<&Pinned>,
    ) -> Response<Body> {
        let started = Instant::now();
        let id = self.ids.for_request(req.headers());
        req.headers_mut().insert(X_REQUEST_ID, id.clone());
        // The caller's trace joined (or a new one started), a span of ours for the upstream.
        let trace = TraceContext::join(req.headers_mut());
        #[cfg(not(feature = "otel"))]
        let span = tracing::debug_span!("request", request_id = ?id, trace_id = %trace);
        // Exported (the `otel` feature), the span is the server side of the caller's request,
        // with the request's W3C ids.
        #[cfg(feature = "otel")]
        let span = {
            let method = tokengate_server::cut(req.method().as_str());
            let span = tracing::debug_span!("request", request_id = ?id, trace_id = %trace,
                otel.kind = "server", http.request.method = method);
            crate::trace::otel::adopt(&span, &trace);
            span
        };
        let mut entry = self
            .access
            .as_ref()
            .map(|log| access::begin(log, &req, started, &id, &trace, peer.addr.ip()));
        strip_identity(req.headers_mut());
        let live = self.live.load_full();
        if let Some(browser) = &live.browser
            && req.uri().path().starts_with(browser::PREFIX)
        {
            // Boxed, as the other rare paths are: the request's future stays small (it is
            // moved into its box whole, on every request).
            let result = Box::pin(self.own_path(browser, &req))
                .instrument(span.clone())
                .await;
            return self.finish(result, None, id, started, &span, entry);
        }
        let route = live.routes.find(&req);
        // CORS: a preflight is answered here, before authentication and never upstream; any
        // other answer to an allowed origin gets the route's CORS headers (`None`: no `cors`).
        let cors = route.and_then(|r| r.cors.as_deref());
        if let Some(cors) = cors
            && cors::is_preflight(&req)
        {
            let answer = cors.preflight(req.headers());
            return self.finish(answer, route, id, started, &span, entry);
        }
        let origin = cors.and_then(|c| c.allowed_origin(req.headers()));
        let result = match route {
            Some(_) if policy::dot_segment(req.uri().path()) => Err(Reject::BadTarget),
            Some(route) => {
                let serving = self.serve(&live, req, route, peer, pinned, entry.as_mut());
                // A disabled span (any level above `debug`) needs no wrapper around the
                // future, nor the copy of it into one.
                if span.is_disabled() {
                    serving.await
                } else {
                    serving.instrument(span.clone()).await
                }
            }
            None => Err(Reject::NoRoute),
        };
        let mut response = self.finish(result, route, id, started, &span, entry);
        if let Some(cors) = cors {
            cors.respond(response.headers_mut(), origin);
        }
        response
    }

    async fn serve(
        &self,
        live: &Live,
        req: Request<Incoming>,
        route: &Route,
        peer: &Peer,
        pinned: Option<&Pinned>,
        mut entry: Option<&mut Entry>,
    ) -> Result<Response<Body>, Reject> {
        // By address or for the whole route: before authentication, so that a flood costs no
        // cache or store lookup.
        let ip = peer.addr.ip();
        let limit = route.limit.as_deref();
        let mut allowed = match limit.filter(|l| l.before_authentication()) {
            Some(limit) => Some(limit.check(None, ip).map_err(Reject::RateLimited)?),
            None => None,
        };
        // An address that guessed too many tokens waits, without a cache or store lookup.
        if route.auth
            && let Some(brake) = &self.brake
        {
            brake.peek(None, ip).map_err(Reject::RateLimited)?;
        }
        let admitted = self.authenticate(live, route, &req).await;
        if let (Err(Reject::InvalidToken), Some(brake)) = (&admitted, &self.brake) {
            brake.check(None, ip).map_err(Reject::RateLimited)?;
        }
        let identity = match admitted? {
            None => None,
            Some(Admission::Session(identity)) => Some(identity),
            Some(Admission::SignIn(redirect)) => return Ok(redirect),
        };
        if let (Some(entry), Some(identity)) = (entry.as_deref_mut(), &identity) {
            entry.identity(identity);
        }
        if let Some(limit) = limit.filter(|l| !l.before_authentication()) {
            let checked = limit.check(identity.as_deref(), ip);
            allowed = Some(checked.map_err(Reject::RateLimited)?);
        }
        authorize(route, &req, identity.as_deref())?;
        // A request without a body has no bytes to count.
        let counter = entry
            .as_deref_mut()
            .filter(|_| !hyper::body::Body::is_end_stream(req.body()))
            .and_then(Entry::bytes_in);
        let mut outgoing =
            self.upstream_request(live, req, route, identity.as_deref(), peer, counter)?;
        let pinned = pinned.filter(|_| outgoing.http1 && outgoing.upgrade.is_none());
        let cluster = &route.upstreams;
        // A copy to send again, kept only where a retry may follow (another upstream, budget
        // left): after a timeout or a 502/503/504 for an idempotent method whose body is empty
        // or small enough to hold; after a refused connection for any method where the pool
        // sends it (a connection of our own hands the request back, the pool does not, so a
        // body too large to hold is lent to the first try and taken back if it never sent it).
        let replay = if outgoing.upgrade.is_none()
            && (pinned.is_none() || idempotent(outgoing.req.method()))
            && cluster.may_retry()
        {
            // Boxed: only routes with several upstreams come here, and its future would
            // otherwise make every request's larger.
            Box::pin(Replay::of(&mut outgoing.req, pinned.is_none())).await?
        } else {
            None
        };
        let sent = entry.as_deref_mut().map(|_| Instant::now());
        let (response, in_flight) = cluster.send(outgoing.req, pinned, replay).await;
        if let Err(Reject::UpstreamFailed | Reject::UpstreamTimeout) = response {
            self.metrics.upstream_errors.inc();
        }
        if let Some(entry) = entry {
            if let Some(in_flight) = &in_flight {
                entry.upstream(&in_flight.upstream().authority);
            }
            if let Some(sent) = sent {
                entry.upstream_duration(sent.elapsed());
            }
        }
        let mut response = downstream_response(response?, outgoing.upgrade, in_flight);
        if route.limit_headers
            && let (Some(limit), Some(allowed)) = (limit, allowed)
        {
            let h = response.headers_mut();
            h.insert(RATELIMIT_POLICY, limit.policy.clone());
            h.insert(RATELIMIT, limit.state(&allowed));
        }
        Ok(response)
    }

    /// On a protected route, the session behind the request's one `Authorization` header; on a
    /// `browser` route, [`Browser::authenticate`] decides (cookie, CSRF, sign-in redirect).
    /// `None` on a public route.
    async fn authenticate(
        &self,
        live: &Live,
        route: &Route,
        req: &Request<Incoming>,
    ) -> Result<Option<Admission>, Reject> {
        if !route.auth {
            return Ok(None);
        }
        if route.browser
            && let Some(browser) = &live.browser
        {
            return Box::pin(browser.authenticate(req, &self.tokens, route.cors.as_deref()))
                .await
                .map(Some);
        }
        let value = authorization(req.headers())?.ok_or(Reject::MissingToken)?;
        let identity = self.tokens.authenticate(value.as_bytes()).await?;
        Ok(Some(Admission::Session(identity)))
    }

    /// `/.tokengate/...`: sign-in, callback, logout and session, answered by the gateway.
    async fn own_path(
        &self,
        browser: &Browser,
        req: &Request<Incoming>,
    ) -> Result<Response<Body>, Reject> {
        let identity = if req.uri().path() == "/.tokengate/session" {
            browser.identify(req, &self.tokens).await.map(|(i, _)| i)
        } else {
            Err(Reject::MissingToken)
        };
        browser.answer(req, &self.tokens, identity).await
    }

    /// The request as its upstream gets it. Identity headers go in last, so that nothing a
    /// client names in `Connection` can remove them.
    fn upstream_request(
        &self,
        live: &Live,
        req: Request<Incoming>,
        route: &Route,
        identity: Option<&Identity>,
        peer: &Peer,
        bytes_in: Option<Arc<std::sync::atomic::AtomicU64>>,
    ) -> Result<Outgoing, Reject> {
        let http1 = req.version() <= http::Version::HTTP_11;
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_body_bytes) {
            return Err(Reject::BodyTooLarge);
        }
        let limit = usize::try_from(self.max_body_bytes).unwrap_or(usize::MAX);
        let mut req = req
            .map(|body| UpstreamBody::Streaming(Counted::new(Limited::new(body, limit), bytes_in)));
        // The client's `Host` is for `X-Forwarded-Host`; the upstream gets its own.
        let host = req
            .headers_mut()
            .remove(header::HOST)
            .or_else(|| HeaderValue::from_str(req.uri().authority()?.as_str()).ok());
        // The target stays as the client sent it: a pinned connection sends it in origin
        // form, and the pool puts the upstream picked in front (`Sender::send`).
        *req.version_mut() = http::Version::HTTP_11;
        let upgrade = (route.websocket && req.headers().contains_key(header::UPGRADE))
            .then(|| hyper::upgrade::on(&mut req));
        let protocol = upgrade
            .as_ref()
            .and_then(|_| req.headers().get(header::UPGRADE).cloned());
        let h = req.headers_mut();
        strip_hop_by_hop(h);
        match protocol {
            Some(protocol) => {
                h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                h.insert(header::UPGRADE, protocol);
            }
            None => {
                h.remove(header::UPGRADE);
            }
        }
        // The session cookie is a credential, as `Authorization` is; the IdP's cookie would
        // reach every backend on its host (browsers share cookies across ports).
        let strip = if route.idp {
            &live.strip_cookies_idp
        } else {
            &live.strip_cookies
        };
        cookies::strip(h, strip);
        add_forwarded(h, peer, &self.proto, host);
        if let Some(identity) = identity {
            add_identity(h, identity);
        }
        Ok(Outgoing {
            req,
            upgrade,
            http1,
        })
    }

    /// Request id on the response, the request counted and timed; with the access log, the
    /// response body carries the request's record until it has been sent.
    fn finish(
        &self,
        result: Result<Response<Body>, Reject>,
        route: Option<&Route>,
        id: HeaderValue,
        started: Instant,
        span: &Span,
        entry: Option<Entry>,
    ) -> Response<Body> {
        let reason = result.as_ref().err().map(|reject| reject.name());
        let mut response = result.unwrap_or_else(Reject::into_response);
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
        self.metrics.observe_duration(started.elapsed());
        match entry {
            Some(mut entry) => {
                entry.answered(status, reason);
                if let Some(route) = route {
                    entry.route(&route.prefix);
                }
                response.map(|body| Logged::new(body, entry).boxed())
            }
            None => response,
        }
    }
}

/// The route's rules (first match decides), else its roles: any of them, or any identity when
/// it asks for none. A public route has only rules to apply.
fn authorize<B>(
    route: &Route,
    req: &Request<B>,
    identity: Option<&Identity>,
) -> Result<(), Reject> {
    let who = identity.map(|i| Who {
        roles: &i.roles,
        client: i.client_id.as_deref(),
        subject: i.subject.as_bytes(),
    });
    route.authorize(req.method(), req.uri().path(), who)
}

/// The upstream's answer on its way back: an accepted upgrade joins the two connections;
/// anything else loses its hop-by-hop headers, and its body keeps the request counted in
/// flight until it has been sent on.
fn downstream_response(
    mut response: Response<Answer>,
    upgrade: Option<OnUpgrade>,
    in_flight: Option<InFlight>,
) -> Response<Body> {
    if let Some(downstream) = upgrade
        && response.status() == StatusCode::SWITCHING_PROTOCOLS
    {
        let upstream = hyper::upgrade::on(&mut response);
        tokio::spawn(splice(downstream, upstream));
        return response.map(BodyExt::boxed);
    }
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(header::UPGRADE);
    match in_flight {
        Some(in_flight) => Response::from_parts(parts, Tracked::new(body, in_flight).boxed()),
        None => Response::from_parts(parts, body.boxed()),
    }
}
