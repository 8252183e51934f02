use std::time::Duration;

use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use http::header;

fn head(text: &str, head_only: bool) -> io::Result<Option<(Response<()>, Framing, bool)>> {
    let mut buf = BytesMut::from(text.as_bytes());
    parse_head(&mut buf, head_only)
}

fn framed(text: &str) -> (Framing, bool) {
    let (_, framing, keep_alive) = head(text, false).unwrap().unwrap();
    (framing, keep_alive)
}

#[test]
fn response_heads_give_status_headers_framing_and_keep_alive() {
    let mut buf = BytesMut::from(
        &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: one\r\nx-a: two\r\n\r\nhello"[..],
    );
    let (response, framing, keep_alive) = parse_head(&mut buf, false).unwrap().unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), Version::HTTP_11);
    let a: Vec<_> = response.headers().get_all("x-a").iter().collect();
    assert_eq!(a, ["one", "two"]);
    assert_eq!((framing, keep_alive), (Framing::Length(5), true));
    assert_eq!(&buf[..], b"hello", "the body stays in the buffer");

    assert_eq!(
        framed("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
        (Framing::Chunked(Chunk::Size), true)
    );
    // Not chunked last: the body ends with the connection.
    assert_eq!(
        framed("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"),
        (Framing::Close, false)
    );
    assert_eq!(framed("HTTP/1.1 200 OK\r\n\r\n"), (Framing::Close, false));
    assert_eq!(
        framed("HTTP/1.1 204 No Content\r\n\r\n"),
        (Framing::Empty, true)
    );
    assert_eq!(
        framed("HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n"),
        (Framing::Empty, true)
    );
    assert_eq!(
        framed("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
        (Framing::Empty, true)
    );
    // A list of equal lengths is one length.
    assert_eq!(
        framed("HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\nContent-Length: 3\r\n\r\n"),
        (Framing::Length(3), true)
    );
    // The connection closes after this one.
    assert_eq!(
        framed("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive, close\r\n\r\n"),
        (Framing::Length(1), false)
    );
    assert_eq!(
        framed("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n"),
        (Framing::Length(1), false)
    );
    // Lines about this connection alone stay out of the map; a `Connection` that names
    // another header stays, for the response phase to remove both.
    let (response, _, _) = head(
        "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nTransfer-Encoding: chunked\r\nServer: s\r\n\r\n",
        false,
    )
    .unwrap()
    .unwrap();
    let names: Vec<_> = response.headers().keys().map(|k| k.as_str()).collect();
    assert_eq!(names, ["server"]);
    let (response, _, _) = head(
        "HTTP/1.1 200 OK\r\nConnection: keep-alive, x-hop\r\nX-Hop: 1\r\nContent-Length: 0\r\n\r\n",
        false,
    )
    .unwrap()
    .unwrap();
    assert_eq!(response.headers()["connection"], "keep-alive, x-hop");
    // A HEAD's answer has no body, whatever its length says.
    let (_, framing, _) = head("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", true)
        .unwrap()
        .unwrap();
    assert_eq!(framing, Framing::Empty);
}

#[test]
fn interim_answers_are_skipped_and_bad_heads_refused() {
    let (response, framing, _) = head(
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
        false,
    )
    .unwrap()
    .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(framing, Framing::Empty);
    assert!(response.headers().get("link").is_none());

    assert!(
        head("HTTP/1.1 200 OK\r\nContent-Le", false)
            .unwrap()
            .is_none()
    );
    for bad in [
        "HTTP/1.1 101 Switching Protocols\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: +3\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        "HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
        "NOT HTTP\r\n\r\n",
    ] {
        assert!(head(bad, false).is_err(), "{bad:?}");
    }
    let huge = format!("HTTP/1.1 200 OK\r\nX: {}", "a".repeat(MAX_HEAD));
    assert!(head(&huge, false).is_err());
}

/// A chunked body fed `piece` bytes at a time: its data, or the error.
fn dechunk(wire: &[u8], piece: usize) -> io::Result<Vec<u8>> {
    let mut buf = BytesMut::new();
    let mut state = Chunk::Size;
    let mut data = Vec::new();
    let mut fed = 0;
    loop {
        match chunk_step(&mut buf, state)? {
            Step::Next(next, bytes) => {
                state = next;
                data.extend(bytes.iter().flatten());
            }
            Step::Done => return Ok(data),
            Step::More => {
                if fed == wire.len() {
                    return Err(invalid("ran out"));
                }
                let end = (fed + piece).min(wire.len());
                buf.extend_from_slice(&wire[fed..end]);
                fed = end;
            }
        }
    }
}

#[test]
fn chunked_bodies_decode_in_any_pieces() {
    let wire = b"5\r\nhello\r\n7;ext=1\r\n, world\r\nA\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n";
    for piece in [1, 2, 3, 7, wire.len()] {
        assert_eq!(
            dechunk(wire, piece).unwrap(),
            b"hello, world0123456789",
            "{piece}"
        );
    }
    assert_eq!(dechunk(b"0\r\n\r\n", 1).unwrap(), b"");
    for bad in [
        &b"x\r\n"[..],
        b"5\r\nhelloXX0\r\n\r\n",
        b"12345678901234567\r\n",
        b"5 junk\r\nhello\r\n0\r\n\r\n",
    ] {
        assert!(
            dechunk(bad, 1).is_err(),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

/// A backend that answers each request it reads with the next of `answers`, then closes.
async fn scripted(
    answers: Vec<&'static [u8]>,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut heads = Vec::new();
        for answer in answers {
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                let mut byte = [0u8; 1];
                if stream.read(&mut byte).await.unwrap() == 0 {
                    return heads;
                }
                head.push(byte[0]);
            }
            heads.push(String::from_utf8(head).unwrap());
            stream.write_all(answer).await.unwrap();
        }
        heads
    });
    (addr, task)
}

fn get(path: &str) -> Request<()> {
    Request::get(path)
        .header(header::HOST, "backend")
        .header("x-request-id", "r1")
        .body(())
        .unwrap()
}

/// A downstream connection's upstream connections, with no hyper sender in them here.
type Home = Pinned<()>;

#[tokio::test]
async fn a_keep_alive_connection_goes_home_after_each_body_and_serves_the_next() {
    let (addr, backend) = scripted(vec![
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\nend",
    ])
    .await;
    let pinned = Home::new(true);
    let home = || Some((pinned.clone(), 7));
    let conn = Conn::new(TcpStream::connect(addr).await.unwrap());

    let response = conn.send(&get("/one?x=1"), home()).await.unwrap();
    assert_eq!(response.headers()["content-length"], "5");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "hello");

    let mut conn = pinned.take_lean(7).expect("back home after its body");
    assert!(conn.reusable());
    let response = conn.send(&get("/two"), home()).await.unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "abcde");

    let conn = pinned.take_lean(7).expect("home again");
    let response = conn.send(&get("/three"), home()).await.unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "end");
    assert!(
        pinned.take_lean(7).is_none(),
        "closed by the upstream: not kept"
    );

    let heads = backend.await.unwrap();
    assert_eq!(
        heads[0],
        "GET /one?x=1 HTTP/1.1\r\nhost: backend\r\nx-request-id: r1\r\n\r\n"
    );
    assert!(heads[1].starts_with("GET /two HTTP/1.1\r\n"));
}

