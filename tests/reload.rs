//! Reloading a running gateway's configuration file (`SIGHUP`, `POST /admin/reload`), on real
//! processes: routes change under load without one failed request, a broken file changes
//! nothing, and a new certificate serves new handshakes while open connections keep going.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use support::stack::{Load, Options, Stack, try_get};
use support::{Reply, send};

const RELOAD_TOKEN: &str = "reload-token-0123456789";

async fn stack() -> Stack {
    Stack::start(Options {
        gateways: 1,
        gateway_admin: format!("token = \"{RELOAD_TOKEN}\""),
        ..Options::default()
    })
    .await
}

/// `POST /admin/reload` with the admin token.
async fn reload(stack: &Stack) -> Reply {
    let auth = format!("Bearer {RELOAD_TOKEN}");
    send(
        "POST",
        &stack.gateways[0].admin_url("/admin/reload"),
        &[("authorization", &auth)],
        String::new(),
    )
    .await
}

/// Waits until `url` answers `status`; panics after 1 s, the promise a reload makes.
async fn answers_within_a_second(url: &str, status: u16) {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        if try_get(url).await == Some(status) {
            return;
        }
        assert!(Instant::now() < deadline, "{url} never answered {status}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn metric(text: &str, line_start: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("{line_start} missing in:\n{text}"))
}

#[tokio::test]
async fn routes_change_under_load_and_not_one_request_fails() {
    let stack = stack().await;
    let gw = &stack.gateways[0];
    let path = stack.gateway_config_path(0);
    let original = std::fs::read_to_string(&path).unwrap();
    let token = stack.login("alice").await;
    let backend = stack.backend.url();
    let load = Load::start(&[gw.url("/api/steady")], Some(&token), 2);

    let route = |extra: &str| {
        format!(
            "{original}\n[[routes]]\npath_prefix = \"/new/\"\nupstream = \"{backend}\"\n{extra}\n"
        )
    };

    // Added, by signal.
    let added = route("auth = false");
    assert_eq!(try_get(&gw.url("/new/x")).await, Some(404));
    std::fs::write(&path, &added).unwrap();
    gw.signal("HUP");
    answers_within_a_second(&gw.url("/new/x"), 200).await;

    // Changed, by the admin API: the route now needs a role alice does not hold.
    std::fs::write(&path, route("roles = [\"admin\"]")).unwrap();
    let r = reload(&stack).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["reloaded"], true);
    assert_eq!(r.json()["changed"], serde_json::json!(["routes"]));
    assert_eq!(r.json()["needs_restart"], serde_json::json!([]));
    let auth = format!("Bearer {token}");
    let refused = send(
        "GET",
        &gw.url("/new/x"),
        &[("authorization", &auth)],
        String::new(),
    )
    .await;
    assert_eq!(refused.status, 403, "{}", refused.body);

    // Removed.
    std::fs::write(&path, &original).unwrap();
    assert_eq!(reload(&stack).await.status, 200);
    assert_eq!(try_get(&gw.url("/new/x")).await, Some(404));

    let tally = load.stop_after(2000).await;
    assert!(tally.total() >= 1000, "{tally:?}");
    assert_eq!(tally.count(Some(200)), tally.total(), "{tally:?}");

    let metrics = support::get(&gw.admin_url("/metrics")).await.body;
    // The start, the signal and two calls.
    assert_eq!(
        metric(&metrics, "tokengate_config_reloads_total{result=\"ok\"}"),
        4.0
    );
    assert!(
        metric(
            &metrics,
            "tokengate_config_last_reload_success_timestamp_seconds"
        ) > 1.7e9
    );
}

