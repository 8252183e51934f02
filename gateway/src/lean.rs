//! The lean HTTP/1.1 path (issue #28), its upstream half: a downstream HTTP/1 connection's own
//! connections to its upstreams, spoken without hyper's client. A request without a body is
//! written as one head in one write; the response head is parsed in place (`httparse`) and its
//! body relayed by its framing from the same buffer, with no connection task, channel or
//! wake-up between the request and its upstream. Behind `server.http1_fast_path`.
//!
//! What it does not take (a request with a body, an upgrade) goes through hyper as before; what
//! it cannot read (a response head over 64 KiB or of more than 100 lines, a `101`, conflicting
//! `Content-Length`s, a broken chunk) fails the request as a broken upstream would (`502`).

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Largest response head read; hyper's client reads up to about 400 KiB, but no upstream
/// worth proxying sends a head this large.
const MAX_HEAD: usize = 64 * 1024;
/// Most header lines of a response head (hyper's default).
const MAX_HEADERS: usize = 100;
/// Longest chunk-size line (with extensions) or trailer section read.
const MAX_CHUNK_LINE: usize = 4 * 1024;
/// Room made in the buffer before each read (hyper's first read buffer is as large).
const READ_SIZE: usize = 8 * 1024;

/// One connection to one upstream, with what was read from it and not used yet.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    buf: BytesMut,
}

/// Upstream connections of one downstream HTTP/1 connection. Requests on it come one at a time,
/// so each upstream needs at most one connection, reused without the shared pool's locking and
/// bookkeeping; they close with the downstream connection. Lean [`Conn`]s for requests without
/// a body (`server.http1_fast_path`), and `S`, hyper's sender, for the others. Cloned, it is the
/// same set (a lean response body takes it along, to put its connection back once read whole).
pub struct Pinned<S>(Arc<PinnedConns<S>>);

struct PinnedConns<S> {
    fast: bool,
    hyper: Mutex<Vec<(usize, S)>>,
    lean: Mutex<Vec<(usize, Conn)>>,
}

impl<S> Pinned<S> {
    /// With `fast` (`server.http1_fast_path`), requests without a body take the lean path.
    pub fn new(fast: bool) -> Self {
        Pinned(Arc::new(PinnedConns {
            fast,
            hyper: Mutex::new(Vec::new()),
            lean: Mutex::new(Vec::new()),
        }))
    }

    /// Whether requests without a body take the lean path.
    pub fn fast(&self) -> bool {
        self.0.fast
    }

    pub(crate) fn take(&self, upstream: usize) -> Option<S> {
        take(&self.0.hyper, upstream)
    }

    pub(crate) fn put(&self, upstream: usize, sender: S) {
        put(&self.0.hyper, upstream, sender);
    }

    pub(crate) fn take_lean(&self, upstream: usize) -> Option<Conn> {
        take(&self.0.lean, upstream)
    }

    pub(crate) fn put_lean(&self, upstream: usize, conn: Conn) {
        put(&self.0.lean, upstream, conn);
    }
}

impl<S> Clone for Pinned<S> {
    fn clone(&self) -> Self {
        Pinned(self.0.clone())
    }
}

impl<S> Default for Pinned<S> {
    fn default() -> Self {
        Pinned::new(false)
    }
}

impl<S> std::fmt::Debug for Pinned<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pinned")
            .field("fast", &self.0.fast)
            .finish()
    }
}

fn take<T>(list: &Mutex<Vec<(usize, T)>>, upstream: usize) -> Option<T> {
    let mut list = list.lock().unwrap_or_else(PoisonError::into_inner);
    let at = list.iter().position(|(id, _)| *id == upstream)?;
    Some(list.swap_remove(at).1)
}