#[tokio::test]
async fn a_body_until_close_and_a_cut_off_body() {
    let (addr, _backend) = scripted(vec![b"HTTP/1.1 200 OK\r\n\r\nall of it"]).await;
    let conn = Conn::new(TcpStream::connect(addr).await.unwrap());
    let response = conn.send(&get("/"), None::<(Home, usize)>).await.unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "all of it");

    let (addr, _backend) =
        scripted(vec![b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"]).await;
    let pinned = Home::new(true);
    let conn = Conn::new(TcpStream::connect(addr).await.unwrap());
    let response = conn
        .send(&get("/"), Some((pinned.clone(), 1)))
        .await
        .unwrap();
    assert!(response.into_body().collect().await.is_err());
    assert!(pinned.take_lean(1).is_none());
}

#[tokio::test]
async fn an_idle_connection_the_upstream_closed_is_not_reused_and_a_close_before_any_answer_says_so()
 {
    // Answers once, then closes while idle.
    let (addr, backend) = scripted(vec![b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"]).await;
    let pinned = Home::new(true);
    let conn = Conn::new(TcpStream::connect(addr).await.unwrap());
    let response = conn
        .send(&get("/"), Some((pinned.clone(), 1)))
        .await
        .unwrap();
    response.into_body().collect().await.unwrap();
    backend.await.unwrap();
    let mut conn = pinned.take_lean(1).unwrap();
    // The close reaches the runtime's readiness once it has looked.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while conn.reusable() {
        assert!(
            std::time::Instant::now() < deadline,
            "the close never showed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Sent anyway: the answer never starts, which is `Closed`, not `Broken`.
    match conn.send(&get("/"), None::<(Home, usize)>).await {
        Err(LeanError::Closed(_)) => {}
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("an answer from a closed connection"),
    }
}