#[tokio::test]
async fn a_broken_file_changes_nothing() {
    let stack = stack().await;
    let gw = &stack.gateways[0];
    let path = stack.gateway_config_path(0);
    let original = std::fs::read_to_string(&path).unwrap();
    let backend = stack.backend.url();
    let missing = std::env::temp_dir().join("tokengate-no-such-cert.pem");
    let broken = [
        (
            "syntax",
            format!("{original}\n[[routes]\npath_prefix = \"/new/\"\n"),
            "line",
        ),
        (
            "unknown key",
            format!("{original}\nsurprise = 1\n"),
            "surprise",
        ),
        (
            "route without upstream",
            format!("{original}\n[[routes]]\npath_prefix = \"/new/\"\n"),
            "upstream",
        ),
        (
            "route without a slash",
            format!("{original}\n[[routes]]\npath_prefix = \"new\"\nupstream = \"{backend}\"\n"),
            "routes[",
        ),
        (
            "missing certificate file",
            original.replace(
                "[admin]",
                &format!(
                    "tls_cert = \"{}\"\ntls_key = \"{}\"\n[admin]",
                    missing.display(),
                    missing.display()
                ),
            ),
            "tokengate-no-such-cert.pem",
        ),
    ];
    for (what, text, named) in &broken {
        std::fs::write(&path, text).unwrap();
        let r = reload(&stack).await;
        assert_eq!(r.status, 400, "{what}: {}", r.body);
        assert_eq!(r.json()["error"], "invalid_config", "{what}");
        let description = r.json()["error_description"].as_str().unwrap().to_owned();
        assert!(
            description.contains(path.to_str().unwrap()) || *what == "missing certificate file",
            "{what}: {description}"
        );
        assert!(description.contains(named), "{what}: {description}");
        // The running configuration still serves.
        assert_eq!(try_get(&gw.url("/public/x")).await, Some(200), "{what}");
    }
    // A signal with a broken file changes nothing either, and the log names file and line.
    std::fs::write(&path, &broken[0].1).unwrap();
    gw.signal("HUP");
    let logged = support::eventually(Duration::from_secs(5), || async {
        gw.log_text()
            .lines()
            .any(|l| l.contains("reload refused") && l.contains("line"))
    })
    .await;
    assert!(logged, "{}", gw.log_text());
    assert_eq!(try_get(&gw.url("/public/x")).await, Some(200));
    let metrics = support::get(&gw.admin_url("/metrics")).await.body;
    assert_eq!(
        metric(&metrics, "tokengate_config_reloads_total{result=\"error\"}"),
        (broken.len() + 1) as f64
    );
    assert_eq!(
        metric(&metrics, "tokengate_config_reloads_total{result=\"ok\"}"),
        1.0
    );

    // Settings that need a restart are kept, and named.
    let moved = original.replace(
        &format!("listen = \"{}\"", gw.public),
        "listen = \"127.0.0.1:1\"",
    );
    std::fs::write(&path, moved).unwrap();
    let r = reload(&stack).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json()["needs_restart"],
        serde_json::json!(["server.listen"])
    );
    assert!(
        gw.log_text().contains(&format!(
            "reload: server.listen needs a restart, kept {}",
            gw.public
        )),
        "{}",
        gw.log_text()
    );
    assert_eq!(try_get(&gw.url("/public/x")).await, Some(200));
}

#[tokio::test]
async fn the_admin_endpoint_needs_the_token() {
    let without = Stack::start(Options {
        gateways: 1,
        ..Options::default()
    })
    .await;
    let url = without.gateways[0].admin_url("/admin/reload");
    // Without admin.token there is no such endpoint.
    let r = send(
        "POST",
        &url,
        &[("authorization", "Bearer x")],
        String::new(),
    )
    .await;
    assert_eq!(r.status, 404);
    drop(without);

    let stack = stack().await;
    let url = stack.gateways[0].admin_url("/admin/reload");
    for auth in ["", "Bearer wrong", "Basic cmVsb2FkOng="] {
        let r = send("POST", &url, &[("authorization", auth)], String::new()).await;
        assert_eq!(r.status, 401, "{auth}");
    }
    let auth = format!("Bearer {RELOAD_TOKEN}");
    let r = send("GET", &url, &[("authorization", &auth)], String::new()).await;
    assert_eq!(r.status, 405);
    assert_eq!(reload(&stack).await.status, 200);
    assert!(!stack.gateways[0].log_text().contains(RELOAD_TOKEN));
}

/// A client that trusts only the certificates in `ca` (PEM).
fn tls_client(ca: &[u8]) -> tokio_rustls::TlsConnector {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca) {
        roots.add(cert.unwrap()).unwrap();
    }
    let client = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(client))
}

type Http1 = hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>;

