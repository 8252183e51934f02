//! The lean HTTP/1.1 path's first decision (issue #28): for the bytes of a request head, whether
//! the lean path takes the request, how its body is framed and which headers go on.
//!
//! The lean path takes only what it can carry exactly as today's hyper path would: HTTP/1.1, a
//! common method, an origin-form target of plain characters, at most one framing header of the
//! plainest form, no `Expect` and no `Upgrade`. Everything else (HTTP/1.0, HTTP/2's preface,
//! upgrades and WebSockets, `Expect: 100-continue`, `Content-Length` lists, a `Transfer-Encoding`
//! other than `chunked`, both framings at once, a head that does not parse or is too large) is
//! handed over to hyper before any byte is forwarded, and hyper answers it as it does today
//! (`400`, `431`, ...). So the lean path never has to agree with hyper on anything strange: it
//! refuses nothing itself, and what it accepts hyper would have accepted the same way. The
//! `http1_head` check in `fuzz/checks.rs` holds it to that, head by head, against hyper itself.
//!
//! Nothing here allocates: the headers are `httparse`'s views into the bytes, in an array the
//! caller keeps.

/// Most header lines a head may have: hyper's default, above which it answers `431`.
pub const MAX_HEADERS: usize = 100;

/// The header storage [`decide`] parses into, kept by the caller (per connection, or on the
/// stack).
pub type Headers<'b> = [httparse::Header<'b>; MAX_HEADERS];

/// Empty header storage for [`decide`].
pub fn headers<'b>() -> Headers<'b> {
    [httparse::EMPTY_HEADER; MAX_HEADERS]
}

/// How the request's body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No framing header: no body.
    None,
    /// `Content-Length`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// What the lean path does with a request head.
#[derive(Debug)]
pub enum Decision<'h, 'b> {
    /// The head is not complete yet: read more (at most `max_head` bytes in all).
    Partial,
    /// Today's hyper path takes the connection, from its first byte.
    Handover,
    /// The lean path takes the request.
    Accept(Head<'h, 'b>),
}

/// A request head the lean path takes.
#[derive(Debug)]
pub struct Head<'h, 'b> {
    /// Bytes of the head, its empty line included: the body (or the next request) starts here.
    pub len: usize,
    /// The method, one of the common ones.
    pub method: &'b str,
    /// The target in origin form (`/path?query`).
    pub target: &'b str,
    /// How the body is delimited.
    pub framing: Framing,
    /// Whether the connection stays open after the answer (no `Connection: close`).
    pub keep_alive: bool,
    /// Every header line, in the order sent.
    pub headers: &'h [httparse::Header<'b>],
    /// Bit `i` set: `headers[i]` goes on to the upstream (not hop-by-hop, not named by
    /// `Connection`, not an `X-Auth-*` identity header).
    pub forward: u128,
}

impl<'h, 'b> Head<'h, 'b> {
    /// The header lines that go on to the upstream, in the order sent.
    pub fn forwarded(&self) -> impl Iterator<Item = &'h httparse::Header<'b>> + '_ {
        self.headers
            .iter()
            .enumerate()
            .filter(|(i, _)| self.forward & (1u128 << i) != 0)
            .map(|(_, h)| h)
    }
}

/// The common methods; any other goes to hyper.
const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];

/// Hop-by-hop headers (RFC 9110 §7.6.1), as in [`crate::headers`]: never forwarded.
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
];

/// Decides what happens to the request whose head starts `buf`; a head longer than
/// `max_head` bytes goes to hyper (which answers `431`).
pub fn decide<'h, 'b>(
    buf: &'b [u8],
    headers: &'h mut Headers<'b>,
    max_head: usize,
) -> Decision<'h, 'b> {
    let mut req = httparse::Request::new(headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len <= max_head => len,
        Ok(httparse::Status::Partial) if buf.len() < max_head => return Decision::Partial,
        _ => return Decision::Handover,
    };
    let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else {
        return Decision::Handover;
    };
    if !METHODS.contains(&method) || !plain_target(target) {
        return Decision::Handover;
    }
    let headers: &'h [httparse::Header<'b>] = req.headers;
    let mut framing = Framing::None;
    let mut keep_alive = true;
    for h in headers {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            match (framing, digits(h.value)) {
                (Framing::None, Some(n)) => framing = Framing::Length(n),
                _ => return Decision::Handover,
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            match framing {
                Framing::None if h.value.eq_ignore_ascii_case(b"chunked") => {
                    framing = Framing::Chunked
                }
                _ => return Decision::Handover,
            }
        } else if name.eq_ignore_ascii_case("connection") {
            if tokens(h.value).any(|t| t.eq_ignore_ascii_case("close")) {
                keep_alive = false;
            }
        } else if name.eq_ignore_ascii_case("expect") || name.eq_ignore_ascii_case("upgrade") {
            return Decision::Handover;
        }
    }
    let mut forward = 0u128;
    for (i, h) in headers.iter().enumerate() {
        if !dropped(h.name, headers) {
            forward |= 1u128 << i;
        }
    }
    Decision::Accept(Head {
        len,
        method,
        target,
        framing,
        keep_alive,
        headers,
        forward,
    })
}

