//! What the gateway does to headers on their way through: identity headers are its own,
//! hop-by-hop headers describe one connection, and the upstream learns who asked and how.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue};

use crate::cache::Identity;
use crate::reject::Reject;

/// Taken from the client when sane, else generated; sent upstream and back to the client.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_AUTH_SUBJECT: HeaderName = HeaderName::from_static("x-auth-subject");
const X_AUTH_ROLES: HeaderName = HeaderName::from_static("x-auth-roles");
const X_AUTH_SESSION: HeaderName = HeaderName::from_static("x-auth-session");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The request's one `Authorization` header: `None` without one; two or more are refused.
pub fn authorization(headers: &HeaderMap) -> Result<Option<&HeaderValue>, Reject> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    match (values.next(), values.next()) {
        (Some(_), Some(_)) => Err(Reject::InvalidToken),
        (one, _) => Ok(one),
    }
}

/// Hop-by-hop headers (RFC 9110 §7.6.1): they describe one connection, never forwarded.
/// `Connection` first (`strip_hop_by_hop` reads the names it lists).
/// A `static`, not a `const`: a `const` array would be built and dropped anew at every use.
const HOPS: usize = 7;
static HOP_BY_HOP: [HeaderName; HOPS] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Removes every `X-Auth-*` header, whatever its case or count: identity headers are the
/// gateway's alone.
pub fn strip_identity(headers: &mut HeaderMap) {
    // Header names are stored lower-case; the common case (none) allocates nothing.
    if !headers.keys().any(|k| k.as_str().starts_with("x-auth-")) {
        return;
    }
    let spoofed: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("x-auth-"))
        .cloned()
        .collect();
    for name in spoofed {
        headers.remove(name);
    }
}

/// Removes the hop-by-hop headers and every header `Connection` names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names finds which are here, so that the common cases (none, or an
    // upstream's `Connection: keep-alive`) hash only what they remove and parse no name.
    let mut present = [false; HOPS];
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present[i] = true;
        }
    }
    if !present.contains(&true) {
        return;
    }
    let named: Vec<HeaderName> = if present[0] {
        headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            // A hop-by-hop name goes below if it is here.
            .filter(|n| {
                !HOP_BY_HOP
                    .iter()
                    .any(|h| n.eq_ignore_ascii_case(h.as_str()))
            })
            .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
            .collect()
    } else {
        Vec::new()
    };
    for name in &named {
        headers.remove(name);
    }
    for (name, _) in HOP_BY_HOP.iter().zip(present).filter(|(_, here)| *here) {
        headers.remove(name);
    }
}

/// The value token in place of the reference token, and who the caller is.
pub fn add_identity(headers: &mut HeaderMap, identity: &Identity) {
    headers.insert(header::AUTHORIZATION, identity.authorization.clone());
    headers.insert(X_AUTH_SUBJECT, identity.subject.clone());
    headers.insert(X_AUTH_ROLES, identity.roles_header.clone());
    headers.insert(X_AUTH_SESSION, identity.session_header.clone());
}

/// The client end of a downstream connection: its address, and that address as
/// `X-Forwarded-For` carries it, written once per connection rather than once per request.
#[derive(Clone, Debug)]
pub struct Peer {
    /// The TCP peer, as accepted (no `X-Forwarded-For` is trusted).
    pub addr: SocketAddr,
    forwarded_for: HeaderValue,
}

impl Peer {
    /// Once per accepted connection, not per request.
    pub fn new(addr: SocketAddr) -> Self {
        let forwarded_for = HeaderValue::from_str(&addr.ip().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        Peer {
            addr,
            forwarded_for,
        }
    }
}

/// `X-Forwarded-For` (the peer appended), `-Proto` and `-Host` (the host the client asked for).
pub fn add_forwarded(
    headers: &mut HeaderMap,
    peer: &Peer,
    proto: &HeaderValue,
    host: Option<HeaderValue>,
) {
    match headers.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prior) => {
            let forwarded_for = format!("{prior}, {}", peer.addr.ip());
            if let Ok(v) = HeaderValue::from_str(&forwarded_for) {
                headers.insert(X_FORWARDED_FOR, v);
            }
        }
        // Shared bytes: no copy, no formatting.
        None => {
            headers.insert(X_FORWARDED_FOR, peer.forwarded_for.clone());
        }
    }
    headers.insert(X_FORWARDED_PROTO, proto.clone());
    if let Some(host) = host {
        headers.insert(X_FORWARDED_HOST, host);
    }
}

/// Request ids: the client's `X-Request-Id` if it is sane, else a per-process random prefix and
/// a counter (unique without a random draw per request), written into a stack buffer.
pub struct RequestIds {
    /// `{prefix}-`: 8 random characters and the dash.
    prefix: [u8; 9],
    counter: AtomicU64,
}

impl RequestIds {
    /// Draws the random prefix; one per `Proxy`, so it outlives reloads.
    pub fn new() -> Self {
        // 8 characters of a fresh session id: random, URL-safe, cheap to get.
        let random = tokengate_store::ReferenceToken::generate().session_id();
        let mut prefix = [b'-'; 9];
        for (to, from) in prefix.iter_mut().zip(random.as_str().bytes().take(8)) {
            *to = from;
        }
        RequestIds {
            prefix,
            counter: AtomicU64::new(0),
        }
    }