/// An HTTP/1.1 connection over TLS, or the handshake's error.
async fn connect(
    addr: std::net::SocketAddr,
    client: &tokio_rustls::TlsConnector,
) -> Result<Http1, std::io::Error> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = client.connect(name, tcp).await?;
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    Ok(sender)
}

async fn status(sender: &mut Http1) -> u16 {
    let req = http::Request::get("/public/x")
        .header("host", "localhost")
        .body(http_body_util::Empty::new())
        .unwrap();
    sender.send_request(req).await.unwrap().status().as_u16()
}

#[tokio::test]
async fn a_new_certificate_serves_new_handshakes_and_open_connections_keep_going() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let dir = std::env::temp_dir().join(format!("tokengate-reload-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
    std::fs::copy(fixtures.join("localhost.crt"), &cert).unwrap();
    std::fs::copy(fixtures.join("localhost.key"), &key).unwrap();
    let stack = Stack::start(Options {
        gateways: 1,
        gateway_admin: format!("token = \"{RELOAD_TOKEN}\""),
        gateway_server: format!(
            "tls_cert = \"{}\"\ntls_key = \"{}\"",
            cert.display(),
            key.display()
        ),
        ..Options::default()
    })
    .await;
    let addr = stack.gateways[0].public;
    let old_ca = std::fs::read(fixtures.join("ca.crt")).unwrap();
    let trusts_old = tls_client(&old_ca);
    let mut before = connect(addr, &trusts_old).await.unwrap();
    assert_eq!(status(&mut before).await, 200);

    // A new certificate for localhost from a new CA, made by the real openssl.
    let (new_ca, new_cert, new_key) = (
        dir.join("new-ca.crt"),
        dir.join("new.crt"),
        dir.join("new.key"),
    );
    let ext = dir.join("ext.cnf");
    std::fs::write(
        &ext,
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    let p256 = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"][..],
            &p256,
            &[
                "-days",
                "1",
                "-subj",
                "/CN=reload-test-ca",
                "-keyout",
                "new-ca.key",
                "-out",
                "new-ca.crt",
            ],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"][..],
            &p256,
            &[
                "-subj",
                "/CN=localhost",
                "-keyout",
                "new.key",
                "-out",
                "new.csr",
            ],
        ]
        .concat(),
    );
    openssl(&[
        "x509",
        "-req",
        "-in",
        "new.csr",
        "-CA",
        "new-ca.crt",
        "-CAkey",
        "new-ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "ext.cnf",
        "-out",
        "new.crt",
    ]);
    std::fs::copy(&new_cert, &cert).unwrap();
    std::fs::copy(&new_key, &key).unwrap();
    let r = reload(&stack).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["changed"], serde_json::json!(["tls"]));

    let trusts_new = tls_client(&std::fs::read(&new_ca).unwrap());
    let mut after = connect(addr, &trusts_new).await.unwrap();
    assert_eq!(status(&mut after).await, 200);
    // A client of its own, so that no resumed session skips the certificate.
    assert!(
        connect(addr, &tls_client(&old_ca)).await.is_err(),
        "a new handshake still got the old certificate"
    );
    // The connection opened before the reload still works.
    assert_eq!(status(&mut before).await, 200);

    // A key that does not match the certificate is refused, and the new pair stays.
    std::fs::copy(fixtures.join("localhost.key"), &key).unwrap();
    let r = reload(&stack).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(connect(addr, &trusts_new).await.is_ok());
    let _ = std::fs::remove_dir_all(&dir);
}

/// `POST /admin/reload` on the IdP's admin listener, with its admin token.
async fn reload_idp(stack: &Stack) -> Reply {
    stack.admin("POST", "/admin/reload", None).await
}