fn put<T>(list: &Mutex<Vec<(usize, T)>>, upstream: usize, conn: T) {
    let mut list = list.lock().unwrap_or_else(PoisonError::into_inner);
    if !list.iter().any(|(id, _)| *id == upstream) {
        list.push((upstream, conn));
    }
}

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub enum LeanError {
    /// The connection ended or broke before a byte of the response came: on a connection
    /// used before, the upstream may have closed it while idle, and the request can go again
    /// on a new one.
    #[error("upstream connection closed before the response: {0}")]
    Closed(#[source] io::Error),
    /// The response (or the request's writing) failed otherwise.
    #[error("upstream response: {0}")]
    Broken(#[source] io::Error),
}

fn invalid(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

impl Conn {
    /// A new connection (the caller sets it up: `Sender::dial` turns off Nagle's delay).
    pub fn new(stream: TcpStream) -> Self {
        Conn {
            stream,
            buf: BytesMut::new(),
        }
    }

    /// Whether it can take another request: nothing was left unread, and the upstream has not
    /// closed it meanwhile (readiness tokio already holds: no system call while nothing came).
    pub fn reusable(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut probe = [0u8; 1];
        matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Sends `req` (which has no body: the caller checks) and reads the response head; the
    /// body comes from the returned response, which gives the connection back to `home`
    /// once read whole, when the upstream keeps it open.
    pub async fn send<B, S>(
        mut self,
        req: &Request<B>,
        home: Option<(Pinned<S>, usize)>,
    ) -> Result<Response<LeanBody<S>>, LeanError> {
        let head = encode_head(req);
        self.stream
            .write_all(&head)
            .await
            .map_err(LeanError::Closed)?;
        let head_only = req.method() == Method::HEAD;
        let mut read_any = false;
        loop {
            if !self.buf.is_empty() {
                read_any = true;
                if let Some((response, framing, keep_alive)) =
                    parse_head(&mut self.buf, head_only).map_err(LeanError::Broken)?
                {
                    let body = LeanBody::new(self, framing, keep_alive.then_some(home).flatten());
                    return Ok(response.map(|()| body));
                }
            }
            self.buf.reserve(READ_SIZE);
            match tokio::io::AsyncReadExt::read_buf(&mut self.stream, &mut self.buf).await {
                Ok(0) if read_any => return Err(LeanError::Broken(invalid("response cut off"))),
                Ok(0) => {
                    return Err(LeanError::Closed(io::ErrorKind::UnexpectedEof.into()));
                }
                Ok(_) => {}
                Err(e) if read_any => return Err(LeanError::Broken(e)),
                Err(e) => return Err(LeanError::Closed(e)),
            }
        }
    }
}

/// The request head as the upstream gets it: origin-form target, HTTP/1.1, the headers as
/// they are (the caller has set `Host` and removed the hop-by-hop ones).
fn encode_head<B>(req: &Request<B>) -> Vec<u8> {
    let target = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .as_bytes();
    let size = req.method().as_str().len()
        + target.len()
        + 13
        + req
            .headers()
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 4)
            .sum::<usize>()
        + 2;
    let mut head = Vec::with_capacity(size);
    head.extend_from_slice(req.method().as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(target);
    head.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in req.headers() {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// How a response body is delimited (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body (`HEAD`, `204`, `304`).
    Empty,
    /// `Content-Length`: this many bytes left.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked(Chunk),
    /// Until the upstream closes the connection.
    Close,
}

/// Where a chunked body's reading stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chunk {
    /// A chunk-size line is next.
    Size,
    /// This many bytes of chunk data are left, then its CRLF.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// The trailer section after the last chunk.
    Trailers,
}

/// A response head from the front of `buf` (taken from it), with its body's framing and whether
/// the connection stays open after it; `None` while it is incomplete. Interim (`1xx`) answers
/// are skipped; `101` is an error here (upgrades never come this way).
fn parse_head(
    buf: &mut BytesMut,
    head_only: bool,
) -> io::Result<Option<(Response<()>, Framing, bool)>> {
    loop {
        // Uninitialised: nothing spent on the lines a head does not have.
        let mut lines = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut []);
        let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut parsed,
            buf,
            &mut lines,
        ) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
                return Err(invalid("response head too large"));
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(invalid("response head does not parse")),
        };
        let code = parsed.code.unwrap_or(0);
        if code == 101 {
            return Err(invalid("101 on a connection that asked for no upgrade"));
        }
        if (100..200).contains(&code) {
            buf.advance(len);
            continue;
        }
        let status = StatusCode::from_u16(code).map_err(|_| invalid("bad status"))?;
        let version = if parsed.version == Some(1) {
            Version::HTTP_11
        } else {
            Version::HTTP_10
        };
        let lines = &*parsed.headers;
        let (framing, delimited) = framing(lines, status, head_only)?;
        let keep_alive = version == Version::HTTP_11 && delimited && !closes(lines);
        // Offsets, so that values can share the head's bytes once it is frozen. Lines that
        // only describe this connection (`Transfer-Encoding`, `Keep-Alive`, a `Connection`
        // naming no other header) are read above and never enter the map: the response
        // phase would remove them at once.
        let base = buf.as_ptr() as usize;
        let spans: Vec<(HeaderName, usize, usize)> = lines
            .iter()
            .filter(|h| !connection_only(h))
            .map(|h| {
                let name = HeaderName::from_bytes(h.name.as_bytes())
                    .map_err(|_| invalid("bad header name"))?;
                let start = h.value.as_ptr() as usize - base;
                Ok((name, start, start + h.value.len()))
            })
            .collect::<io::Result<_>>()?;
        let head = buf.split_to(len).freeze();
        let mut headers = HeaderMap::with_capacity(spans.len());
        for (name, start, end) in spans {
            let value = HeaderValue::from_maybe_shared(head.slice(start..end))
                .map_err(|_| invalid("bad header value"))?;
            headers.append(name, value);
        }
        let mut response = Response::new(());
        *response.status_mut() = status;
        *response.version_mut() = version;
        *response.headers_mut() = headers;
        return Ok(Some((response, framing, keep_alive)));
    }
}

/// The values of the header lines named `name`, as text (a value that is not is refused
/// where it matters: `Content-Length`).
fn values<'a>(
    lines: &'a [httparse::Header<'a>],
    name: &'static str,
) -> impl Iterator<Item = &'a [u8]> {
    lines
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