    /// The client's `X-Request-Id` (1 to 128 visible ASCII characters), else the prefix and a
    /// counter.
    pub fn for_request(&self, headers: &HeaderMap) -> HeaderValue {
        if let Some(id) = headers.get(X_REQUEST_ID)
            && (1..=128).contains(&id.len())
            && id.as_bytes().iter().all(u8::is_ascii_graphic)
        {
            return id.clone();
        }
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        // `{prefix}-{n:x}`: at most 9 + 16 bytes.
        let mut id = [0u8; 25];
        id[..9].copy_from_slice(&self.prefix);
        let digits = (64 - n.leading_zeros()).div_ceil(4).max(1) as usize;
        for (i, at) in id[9..9 + digits].iter_mut().rev().enumerate() {
            *at = b"0123456789abcdef"[((n >> (4 * i)) & 0xf) as usize];
        }
        HeaderValue::from_bytes(&id[..9 + digits])
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
    }
}

impl Default for RequestIds {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn names(h: &HeaderMap) -> Vec<&str> {
        let mut names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        names
    }

    #[test]
    fn identity_headers_go_in_any_case_and_number() {
        let mut h = headers(&[
            ("X-Auth-Subject", "admin"),
            ("x-auth-roles", "a"),
            ("X-AUTH-ROLES", "b"),
            ("X-Auth-Anything-New", "1"),
            ("x-authority", "kept: not an identity header"),
            ("accept", "*/*"),
        ]);
        strip_identity(&mut h);
        assert_eq!(names(&h), ["accept", "x-authority"]);
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = headers(&[
            ("connection", "keep-alive, X-Secret , x-other"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("trailer", "x"),
            ("transfer-encoding", "chunked"),
            ("proxy-authorization", "Basic eA=="),
            ("x-secret", "1"),
            ("x-other", "2"),
            ("x-kept", "3"),
            ("upgrade", "websocket"),
        ]);
        strip_hop_by_hop(&mut h);
        // `Upgrade` is the caller's decision (kept only on WebSocket routes).
        assert_eq!(names(&h), ["upgrade", "x-kept"]);
        // An upstream's usual answer; a name listed in any case; none at all.
        let mut h = headers(&[("connection", "Keep-Alive"), ("content-length", "3")]);
        strip_hop_by_hop(&mut h);
        assert_eq!(names(&h), ["content-length"]);
        let mut h = headers(&[("connection", "TE, X-Gone"), ("te", "x"), ("x-gone", "1")]);
        strip_hop_by_hop(&mut h);
        assert!(h.is_empty());
        let mut h = headers(&[("accept", "*/*")]);
        strip_hop_by_hop(&mut h);
        assert_eq!(names(&h), ["accept"]);
    }

    #[test]
    fn forwarded_headers_append_the_peer() {
        let peer = Peer::new("10.1.2.3:5555".parse().unwrap());
        let proto = HeaderValue::from_static("https");
        let mut h = headers(&[("x-forwarded-for", "192.0.2.1")]);
        add_forwarded(&mut h, &peer, &proto, Some(HeaderValue::from_static("a.b")));
        assert_eq!(h["x-forwarded-for"], "192.0.2.1, 10.1.2.3");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "a.b");
        let mut h = HeaderMap::new();
        add_forwarded(&mut h, &peer, &proto, None);
        assert_eq!(h["x-forwarded-for"], "10.1.2.3");
        assert!(!h.contains_key("x-forwarded-host"));
        let v6 = Peer::new("[2001:db8::1]:443".parse().unwrap());
        add_forwarded(&mut h, &v6, &proto, None);
        assert_eq!(h["x-forwarded-for"], "10.1.2.3, 2001:db8::1");
    }

    #[test]
    fn request_ids_keep_sane_ones_and_make_unique_ones() {
        let ids = RequestIds::new();
        let kept = ids.for_request(&headers(&[("x-request-id", "abc-123")]));
        assert_eq!(kept, "abc-123");
        let too_long = "a".repeat(129);
        let (a, b) = (
            ids.for_request(&headers(&[("x-request-id", "bad id")])),
            ids.for_request(&headers(&[("x-request-id", &too_long)])),
        );
        assert_ne!(a, b);
        assert_ne!(a, "bad id");
        assert_ne!(b, too_long.as_str());
        // The prefix, a dash and the counter in hex.
        let made: Vec<String> = (0..20)
            .map(|_| {
                ids.for_request(&HeaderMap::new())
                    .to_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        let prefix = &made[0][..9];
        assert_eq!(prefix.len(), 9);
        assert!(prefix.ends_with('-'));
        let counters: Vec<u64> = made
            .iter()
            .map(|id| {
                assert_eq!(&id[..9], prefix);
                u64::from_str_radix(&id[9..], 16).unwrap()
            })
            .collect();
        assert_eq!(counters, (2..22).collect::<Vec<u64>>());
        ids.counter.store(u64::MAX, Ordering::Relaxed);
        let last = ids.for_request(&HeaderMap::new());
        assert_eq!(&last.to_str().unwrap()[9..], "ffffffffffffffff");
    }
}
