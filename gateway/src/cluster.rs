//! A route's upstreams as one unit (what Envoy calls a cluster): which one takes the next
//! request (`balance`, health, ejection, `max_requests`), and the retries of a request that
//! failed, within the route's retry budget.
//!
//! Everything on the request path is an atomic: picking, counting in flight, the budget. The
//! lock below is taken only to decide an ejection, after `eject_after` failures in a row.

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, Uri, Version, header};
use http_body_util::BodyExt;
use hyper::body::Body as HttpBody;
use prometheus_client::metrics::gauge::Gauge;

use crate::config::{Balance, HealthCheckConfig, RouteConfig, ServerConfig};
use crate::metrics::{Failure, Metrics};
use crate::reject::Reject;
use crate::upstream::{
    Answer, InFlight, Lender, Pinned, SendError, Sender, Upstream, UpstreamBody, epoch_ms,
    idempotent,
};

/// Bodies up to this size are read whole before sending, so that an idempotent request can
/// be sent again.
pub const MAX_HELD_BODY: u64 = 64 * 1024;

/// What a cluster is built from: a route whose settings are the same keeps its cluster (and
/// the cluster's state) across a reload.
#[derive(Clone, Debug, PartialEq)]
struct Settings {
    upstreams: Vec<String>,
    timeout: Duration,
    connect_timeout: Duration,
    max_requests: Option<u32>,
    balance: Balance,
    retries: u32,
    eject_after: u32,
    eject_for: Duration,
    eject_on_5xx: bool,
    health_check: Option<HealthCheckConfig>,
}

/// The retry budget: each request puts one unit in, each retry takes [`RETRY_COST`] out, so
/// retries stay under 20 % of requests; a full budget allows [`RETRY_BURST`] retries at once.
#[derive(Debug)]
struct Budget(AtomicI64);

const RETRY_COST: i64 = 5;
const RETRY_BURST: i64 = 20;
const BUDGET_CAP: i64 = RETRY_COST * RETRY_BURST;

impl Budget {
    fn deposit(&self) {
        // Read first: a full budget (the common case) is not written to.
        if self.0.load(Ordering::Relaxed) < BUDGET_CAP {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn has_room(&self) -> bool {
        self.0.load(Ordering::Relaxed) >= RETRY_COST
    }

    fn withdraw(&self) -> bool {
        self.0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                (b >= RETRY_COST).then_some(b - RETRY_COST)
            })
            .is_ok()
    }
}

/// Why no upstream was picked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NoPick {
    /// Those that could take it are at `max_requests`.
    Overloaded,
    /// Every upstream was tried already.
    Exhausted,
}

/// A route's upstreams, their state, and how requests are spread over them and retried.
pub struct Cluster {
    list: Vec<Arc<Upstream>>,
    next: AtomicUsize,
    settings: Settings,
    sender: Sender,
    budget: Budget,
    /// Held while deciding an ejection, so that at most half the list is ever ejected.
    ejecting: Mutex<()>,
    /// 1 while every upstream fails its health checks (set by the health check task).
    pub(crate) fail_open: Gauge,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("list", &self.list)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// The upstreams of `config`, with the timeouts of `server` where the route sets none; the
    /// cluster of `previous` when nothing that makes it differs. `None` if an upstream URL
    /// cannot be parsed, or there is none.
    pub fn new(
        config: &RouteConfig,
        server: &ServerConfig,
        metrics: &Metrics,
        previous: Option<&Arc<Cluster>>,
    ) -> Option<Arc<Self>> {
        let settings = Settings {
            upstreams: config.upstream.clone(),
            timeout: config.timeout.unwrap_or(server.upstream_timeout),
            connect_timeout: config.connect_timeout.unwrap_or(server.connect_timeout),
            max_requests: config.max_requests,
            balance: config.balance,
            retries: config.retries,
            eject_after: config.eject_after,
            eject_for: config.eject_for,
            eject_on_5xx: config.eject_on_5xx,
            health_check: config.health_check.clone(),
        };
        if let Some(previous) = previous
            && previous.settings == settings
        {
            return Some(previous.clone());
        }
        let host = config.host.as_ref().map(|h| h.to_ascii_lowercase());
        let list = config
            .upstream
            .iter()
            .map(|url| {
                let mut upstream = Upstream::parse(url)?;
                upstream.metrics = metrics.upstream(
                    &config.path_prefix,
                    host.as_deref(),
                    upstream.authority.as_str(),
                );
                Some(Arc::new(upstream))
            })
            .collect::<Option<Vec<_>>>()?;
        if list.is_empty() {
            return None;
        }
        let fail_open = metrics.fail_open(&config.path_prefix, host.as_deref());
        fail_open.set(0);
        Some(Arc::new(Cluster {
            list,
            next: AtomicUsize::new(0),
            sender: Sender::new(settings.timeout, settings.connect_timeout),
            settings,
            budget: Budget(AtomicI64::new(BUDGET_CAP)),
            ejecting: Mutex::new(()),
            fail_open,
        }))
    }