/// Comma-separated tokens of a header value, trimmed, empty ones left out.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// Whether a line says nothing but how this connection goes.
fn connection_only(h: &httparse::Header<'_>) -> bool {
    h.name.eq_ignore_ascii_case("transfer-encoding")
        || h.name.eq_ignore_ascii_case("keep-alive")
        || (h.name.eq_ignore_ascii_case("connection")
            && tokens(h.value)
                .all(|t| t.eq_ignore_ascii_case(b"keep-alive") || t.eq_ignore_ascii_case(b"close")))
}

/// The body's framing, and whether its end is known without the connection closing.
fn framing(
    lines: &[httparse::Header<'_>],
    status: StatusCode,
    head_only: bool,
) -> io::Result<(Framing, bool)> {
    if head_only || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok((Framing::Empty, true));
    }
    let mut codings = values(lines, "transfer-encoding").peekable();
    if codings.peek().is_some() {
        return Ok(match codings.flat_map(tokens).last() {
            Some(c) if c.eq_ignore_ascii_case(b"chunked") => (Framing::Chunked(Chunk::Size), true),
            _ => (Framing::Close, false),
        });
    }
    let mut length = None;
    for part in values(lines, "content-length").flat_map(|v| v.split(|&b| b == b',')) {
        let part = part.trim_ascii();
        if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
            return Err(invalid("bad content-length"));
        }
        let n = part.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        if length.is_some_and(|l| l != n) {
            return Err(invalid("conflicting content-length"));
        }
        length = Some(n);
    }
    Ok(match length {
        Some(0) => (Framing::Empty, true),
        Some(n) => (Framing::Length(n), true),
        None => (Framing::Close, false),
    })
}

/// Whether `Connection` says `close`.
fn closes(lines: &[httparse::Header<'_>]) -> bool {
    values(lines, "connection")
        .flat_map(tokens)
        .any(|t| t.eq_ignore_ascii_case(b"close"))
}

/// A response body read from its connection by its framing; the connection goes back to the
/// downstream connection's [`Pinned`] when the body was read whole and the upstream keeps it.
#[derive(Debug)]
pub struct LeanBody<S> {
    conn: Option<Conn>,
    framing: Framing,
    home: Option<(Pinned<S>, usize)>,
}

impl<S> LeanBody<S> {
    fn new(conn: Conn, framing: Framing, home: Option<(Pinned<S>, usize)>) -> Self {
        let mut body = LeanBody {
            conn: Some(conn),
            framing,
            home,
        };
        if framing == Framing::Empty {
            body.finish();
        }
        body
    }

    /// Read whole: the connection goes home if it may.
    fn finish(&mut self) {
        self.framing = Framing::Empty;
        if let (Some(conn), Some((pinned, upstream))) = (self.conn.take(), self.home.take())
            && conn.buf.is_empty()
        {
            pinned.put_lean(upstream, conn);
        }
    }

    /// Reads more into the buffer; `Ok(0)` at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(Ok(0));
        };
        conn.buf.reserve(READ_SIZE);
        tokio_util::io::poll_read_buf(Pin::new(&mut conn.stream), cx, &mut conn.buf)
    }

    fn buf(&mut self) -> &mut BytesMut {
        match self.conn.as_mut() {
            Some(conn) => &mut conn.buf,
            None => unreachable!("a body being read has its connection"),
        }
    }

    /// The next piece of the body, `None` at its end.
    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Bytes>>> {
        loop {
            match self.framing {
                Framing::Empty => return Poll::Ready(Ok(None)),
                Framing::Length(left) => {
                    if self.buf().is_empty() && ready!(self.poll_fill(cx))? == 0 {
                        return Poll::Ready(Err(invalid("response body cut off")));
                    }
                    let take = (self.buf().len() as u64).min(left) as usize;
                    let data = self.buf().split_to(take).freeze();
                    if left == take as u64 {
                        self.finish();
                    } else {
                        self.framing = Framing::Length(left - take as u64);
                    }
                    return Poll::Ready(Ok(Some(data)));
                }
                Framing::Close => {
                    if self.buf().is_empty() && ready!(self.poll_fill(cx))? == 0 {
                        self.framing = Framing::Empty;
                        self.conn = None;
                        return Poll::Ready(Ok(None));
                    }
                    let data = self.buf().split().freeze();
                    return Poll::Ready(Ok(Some(data)));
                }
                Framing::Chunked(chunk) => match chunk_step(self.buf(), chunk)? {
                    Step::Next(next, data) => {
                        self.framing = Framing::Chunked(next);
                        if let Some(data) = data {
                            return Poll::Ready(Ok(Some(data)));
                        }
                    }
                    Step::Done => {
                        self.finish();
                        return Poll::Ready(Ok(None));
                    }
                    Step::More => {
                        if ready!(self.poll_fill(cx))? == 0 {
                            return Poll::Ready(Err(invalid("chunked body cut off")));
                        }
                    }
                },
            }
        }
    }
}

