//! Attacks and bad input against real processes: forged identity, tampered value tokens,
//! malformed reference tokens, request smuggling, header and body abuse, connection hoarding,
//! admin-token guessing. Each test ends by checking that no secret reached any log (every
//! process runs with `RUST_LOG=debug`) and that the processes still answer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use support::stack::{Options, Stack, try_get};
use support::{ADMIN_TOKEN, send};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Writes `request` on a new connection and returns everything read until the server closes it
/// (or 5 s pass).
async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of the first response in `reply`.
fn status(reply: &str) -> u16 {
    reply
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP response: {reply:?}"))
}

async fn still_up(stack: &Stack) {
    assert_eq!(try_get(&stack.idp.admin_url("/healthz")).await, Some(200));
    for gw in &stack.gateways {
        assert_eq!(try_get(&gw.admin_url("/readyz")).await, Some(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_identity_headers_never_reach_a_backend() {
    let stack = Stack::start(Options {
        gateways: 1,
        ..Options::default()
    })
    .await;
    let token = stack.login("alice").await;
    let spoofed = concat!(
        "X-Auth-Subject: root\r\n",
        "x-auth-subject: root2\r\n",
        "X-AUTH-ROLES: admin\r\n",
        "X-Auth-Session: forged\r\n",
        "x-AuTh-Anything: yes\r\n",
    );
    for (path, auth) in [
        ("/public/spoof", String::new()),
        ("/api/spoof", format!("Authorization: Bearer {token}\r\n")),
    ] {
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}{spoofed}Connection: close\r\n\r\n");
        let reply = raw(stack.gateways[0].public, request.as_bytes()).await;
        assert_eq!(status(&reply), 200, "{reply}");
        let body: serde_json::Value =
            serde_json::from_str(reply.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        let headers = body["headers"].as_object().unwrap();
        let identity: Vec<(&String, &serde_json::Value)> = headers
            .iter()
            .filter(|(k, _)| k.starts_with("x-auth-"))
            .collect();
        if path.starts_with("/public/") {
            assert!(identity.is_empty(), "{identity:?}");
        } else {
            // Only what the gateway set, each once.
            assert_eq!(headers["x-auth-subject"], "alice");
            assert_eq!(headers["x-auth-roles"], "orders:read");
            assert_eq!(headers["x-auth-session"], Stack::session_id(&token));
            assert_eq!(identity.len(), 3, "{identity:?}");
            stack.secret(
                headers["authorization"]
                    .as_str()
                    .unwrap()
                    .trim_start_matches("Bearer "),
            );
        }
    }
    still_up(&stack).await;
    stack.assert_logs_clean();
}

/// A JWT signed by `key` (or unsigned for `alg: none`).
fn jwt(
    header: serde_json::Value,
    claims: &serde_json::Value,
    sign: impl Fn(&[u8]) -> Vec<u8>,
) -> String {
    let head = URL_SAFE_NO_PAD.encode(header.to_string());
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    let input = format!("{head}.{body}");
    let signature = URL_SAFE_NO_PAD.encode(sign(input.as_bytes()));
    format!("{input}.{signature}")
}

fn ed25519_signer(pem: &str) -> impl Fn(&[u8]) -> Vec<u8> {
    let key = jsonwebtoken::EncodingKey::from_ed_pem(pem.as_bytes()).unwrap();
    move |input: &[u8]| {
        let token =
            jsonwebtoken::crypto::sign(input, &key, jsonwebtoken::Algorithm::EdDSA).unwrap();
        URL_SAFE_NO_PAD.decode(token).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn value_tokens_tampered_in_redis_are_refused() {
    let stack = Stack::start(Options {
        gateways: 1,
        ..Options::default()
    })
    .await;
    let jwks = send(
        "GET",
        &stack.idp.url("/.well-known/jwks.json"),
        &[],
        String::new(),
    )
    .await;
    let jwk = jwks.json()["keys"][0].clone();
    let kid = jwk["kid"].as_str().unwrap().to_owned();
    let public_key = URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap();
    let other_pem = {
        let file = std::env::temp_dir().join(format!("tokengate-other-{}.pem", std::process::id()));
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tokengate"))
            .args(["gen-key", "--out"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(out.status.success());
        let pem = std::fs::read_to_string(&file).unwrap();
        let _ = std::fs::remove_file(&file);
        pem
    };
    let real = ed25519_signer(&stack.signing_key_pem);
    let other = ed25519_signer(&other_pem);
    let hs256_with_public_key = |input: &[u8]| {
        let key = jsonwebtoken::EncodingKey::from_secret(&public_key);
        let token =
            jsonwebtoken::crypto::sign(input, &key, jsonwebtoken::Algorithm::HS256).unwrap();
        URL_SAFE_NO_PAD.decode(token).unwrap()
    };
    let now = tokengate_store::now_unix();
    // The IdP's issuer: its public URL (the default, from its listener).
    let issuer = stack.idp.url("");
    let claims = |sid: &str, iss: &str, exp: u64| {
        serde_json::json!({
            "iss": iss, "sub": "alice", "sid": sid, "roles": ["admin"], "iat": now, "exp": exp,
        })
    };
    let header = |alg: &str, kid: &str| serde_json::json!({ "alg": alg, "typ": "JWT", "kid": kid });

    type Forge<'a> = Box<dyn Fn(&str) -> String + 'a>;
    let cases: Vec<(&str, Forge)> = vec![
        (
            "re-signed with another key under the real kid",
            Box::new(|sid: &str| {
                jwt(
                    header("EdDSA", &kid),
                    &claims(sid, &issuer, now + 600),
                    &other,
                )
            }),
        ),
        (
            "signed with another key under its own kid",
            Box::new(|sid: &str| {
                jwt(
                    header("EdDSA", "attacker-key"),
                    &claims(sid, &issuer, now + 600),
                    &other,
                )
            }),
        ),
        (
            "alg none",
            Box::new(|sid: &str| {
                jwt(
                    header("none", &kid),
                    &claims(sid, &issuer, now + 600),
                    |_| Vec::new(),
                )
            }),
        ),
        (
            "HS256 with the public key as the secret",
            Box::new(|sid: &str| {
                jwt(
                    header("HS256", &kid),
                    &claims(sid, &issuer, now + 600),
                    hs256_with_public_key,
                )
            }),
        ),
        (
            "expired longer ago than its session can idle",
            Box::new(|sid: &str| {
                jwt(
                    header("EdDSA", &kid),
                    &claims(sid, &issuer, now - 3600),
                    &real,
                )
            }),
        ),
        (
            "wrong iss",
            Box::new(|sid: &str| {
                jwt(
                    header("EdDSA", &kid),
                    &claims(sid, "evil", now + 600),
                    &real,
                )
            }),
        ),
        (
            "genuine but for another session",
            Box::new(|_: &str| {
                jwt(
                    header("EdDSA", &kid),
                    &claims("AAAAAAAAAAAAAAAAAAAAAA", &issuer, now + 600),
                    &real,
                )
            }),
        ),
    ];
    let plant = |token: &str, jwt: &str| {
        stack.secret(jwt);
        let key = format!("tg:s:{{{}}}", Stack::session_id(token));
        stack
            .redis
            .query(&["HSET", &key, "vt", jwt, "roles", "[\"admin\"]"])
            .unwrap();
    };
    for (name, forge) in &cases {
        let token = stack.login("alice").await;
        plant(&token, &forge(&Stack::session_id(&token)));
        let r = stack.get(0, "/admin-only/x", Some(&token)).await;
        assert_eq!(r.status, 401, "{name}: {}", r.body);
    }
    // A genuine token that expired recently is not forwarded either; the gateway cannot tell
    // it from one the IdP has not renewed yet (the IdP down), so it answers "cannot validate
    // now" and the client keeps its reference token.
    let token = stack.login("alice").await;
    let sid = Stack::session_id(&token);
    plant(
        &token,
        &jwt(
            header("EdDSA", &kid),
            &claims(&sid, &issuer, now - 10),
            &real,
        ),
    );
    let r = stack.get(0, "/admin-only/x", Some(&token)).await;
    assert_eq!(r.status, 503, "recently expired: {}", r.body);
    assert!(
        !stack.backend.saw("/admin-only/"),
        "a forged token was forwarded"
    );
    // The same forging with the IdP's own key and honest claims does get through: the cases
    // above fail for what they changed, not for how the test builds tokens.
    let token = stack.login("alice").await;
    plant(
        &token,
        &jwt(
            header("EdDSA", &kid),
            &claims(&Stack::session_id(&token), &issuer, now + 600),
            &real,
        ),
    );
    assert_eq!(
        stack.get(0, "/admin-only/x", Some(&token)).await.status,
        200
    );
    still_up(&stack).await;
    stack.assert_logs_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_reference_tokens_get_401_and_break_nothing() {
    let stack = Stack::start(Options {
        gateways: 1,
        ..Options::default()
    })
    .await;
    let token = stack.login("alice").await;
    let gw = stack.gateways[0].public;
    let huge = "A".repeat(8000);
    let mut cases: Vec<(String, Vec<u8>)> = vec![
        ("none".into(), Vec::new()),
        ("scheme only".into(), b"Authorization: Bearer\r\n".to_vec()),
        ("empty".into(), b"Authorization: Bearer \r\n".to_vec()),
        (
            "huge".into(),
            format!("Authorization: Bearer {huge}\r\n").into_bytes(),
        ),
        (
            "one character short".into(),
            format!("Authorization: Bearer {}\r\n", &token[1..]).into_bytes(),
        ),
        (
            "one character long".into(),
            format!("Authorization: Bearer {token}A\r\n").into_bytes(),
        ),
        (
            "Basic".into(),
            b"Authorization: Basic YWxpY2U6d29uZGVybGFuZA==\r\n".to_vec(),
        ),
        (
            "two headers".into(),
            format!("Authorization: Bearer {token}\r\nAuthorization: Bearer {token}\r\n")
                .into_bytes(),
        ),
    ];
    let mut non_ascii = b"Authorization: Bearer \xff\xfe\xc3\xa9".to_vec();
    non_ascii.extend_from_slice(&token.as_bytes()[4..]);
    non_ascii.extend_from_slice(b"\r\n");
    cases.push(("non-ASCII".into(), non_ascii));
    for (name, header) in &cases {
        let mut request = b"GET /api/bad HTTP/1.1\r\nHost: x\r\n".to_vec();
        request.extend_from_slice(header);
        request.extend_from_slice(b"Connection: close\r\n\r\n");
        let reply = raw(gw, &request).await;
        assert_eq!(status(&reply), 401, "{name}: {reply}");
        assert!(
            reply
                .to_ascii_lowercase()
                .contains("www-authenticate: bearer"),
            "{name}: {reply}"
        );
    }
    // A token in the query string is not a credential.
    let reply = raw(
        gw,
        format!(
            "GET /api/bad?access_token={token} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(status(&reply), 401, "{reply}");
    assert!(!stack.backend.saw("/api/bad"), "a bad token was forwarded");
    // The scheme is case-insensitive (RFC 9110 §11.1): the real token still works.
    let reply = raw(
        gw,
        format!("GET /api/good HTTP/1.1\r\nHost: x\r\nAuthorization: bearer {token}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert_eq!(status(&reply), 200, "{reply}");
    still_up(&stack).await;
    stack.assert_logs_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_smuggling_framings_are_refused() {
    let stack = Stack::start(Options {
        gateways: 1,
        ..Options::default()
    })
    .await;
    let gw = stack.gateways[0].public;
    let cases: [(&str, &str); 5] = [
        (
            "Content-Length and Transfer-Encoding",
            "POST /public/a HTTP/1.1\r\nHost: x\r\nContent-Length: 48\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /public/smuggled-1 HTTP/1.1\r\nHost: x\r\n\r\n",
        ),
        (
            "two different Content-Lengths",
            "POST /public/b HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 44\r\n\r\nGET /public/smuggled-2 HTTP/1.1\r\nHost: x\r\n\r\n",
        ),
        (
            "Transfer-Encoding not ending in chunked",
            "POST /public/c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\nGET /public/smuggled-3 HTTP/1.1\r\nHost: x\r\n\r\n",
        ),
        (
            "obfuscated Transfer-Encoding",
            "POST /public/d HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\nGET /public/smuggled-4 HTTP/1.1\r\nHost: x\r\n\r\n",
        ),
        (
            "header folded over two lines",
            "POST /public/e HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nX-Folded: a\r\n b\r\n\r\n",
        ),
    ];
    for (name, request) in cases {
        let reply = raw(gw, request.as_bytes()).await;
        // Both framings: RFC 9112 §6.1 lets a server read the body as chunked if it then
        // closes the connection, so whatever follows is never read as a request.
        let closed_after = status(&reply) == 200
            && name.starts_with("Content-Length and")
            && reply.to_ascii_lowercase().contains("connection: close")
            && reply.matches("HTTP/1.1").count() == 1;
        assert!(status(&reply) == 400 || closed_after, "{name}: {reply}");
    }
    assert!(
        !stack.backend.saw("smuggled"),
        "{:?}",
        stack.backend.paths.lock().unwrap()
    );
    // Honest chunked and sized bodies go through with the length the client meant.
    let chunked = "POST /public/ok HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    let reply = raw(gw, chunked.as_bytes()).await;
    assert_eq!(status(&reply), 200, "{reply}");
    assert!(reply.contains("\"body_bytes\":5"), "{reply}");
    still_up(&stack).await;
    stack.assert_logs_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_segments_cannot_climb_out_of_a_public_route() {
    let stack = Stack::start(Options {
        gateways: 1,
        ..Options::default()
    })
    .await;
    let gw = stack.gateways[0].public;
    // Matched by `/public/`'s prefix, read as `/api/...` by a backend that resolves dot
    // segments: refused before any backend sees it, on every route.
    for path in [
        "/public/../api/climb-1",
        "/public/%2e%2e/api/climb-2",
        "/public/.%2E/api/climb-3",
        "/api/./climb-4",
    ] {
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let reply = raw(gw, request.as_bytes()).await;
        assert_eq!(status(&reply), 400, "{path}: {reply}");
        assert!(reply.contains("invalid_request"), "{path}: {reply}");
    }
    assert!(
        !stack.backend.saw("climb"),
        "{:?}",
        stack.backend.paths.lock().unwrap()
    );
    // Dots inside a segment are a name like any other.
    let reply = raw(
        gw,
        b"GET /public/file.v2..json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status(&reply), 200, "{reply}");
    still_up(&stack).await;
    stack.assert_logs_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_and_bodies_and_slow_heads_are_cut_off() {
    let stack = Stack::start(Options {
        gateways: 1,
        gateway_server: "header_timeout = \"1s\"\nmax_body_bytes = 1024".into(),
        ..Options::default()
    })
    .await;
    let gw = stack.gateways[0].public;
    let big = "a".repeat(20 * 1024);
    let reply = raw(
        gw,
        format!("GET /public/x HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(status(&reply), 431, "{reply}");

    let declared =
        "POST /public/big HTTP/1.1\r\nHost: x\r\nContent-Length: 2048\r\nConnection: close\r\n\r\n";
    assert_eq!(status(&raw(gw, declared.as_bytes()).await), 413);
    let mut chunked = b"POST /public/big HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for _ in 0..3 {
        chunked.extend_from_slice(b"400\r\n");
        chunked.extend_from_slice(&[b'z'; 1024]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    assert_eq!(status(&raw(gw, &chunked).await), 413);
    let fits = format!(
        "POST /public/fits HTTP/1.1\r\nHost: x\r\nContent-Length: 1024\r\nConnection: close\r\n\r\n{}",
        "z".repeat(1024)
    );
    let reply = raw(gw, fits.as_bytes()).await;
    assert_eq!(status(&reply), 200, "{reply}");
    assert!(
        !stack.backend.saw("/public/big#complete"),
        "an oversized body was forwarded whole"
    );

    // A head that never ends: the connection is closed after header_timeout (1 s).
    let mut slow = TcpStream::connect(gw).await.unwrap();
    slow.write_all(b"GET /public/x HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "a slow head kept its connection");
    still_up(&stack).await;
    stack.assert_logs_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_cannot_lock_other_clients_out() {
    // header_timeout is long: what frees the slots is the limit, not the idle timer.
    let stack = Stack::start(Options {
        gateways: 1,
        gateway_server: "max_connections = 16\nheader_timeout = \"60s\"".into(),
        ..Options::default()
    })
    .await;
    let gw = stack.gateways[0].public;
    let mut hoard = Vec::new();
    for _ in 0..40 {
        hoard.push(TcpStream::connect(gw).await.unwrap());
    }
    let token = stack.login("alice").await;
    let r = stack.get(0, "/api/after-hoarding", Some(&token)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // The slots were made by closing hoarded connections that sat idle.
    let mut closed = 0;
    for mut c in hoard {
        let mut buf = [0u8; 64];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(50), c.read(&mut buf)).await {
            closed += 1;
        }
    }
    assert!(closed >= 16, "only {closed} idle connections were closed");
    still_up(&stack).await;
    stack.assert_logs_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_refuses_guesses_and_is_not_on_the_public_port() {
    let stack = Stack::start(Options {
        gateways: 1,
        ..Options::default()
    })
    .await;
    stack.login("alice").await;
    let path = "/admin/users/alice/sessions";
    let right = format!("Bearer {ADMIN_TOKEN}");
    // Not on the IdP's public port, even with the right token.
    for method in ["GET", "DELETE"] {
        let r = send(
            method,
            &stack.idp.url(path),
            &[("authorization", &right)],
            String::new(),
        )
        .await;
        assert_eq!(r.status, 404, "{method} on the public port: {}", r.body);
    }
    // Nor the gateway's admin endpoints on its public port.
    for admin_path in ["/metrics", "/readyz", "/healthz"] {
        assert_eq!(stack.get(0, admin_path, None).await.status, 404);
    }
    let mut near = ADMIN_TOKEN.to_owned();
    near.pop();
    let guesses = [
        String::new(),
        "Bearer ".to_owned(),
        "Bearer wrong".to_owned(),
        format!("Bearer {near}"),
        format!("Bearer {near}x"),
        format!("Bearer {ADMIN_TOKEN}x"),
        format!("Bearer {}", ADMIN_TOKEN.to_uppercase()),
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("admin:{ADMIN_TOKEN}"))
        ),
        format!("Token {ADMIN_TOKEN}"),
    ];
    for guess in &guesses {
        let headers: Vec<(&str, &str)> = if guess.is_empty() {
            vec![]
        } else {
            vec![("authorization", guess.as_str())]
        };
        let r = send("GET", &stack.idp.admin_url(path), &headers, String::new()).await;
        assert_eq!(r.status, 401, "{guess:?}: {}", r.body);
        assert!(r.header("www-authenticate").is_some());
    }
    let r = send(
        "GET",
        &stack.idp.admin_url(path),
        &[("authorization", &right)],
        String::new(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let metrics = send("GET", &stack.idp.admin_url("/metrics"), &[], String::new()).await;
    assert!(
        metrics.body.contains(&format!(
            "tokengate_idp_admin_auth_failures_total {}",
            guesses.len()
        )),
        "{}",
        metrics.body
    );
    still_up(&stack).await;
    stack.assert_logs_clean();
}