    /// The upstreams, in configured order.
    pub fn upstreams(&self) -> &[Arc<Upstream>] {
        &self.list
    }

    /// `balance`.
    pub fn balance(&self) -> Balance {
        self.settings.balance
    }

    /// `max_requests`, if any.
    pub fn max_requests(&self) -> Option<u32> {
        self.settings.max_requests
    }

    /// `health_check`, if any.
    pub fn health_check(&self) -> Option<&HealthCheckConfig> {
        self.settings.health_check.as_ref()
    }

    /// Whether every upstream fails its health checks, so all get traffic.
    pub fn failing_open(&self) -> bool {
        !self.list.iter().any(|u| u.healthy())
    }

    /// Whether a failed request could be sent again (another upstream, a retry allowed and
    /// budget left): only then is a copy of it kept.
    pub fn may_retry(&self) -> bool {
        self.list.len() > 1 && self.settings.retries > 0 && self.budget.has_room()
    }

    /// The upstream for the next request, counted in flight; not one in `tried` (a bit per
    /// index). Those healthy and not ejected first; if there is none, any (fail open).
    fn pick(&self, tried: u64) -> Result<InFlight, NoPick> {
        let n = self.list.len();
        let now = epoch_ms();
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        let start = match self.settings.balance {
            Balance::RoundRobin => turn % n,
            Balance::LeastRequests => self.two_choices(turn, now),
        };
        let max = self.settings.max_requests.unwrap_or(u32::MAX);
        let mut full = false;
        for strict in [true, false] {
            let mut candidates = false;
            for i in 0..n {
                let index = (start + i) % n;
                let upstream = &self.list[index];
                if tried & bit(index) != 0 || (strict && !upstream.usable(now)) {
                    continue;
                }
                candidates = true;
                match upstream.acquire(index, max) {
                    Some(in_flight) => return Ok(in_flight),
                    None => full = true,
                }
            }
            if candidates {
                break;
            }
        }
        Err(if full {
            NoPick::Overloaded
        } else {
            NoPick::Exhausted
        })
    }

    /// Of two upstreams taken at random, the usable one with fewer requests in flight.
    fn two_choices(&self, turn: usize, now: u64) -> usize {
        let n = self.list.len();
        if n == 1 {
            return 0;
        }
        let r = splitmix64(turn as u64);
        let a = (r % n as u64) as usize;
        let mut b = ((r >> 32) % (n as u64 - 1)) as usize;
        if b >= a {
            b += 1;
        }
        let (ua, ub) = (&self.list[a], &self.list[b]);
        match (ua.usable(now), ub.usable(now)) {
            (true, true) if ub.in_flight() < ua.in_flight() => b,
            (false, true) => b,
            _ => a,
        }
    }

    /// A failure of `upstream`: counted, and after `eject_after` in a row it is ejected, if
    /// that leaves at least half the list in.
    fn failed(&self, upstream: &Upstream, failure: Failure) {
        if upstream.failed(failure) < self.settings.eject_after {
            return;
        }
        let _deciding = self.ejecting.lock().unwrap_or_else(PoisonError::into_inner);
        let now = epoch_ms();
        if upstream.ejected(now) || upstream.consecutive_failures() < self.settings.eject_after {
            return;
        }
        let ejected = self.list.iter().filter(|u| u.ejected(now)).count();
        if ejected + 1 > self.list.len() / 2 {
            return;
        }
        let length = upstream.eject(now, self.settings.eject_for);
        tracing::warn!(
            upstream = %upstream.authority,
            ejected_for = ?length,
            "upstream ejected after failures in a row"
        );
    }