/// What reading a chunked body from the buffer gave.
enum Step {
    /// On to this state, with data when some came.
    Next(Chunk, Option<Bytes>),
    /// The buffer holds too little: read more.
    More,
    /// The body ended (last chunk and trailers read).
    Done,
}

/// One step of a chunked body from `buf` (RFC 9112 §7.1); extensions and trailers are read and
/// dropped.
fn chunk_step(buf: &mut BytesMut, state: Chunk) -> io::Result<Step> {
    match state {
        Chunk::Size => {
            let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
                if buf.len() > MAX_CHUNK_LINE {
                    return Err(invalid("chunk size line too long"));
                }
                return Ok(Step::More);
            };
            let line = &buf[..end];
            let digits = line
                .iter()
                .position(|b| !b.is_ascii_hexdigit())
                .unwrap_or(line.len());
            // Whitespace may come before an extension (`BWS ";"`), nothing else.
            let rest = line[digits..].trim_ascii_start();
            if digits == 0 || digits > 16 || !(rest.is_empty() || rest[0] == b';') {
                return Err(invalid("bad chunk size"));
            }
            let hex =
                std::str::from_utf8(&line[..digits]).map_err(|_| invalid("bad chunk size"))?;
            let size = u64::from_str_radix(hex, 16).map_err(|_| invalid("bad chunk size"))?;
            buf.advance(end + 2);
            Ok(Step::Next(
                if size == 0 {
                    Chunk::Trailers
                } else {
                    Chunk::Data(size)
                },
                None,
            ))
        }
        Chunk::Data(left) => {
            if buf.is_empty() {
                return Ok(Step::More);
            }
            let take = (buf.len() as u64).min(left) as usize;
            let data = buf.split_to(take).freeze();
            let next = if left == take as u64 {
                Chunk::DataEnd
            } else {
                Chunk::Data(left - take as u64)
            };
            Ok(Step::Next(next, Some(data)))
        }
        Chunk::DataEnd => {
            if buf.len() < 2 {
                return Ok(Step::More);
            }
            if &buf[..2] != b"\r\n" {
                return Err(invalid("chunk data not followed by CRLF"));
            }
            buf.advance(2);
            Ok(Step::Next(Chunk::Size, None))
        }
        Chunk::Trailers => {
            if buf.starts_with(b"\r\n") {
                buf.advance(2);
                return Ok(Step::Done);
            }
            match buf.windows(4).position(|w| w == b"\r\n\r\n") {
                Some(end) => {
                    buf.advance(end + 4);
                    Ok(Step::Done)
                }
                None if buf.len() > MAX_CHUNK_LINE => Err(invalid("trailers too long")),
                None => Ok(Step::More),
            }
        }
    }
}

impl<S> HttpBody for LeanBody<S> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match ready!(this.poll_data(cx)) {
            Ok(Some(data)) => Poll::Ready(Some(Ok(Frame::data(data)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => {
                // A broken body leaves the connection in no state to reuse.
                this.conn = None;
                this.framing = Framing::Empty;
                Poll::Ready(Some(Err(e.into())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.framing == Framing::Empty
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Empty => SizeHint::with_exact(0),
            Framing::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