/// The `kid` of the value token the backend saw behind `token`.
async fn kid_behind(stack: &Stack, token: &str) -> String {
    let r = stack.get(0, "/api/orders/1", Some(token)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let auth = r.json()["headers"]["authorization"]
        .as_str()
        .unwrap()
        .to_owned();
    let jwt = auth.strip_prefix("Bearer ").unwrap();
    jsonwebtoken::decode_header(jwt).unwrap().kid.unwrap()
}

fn kids(jwks: &serde_json::Value) -> Vec<String> {
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

/// The password grant through `client`.
async fn login_through(stack: &Stack, client: &str) -> Reply {
    support::post_form(
        &stack.idp.url("/oauth2/token"),
        &[],
        &format!(
            "grant_type=password&client_id={client}&username=alice&password={}",
            support::PASSWORD
        ),
    )
    .await
}

#[tokio::test]
async fn idp_clients_and_signing_keys_change_by_reload() {
    let stack = Stack::start(Options {
        gateways: 1,
        ..Options::default()
    })
    .await;
    let path = stack.idp_config_path();
    let original = std::fs::read_to_string(&path).unwrap();
    let jwks_url = stack.idp.url("/.well-known/jwks.json");

    // A client added by reload can sign in; removed again, it no longer can.
    assert_eq!(login_through(&stack, "newcomer").await.status, 401);
    let added = format!(
        "{original}\n[[clients]]\nclient_id = \"newcomer\"\ntype = \"public\"\ngrants = [\"password\"]\n"
    );
    std::fs::write(&path, &added).unwrap();
    let r = reload_idp(&stack).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["reloaded"], true);
    assert_eq!(r.json()["changed"], serde_json::json!(["clients"]));
    let signed_in = login_through(&stack, "newcomer").await;
    assert_eq!(signed_in.status, 200, "{}", signed_in.body);
    stack.secret(signed_in.json()["access_token"].as_str().unwrap());
    std::fs::write(&path, &original).unwrap();
    assert_eq!(reload_idp(&stack).await.status, 200);
    let refused = login_through(&stack, "newcomer").await;
    assert_eq!(refused.status, 401, "{}", refused.body);
    assert_eq!(refused.json()["error"], "invalid_client");

    // Rotation: a new first key signs new sessions; sessions made before pass on.
    let before = stack.login("alice").await;
    let old_kid = kid_behind(&stack, &before).await;
    let made = std::process::Command::new(env!("CARGO_BIN_EXE_tokengate"))
        .args(["gen-key", "--out"])
        .arg(stack.dir().join("next.pem"))
        .output()
        .unwrap();
    assert!(made.status.success(), "gen-key: {made:?}");
    let rotated = original.replace(
        "signing_keys = [\"signing.pem\"]",
        "signing_keys = [\"next.pem\", \"signing.pem\"]",
    );
    assert_ne!(rotated, original);
    std::fs::write(&path, &rotated).unwrap();
    let r = reload_idp(&stack).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["changed"], serde_json::json!(["signing_keys"]));
    let published = kids(&support::get(&jwks_url).await.json());
    assert_eq!(published.len(), 2, "{published:?}");
    assert!(published.contains(&old_kid));
    let after = stack.login("bob").await;
    let new_kid = kid_behind(&stack, &after).await;
    assert_ne!(new_kid, old_kid);
    assert!(published.contains(&new_kid));
    assert_eq!(kid_behind(&stack, &before).await, old_kid);

    // The old key removed: the JWKS no longer lists it.
    let next_only = original.replace(
        "signing_keys = [\"signing.pem\"]",
        "signing_keys = [\"next.pem\"]",
    );
    std::fs::write(&path, &next_only).unwrap();
    assert_eq!(reload_idp(&stack).await.status, 200);
    assert_eq!(kids(&support::get(&jwks_url).await.json()), vec![new_kid]);
    stack.assert_logs_clean();
}