/// An origin-form target of RFC 3986's path and query characters only (no fragment, no
/// spaces, nothing a URI parser might read differently).
fn plain_target(target: &str) -> bool {
    target.starts_with('/')
        && target
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b))
}

/// A `Content-Length` of digits only, short enough never to overflow.
fn digits(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(value.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')))
}

/// The comma-separated tokens of a header value that is visible ASCII (as
/// `HeaderValue::to_str` requires); none for any other.
fn tokens(value: &[u8]) -> impl Iterator<Item = &str> {
    let text = value
        .iter()
        .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
        .then(|| std::str::from_utf8(value).ok())
        .flatten()
        .unwrap_or("");
    text.split(',').map(str::trim).filter(|t| !t.is_empty())
}

/// Whether a header named `name` stays behind: hop-by-hop, named by a `Connection` line, or an
/// identity header (`X-Auth-*`, the gateway's alone).
fn dropped(name: &str, headers: &[httparse::Header<'_>]) -> bool {
    let lower_prefix = name.len() >= 7 && name[..7].eq_ignore_ascii_case("x-auth-");
    lower_prefix
        || HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
        || headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("connection"))
            .flat_map(|h| tokens(h.value))
            .any(|t| t.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn accept(buf: &[u8]) -> (usize, Framing, bool, Vec<String>) {
        let mut h = headers();
        match decide(buf, &mut h, 16 * 1024) {
            Decision::Accept(head) => (
                head.len,
                head.framing,
                head.keep_alive,
                head.forwarded().map(|h| h.name.to_owned()).collect(),
            ),
            other => panic!("{other:?} for {:?}", String::from_utf8_lossy(buf)),
        }
    }

    fn decision(buf: &[u8]) -> &'static str {
        let mut h = headers();
        match decide(buf, &mut h, 64) {
            Decision::Partial => "partial",
            Decision::Handover => "handover",
            Decision::Accept(_) => "accept",
        }
    }

    #[test]
    fn plain_requests_are_taken_with_their_framing() {
        let get = b"GET /api/x?a=1 HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(
            accept(get),
            (get.len(), Framing::None, true, vec!["Host".into()])
        );
        let post = b"POST /a HTTP/1.1\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";
        let (len, framing, keep_alive, forwarded) = accept(post);
        assert_eq!(
            (len, framing, keep_alive),
            (post.len() - 5, Framing::Length(5), false)
        );
        assert_eq!(forwarded, vec!["Content-Length"]);
        let chunked = b"PUT /a HTTP/1.1\r\ntransfer-encoding: Chunked\r\n\r\n0\r\n\r\n";
        assert_eq!(accept(chunked).1, Framing::Chunked);
    }

    #[test]
    fn identity_hop_by_hop_and_connection_named_headers_stay_behind() {
        let buf = b"GET / HTTP/1.1\r\nX-Auth-Subject: root\r\nx-AUTH-roles: admin\r\nKeep-Alive: 5\r\n\
                    Connection: keep-alive, X-Secret\r\nx-secret: 1\r\nTE: trailers\r\nAccept: */*\r\n\r\n";
        assert_eq!(accept(buf).3, vec!["Accept"]);
    }

    #[test]
    fn anything_unusual_goes_to_hyper() {
        for buf in [
            &b"GET / HTTP/1.0\r\n\r\n"[..],
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"CONNECT x:443 HTTP/1.1\r\n\r\n",
            b"GET http://x/ HTTP/1.1\r\n\r\n",
            b"GET /a#b HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
            b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 1,1\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nX-Folded: a\r\n b\r\n\r\n",
            b"GET / HTTP/1.1\r\nX-Big: 0123456789012345678901234567890123456789\r\n\r\n",
            b"GET / HTTP/1.1\r\nX-Big: 012345678901234567890123456789012345678901234567890",
        ] {
            assert_eq!(
                decision(buf),
                "handover",
                "{:?}",
                String::from_utf8_lossy(buf)
            );
        }
        assert_eq!(decision(b"GET / HTTP/1.1\r\nHost"), "partial");
    }
}