    /// Sends `req` to an upstream, and again to another on a failure that allows it: a
    /// connection that could not be made (nothing was sent, any method), or, when `replay`
    /// holds a copy of an idempotent request, a timeout, a failure mid-exchange or a
    /// `502/503/504`.
    /// Returns the answer and the request in flight that gave it (for its upstream's name;
    /// the response body holds it until done).
    pub async fn send(
        &self,
        mut req: Request<UpstreamBody>,
        pinned: Option<&Pinned>,
        replay: Option<Replay>,
    ) -> (Result<Response<Answer>, Reject>, Option<InFlight>) {
        self.budget.deposit();
        let mut attempt = match self.pick(0) {
            Ok(attempt) => attempt,
            Err(_) => return (Err(Reject::UpstreamOverloaded), None),
        };
        // What may be sent again after the request went out: idempotent ones only.
        let resend = replay.as_ref().filter(|r| idempotent(&r.0.method));
        let mut tried = 0;
        let mut retries = self.settings.retries;
        loop {
            let upstream = attempt.upstream().clone();
            upstream.metrics.requests.inc();
            let sent = self.sender.send(&upstream, req, pinned).await;
            let (result, again) = match sent {
                Ok(response) if response.status().is_server_error() => {
                    if self.settings.eject_on_5xx {
                        self.failed(&upstream, Failure::Status);
                    }
                    let again = matches!(response.status().as_u16(), 502..=504)
                        .then(|| resend.and_then(Replay::request))
                        .flatten();
                    (Ok(response), again)
                }
                Ok(response) => {
                    upstream.succeeded();
                    return (Ok(response), Some(attempt));
                }
                Err(SendError::Refused { req, error }) => {
                    tracing::warn!(error = %error, upstream = %upstream.authority, "upstream refused");
                    self.failed(&upstream, Failure::Connect);
                    let again = req
                        .map(|r| *r)
                        .or_else(|| replay.as_ref().and_then(Replay::request));
                    (Err(Reject::UpstreamFailed), again)
                }
                Err(SendError::TimedOut) => {
                    tracing::warn!(upstream = %upstream.authority, "upstream timed out");
                    self.failed(&upstream, Failure::Timeout);
                    let again = resend.and_then(Replay::request);
                    (Err(Reject::UpstreamTimeout), again)
                }
                Err(SendError::Failed(error)) => {
                    tracing::warn!(error = %error, upstream = %upstream.authority, "upstream request failed");
                    self.failed(&upstream, Failure::Reset);
                    let again = resend.and_then(Replay::request);
                    (Err(Reject::UpstreamFailed), again)
                }
                Err(SendError::BodyTooLarge) => return (Err(Reject::BodyTooLarge), Some(attempt)),
                Err(SendError::BadTarget) => return (Err(Reject::BadTarget), Some(attempt)),
            };
            let Some(again) = again.filter(|_| retries > 0) else {
                return (result, Some(attempt));
            };
            tried |= bit(attempt.index);
            let Ok(next) = self.pick(tried) else {
                return (result, Some(attempt));
            };
            if !self.budget.withdraw() {
                return (result, Some(attempt));
            }
            upstream.metrics.retries.inc();
            tracing::debug!(from = %upstream.authority, to = %next.upstream().authority, "retrying on another upstream");
            retries -= 1;
            req = again;
            // The failed attempt's response (if any) is dropped with it.
            attempt = next;
        }
    }
}

fn bit(index: usize) -> u64 {
    1u64.checked_shl(index as u32).unwrap_or(0)
}

/// A well-mixed number from a counter (SplitMix64), for picking at random without a lock.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// What it takes to send a request again: its head, and its body when the gateway holds it.
/// Boxed, so that the request path carries a pointer rather than a request head.
pub struct Replay(Box<ReplayParts>);

struct ReplayParts {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    body: Kept,
}

/// The body of a request that may be sent again.
enum Kept {
    Empty,
    /// Read whole beforehand: any try may send it.
    Held(Bytes),
    /// Lent to the first try: the next gets it if the first never polled it.
    Lent(Arc<Mutex<Lender>>),
}

impl Replay {
    /// A copy of `req`, if it can be sent again: no body, or one of at most
    /// [`MAX_HELD_BODY`] bytes (by `Content-Length`), which is read now and held. A longer or
    /// unsized body is lent when `lend` (the pool drops a request whose connection it could
    /// not make, so only the lender can give its body to another try); `Ok(None)` otherwise,
    /// the body left streaming.
    pub async fn of(req: &mut Request<UpstreamBody>, lend: bool) -> Result<Option<Self>, Reject> {
        let body = if req.body().is_end_stream() {
            Kept::Empty
        } else {
            let declared = req
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
            if declared.is_none_or(|n| n > MAX_HELD_BODY) {
                if !lend {
                    return Ok(None);
                }
                Kept::Lent(Lender::lend(req))
            } else {
                let body = std::mem::replace(req.body_mut(), UpstreamBody::Held(None));
                let bytes = body
                    .collect()
                    .await
                    .map_err(|e| {
                        if e.is::<http_body_util::LengthLimitError>() {
                            Reject::BodyTooLarge
                        } else {
                            tracing::debug!(error = %e, "client body could not be read");
                            Reject::BodyIncomplete
                        }
                    })?
                    .to_bytes();
                *req.body_mut() = UpstreamBody::Held(Some(bytes.clone()));
                Kept::Held(bytes)
            }
        };
        Ok(Some(Replay(Box::new(ReplayParts {
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            headers: req.headers().clone(),
            body,
        }))))
    }

    /// The request again, unless its body was lent to a try that began to send it.
    fn request(&self) -> Option<Request<UpstreamBody>> {
        let Replay(copy) = self;
        let body = match &copy.body {
            Kept::Empty => UpstreamBody::Held(None),
            Kept::Held(bytes) => UpstreamBody::Held(Some(bytes.clone())),
            Kept::Lent(lender) => Lender::again(lender)?,
        };
        let mut req = Request::new(body);
        *req.method_mut() = copy.method.clone();
        *req.uri_mut() = copy.uri.clone();
        *req.version_mut() = copy.version;
        *req.headers_mut() = copy.headers.clone();
        Some(req)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