#[tokio::test]
async fn a_broken_idp_file_changes_nothing() {
    let stack = Stack::start(Options {
        gateways: 0,
        ..Options::default()
    })
    .await;
    let path = stack.idp_config_path();
    let original = std::fs::read_to_string(&path).unwrap();
    let broken = [
        ("syntax", format!("{original}\n[[clients]\n"), "line"),
        (
            "unknown key",
            format!("{original}\nsurprise = 1\n"),
            "surprise",
        ),
        (
            "missing key file",
            original.replace("\"signing.pem\"", "\"gone.pem\""),
            "gone.pem",
        ),
    ];
    for (what, text, named) in &broken {
        std::fs::write(&path, text).unwrap();
        let r = reload_idp(&stack).await;
        assert_eq!(r.status, 400, "{what}: {}", r.body);
        assert_eq!(r.json()["error"], "invalid_config", "{what}");
        let description = r.json()["error_description"].as_str().unwrap().to_owned();
        assert!(
            description.contains(path.to_str().unwrap()),
            "{what}: {description}"
        );
        assert!(description.contains(named), "{what}: {description}");
        // The running configuration still signs people in.
        assert_eq!(stack.try_login("alice").await.status, 200, "{what}");
    }
    // A signal with a broken file changes nothing either, and the log names the line.
    std::fs::write(&path, &broken[0].1).unwrap();
    stack.idp.signal("HUP");
    let logged = support::eventually(Duration::from_secs(5), || async {
        stack
            .idp
            .log_text()
            .lines()
            .any(|l| l.contains("reload refused") && l.contains("line"))
    })
    .await;
    assert!(logged, "{}", stack.idp.log_text());
    let metrics = support::get(&stack.idp.admin_url("/metrics")).await.body;
    assert_eq!(
        metric(&metrics, "tokengate_config_reloads_total{result=\"error\"}"),
        (broken.len() + 1) as f64
    );

    // Settings that need a restart are kept and named; the rest takes effect.
    let moved = original.replace(
        &format!("listen = \"{}\"", stack.idp.public),
        "listen = \"127.0.0.1:1\"",
    );
    std::fs::write(&path, moved).unwrap();
    let r = reload_idp(&stack).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json()["needs_restart"],
        serde_json::json!(["server.listen"])
    );
    assert!(
        stack.idp.log_text().contains(&format!(
            "reload: server.listen needs a restart, kept {}",
            stack.idp.public
        )),
        "{}",
        stack.idp.log_text()
    );
    let metrics = support::get(&stack.idp.admin_url("/metrics")).await.body;
    assert_eq!(
        metric(&metrics, "tokengate_config_reloads_total{result=\"ok\"}"),
        2.0
    );
    assert_eq!(stack.try_login("alice").await.status, 200);

    // Reloading takes the admin token like every /admin call.
    let r = send(
        "POST",
        &stack.idp.admin_url("/admin/reload"),
        &[],
        String::new(),
    )
    .await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn idp_and_cache_settings_change_live_and_the_cache_size_needs_a_restart() {
    let stack = stack().await;
    let gw = &stack.gateways[0];
    let path = stack.gateway_config_path(0);
    let original = std::fs::read_to_string(&path).unwrap();
    let token = stack.login("alice").await;
    assert_eq!(stack.get(0, "/api/warm", Some(&token)).await.status, 200);

    // The keys come from another URL from now on (here the recording backend, which serves no
    // JWKS): the gateway asks it at once and keeps verifying with the keys it holds.
    let jwks_url = original
        .lines()
        .find(|l| l.starts_with("jwks_url"))
        .unwrap()
        .to_owned();
    let moved = original
        .replace(
            &jwks_url,
            &format!(
                "jwks_url = \"{}/elsewhere/jwks.json\"\nissuer = \"http://{}\"\njwks_refresh = \"1h\"",
                stack.backend.url(),
                stack.idp.public
            ),
        )
        .replace("max_staleness = \"60s\"", "max_staleness = \"5s\"");
    std::fs::write(&path, &moved).unwrap();
    let r = reload(&stack).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["changed"], serde_json::json!(["cache", "idp"]));
    assert_eq!(r.json()["needs_restart"], serde_json::json!([]));
    let asked = support::eventually(Duration::from_secs(5), || async {
        stack.backend.saw("/elsewhere/jwks.json")
    })
    .await;
    assert!(asked, "the gateway never asked the new jwks_url");
    assert_eq!(stack.get(0, "/api/still", Some(&token)).await.status, 200);

    // The cache's size is fixed at the start.
    let bigger = moved.replace("[cache]", "[cache]\nmax_entries = 5");
    std::fs::write(&path, bigger).unwrap();
    let r = reload(&stack).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json()["needs_restart"],
        serde_json::json!(["cache.max_entries"])
    );

    // An unusable jwks_url is refused like any broken setting.
    std::fs::write(
        &path,
        original.replace(&jwks_url, "jwks_url = \"not a url\""),
    )
    .unwrap();
    let r = reload(&stack).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json()["error"], "invalid_config");
    assert_eq!(try_get(&gw.url("/public/x")).await, Some(200));
}
